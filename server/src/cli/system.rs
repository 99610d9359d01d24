//! `banger system`: helper programs installed for this user.

use super::Failure;
use super::args::SystemCommand;
use super::printer::Printer;
use crate::paths::Dirs;

pub(crate) async fn run(cmd: SystemCommand, dirs: &Dirs, printer: &Printer) -> Result<u8, Failure> {
    match cmd {
        SystemCommand::InstallFirecracker { version } => {
            let bin = dirs.bin();
            let installed = tokio::task::spawn_blocking(move || {
                crate::install::install_firecracker(&version, &bin, &mut |m| {
                    tracing::debug!("{m}");
                })
            })
            .await
            .map_err(|e| Failure::new(1, format!("install task failed: {e}")))?
            .map_err(|e| Failure::new(1, e.to_string()))?;
            for f in &installed.files {
                printer.line(&format!("installed {}", f.display()));
            }
            printer.note(&format!("sha256 {} verified", installed.sha256));
            Ok(0)
        }
    }
}
