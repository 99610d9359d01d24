//! Guest changes → one LSP `WorkspaceEdit` the user confirms: text edits
//! for text files (against the editor's unsaved text where a document is
//! open), create/delete operations, and what an edit cannot carry (binary
//! content, symlinks, modes) kept aside to write only after acceptance.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use tower_lsp_server::ls_types::{
    AnnotatedTextEdit, ChangeAnnotation, CreateFile, CreateFileOptions, DeleteFile,
    DeleteFileOptions, DocumentChangeOperation, DocumentChanges, OneOf,
    OptionalVersionedTextDocumentIdentifier, Position, Range, ResourceOp, TextDocumentEdit,
    TextEdit, Uri, WorkspaceEdit,
};

use crate::api::FileKind as Kind;

/// The change annotation every operation carries.
pub const ANNOTATION: &str = "banger.guestChanges";

/// A guest file as the server fetched it (already validated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestFile {
    /// Path relative to the repository root.
    pub path: String,
    /// Kind, or `None` when the guest deleted it.
    pub kind: Option<Kind>,
    /// Content (a symlink's target).
    pub data: Vec<u8>,
}

/// What is written only once the user accepted the edit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deferred {
    /// Binary content.
    Write {
        /// Host path.
        path: PathBuf,
        /// Bytes.
        data: Vec<u8>,
        /// Executable.
        executable: bool,
    },
    /// A symlink (replacing what is there).
    Symlink {
        /// Host path.
        path: PathBuf,
        /// Target.
        target: Vec<u8>,
    },
    /// A mode change.
    Mode {
        /// Host path.
        path: PathBuf,
        /// Executable.
        executable: bool,
    },
}

/// An edit and what waits for it.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The edit for `workspace/applyEdit` (`None`: nothing text-shaped).
    pub edit: Option<WorkspaceEdit>,
    /// Written after acceptance.
    pub deferred: Vec<Deferred>,
    /// Binary files, listed for the user.
    pub binaries: Vec<String>,
}

/// The position just past the end of `text` (UTF-16 columns, as LSP
/// counts by default).
pub fn end_of(text: &str) -> Position {
    let line = text.matches('\n').count() as u32;
    let last = text.rsplit('\n').next().unwrap_or("");
    Position::new(line, last.encode_utf16().count() as u32)
}

fn is_text(data: &[u8]) -> bool {
    !data.contains(&0) && std::str::from_utf8(data).is_ok()
}

/// Builds the plan. `open` maps a document's URI to its version and its
/// current (possibly unsaved) text.
pub fn plan(
    root: &Path,
    files: &[GuestFile],
    open: &HashMap<Uri, (i32, String)>,
    description: &str,
) -> Plan {
    use std::os::unix::fs::PermissionsExt;
    let annotation = || Some(ANNOTATION.to_string());
    let mut ops = Vec::new();
    let mut deferred = Vec::new();
    let mut binaries = Vec::new();
    for f in files {
        let host = root.join(&f.path);
        let Some(uri) = Uri::from_file_path(&host) else {
            continue;
        };
        let meta = std::fs::symlink_metadata(&host).ok();
        let host_is_link = meta.as_ref().is_some_and(|m| m.file_type().is_symlink());
        let host_exec = meta
            .as_ref()
            .is_some_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
        match f.kind {
            None => {
                if meta.is_some() {
                    ops.push(DocumentChangeOperation::Op(ResourceOp::Delete(
                        DeleteFile {
                            uri,
                            options: Some(DeleteFileOptions {
                                recursive: Some(false),
                                ignore_if_not_exists: Some(true),
                            }),
                            annotation_id: annotation(),
                        },
                    )));
                }
            }
            Some(Kind::Symlink) => deferred.push(Deferred::Symlink {
                path: host,
                target: f.data.clone(),
            }),
            Some(kind) if !is_text(&f.data) || host_is_link => {
                binaries.push(f.path.clone());
                deferred.push(Deferred::Write {
                    path: host,
                    data: f.data.clone(),
                    executable: kind == Kind::Executable,
                });
            }
            Some(kind) => {
                let text = String::from_utf8_lossy(&f.data).into_owned();
                let (version, current) = match open.get(&uri) {
                    Some((v, t)) => (Some(*v), Some(t.clone())),
                    None => (
                        None,
                        std::fs::read(&host)
                            .ok()
                            .map(|b| String::from_utf8_lossy(&b).into_owned()),
                    ),
                };
                if current.is_none() {
                    ops.push(DocumentChangeOperation::Op(ResourceOp::Create(
                        CreateFile {
                            uri: uri.clone(),
                            options: Some(CreateFileOptions {
                                overwrite: Some(false),
                                ignore_if_exists: Some(true),
                            }),
                            annotation_id: annotation(),
                        },
                    )));
                }
                if current.as_deref() != Some(text.as_str()) {
                    let end = current
                        .as_deref()
                        .map(end_of)
                        .unwrap_or(Position::new(0, 0));
                    ops.push(DocumentChangeOperation::Edit(TextDocumentEdit {
                        text_document: OptionalVersionedTextDocumentIdentifier {
                            uri: uri.clone(),
                            version,
                        },
                        edits: vec![OneOf::Right(AnnotatedTextEdit {
                            text_edit: TextEdit::new(Range::new(Position::new(0, 0), end), text),
                            annotation_id: ANNOTATION.to_string(),
                        })],
                    }));
                }
                let executable = kind == Kind::Executable;
                if meta.is_none() && executable || meta.is_some() && executable != host_exec {
                    deferred.push(Deferred::Mode {
                        path: host,
                        executable,
                    });
                }
            }
        }
    }
    let edit = (!ops.is_empty()).then(|| WorkspaceEdit {
        changes: None,
        document_changes: Some(DocumentChanges::Operations(ops)),
        change_annotations: Some(HashMap::from([(
            ANNOTATION.to_string(),
            ChangeAnnotation {
                label: "Apply guest changes".into(),
                needs_confirmation: Some(true),
                description: Some(description.to_string()),
            },
        )])),
    });
    Plan {
        edit,
        deferred,
        binaries,
    }
}

