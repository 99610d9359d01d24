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

/// Removes temporary export indexes of exports that are no longer running
/// (killed before their trap could run): `$1` the guest repository.
pub const CLEANUP_SCRIPT: &str = r#"cd "$1" || exit 0
for f in .git/banger-export-index.*; do
    [ -e "$f" ] || continue
    kill -0 "${f##*.}" 2>/dev/null || rm -f "$f"
done
"#;

/// Makes the patch in the guest, on stdout: the working tree (untracked,
/// not ignored files included) against `$2` (a commit, default HEAD) in
/// repository `$1`, through a temporary index next to the repository's own
/// (same file system: seed bug, a temporary index on tmpfs made git fail
/// with "unable to write new index file"), so the guest's index is never
/// changed. A changed file over `$3` bytes (when set) is refused (exit 3)
/// before git reads any of it.
pub const GUEST_SCRIPT: &str = r#"set -eu
cd "$1"
base=${2:-HEAD}
max=${3:-0}
git rev-parse --verify -q "$base^{commit}" >/dev/null || { echo "no commit $base in the guest repository" >&2; exit 3; }
for f in .git/banger-export-index.*; do
    [ -e "$f" ] || continue
    kill -0 "${f##*.}" 2>/dev/null || rm -f "$f"
done
if [ "$max" -gt 0 ]; then
    big=$(git ls-files -z -m -o --exclude-standard | xargs -0 -r stat -c '%s %n' -- 2>/dev/null |
        awk -v max="$max" '$1 > max { print; exit }')
    if [ -n "$big" ]; then
        echo "refused the guest's patch: ${big#* } is ${big%% *} bytes, over the $max byte limit per file (BANGER_EXPORT_MAX_FILE); nothing was written" >&2
        exit 3
    fi
fi
tmp="$(git rev-parse --absolute-git-dir)/banger-export-index.$$"
trap 'rm -f "$tmp"' EXIT
# The guest's own index carries each file's stat (the agent writes it at
# the transfer, git keeps it up to date): from a copy of it, `add -A` reads
# only the files that changed, where an index made by read-tree has no stat
# and made it hash every file. Only when that index is exactly $base's tree
# (nothing staged or untracked by hand in the guest), so the patch is the
# same either way.
if [ "$(git rev-parse -q --verify HEAD)" = "$(git rev-parse "$base^{commit}")" ] &&
    git diff-index --cached --quiet HEAD -- && cp "$(git rev-parse --git-path index)" "$tmp"; then
    :
else
    GIT_INDEX_FILE="$tmp" git read-tree "$base"
fi
GIT_INDEX_FILE="$tmp" git add -A
# Whatever the guest's git config says: fixed prefixes, no colour, no
# external diff driver (the host applies with -p1).
GIT_INDEX_FILE="$tmp" git -c diff.noprefix=false -c diff.mnemonicPrefix=false diff --cached \
    --binary --full-index -M --no-color --no-ext-diff --src-prefix=a/ --dst-prefix=b/ "$base"
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
    /// The last added text line (a symlink's new target).
    pub added_line: Option<String>,
    /// The new content comes as a `GIT binary patch`.
    pub binary: bool,
    /// The binary patch's forward size was counted.
    pub binary_sized: bool,
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

/// A path from a `---`/`+++`/header line: `/dev/null` is none; anything
/// else must carry the expected `a/` or `b/` prefix (the host applies with
/// `-p1`, so another prefix would put the file somewhere else than checked).
fn strip_side(p: &str, side: &str) -> Result<Option<String>, Refused> {
    let raw = p.trim();
    let p = unquote(raw);
    if p == "/dev/null" {
        return Ok(None);
    }
    match p.strip_prefix(side) {
        Some(rest) => Ok(Some(rest.to_string())),
        None => Err(refuse(&p, format!("a patch path must start with {side}"))),
    }
}

/// Where the parser is within a patch.
enum State {
    /// Before the first `diff --git`, or after a file's hunks.
    Between,
    /// In a file's extended header (modes, renames, `---`/`+++`).
    Header,
    /// Inside a hunk: old and new lines still expected.
    Hunk(u64, u64),
    /// Inside a binary patch.
    Binary,
}

