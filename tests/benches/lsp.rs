//! Benchmark (not a test) of the editor backend on a real guest:
//!
//! - save → the guest has the new content, over many saves in a repository
//!   of many tracked files: end to end as an editor sees it (`didSave` to
//!   the sync's `banger/status`), and the daemon's own split of one sync
//!   into host time and time waiting for the guest;
//! - the same host split in a ten-file repository (the host cost of a
//!   one-file sync must not grow with the repository);
//! - a formatter-style burst of saves;
//! - `banger.exec` of `true` (the LSP's round trip, next to the CLI's);
//! - applying many guest-changed files;
//! - before all that, `banger.runTests` on fresh small repositories (a new
//!   sandbox each: create or restore, ship, run).
//!
//!     cargo build --release --bins && cargo bench -p banger-tests --bench lsp
//!
//! `BANGER_BENCH_FILES` (default 10000), `BANGER_BENCH_SAVES` (200),
//! `BANGER_BENCH_BURST` (200), `BANGER_BENCH_APPLY` (100),
//! `BANGER_BENCH_FRESH` (5).
#![allow(clippy::print_stdout, clippy::disallowed_methods)]

use std::path::Path;
use std::time::{Duration, Instant};

use banger_tests::lsp::{LspClient, uri};
use banger_tests::{Env, git};
use serde_json::{Value, json};

fn var(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A repository of `n` source-like tracked files, 100 per directory.
fn make_repo(repo: &Path, n: usize) {
    std::fs::create_dir_all(repo).unwrap();
    git(repo, &["init", "-q", "-b", "main"]);
    for i in 0..n {
        let dir = repo.join(format!("src/m{:03}", i / 100));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join(format!("f{i:05}.rs")),
            format!("// file {i}\npub fn f{i}() -> u32 {{\n    {i}\n}}\n"),
        )
        .unwrap();
    }
    git(repo, &["add", "-A"]);
    git(repo, &["commit", "-qm", "bench"]);
}

fn file(repo: &Path, i: usize) -> std::path::PathBuf {
    repo.join(format!("src/m{:03}/f{i:05}.rs", i / 100))
}

fn stats(mut xs: Vec<f64>) -> String {
    xs.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let q = |p: f64| xs[((xs.len() as f64 - 1.0) * p).round() as usize];
    format!(
        "{:.1} | {:.1} | {:.1} | {:.1}",
        q(0.5),
        q(0.95),
        xs[0],
        xs[xs.len() - 1]
    )
}

/// Waits for the status that ends the next sync (after a `syncing`).
fn next_sync_result(lsp: &mut LspClient, from: usize) -> Value {
    let syncing = lsp.wait_notification(from, Duration::from_secs(120), |n| {
        n["method"] == "banger/status" && n["params"]["sync"] == "syncing"
    });
    let at = lsp
        .notifications
        .iter()
        .rposition(|n| *n == syncing)
        .unwrap();
    lsp.wait_notification(at + 1, Duration::from_secs(120), |n| {
        n["method"] == "banger/status" && n["params"]["sync"] != "syncing"
    })["params"]
        .clone()
}

/// One-file syncs through the CLI: (host ms, guest ms) of each.
fn cli_syncs(env: &Env, repo: &Path, n: usize, runs: usize) -> (Vec<f64>, Vec<f64>) {
    let (mut host, mut guest) = (Vec::new(), Vec::new());
    for k in 0..runs {
        let i = (k * 37) % n;
        let f = file(repo, i);
        std::fs::write(&f, format!("// cli edit {k}\n")).unwrap();
        let rel = f.strip_prefix(repo).unwrap().to_str().unwrap().to_string();
        let r = env.banger(&["vm", "workspace", "sync", "bench", &rel, "--json"]);
        let v: Value =
            serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {}", r.stderr));
        assert_eq!(v["files_sent"], 1, "{v}");
        host.push(v["host_ms"].as_f64().unwrap());
        guest.push(v["guest_ms"].as_f64().unwrap());
    }
    (host, guest)
}

