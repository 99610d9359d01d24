//! Running in a sandbox: `exec` and `run_tests`.

use rmcp::RoleServer;
use rmcp::service::RequestContext;

use crate::api::ExecParams;
use crate::mcp::guest::{self, Bounds};
use crate::mcp::paths;
use crate::mcp::server::{Reply, Sandboxes, progress, timeout};
use crate::mcp::tools::*;

/// Output kept per stream: the first and the last bytes.
const EXEC_HEAD: usize = 64 << 10;
const EXEC_TAIL: usize = 192 << 10;
/// Test output kept for the record.
const TEST_OUTPUT: usize = 16 << 10;

impl Sandboxes {
    pub(in crate::mcp) async fn exec_tool(
        &self,
        args: ExecArgs,
        ctx: &RequestContext<RoleServer>,
    ) -> Reply<Exec> {
        let argv = match (&args.argv, &args.command) {
            (Some(a), None) if !a.is_empty() => a.clone(),
            (None, Some(c)) if !c.trim().is_empty() => {
                vec!["sh".into(), "-c".into(), c.clone()]
            }
            (Some(_), Some(_)) => return Err("give argv or command, not both".into()),
            _ => {
                return Err("give argv (an array, program first) or command (a shell line)".into());
            }
        };
        let timeout = timeout(args.timeout_secs)?;
        let (daemon, _, guest_path) = self.running(&args.sandbox).await?;
        // Without a cwd the daemon runs it in the workspace (through
        // `mise exec` where mise installed the workspace's tools).
        let cwd = match &args.cwd {
            Some(c) => match paths::workspace_path(c, "cwd", false)?.as_str() {
                "." => Some(guest_path),
                rel => Some(format!("{guest_path}/{rel}")),
            },
            None => None,
        };
        let env: Vec<(String, String)> = args.env.clone().unwrap_or_default().into_iter().collect();
        for (k, _) in &env {
            if k.is_empty() || k.contains('=') || k.contains('\0') {
                return Err(format!("env name {k:?} is not a variable name"));
            }
        }
        let ran = guest::run(
            &daemon,
            ExecParams {
                vm: args.sandbox.clone(),
                argv,
                env,
                cwd,
                ..ExecParams::default()
            },
            args.stdin.clone().map(String::into_bytes),
            Bounds {
                head: EXEC_HEAD,
                tail: EXEC_TAIL,
                timeout,
            },
            progress(ctx),
            &ctx.ct,
        )
        .await?;
        let result = Exec {
            exit_code: ran.exit_code,
            stdout: ran.stdout.text(),
            stderr: ran.stderr.text(),
            stdout_truncated: ran.stdout.truncated(),
            stderr_truncated: ran.stderr.truncated(),
            timed_out: ran.timed_out,
            duration_ms: ran.elapsed.as_millis() as u64,
        };
        let mut text = if ran.timed_out {
            format!(
                "killed after {} s (timeout_secs); exit code {}",
                timeout.as_secs(),
                result.exit_code
            )
        } else {
            format!("exit code {}", result.exit_code)
        };
        if !result.stdout.is_empty() {
            text.push_str(&format!("\n\nstdout:\n{}", result.stdout));
        }
        if !result.stderr.is_empty() {
            text.push_str(&format!("\n\nstderr:\n{}", result.stderr));
        }
        Ok((text, result))
    }

    pub(in crate::mcp) async fn tests(
        &self,
        args: TestArgs,
        ctx: &RequestContext<RoleServer>,
    ) -> Reply<Tests> {
        let root = self.root().to_path_buf();
        let configured = crate::project::load(&root)?.and_then(|s| s.test_command);
        let cmd = crate::lsp::detect::test_command(&root, configured.as_deref())
            .ok_or_else(|| crate::lsp::detect::NONE_FOUND.to_string())?;
        let timeout = timeout(args.timeout_secs)?;
        let (daemon, _, _) = self.running(&args.sandbox).await?;
        // The host's edits first, as the editor's "Run tests" does (guest
        // edits are kept: live sync never overwrites them).
        self.sync_all(&daemon, &args.sandbox).await?;
        let ran = guest::run(
            &daemon,
            ExecParams {
                vm: args.sandbox.clone(),
                argv: cmd.argv(args.filter.as_deref()),
                ..ExecParams::default()
            },
            None,
            Bounds {
                head: 1 << 20,
                tail: 7 << 20,
                timeout,
            },
            progress(ctx),
            &ctx.ct,
        )
        .await?;
        let mut output = ran.stdout.text();
        output.push_str(&ran.stderr.text());
        let summary = crate::lsp::matchers::summary(&output);
        let tracked = {
            let root = root.clone();
            tokio::task::spawn_blocking(move || crate::lsp::places::tracked_files(&root))
                .await
                .unwrap_or_default()
        };
        let failures: Vec<Failure> = crate::lsp::matchers::problems(&output)
            .into_iter()
            .map(|p| Failure {
                file: crate::lsp::places::repo_file(&root, &p.file, &tracked).unwrap_or(p.file),
                line: p.line,
                column: p.col,
                severity: match p.severity {
                    crate::lsp::matchers::Severity::Error => "error",
                    crate::lsp::matchers::Severity::Warning => "warning",
                    crate::lsp::matchers::Severity::Info => "info",
                }
                .into(),
                message: p.message,
            })
            .collect();
        let tail_from = output.len().saturating_sub(TEST_OUTPUT);
        let tail_from = (tail_from..output.len())
            .find(|i| output.is_char_boundary(*i))
            .unwrap_or(output.len());
        let tail = output[tail_from..].to_string();
        let mut text = format!(
            "{}: {}",
            cmd.line,
            if ran.exit_code == 0 {
                "passed".to_string()
            } else {
                format!("failed (exit code {})", ran.exit_code)
            }
        );
        if let (Some(p), Some(f)) = (summary.passed, summary.failed) {
            text.push_str(&format!(", {p} passed, {f} failed"));
        }
        for f in &failures {
            text.push_str(&format!("\n{}:{}: {}", f.file, f.line, f.message));
        }
        text.push_str(&format!("\n\noutput (end):\n{tail}"));
        Ok((
            text,
            Tests {
                command: cmd.line,
                exit_code: ran.exit_code,
                passed: summary.passed,
                failed: summary.failed,
                failures,
                output: tail,
                timed_out: ran.timed_out,
                duration_ms: ran.elapsed.as_millis() as u64,
            },
        ))
    }
}
