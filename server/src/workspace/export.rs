//! Bringing guest edits back: the guest makes a binary git patch of its
//! workspace; the host treats it as untrusted input. Before anything is
//! written, every path the patch names is checked: relative, inside the
//! repository, not under `.git/`, not through a symlink in the host tree,
//! no symlink that points out of the repository, sizes within limits. A
//! patch that breaks a rule is refused whole, naming the path and the rule.

use std::path::{Component, Path};

/// Largest single file a patch may carry, by default.
pub const MAX_FILE_BYTES: u64 = 100 << 20;
/// Largest patch accepted, by default.
pub const MAX_PATCH_BYTES: u64 = 512 << 20;

/// Size limits on a guest patch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Per file.
    pub per_file: u64,
    /// The whole patch.
    pub total: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            per_file: MAX_FILE_BYTES,
            total: MAX_PATCH_BYTES,
        }
    }
}

impl Limits {
    /// The defaults, or `$BANGER_EXPORT_MAX_FILE` / `$BANGER_EXPORT_MAX_PATCH`
    /// (sizes like `10M`) when set.
    pub fn from_env() -> Limits {
        let read = |var: &str, default: u64| {
            std::env::var(var)
                .ok()
                .and_then(|v| crate::spec::parse_size(&v).ok())
                .unwrap_or(default)
        };
        Limits {
            per_file: read("BANGER_EXPORT_MAX_FILE", MAX_FILE_BYTES),
            total: read("BANGER_EXPORT_MAX_PATCH", MAX_PATCH_BYTES),
        }
    }
}

/// Makes the patch in the guest, on stdout: the working tree (untracked,
/// not ignored files included) against `$1` (a commit, default HEAD),
/// through a temporary index next to the repository's own (same file
/// system: seed bug, a temporary index on tmpfs made git fail with "unable
/// to write new index file"), so the guest's index is never changed.
pub const GUEST_SCRIPT: &str = r#"set -eu
cd "$1"
base=${2:-HEAD}
git rev-parse --verify -q "$base^{commit}" >/dev/null || { echo "no commit $base in the guest repository" >&2; exit 3; }
tmp="$(git rev-parse --absolute-git-dir)/banger-export-index.$$"
trap 'rm -f "$tmp"' EXIT
GIT_INDEX_FILE="$tmp" git read-tree "$base"
GIT_INDEX_FILE="$tmp" git add -A
GIT_INDEX_FILE="$tmp" git diff --cached --binary --full-index -M "$base"
"#;

/// A rule a patch broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("refused the guest's patch: {path}: {rule}; nothing was written")]
pub struct Refused {
    /// The offending path, as the patch names it.
    pub path: String,
    /// The rule.
    pub rule: String,
}

fn refuse(path: &str, rule: impl Into<String>) -> Refused {
    Refused {
        path: path.to_string(),
        rule: rule.into(),
    }
}

/// One file a patch touches.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PatchFile {
    /// Path before (None for a new file).
    pub old_path: Option<String>,
    /// Path after (None for a deletion).
    pub new_path: Option<String>,
    /// Mode after, when the patch says (`100644`, `100755`, `120000`).
    pub new_mode: Option<String>,
    /// Bytes of new content the patch carries (text `+` lines or binary
    /// literal sizes).
    pub new_bytes: u64,
    /// For a symlink: its target, from the patch's added line.
    pub symlink_target: Option<String>,
}

