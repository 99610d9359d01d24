//! Host tests of the `banger` binary that need no guest: installing
//! Firecracker from a (local) release server, `banger doctor`, what is
//! decided before a guest exists (`before_boot`), the lifecycle verbs that
//! need no guest (`lifecycle`), and the daemon's VM lifecycle decisions
//! through the host-process VMM test double (`fake_vmm`), and each VM's
//! network through the same double (`network`).
#![allow(clippy::disallowed_methods)] // tests drive banger by spawning it

mod before_boot;
mod env;
mod fake_vmm;
mod lifecycle;
mod network;
mod prune;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;

use sha2::Digest;

/// Serves fixed files over HTTP on 127.0.0.1 until the test ends.
fn serve(files: HashMap<String, Vec<u8>>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(64) {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request = String::new();
            reader.read_line(&mut request).unwrap();
            let path = request.split_whitespace().nth(1).unwrap_or("/").to_string();
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap() > 2 {
                line.clear();
            }
            match files.get(&path) {
                Some(body) => {
                    write!(
                        stream,
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    )
                    .unwrap();
                    stream.write_all(body).unwrap();
                }
                None => {
                    write!(
                        stream,
                        "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    )
                    .unwrap();
                }
            }
        }
    });
    format!("http://{addr}")
}

/// A release archive shaped like Firecracker's, with stand-in programs.
fn release_archive(version: &str) -> Vec<u8> {
    let arch = std::env::consts::ARCH;
    let dir = tempfile::tempdir().unwrap();
    let rel = dir.path().join(format!("release-v{version}-{arch}"));
    std::fs::create_dir(&rel).unwrap();
    for program in ["firecracker", "jailer"] {
        let p = rel.join(format!("{program}-v{version}-{arch}"));
        std::fs::write(&p, format!("#!/bin/sh\necho \"{program} v{version}\"\n")).unwrap();
    }
    let tgz = dir.path().join("out.tgz");
    let ok = Command::new("tar")
        .arg("-czf")
        .arg(&tgz)
        .arg("-C")
        .arg(dir.path())
        .arg(format!("release-v{version}-{arch}"))
        .status()
        .unwrap();
    assert!(ok.success());
    std::fs::read(tgz).unwrap()
}

fn banger(data: &Path, base: &str, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_banger"))
        .args(args)
        .env("XDG_DATA_HOME", data)
        .env("BANGER_FIRECRACKER_RELEASES", base)
        .output()
        .unwrap()
}

fn release_files(
    version: &str,
    archive: Vec<u8>,
    published_sha: String,
) -> HashMap<String, Vec<u8>> {
    let name = format!("firecracker-v{version}-{}.tgz", std::env::consts::ARCH);
    let mut files = HashMap::new();
    files.insert(
        format!("/v{version}/{name}.sha256.txt"),
        format!("{published_sha}  {name}\n").into_bytes(),
    );
    files.insert(format!("/v{version}/{name}"), archive);
    files
}

