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
mod config;
mod daemon;
pub mod doctor;
mod exec;
mod image;
mod kernel;
mod mcp;
pub mod printer;
mod project;
mod ssh;
mod system;
mod terminal;
mod vm;
mod workspace;

use std::process::ExitCode;

use clap::{CommandFactory, Parser};
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

/// The environment variable shell completion scripts set to ask banger
/// for candidates (clap_complete's dynamic completion).
pub const COMPLETE_VAR: &str = "BANGER_COMPLETE";

/// A failure of a CLI command, with the exit code to use and the stable
/// error code scripts see with `--json` ([`crate::api::code::name`], or
/// `daemon_unreachable`).
pub(crate) struct Failure {
    pub(crate) code: u8,
    pub(crate) kind: &'static str,
    pub(crate) message: String,
}

impl Failure {
    /// A failure whose kind follows from its exit code (2: invalid input).
    pub(crate) fn new(code: u8, message: impl Into<String>) -> Failure {
        Failure {
            code,
            kind: if code == 2 { "invalid" } else { "internal" },
            message: message.into(),
        }
    }

    /// A failure the daemon reported with an API error code.
    pub(crate) fn api(api_code: i32, message: impl Into<String>) -> Failure {
        Failure {
            code: if api_code == code::INVALID { 2 } else { 1 },
            kind: code::name(api_code),
            message: message.into(),
        }
    }

    /// The same failure with another exit code.
    pub(crate) fn exit(mut self, code: u8) -> Failure {
        self.code = code;
        self
    }
}

impl From<client::ConnectError> for Failure {
    fn from(e: client::ConnectError) -> Failure {
        Failure {
            kind: "daemon_unreachable",
            ..Failure::new(1, crate::error_chain(&e))
        }
    }
}

/// Maps an RPC error to a failure: invalid input exits 2.
pub(crate) fn rpc_failure(e: ClientError) -> Failure {
    match e {
        ClientError::Call(obj) => Failure::api(obj.code(), obj.message().to_string()),
        ClientError::RestartNeeded(_) => Failure::new(
            1,
            format!(
                "lost the connection to bangerd; see its log: {}",
                crate::paths::Dirs::from_env().daemon_log().display()
            ),
        ),
        other => Failure::new(1, format!("talking to bangerd failed: {other}")),
    }
}

/// Runs the CLI; returns the process exit code.
pub fn main() -> ExitCode {
    // A completion script asking for candidates: answer and exit.
    clap_complete::CompleteEnv::with_factory(Cli::command)
        .var(COMPLETE_VAR)
        .complete();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return parse_error(e),
    };
    let printer = Printer::new(cli.verbose, cli.json);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            printer.error("internal", &format!("cannot start the async runtime: {e}"));
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(run(cli, &printer));
    printer.clear_progress();
    let code = match result {
        Ok(code) => code,
        Err(f) => {
            printer.error(f.kind, &f.message);
            f.code
        }
    };
    // Don't wait for a stdin reader thread blocked on a terminal.
    runtime.shutdown_background();
    ExitCode::from(code)
}

/// A command line clap refused: its own message (exit 2), or with
/// `--json` the same JSON error every other failure prints.
fn parse_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    let json = std::env::args().skip(1).any(|a| a == "--json");
    let informational = matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    );
    if !json || informational {
        e.exit();
    }
    let message = e
        .render()
        .to_string()
        .lines()
        .next()
        .unwrap_or_default()
        .trim_start_matches("error: ")
        .to_string();
    Printer::new(false, true).error("invalid", &message);
    ExitCode::from(2)
}

async fn run(cli: Cli, printer: &Printer) -> Result<u8, Failure> {
    let dirs = Dirs::from_env();
    match cli.command {
        Command::Vm(cmd) => vm::run(cmd, &dirs, printer).await,
        Command::Ps(args) => vm::list(&dirs, printer, args).await,
        Command::Image(cmd) => image::run(cmd, &dirs, printer).await,
        Command::Cache(cmd) => image::cache(cmd, &dirs, printer).await,
        Command::Daemon(cmd) => daemon::run(cmd, &dirs, printer).await,
        Command::Doctor => doctor::run(&dirs, printer).await,
        Command::Kernel(cmd) => kernel::run(cmd, &dirs, printer).await,
        Command::SshConfig { install, uninstall } => {
            ssh::config(&dirs, printer, install, uninstall)
        }
        Command::SshProxy { host } => ssh::proxy(&dirs, printer, &host).await,
        Command::Lsp { .. } => {
            crate::lsp::serve(dirs).await;
            Ok(0)
        }
        Command::Mcp(args) => mcp::run(dirs.clone(), printer, args).await,
        Command::System(cmd) => system::run(cmd, &dirs, printer).await,
        Command::Config(cmd) => config::run(cmd, &dirs, printer),
        Command::Completions { shell } => completions(shell, printer),
    }
}

