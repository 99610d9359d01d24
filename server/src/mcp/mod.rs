//! `banger mcp`: the coding agents' front end, a Model Context Protocol
//! server (the official Rust SDK, rmcp) on stdio, or with `--listen
//! unix:PATH` the streamable HTTP transport on a unix socket.
//!
//! Like `banger lsp` it is a thin client of bangerd's API: it never
//! touches a VM itself. It is confined to the sandboxes of one host
//! repository (`--repo`, default the current directory's), validates
//! every tool input (paths stay in the workspace, sizes bounded) and
//! answers bad input with a tool error; `--read-only-host` turns off the
//! one tool that writes to the host (`apply_changes`). The tools are
//! documented in docs/mcp.md.

mod diff;
mod guest;
mod handlers;
mod paths;
mod server;
mod tools;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rmcp::ServiceExt as _;

use crate::paths::Dirs;
use server::{Sandboxes, Shared};

/// The tool names, as `tools/list` gives them.
pub const TOOLS: &[&str] = &[
    "sandbox_create",
    "sandbox_list",
    "sandbox_delete",
    "sandbox_stop",
    "exec",
    "read_file",
    "write_file",
    "list_files",
    "search_files",
    "sync",
    "changes",
    "apply_changes",
    "ports",
    "run_tests",
];

/// How `banger mcp` serves.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The repository (any path inside it); the current directory's when
    /// absent.
    pub repo: Option<PathBuf>,
    /// Turn off the tools that write to the host.
    pub read_only_host: bool,
    /// Sandboxes this server creates go when it ends.
    pub ephemeral: bool,
    /// `unix:PATH`: streamable HTTP on that socket instead of stdio.
    pub listen: Option<String>,
}

