//! Benchmark (not a test): workspace transfer against a raw tar stream of
//! the same files over the same agent channel, export of 100 changed files,
//! and `vm exec -- true` split into guest round trip, daemon API and CLI.
//!
//!     cargo build --release --bins && cargo bench -p banger --bench workspace
//!
//! `BANGER_BENCH_FILES` (default 10000) and `BANGER_BENCH_FILE_BYTES`
//! (default 10240) size the repository; `BANGER_BENCH_TEXT=1` fills it with
//! source-like text (compressible, as real code is) instead of random bytes. The VM's agent channel is used
//! directly once the daemon is stopped (VMs outlive it), so both transfers
//! take exactly the same path.
#![allow(clippy::print_stdout, clippy::disallowed_methods)]

use std::io::Write;
use std::time::{Duration, Instant};

use banger::api::{BangerApiClient, CreateParams, ExecEvent, ExecParams, OpEvent};
use banger::paths::Dirs;
use banger::workspace::{select, transfer};
use banger_agent::client::{AgentClient, ExecEvent as AgentEvent};
use banger_agent::protocol::ExecSpec;

struct Writer(banger_agent::client::ExecControl);

impl Write for Writer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .write_stdin_blocking(buf)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn git(dir: &std::path::Path, args: &[&str]) {
    let ok = std::process::Command::new("git")
        .args(["-c", "user.name=b", "-c", "user.email=b@example.invalid"])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
}

/// Streams `archive` (written by `produce`) into `argv` in the guest; returns
/// the wall time until the guest command exits.
async fn stream(
    agent: &AgentClient,
    argv: &[&str],
    produce: impl FnOnce(Writer) + Send + 'static,
) -> Duration {
    let t = Instant::now();
    let mut s = agent
        .exec(ExecSpec {
            argv: argv.iter().map(|a| a.to_string()).collect(),
            cwd: Some("/root".into()),
            stdin: true,
            ..ExecSpec::default()
        })
        .await
        .unwrap();
    let control = s.control();
    let writer = tokio::task::spawn_blocking(move || {
        produce(Writer(control.clone()));
        control.close_stdin().unwrap();
    });
    let mut err = Vec::new();
    loop {
        match s.next().await.unwrap() {
            AgentEvent::Exited(st) => {
                assert_eq!(st.code, Some(0), "{}", String::from_utf8_lossy(&err));
                break;
            }
            AgentEvent::Stderr(b) => err.extend(b),
            AgentEvent::Stdout(_) => {}
        }
    }
    writer.await.unwrap();
    t.elapsed()
}

