//! The guest's edits and the host's: `sync` (host → guest), `changes`
//! (a diff per file), `apply_changes` (guest → host, validated), and
//! `ports`.

use std::path::Path;

use base64::Engine as _;

use crate::api::{BangerApiClient, ChangeStatus, FileKind};
use crate::mcp::server::{Reply, Sandboxes, daemon_error};
use crate::mcp::tools::*;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
/// Diff text returned by `changes` in all.
const MAX_DIFF: usize = 512 << 10;
/// Files `changes` diffs.
const MAX_CHANGED: usize = 500;

impl Sandboxes {
    pub(in crate::mcp) async fn changes_tool(&self, args: SandboxArg) -> Reply<Changes> {
        let (daemon, _, _) = self.running(&args.sandbox).await?;
        let changes = daemon
            .vm_workspace_changes(args.sandbox.clone())
            .await
            .map_err(daemon_error)?;
        let paths: Vec<String> = changes
            .changes
            .iter()
            .take(MAX_CHANGED)
            .map(|c| c.path.clone())
            .collect();
        let fetched = if paths.is_empty() {
            Vec::new()
        } else {
            daemon
                .vm_workspace_fetch(args.sandbox.clone(), paths)
                .await
                .map_err(daemon_error)?
        };
        let root = self.root().to_path_buf();
        let mut budget = MAX_DIFF;
        let mut truncated = changes.changes.len() > MAX_CHANGED;
        let mut files = Vec::new();
        for (c, f) in changes.changes.iter().zip(&fetched) {
            let guest = f.kind.map(|_| B64.decode(&f.data).unwrap_or_default());
            let host = host_copy(&root, &c.path);
            let (diff, binary) = crate::mcp::diff::unified(
                &c.path,
                host.as_deref(),
                guest.as_deref(),
                f.kind == Some(FileKind::Symlink),
            );
            let diff = match diff {
                Some(d) if d.len() <= budget => {
                    budget -= d.len();
                    Some(d)
                }
                Some(_) => {
                    truncated = true;
                    None
                }
                None => None,
            };
            files.push(Change {
                path: c.path.clone(),
                status: match c.status {
                    ChangeStatus::Modified => "modified",
                    ChangeStatus::Added => "added",
                    ChangeStatus::Deleted => "deleted",
                }
                .into(),
                diff,
                binary,
            });
        }
        let mut text = String::new();
        for f in &files {
            match &f.diff {
                Some(d) => text.push_str(d),
                None if f.binary => {
                    text.push_str(&format!("binary file {} {}\n", f.path, f.status))
                }
                None => text.push_str(&format!(
                    "{} {} (diff left out: too long)\n",
                    f.path, f.status
                )),
            }
        }
        if !changes.refused.is_empty() {
            text.push_str(&format!(
                "refused (outside the repository or under .git): {}\n",
                changes.refused.join(", ")
            ));
        }
        if text.is_empty() {
            text = "no changes in the guest since the last sync".into();
        }
        Ok((
            text,
            Changes {
                files,
                refused: changes.refused,
                truncated,
            },
        ))
    }

    pub(in crate::mcp) async fn apply(&self, args: ApplyArgs) -> Reply<Applied> {
        let repo = self.root().display().to_string();
        let (daemon, _, _) = self.running(&args.sandbox).await?;
        if args.dry_run == Some(true) {
            let changes = daemon
                .vm_workspace_changes(args.sandbox.clone())
                .await
                .map_err(daemon_error)?;
            if !changes.refused.is_empty() {
                return Err(format!(
                    "the guest's changes would be refused: paths outside the repository or under .git: {}",
                    changes.refused.join(", ")
                ));
            }
            let files: Vec<String> = changes.changes.into_iter().map(|c| c.path).collect();
            let text = if files.is_empty() {
                "nothing to apply".to_string()
            } else {
                format!("would write to {repo}: {}", files.join(", "))
            };
            return Ok((
                text,
                Applied {
                    applied: false,
                    files,
                    repo,
                },
            ));
        }
        if self.shared.read_only_host {
            return Err("this server was started with --read-only-host: it writes nothing to the host repository".into());
        }
        let r = daemon
            .vm_workspace_export(args.sandbox.clone(), None, true, false)
            .await
            .map_err(daemon_error)?;
        let text = if r.files.is_empty() {
            "nothing to apply".to_string()
        } else {
            format!("wrote to {}: {}", r.source, r.files.join(", "))
        };
        Ok((
            text,
            Applied {
                applied: r.applied && !r.files.is_empty(),
                files: r.files,
                repo: r.source,
            },
        ))
    }

    pub(in crate::mcp) async fn sync_host(&self, args: SandboxArg) -> Reply<Synced> {
        let (daemon, _, _) = self.running(&args.sandbox).await?;
        let s = self.sync_all(&daemon, &args.sandbox).await?;
        let notes = s.notes(&args.sandbox);
        let mut text = format!("sent {} files, deleted {}", s.files_sent, s.deleted);
        if let Some(n) = &notes {
            text.push_str(&format!("; {n}"));
        }
        Ok((
            text,
            Synced {
                files_sent: s.files_sent,
                deleted: s.deleted,
                conflicts: s.conflicts,
                notes,
            },
        ))
    }

    pub(in crate::mcp) async fn ports_tool(&self, args: SandboxArg) -> Reply<Ports> {
        let (daemon, _, _) = self.running(&args.sandbox).await?;
        let ports: Vec<Port> = daemon
            .vm_ports(args.sandbox.clone())
            .await
            .map_err(daemon_error)?
            .into_iter()
            .map(|p| Port {
                proto: p.proto,
                address: p.address,
                port: p.port,
                process: p.process,
                host: p.host,
                note: p.note,
            })
            .collect();
        let text = if ports.is_empty() {
            "no listening ports".to_string()
        } else {
            ports
                .iter()
                .map(|p| {
                    format!(
                        "{}/{} {} {}\n",
                        p.port,
                        p.proto,
                        p.process.as_deref().unwrap_or("-"),
                        p.host.join(" ")
                    )
                })
                .collect()
        };
        Ok((text, Ports { ports }))
    }
}

/// The host's copy of a repository file (a link's target for a link), or
/// `None` when it has none.
fn host_copy(root: &Path, rel: &str) -> Option<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    let p = root.join(rel);
    let meta = std::fs::symlink_metadata(&p).ok()?;
    if meta.file_type().is_symlink() {
        return std::fs::read_link(&p)
            .ok()
            .map(|t| t.as_os_str().as_bytes().to_vec());
    }
    std::fs::read(&p).ok()
}