/// `banger lsp` bound to `repo` (its folder named like its directory).
fn start_lsp(env: &Env, repo: &Path) -> LspClient {
    let name = repo.file_name().unwrap().to_string_lossy().into_owned();
    let mut lsp = LspClient::start(env.cmd(&[]));
    lsp.request(
        "initialize",
        json!({
            "processId": null,
            "workspaceFolders": [{"uri": uri(repo), "name": name}],
            "capabilities": {"workspace": {"applyEdit": true}}
        }),
        Duration::from_secs(30),
    )
    .unwrap();
    lsp.notify("initialized", json!({}));
    lsp
}

/// `banger.runTests` on fresh small repositories (the calc project), each
/// with its own new sandbox: from the request to its result, with the
/// sandbox made, the repository shipped and the suite run. The first
/// makes the image's snapshot if there is none, so it is reported apart.
fn first_run_tests(env: &Env, runs: usize) {
    let mut times = Vec::new();
    for k in 0..=runs {
        let repo = env.root().join(format!("fresh{k}"));
        banger_tests::make_calc_project(&repo);
        let repo = repo.canonicalize().unwrap();
        let mut lsp = start_lsp(env, &repo);
        let t = Instant::now();
        let r = lsp
            .command("banger.runTests", json!([]), Duration::from_secs(600))
            .unwrap();
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        assert_eq!(r["exitCode"], 1, "{r}");
        if k == 0 {
            println!("first runTests, warm-up (may make the image's snapshot): {ms:.0} ms");
        } else {
            times.push(ms);
        }
        drop(lsp);
        let _ = env.banger(&["vm", "delete", &format!("fresh{k}")]);
    }
    println!(
        "first runTests on a fresh repository (new sandbox), ms p50 | p95 | min | max: {}",
        stats(times)
    );
}

