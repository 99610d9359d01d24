//! `banger mcp` driven by an MCP client nobody at banger wrote: the
//! official MCP Python SDK (`mcp` from PyPI, pinned in
//! tests/mcp/requirements.txt), running tests/mcp/agent.py. One scenario
//! takes a Python repository with a failing test from sandbox_create to
//! apply_changes in one real guest; the others need no VM: tools/list and
//! its schemas, bad and malformed input, the unix-socket transport, and
//! the command line.
//!
//! Needs the SDK (`$BANGER_MCP_PYTHON`, or the python that
//! tests/mcp/install-client.sh installs); scripts/test.sh skips this tier,
//! and says so, on a host without it.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use banger_tests::{Env, git};

fn tests_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn snapshot() -> PathBuf {
    tests_dir().join("../server/src/mcp/tools.snap.json")
}

/// The SDK's python: `$BANGER_MCP_PYTHON`, else the install script's.
fn mcp_python() -> PathBuf {
    if let Some(p) = std::env::var_os("BANGER_MCP_PYTHON") {
        return PathBuf::from(p);
    }
    let out = Command::new(tests_dir().join("mcp/install-client.sh"))
        .arg("--find")
        .output()
        .expect("run tests/mcp/install-client.sh --find");
    assert!(
        out.status.success(),
        "the MCP Python SDK is not installed: run scripts/install-test-tools.sh (or set BANGER_MCP_PYTHON)"
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// Runs tests/mcp/agent.py MODE ARGS.. with the environment's variables
/// (so the `banger mcp` it starts uses this environment's daemon).
fn agent(env: &Env, args: &[&str]) -> Output {
    let banger = env.cmd(&[]);
    let mut cmd = Command::new(mcp_python());
    cmd.arg(tests_dir().join("mcp/agent.py")).args(args);
    for (k, v) in banger.get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    let out = cmd.output().expect("run agent.py");
    eprintln!(
        "agent.py {}:\n{}\n{}",
        args[0],
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn banger_path(env: &Env) -> String {
    env.bin_dir().join("banger").display().to_string()
}

/// A Python project whose one failing test (`tests/test_calc.py` line 8)
/// `.banger.toml` runs with unittest; `__pycache__` ignored, as real
/// projects do.
fn make_py_project(dir: &Path) {
    std::fs::create_dir_all(dir.join("tests")).unwrap();
    git(dir, &["init", "-q", "-b", "main"]);
    std::fs::write(
        dir.join("calc.py"),
        "def add(a, b):\n    return a + b + 1\n\n\ndef sub(a, b):\n    return a - b\n",
    )
    .unwrap();
    std::fs::write(dir.join("tests/__init__.py"), "").unwrap();
    std::fs::write(
        dir.join("tests/test_calc.py"),
        "import unittest\n\nfrom calc import add, sub\n\n\nclass CalcTest(unittest.TestCase):\n    def test_add(self):\n        self.assertEqual(add(2, 2), 4)\n\n    def test_sub(self):\n        self.assertEqual(sub(3, 1), 2)\n",
    )
    .unwrap();
    std::fs::write(
        dir.join(".banger.toml"),
        "[sandbox]\ntest-command = \"python3 -m unittest\"\n",
    )
    .unwrap();
    std::fs::write(dir.join(".gitignore"), "__pycache__/\n").unwrap();
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-qm", "first"]);
}

/// An isolated banger with the Python project in `calc` (and the default
/// image made first, when `boot`).
fn with_project(boot: bool) -> (Env, PathBuf) {
    let env = Env::new();
    if boot {
        env.ensure_image();
    }
    let repo = env.root().join("calc");
    make_py_project(&repo);
    (env, repo)
}

/// The issue's "done when": with the Python SDK, one script creates a
/// sandbox of the repository, runs its failing test (the failure names
/// file and line), writes the fix in the guest, runs again (exit 0),
/// brings the fix home; the host's `git diff` is exactly that fix. On the
/// way: exec's codes, streams, progress, timeout and cancellation, the
/// file tools, hostile paths and links, dry runs, stop and delete.
#[test]
fn an_agent_fixes_a_failing_test_and_brings_the_fix_home() {
    let (env, repo) = with_project(true);
    let out = agent(
        &env,
        &[
            "session",
            &banger_path(&env),
            &repo.display().to_string(),
            &snapshot().display().to_string(),
            "agent-fix",
        ],
    );
    assert!(out.status.success(), "the agent's session failed (above)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    for step in [
        "\"tests failed\"",
        "\"tests passed\"",
        "\"applied\"",
        "\"deleted\"",
    ] {
        assert!(stdout.contains(step), "no {step} step");
    }
    assert_eq!(git(&repo, &["status", "--porcelain"]), "M calc.py");
    let diff = git(&repo, &["diff", "-U0", "--no-color"]);
    let changed: Vec<&str> = diff
        .lines()
        .filter(|l| {
            (l.starts_with('+') || l.starts_with('-'))
                && !l.starts_with("+++")
                && !l.starts_with("---")
        })
        .collect();
    assert_eq!(
        changed,
        ["-    return a + b + 1", "+    return a + b"],
        "{diff}"
    );
    env.assert_nothing_left();
}

/// `--ephemeral`: the sandboxes a server makes are removed when it ends
/// (its lease with bangerd ends with it).
#[test]
fn an_ephemeral_servers_sandboxes_go_with_it() {
    let (env, repo) = with_project(true);
    let out = agent(
        &env,
        &[
            "ephemeral",
            &banger_path(&env),
            &repo.display().to_string(),
            "short-lived",
        ],
    );
    assert!(out.status.success(), "the ephemeral session failed (above)");
    env.assert_nothing_left();
}

/// Without a VM: tools/list against the snapshot, every schema a valid
/// JSON Schema, bad input refused with a message, malformed arguments and
/// an unknown tool answered while the server goes on, `--read-only-host`.
#[test]
fn tools_schemas_and_bad_input_through_the_python_sdk() {
    let (env, repo) = with_project(false);
    let out = agent(
        &env,
        &[
            "offline",
            &banger_path(&env),
            &repo.display().to_string(),
            &snapshot().display().to_string(),
        ],
    );
    assert!(out.status.success(), "the offline session failed (above)");
    assert!(String::from_utf8_lossy(&out.stdout).contains("survived malformed calls"));
    env.assert_nothing_left();
}

/// Reads the server's stdout lines on a thread.
fn lines(child: &mut std::process::Child) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn answer(rx: &std::sync::mpsc::Receiver<String>, id: i64) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no answer to request {id}"));
        let v: serde_json::Value = serde_json::from_str(&line).expect("the server wrote JSON");
        if v["id"] == id {
            return v;
        }
    }
}

/// A line that is not JSON, and a request that is not MCP, on the raw
/// stdio transport: the server answers what it can and serves on.
#[test]
fn the_server_survives_malformed_lines_on_stdio() {
    let (env, repo) = with_project(false);
    let mut child = env
        .cmd(&["mcp", "--repo", &repo.display().to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn banger mcp");
    let rx = lines(&mut child);
    let mut stdin = child.stdin.take().unwrap();
    let mut send = |s: &str| {
        stdin.write_all(s.as_bytes()).unwrap();
        stdin.write_all(b"\n").unwrap();
        stdin.flush().unwrap();
    };
    send("this is not json {");
    send(
        r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"raw","version":"0"}}}"#,
    );
    let init = answer(&rx, 1);
    assert_eq!(init["result"]["serverInfo"]["name"], "banger", "{init}");
    send(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
    send(
        r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"read_file","arguments":"not an object"}}"#,
    );
    let bad = answer(&rx, 2);
    assert!(
        bad.get("error").is_some() || bad["result"]["isError"] == true,
        "{bad}"
    );
    send(r#"{"jsonrpc":"2.0","id":3,"method":"no/such/method","params":{}}"#);
    assert!(answer(&rx, 3).get("error").is_some());
    send(r#"{"jsonrpc":"2.0","id":4,"method":"tools/list","params":{}}"#);
    let list = answer(&rx, 4);
    assert_eq!(
        list["result"]["tools"].as_array().map(Vec::len),
        Some(14),
        "{list}"
    );
    drop(stdin);
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "banger mcp ended with {status} when its client closed stdin"
    );
}

/// `--listen unix:PATH`: the streamable HTTP transport, reached by the
/// SDK's client through the socket (0600), removed when the server ends.
#[test]
fn streamable_http_on_a_unix_socket() {
    use std::os::unix::fs::PermissionsExt as _;
    let (env, repo) = with_project(false);
    let sock = env.root().join("mcp.sock");
    let listen = format!("unix:{}", sock.display());
    let mut child = env
        .cmd(&[
            "mcp",
            "--repo",
            &repo.display().to_string(),
            "--listen",
            &listen,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn banger mcp --listen");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !sock.exists() {
        assert!(Instant::now() < deadline, "no socket at {}", sock.display());
        std::thread::sleep(Duration::from_millis(50));
    }
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // A second server on the same socket is refused.
    let second = env.banger(&[
        "mcp",
        "--repo",
        &repo.display().to_string(),
        "--listen",
        &listen,
    ]);
    second.expect_code(1);
    assert!(second.stderr.contains("in use"), "{}", second.stderr);
    let out = agent(&env, &["http", &sock.display().to_string()]);
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let status = child.wait().unwrap();
    assert!(out.status.success(), "the http session failed (above)");
    assert!(
        status.success(),
        "banger mcp --listen ended with {status} on SIGTERM"
    );
    assert!(!sock.exists(), "the socket was left behind");
}

/// `--print-config` for each client, and bad command lines: a clear error,
/// exit 2, nothing started.
#[test]
fn print_config_and_bad_command_lines() {
    let (env, repo) = with_project(false);
    let r = repo.display().to_string();
    let claude = env.banger(&["mcp", "--repo", &r, "--print-config", "claude"]);
    claude.ok();
    let v: serde_json::Value = serde_json::from_str(&claude.stdout).unwrap();
    let server = &v["mcpServers"]["banger"];
    assert_eq!(server["command"], banger_path(&env));
    assert_eq!(server["args"], serde_json::json!(["mcp", "--repo", r]));
    let vscode = env.banger(&[
        "mcp",
        "--repo",
        &r,
        "--read-only-host",
        "--print-config",
        "vscode",
    ]);
    let v: serde_json::Value = serde_json::from_str(&vscode.ok().stdout).unwrap();
    assert_eq!(v["servers"]["banger"]["args"][3], "--read-only-host");
    let codex = env.banger(&["mcp", "--repo", &r, "--print-config", "codex"]);
    assert!(
        codex
            .ok()
            .stdout
            .starts_with("[mcp_servers.banger]\ncommand = "),
        "{}",
        codex.stdout
    );
    // From inside the repository, --repo is not needed.
    let here = env
        .cmd(&["mcp", "--print-config", "claude"])
        .current_dir(repo.join("tests"))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&here.stdout).contains(&format!("\"{r}\"")));
    let not_repo = env.root().join("plain");
    std::fs::create_dir_all(&not_repo).unwrap();
    for (args, says) in [
        (vec!["mcp", "--repo", "/nonexistent/x"], "/nonexistent/x"),
        (
            vec!["mcp", "--repo", not_repo.to_str().unwrap()],
            "git repository",
        ),
        (
            vec!["mcp", "--repo", &r, "--listen", "tcp:127.0.0.1:9"],
            "unix socket",
        ),
        (
            vec!["mcp", "--repo", &r, "--print-config", "emacs"],
            "emacs",
        ),
    ] {
        let run = env.banger(&args);
        run.expect_code(2);
        assert!(run.stderr.contains(says), "{args:?}: {}", run.stderr);
    }
    assert_eq!(env.daemon_pid(), None, "a bad command line started bangerd");
}
