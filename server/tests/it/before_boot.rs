//! What banger decides before any guest exists (moved from the real-guest
//! tier, where they booted nothing): bad input is refused and leaves
//! nothing, a dry run lists what would travel, the VMM choice says why.

use crate::env::{Env, make_repo};

#[test]
fn invalid_spec_is_refused_before_anything_exists() {
    let env = Env::new();
    for args in [
        &["vm", "run", "--rm", "--vcpu", "0", "--", "true"][..],
        &["vm", "run", "--rm", "--name", "Bad_Name", "--", "true"],
        &["vm", "create", "--memory", "1"],
        // More memory than any host here has: refused, not kept as `error`.
        &["vm", "create", "--name", "bigmem", "--memory", "1048576"],
        // Every flag is checked before anything exists (or boots).
        &["vm", "run", "--rm", "--mode", "bogus", "--", "true"],
        &["vm", "run", "--dry-run", "--mode", "bogus"],
        &["vm", "create", "--disk-size", "12X"],
        &["vm", "create", "--name=-dash"],
        &[
            "vm",
            "run",
            "--rm",
            "--kernel",
            "no-such-kernel",
            "--",
            "true",
        ],
        &["vm", "create", "--vmm", "kvm"],
        // VM names are DNS labels.
        &["vm", "create", "--name", "MyBox"],
        &["vm", "create", "--name", "my box"],
        &["vm", "create", "--name", "box.vm"],
        &["vm", "create", "--name=-box"],
    ] {
        let run = env.banger(args);
        run.expect_code(2);
        assert!(
            run.stderr.contains("invalid") || run.stderr.contains("no kernel named"),
            "{args:?} stderr: {}",
            run.stderr
        );
    }
    // A tracked file whose name is not UTF-8 is refused before a VM
    // exists (it used to be dropped, then deleted on the host by export).
    let odd = env.root().join("odd");
    make_repo(&odd);
    {
        use std::os::unix::ffi::OsStrExt;
        let name = std::ffi::OsStr::from_bytes(b"bad\xff\xfename");
        std::fs::write(odd.join(name), "x").unwrap();
    }
    crate::env::git(&odd, &["add", "-A"]);
    let run = env.banger(&["vm", "run", "--rm", odd.to_str().unwrap(), "--", "true"]);
    run.expect_code(2);
    assert!(run.stderr.contains("is not UTF-8"), "{}", run.stderr);
    // Not a repository: refused before a VM exists.
    let not_repo = env.root().join("plain-dir");
    std::fs::create_dir_all(&not_repo).unwrap();
    let run = env.banger(&[
        "vm",
        "run",
        "--rm",
        not_repo.to_str().unwrap(),
        "--",
        "true",
    ]);
    run.expect_code(2);
    assert!(
        run.stderr.contains("not inside a git repository"),
        "{}",
        run.stderr
    );
    env.assert_nothing_left();
}

#[test]
fn workspace_dry_run_lists_files_and_creates_nothing() {
    let env = Env::new();
    let repo = env.root().join("repo");
    make_repo(&repo);
    let run = env.banger(&["vm", "run", repo.to_str().unwrap(), "--dry-run"]);
    run.ok();
    assert_eq!(
        run.stdout,
        ".gitignore\nfile.txt\nrun.sh\nmode: tracked only\n"
    );
    assert!(
        run.stderr.contains("1 untracked file was left out")
            && run.stderr.contains("--include-untracked"),
        "{}",
        run.stderr
    );
    let run = env.banger(&[
        "vm",
        "run",
        repo.to_str().unwrap(),
        "--dry-run",
        "--include-untracked",
    ]);
    run.ok();
    assert_eq!(
        run.stdout,
        ".gitignore\nfile.txt\nrun.sh\nscratch.txt\nmode: tracked + untracked\n"
    );
    env.assert_nothing_left();
}

/// The auto choice with a firecracker binary present says which VMM and
/// why; it runs nothing, so a stand-in binary serves.
#[test]
fn firecracker_auto_choice_is_explained() {
    let bin = tempfile::tempdir().unwrap();
    let firecracker = bin.path().join("firecracker");
    std::fs::write(&firecracker, "#!/bin/sh\necho 'Firecracker v1.16.1'\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&firecracker, std::fs::Permissions::from_mode(0o755)).unwrap();
    let env = Env::new().with_var("BANGER_FIRECRACKER", firecracker.to_str().unwrap());
    env.banger(&["daemon", "start"]).ok();
    let info = env.banger(&["daemon", "status"]);
    info.ok();
    let v: serde_json::Value = serde_json::from_str(&info.stdout).unwrap();
    let vmm = v["vmm"].as_str().unwrap();
    let host_runs_stock_guests =
        banger::accel::choose(&banger::accel::probe()).accel == banger::accel::Accel::Kvm;
    if host_runs_stock_guests {
        assert!(vmm.starts_with("firecracker (auto:"), "{vmm}");
    } else {
        assert!(
            vmm.starts_with("qemu (auto: firecracker needs KVM"),
            "{vmm}"
        );
    }
}