fn main() {
    first_run_tests(&Env::new(), var("BANGER_BENCH_FRESH", 5));
    let files = var("BANGER_BENCH_FILES", 10_000);
    let saves = var("BANGER_BENCH_SAVES", 200);
    let burst = var("BANGER_BENCH_BURST", 200);
    let apply = var("BANGER_BENCH_APPLY", 100);
    let env = Env::new();
    let repo = env.root().join("bench");
    make_repo(&repo, files);
    let repo = repo.canonicalize().unwrap();

    let mut lsp = start_lsp(&env, &repo);
    let t = Instant::now();
    let r = lsp
        .command("banger.sync", json!([]), Duration::from_secs(600))
        .unwrap();
    println!(
        "bind (create + boot + ship {files} files): {:.1} s ({r})",
        t.elapsed().as_secs_f64()
    );

    // Save → guest, end to end as the editor sees it.
    let mut e2e = Vec::new();
    let mut sent = Vec::new();
    for k in 0..saves {
        let f = file(&repo, (k * 7919) % files);
        // From the write: the watcher may start the sync before didSave.
        let from = lsp.notifications.len();
        let t = Instant::now();
        std::fs::write(&f, format!("// saved {k}\n")).unwrap();
        lsp.notify(
            "textDocument/didSave",
            json!({"textDocument": {"uri": uri(&f)}}),
        );
        let st = next_sync_result(&mut lsp, from);
        e2e.push(t.elapsed().as_secs_f64() * 1000.0);
        sent.push(st["filesSent"].as_u64().unwrap());
        // Let the watcher's echo of the same write settle.
        lsp.pump(Duration::from_millis(80));
    }
    println!(
        "filesSent per save: min {} max {}",
        sent.iter().min().unwrap(),
        sent.iter().max().unwrap()
    );
    println!(
        "| save → guest, {files} files, editor's view (ms) | {} |",
        stats(e2e)
    );

    // A formatter-style burst.
    let mut bursts = Vec::new();
    for round in 0..5 {
        let from = lsp.notifications.len();
        let t = Instant::now();
        for k in 0..burst {
            let f = file(&repo, (round * burst + k) % files);
            std::fs::write(&f, format!("// formatted {round} {k}\n")).unwrap();
            lsp.notify(
                "textDocument/didSave",
                json!({"textDocument": {"uri": uri(&f)}}),
            );
        }
        // Until a sync reports the whole burst sent (one sync, or a few).
        let mut total = 0;
        let mut at = from;
        while total < burst as u64 {
            let st = next_sync_result(&mut lsp, at);
            total += st["filesSent"].as_u64().unwrap();
            at = lsp.notifications.len();
        }
        bursts.push(t.elapsed().as_secs_f64() * 1000.0);
        lsp.pump(Duration::from_millis(300));
    }
    println!(
        "| burst of {burst} saves → guest (ms) | {} |",
        stats(bursts)
    );

    // banger.exec of `true`.
    let (mut via_lsp, mut via_cli) = (Vec::new(), Vec::new());
    for _ in 0..30 {
        let t = Instant::now();
        let r = lsp
            .command(
                "banger.exec",
                json!([{"argv": ["true"]}]),
                Duration::from_secs(60),
            )
            .unwrap();
        assert_eq!(r["exitCode"], 0);
        via_lsp.push(t.elapsed().as_secs_f64() * 1000.0);
        let t = Instant::now();
        env.banger(&["vm", "exec", "bench", "--", "true"]).ok();
        via_cli.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    println!(
        "| banger.exec true, LSP round trip (ms) | {} |",
        stats(via_lsp)
    );
    println!("| banger vm exec -- true, CLI (ms) | {} |", stats(via_cli));

    // Apply of many guest-changed files.
    let mut applies = Vec::new();
    for round in 0..3 {
        let script = format!(
            "for i in $(seq 0 {}); do d=$(printf 'src/m%03d' $((i / 100))); f=$(printf 'f%05d.rs' $i); echo 'guest {round}' >> $d/$f; done",
            apply - 1
        );
        env.banger(&["vm", "exec", "bench", "--", "sh", "-c", &script])
            .ok();
        let from = lsp.notifications.len();
        lsp.wait_notification(from, Duration::from_secs(120), |n| {
            n["method"] == "banger/status" && n["params"]["guestChanges"] == apply
        });
        let t = Instant::now();
        let r = lsp
            .command(
                "banger.applyGuestChanges",
                json!([]),
                Duration::from_secs(300),
            )
            .unwrap();
        assert_eq!(r["files"], apply);
        applies.push(t.elapsed().as_secs_f64() * 1000.0);
        lsp.pump(Duration::from_millis(500));
    }
    println!(
        "| apply {apply} guest-changed files (ms) | {} |",
        stats(applies)
    );

    // One-file syncs through the CLI, with the LSP server gone (its watcher
    // would otherwise race to sync each file first).
    lsp.shutdown();
    let (host, guest) = cli_syncs(&env, &repo, files, saves);
    println!(
        "| one-file sync, {files} files: host (ms) | {} |",
        stats(host)
    );
    println!(
        "| one-file sync, {files} files: guest (ms) | {} |",
        stats(guest)
    );

    // The same one-file sync in a ten-file repository, same VM (which
    // holds the big repository: replaced on purpose).
    let small = env.root().join("small");
    make_repo(&small, 10);
    env.banger(&[
        "vm",
        "workspace",
        "prepare",
        "bench",
        small.to_str().unwrap(),
        "--replace",
    ])
    .ok();
    let (host, guest) = cli_syncs(&env, &small, 10, saves);
    println!("| one-file sync, 10 files: host (ms) | {} |", stats(host));
    println!("| one-file sync, 10 files: guest (ms) | {} |", stats(guest));

    env.banger(&["vm", "delete", "bench"]).ok();
}
