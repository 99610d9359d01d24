//! The VS Code extension in a real VS Code: the freshly packaged `.vsix`
//! installed into code-server (VS Code 1.100's server and workbench),
//! driven through Debian's chromium by `vscode-extension/test/e2e/vscode-e2e.js`,
//! against a real guest of this test's own banger installation. Checks
//! what a user sees: the status bar item, a test failure in the Problems
//! panel, a guest command in a terminal, guest edits brought back through
//! the Refactor Preview, and the keybinding.
//!
//! Needs the tools `vscode-extension/scripts/install-test-tools.sh`
//! installs; `scripts/test.sh` filters this test out (and says so) where
//! they are missing. Run directly without them, it fails with "SKIPPED:".

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use banger_tests::{Env, git, make_calc_project, processes_mentioning};

/// The whole browser scenario, a fresh VM under software emulation included.
const SCENARIO: Duration = Duration::from_secs(600);
const VM: &str = "calc";
const FIXED: &str = "# adds two numbers (fixed in the sandbox)\nadd() { echo $(($1 + $2)); }\n";
const NOTES: &str = "written in the sandbox\n";
/// Lists guest processes running `sleep 987` (the image has no pgrep).
const SLEEPERS: &str = "for f in /proc/[0-9]*/cmdline; do tr '\\0' ' ' <$f 2>/dev/null; echo; done | grep '^sleep 987 $' || true";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// Where install-test-tools.sh puts code-server, playwright-core and vsce.
fn tools_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("BANGER_VSCODE_TOOLS") {
        return PathBuf::from(dir);
    }
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache")
        })
        .join("banger-test-tools/vscode")
}

struct Tools {
    code_server: PathBuf,
    playwright: PathBuf,
    chromium: PathBuf,
}

/// The tools, or why this test cannot run here.
fn tools() -> Result<Tools, String> {
    let dir = tools_dir();
    let t = Tools {
        code_server: dir.join("code-server/node_modules/.bin/code-server"),
        playwright: dir.join("tools/node_modules/playwright-core"),
        chromium: std::env::var_os("BANGER_CHROMIUM")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium")),
    };
    let vsce = dir.join("tools/node_modules/.bin/vsce");
    for (what, p) in [
        ("code-server", &t.code_server),
        ("playwright-core", &t.playwright),
        ("vsce", &vsce),
        ("chromium", &t.chromium),
    ] {
        if !p.exists() {
            return Err(format!("{what} is not installed ({})", p.display()));
        }
    }
    let node = Command::new("node").arg("--version").output();
    if !node.is_ok_and(|o| o.status.success()) {
        return Err("node is not on PATH".into());
    }
    Ok(t)
}

/// The editor tests' repository, plus the repository's own VS Code
/// settings naming a test command: an untrusted workspace must not use it
/// either.
fn make_project(repo: &Path) {
    make_calc_project(repo);
    std::fs::create_dir_all(repo.join(".vscode")).unwrap();
    std::fs::write(
        repo.join(".vscode/settings.json"),
        "{\"banger.testCommand\": \"sh tests/run.sh\"}\n",
    )
    .unwrap();
    git(repo, &["add", "-A"]);
    git(
        repo,
        &["commit", "-qm", "the repository's VS Code settings"],
    );
}

/// A process started in its own process group, killed with it on drop.
struct Group {
    child: Child,
}

impl Group {
    fn spawn(cmd: &mut Command) -> Group {
        let child = cmd
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        Group { child }
    }

    fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .args([sig, "--", &format!("-{}", self.child.id())])
            .stderr(Stdio::null())
            .status();
    }

    /// SIGTERM to the group (playwright closes chromium on it), then
    /// SIGKILL to what is left.
    fn stop(&mut self) {
        if self.child.try_wait().ok().flatten().is_some() {
            self.signal("-KILL");
            return;
        }
        self.signal("-TERM");
        for _ in 0..50 {
            if self.child.try_wait().ok().flatten().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.signal("-KILL");
        let _ = self.child.wait();
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn healthy(port: u16) -> bool {
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut reply = String::new();
    let _ = std::io::Read::read_to_string(&mut s, &mut reply);
    reply.starts_with("HTTP/1.1 200") || reply.starts_with("HTTP/1.0 200")
}

/// The end of a log file, for a failure report.
fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Files under `dir` whose name ends with `suffix`.
fn find(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(find(&p, suffix));
        } else if p.to_string_lossy().ends_with(suffix) {
            out.push(p);
        }
    }
    out
}

