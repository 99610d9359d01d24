//! Where a path a tool printed in the guest lands in the host repository
//! (pure but for reading the repository's index): the one mapping of
//! guest output to host files, for diagnostics (`banger lsp`) and failure
//! records (`banger mcp`). Nothing outside the repository or under `.git`
//! is ever named.

use std::path::Path;

/// The files the repository's index tracks (empty when it cannot be read).
pub fn tracked_files(root: &Path) -> Vec<String> {
    gix::open(root)
        .ok()
        .and_then(|r| r.index_or_empty().ok())
        .map(|i| i.entries().iter().map(|e| e.path(&i).to_string()).collect())
        .unwrap_or_default()
}

/// Maps a path a tool printed in the guest to the repository file it
/// names (relative to `root`): relative to the workspace, absolute under
/// the guest workspace, or (Go prints package-relative names) the one
/// tracked file it is a suffix of. Nothing outside the repository or
/// under `.git` is named.
pub fn repo_file(root: &Path, printed: &str, tracked: &[String]) -> Option<String> {
    let guest_root = crate::workspace::transfer::GUEST_PATH;
    let rel = match printed.strip_prefix(guest_root) {
        Some(r) => r.trim_start_matches('/').to_string(),
        None if printed.starts_with('/') => return None,
        None => printed.trim_start_matches("./").to_string(),
    };
    if rel.split('/').any(|c| c == ".." || c == ".git") || rel.is_empty() {
        return None;
    }
    if tracked.contains(&rel) || root.join(&rel).is_file() {
        return Some(rel);
    }
    let suffix = format!("/{rel}");
    let mut hits = tracked.iter().filter(|t| t.ends_with(&suffix));
    match (hits.next(), hits.next()) {
        (Some(one), None) => Some(one.clone()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_paths_map_to_files_inside_the_repo() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("pkg/m")).unwrap();
        std::fs::write(root.join("pkg/m/m_test.go"), "").unwrap();
        std::fs::write(root.join("a.rs"), "").unwrap();
        let tracked = vec!["a.rs".to_string(), "pkg/m/m_test.go".to_string()];
        let f = |p: &str| repo_file(root, p, &tracked);
        assert_eq!(f("a.rs").as_deref(), Some("a.rs"));
        assert_eq!(f("/root/repo/a.rs").as_deref(), Some("a.rs"));
        assert_eq!(f("m_test.go").as_deref(), Some("pkg/m/m_test.go"));
        assert_eq!(f("/etc/passwd"), None);
        assert_eq!(f("../x.rs"), None);
        assert_eq!(f("nothing.rs"), None);
    }
}