/// `banger completions SHELL`: the script that asks banger for
/// candidates (VM names from the daemon) as the user types.
fn completions(shell: args::CompletionShell, printer: &Printer) -> Result<u8, Failure> {
    use clap_complete::env::EnvCompleter;
    let completer: &dyn EnvCompleter = match shell {
        args::CompletionShell::Bash => &clap_complete::env::Bash,
        args::CompletionShell::Zsh => &clap_complete::env::Zsh,
        args::CompletionShell::Fish => &clap_complete::env::Fish,
    };
    let mut script = Vec::new();
    completer
        .write_registration(COMPLETE_VAR, "banger", "banger", "banger", &mut script)
        .map_err(|e| Failure::new(1, format!("cannot write the script: {e}")))?;
    printer.stdout_bytes(&script);
    Ok(0)
}

/// Follows a long operation's events to its outcome.
pub(crate) async fn follow(
    mut sub: jsonrpsee::core::client::Subscription<OpEvent>,
    printer: &Printer,
) -> Result<OpEvent, Failure> {
    while let Some(event) = sub.next().await {
        match event {
            Ok(OpEvent::Progress { message }) => printer.progress(&message),
            Ok(OpEvent::Failed { code: c, message }) => return Err(Failure::api(c, message)),
            Ok(done) => return Ok(done),
            Err(e) => return Err(Failure::new(1, format!("bad event from bangerd: {e}"))),
        }
    }
    Err(Failure::new(
        1,
        format!(
            "bangerd closed the operation without a result; see its log: {}",
            crate::paths::Dirs::from_env().daemon_log().display()
        ),
    ))
}

pub(crate) fn absolute(path: &str) -> String {
    std::path::absolute(path)
        .unwrap_or_else(|_| path.into())
        .display()
        .to_string()
}

/// Asks `prompt [y/N]` on the terminal; without one, fails (exit 2) with
/// `would` and how to confirm non-interactively (`command`). Whether the
/// answer was yes.
pub(crate) fn confirm(
    printer: &Printer,
    would: &str,
    command: &str,
    prompt: &str,
) -> Result<bool, Failure> {
    use std::io::{BufRead, IsTerminal};
    if !std::io::stdin().is_terminal() {
        return Err(Failure::new(
            2,
            format!("{would}; stdin is not a terminal, so confirm with: {command}"),
        ));
    }
    printer.clear_progress();
    eprint_prompt(&format!("{prompt} [y/N] "));
    let mut answer = String::new();
    let _ = std::io::stdin().lock().read_line(&mut answer);
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

#[allow(clippy::print_stderr)] // a prompt, not output: it must not wait for a newline
fn eprint_prompt(text: &str) {
    use std::io::Write;
    let mut err = std::io::stderr().lock();
    let _ = write!(err, "{text}");
    let _ = err.flush();
}

/// `1.5G`, `300M`, `12K`: bytes used, one decimal.
pub(crate) fn human_bytes(bytes: u64) -> String {
    for (shift, suffix) in [(40, "T"), (30, "G"), (20, "M"), (10, "K")] {
        if bytes >= 1 << shift {
            return format!("{:.1}{suffix}", bytes as f64 / (1u64 << shift) as f64);
        }
    }
    format!("{bytes}B")
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

    #[test]
    fn bad_flags_are_refused_before_anything_runs() {
        for bad in [
            &["banger", "vm", "run", "--mode", "bogus", "--", "true"][..],
            &["banger", "vm", "create", "--vmm", "kvm"],
            &["banger", "vm", "create", "--memory", "lots"],
            &["banger", "vm", "create", "--memory", "64"],
            &["banger", "vm", "create", "--disk-size", "8X"],
            &["banger", "vm", "create", "--system-overlay-size", "x"],
            &["banger", "vm", "create", "--vcpu", "0"],
            &["banger", "vm", "kill", "--signal", "NOPE", "dev"],
            &["banger", "completions", "tcsh"],
        ] {
            assert!(Cli::try_parse_from(bad).is_err(), "{bad:?} accepted");
        }
        let cli = Cli::try_parse_from([
            "banger",
            "vm",
            "create",
            "--memory",
            "2G",
            "--system-overlay-size",
            "4G",
        ])
        .unwrap();
        let Command::Vm(args::VmCommand::Create { spec, .. }) = cli.command else {
            panic!("not vm create");
        };
        assert_eq!(spec.memory, Some(2048));
        assert_eq!(spec.system_overlay_size, Some(4 << 30));
    }

    #[test]
    fn signals_are_names_or_numbers() {
        assert_eq!(args::parse_signal("KILL"), Ok(libc::SIGKILL));
        assert_eq!(args::parse_signal("sigterm"), Ok(libc::SIGTERM));
        assert_eq!(args::parse_signal("2"), Ok(libc::SIGINT));
        assert!(args::parse_signal("0").is_err());
        assert!(args::parse_signal("BOGUS").is_err());
    }

    #[test]
    fn every_api_code_has_a_stable_name() {
        for (c, name) in [
            (code::INTERNAL, "internal"),
            (code::NOT_FOUND, "not_found"),
            (code::INVALID, "invalid"),
            (code::CONFLICT, "conflict"),
            (code::NOT_RUNNING, "not_running"),
            (code::RUNNING, "running"),
            (code::AMBIGUOUS, "ambiguous"),
        ] {
            assert_eq!(code::name(c), name);
            assert_eq!(Failure::api(c, "m").kind, name);
        }
        assert_eq!(Failure::api(code::INVALID, "m").code, 2);
        assert_eq!(Failure::api(code::NOT_RUNNING, "m").code, 1);
    }
}