/// What to read when the scenario fails: the browser script's errors, the
/// server, the extension host, and the extension's two output channels.
fn report(dir: &Path) -> String {
    let mut out = format!(
        "--- e2e script stderr\n{}\n--- code-server\n{}",
        tail(&dir.join("e2e.stderr"), 60),
        tail(&dir.join("code-server.log"), 30)
    );
    for suffix in [
        "remoteexthost.log",
        "banger (language server).log",
        "-banger.log",
    ] {
        for f in find(&dir.join("user-data/logs"), suffix) {
            out.push_str(&format!("\n--- {}\n{}", f.display(), tail(&f, 40)));
        }
    }
    out
}

/// Processes of the editor under `dir`: those naming it (code-server,
/// chromium with its profile) and those with code-server's environment
/// (the extension host, `banger lsp`).
fn editor_processes(dir: &Path) -> Vec<(i32, Vec<String>)> {
    let marker = format!("XDG_CONFIG_HOME={}", dir.join("xdg-config").display());
    let mut found = processes_mentioning(&dir.display().to_string());
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let environ = std::fs::read(entry.path().join("environ")).unwrap_or_default();
        if environ.split(|b| *b == 0).any(|kv| kv == marker.as_bytes())
            && !found.iter().any(|(p, _)| *p == pid)
        {
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let args = cmdline
                .split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            found.push((pid, args));
        }
    }
    found
}

/// Fails the test with the report, kept (with the failure's screenshot)
/// in target/vscode-e2e/, since the environment's directory goes away.
fn fail(dir: &Path, what: String) -> ! {
    let report = report(dir);
    let keep = repo_root().join("target/vscode-e2e");
    let _ = std::fs::create_dir_all(&keep);
    let _ = std::fs::write(keep.join("report.txt"), format!("{what}\n{report}"));
    let _ = std::fs::copy(dir.join("artifacts/failure.png"), keep.join("failure.png"));
    panic!("{what}\n{report}\n--- kept in {}", keep.display());
}

