//! What a tool accepts as a path in the guest workspace (pure). An agent
//! shapes these strings: a path is relative to the workspace, never
//! climbs out of it (`..`, absolute), and never writes under `.git`. The
//! guest then resolves symbolic links and refuses what lands outside
//! (`guest::FILE_SCRIPTS`), since only the guest knows its links.

/// Longest path accepted.
const MAX_PATH: usize = 4096;

/// Checks a workspace-relative path and returns it normalized (`a/./b/`
/// is `a/b`; the workspace itself is `.`). `what` names the argument in
/// the message; `writing` also refuses `.git`.
pub(crate) fn workspace_path(path: &str, what: &str, writing: bool) -> Result<String, String> {
    if path.len() > MAX_PATH {
        return Err(format!("{what} is longer than {MAX_PATH} bytes"));
    }
    if path.contains('\0') {
        return Err(format!("{what} contains a NUL byte"));
    }
    if path.starts_with('/') {
        return Err(format!(
            "{what} {path:?} is absolute; give a path relative to the workspace (e.g. src/main.rs)"
        ));
    }
    let mut parts = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                return Err(format!(
                    "{what} {path:?} leaves the workspace (..); give a path inside it"
                ));
            }
            ".git" if writing => {
                return Err(format!(
                    "{what} {path:?} is under .git; the repository's own files are not written through this tool"
                ));
            }
            c => parts.push(c),
        }
    }
    if parts.is_empty() {
        return Ok(".".into());
    }
    Ok(parts.join("/"))
}

/// Checks a path that must name a file (not the workspace itself).
pub(crate) fn file_path(path: &str, what: &str, writing: bool) -> Result<String, String> {
    match workspace_path(path, what, writing)? {
        p if p == "." => Err(format!("{what} names the workspace itself; give a file")),
        p => Ok(p),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_in_the_workspace() {
        assert_eq!(workspace_path("a/./b/", "path", false).unwrap(), "a/b");
        assert_eq!(workspace_path("", "path", false).unwrap(), ".");
        assert_eq!(workspace_path(".", "path", false).unwrap(), ".");
        assert_eq!(
            workspace_path(".git/config", "path", false).unwrap(),
            ".git/config"
        );
        for bad in ["../x", "a/../../x", "a/..", "/etc/passwd", "a\0b"] {
            assert!(workspace_path(bad, "path", false).is_err(), "{bad:?}");
        }
        let long = "a/".repeat(3000);
        assert!(workspace_path(&long, "path", false).is_err());
    }

    #[test]
    fn writes_never_touch_git_or_the_workspace_itself() {
        assert!(file_path(".git/hooks/pre-commit", "path", true).is_err());
        assert!(file_path("sub/.git/x", "path", true).is_err());
        assert!(file_path("./", "path", true).is_err());
        assert_eq!(
            file_path("src/.gitignore", "path", true).unwrap(),
            "src/.gitignore"
        );
        let e = file_path("../x", "path", true).unwrap_err();
        assert!(e.contains("leaves the workspace"), "{e}");
    }
}
