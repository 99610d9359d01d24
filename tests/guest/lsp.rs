//! The editor backend driven by a real LSP client against a real guest:
//! `banger lsp` in a fresh git repository with no VM, from the first
//! command to applying guest edits, with the conflict and hostile-guest
//! rules.

use std::path::Path;
use std::time::Duration;

use banger_tests::lsp::{LspClient, OnApplyEdit, uri};
use banger_tests::{CALC_FIXED, Env, git, make_calc_project};
use serde_json::{Value, json};

const BOOT: Duration = Duration::from_secs(300);
const STEP: Duration = Duration::from_secs(60);
/// Lists guest processes running `sleep 987` (the image has no pgrep).
const SLEEPERS: &str = "for f in /proc/[0-9]*/cmdline; do tr '\\0' ' ' <$f 2>/dev/null; echo; done | grep '^sleep 987 $' || true";

pub(crate) fn initialize(lsp: &mut LspClient, repo: &Path) {
    let init = lsp
        .request(
            "initialize",
            json!({
                "processId": null,
                "rootUri": uri(repo),
                "workspaceFolders": [{"uri": uri(repo), "name": "proj"}],
                "capabilities": {
                    "window": {"workDoneProgress": true},
                    "workspace": {"applyEdit": true, "workspaceEdit": {"documentChanges": true, "resourceOperations": ["create", "delete"], "changeAnnotationSupport": {}}}
                },
                "initializationOptions": {"banger": {"syncOnSave": true}}
            }),
            STEP,
        )
        .expect("initialize");
    let commands = &init["capabilities"]["executeCommandProvider"]["commands"];
    assert!(
        commands
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c == "banger.runTests"),
        "{init}"
    );
    lsp.notify("initialized", json!({}));
}

/// Runs a guest command through `banger.exec`; returns its exit code and
/// stdout, taken from the `banger/output` notifications.
pub(crate) fn exec(lsp: &mut LspClient, argv: &[&str]) -> (i64, String) {
    let from = lsp.notifications.len();
    let r = lsp
        .command("banger.exec", json!([{"argv": argv}]), STEP)
        .unwrap_or_else(|e| panic!("banger.exec {argv:?}: {e}"));
    let run = r["runId"].as_str().unwrap().to_string();
    let out: String = lsp.notifications[from..]
        .iter()
        .filter(|n| {
            n["method"] == "banger/output"
                && n["params"]["runId"] == run.as_str()
                && n["params"]["stream"] == "stdout"
        })
        .map(|n| n["params"]["text"].as_str().unwrap().to_string())
        .collect();
    (r["exitCode"].as_i64().unwrap(), out)
}

fn save(lsp: &mut LspClient, file: &Path, text: &str) {
    std::fs::write(file, text).unwrap();
    lsp.notify(
        "textDocument/didSave",
        json!({"textDocument": {"uri": uri(file)}}),
    );
}

fn is_status(n: &Value, f: impl Fn(&Value) -> bool) -> bool {
    n["method"] == "banger/status" && f(&n["params"])
}

fn diagnostics_for(lsp: &LspClient, file: &Path) -> Vec<Value> {
    lsp.notifications
        .iter()
        .rev()
        .find(|n| {
            n["method"] == "textDocument/publishDiagnostics" && n["params"]["uri"] == uri(file)
        })
        .map(|n| n["params"]["diagnostics"].as_array().unwrap().clone())
        .unwrap_or_default()
}

