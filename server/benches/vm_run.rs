//! Benchmark (not a test): `vm run --rm -- true` booted cold and restored
//! from the image's snapshot, side by side in one run (the two alternate,
//! so both see the same machine), split into phases; then the same through
//! the CLI end to end; then 8 VMs started at once from one snapshot (wall
//! time and host memory); and the host disk bytes a new VM adds. Drives the
//! daemon API the CLI uses, timing each progress event as it arrives.
//!
//!     cargo build --release --bins && cargo bench -p banger --bench vm_run
//!
//! `BANGER_BENCH_RUNS` sets the runs per mode (default 10),
//! `BANGER_BENCH_PARALLEL` the VMs started at once (default 8). The daemon
//! and its VMs run in a temporary state/runtime directory; the image cache
//! (and its snapshots) is the user's.
#![allow(clippy::print_stdout)]

use std::time::{Duration, Instant};

use banger::api::{BangerApiClient, CreateParams, ExecEvent, ExecParams, OpEvent};
use banger::paths::Dirs;

const PHASES: [&str; 7] = [
    "request",
    "disk preparation",
    "boot files",
    "network",
    "boot or restore to agent ready",
    "command",
    "teardown",
];

type Client = jsonrpsee::async_client::Client;

fn main() {
    let env_num = |k: &str, d: usize| {
        std::env::var(k)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(d)
    };
    let runs = env_num("BANGER_BENCH_RUNS", 10);
    let parallel = env_num("BANGER_BENCH_PARALLEL", 8);
    let exe = std::env::current_exe().expect("bench path");
    let bin_dir = exe
        .parent()
        .and_then(|p| p.parent())
        .expect("profile dir")
        .to_path_buf();
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
        let vm = create(&client, false, false).await.0;
        let created_bytes = vm.disk_usage_bytes;
        client.vm_delete(vm.id.clone()).await.expect("delete");

        let mut samples: [Vec<[Duration; 7]>; 2] = [Vec::new(), Vec::new()];
        let mut booted_bytes = Vec::new();
        // One warm-up run of each builds the image and its snapshot if
        // needed and fills caches; then the modes alternate.
        for i in 0..=runs {
            for (m, snapshot) in [false, true].into_iter().enumerate() {
                let (phases, bytes) = run_once(&client, snapshot).await;
                if i > 0 {
                    samples[m].push(phases);
                    booted_bytes.push(bytes);
                }
            }
        }

        // End to end through the CLI, as a user types it.
        let mut cli: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
        for _ in 0..runs {
            for (m, flag) in [Some("--no-snapshot"), None].into_iter().enumerate() {
                let t = Instant::now();
                #[allow(clippy::disallowed_methods)] // the CLI, timed as a user runs it
                let mut cmd = std::process::Command::new(bin_dir.join("banger"));
                cmd.args(["vm", "run", "--rm"]).args(flag).args(["--", "true"]);
                let out = cmd.output().expect("banger vm run");
                assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
                cli[m].push(t.elapsed());
            }
        }

        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .unwrap_or_default()
            .lines()
            .find(|l| l.starts_with("model name"))
            .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
            .unwrap_or_default();
        println!(
            "machine: {} cores, {cpu}; accel: {}; runs per mode: {runs}",
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            info.accel
        );
        println!("\n`vm run --rm -- true` by phase (daemon API), median (min-max):\n");
        println!("| phase | cold | from snapshot |\n|---|---|---|");
        for (i, name) in PHASES.iter().enumerate() {
            let cells: Vec<String> = samples
                .iter()
                .map(|s| stats(&mut s.iter().map(|p| p[i]).collect::<Vec<_>>()))
                .collect();
            println!("| {name} | {} | {} |", cells[0], cells[1]);
        }
        let totals: Vec<Vec<Duration>> = samples
            .iter()
            .map(|s| s.iter().map(|p| p.iter().sum()).collect())
            .collect();
        let medians: Vec<Duration> = totals.iter().map(|t| median(t)).collect();
        println!(
            "| total | {} | {} |",
            stats(&mut totals[0].clone()),
            stats(&mut totals[1].clone())
        );
        let cli_medians: Vec<Duration> = cli.iter().map(|t| median(t)).collect();
        println!(
            "| `banger vm run --rm -- true`, end to end (CLI) | {} | {} |",
            stats(&mut cli[0]),
            stats(&mut cli[1])
        );
        println!(
            "\nfrom a snapshot: {:.1}x faster by the API, {:.1}x by the CLI",
            medians[0].as_secs_f64() / medians[1].as_secs_f64(),
            cli_medians[0].as_secs_f64() / cli_medians[1].as_secs_f64()
        );

        parallel_start(&client, parallel).await;

        booted_bytes.sort();
        println!(
            "\ndisk bytes a new VM adds on the host: {} KiB at create, {} KiB after start + `true` (median)",
            created_bytes / 1024,
            booted_bytes.get(booted_bytes.len() / 2).copied().unwrap_or(0) / 1024
        );
        let _ = client.daemon_stop(Some(true)).await;
    });
}