#[test]
fn vscode_extension_runs_tests_shows_problems_and_applies_guest_changes() {
    let tools = tools().unwrap_or_else(|why| {
        panic!(
            "SKIPPED: the VS Code tier cannot run here: {why}. Install its tools with \
             vscode-extension/scripts/install-test-tools.sh (scripts/test.sh leaves this test out where they are missing)"
        )
    });
    let started = SystemTime::now();
    let env = Env::new();
    env.ensure_image();
    // The daemon starts from the test, with the environment of every other
    // banger command here; the extension's `banger lsp` connects to it.
    env.banger(&["daemon", "start"]).ok();
    let repo = env.root().join(VM);
    make_project(&repo);
    let repo = repo.canonicalize().unwrap();

    // The extension as a user gets it: packaged fresh, installed from the file.
    let dir = env.root().join("vscode");
    std::fs::create_dir_all(dir.join("user-data/User")).unwrap();
    let vsix = dir.join("banger.vsix");
    let ext_src = repo_root().join("vscode-extension");
    let out = Command::new(ext_src.join("scripts/package.sh"))
        .arg(&vsix)
        .env("BANGER_VSCODE_TOOLS", tools_dir())
        .output()
        .unwrap();
    assert!(
        out.status.success() && vsix.exists(),
        "packaging the extension failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let port = free_port();
    std::fs::write(
        dir.join("config.yaml"),
        format!("bind-addr: 127.0.0.1:{port}\nauth: none\ncert: false\n"),
    )
    .unwrap();
    let settings = serde_json::json!({
        "workbench.startupEditor": "none",
        "workbench.welcomePage.experimentalOnboarding": false,
        "workbench.tips.enabled": false,
        "telemetry.telemetryLevel": "off",
        "extensions.autoCheckUpdates": false,
        "extensions.autoUpdate": false,
        // VS Code asks whether to trust the folder; the scenario says no
        // first, then trusts it.
        "security.workspace.trust.enabled": true,
        "git.enabled": false,
        // Desktop VS Code's default (the web workbench's is afterDelay),
        // so the test sees whether the extension saves what it applies.
        "files.autoSave": "off",
        // xterm's DOM renderer, so the page has the terminal's text.
        "terminal.integrated.gpuAcceleration": "off",
    });
    std::fs::write(
        dir.join("user-data/User/settings.json"),
        serde_json::to_string_pretty(&settings).unwrap(),
    )
    .unwrap();
    // `banger.path` is machine-scoped (a workspace cannot name the binary
    // the extension runs): in code-server, as in any remote window, it
    // lives in the Remote settings, which are the server's Machine settings.
    std::fs::create_dir_all(dir.join("user-data/Machine")).unwrap();
    std::fs::write(
        dir.join("user-data/Machine/settings.json"),
        serde_json::json!({"banger.path": env.bin_dir().join("banger")}).to_string(),
    )
    .unwrap();
    // code-server with this Env's banger variables (so the extension's
    // `banger lsp` reaches this test's daemon), its own directories, and
    // nothing written under $HOME.
    let code_server = |args: &[&str]| {
        let mut cmd = Command::new(&tools.code_server);
        for (k, v) in env.cmd(&[]).get_envs() {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        cmd.env("XDG_DATA_HOME", dir.join("xdg-data"))
            .env("XDG_CONFIG_HOME", dir.join("xdg-config"))
            .arg("--config")
            .arg(dir.join("config.yaml"))
            .arg("--user-data-dir")
            .arg(dir.join("user-data"))
            .arg("--extensions-dir")
            .arg(dir.join("extensions"))
            .args(args)
            .stdin(Stdio::null());
        cmd
    };
    let out = code_server(&["--install-extension", vsix.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success()
            && String::from_utf8_lossy(&out.stdout).contains("was successfully installed"),
        "code-server --install-extension: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let log = std::fs::File::create(dir.join("code-server.log")).unwrap();
    let mut server = Group::spawn(
        code_server(&[
            "--disable-telemetry",
            "--disable-update-check",
            "--disable-getting-started-override",
            repo.to_str().unwrap(),
        ])
        .stdout(log.try_clone().unwrap())
        .stderr(log),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while !healthy(port) {
        assert!(
            Instant::now() < deadline,
            "code-server did not come up:\n{}",
            tail(&dir.join("code-server.log"), 40)
        );
        std::thread::sleep(Duration::from_millis(250));
    }

    // A banger whose daemon cannot start (its runtime directory cannot be
    // made), for the "daemon cannot start" notification.
    let broken = dir.join("broken-banger");
    std::fs::write(
        &broken,
        format!(
            "#!/bin/sh\nXDG_RUNTIME_DIR=/proc/banger-e2e-no-runtime exec {} \"$@\"\n",
            env.bin_dir().join("banger").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&broken, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();

    // The browser side.
    // Written next to the binaries; the README's copy is refreshed by
    // pointing this at vscode-extension/docs/problems.png.
    let screenshot = std::env::var_os("BANGER_VSCODE_SCREENSHOT")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| env.bin_dir().join("vscode-e2e/problems.png"));
    if let Some(d) = screenshot.parent() {
        std::fs::create_dir_all(d).unwrap();
    }
    let config = serde_json::json!({
        "url": format!("http://127.0.0.1:{port}/?folder={}", repo.display()),
        "repo": repo,
        "vm": VM,
        "playwright": tools.playwright,
        "chromium": tools.chromium,
        "profile": dir.join("chromium-profile"),
        "screenshot": screenshot,
        "artifacts": dir.join("artifacts"),
        "machineSettings": dir.join("user-data/Machine/settings.json"),
        "brokenBanger": broken,
        "guestEdit": {"file": "src/calc.sh", "text": FIXED, "newFile": "src/NOTES.txt", "newText": NOTES},
    });
    std::fs::write(dir.join("e2e.json"), config.to_string()).unwrap();
    let mut browser = Group::spawn(
        Command::new("node")
            // Chromium's crash reports and dconf cache stay here, not in $HOME.
            .env("XDG_CONFIG_HOME", dir.join("browser/config"))
            .env("XDG_CACHE_HOME", dir.join("browser/cache"))
            .env("XDG_DATA_HOME", dir.join("browser/data"))
            .arg(ext_src.join("test/e2e/vscode-e2e.js"))
            .arg(dir.join("e2e.json"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.join("e2e.stderr")).unwrap()),
    );
    let mut answer = browser.child.stdin.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let stdout = browser.child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + SCENARIO;
    let mut steps = Vec::new();
    let mut passed = false;
    let mut edited = false;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = match rx.recv_timeout(left) {
            Ok(line) => line,
            Err(mpsc::RecvTimeoutError::Timeout) => fail(
                &dir,
                format!("the VS Code scenario timed out after {steps:#?}"),
            ),
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        eprintln!("vscode e2e: {line}");
        match line.as_str() {
            "WAIT guest-edit" => {
                // The guest edits one tracked file and makes a new one.
                env.banger(&[
                    "vm",
                    "exec",
                    VM,
                    "--",
                    "sh",
                    "-c",
                    "printf '%s' \"$1\" > src/calc.sh && printf '%s' \"$2\" > src/NOTES.txt",
                    "sh",
                    FIXED,
                    NOTES,
                ])
                .ok();
                edited = true;
                writeln!(answer, "GO guest-edit").unwrap();
            }
            "WAIT sleeper-running" | "WAIT sleeper-gone" => {
                // The terminal's `sleep 987` runs in the guest, then Ctrl+C
                // in the terminal kills it there.
                let want_running = line == "WAIT sleeper-running";
                let mut seen = false;
                for _ in 0..40 {
                    let ps = env.banger(&["vm", "exec", VM, "--", "sh", "-c", SLEEPERS]);
                    ps.ok();
                    if ps.stdout.trim().is_empty() != want_running {
                        seen = true;
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(250));
                }
                if !seen {
                    fail(
                        &dir,
                        format!("{line}: the guest's sleep 987 is not as it should be"),
                    );
                }
                writeln!(answer, "GO {}", &line[5..]).unwrap();
            }
            "PASS" => passed = true,
            other => steps.push(other.to_string()),
        }
    }
    let status = browser.child.wait().unwrap();
    if !(passed && status.success() && edited) {
        fail(
            &dir,
            format!("the VS Code scenario failed ({status}) after {steps:#?}"),
        );
    }

    // What the page showed is what is on disk: the guest's edit, saved,
    // and host and guest agree (nothing left to apply, nothing to send).
    assert_eq!(
        std::fs::read_to_string(repo.join("src/calc.sh")).unwrap(),
        FIXED
    );
    assert_eq!(
        std::fs::read_to_string(repo.join("src/NOTES.txt")).unwrap(),
        NOTES
    );
    let changes = env.banger(&["vm", "workspace", "changes", VM]);
    changes.ok();
    assert_eq!(changes.stdout, "", "the guest still differs");
    let shot = std::fs::metadata(&screenshot).expect("the Problems panel screenshot");
    assert!(shot.modified().unwrap() >= started && shot.len() > 10_000);

    // Nothing of the editor is left: code-server, its extension host and
    // `banger lsp`, chromium.
    drop(browser);
    server.stop();
    let mut left = editor_processes(&dir);
    for _ in 0..30 {
        if left.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        left = editor_processes(&dir);
    }
    assert!(left.is_empty(), "processes left: {left:?}");
    env.banger(&["vm", "delete", VM]).ok();
    env.assert_nothing_left();
}
