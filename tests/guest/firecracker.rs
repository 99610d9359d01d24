//! The Firecracker tier: runs only where a real `firecracker` binary exists
//! (`scripts/test.sh` filters it out, and says so, elsewhere). On a host
//! whose KVM runs stock guests, a full `vm run` must pass the exit code
//! through; on a PVM host (KVM that cannot run a stock kernel) banger must
//! start and configure the VMM, fail clearly and leave nothing behind.

use std::path::PathBuf;
use std::time::Duration;

use banger::accel::{Accel, AccelChoice};
use banger::disk::{Drive, DriveRole};
use banger::image::{DEFAULT_IMAGE, ImageStore};
use banger::process::ProcessIdentity;
use banger::vmm::api_socket;
use banger::vmm::firecracker::{self, Firecracker};
use banger::vmm::{BootFiles, LaunchPlan, Vmm};
use banger_tests::Env;

fn firecracker_binary() -> PathBuf {
    firecracker::locate().expect(
        "the firecracker tier runs only with a firecracker binary (BANGER_FIRECRACKER or PATH)",
    )
}

fn host_runs_stock_guests() -> bool {
    banger::accel::choose(&banger::accel::probe()).accel == Accel::Kvm
}

fn instance_state(runtime_dir: &std::path::Path) -> String {
    let resp = api_socket::request(
        &runtime_dir.join("firecracker.sock"),
        "GET",
        "/",
        None,
        Duration::from_secs(5),
    )
    .expect("GET /");
    let v: serde_json::Value = serde_json::from_str(&resp.body).expect("instance info");
    v["state"].as_str().unwrap_or_default().to_string()
}

#[test]
fn firecracker_driver_spawns_configures_pauses_and_cleans_up() {
    let env = Env::new();
    env.ensure_image();
    let store = ImageStore::new(Env::image_dir());
    let image = store.find(DEFAULT_IMAGE).unwrap().expect("image built");
    let vm_dir = env.root().join("vm");
    let runtime_dir = env.root().join("rt");
    std::fs::create_dir_all(&vm_dir).unwrap();
    std::fs::create_dir_all(&runtime_dir).unwrap();
    banger::disk::make_ext4(&vm_dir.join("overlay.ext4"), 1 << 30, "overlay", None).unwrap();
    banger::disk::make_ext4(&vm_dir.join("work.ext4"), 1 << 30, "work", None).unwrap();
    let plan = LaunchPlan {
        name: "fc-driver-test".into(),
        vcpu: 1,
        memory_mib: 512,
        boot: BootFiles {
            pvh: false,
            bzimage: image.kernel(),
            vmlinux: image.vmlinux(),
            initrd: image.initrd(),
            hz: image.manifest.kernel_hz,
        },
        kernel_args: vec!["banger.root=overlay".into()],
        drives: vec![
            Drive {
                role: DriveRole::Rootfs,
                path: image.rootfs(),
                read_only: true,
            },
            Drive {
                role: DriveRole::Overlay,
                path: vm_dir.join("overlay.ext4"),
                read_only: false,
            },
            Drive {
                role: DriveRole::Work,
                path: vm_dir.join("work.ext4"),
                read_only: false,
            },
        ],
        accel: AccelChoice {
            accel: Accel::Kvm,
            reason: "test".into(),
        },
        tsc_khz: None,
        runtime_dir: runtime_dir.clone(),
        console_log: vm_dir.join("console.log"),
        network: None,
        mac: banger::net::GUEST_MAC.into(),
        memory: banger::vmm::Memory::Anonymous,
    };
    let _ = firecracker_binary();
    let driver = Firecracker::from_env();
    let id: ProcessIdentity = driver.launch(&plan).expect("spawn, configure and start");
    assert!(id.is_alive());
    // Every configuration request was accepted and the instance started
    // (on a PVM host it reports Running even though the guest is silent).
    assert_eq!(instance_state(&runtime_dir), "Running");
    Firecracker::set_paused(&runtime_dir, true).expect("pause");
    assert_eq!(instance_state(&runtime_dir), "Paused");
    Firecracker::set_paused(&runtime_dir, false).expect("resume");
    assert_eq!(instance_state(&runtime_dir), "Running");
    assert!(id.kill_and_wait(Duration::from_secs(5)), "killed");
    assert!(!id.is_alive());
    let log = std::fs::read_to_string(vm_dir.join("firecracker.log")).unwrap();
    assert!(
        log.contains("InstanceStart"),
        "logger went elsewhere: {log}"
    );
}

#[test]
fn firecracker_vm_run_passes_exit_code_or_fails_clearly_leaving_nothing() {
    let _ = firecracker_binary();
    let env = Env::new()
        .allowing_cold_fallback()
        .with_var("BANGER_BOOT_TIMEOUT", "15");
    let run = env.banger(&[
        "vm",
        "run",
        "--vmm",
        "firecracker",
        "--rm",
        "--",
        "sh",
        "-c",
        "exit 42",
    ]);
    if host_runs_stock_guests() {
        run.expect_code(42);
    } else {
        run.expect_code(125);
        assert!(
            run.stderr
                .contains("guest did not become ready within 15 s")
                || run
                    .stderr
                    .contains("guest did not become ready: the VM stopped after"),
            "{}",
            run.stderr
        );
        assert!(
            run.stderr.contains("kvm_pvm cannot run this kernel"),
            "{}",
            run.stderr
        );
    }
    env.assert_nothing_left();
}

#[test]
fn firecracker_vms_restore_the_images_snapshot_or_fall_back_clearly() {
    let _ = firecracker_binary();
    let env = Env::new()
        .with_own_cache()
        .allowing_cold_fallback()
        .with_var("BANGER_BOOT_TIMEOUT", "15");
    let first = env.banger(&["vm", "create", "--vmm", "firecracker", "--name", "fc-a"]);
    if !host_runs_stock_guests() {
        // The template cannot boot here: the restore gives way to a cold
        // boot, which fails the same way, and both say so.
        assert_ne!(first.code, 0, "{}", first.stderr);
        assert!(first.stderr.contains("booting cold: "), "{}", first.stderr);
        env.assert_nothing_left();
        return;
    }
    first.ok();
    env.banger(&["vm", "create", "--vmm", "firecracker", "--name", "fc-b"])
        .ok();
    let from = |vm: &str| env.show(vm)["restored_from"].clone();
    assert!(from("fc-a").is_string(), "fc-a was not restored");
    assert_eq!(from("fc-a"), from("fc-b"));
    for vm in ["fc-a", "fc-b"] {
        let run = env.banger(&["vm", "exec", vm, "--", "hostname"]);
        run.ok();
        assert_eq!(run.stdout.trim(), vm);
    }
    env.banger(&["vm", "delete", "fc-a", "fc-b"]).ok();
    env.assert_nothing_left();
}