/// The root of the repository at or above `path`, canonical.
pub fn repo_root(path: &Path) -> Result<PathBuf, String> {
    let path = std::fs::canonicalize(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let root = crate::workspace::select(&path, false)
        .map(|s| s.root)
        .map_err(|e| format!("{e}; banger mcp serves one git repository: pass --repo PATH"))?;
    Ok(std::fs::canonicalize(&root).unwrap_or(root))
}

/// Where `--listen` serves: the socket path of `unix:PATH`.
pub fn listen_path(listen: &str) -> Result<PathBuf, String> {
    match listen.strip_prefix("unix:") {
        Some(p) if !p.is_empty() => Ok(PathBuf::from(p)),
        _ => Err(format!(
            "--listen {listen:?}: banger mcp listens on a unix socket only: --listen unix:PATH"
        )),
    }
}

/// Serves until the client goes away (stdio) or a signal ends it (socket).
pub async fn serve(dirs: Dirs, options: Options) -> Result<(), String> {
    let repo = match &options.repo {
        Some(r) => r.clone(),
        None => std::env::current_dir().map_err(|e| format!("current directory: {e}"))?,
    };
    let root = repo_root(&repo)?;
    let shared =
        Arc::new(Shared::new(dirs, root, options.read_only_host).ephemeral(options.ephemeral));
    match &options.listen {
        None => {
            let service = Sandboxes::new(shared)
                .serve(rmcp::transport::stdio())
                .await
                .map_err(|e| format!("mcp: {e}"))?;
            service.waiting().await.map_err(|e| format!("mcp: {e}"))?;
            Ok(())
        }
        Some(listen) => serve_unix(shared, &listen_path(listen)?).await,
    }
}

async fn serve_unix(shared: Arc<Shared>, path: &Path) -> Result<(), String> {
    use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
    use rmcp::transport::streamable_http_server::{
        StreamableHttpServerConfig, StreamableHttpService,
    };
    use std::os::unix::fs::PermissionsExt as _;
    if path.exists() {
        // A socket a live server answers on is not taken over; a stale one
        // (its server gone) is replaced.
        if tokio::net::UnixStream::connect(path).await.is_ok() {
            return Err(format!(
                "{} is in use by another server; stop it or choose another path",
                path.display()
            ));
        }
        let meta = std::fs::symlink_metadata(path).map_err(|e| e.to_string())?;
        use std::os::unix::fs::FileTypeExt as _;
        if !meta.file_type().is_socket() {
            return Err(format!("{} exists and is not a socket", path.display()));
        }
        std::fs::remove_file(path).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    let listener = tokio::net::UnixListener::bind(path)
        .map_err(|e| format!("cannot listen on {}: {e}", path.display()))?;
    // The socket gives the user's sandboxes: only the user may connect.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    struct RemoveOnDrop(PathBuf);
    impl Drop for RemoveOnDrop {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let _socket = RemoveOnDrop(path.to_path_buf());
    let service = StreamableHttpService::new(
        move || Ok(Sandboxes::new(shared.clone())),
        Arc::new(LocalSessionManager::default()),
        StreamableHttpServerConfig::default(),
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| e.to_string())?;
    loop {
        let stream = tokio::select! {
            a = listener.accept() => match a {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!("mcp: accept: {e}");
                    continue;
                }
            },
            _ = tokio::signal::ctrl_c() => return Ok(()),
            _ = term.recv() => return Ok(()),
        };
        let svc = hyper_util::service::TowerToHyperService::new(service.clone());
        tokio::spawn(async move {
            let io = hyper_util::rt::TokioIo::new(stream);
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, svc)
                .await
            {
                tracing::debug!("mcp: connection: {e}");
            }
        });
    }
}

/// The snippet an MCP client's configuration needs to start this server
/// (`--print-config`): Claude Code's `.mcp.json`, Codex's
/// `~/.codex/config.toml`, VS Code's `.vscode/mcp.json`.
pub fn client_config(
    client: &str,
    exe: &Path,
    root: &Path,
    options: &Options,
) -> Result<String, String> {
    let mut args = vec![
        "mcp".to_string(),
        "--repo".to_string(),
        root.display().to_string(),
    ];
    if options.read_only_host {
        args.push("--read-only-host".into());
    }
    if options.ephemeral {
        args.push("--ephemeral".into());
    }
    let command = exe.display().to_string();
    let text = match client {
        "claude" => serde_json::to_string_pretty(&serde_json::json!({
            "mcpServers": {"banger": {"type": "stdio", "command": command, "args": args}}
        }))
        .map_err(|e| e.to_string())?,
        "vscode" => serde_json::to_string_pretty(&serde_json::json!({
            "servers": {"banger": {"type": "stdio", "command": command, "args": args}}
        }))
        .map_err(|e| e.to_string())?,
        "codex" => {
            let q = |s: &str| serde_json::to_string(s).unwrap_or_default();
            format!(
                "[mcp_servers.banger]\ncommand = {}\nargs = [{}]",
                q(&command),
                args.iter().map(|a| q(a)).collect::<Vec<_>>().join(", ")
            )
        }
        other => {
            return Err(format!(
                "--print-config {other:?}: choose claude, codex or vscode"
            ));
        }
    };
    Ok(text + "\n")
}

/// The tools `tools/list` shows, as JSON (for the snapshot test and
/// docs/mcp.md).
pub fn tools_json(read_only_host: bool) -> serde_json::Value {
    let none = PathBuf::from("/nonexistent");
    let dirs = Dirs {
        runtime: none.clone(),
        state: none.clone(),
        cache: none.clone(),
        data: none,
    };
    let shared = Arc::new(Shared::new(dirs, PathBuf::from("/repo"), read_only_host));
    let tools = Sandboxes::new(shared).tools();
    serde_json::to_value(tools).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_takes_a_unix_socket_only() {
        assert_eq!(
            listen_path("unix:/tmp/x.sock").unwrap(),
            PathBuf::from("/tmp/x.sock")
        );
        assert!(listen_path("tcp:127.0.0.1:80").is_err());
        assert!(listen_path("unix:").is_err());
    }

    #[test]
    fn client_configs_start_this_server_for_this_repo() {
        let exe = Path::new("/usr/bin/banger");
        let root = Path::new("/src/app");
        let plain = Options::default();
        let read_only = Options {
            read_only_host: true,
            ..Options::default()
        };
        let c = client_config("claude", exe, root, &plain).unwrap();
        let v: serde_json::Value = serde_json::from_str(&c).unwrap();
        assert_eq!(v["mcpServers"]["banger"]["command"], "/usr/bin/banger");
        assert_eq!(
            v["mcpServers"]["banger"]["args"],
            serde_json::json!(["mcp", "--repo", "/src/app"])
        );
        let c = client_config("vscode", exe, root, &read_only).unwrap();
        let v: serde_json::Value = serde_json::from_str(&c).unwrap();
        assert_eq!(v["servers"]["banger"]["args"][3], "--read-only-host");
        let c = client_config("codex", exe, root, &plain).unwrap();
        let t: toml::Table = toml::from_str(&c).unwrap();
        assert_eq!(
            t["mcp_servers"]["banger"]["command"].as_str(),
            Some("/usr/bin/banger")
        );
        assert!(client_config("emacs", exe, root, &plain).is_err());
    }

    /// `tools/list` is part of the interface agents are configured
    /// against: a change to a name, a description or a schema shows here
    /// (update with BANGER_UPDATE_SNAPSHOTS=1).
    #[test]
    fn tools_list_matches_its_snapshot() {
        let tools = tools_json(false);
        let names: Vec<&str> = tools
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        let mut want = TOOLS.to_vec();
        want.sort();
        let mut got = names.clone();
        got.sort();
        assert_eq!(got, want);
        let text = serde_json::to_string_pretty(&tools).unwrap() + "\n";
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/mcp/tools.snap.json");
        if std::env::var_os("BANGER_UPDATE_SNAPSHOTS").is_some() {
            std::fs::write(&file, &text).unwrap();
        }
        let snap = std::fs::read_to_string(&file).unwrap_or_default();
        assert!(
            snap == text,
            "tools/list changed; review and update with BANGER_UPDATE_SNAPSHOTS=1 cargo test -p banger mcp::"
        );
        let ro = tools_json(true);
        assert!(
            !ro.as_array()
                .unwrap()
                .iter()
                .any(|t| t["name"] == "apply_changes")
        );
    }
}