#[test]
fn install_firecracker_checks_the_published_sha256() {
    let archive = release_archive("9.9.9");
    let sha = format!("{:x}", sha2::Sha256::digest(&archive));
    let base = serve(release_files("9.9.9", archive, sha.clone()));
    let data = tempfile::tempdir().unwrap();
    let out = banger(
        data.path(),
        &base,
        &["system", "install-firecracker", "--version", "9.9.9"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bin = data.path().join("banger/bin");
    for program in ["firecracker", "jailer"] {
        let run = Command::new(bin.join(program)).output().unwrap();
        assert_eq!(
            String::from_utf8_lossy(&run.stdout),
            format!("{program} v9.9.9\n")
        );
    }
    assert!(String::from_utf8_lossy(&out.stderr).contains(&sha));
}

#[test]
fn a_bad_checksum_installs_nothing() {
    let archive = release_archive("9.9.8");
    let base = serve(release_files("9.9.8", archive, "0".repeat(64)));
    let data = tempfile::tempdir().unwrap();
    let out = banger(
        data.path(),
        &base,
        &["system", "install-firecracker", "--version", "9.9.8"],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("checksum mismatch") && err.contains("nothing was installed"),
        "{err}"
    );
    let bin = data.path().join("banger/bin");
    let left: Vec<_> = std::fs::read_dir(&bin)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn a_missing_release_is_a_clear_error() {
    let base = serve(HashMap::new());
    let data = tempfile::tempdir().unwrap();
    let out = banger(
        data.path(),
        &base,
        &["system", "install-firecracker", "--version", "0.0.1"],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot download") && err.contains("404"),
        "{err}"
    );
}

#[test]
fn doctor_reports_accel_and_vmm_with_reasons() {
    let home = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_banger"))
        .arg("doctor")
        .env("XDG_STATE_HOME", home.path().join("state"))
        .env("XDG_RUNTIME_DIR", home.path().join("run"))
        .env("XDG_DATA_HOME", home.path().join("data"))
        .env_remove("BANGER_FIRECRACKER")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("ok   qemu ") || l.starts_with("FAIL qemu ")),
        "{text}"
    );
    let accel = text
        .lines()
        .find(|l| l.contains(" accel "))
        .expect("accel line");
    assert!(
        accel.contains("kvm (") || accel.contains("tcg ("),
        "{accel}"
    );
    let vmm = text
        .lines()
        .find(|l| l.contains(" vmm "))
        .expect("vmm line");
    assert!(vmm.contains("(auto: "), "{vmm}");
    // A fresh install has no database: that is fine, not a failure.
    assert!(
        text.contains("will be created on first daemon start"),
        "{text}"
    );
}

/// A minimal x86-64 kernel-shaped ELF (one PT_LOAD at the kernel's base).
fn kernel_elf() -> Vec<u8> {
    let mut v = vec![0u8; 0x40 + 0x38];
    v[..4].copy_from_slice(b"\x7fELF");
    v[4] = 2;
    v[16..18].copy_from_slice(&2u16.to_le_bytes());
    v[18..20].copy_from_slice(&62u16.to_le_bytes());
    v[32..40].copy_from_slice(&0x40u64.to_le_bytes());
    v[54..56].copy_from_slice(&0x38u16.to_le_bytes());
    v[56..58].copy_from_slice(&1u16.to_le_bytes());
    v[0x40..0x44].copy_from_slice(&1u32.to_le_bytes());
    v[0x50..0x58].copy_from_slice(&0xffff_ffff_8100_0000u64.to_le_bytes());
    v
}

#[test]
fn kernel_pull_checks_the_sha256_and_imports() {
    let kernel = kernel_elf();
    let sha = format!("{:x}", sha2::Sha256::digest(&kernel));
    let mut files = HashMap::new();
    files.insert("/vmlinux-pvm".to_string(), kernel);
    let base = serve(files);
    let home = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_banger"))
            .args(args)
            .env("XDG_STATE_HOME", home.path().join("state"))
            .env("XDG_RUNTIME_DIR", home.path().join("run"))
            .env("XDG_CACHE_HOME", home.path().join("cache"))
            .output()
            .unwrap()
    };
    let url = format!("{base}/vmlinux-pvm");
    let bad = run(&[
        "kernel",
        "pull",
        &url,
        "--sha256",
        &"0".repeat(64),
        "--name",
        "bad",
    ]);
    assert_eq!(
        bad.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    assert!(String::from_utf8_lossy(&bad.stderr).contains("checksum mismatch"));
    let good = run(&[
        "kernel", "pull", &url, "--sha256", &sha, "--name", "pvm-test", "--pvm",
    ]);
    assert!(
        good.status.success(),
        "{}",
        String::from_utf8_lossy(&good.stderr)
    );
    let list = run(&["kernel", "list", "--json"]);
    let kernels: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    let names: Vec<&str> = kernels
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["pvm-test"], "the bad pull must add nothing");
    assert_eq!(kernels[0]["pvm"], true);
    assert_eq!(kernels[0]["id"], sha);
    run(&["daemon", "stop"]);
}
