//! The file tools: read, write, list and search the guest workspace
//! through guest scripts that refuse what resolves outside it.

use rmcp::RoleServer;
use rmcp::service::RequestContext;

use crate::mcp::guest;
use crate::mcp::paths;
use crate::mcp::server::{Reply, Sandboxes};
use crate::mcp::tools::*;

/// Largest read and write.
const MAX_READ: u64 = 1 << 20;
const MAX_WRITE: usize = 8 << 20;
/// Most entries and matches returned.
const MAX_ENTRIES: usize = 2000;
const MAX_MATCHES: u32 = 2000;

impl Sandboxes {
    pub(in crate::mcp) async fn read(
        &self,
        args: ReadArgs,
        ctx: &RequestContext<RoleServer>,
    ) -> Reply<FileContent> {
        let path = paths::file_path(&args.path, "path", false)?;
        let max = args.max_bytes.unwrap_or(MAX_READ).min(MAX_READ);
        let out = self
            .script(
                &args.sandbox,
                guest::read_script(),
                vec![path.clone(), max.to_string()],
                None,
                max as usize + 32,
                ctx,
            )
            .await?;
        let bytes = out.head();
        let nl = bytes
            .iter()
            .position(|b| *b == b'\n')
            .ok_or("the guest gave no file size")?;
        let size: u64 = std::str::from_utf8(&bytes[..nl])
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or("the guest gave a bad file size")?;
        let data = &bytes[nl + 1..];
        let data = &data[..data.len().min(max as usize)];
        let content = match std::str::from_utf8(data) {
            Ok(t) => t.to_string(),
            // Cut inside a character: keep the whole ones.
            Err(e) if e.error_len().is_none() && (data.len() as u64) < size => {
                String::from_utf8_lossy(&data[..e.valid_up_to()]).into_owned()
            }
            Err(_) => {
                return Err(format!(
                    "{path} is not UTF-8 text ({size} bytes); read it with exec (e.g. base64 {path})"
                ));
            }
        };
        let truncated = (content.len() as u64) < size;
        let text = if truncated {
            format!(
                "{content}\n[... {path}: {size} bytes, the first {} shown]",
                content.len()
            )
        } else {
            content.clone()
        };
        Ok((
            text,
            FileContent {
                path,
                content,
                size,
                truncated,
            },
        ))
    }

    pub(in crate::mcp) async fn write(
        &self,
        args: WriteArgs,
        ctx: &RequestContext<RoleServer>,
    ) -> Reply<Written> {
        let path = paths::file_path(&args.path, "path", true)?;
        if args.content.len() > MAX_WRITE {
            return Err(format!(
                "content is {} bytes; write_file takes at most {MAX_WRITE}",
                args.content.len()
            ));
        }
        let mode = if args.executable == Some(true) {
            "755"
        } else {
            "644"
        };
        let bytes = args.content.len() as u64;
        self.script(
            &args.sandbox,
            guest::write_script(),
            vec![path.clone(), mode.into()],
            Some(args.content.into_bytes()),
            4096,
            ctx,
        )
        .await?;
        Ok((
            format!("wrote {bytes} bytes to {path}"),
            Written { path, bytes },
        ))
    }

    pub(in crate::mcp) async fn list(
        &self,
        args: ListArgs,
        ctx: &RequestContext<RoleServer>,
    ) -> Reply<Listing> {
        let dir = paths::workspace_path(args.path.as_deref().unwrap_or("."), "path", false)?;
        let depth = args.depth.unwrap_or(1);
        if !(1..=8).contains(&depth) {
            return Err("depth is 1 to 8".into());
        }
        let out = self
            .script(
                &args.sandbox,
                guest::list_script(),
                vec![
                    dir.clone(),
                    depth.to_string(),
                    (MAX_ENTRIES + 1).to_string(),
                ],
                None,
                (MAX_ENTRIES + 1) * 4200,
                ctx,
            )
            .await?;
        let mut entries: Vec<Entry> = out
            .head()
            .split(|b| *b == 0)
            .filter_map(|e| {
                let e = std::str::from_utf8(e).ok()?;
                let mut f = e.splitn(3, '\t');
                let (kind, size, rel) = (f.next()?, f.next()?, f.next()?);
                let kind = match kind {
                    "f" => "file",
                    "d" => "dir",
                    "l" => "symlink",
                    _ => "other",
                };
                let path = if dir == "." {
                    rel.to_string()
                } else {
                    format!("{dir}/{rel}")
                };
                Some(Entry {
                    path,
                    kind: kind.into(),
                    size: size.parse().unwrap_or(0),
                })
            })
            .collect();
        let truncated = entries.len() > MAX_ENTRIES;
        entries.truncate(MAX_ENTRIES);
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        let mut text: String = entries
            .iter()
            .map(|e| {
                let slash = if e.kind == "dir" { "/" } else { "" };
                format!("{}{slash}\n", e.path)
            })
            .collect();
        if truncated {
            text.push_str(&format!(
                "[... more than {MAX_ENTRIES} entries; list a subdirectory]\n"
            ));
        }
        Ok((text, Listing { entries, truncated }))
    }

    pub(in crate::mcp) async fn search(
        &self,
        args: SearchArgs,
        ctx: &RequestContext<RoleServer>,
    ) -> Reply<Matches> {
        if args.pattern.is_empty() || args.pattern.contains('\0') || args.pattern.contains('\n') {
            return Err("pattern must be one non-empty line".into());
        }
        let dir = paths::workspace_path(args.path.as_deref().unwrap_or("."), "path", false)?;
        let max = args.max_results.unwrap_or(200).clamp(1, MAX_MATCHES);
        let mut flags = vec![if args.regex == Some(true) { "-E" } else { "-F" }];
        if args.ignore_case == Some(true) {
            flags.push("-i");
        }
        let out = self
            .script(
                &args.sandbox,
                guest::search_script(),
                vec![
                    dir,
                    (max + 1).to_string(),
                    flags.join(" "),
                    args.pattern.clone(),
                ],
                None,
                (max as usize + 1) * 8192,
                ctx,
            )
            .await?;
        let mut matches: Vec<Match> = out
            .head()
            .split(|b| *b == b'\n')
            .filter_map(|l| {
                let z = l.iter().position(|b| *b == 0)?;
                let file = std::str::from_utf8(&l[..z]).ok()?;
                let rest = String::from_utf8_lossy(&l[z + 1..]);
                let (line, text) = rest.split_once(':')?;
                Some(Match {
                    path: file.trim_start_matches("./").to_string(),
                    line: line.parse().ok()?,
                    text: text.chars().take(400).collect(),
                })
            })
            .collect();
        let truncated = matches.len() > max as usize;
        matches.truncate(max as usize);
        let mut text: String = matches
            .iter()
            .map(|m| format!("{}:{}: {}\n", m.path, m.line, m.text))
            .collect();
        if matches.is_empty() {
            text = "no matches".into();
        } else if truncated {
            text.push_str(&format!("[... more than {max} matches]\n"));
        }
        Ok((text, Matches { matches, truncated }))
    }
}
