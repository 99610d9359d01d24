//! Workspaces: which files of a host git repository travel into a guest.
//!
//! Decided with gix, the way git itself would: the index's tracked files
//! (with their modes and symlinks as git stores them) by default; with
//! `include_untracked`, also untracked files that no ignore rule matches.
//! Submodules are never shipped; they are reported so the user is told.
//!
//! `select` reads the repository and decides; [`transfer`] ships the result.

pub mod export;
#[cfg(test)]
mod export_script_tests;
pub mod host_pack;
mod local_pack;
pub mod sync;
pub mod transfer;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A repository could not be read.
#[derive(Debug, thiserror::Error)]
pub enum WorkspaceError {
    /// No repository at or above the path.
    #[error(
        "{path} is not inside a git repository; run banger vm run from a repo, or pass its path"
    )]
    NotARepo {
        /// The path given.
        path: String,
    },
    /// A bare repository has no files to ship.
    #[error("{path} is a bare git repository; give a repository with a working tree")]
    Bare {
        /// The repository.
        path: String,
    },
    /// A request that cannot be met (bad branch name, unknown ref).
    #[error("{0}")]
    Invalid(String),
    /// gix failed.
    #[error("cannot read the git repository at {path}: {message}")]
    Git {
        /// The repository.
        path: String,
        /// gix's message.
        message: String,
    },
}

/// How a file is stored, as git records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileKind {
    /// A regular file (0644).
    File,
    /// An executable file (0755).
    Executable,
    /// A symbolic link.
    Symlink,
}

/// One file that travels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkspaceFile {
    /// Path relative to the repository root, `/`-separated.
    pub path: String,
    /// Its kind.
    pub kind: FileKind,
    /// Tracked in the index (false: an untracked file that was included).
    pub tracked: bool,
}

/// What a transfer would ship.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Selection {
    /// The repository's working tree root.
    pub root: PathBuf,
    /// Files to ship, sorted by path.
    pub files: Vec<WorkspaceFile>,
    /// Whether untracked files were included.
    pub include_untracked: bool,
    /// Untracked, not ignored files that were left out.
    pub untracked_left_out: usize,
    /// Tracked files missing from the working tree (deleted, not staged).
    pub missing: Vec<String>,
    /// Submodule paths, which are not shipped.
    pub submodules: Vec<String>,
    /// The commit HEAD points at, if any.
    pub head: Option<String>,
}

impl Selection {
    /// The line `--dry-run` prints about the mode.
    pub fn mode_line(&self) -> &'static str {
        if self.include_untracked {
            "mode: tracked + untracked"
        } else {
            "mode: tracked only"
        }
    }
}

