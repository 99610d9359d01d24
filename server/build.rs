//! Stamps the build so the CLI can tell a daemon left running by an older
//! build (and restart it: VMs survive daemon restarts).

fn main() {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    println!(
        "cargo:rustc-env=BANGER_BUILD_ID={}-{stamp}",
        env!("CARGO_PKG_VERSION")
    );
}
