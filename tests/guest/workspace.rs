//! Workspaces on real guests: shipping a repository (stream and
//! full_copy), exporting the guest's edits as a validated patch, live sync,
//! and the guest operations' locks and time-outs.

use std::time::Duration;

use banger_tests::{Env, make_repo};

#[test]
fn workspace_run_ships_tracked_files_into_a_matching_repository() {
    let env = Env::new();
    let repo = env.root().join("repo");
    let head = make_repo(&repo);
    let run = env.banger(&[
        "vm",
        "run",
        "--rm",
        repo.to_str().unwrap(),
        "--branch",
        "guest-work",
        "--",
        "sh",
        "-c",
        "pwd; cat file.txt; ./run.sh; test -e scratch.txt || echo no-scratch; \
         git status --porcelain; git rev-parse HEAD main; git symbolic-ref --short HEAD; \
         git fsck --strict --no-dangling --no-progress && echo fsck-ok; ls .git/objects/pack | grep -c 'idx$'",
    ]);
    run.ok();
    // The host's HEAD and branch arrived; the new guest branch starts there
    // and is checked out. The objects are whole (the local pack the guest
    // wrote from the files, and the host's), by the guest's own git.
    assert_eq!(
        run.stdout,
        format!(
            "/root/repo\nhello from the host\nran\nno-scratch\n{head}\n{head}\nguest-work\nfsck-ok\n2\n"
        )
    );
    assert!(
        run.stderr.contains("1 untracked file was left out"),
        "{}",
        run.stderr
    );
    // A bad branch name is refused before anything is created.
    env.banger(&[
        "vm",
        "run",
        "--rm",
        repo.to_str().unwrap(),
        "--branch",
        "a..b",
        "--",
        "true",
    ])
    .expect_code(2);
    env.assert_nothing_left();
}

/// `(path, executable, sha256)` of every file under `root` but `.git`, as
/// one sorted listing: equal listings mean equal trees.
const TREE_LISTING: &str = "find . -path ./.git -prune -o \\( -type f -o -type l \\) -print | LC_ALL=C sort | \
    while read -r f; do if [ -L \"$f\" ]; then echo \"$f link $(readlink \"$f\")\"; \
    else echo \"$f $(test -x \"$f\" && echo x || echo -) $(sha256sum <\"$f\" | cut -c1-64)\"; fi; done";