async fn run(agent: &AgentClient, argv: &[&str]) -> (Duration, Vec<u8>) {
    let t = Instant::now();
    let mut s = agent
        .exec(ExecSpec {
            argv: argv.iter().map(|a| a.to_string()).collect(),
            cwd: Some("/root".into()),
            ..ExecSpec::default()
        })
        .await
        .unwrap();
    let mut out = Vec::new();
    loop {
        match s.next().await.unwrap() {
            AgentEvent::Exited(_) => return (t.elapsed(), out),
            AgentEvent::Stdout(b) => out.extend(b),
            AgentEvent::Stderr(_) => {}
        }
    }
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let files: usize = std::env::var("BANGER_BENCH_FILES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    let size: usize = std::env::var("BANGER_BENCH_FILE_BYTES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_240);
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().and_then(|p| p.parent()).unwrap().to_path_buf();
    let tmp = tempfile::Builder::new()
        .prefix("bgbench")
        .tempdir_in("/tmp")
        .unwrap();
    for (k, v) in [
        ("BANGER_DAEMON", bin.join("bangerd")),
        ("BANGER_AGENT", bin.join("banger-agent")),
        ("XDG_RUNTIME_DIR", tmp.path().join("run")),
        ("XDG_STATE_HOME", tmp.path().join("state")),
    ] {
        // SAFETY: at the start of main, before any other thread exists.
        unsafe { std::env::set_var(k, v) };
    }

    let text = std::env::var("BANGER_BENCH_TEXT").is_ok_and(|v| v == "1");
    // A repository of `files` files of `size` pseudo-random bytes each (or
    // source-like lines).
    let repo = tmp.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q"]);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in 0..files {
        let dir = repo.join(format!("d{:03}", i % 100));
        std::fs::create_dir_all(&dir).unwrap();
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let data: Vec<u8> = if text {
            let mut t = String::new();
            while t.len() < size {
                let n = next();
                t.push_str(&format!(
                    "    let value_{} = compute_{}(input, {}); // step {}\n",
                    n % 997,
                    n % 53,
                    n % 10_000,
                    n % 89
                ));
            }
            t.truncate(size);
            t.into_bytes()
        } else {
            (0..size).map(|_| next() as u8).collect()
        };
        std::fs::write(dir.join(format!("f{i:05}.bin")), data).unwrap();
    }
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-qm", "bench"]);
    let total_mb = (files * size) as f64 / 1e6;

    let dirs = Dirs::from_env();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let client = banger::client::connect_or_start(&dirs).await.unwrap();
        let info = client.daemon_info().await.unwrap();
        let mut sub = client
            .vm_create(CreateParams {
                name: Some("bench".into()),
                start: true,
                ..CreateParams::default()
            })
            .await
            .unwrap();
        let vm = loop {
            match sub.next().await.unwrap().unwrap() {
                OpEvent::Vm { vm } => break vm,
                OpEvent::Failed { message, .. } => panic!("{message}"),
                _ => {}
            }
        };

        // vm exec -- true through the CLI and the API, daemon running.
        let mut cli = Vec::new();
        let mut api = Vec::new();
        for _ in 0..10 {
            let t = Instant::now();
            let st = std::process::Command::new(bin.join("banger"))
                .args(["vm", "exec", "bench", "--", "true"])
                .status()
                .unwrap();
            assert!(st.success());
            cli.push(t.elapsed());
            let t = Instant::now();
            let mut s = client
                .vm_exec(ExecParams {
                    vm: "bench".into(),
                    argv: vec!["true".into()],
                    ..ExecParams::default()
                })
                .await
                .unwrap();
            while let Some(Ok(ev)) = s.next().await {
                if matches!(ev, ExecEvent::Exited { .. }) {
                    break;
                }
            }
            api.push(t.elapsed());
        }
        let _ = client.daemon_stop(Some(true)).await;
        tokio::time::sleep(Duration::from_millis(500)).await;

        // The VM runs on; take its agent channel directly.
        let sock = dirs.vm_runtime(&vm.id).join("agent.sock");
        let agent = AgentClient::connect_unix(&sock).await.unwrap();
        agent.hello().await.unwrap();
        let mut round = Vec::new();
        for _ in 0..10 {
            round.push(run(&agent, &["true"]).await.0);
        }
        let (_, out) = run(&agent, &["sh", "-c", "t0=$(date +%s%N); true; t1=$(date +%s%N); echo $((t1-t0))"]).await;
        let guest_ns: u64 = String::from_utf8_lossy(&out).trim().parse().unwrap_or(0);

        let sel = select(&repo, false).unwrap();
        let mut ws_times = Vec::new();
        let mut raw_times = Vec::new();
        let unpack = transfer::guest_argv("/root/repo", ("b", "b@x"), true);
        let unpack: Vec<&str> = unpack.iter().map(String::as_str).collect();
        for _ in 0..3 {
            let s2 = sel.clone();
            ws_times.push(
                stream(
                    &agent,
                    &unpack,
                    move |w| {
                        transfer::write_archive(&s2, None, w).unwrap();
                    },
                )
                .await,
            );
            let s3 = sel.clone();
            raw_times.push(
                stream(
                    &agent,
                    &["sh", "-c", "rm -rf /root/raw && mkdir /root/raw && tar -x -C /root/raw"],
                    move |w| {
                        let mut tar = tar::Builder::new(w);
                        for f in &s3.files {
                            tar.append_path_with_name(s3.root.join(&f.path), &f.path).unwrap();
                        }
                        tar.finish().unwrap();
                    },
                )
                .await,
            );
        }

        // A command's streams, flow-controlled end to end: 100 MB out of
        // the guest, and 100 MB into a program's stdin.
        let mut out_times = Vec::new();
        let mut in_times = Vec::new();
        for _ in 0..3 {
            let (t, out) = run(&agent, &["head", "-c", "100000000", "/dev/zero"]).await;
            assert_eq!(out.len(), 100_000_000);
            out_times.push(t);
            in_times.push(
                stream(&agent, &["sh", "-c", "cat > /dev/null"], |mut w| {
                    use std::io::Write as _;
                    let chunk = vec![0u8; 1 << 20];
                    for _ in 0..100 {
                        w.write_all(&chunk[..1_000_000]).unwrap();
                    }
                })
                .await,
            );
        }

        // Export of 100 changed files.
        let (_, _) = run(
            &agent,
            &["sh", "-c", "cd /root/repo && for f in $(git ls-files | head -100); do echo changed >> $f; done"],
        )
        .await;
        let mut export_times = Vec::new();
        let mut patch_len = 0;
        for _ in 0..3 {
            let t = Instant::now();
            let (_, patch) = run(
                &agent,
                &["sh", "-c", banger::workspace::export::GUEST_SCRIPT, "bench", "/root/repo", ""],
            )
            .await;
            let files = banger::workspace::export::validate(
                &repo,
                &patch,
                banger::workspace::export::Limits::default(),
            )
            .unwrap();
            assert_eq!(files.len(), 100);
            patch_len = patch.len();
            export_times.push(t.elapsed());
        }

        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .unwrap_or_default()
            .lines()
            .find(|l| l.starts_with("model name"))
            .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
            .unwrap_or_default();
        println!(
            "machine: {} cores, {cpu}; accel: {}",
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            info.accel
        );
        let (w, r) = (median(ws_times.clone()), median(raw_times.clone()));
        println!(
            "\n| transfer of {files} {} files, {total_mb:.0} MB (median of 3) | time | MB/s |\n|---|---|---|",
            if text { "source-like" } else { "random" }
        );
        println!("| banger workspace (files + HEAD pack, git set up) | {} | {:.0} |", ms(w), total_mb / w.as_secs_f64());
        println!("| raw tar of the same files, same channel | {} | {:.0} |", ms(r), total_mb / r.as_secs_f64());
        println!("| ratio | {:.2}x | |", w.as_secs_f64() / r.as_secs_f64());
        println!(
            "\nexport of 100 changed files: {} median ({} KiB patch, validated)",
            ms(median(export_times)),
            patch_len / 1024
        );
        println!(
            "\n| vm exec -- true (median of 10) | time |\n|---|---|\n| guest time of `true` (date in the guest) | {:.1} ms |\n| agent round trip (host to guest and back) | {} |\n| through the daemon API | {} |\n| `banger vm exec` process, end to end | {} |",
            guest_ns as f64 / 1e6,
            ms(median(round)),
            ms(median(api)),
            ms(median(cli))
        );
        let (o, i) = (median(out_times), median(in_times));
        println!(
            "\n| a command's streams, 100 MB (median of 3) | time | MB/s |\n|---|---|---|\n| guest stdout to the host (`head -c`) | {} | {:.0} |\n| host to the guest program's stdin (`cat`) | {} | {:.0} |",
            ms(o),
            100.0 / o.as_secs_f64(),
            ms(i),
            100.0 / i.as_secs_f64()
        );
        drop(agent);
        let client = banger::client::connect_or_start(&dirs).await.unwrap();
        client.vm_delete("bench".into()).await.unwrap();
        let _ = client.daemon_stop(Some(true)).await;
    });
}