fn hunk_counts(line: &str) -> Option<(u64, u64)> {
    // `@@ -l[,s] +l[,s] @@ ...`
    let rest = line.strip_prefix("@@ -")?;
    let (old, rest) = rest.split_once(" +")?;
    let new = rest.split_once(" @@")?.0;
    let count = |r: &str| match r.split_once(',') {
        Some((_, n)) => n.parse::<u64>().ok(),
        None => Some(1),
    };
    Some((count(old)?, count(new)?))
}

/// Reads the files a git patch touches. Strict: hunk bodies are skipped by
/// their counts (content never reads as a header), and every section must
/// be a `diff --git` one; anything else refuses the patch.
pub fn parse(patch: &str) -> Result<Vec<PatchFile>, Refused> {
    let mut files: Vec<PatchFile> = Vec::new();
    let mut state = State::Between;
    for line in patch.lines() {
        if let State::Hunk(old, new) = state {
            let (o, n) = match line.as_bytes().first() {
                Some(b' ') | None => (1, 1),
                Some(b'-') => (1, 0),
                Some(b'+') => (0, 1),
                Some(b'\\') => (0, 0),
                _ => return Err(refuse("(patch)", format!("malformed hunk line {line:?}"))),
            };
            if let Some(f) = files.last_mut()
                && let Some(added) = line.strip_prefix('+')
            {
                f.new_bytes += added.len() as u64 + 1;
                f.added_line = Some(added.to_string());
            }
            let (old, new) = (old.saturating_sub(o), new.saturating_sub(n));
            state = if old == 0 && new == 0 {
                State::Between
            } else {
                State::Hunk(old, new)
            };
            continue;
        }
        if let Some(rest) = line.strip_prefix("diff --git ") {
            let (a, b) = split_header(rest);
            files.push(PatchFile {
                old_path: a.map(|a| strip_side(&a, "a/")).transpose()?.flatten(),
                new_path: b.map(|b| strip_side(&b, "b/")).transpose()?.flatten(),
                ..PatchFile::default()
            });
            state = State::Header;
            continue;
        }
        let Some(f) = files.last_mut() else {
            if line.trim().is_empty() {
                continue;
            }
            return Err(refuse(
                "(patch)",
                "content before the first `diff --git` section",
            ));
        };
        match state {
            State::Binary => {
                if let Some(n) = line
                    .strip_prefix("literal ")
                    .or(line.strip_prefix("delta "))
                {
                    // Only the first block is the new content; the second
                    // is the reverse.
                    if !f.binary_sized {
                        f.new_bytes += n.trim().parse::<u64>().unwrap_or(u64::MAX / 4);
                        f.binary_sized = true;
                    }
                }
                continue;
            }
            State::Hunk(..) => unreachable!("handled above"),
            // After a file's hunks: another hunk of it, or nothing but the
            // next `diff --git` (a plain diff section would hide here).
            State::Between => {
                if let Some(counts) = hunk_counts(line) {
                    state = State::Hunk(counts.0, counts.1);
                } else if !(line.starts_with('\\') || line.trim().is_empty()) {
                    return Err(refuse(
                        "(patch)",
                        format!("unexpected line {line:?} between files"),
                    ));
                }
                continue;
            }
            State::Header => {}
        }
        if let Some(counts) = hunk_counts(line) {
            state = State::Hunk(counts.0, counts.1);
        } else if let Some(p) = line.strip_prefix("--- ") {
            f.old_path = strip_side(p, "a/")?;
        } else if let Some(p) = line.strip_prefix("+++ ") {
            f.new_path = strip_side(p, "b/")?;
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
            f.binary = true;
            state = State::Binary;
        } else if line.starts_with("old mode ")
            || line.starts_with("similarity index ")
            || line.starts_with("dissimilarity index ")
            || line.starts_with("Binary files ")
            // `\ No newline at end of file` after a hunk's last line.
            || line.starts_with('\\')
            || line.trim().is_empty()
        {
        } else {
            return Err(refuse("(patch)", format!("unexpected line {line:?}")));
        }
    }
    if let State::Hunk(..) = state {
        return Err(refuse("(patch)", "the patch ends inside a hunk"));
    }
    Ok(files)
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
pub(crate) fn check_path(root: &Path, path: &str) -> Result<(), Refused> {
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
    // Any `.git` component (git itself refuses them, in any case): the
    // repository's, or a nested one's hooks and config.
    if p.components()
        .any(|c| c.as_os_str().eq_ignore_ascii_case(".git"))
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

/// Why a symlink at `link` (a repository path) pointing at `target` may
/// not be written, resolving the target lexically: it leaves the
/// repository, or it leads into a `.git` directory (like a path under
/// `.git/`, which would let a later write land in the host's hooks or
/// config). `None`: it may.
pub(crate) fn symlink_refusal(link: &str, target: &str) -> Option<String> {
    let outside = || {
        Some(format!(
            "symlink to {target:?} points outside the repository"
        ))
    };
    if target.starts_with('/') {
        return outside();
    }
    let mut resolved: Vec<&std::ffi::OsStr> = Path::new(link)
        .parent()
        .map(|p| p.components().map(|c| c.as_os_str()).collect())
        .unwrap_or_default();
    for c in Path::new(target).components() {
        match c {
            Component::ParentDir => {
                if resolved.pop().is_none() {
                    return outside();
                }
            }
            Component::Normal(name) => resolved.push(name),
            Component::CurDir => {}
            _ => return outside(),
        }
    }
    if resolved.iter().any(|c| c.eq_ignore_ascii_case(".git")) {
        return Some(format!(
            "symlink to {target:?} points into .git/; nothing may be written there"
        ));
    }
    None
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
        // Literal pathspecs: a guest-chosen name like `:(exclude)*` must not
        // empty the check.
        let out = host_git(root)
            .args([
                "--literal-pathspecs",
                "status",
                "--porcelain",
                "--untracked-files=all",
                "--",
            ])
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
        .args(["apply", "-p1", "--binary", "--whitespace=nowarn", "-"])
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

/// Host git in `root`.
fn host_git(root: &Path) -> std::process::Command {
    let mut cmd = crate::tool::command(crate::tool::Tool::Git);
    cmd.arg("-C").arg(root);
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
    let files = parse(&text)?;
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
        // A symlink after the patch: declared 120000, or an existing host
        // symlink whose mode the patch leaves alone.
        let Some(path) = &f.new_path else { continue };
        let host_link = f
            .old_path
            .as_ref()
            .map(|old| root.join(old))
            .filter(|p| std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_symlink()));
        let is_link = match f.new_mode.as_deref() {
            Some("120000") => true,
            Some(_) => false,
            None => host_link.is_some(),
        };
        if !is_link {
            continue;
        }
        if f.binary {
            return Err(refuse(path, "a symlink may not come as a binary patch"));
        }
        let target = match (&f.added_line, &host_link) {
            (Some(target), _) => target.clone(),
            // A pure rename or copy keeps the host link's target.
            (None, Some(link)) => std::fs::read_link(link)
                .map(|t| t.to_string_lossy().into_owned())
                .map_err(|_| refuse(path, "cannot read the symlink it renames"))?,
            (None, None) => return Err(refuse(path, "a symlink without a target")),
        };
        if let Some(rule) = symlink_refusal(path, &target) {
            return Err(refuse(path, rule));
        }
    }
    cross_check_with_git(root, patch, &files)?;
    Ok(files)
}

/// git's own reading of the patch must name exactly the paths the parser
/// found: a section the parser did not see (a plain diff, a trick of
/// quoting) refuses the patch instead of slipping past the checks.
fn cross_check_with_git(root: &Path, patch: &[u8], files: &[PatchFile]) -> Result<(), Refused> {
    use std::io::Write;
    let mut child = host_git(root)
        .args(["apply", "-p1", "--numstat", "-z", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| refuse("(patch)", format!("cannot run git apply --numstat: {e}")))?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    let patch = patch.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&patch));
    let out = child
        .wait_with_output()
        .map_err(|e| refuse("(patch)", format!("git apply --numstat: {e}")))?;
    let _ = writer.join();
    if !out.status.success() {
        return Err(refuse(
            "(patch)",
            format!(
                "git cannot read it: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ));
    }
    // `added\tdeleted\tpath\0`, or for a rename `added\tdeleted\t\0old\0new\0`.
    let mut git_paths = std::collections::BTreeSet::new();
    let mut fields = out.stdout.split(|b| *b == 0).peekable();
    while let Some(field) = fields.next() {
        if field.is_empty() {
            continue;
        }
        let text = String::from_utf8_lossy(field);
        let path = text.splitn(3, '\t').nth(2).unwrap_or_default().to_string();
        if path.is_empty() {
            for _ in 0..2 {
                if let Some(p) = fields.next() {
                    git_paths.insert(String::from_utf8_lossy(p).into_owned());
                }
            }
        } else {
            git_paths.insert(path);
        }
    }
    let ours: std::collections::BTreeSet<String> = files
        .iter()
        .flat_map(|f| f.old_path.iter().chain(f.new_path.iter()))
        .cloned()
        .collect();
    if git_paths.iter().any(|p| !ours.contains(p)) {
        let extra: Vec<&String> = git_paths.iter().filter(|p| !ours.contains(*p)).collect();
        return Err(refuse(
            extra.first().map(|s| s.as_str()).unwrap_or("(patch)"),
            "git would touch a path banger did not check",
        ));
    }
    Ok(())
}

#[cfg(test)]
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
    fn symlinks_into_git_are_refused_like_paths_under_git() {
        let root = tempfile::tempdir().unwrap();
        for (link, target) in [
            ("gitdir", ".git"),
            ("hooklink", ".git/hooks"),
            ("sub/up", "../.git/config"),
            ("x", "./.GIT/hooks"),
        ] {
            let patch = format!(
                "diff --git a/{link} b/{link}\nnew file mode 120000\nindex 0..1\n--- /dev/null\n+++ b/{link}\n@@ -0,0 +1 @@\n+{target}\n\\ No newline at end of file\n"
            );
            let err = validate(root.path(), patch.as_bytes(), Limits::default()).unwrap_err();
            assert!(err.rule.contains("points into .git/"), "{link}: {err}");
        }
        assert_eq!(symlink_refusal("docs/l", "../README"), None);
        assert_eq!(symlink_refusal("a/b", "../.gitignore"), None);
        assert!(symlink_refusal("a", "../x").unwrap().contains("outside"));
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

    /// A host repository with a symlink `link -> docs`, and `docs/readme`.
    fn host_repo() -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("docs")).unwrap();
        std::fs::write(root.path().join("docs/readme"), "a\n").unwrap();
        std::fs::write(root.path().join("docs/other"), "a\n").unwrap();
        std::os::unix::fs::symlink("docs", root.path().join("link")).unwrap();
        root
    }

    #[test]
    fn review_findings_stay_fixed() {
        let root = host_repo();
        let check = |patch: &str, rule: &str| {
            let err = validate(root.path(), patch.as_bytes(), Limits::default()).unwrap_err();
            assert!(err.to_string().contains(rule), "wanted {rule:?}, got {err}");
        };
        // An existing symlink retargeted with no mode in the patch.
        check(
            "diff --git a/link b/link\nindex 1111111..2222222\n--- a/link\n+++ b/link\n@@ -1 +1 @@\n-docs\n\\ No newline at end of file\n+/etc\n\\ No newline at end of file\n",
            "points outside",
        );
        // A symlink sent as a binary patch.
        check(
            "diff --git a/evil b/evil\nnew file mode 120000\nindex 0000000..1111111\nGIT binary patch\nliteral 10\nRcmV\n\nliteral 0\nHcmV?d00001\n\n",
            "binary patch",
        );
        // Prefixes other than a/ and b/ (git strips any first component).
        check(
            "diff --git x/up y/up\nnew file mode 120000\n--- /dev/null\n+++ y/up\n@@ -0,0 +1 @@\n+..\n\\ No newline at end of file\n",
            "must start with",
        );
        // A plain diff section after a git one.
        check(
            "diff --git a/docs/readme b/docs/readme\n--- a/docs/readme\n+++ b/docs/readme\n@@ -1 +1 @@\n-a\n+b\n--- a/docs/other\n+++ b/docs/other\n@@ -1 +1 @@\n-a\n+b\n",
            "between files",
        );
        // Hunk content that looks like headers is content.
        let tricky = "diff --git a/docs/readme b/docs/readme\n--- a/docs/readme\n+++ b/docs/readme\n@@ -1 +1,2 @@\n-a\n+++ b/.git/hooks/x\n+b\n";
        let files = validate(root.path(), tricky.as_bytes(), Limits::default()).unwrap();
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].new_path.as_deref(), Some("docs/readme"));
    }
}