fn host_listing(dir: &std::path::Path) -> String {
    let out = std::process::Command::new("sh")
        .args(["-c", TREE_LISTING])
        .current_dir(dir)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn workspace_export_round_trips_and_refuses_hostile_patches() {
    // A small per-file limit, so an oversize file needs no huge patch.
    let env = Env::new().with_var("BANGER_EXPORT_MAX_FILE", "64K");
    let repo = env.root().join("repo");
    make_repo(&repo);
    // Only tracked files travel; keep the host tree comparable.
    std::fs::remove_file(repo.join("scratch.txt")).unwrap();
    std::fs::remove_file(repo.join("build.log")).unwrap();
    std::fs::write(repo.join("old-name.txt"), "rename me\n").unwrap();
    std::fs::write(repo.join("gone.txt"), "delete me\n").unwrap();
    std::fs::write(
        repo.join("blob.bin"),
        (0..4096u32)
            .map(|i| (i * 7 % 256) as u8)
            .collect::<Vec<u8>>(),
    )
    .unwrap();
    let git = |args: &[&str]| banger_tests::git(&repo, args);
    git(&["add", "-A"]);
    // A submodule (not initialised: an empty directory), never shipped.
    let head = git(&["rev-parse", "HEAD"]);
    std::fs::create_dir_all(repo.join("vendor/lib")).unwrap();
    git(&[
        "update-index",
        "--add",
        "--cacheinfo",
        &format!("160000,{head},vendor/lib"),
    ]);
    git(&["commit", "-qm", "more"]);
    env.banger(&["vm", "create", "--name", "ws"]).ok();
    env.banger(&["vm", "workspace", "prepare", "ws", repo.to_str().unwrap()])
        .ok();
    // The guest keeps the gitlink: its status is clean.
    let status = env.banger(&["vm", "exec", "ws", "--", "git", "status", "--porcelain"]);
    status.ok();
    assert_eq!(status.stdout, "", "guest status after prepare");

    // Guest edits of every kind, one of them never `git add`ed.
    env.banger(&[
        "vm",
        "exec",
        "ws",
        "--",
        "sh",
        "-c",
        "echo more >> file.txt && git mv old-name.txt new-name.txt && rm gone.txt && \
         chmod -x run.sh && echo guest-made > created.txt && \
         head -c 3000 /dev/urandom > blob.bin && printf '\\000\\001\\002' > new.bin",
    ])
    .ok();
    let status_before = env.banger(&["vm", "exec", "ws", "--", "git", "status", "--porcelain"]);
    let export = env.banger(&["vm", "workspace", "export", "ws"]);
    export.ok();
    assert!(
        export
            .stdout
            .contains("diff --git a/created.txt b/created.txt"),
        "{}",
        export.stdout
    );
    assert!(
        export.stdout.contains("rename from old-name.txt"),
        "{}",
        export.stdout
    );
    assert!(
        !export.stdout.contains("160000"),
        "the submodule is in the patch: {}",
        export.stdout
    );
    // Exporting does not touch the guest's index.
    let status_after = env.banger(&["vm", "exec", "ws", "--", "git", "status", "--porcelain"]);
    assert_eq!(status_before.stdout, status_after.stdout);

    env.banger(&["vm", "workspace", "export", "ws", "--apply"])
        .ok();
    let guest = env.banger(&["vm", "exec", "ws", "--", "sh", "-c", TREE_LISTING]);
    guest.ok();
    assert_eq!(
        host_listing(&repo),
        guest.stdout,
        "host tree differs from the guest's"
    );

    // A plain export leaves out guest commits; --base-commit includes them.
    env.banger(&[
        "vm",
        "exec",
        "ws",
        "--",
        "sh",
        "-c",
        "echo c > committed.txt && git add committed.txt && git commit -qm guest",
    ])
    .ok();
    let plain = env.banger(&["vm", "workspace", "export", "ws"]);
    assert!(!plain.stdout.contains("committed.txt"), "{}", plain.stdout);
    let prepared = env.show("ws")["workspace"]["head"]
        .as_str()
        .unwrap()
        .to_string();
    let pinned = env.banger(&[
        "vm",
        "workspace",
        "export",
        "ws",
        "--base-commit",
        &prepared,
    ]);
    pinned.ok();
    assert!(pinned.stdout.contains("committed.txt"), "{}", pinned.stdout);

    // Symlinks the guest makes into .git are refused like paths under it.
    env.banger(&[
        "vm",
        "exec",
        "ws",
        "--",
        "sh",
        "-c",
        "ln -s .git gitdir && ln -s .git/hooks hooklink",
    ])
    .ok();
    let run = env.banger(&["vm", "workspace", "export", "ws", "--apply"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("points into .git/"), "{}", run.stderr);
    assert!(!repo.join("gitdir").exists() && !repo.join("hooklink").exists());
    // An oversize file is refused at once, named with the setting, and the
    // guest keeps no temporary index.
    env.banger(&[
        "vm",
        "exec",
        "ws",
        "--",
        "sh",
        "-c",
        "rm gitdir hooklink && head -c 200000 /dev/urandom > huge.bin",
    ])
    .ok();
    let run = env.banger(&["vm", "workspace", "export", "ws"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("huge.bin is 200000 bytes")
            && run.stderr.contains("BANGER_EXPORT_MAX_FILE"),
        "{}",
        run.stderr
    );
    let left = env.banger(&[
        "vm",
        "exec",
        "ws",
        "--",
        "sh",
        "-c",
        "rm huge.bin; ls .git | grep -c banger-export-index || true",
    ]);
    assert_eq!(left.stdout.trim(), "0");

    // A hostile guest: its git prints whatever patch it likes.
    git(&["add", "-A"]);
    git(&["commit", "-qm", "host state"]);
    for (name, hostile) in [
        (
            "dotdot",
            "diff --git a/../outside b/../outside\nnew file mode 100644\n--- /dev/null\n+++ b/../outside\n@@ -0,0 +1 @@\n+x\n",
        ),
        (
            "oversize",
            "diff --git a/big.bin b/big.bin\nnew file mode 100644\nindex 0000000..1111111\nGIT binary patch\nliteral 100000\nzcmV\n\nliteral 0\nHcmV?d00001\n\n",
        ),
        (
            "hook",
            "diff --git a/.git/hooks/post-checkout b/.git/hooks/post-checkout\nnew file mode 100755\n--- /dev/null\n+++ b/.git/hooks/post-checkout\n@@ -0,0 +1 @@\n+#!/bin/sh\n",
        ),
        (
            "symlink",
            "diff --git a/etc b/etc\nnew file mode 120000\n--- /dev/null\n+++ b/etc\n@@ -0,0 +1 @@\n+/etc\n\\ No newline at end of file\n",
        ),
        (
            "through",
            "diff --git a/l b/l\nnew file mode 120000\n--- /dev/null\n+++ b/l\n@@ -0,0 +1 @@\n+sub\n\\ No newline at end of file\ndiff --git a/l/x b/l/x\nnew file mode 100644\n--- /dev/null\n+++ b/l/x\n@@ -0,0 +1 @@\n+x\n",
        ),
    ] {
        let fake = format!(
            "mkdir -p /usr/local/bin && cat > /usr/local/bin/git <<'EOF'\n#!/bin/sh\ncase \"$*\" in *diff*) cat <<'PATCH'\n{hostile}PATCH\n;; *) exec /usr/bin/git \"$@\";; esac\nEOF\nchmod +x /usr/local/bin/git"
        );
        env.banger(&["vm", "exec", "ws", "--", "sh", "-c", &fake])
            .ok();
        let run = env.banger(&["vm", "workspace", "export", "ws", "--apply"]);
        assert_eq!(run.code, 2, "{name}: {}", run.stderr);
        assert!(
            run.stderr.contains("refused the guest's patch")
                && run.stderr.contains("nothing was written"),
            "{name}: {}",
            run.stderr
        );
        assert_eq!(
            git(&["status", "--porcelain", "--ignored=no"]),
            "",
            "{name} wrote into the host repo"
        );
    }
    assert!(!env.root().join("outside").exists());
    env.banger(&["vm", "delete", "ws"]).ok();
    env.assert_nothing_left();
}

#[test]
fn workspace_full_copy_writes_the_disk_before_boot() {
    let env = Env::new();
    let repo = env.root().join("repo");
    let head = make_repo(&repo);
    // vm run: the repository is on the disk before the first boot.
    let run = env.banger(&[
        "vm",
        "run",
        "--rm",
        "--mode",
        "full_copy",
        repo.to_str().unwrap(),
        "--",
        "sh",
        "-c",
        "pwd; cat file.txt; git status --porcelain; git rev-parse HEAD",
    ]);
    run.ok();
    assert_eq!(
        run.stdout,
        format!("/root/repo\nhello from the host\n{head}\n")
    );

    // Into a disk a guest has already used (stopped): e2fsck first, then
    // the copy; a running VM is refused.
    env.banger(&["vm", "create", "--name", "fc"]).ok();
    let refused = env.banger(&[
        "vm",
        "workspace",
        "prepare",
        "fc",
        repo.to_str().unwrap(),
        "--mode",
        "full_copy",
    ]);
    refused.expect_code(1);
    assert!(
        refused.stderr.contains("stop it first"),
        "{}",
        refused.stderr
    );
    env.banger(&[
        "vm",
        "exec",
        "fc",
        "--",
        "sh",
        "-c",
        "echo used > /root/used; sync",
    ])
    .ok();
    env.banger(&["vm", "stop", "fc"]).ok();
    env.banger(&[
        "vm",
        "workspace",
        "prepare",
        "fc",
        repo.to_str().unwrap(),
        "--mode",
        "full_copy",
    ])
    .ok();
    env.banger(&["vm", "start", "fc"]).ok();
    let run = env.banger(&[
        "vm",
        "exec",
        "fc",
        "--",
        "sh",
        "-c",
        "pwd; cat file.txt ../used",
    ]);
    run.ok();
    assert_eq!(run.stdout, "/root/repo\nhello from the host\nused\n");
    env.banger(&["vm", "delete", "fc"]).ok();
    env.assert_nothing_left();
}

#[test]
fn live_sync_sends_what_changed_follows_head_and_never_clobbers_guest_edits() {
    let env = Env::new();
    let repo = env.root().join("repo");
    make_repo(&repo);
    let git = |args: &[&str]| banger_tests::git(&repo, args);
    env.banger(&["vm", "create", "--name", "sy"]).ok();
    env.banger(&["vm", "workspace", "prepare", "sy", repo.to_str().unwrap()])
        .ok();
    let guest = |script: &str| {
        let r = env.banger(&["vm", "exec", "sy", "--", "sh", "-c", script]);
        r.ok();
        r.stdout.clone()
    };
    let sync = |paths: &[&str]| {
        let mut args = vec!["vm", "workspace", "sync", "sy", "--json"];
        args.extend(paths);
        let r = env.banger(&args);
        serde_json::from_str::<serde_json::Value>(&r.stdout)
            .unwrap_or_else(|e| panic!("{e}: {} {}", r.stdout, r.stderr))
    };

    // Nothing changed: nothing travels.
    assert_eq!(sync(&[])["files_sent"], 0);
    // A tracked edit travels; the untracked file never does.
    std::fs::write(repo.join("file.txt"), "edited on the host\n").unwrap();
    std::fs::write(repo.join("scratch.txt"), "still untracked\n").unwrap();
    let r = sync(&["file.txt", "scratch.txt"]);
    assert_eq!(r["files_sent"], 1, "{r}");
    assert_eq!(guest("cat file.txt"), "edited on the host\n");
    assert!(guest("ls scratch.txt 2>&1 || true").contains("No such file"));
    // A deletion and a mode change travel in a full reconcile.
    std::fs::remove_file(repo.join("run.sh")).unwrap();
    let r = sync(&[]);
    assert_eq!(r["deleted"], 1, "{r}");
    assert_eq!(guest("test -e run.sh && echo there || echo gone"), "gone\n");

    // The guest edits a file; a host save of the same file is a conflict,
    // and the guest's edit survives.
    guest("echo guest edit > file.txt && echo made in guest > guest.txt");
    let changes = env.banger(&["vm", "workspace", "changes", "sy"]);
    changes.ok();
    assert_eq!(changes.stdout, "M file.txt\nA guest.txt\n");
    std::fs::write(repo.join("file.txt"), "host edit\n").unwrap();
    let r = env.banger(&["vm", "workspace", "sync", "sy", "file.txt"]);
    r.expect_code(1);
    assert!(r.stderr.contains("conflict: file.txt"), "{}", r.stderr);
    assert_eq!(guest("cat file.txt"), "guest edit\n");

    // A host commit: the guest's HEAD follows, with the new files.
    std::fs::write(repo.join("new.txt"), "committed\n").unwrap();
    git(&["add", "new.txt"]);
    git(&["commit", "-qm", "second"]);
    let head = git(&["rev-parse", "HEAD"]);
    let r = sync(&["new.txt"]);
    assert_eq!(r["head_moved"], true, "{r}");
    assert_eq!(guest("git rev-parse HEAD").trim(), head);
    assert_eq!(guest("cat new.txt"), "committed\n");
    assert_eq!(guest("git branch --show-current"), "main\n");
    // The conflicted file is still the guest's, until forced.
    assert_eq!(guest("cat file.txt"), "guest edit\n");
    env.banger(&["vm", "workspace", "sync", "sy", "--force", "file.txt"])
        .ok();
    assert_eq!(guest("cat file.txt"), "host edit\n");

    // export --apply takes what the guest changed since the last sync; the
    // host's own uncommitted edits, synced, are not in its way.
    std::fs::write(repo.join("new.txt"), "host, uncommitted\n").unwrap();
    sync(&["new.txt"]);
    guest("echo guest line >> file.txt");
    env.banger(&["vm", "workspace", "export", "sy", "--apply"])
        .ok();
    let host = |p: &str| std::fs::read_to_string(repo.join(p)).unwrap();
    assert_eq!(host("file.txt"), "host edit\nguest line\n");
    assert_eq!(host("new.txt"), "host, uncommitted\n");
    assert_eq!(env.banger(&["vm", "workspace", "changes", "sy"]).stdout, "");
    // A file the host changed since the last sync is not overwritten.
    guest("echo again >> file.txt");
    std::fs::write(repo.join("file.txt"), "the host changed it\n").unwrap();
    let r = env.banger(&["vm", "workspace", "export", "sy", "--apply"]);
    assert_ne!(r.code, 0);
    assert!(
        r.stderr
            .contains("the host changed these files since the last sync: file.txt"),
        "{}",
        r.stderr
    );
    assert_eq!(host("file.txt"), "the host changed it\n");
    env.banger(&["vm", "workspace", "export", "sy", "--apply", "--force"])
        .ok();
    assert_eq!(host("file.txt"), "host edit\nguest line\nagain\n");
    env.banger(&["vm", "delete", "sy"]).ok();
}

/// A guest operation that gets no answer is given up after the guest
/// operation time-out, with a message naming the setting, and the VM's
/// sync lock is free again: the next sync works once the guest answers.
#[test]
fn a_guest_that_stops_answering_is_given_up_on() {
    let env = Env::new().with_var("BANGER_GUEST_OP_TIMEOUT", "5");
    let repo = env.root().join("repo");
    make_repo(&repo);
    env.banger(&["vm", "create", "--name", "mute"]).ok();
    env.banger(&["vm", "workspace", "prepare", "mute", repo.to_str().unwrap()])
        .ok();
    // The guest holds its workspace record's lock: live sync there waits.
    env.banger(&[
        "vm",
        "exec",
        "mute",
        "--",
        "sh",
        "-c",
        "setsid -f flock /root/repo/.git/banger-sync.lock sleep 300 </dev/null >/dev/null 2>&1; \
         while flock -n /root/repo/.git/banger-sync.lock true; do sleep 0.1; done",
    ])
    .ok();
    std::fs::write(repo.join("file.txt"), "changed on the host\n").unwrap();
    let started = std::time::Instant::now();
    let run = env.banger(&["vm", "workspace", "sync", "mute"]);
    assert_ne!(run.code, 0, "{}", run.stdout);
    assert!(
        run.stderr
            .contains("no answer within 5 s (BANGER_GUEST_OP_TIMEOUT)"),
        "{}",
        run.stderr
    );
    assert!(started.elapsed() < Duration::from_secs(60));
    // The guest answers again: the next sync goes through.
    env.banger(&["vm", "exec", "mute", "--", "pkill", "-f", "sleep 300"])
        .ok();
    env.banger(&["vm", "workspace", "sync", "mute"]).ok();
    let run = env.banger(&["vm", "exec", "mute", "--", "cat", "file.txt"]);
    assert_eq!(run.stdout, "changed on the host\n");
    env.banger(&["vm", "delete", "mute"]).ok();
    env.assert_nothing_left();
}

/// `export --apply` takes the guest's changes under the VM's sync lock: a
/// sync that arrives while it reads and records them waits for it (else
/// the two would interleave their writes of the guest's record and the
/// manifest).
#[test]
fn export_apply_and_sync_take_turns() {
    let env = Env::new().with_var("BANGER_TEST_TAKE_PAUSE_MS", "4000");
    let repo = env.root().join("repo");
    make_repo(&repo);
    env.banger(&["vm", "create", "--name", "turns"]).ok();
    env.banger(&[
        "vm",
        "workspace",
        "prepare",
        "turns",
        repo.to_str().unwrap(),
    ])
    .ok();
    env.banger(&[
        "vm",
        "exec",
        "turns",
        "--",
        "sh",
        "-c",
        "echo guest >> file.txt",
    ])
    .ok();
    let export = env
        .cmd(&["vm", "workspace", "export", "turns", "--apply"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let out = export.wait_with_output().unwrap();
        tx.send((std::time::Instant::now(), out)).unwrap();
    });
    // Once the export is taking the changes (it pauses 4 s there, and says
    // so in the daemon's log): a sync.
    let log = env.state_dir().join("bangerd.log");
    let waited = std::time::Instant::now();
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("holding the guest's changes")
    {
        assert!(
            waited.elapsed() < Duration::from_secs(120),
            "the export never reached the guest's changes"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::fs::write(repo.join("run.sh"), "#!/bin/sh\necho synced\n").unwrap();
    env.banger(&["vm", "workspace", "sync", "turns"]).ok();
    let synced = std::time::Instant::now();
    let (exported, out) = rx.recv().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        exported <= synced,
        "the sync ran while export --apply held the guest's changes"
    );
    assert_eq!(
        std::fs::read_to_string(repo.join("file.txt")).unwrap(),
        "hello from the host\nguest\n"
    );
    assert_eq!(
        env.banger(&["vm", "exec", "turns", "--", "./run.sh"])
            .stdout,
        "synced\n"
    );
    env.banger(&["vm", "delete", "turns"]).ok();
    env.assert_nothing_left();
}