fn git_err(path: &Path, e: impl std::fmt::Display) -> WorkspaceError {
    WorkspaceError::Git {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

/// A repository path as text. A name that is not UTF-8 refuses the whole
/// repository, before anything is created: shipping it under another name
/// would make the guest see a file missing, and an export would then
/// delete the real one on the host.
fn utf8_path(root: &Path, path: &gix::bstr::BStr) -> Result<String, WorkspaceError> {
    match std::str::from_utf8(path) {
        Ok(p) => Ok(p.to_string()),
        Err(_) => Err(WorkspaceError::Invalid(format!(
            "{}: the file name {:?} is not UTF-8, which banger cannot ship yet; rename it (git mv) and try again",
            root.display(),
            path
        ))),
    }
}

/// Why the repository at or above `path` could not be opened: there is
/// none, or there is one banger cannot read (a SHA-256 repository, or a
/// broken configuration), which is said as such.
fn unopenable(path: &Path, error: &(dyn std::error::Error + 'static)) -> WorkspaceError {
    let Ok((found, _)) = gix::discover::upwards(path) else {
        return WorkspaceError::NotARepo {
            path: path.display().to_string(),
        };
    };
    let (git_dir, _) = found.into_repository_and_work_tree_directories();
    let format = gix::config::File::from_path_no_includes(
        git_dir.join("config"),
        gix::config::Source::Local,
    )
    .ok()
    .and_then(|config| {
        config
            .string("extensions.objectFormat")
            .map(|v| v.to_string())
    });
    if let Some(format) = format.filter(|f| !f.eq_ignore_ascii_case("sha1")) {
        return WorkspaceError::Invalid(format!(
            "{}: this repository's objects are {format} (extensions.objectFormat); banger ships SHA-1 repositories only, for now",
            path.display()
        ));
    }
    let message = crate::error_chain(error);
    git_err(
        path,
        format!("banger cannot open this repository: {message}"),
    )
}

/// Decides which files of the repository at or above `path` travel.
pub fn select(path: &Path, include_untracked: bool) -> Result<Selection, WorkspaceError> {
    let repo = gix::discover(path).map_err(|e| unopenable(path, &e))?;
    let root = repo
        .workdir()
        .ok_or_else(|| WorkspaceError::Bare {
            path: path.display().to_string(),
        })?
        .to_path_buf();
    let index = repo.index_or_empty().map_err(|e| git_err(&root, e))?;
    let mut files = Vec::new();
    let mut missing = Vec::new();
    let mut submodules = Vec::new();
    for entry in index.entries() {
        // Only stage 0: a conflicted path has other stages too.
        if entry.stage_raw() != 0 {
            continue;
        }
        let rela = utf8_path(&root, entry.path(&index))?;
        use gix::index::entry::Mode;
        let kind = if entry.mode.contains(Mode::COMMIT) {
            submodules.push(rela);
            continue;
        } else if entry.mode.contains(Mode::SYMLINK) {
            FileKind::Symlink
        } else if entry.mode.contains(Mode::FILE_EXECUTABLE) {
            FileKind::Executable
        } else {
            FileKind::File
        };
        if std::fs::symlink_metadata(root.join(&rela)).is_err() {
            missing.push(rela);
            continue;
        }
        files.push(WorkspaceFile {
            path: rela,
            kind,
            tracked: true,
        });
    }
    let mut untracked = Vec::new();
    let opts = repo
        .dirwalk_options()
        .map_err(|e| git_err(&root, e))?
        .emit_untracked(gix::dir::walk::EmissionMode::Matching)
        .emit_ignored(None);
    let walk = repo
        .dirwalk_iter(index.clone(), None::<&str>, Default::default(), opts)
        .map_err(|e| git_err(&root, e))?;
    for item in walk {
        let item = item.map_err(|e| git_err(&root, e))?;
        let entry = item.entry;
        if entry.status != gix::dir::entry::Status::Untracked {
            continue;
        }
        use gix::dir::entry::Kind;
        let kind = match entry.disk_kind {
            Some(Kind::Symlink) => FileKind::Symlink,
            Some(Kind::File) => {
                let meta = std::fs::metadata(root.join(entry.rela_path.to_string()));
                use std::os::unix::fs::PermissionsExt;
                if meta.is_ok_and(|m| m.permissions().mode() & 0o111 != 0) {
                    FileKind::Executable
                } else {
                    FileKind::File
                }
            }
            // Nested repositories and other oddities never travel.
            _ => continue,
        };
        // Left out, an untracked file may have any name (it is only
        // counted); shipped, its name must be UTF-8.
        let path = match utf8_path(&root, entry.rela_path.as_ref()) {
            Ok(path) => path,
            Err(e) if include_untracked => return Err(e),
            Err(_) => entry.rela_path.to_string(),
        };
        untracked.push(WorkspaceFile {
            path,
            kind,
            tracked: false,
        });
    }
    let untracked_left_out = if include_untracked {
        files.extend(untracked);
        0
    } else {
        untracked.len()
    };
    files.sort_by(|a, b| a.path.cmp(&b.path));
    let head = repo.head_id().ok().map(|id| id.detach().to_string());
    Ok(Selection {
        root,
        files,
        include_untracked,
        untracked_left_out,
        missing,
        submodules,
        head,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn git(dir: &Path, args: &[&str]) {
        let ok = crate::tool::for_test(crate::tool::Tool::Git)
            .args(["-c", "user.email=t@example.invalid", "-c", "user.name=t"])
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(
            ok.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&ok.stderr)
        );
    }

    /// A repo with a file, an executable, a symlink, a nested dir, an
    /// ignored file, untracked files and a deleted tracked file.
    fn repo() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        git(d, &["init", "-q"]);
        std::fs::write(d.join("README.md"), "hi\n").unwrap();
        std::fs::create_dir(d.join("bin")).unwrap();
        std::fs::write(d.join("bin/run.sh"), "#!/bin/sh\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(d.join("bin/run.sh"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        std::os::unix::fs::symlink("README.md", d.join("link")).unwrap();
        std::fs::write(d.join(".gitignore"), "*.log\ntarget/\n").unwrap();
        std::fs::write(d.join("gone.txt"), "x\n").unwrap();
        git(d, &["add", "-A"]);
        git(d, &["commit", "-qm", "init"]);
        std::fs::remove_file(d.join("gone.txt")).unwrap();
        std::fs::write(d.join("debug.log"), "ignored\n").unwrap();
        std::fs::create_dir(d.join("target")).unwrap();
        std::fs::write(d.join("target/out"), "ignored\n").unwrap();
        std::fs::write(d.join("notes.txt"), "untracked\n").unwrap();
        std::fs::create_dir(d.join("new")).unwrap();
        std::fs::write(d.join("new/file.rs"), "untracked\n").unwrap();
        dir
    }

    fn paths(s: &Selection) -> Vec<&str> {
        s.files.iter().map(|f| f.path.as_str()).collect()
    }

    #[test]
    fn tracked_only_by_default_with_modes() {
        let dir = repo();
        let s = select(&dir.path().join("bin"), false).unwrap();
        assert_eq!(s.root, dir.path());
        assert_eq!(paths(&s), [".gitignore", "README.md", "bin/run.sh", "link"]);
        let kind = |p: &str| s.files.iter().find(|f| f.path == p).unwrap().kind;
        assert_eq!(kind("bin/run.sh"), FileKind::Executable);
        assert_eq!(kind("link"), FileKind::Symlink);
        assert_eq!(kind("README.md"), FileKind::File);
        assert_eq!(s.untracked_left_out, 2);
        assert_eq!(s.missing, ["gone.txt"]);
        assert_eq!(s.mode_line(), "mode: tracked only");
        assert_eq!(s.head.as_deref().map(str::len), Some(40));
    }

    #[test]
    fn untracked_but_never_ignored_with_the_flag() {
        let dir = repo();
        let s = select(dir.path(), true).unwrap();
        assert_eq!(
            paths(&s),
            [
                ".gitignore",
                "README.md",
                "bin/run.sh",
                "link",
                "new/file.rs",
                "notes.txt"
            ]
        );
        assert!(
            !s.files
                .iter()
                .any(|f| f.path.ends_with(".log") || f.path.starts_with("target"))
        );
        assert_eq!(s.untracked_left_out, 0);
        assert_eq!(s.mode_line(), "mode: tracked + untracked");
    }

    #[test]
    fn a_file_name_that_is_not_utf8_refuses_the_repository() {
        use std::os::unix::ffi::OsStrExt;
        let dir = repo();
        let name = std::ffi::OsStr::from_bytes(b"bad\xff\xfename");
        std::fs::write(dir.path().join(name), "x").unwrap();
        // Untracked: refused only when untracked files travel.
        assert!(select(dir.path(), false).is_ok());
        let err = select(dir.path(), true).unwrap_err();
        assert!(err.to_string().contains("is not UTF-8"), "{err}");
        git(dir.path(), &["add", "-A"]);
        let err = select(dir.path(), false).unwrap_err();
        assert!(matches!(err, WorkspaceError::Invalid(_)), "{err}");
        assert!(err.to_string().contains("rename it"), "{err}");
    }

    #[test]
    fn submodules_are_reported_not_shipped() {
        let dir = repo();
        let sub = tempfile::tempdir().unwrap();
        git(sub.path(), &["init", "-q"]);
        std::fs::write(sub.path().join("f"), "x").unwrap();
        git(sub.path(), &["add", "-A"]);
        git(sub.path(), &["commit", "-qm", "sub"]);
        git(
            dir.path(),
            &[
                "-c",
                "protocol.file.allow=always",
                "submodule",
                "add",
                "-q",
                sub.path().to_str().unwrap(),
                "vendor/sub",
            ],
        );
        let s = select(dir.path(), false).unwrap();
        assert_eq!(s.submodules, ["vendor/sub"]);
        assert!(!paths(&s).iter().any(|p| p.starts_with("vendor/sub")));
    }

    #[test]
    fn not_a_repo_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = select(dir.path(), false).unwrap_err();
        assert!(
            err.to_string().contains("not inside a git repository"),
            "{err}"
        );
    }

    #[test]
    fn a_repository_banger_cannot_read_is_not_called_missing() {
        // SHA-256 object ids (git init --object-format=sha256).
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        git(d, &["init", "-q", "--object-format=sha256"]);
        std::fs::write(d.join("a.txt"), "a\n").unwrap();
        git(d, &["add", "a.txt"]);
        git(d, &["commit", "-qm", "first"]);
        std::fs::create_dir(d.join("sub")).unwrap();
        let err = select(&d.join("sub"), false).unwrap_err().to_string();
        assert!(
            err.contains("sha256") && err.contains("SHA-1 repositories only"),
            "{err}"
        );
        // A configuration git itself cannot read.
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        git(d, &["init", "-q"]);
        std::fs::write(d.join(".git/config"), "[core\n\tbare = maybe\n").unwrap();
        let err = select(d, false).unwrap_err().to_string();
        assert!(err.contains("banger cannot open this repository"), "{err}");
        assert!(!err.contains("not inside a git repository"), "{err}");
    }
}
