//! `banger mcp`: checks the command line, then serves (crate::mcp) or
//! prints a client's configuration.

use super::Failure;
use super::printer::Printer;
use crate::paths::Dirs;

/// `banger mcp`: serves, or prints a client's configuration.
pub(crate) async fn run(
    dirs: Dirs,
    printer: &Printer,
    repo: Option<std::path::PathBuf>,
    read_only_host: bool,
    listen: Option<String>,
    print_config: Option<String>,
) -> Result<u8, Failure> {
    let here = match &repo {
        Some(r) => r.clone(),
        None => std::env::current_dir()
            .map_err(|e| Failure::new(1, format!("current directory: {e}")))?,
    };
    // Checked before anything is served: a client configured with a bad
    // path sees the reason on its stderr at once.
    let root = crate::mcp::repo_root(&here).map_err(|e| Failure::new(2, e))?;
    if let Some(listen) = &listen {
        crate::mcp::listen_path(listen).map_err(|e| Failure::new(2, e))?;
    }
    if let Some(client) = print_config {
        let exe = std::env::current_exe()
            .map_err(|e| Failure::new(1, format!("cannot find the banger binary: {e}")))?;
        let text = crate::mcp::client_config(&client, &exe, &root, read_only_host)
            .map_err(|e| Failure::new(2, e))?;
        printer.stdout_bytes(text.as_bytes());
        return Ok(0);
    }
    let options = crate::mcp::Options {
        repo: Some(root),
        read_only_host,
        listen,
    };
    crate::mcp::serve(dirs, options)
        .await
        .map_err(|e| Failure::new(1, e))?;
    Ok(0)
}