#[test]
fn lsp_binds_a_fresh_repo_syncs_runs_tests_and_applies_guest_changes() {
    let env = Env::new();
    let repo = env.root().join("proj");
    make_calc_project(&repo);
    let repo = repo.canonicalize().unwrap();
    let mut lsp = LspClient::start(env.cmd(&[]));
    initialize(&mut lsp, &repo);
    // No VM yet: the status names the one it will create.
    let st = lsp.wait_notification(0, STEP, |n| {
        is_status(n, |p| p["vm"] == "proj" && p["vmState"] == "absent")
    });
    assert_eq!(st["params"]["sync"], "synced");

    // 1. "Run tests in sandbox" with nothing else done first: the sandbox
    //    is created, the workspace shipped, the suite run, with progress.
    let from = lsp.notifications.len();
    let r = lsp
        .command("banger.runTests", json!([]), BOOT)
        .expect("runTests");
    assert_eq!(r["exitCode"], 1, "{r}");
    assert!(r["runId"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(r["durationMs"].as_u64().is_some());
    assert!(r["passed"].is_null() && r["failed"].is_null(), "{r}");
    let notes = &lsp.notifications[from..];
    assert!(
        notes
            .iter()
            .any(|n| n["method"] == "$/progress" && n["params"]["value"]["kind"] == "begin"),
        "no progress: {notes:#?}"
    );
    lsp.wait_notification(from, STEP, |n| {
        n["method"] == "$/progress" && n["params"]["value"]["kind"] == "end"
    });
    let notes = &lsp.notifications[from..];
    let output: String = notes
        .iter()
        .filter(|n| n["method"] == "banger/output" && n["params"]["runId"] == r["runId"])
        .map(|n| n["params"]["text"].as_str().unwrap().to_string())
        .collect();
    assert!(output.contains("add 2 2 gave 5, want 4"), "{output}");
    let diags = diagnostics_for(&lsp, &repo.join("src/calc.sh"));
    assert_eq!(diags.len(), 1, "{diags:?}");
    assert_eq!(diags[0]["range"]["start"]["line"], 1);
    assert!(diags[0]["message"].as_str().unwrap().contains("gave 5"));
    let vm = env.show("proj");
    assert_eq!(vm["state"], "running");

    // 2. Saving a tracked file sends that one file; the fix makes the
    //    suite pass and clears the diagnostic.
    let from = lsp.notifications.len();
    save(&mut lsp, &repo.join("src/calc.sh"), CALC_FIXED);
    lsp.wait_notification(from, STEP, |n| {
        is_status(n, |p| p["sync"] == "synced" && p["filesSent"] == 1)
    });
    let r = lsp.command("banger.runTests", json!([]), STEP).unwrap();
    assert_eq!(r["exitCode"], 0, "{r}");
    assert!(diagnostics_for(&lsp, &repo.join("src/calc.sh")).is_empty());

    // 3. An untracked file is never shipped, saved or not.
    save(&mut lsp, &repo.join("scratch.txt"), "untracked\n");
    save(&mut lsp, &repo.join("debug.log"), "ignored\n");
    let (code, _) = exec(&mut lsp, &["test", "-e", "scratch.txt"]);
    assert_eq!(code, 1, "an untracked file reached the guest");
    let (code, _) = exec(&mut lsp, &["test", "-e", "debug.log"]);
    assert_eq!(code, 1, "an ignored file reached the guest");

    // 4. A host commit (seen by the watcher): the guest's HEAD follows.
    std::fs::write(repo.join("notes.txt"), "committed notes\n").unwrap();
    git(&repo, &["commit", "-qam", "second"]);
    let head = git(&repo, &["rev-parse", "HEAD"]);
    let mut guest_head = String::new();
    for _ in 0..40 {
        guest_head = exec(&mut lsp, &["git", "rev-parse", "HEAD"]).1;
        if guest_head.trim() == head {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(guest_head.trim(), head);
    assert_eq!(exec(&mut lsp, &["cat", "notes.txt"]).1, "committed notes\n");

    // 5. A guest edit is noticed without asking, offered as a code action,
    //    and applied to the host file.
    let from = lsp.notifications.len();
    exec(
        &mut lsp,
        &[
            "sh",
            "-c",
            "echo 'edited in the guest' > notes.txt && echo new > made.txt",
        ],
    );
    lsp.wait_notification(from, STEP, |n| is_status(n, |p| p["guestChanges"] == 2));
    let actions = lsp
        .request(
            "textDocument/codeAction",
            json!({
                "textDocument": {"uri": uri(&repo.join("notes.txt"))},
                "range": {"start": {"line": 0, "character": 0}, "end": {"line": 0, "character": 0}},
                "context": {"diagnostics": []}
            }),
            STEP,
        )
        .unwrap();
    let titles: Vec<(&str, &str)> = actions
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["title"].as_str().unwrap(), a["kind"].as_str().unwrap()))
        .collect();
    assert!(
        titles.contains(&("Apply guest changes (2 files)", "source.applyGuestChanges")),
        "{titles:?}"
    );
    assert!(titles.contains(&("Apply guest changes (2 files)", "quickfix")));
    let r = lsp
        .command("banger.applyGuestChanges", json!([]), STEP)
        .expect("apply");
    assert_eq!(r["files"], 2);
    let after_apply = lsp.notifications.len();
    let edit = &lsp.edits.last().unwrap()["edit"];
    assert_eq!(
        edit["changeAnnotations"]["banger.guestChanges"]["needsConfirmation"],
        true
    );
    assert_eq!(
        std::fs::read_to_string(repo.join("notes.txt")).unwrap(),
        "edited in the guest\n"
    );
    assert_eq!(
        std::fs::read_to_string(repo.join("made.txt")).unwrap(),
        "new\n"
    );
    // Host and guest agree: nothing echoes back (the syncs the editor's
    // writes and a save cause send nothing), nothing is left to apply.
    lsp.notify(
        "textDocument/didSave",
        json!({"textDocument": {"uri": uri(&repo.join("notes.txt"))}}),
    );
    assert_eq!(
        exec(&mut lsp, &["cat", "notes.txt"]).1,
        "edited in the guest\n"
    );
    // Each sync reports `syncing`, then its result with its own count.
    let statuses: Vec<&Value> = lsp.notifications[after_apply..]
        .iter()
        .filter(|n| n["method"] == "banger/status")
        .map(|n| &n["params"])
        .collect();
    let results: Vec<&&Value> = statuses
        .windows(2)
        .filter(|w| w[0]["sync"] == "syncing")
        .map(|w| &w[1])
        .collect();
    assert!(
        !results.is_empty(),
        "no sync after the apply: {statuses:#?}"
    );
    assert!(
        results.iter().all(|p| p["filesSent"] == 0),
        "files travelled back: {results:#?}"
    );
    let changes = env.banger(&["vm", "workspace", "changes", "proj"]);
    assert_eq!(changes.stdout, "", "{}", changes.stderr);

    // 6. A guest edit and a host save of the same file: a conflict, and the
    //    guest's edit is not lost.
    exec(&mut lsp, &["sh", "-c", "echo guest version > notes.txt"]);
    let from = lsp.notifications.len();
    save(&mut lsp, &repo.join("notes.txt"), "host version\n");
    let st = lsp.wait_notification(from, STEP, |n| is_status(n, |p| p["sync"] == "conflict"));
    assert!(
        st["params"]["message"]
            .as_str()
            .unwrap()
            .contains("notes.txt")
    );
    assert_eq!(exec(&mut lsp, &["cat", "notes.txt"]).1, "guest version\n");
    let diags = diagnostics_for(&lsp, &repo.join("notes.txt"));
    assert!(
        diags.iter().any(|d| d["code"] == "guest-conflict"),
        "{diags:?}"
    );
    let actions = lsp
        .request(
            "textDocument/codeAction",
            json!({
                "textDocument": {"uri": uri(&repo.join("notes.txt"))},
                "range": {"start": {"line": 0, "character": 0}, "end": {"line": 0, "character": 0}},
                "context": {"diagnostics": [], "only": ["quickfix"]}
            }),
            STEP,
        )
        .unwrap();
    assert!(
        actions
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["title"] == "Overwrite guest copy"),
        "{actions}"
    );
    // The conflict stands while other files sync.
    let from = lsp.notifications.len();
    save(
        &mut lsp,
        &repo.join("src/calc.sh"),
        "# adds two numbers\nadd() { echo $(($1 + $2)); }\n# saved again\n",
    );
    let st = lsp.wait_notification(from, STEP, |n| {
        is_status(n, |p| p["sync"] != "syncing" && p["filesSent"] == 1)
    });
    assert_eq!(st["params"]["sync"], "conflict", "{st}");
    let r = lsp
        .command("banger.overwriteGuest", json!([]), STEP)
        .unwrap();
    assert_eq!(r["files"], 1);
    assert_eq!(exec(&mut lsp, &["cat", "notes.txt"]).1, "host version\n");

    // 7. Hostile guest changes are refused whole, nothing written: a
    //    symlink to /etc, then a path with `..`.
    exec(
        &mut lsp,
        &["sh", "-c", "ln -s /etc evil && echo fine > fine.txt"],
    );
    let err = lsp
        .command("banger.applyGuestChanges", json!([]), STEP)
        .expect_err("a symlink out of the repo must be refused");
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("outside the repository"),
        "{err}"
    );
    assert!(std::fs::symlink_metadata(repo.join("evil")).is_err());
    assert!(!repo.join("fine.txt").exists(), "applied in part");
    exec(
        &mut lsp,
        &[
            "sh",
            "-c",
            "rm evil && echo '{\"path\":\"../escape\",\"kind\":\"file\",\"oid\":\"0123456789012345678901234567890123456789\"}' >> .git/banger-sync/$(printf %s ../escape | sha1sum | cut -c1-2)",
        ],
    );
    let err = lsp
        .command("banger.applyGuestChanges", json!([]), STEP)
        .expect_err("a path with .. must be refused");
    assert!(
        err["message"].as_str().unwrap().contains("../escape"),
        "{err}"
    );
    assert!(!repo.join("fine.txt").exists(), "applied in part");
    assert!(!repo.parent().unwrap().join("escape").exists());

    // 8. Declining the edit writes nothing.
    exec(
        &mut lsp,
        &[
            "sh",
            "-c",
            "sed -i /escape/d .git/banger-sync/$(printf %s ../escape | sha1sum | cut -c1-2)",
        ],
    );
    lsp.on_apply_edit = OnApplyEdit::Decline;
    let err = lsp
        .command("banger.applyGuestChanges", json!([]), STEP)
        .expect_err("declined");
    assert!(
        err["message"].as_str().unwrap().contains("declined"),
        "{err}"
    );
    assert!(!repo.join("fine.txt").exists());

    // 9. A cancelled run kills the guest command.
    let id = lsp.send_request(
        "workspace/executeCommand",
        json!({"command": "banger.exec", "arguments": [{"argv": ["sleep", "987"]}]}),
    );
    let mut started = false;
    for _ in 0..40 {
        // The client keeps answering the server meanwhile (progress).
        lsp.pump(Duration::from_millis(250));
        let ps = env.banger(&["vm", "exec", "proj", "--", "sh", "-c", SLEEPERS]);
        if !ps.stdout.trim().is_empty() {
            started = true;
            break;
        }
    }
    assert!(started, "the command never started");
    lsp.notify("$/cancelRequest", json!({"id": id}));
    let err = lsp.response(id, STEP).expect_err("cancelled");
    assert_eq!(err["code"], -32800, "{err}");
    let mut gone = false;
    for _ in 0..40 {
        let ps = env.banger(&["vm", "exec", "proj", "--", "sh", "-c", SLEEPERS]);
        if ps.stdout.trim().is_empty() {
            gone = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(gone, "the cancelled command still runs in the guest");

    lsp.shutdown();
    env.banger(&["vm", "delete", "proj"]).ok();
}

#[test]
fn lsp_reuses_its_sandbox_across_restarts_and_one_save_in_a_large_repo_sends_one_file() {
    let env = Env::new();
    let repo = env.root().join("big");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    for d in 0..100 {
        let dir = repo.join(format!("src/m{d:02}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..100 {
            std::fs::write(dir.join(format!("f{f:02}.txt")), format!("{d} {f}\n")).unwrap();
        }
    }
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-qm", "10,000 files"]);
    let repo = repo.canonicalize().unwrap();

    // First editor session: the sandbox is made and the 10,000 files ship.
    let mut lsp = LspClient::start(env.cmd(&[]));
    initialize(&mut lsp, &repo);
    lsp.command("banger.sync", json!([]), BOOT).expect("sync");
    lsp.shutdown();

    // Second session: it binds to the running sandbox by itself, and the
    // reconcile finds nothing to send.
    let mut lsp = LspClient::start(env.cmd(&[]));
    initialize(&mut lsp, &repo);
    let syncing = lsp.wait_notification(0, STEP, |n| {
        is_status(n, |p| p["vmState"] == "running" && p["sync"] == "syncing")
    });
    let at = lsp
        .notifications
        .iter()
        .position(|n| *n == syncing)
        .unwrap();
    let st = lsp.wait_notification(at + 1, STEP, |n| is_status(n, |p| p["sync"] != "syncing"));
    assert_eq!(st["params"]["vm"], "big");
    assert_eq!(st["params"]["sync"], "synced", "{st}");
    assert_eq!(st["params"]["filesSent"], 0, "{st}");
    assert_eq!(env.vms().len(), 1);

    // One save sends one file.
    let from = lsp.notifications.len();
    save(&mut lsp, &repo.join("src/m42/f07.txt"), "saved\n");
    let st = lsp.wait_notification(from, STEP, |n| {
        is_status(n, |p| p["sync"] == "synced" && p["filesSent"] != 0)
    });
    assert_eq!(st["params"]["filesSent"], 1, "{st}");

    // A formatter-style burst of 200 saves: the first sync starts at once,
    // the rest gather while it runs; a few syncs in all, never one a file.
    let from = lsp.notifications.len();
    for d in 0..2 {
        for f in 0..100 {
            let p = repo.join(format!("src/m{d:02}/f{f:02}.txt"));
            save(&mut lsp, &p, &format!("formatted {d} {f}\n"));
        }
    }
    let (mut sent, mut syncs, mut at) = (0, 0, from);
    while sent < 200 {
        let st = lsp.wait_notification(at, STEP, |n| {
            is_status(n, |p| p["sync"] == "synced" && p["filesSent"] != 0)
        });
        at += lsp.notifications[at..]
            .iter()
            .position(|n| *n == st)
            .unwrap()
            + 1;
        sent += st["params"]["filesSent"].as_u64().unwrap();
        syncs += 1;
    }
    assert_eq!(sent, 200);
    assert!(
        syncs <= 20,
        "200 saves took {syncs} syncs: they were not gathered"
    );
    assert_eq!(
        exec(&mut lsp, &["cat", "src/m01/f99.txt"]).1,
        "formatted 1 99\n"
    );
    lsp.shutdown();

    // An editor on another repository, told to use this sandbox: refused,
    // never shipped over the guest's workspace.
    let other = env.root().join("other");
    banger_tests::make_repo(&other);
    let other = other.canonicalize().unwrap();
    let mut lsp = LspClient::start(env.cmd(&[]));
    lsp.request(
        "initialize",
        json!({
            "processId": null,
            "rootUri": uri(&other),
            "workspaceFolders": [{"uri": uri(&other), "name": "other"}],
            "capabilities": {},
            "initializationOptions": {"banger": {"vm": "big"}}
        }),
        STEP,
    )
    .expect("initialize");
    lsp.notify("initialized", json!({}));
    let err = lsp
        .command("banger.sync", json!([]), STEP)
        .expect_err("binding another repository's sandbox");
    let message = err["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("already holds the workspace of") && message.contains("banger.vm"),
        "{err}"
    );
    lsp.shutdown();
    assert_eq!(
        env.banger(&["vm", "exec", "big", "--", "cat", "src/m01/f99.txt"])
            .stdout,
        "formatted 1 99\n"
    );
    env.banger(&["vm", "delete", "big"]).ok();
}

/// A repository whose `.banger.toml` gives its sandbox network access
/// (`nat = true`, a trusted workspace) and whose `.mise.toml` declares a
/// tool: the sandbox `banger lsp` makes installs it, and the editor's
/// commands find it.
#[test]
fn lsp_sandbox_gets_network_from_banger_toml_and_the_workspaces_tools() {
    let env = Env::new();
    let repo = env.root().join("mise-proj");
    banger_tests::make_repo(&repo);
    std::fs::write(repo.join(".mise.toml"), crate::tooling::MISE_TOML).unwrap();
    std::fs::write(repo.join(".banger.toml"), "[sandbox]\nnat = true\n").unwrap();
    git(&repo, &["add", ".mise.toml", ".banger.toml"]);
    git(&repo, &["commit", "-q", "-m", "tools"]);
    let repo = repo.canonicalize().unwrap();
    let mut lsp = LspClient::start(env.cmd(&[]));
    initialize(&mut lsp, &repo);
    let (code, out) = exec(&mut lsp, &["esbuild", "--version"]);
    assert_eq!((code, out.trim()), (0, "0.25.9"));
    lsp.shutdown();
    assert_eq!(env.show("mise-proj")["network"]["mode"], "nat");
    env.banger(&["vm", "delete", "mise-proj"]).ok();
    env.assert_nothing_left();
}

/// A Python project whose trusted `.banger.toml` has a setup (pytest from
/// PyPI through NAT): the first "Run tests in sandbox" makes the project's
/// image (reported as work-done progress) and a failing assertion becomes
/// a diagnostic at its file and line; a later sandbox of the project boots
/// the image made then, without running the setup again.
#[test]
fn lsp_runs_a_projects_setup_once_and_its_tests_in_the_image() {
    let env = Env::new();
    let repo = env.root().join("py-lsp");
    banger_tests::make_repo(&repo);
    let marker = format!("{}-{}", std::process::id(), line!());
    std::fs::write(repo.join("requirements.txt"), "pytest\n").unwrap();
    std::fs::write(
        repo.join("test_calc.py"),
        "def test_adds():\n    assert 1 + 1 == 3\n",
    )
    .unwrap();
    std::fs::write(
        repo.join(".banger.toml"),
        format!(
            "[sandbox]\nnat = true\ntest-command = \"pytest -q\"\nsetup = \"pip install -r requirements.txt  # {marker}\"\n"
        ),
    )
    .unwrap();
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-q", "-m", "python"]);
    let repo = repo.canonicalize().unwrap();
    let run_tests = |expect_setup: bool| {
        let mut lsp = LspClient::start(env.cmd(&[]));
        initialize(&mut lsp, &repo);
        let from = lsp.notifications.len();
        let r = lsp
            .command("banger.runTests", json!([]), BOOT)
            .expect("runTests");
        assert_eq!(r["exitCode"], 1, "{r}");
        let progress: Vec<String> = lsp.notifications[from..]
            .iter()
            .filter(|n| n["method"] == "$/progress")
            .filter_map(|n| n["params"]["value"]["message"].as_str().map(String::from))
            .collect();
        assert_eq!(
            progress
                .iter()
                .any(|m| m.contains("running setup: pip install")),
            expect_setup,
            "{progress:#?}"
        );
        let diags = diagnostics_for(&lsp, &repo.join("test_calc.py"));
        assert_eq!(diags.len(), 1, "{diags:?}");
        assert_eq!(diags[0]["range"]["start"]["line"], 1, "{diags:?}");
        lsp.shutdown();
        assert!(
            env.show("py-lsp")["image"]
                .as_str()
                .unwrap()
                .starts_with("setup-py-lsp")
        );
        env.banger(&["vm", "delete", "py-lsp"]).ok();
    };
    run_tests(true);
    run_tests(false);
    env.assert_nothing_left();
    // This test's project image goes.
    let list: Value =
        serde_json::from_str(&env.banger(&["image", "list", "--json"]).stdout).unwrap();
    for image in list.as_array().unwrap() {
        if image["manifest"]["source"]["step"]["command"]
            .as_str()
            .is_some_and(|c| c.contains(&marker))
        {
            env.banger(&["image", "delete", image["id"].as_str().unwrap()])
                .ok();
        }
    }
}
