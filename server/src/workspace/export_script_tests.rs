//! The guest's export script (`export::GUEST_SCRIPT`), run here with real
//! git on a workspace unpacked the way the guest unpacks one: the patch it
//! makes from a copy of the guest's index (stat-valid after a transfer) is
//! the patch an index made from `$base` gives, and a guest index that is
//! not `$base`'s tree still gets the latter.

use std::path::Path;

use super::transfer::build_on_host;
use super::transfer::tests::git;

/// Runs the script in `repo` against `base` (empty: HEAD); its stdout.
pub(super) fn export(repo: &Path, base: &str) -> String {
    let out = crate::tool::for_test(crate::tool::Tool::Sh)
        .args(["-c", super::export::GUEST_SCRIPT, "sh"])
        .arg(repo)
        .arg(base)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The files a patch touches, as `git apply --numstat`-free text: its
/// `diff --git` lines.
fn touched(patch: &str) -> Vec<&str> {
    patch
        .lines()
        .filter(|l| l.starts_with("diff --git "))
        .collect()
}

#[test]
fn the_patch_is_the_same_from_the_guests_index_or_from_the_base_tree() {
    let host = tempfile::tempdir().unwrap();
    let h = host.path();
    git(h, &["init", "-q", "-b", "main"]);
    std::fs::write(h.join(".gitignore"), "*.env\n").unwrap();
    for (name, text) in [("a.txt", "one\n"), ("b.txt", "two\n"), ("c.txt", "three\n")] {
        std::fs::write(h.join(name), text).unwrap();
    }
    // A tracked file that the ignore rules also match.
    std::fs::write(h.join("tracked.env"), "KEY=1\n").unwrap();
    git(h, &["add", "-A"]);
    git(h, &["add", "-f", "tracked.env"]);
    git(h, &["commit", "-qm", "first"]);
    std::fs::write(h.join("c.txt"), "three, later\n").unwrap();
    git(h, &["commit", "-qam", "second"]);

    let sel = super::select(h, false).unwrap();
    let guest = tempfile::tempdir().unwrap();
    let repo = guest.path().join("repo");
    build_on_host(&sel, None, &repo, ("Guest", "g@example.invalid")).unwrap();
    assert_eq!(export(&repo, ""), "", "a fresh workspace has no changes");

    // The guest edits, adds, deletes.
    std::fs::write(repo.join("a.txt"), "one, edited\n").unwrap();
    std::fs::write(repo.join("new.txt"), "new\n").unwrap();
    std::fs::remove_file(repo.join("b.txt")).unwrap();
    std::fs::write(repo.join("tracked.env"), "KEY=2\n").unwrap();
    let from_index = export(&repo, "");
    assert_eq!(
        touched(&from_index),
        [
            "diff --git a/a.txt b/a.txt",
            "diff --git a/b.txt b/b.txt",
            "diff --git a/new.txt b/new.txt",
            "diff --git a/tracked.env b/tracked.env",
        ],
        "{from_index}"
    );
    // HEAD named by its id is HEAD: the same patch.
    let head = git(&repo, &["rev-parse", "HEAD"]);
    assert_eq!(export(&repo, head.trim()), from_index);
    // The guest's own index was not changed by any of it.
    assert_eq!(git(&repo, &["diff", "--cached", "--name-only"]), "");

    // The guest untracks the ignored file by hand: its index is no longer
    // HEAD's tree, so the patch comes from HEAD's tree and still carries no
    // deletion of a file that is there.
    git(&repo, &["rm", "-q", "--cached", "tracked.env"]);
    let untracked = export(&repo, "");
    assert_eq!(untracked, from_index);

    // The guest commits: against the commit it was shipped at (no longer
    // HEAD), the patch carries the committed change and the rest.
    git(&repo, &["add", "-f", "tracked.env"]);
    std::fs::write(repo.join("c.txt"), "three, in the guest\n").unwrap();
    git(&repo, &["commit", "-qam", "in the guest"]);
    std::fs::write(repo.join("late.txt"), "after the commit\n").unwrap();
    let since_shipped = export(&repo, head.trim());
    let files = touched(&since_shipped);
    for file in [
        "a.txt",
        "b.txt",
        "c.txt",
        "new.txt",
        "tracked.env",
        "late.txt",
    ] {
        assert!(
            files.contains(&format!("diff --git a/{file} b/{file}").as_str()),
            "{file}: {since_shipped}"
        );
    }
}