/// Undoes git's C-style quoting of a path (`"a/t\303\251st"`).
fn unquote(s: &str) -> String {
    let Some(inner) = s.strip_prefix('"').and_then(|s| s.strip_suffix('"')) else {
        return s.to_string();
    };
    let mut out = Vec::new();
    let mut bytes = inner.bytes().peekable();
    while let Some(b) = bytes.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        match bytes.next() {
            Some(b'n') => out.push(b'\n'),
            Some(b't') => out.push(b'\t'),
            Some(b'"') => out.push(b'"'),
            Some(b'\\') => out.push(b'\\'),
            Some(d @ b'0'..=b'7') => {
                let mut v = u32::from(d - b'0');
                for _ in 0..2 {
                    if let Some(&n @ b'0'..=b'7') = bytes.peek() {
                        v = v * 8 + u32::from(n - b'0');
                        bytes.next();
                    }
                }
                out.push(v as u8);
            }
            Some(other) => out.push(other),
            None => {}
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn strip_side(p: &str, side: &str) -> Option<String> {
    let p = unquote(p.trim());
    if p == "/dev/null" {
        return None;
    }
    Some(p.strip_prefix(side).unwrap_or(&p).to_string())
}

/// Reads the file list of a git patch.
pub fn parse(patch: &str) -> Vec<PatchFile> {
    let mut files: Vec<PatchFile> = Vec::new();
    let mut in_binary = false;
    for line in patch.lines() {
        if let Some(rest) = line.strip_prefix("diff --git ") {
            in_binary = false;
            // Paths come again, unambiguously, in ---/+++ or rename lines;
            // this header is the fallback (mode-only changes).
            let (a, b) = split_header(rest);
            files.push(PatchFile {
                old_path: a.and_then(|a| strip_side(&a, "a/")),
                new_path: b.and_then(|b| strip_side(&b, "b/")),
                ..PatchFile::default()
            });
            continue;
        }
        let Some(f) = files.last_mut() else { continue };
        if let Some(p) = line.strip_prefix("--- ") {
            f.old_path = strip_side(p, "a/");
        } else if let Some(p) = line.strip_prefix("+++ ") {
            f.new_path = strip_side(p, "b/");
        } else if let Some(p) = line
            .strip_prefix("rename from ")
            .or(line.strip_prefix("copy from "))
        {
            f.old_path = Some(unquote(p));
        } else if let Some(p) = line
            .strip_prefix("rename to ")
            .or(line.strip_prefix("copy to "))
        {
            f.new_path = Some(unquote(p));
        } else if let Some(m) = line
            .strip_prefix("new file mode ")
            .or(line.strip_prefix("new mode "))
        {
            f.new_mode = Some(m.trim().to_string());
        } else if let Some(rest) = line.strip_prefix("index ") {
            // `index abc..def 120000`: the mode of an unchanged-mode file.
            if f.new_mode.is_none()
                && let Some(mode) = rest.split_whitespace().nth(1)
            {
                f.new_mode = Some(mode.to_string());
            }
        } else if line.starts_with("deleted file mode ") {
            f.new_path = None;
        } else if line == "GIT binary patch" {
            in_binary = true;
        } else if in_binary {
            if let Some(n) = line
                .strip_prefix("literal ")
                .or(line.strip_prefix("delta "))
            {
                f.new_bytes += n.trim().parse::<u64>().unwrap_or(u64::MAX / 4);
                // Only the first block is the new content; the second is
                // the reverse.
                in_binary = false;
            }
        } else if let Some(added) = line.strip_prefix('+') {
            f.new_bytes += added.len() as u64 + 1;
            if f.new_mode.as_deref() == Some("120000") {
                f.symlink_target = Some(added.to_string());
            }
        }
    }
    files
}

/// Splits `a/x b/y` (either side possibly quoted).
fn split_header(rest: &str) -> (Option<String>, Option<String>) {
    if let Some(inner) = rest.strip_prefix('"')
        && let Some(end) = inner.find('"')
    {
        let a = &rest[..end + 2];
        return (
            Some(a.to_string()),
            Some(rest[end + 2..].trim().to_string()),
        );
    }
    match rest.find(" b/").or_else(|| rest.find(" \"b/")) {
        Some(i) => (Some(rest[..i].to_string()), Some(rest[i + 1..].to_string())),
        None => (Some(rest.to_string()), None),
    }
}

/// Checks a path named by the patch against the repository at `root`.
fn check_path(root: &Path, path: &str) -> Result<(), Refused> {
    let p = Path::new(path);
    if path.is_empty() || p.is_absolute() {
        return Err(refuse(path, "absolute or empty paths are not allowed"));
    }
    let mut depth = 0usize;
    for c in p.components() {
        match c {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir => return Err(refuse(path, "paths may not contain `..`")),
            Component::RootDir | Component::Prefix(_) => {
                return Err(refuse(path, "absolute paths are not allowed"));
            }
        }
    }
    if depth == 0 {
        return Err(refuse(path, "the path names the repository itself"));
    }
    if p.components()
        .next()
        .is_some_and(|c| c.as_os_str() == ".git")
    {
        return Err(refuse(path, "nothing may be written under .git/"));
    }
    // No component below the file may be a symlink in the host tree: a
    // write there would land wherever the link points.
    let mut prefix = root.to_path_buf();
    let parts: Vec<_> = p.components().collect();
    for c in &parts[..parts.len().saturating_sub(1)] {
        prefix.push(c);
        if std::fs::symlink_metadata(&prefix).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(refuse(
                path,
                "a parent directory is a symlink on the host; no writes through symlinks",
            ));
        }
    }
    Ok(())
}

/// Where a symlink at `link` pointing at `target` resolves, lexically, or
/// None when it leaves the repository.
fn symlink_stays_inside(link: &str, target: &str) -> bool {
    if target.starts_with('/') {
        return false;
    }
    let mut depth: i64 = Path::new(link).components().count() as i64 - 1;
    for c in Path::new(target).components() {
        match c {
            Component::ParentDir => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            _ => return false,
        }
    }
    true
}

/// Applies a validated patch to the host working tree with `git apply`,
/// refusing (unless `force`) when a file it touches has uncommitted changes
/// on the host.
pub fn apply(root: &Path, patch: &[u8], files: &[PatchFile], force: bool) -> Result<(), String> {
    use std::io::Write;
    let paths: Vec<&str> = files
        .iter()
        .flat_map(|f| f.old_path.iter().chain(f.new_path.iter()))
        .map(String::as_str)
        .collect();
    if !force && !paths.is_empty() {
        let out = host_git(root)
            .args(["status", "--porcelain", "--untracked-files=all", "--"])
            .args(&paths)
            .output()
            .map_err(|e| format!("cannot run git status: {e}"))?;
        let dirty = String::from_utf8_lossy(&out.stdout);
        if !dirty.trim().is_empty() {
            return Err(format!(
                "the patch touches files with uncommitted changes on the host:\n{}apply anyway with --force",
                dirty
            ));
        }
    }
    let mut child = host_git(root)
        .args(["apply", "--binary", "--whitespace=nowarn", "-"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run git apply: {e}"))?;
    child
        .stdin
        .take()
        .ok_or("no stdin for git apply")?
        .write_all(patch)
        .map_err(|e| format!("git apply: {e}"))?;
    let out = child
        .wait_with_output()
        .map_err(|e| format!("git apply: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "git apply refused the patch (nothing was written): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The one place export code runs host git.
#[allow(clippy::disallowed_methods)]
fn host_git(root: &Path) -> std::process::Command {
    let mut cmd = std::process::Command::new("git");
    cmd.arg("-C")
        .arg(root)
        .env("PATH", crate::paths::tool_search_path());
    cmd
}

/// Validates a whole patch against the host repository at `root`; returns
/// the files it touches.
pub fn validate(root: &Path, patch: &[u8], limits: Limits) -> Result<Vec<PatchFile>, Refused> {
    if patch.len() as u64 > limits.total {
        return Err(refuse(
            "(patch)",
            format!(
                "the patch is {} bytes, over the {} byte limit",
                patch.len(),
                limits.total
            ),
        ));
    }
    let text = String::from_utf8_lossy(patch);
    let files = parse(&text);
    let new_symlinks: Vec<&str> = files
        .iter()
        .filter(|f| f.new_mode.as_deref() == Some("120000"))
        .filter_map(|f| f.new_path.as_deref())
        .collect();
    for f in &files {
        // Nor through a symlink the same patch creates.
        if let Some(path) = f.new_path.as_deref()
            && let Some(link) = new_symlinks
                .iter()
                .find(|l| path.starts_with(&format!("{l}/")))
        {
            return Err(refuse(
                path,
                format!("{link} is a symlink this patch creates; no writes through symlinks"),
            ));
        }
        for path in f.old_path.iter().chain(f.new_path.iter()) {
            check_path(root, path)?;
        }
        let shown = f
            .new_path
            .as_deref()
            .or(f.old_path.as_deref())
            .unwrap_or("?");
        if f.new_bytes > limits.per_file {
            return Err(refuse(
                shown,
                format!(
                    "{} bytes, over the {} byte limit per file",
                    f.new_bytes, limits.per_file
                ),
            ));
        }
        if let (Some(path), Some(target)) = (&f.new_path, &f.symlink_target)
            && !symlink_stays_inside(path, target)
        {
            return Err(refuse(
                path,
                format!("symlink to {target:?} points outside the repository"),
            ));
        }
    }
    Ok(files)
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests make real patches with git
mod tests {
    use super::*;

    const MODIFY: &str = "diff --git a/src/lib.rs b/src/lib.rs\nindex 1..2 100644\n--- a/src/lib.rs\n+++ b/src/lib.rs\n@@ -1 +1 @@\n-a\n+b\n";

    fn patch_for(path: &str) -> String {
        format!(
            "diff --git a/{path} b/{path}\nnew file mode 100644\nindex 0..1\n--- /dev/null\n+++ b/{path}\n@@ -0,0 +1 @@\n+x\n"
        )
    }

    #[test]
    fn ordinary_changes_pass() {
        let root = tempfile::tempdir().unwrap();
        let files = validate(root.path(), MODIFY.as_bytes(), Limits::default()).unwrap();
        assert_eq!(files[0].new_path.as_deref(), Some("src/lib.rs"));
        let rename = "diff --git a/x b/y\nsimilarity index 100%\nrename from x\nrename to y\n";
        let files = validate(root.path(), rename.as_bytes(), Limits::default()).unwrap();
        assert_eq!(
            (files[0].old_path.as_deref(), files[0].new_path.as_deref()),
            (Some("x"), Some("y"))
        );
    }

    #[test]
    fn hostile_paths_are_refused_with_the_rule() {
        let root = tempfile::tempdir().unwrap();
        for (path, rule) in [
            ("../outside", "`..`"),
            ("a/../../etc/passwd", "`..`"),
            (".git/hooks/post-checkout", ".git/"),
            ("/etc/passwd", "absolute"),
        ] {
            let err =
                validate(root.path(), patch_for(path).as_bytes(), Limits::default()).unwrap_err();
            assert!(err.rule.contains(rule), "{path}: {err}");
            assert!(err.to_string().contains("nothing was written"));
        }
        let quoted = "diff --git \"a/\\056\\056/x\" \"b/\\056\\056/x\"\nnew file mode 100644\n--- /dev/null\n+++ \"b/\\056\\056/x\"\n@@ -0,0 +1 @@\n+x\n";
        assert!(
            validate(root.path(), quoted.as_bytes(), Limits::default()).is_err(),
            "quoted ../ must be caught"
        );
    }

    #[test]
    fn symlinks_out_and_writes_through_symlinks_are_refused() {
        let root = tempfile::tempdir().unwrap();
        let link = "diff --git a/etc b/etc\nnew file mode 120000\nindex 0..1\n--- /dev/null\n+++ b/etc\n@@ -0,0 +1 @@\n+/etc\n\\ No newline at end of file\n";
        let err = validate(root.path(), link.as_bytes(), Limits::default()).unwrap_err();
        assert!(err.rule.contains("outside the repository"), "{err}");
        let up = link.replace("+/etc", "+../../etc");
        assert!(validate(root.path(), up.as_bytes(), Limits::default()).is_err());
        let inside = link.replace("+/etc", "+docs/readme");
        assert!(validate(root.path(), inside.as_bytes(), Limits::default()).is_ok());
        // A directory that is a symlink on the host: no writes through it.
        std::os::unix::fs::symlink("/tmp", root.path().join("linkdir")).unwrap();
        let err = validate(
            root.path(),
            patch_for("linkdir/evil").as_bytes(),
            Limits::default(),
        )
        .unwrap_err();
        assert!(err.rule.contains("symlink"), "{err}");
        // Nor through a symlink the patch itself creates.
        let two = format!(
            "{}{}",
            inside
                .replace("docs/readme", "docs")
                .replace("b/etc", "b/sneaky")
                .replace("a/etc", "a/sneaky"),
            patch_for("sneaky/x")
        );
        let err = validate(root.path(), two.as_bytes(), Limits::default()).unwrap_err();
        assert!(err.rule.contains("symlink this patch creates"), "{err}");
    }

    #[test]
    fn oversize_files_are_refused() {
        let root = tempfile::tempdir().unwrap();
        let big = format!(
            "diff --git a/big.bin b/big.bin\nnew file mode 100644\nindex 0..1\nGIT binary patch\nliteral {}\nzcmV\n\nliteral 0\nHcmV?d00001\n\n",
            MAX_FILE_BYTES + 1
        );
        let err = validate(root.path(), big.as_bytes(), Limits::default()).unwrap_err();
        assert!(err.rule.contains("limit per file"), "{err}");
    }

    #[test]
    fn quoting_is_undone() {
        assert_eq!(unquote("\"a/t\\303\\251st\""), "a/tést");
        assert_eq!(unquote("plain"), "plain");
    }
}