/// Writes what waited for acceptance (paths were checked when fetched;
/// checked again here, as the host tree may have changed since).
pub fn write_deferred(root: &Path, deferred: &[Deferred]) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for d in deferred {
        let path = match d {
            Deferred::Write { path, .. }
            | Deferred::Symlink { path, .. }
            | Deferred::Mode { path, .. } => path,
        };
        let rel = path.strip_prefix(root).map_err(std::io::Error::other)?;
        crate::workspace::export::check_path(root, &rel.to_string_lossy())
            .map_err(std::io::Error::other)?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        match d {
            Deferred::Write {
                path,
                data,
                executable,
            } => {
                if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
                    std::fs::remove_file(path)?;
                }
                std::fs::write(path, data)?;
                let mode = if *executable { 0o755 } else { 0o644 };
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
            }
            Deferred::Symlink { path, target } => {
                use std::os::unix::ffi::OsStrExt;
                if std::fs::symlink_metadata(path).is_ok() {
                    std::fs::remove_file(path)?;
                }
                std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(target), path)?;
            }
            Deferred::Mode { path, executable } => {
                if let Ok(meta) = std::fs::metadata(path) {
                    let mut mode = meta.permissions().mode();
                    if *executable {
                        mode |= 0o111 & ((mode & 0o444) >> 2);
                    } else {
                        mode &= !0o111;
                    }
                    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_positions_count_utf16() {
        assert_eq!(end_of(""), Position::new(0, 0));
        assert_eq!(end_of("a\nb"), Position::new(1, 1));
        assert_eq!(end_of("a\n"), Position::new(1, 0));
        assert_eq!(end_of("é😀"), Position::new(0, 3));
    }

    #[test]
    fn text_binary_new_deleted_and_open_documents() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(root.join("a.txt"), "old\n").unwrap();
        std::fs::write(root.join("gone.txt"), "x").unwrap();
        std::fs::write(root.join("open.txt"), "on disk\n").unwrap();
        let open_uri = Uri::from_file_path(root.join("open.txt")).unwrap();
        let open = HashMap::from([(open_uri.clone(), (7, "unsaved\nline".to_string()))]);
        let files = vec![
            GuestFile {
                path: "a.txt".into(),
                kind: Some(Kind::Executable),
                data: b"new\n".to_vec(),
            },
            GuestFile {
                path: "new/b.txt".into(),
                kind: Some(Kind::File),
                data: b"made\n".to_vec(),
            },
            GuestFile {
                path: "gone.txt".into(),
                kind: None,
                data: vec![],
            },
            GuestFile {
                path: "bin.dat".into(),
                kind: Some(Kind::File),
                data: vec![0, 1, 2],
            },
            GuestFile {
                path: "open.txt".into(),
                kind: Some(Kind::File),
                data: b"guest\n".to_vec(),
            },
        ];
        let p = plan(root, &files, &open, "5 files from vm dev");
        assert_eq!(p.binaries, ["bin.dat"]);
        assert_eq!(p.deferred.len(), 2, "{:?}", p.deferred); // bin.dat, a.txt's mode
        let edit = p.edit.unwrap();
        let Some(DocumentChanges::Operations(ops)) = edit.document_changes else {
            panic!()
        };
        let json = serde_json::to_value(&ops).unwrap();
        let kinds: Vec<String> = json
            .as_array()
            .unwrap()
            .iter()
            .map(|o| {
                o.get("kind")
                    .and_then(|k| k.as_str())
                    .unwrap_or("edit")
                    .to_string()
            })
            .collect();
        assert_eq!(kinds, ["edit", "create", "edit", "delete", "edit"]);
        // The open document's edit is versioned and spans its unsaved text.
        let last = &json[4];
        assert_eq!(last["textDocument"]["version"], 7);
        assert_eq!(
            last["edits"][0]["range"]["end"],
            serde_json::json!({"line": 1, "character": 4})
        );
        assert_eq!(last["edits"][0]["annotationId"], ANNOTATION);
        assert!(edit.change_annotations.unwrap()[ANNOTATION].needs_confirmation == Some(true));

        write_deferred(root, &p.deferred).unwrap();
        assert_eq!(std::fs::read(root.join("bin.dat")).unwrap(), [0, 1, 2]);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(root.join("a.txt"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o111, 0o111);
    }

    #[test]
    fn deferred_writes_never_go_through_a_host_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("link")).unwrap();
        let d = [Deferred::Write {
            path: dir.path().join("link/x"),
            data: b"x".to_vec(),
            executable: false,
        }];
        assert!(write_deferred(dir.path(), &d).is_err());
        assert!(!outside.path().join("x").exists());
    }
}
