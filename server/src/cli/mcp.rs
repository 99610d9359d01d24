//! `banger mcp`: checks the command line, then serves (crate::mcp) or
//! prints a client's configuration.

use super::Failure;
use super::args::McpArgs;
use super::printer::Printer;
use crate::paths::Dirs;

/// `banger mcp`: serves, or prints a client's configuration.
pub(crate) async fn run(dirs: Dirs, printer: &Printer, args: McpArgs) -> Result<u8, Failure> {
    let here = match &args.repo {
        Some(r) => r.clone(),
        None => std::env::current_dir()
            .map_err(|e| Failure::new(1, format!("current directory: {e}")))?,
    };
    // Checked before anything is served: a client configured with a bad
    // path sees the reason on its stderr at once.
    let root = crate::mcp::repo_root(&here).map_err(|e| Failure::new(2, e))?;
    if let Some(listen) = &args.listen {
        crate::mcp::listen_path(listen).map_err(|e| Failure::new(2, e))?;
    }
    let options = crate::mcp::Options {
        repo: Some(root.clone()),
        read_only_host: args.read_only_host,
        ephemeral: args.ephemeral,
        listen: args.listen,
    };
    if let Some(client) = args.print_config {
        let exe = std::env::current_exe()
            .map_err(|e| Failure::new(1, format!("cannot find the banger binary: {e}")))?;
        let text = crate::mcp::client_config(&client, &exe, &root, &options)
            .map_err(|e| Failure::new(2, e))?;
        printer.stdout_bytes(text.as_bytes());
        return Ok(0);
    }
    crate::mcp::serve(dirs, options)
        .await
        .map_err(|e| Failure::new(1, e))?;
    Ok(0)
}
