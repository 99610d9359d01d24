//! Benchmark (not a test): times `vm run --rm -- true` split into phases,
//! and reports the host disk bytes a new VM adds. Drives the daemon API the
//! CLI uses, timing each progress event as it arrives.
//!
//!     cargo build --release --bins && cargo bench -p banger --bench vm_run
//!
//! `BANGER_BENCH_RUNS` sets the number of runs (default 5). The daemon and
//! its VMs run in a temporary state/runtime directory; the image cache is
//! the user's.
#![allow(clippy::print_stdout)]

use std::time::{Duration, Instant};

use banger::api::{BangerApiClient, CreateParams, ExecEvent, ExecParams, OpEvent};
use banger::paths::Dirs;

const PHASES: [&str; 7] = [
    "request",
    "disk preparation",
    "boot files",
    "VMM start",
    "guest boot to agent ready",
    "command",
    "teardown",
];

fn main() {
    let runs: usize = std::env::var("BANGER_BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let exe = std::env::current_exe().expect("bench path");
    let bin_dir = exe.parent().and_then(|p| p.parent()).expect("profile dir");
    let tmp = tempfile::Builder::new()
        .prefix("bgbench")
        .tempdir_in("/tmp")
        .expect("tmp");
    unsafe_env(&[
        (
            "BANGER_DAEMON",
            bin_dir.join("bangerd").display().to_string(),
        ),
        (
            "BANGER_AGENT",
            bin_dir.join("banger-agent").display().to_string(),
        ),
        (
            "XDG_RUNTIME_DIR",
            tmp.path().join("run").display().to_string(),
        ),
        (
            "XDG_STATE_HOME",
            tmp.path().join("state").display().to_string(),
        ),
    ]);
    let dirs = Dirs::from_env();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async move {
        let client = banger::client::connect_or_start(&dirs).await.expect("daemon");
        let info = client.daemon_info().await.expect("info");

        // Disk bytes of a VM that was created and never booted.
        let vm = create(&client, false).await.0;
        let created_bytes = vm.disk_usage_bytes;
        client.vm_delete(vm.id.clone()).await.expect("delete");

        let mut samples: Vec<[Duration; 7]> = Vec::new();
        let mut booted_bytes = Vec::new();
        // One warm-up run builds the image if needed and fills caches.
        for i in 0..=runs {
            let (vm, marks, t0) = create(&client, true).await;
            let t_exec = Instant::now();
            let mut sub = client
                .vm_exec(ExecParams {
                    vm: vm.id.clone(),
                    argv: vec!["true".into()],
                    ..ExecParams::default()
                })
                .await
                .expect("exec");
            loop {
                match sub.next().await.expect("event").expect("decode") {
                    ExecEvent::Exited { code, .. } => {
                        assert_eq!(code, Some(0));
                        break;
                    }
                    ExecEvent::Failed { message, .. } => panic!("{message}"),
                    _ => {}
                }
            }
            let t_cmd = Instant::now();
            let after = client.vm_show(vm.id.clone()).await.expect("show");
            let t_del = Instant::now();
            client.vm_delete(vm.id.clone()).await.expect("delete");
            let t_end = Instant::now();
            if i == 0 {
                continue;
            }
            booted_bytes.push(after.disk_usage_bytes);
            let at = |prefix: &str| {
                marks
                    .iter()
                    .find(|(m, _)| m.starts_with(prefix))
                    .map(|(_, t)| *t)
                    .expect(prefix)
            };
            let (disks, files, start, boot, ready) = (
                at("creating disks"),
                at("preparing boot files"),
                at("starting"),
                at("booting guest"),
                at("ready"),
            );
            samples.push([
                disks - t0,
                files - disks,
                start - files,
                boot - start,
                ready - boot,
                t_cmd - t_exec,
                t_end - t_del,
            ]);
        }
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .unwrap_or_default()
            .lines()
            .find(|l| l.starts_with("model name"))
            .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
            .unwrap_or_default();
        println!(
            "machine: {} cores, {cpu}; accel: {}; runs: {runs}",
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            info.accel
        );
        println!("| phase | median | min | max |\n|---|---|---|---|");
        let mut totals: Vec<Duration> = samples.iter().map(|s| s.iter().sum()).collect();
        for (i, name) in PHASES.iter().enumerate() {
            let mut v: Vec<Duration> = samples.iter().map(|s| s[i]).collect();
            row(name, &mut v);
        }
        row("total", &mut totals);
        booted_bytes.sort();
        println!(
            "\ndisk bytes a new VM adds on the host: {} KiB at create, {} KiB after boot + `true` (median)",
            created_bytes / 1024,
            booted_bytes.get(booted_bytes.len() / 2).copied().unwrap_or(0) / 1024
        );
        let _ = client.daemon_stop(Some(true)).await;
    });
}

fn row(name: &str, v: &mut [Duration]) {
    v.sort();
    let ms = |d: Duration| format!("{:.0} ms", d.as_secs_f64() * 1000.0);
    println!(
        "| {name} | {} | {} | {} |",
        ms(v[v.len() / 2]),
        ms(v[0]),
        ms(v[v.len() - 1])
    );
}

async fn create(
    client: &jsonrpsee::async_client::Client,
    start: bool,
) -> (banger::api::VmView, Vec<(String, Instant)>, Instant) {
    let t0 = Instant::now();
    let mut sub = client
        .vm_create(CreateParams {
            start,
            ..CreateParams::default()
        })
        .await
        .expect("create");
    let mut marks = Vec::new();
    loop {
        match sub.next().await.expect("event").expect("decode") {
            OpEvent::Progress { message } => marks.push((message, Instant::now())),
            OpEvent::Vm { vm } => {
                marks.push(("ready".into(), Instant::now()));
                return (*vm, marks, t0);
            }
            OpEvent::Failed { message, .. } => panic!("{message}"),
            OpEvent::Image { .. } => {}
        }
    }
}

fn unsafe_env(vars: &[(&str, String)]) {
    for (k, v) in vars {
        // SAFETY: called at the start of main, before any other thread
        // exists, so nothing reads the environment concurrently.
        unsafe { std::env::set_var(k, v) };
    }
}