/// One `vm run --rm -- true` through the API: its phases, and the disk
/// bytes of the VM once the command ran.
async fn run_once(client: &Client, snapshot: bool) -> ([Duration; 7], u64) {
    let (vm, marks, t0) = create(client, true, !snapshot).await;
    let t_exec = Instant::now();
    exec_true(client, &vm.id).await;
    let t_cmd = Instant::now();
    let after = client.vm_show(vm.id.clone()).await.expect("show");
    let t_del = Instant::now();
    client.vm_delete(vm.id.clone()).await.expect("delete");
    let t_end = Instant::now();
    let at = |prefix: &str| {
        marks
            .iter()
            .find(|(m, _)| m.starts_with(prefix))
            .map(|(_, t)| *t)
            .unwrap_or_else(|| panic!("no {prefix:?} in {marks:?}"))
    };
    let restored = marks.iter().any(|(m, _)| m.starts_with("restoring"));
    assert_eq!(restored, snapshot, "{marks:?}");
    let (disks, files, network, ready) = (
        at("creating disks"),
        at("preparing boot files"),
        at("starting the vm's network"),
        at("ready"),
    );
    let vmm = if snapshot {
        at("restoring")
    } else {
        at("starting qemu")
    };
    (
        [
            disks - t0,
            files - disks,
            network - files,
            vmm - network,
            ready - vmm,
            t_cmd - t_exec,
            t_end - t_del,
        ],
        after.disk_usage_bytes,
    )
}

/// `parallel` VMs created at once from the snapshot: wall time until all
/// answer, and host memory while they all run (the sum of their VMMs'
/// proportional set sizes, shared pages split between the sharers, beside
/// the plain sum of their resident sets).
async fn parallel_start(client: &Client, parallel: usize) {
    let before = mem_available_kib();
    let t = Instant::now();
    let creates = (0..parallel).map(|_| create(client, true, false));
    let vms: Vec<_> = futures_util::future::join_all(creates).await;
    let wall = t.elapsed();
    for (vm, _, _) in &vms {
        exec_true(client, &vm.id).await;
    }
    let (mut pss, mut rss) = (0u64, 0u64);
    for (vm, _, _) in &vms {
        let shown = client.vm_show(vm.id.clone()).await.expect("show");
        if let Some(pid) = shown.pid {
            let rollup =
                std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
            pss += field_kib(&rollup, "Pss:");
            rss += field_kib(&rollup, "Rss:");
        }
    }
    let used = before.saturating_sub(mem_available_kib());
    println!(
        "\n{parallel} VMs started at once from one snapshot: all ready in {:.2} s; their VMMs' memory: {} MiB proportional (PSS), {} MiB resident (RSS summed); host MemAvailable fell by {} MiB",
        wall.as_secs_f64(),
        pss / 1024,
        rss / 1024,
        used / 1024
    );
    for (vm, _, _) in vms {
        client.vm_delete(vm.id).await.expect("delete");
    }
}

fn field_kib(text: &str, field: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn mem_available_kib() -> u64 {
    field_kib(
        &std::fs::read_to_string("/proc/meminfo").unwrap_or_default(),
        "MemAvailable:",
    )
}

async fn exec_true(client: &Client, vm: &str) {
    let mut sub = client
        .vm_exec(ExecParams {
            vm: vm.to_string(),
            argv: vec!["true".into()],
            ..ExecParams::default()
        })
        .await
        .expect("exec");
    loop {
        match sub.next().await.expect("event").expect("decode") {
            ExecEvent::Exited { code, .. } => {
                assert_eq!(code, Some(0));
                return;
            }
            ExecEvent::Failed { message, .. } => panic!("{message}"),
            _ => {}
        }
    }
}

fn median(v: &[Duration]) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    v[v.len() / 2]
}

fn stats(v: &mut [Duration]) -> String {
    v.sort();
    let ms = |d: Duration| format!("{:.0}", d.as_secs_f64() * 1000.0);
    format!(
        "{} ms ({}-{})",
        ms(v[v.len() / 2]),
        ms(v[0]),
        ms(v[v.len() - 1])
    )
}

async fn create(
    client: &Client,
    start: bool,
    no_snapshot: bool,
) -> (banger::api::VmView, Vec<(String, Instant)>, Instant) {
    let t0 = Instant::now();
    let mut sub = client
        .vm_create(CreateParams {
            start,
            no_snapshot,
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
