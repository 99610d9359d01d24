//! The `banger` command line: parses arguments, translates them into daemon
//! API calls and prints the results. It never touches VMs itself.
//!
//! Exit codes: a guest command's exit code comes back verbatim from
//! `vm run` and `vm exec` (128 + N for a signal); banger's own failures
//! there exit [`EXIT_RUN_FAILED`] (125) and a program the guest cannot
//! start [`EXIT_CANNOT_RUN`] (127). Other commands exit 1 on failure and 2
//! on invalid input.
//!
//! Here: `main`, the dispatch to one module per noun, the failure type and
//! the output pieces the nouns share. The clap definitions are all in
//! `args.rs`.

mod args;
mod daemon;
pub mod doctor;
mod exec;
mod image;
mod kernel;
pub mod printer;
mod system;
mod terminal;
mod vm;
mod workspace;

use std::process::ExitCode;

use clap::Parser;
use jsonrpsee::core::client::Error as ClientError;

pub use args::Cli;
use args::Command;

use crate::api::{OpEvent, code};
use crate::client;
use crate::paths::Dirs;
use printer::Printer;

/// Exit code of banger's own failures in `vm run` / `vm exec`.
pub const EXIT_RUN_FAILED: u8 = 125;
/// Exit code when the guest cannot start the program.
pub const EXIT_CANNOT_RUN: u8 = 127;

/// A failure of a CLI command, with the exit code to use.
pub(crate) struct Failure {
    pub(crate) code: u8,
    pub(crate) message: String,
}

impl Failure {
    pub(crate) fn new(code: u8, message: impl Into<String>) -> Failure {
        Failure {
            code,
            message: message.into(),
        }
    }
}

impl From<client::ConnectError> for Failure {
    fn from(e: client::ConnectError) -> Failure {
        Failure::new(1, chain(&e))
    }
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    message
}

/// Maps an RPC error to a failure: invalid input exits 2.
pub(crate) fn rpc_failure(e: ClientError) -> Failure {
    match e {
        ClientError::Call(obj) => {
            let exit = if obj.code() == code::INVALID { 2 } else { 1 };
            Failure::new(exit, obj.message().to_string())
        }
        ClientError::RestartNeeded(_) => {
            Failure::new(1, "lost the connection to bangerd; see its log")
        }
        other => Failure::new(1, format!("talking to bangerd failed: {other}")),
    }
}

/// Runs the CLI; returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let printer = Printer::new(cli.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            printer.error(&format!("cannot start the async runtime: {e}"));
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(run(cli, &printer));
    printer.clear_progress();
    let code = match result {
        Ok(code) => code,
        Err(f) => {
            printer.error(&f.message);
            f.code
        }
    };
    // Don't wait for a stdin reader thread blocked on a terminal.
    runtime.shutdown_background();
    ExitCode::from(code)
}

async fn run(cli: Cli, printer: &Printer) -> Result<u8, Failure> {
    let dirs = Dirs::from_env();
    match cli.command {
        Command::Vm(cmd) => vm::run(cmd, &dirs, printer).await,
        Command::Ps(args) => vm::list(&dirs, printer, args).await,
        Command::Image(cmd) => image::run(cmd, &dirs, printer).await,
        Command::Daemon(cmd) => daemon::run(cmd, &dirs, printer).await,
        Command::Doctor => doctor::run(&dirs, printer).await,
        Command::Kernel(cmd) => kernel::run(cmd, &dirs, printer).await,
        Command::Lsp { .. } => {
            crate::lsp::serve(dirs).await;
            Ok(0)
        }
        Command::System(cmd) => system::run(cmd, &dirs, printer).await,
    }
}

/// Follows a long operation's events to its outcome.
pub(crate) async fn follow(
    mut sub: jsonrpsee::core::client::Subscription<OpEvent>,
    printer: &Printer,
) -> Result<OpEvent, Failure> {
    while let Some(event) = sub.next().await {
        match event {
            Ok(OpEvent::Progress { message }) => printer.progress(&message),
            Ok(OpEvent::Failed { code: c, message }) => {
                return Err(Failure::new(
                    if c == code::INVALID { 2 } else { 1 },
                    message,
                ));
            }
            Ok(done) => return Ok(done),
            Err(e) => return Err(Failure::new(1, format!("bad event from bangerd: {e}"))),
        }
    }
    Err(Failure::new(
        1,
        "bangerd closed the operation without a result; see its log",
    ))
}

pub(crate) fn absolute(path: &str) -> String {
    std::path::absolute(path)
        .unwrap_or_else(|_| path.into())
        .display()
        .to_string()
}

pub(crate) fn pretty<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

pub(crate) fn print_table(printer: &Printer, header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let fmt = |cells: Vec<&str>| {
        let last = cells.len() - 1;
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if i == last {
                    c.to_string()
                } else {
                    format!("{c:<w$}", w = widths[i])
                }
            })
            .collect::<Vec<_>>()
            .join("  ")
    };
    printer.line(&fmt(header.to_vec()));
    for row in rows {
        printer.line(&fmt(row.iter().map(String::as_str).collect()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn words_after_dashes_are_kept_as_given() {
        let cli = Cli::try_parse_from([
            "banger",
            "vm",
            "run",
            "--rm",
            "--",
            "sh",
            "-c",
            "echo \"a  b\"",
            "--rm",
        ])
        .unwrap();
        let Command::Vm(args::VmCommand::Run { rm, command, .. }) = cli.command else {
            panic!("not vm run");
        };
        assert!(rm);
        assert_eq!(command, ["sh", "-c", "echo \"a  b\"", "--rm"]);
    }
}
