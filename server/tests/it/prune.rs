//! `banger system prune` against a real daemon, store and cache laid out on
//! disk: what nothing can use goes, everything something names stays.

use std::collections::BTreeSet;
use std::path::Path;

use banger::image::Source;

use crate::env::Env;

fn debian() -> Source {
    Source::Debian {
        recipe: banger::image::default_recipe(),
        packages: Vec::new(),
    }
}

/// A project dependency cache directory as the daemon makes them.
fn add_cache(cache_root: &Path, name: &str, repo: &Path) {
    let dir = cache_root.join("projects").join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("cache.ext4"), vec![7u8; 8192]).unwrap();
    std::fs::write(
        dir.join("meta.json"),
        serde_json::json!({ "repo": repo, "created_at": 1 }).to_string(),
    )
    .unwrap();
}

/// `(kind, name)` of each item of `system prune --dry-run --json`.
fn planned(env: &Env) -> BTreeSet<(String, String)> {
    let run = env.banger(&["system", "prune", "--dry-run", "--json"]);
    run.ok();
    let items: Vec<serde_json::Value> = serde_json::from_str(&run.stdout).unwrap();
    items
        .iter()
        .map(|i| {
            (
                i["kind"].as_str().unwrap().to_string(),
                i["name"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn pair(kind: &str, name: &str) -> (String, String) {
    (kind.to_string(), name.to_string())
}

#[test]
fn prune_removes_only_what_nothing_can_use() {
    let env = Env::new()
        .with_var("BANGER_TEST_VMM", "fake")
        .with_var("BANGER_TEST_VMM_BOOT_MS", "0");
    env.fake_image();
    let cache = env.root().join("cache/banger");
    let newest = env
        .banger(&["image", "show", "debian-bookworm"])
        .stdout
        .clone();
    let newest: serde_json::Value = serde_json::from_str(&newest).unwrap();
    let newest = newest["id"].as_str().unwrap().to_string();

    // Older builds of the default image: one nothing names, one a VM was
    // made from, one the config names.
    let old = env.add_image("debian-bookworm", 100, debian());
    let by_vm = env.add_image("debian-bookworm", 200, debian());
    let by_config = env.add_image("debian-bookworm", 300, debian());
    std::fs::create_dir_all(env.root().join("config/banger")).unwrap();
    std::fs::write(
        env.root().join("config/banger/config.toml"),
        format!("[vm_defaults]\nimage = \"{}\"\n", &by_config[..12]),
    )
    .unwrap();
    env.banger(&[
        "vm",
        "create",
        "--name",
        "pinned",
        "--image",
        &by_vm,
        "--no-start",
    ])
    .ok();
    // One a snapshot of a running VM was taken on (its record, as `vm
    // snapshot` writes it; the fake VMM cannot make one).
    let by_snapshot = env.add_image("debian-bookworm", 250, debian());
    let snap = env.state_dir().join("snapshots/keep@latest");
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::write(
        snap.join("snapshot.json"),
        serde_json::json!({
            "name": "keep", "tag": "latest", "vm_id": "0".repeat(32),
            "image_id": by_snapshot, "image_name": "debian-bookworm", "vmm": "qemu",
            "spec": banger::spec::VmSpec::default(), "kernel_id": null, "key": "k",
            "workspace": null, "tooling": null, "created_at": 1,
        })
        .to_string(),
    )
    .unwrap();
    let listed: Vec<serde_json::Value> =
        serde_json::from_str(&env.banger(&["vm", "snapshot", "list", "--json"]).stdout).unwrap();
    assert_eq!(
        listed.len(),
        1,
        "the daemon reads the snapshot record: {listed:?}"
    );
    let refused = env.banger(&["image", "delete", &by_snapshot]);
    refused.expect_code(1);
    assert!(
        refused.stderr.contains("is used by snapshot keep:latest"),
        "{}",
        refused.stderr
    );
    // The old image's snapshots, and snapshots of an image long gone.
    std::fs::create_dir_all(cache.join("snapshots").join(&old).join("k1")).unwrap();
    std::fs::write(cache.join("snapshots").join(&old).join("k1/memory"), "m").unwrap();
    let gone = "ab".repeat(32);
    std::fs::create_dir_all(cache.join("snapshots").join(&gone).join("k1")).unwrap();
    // An OCI image made from one layer; a layer of nothing.
    let used_layer = "01".repeat(32);
    let stray_layer = "02".repeat(32);
    let oci = env.add_image(
        "python-3.12-slim",
        400,
        Source::Oci {
            reference: "localhost:5000/python:3.12-slim".into(),
            digest: format!("sha256:{}", "03".repeat(32)),
            layers: vec![format!("sha256:{used_layer}")],
        },
    );
    let blobs = cache.join("oci/blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    std::fs::write(blobs.join(&used_layer), vec![1u8; 4096]).unwrap();
    std::fs::write(blobs.join(&stray_layer), vec![2u8; 4096]).unwrap();
    // Dependency caches: of a repository that is gone, and of one that is
    // here.
    add_cache(&cache, "gone-0a1b2c", &env.root().join("no-such-repo"));
    add_cache(&cache, "here-0a1b2c", env.root());

    // A config that does not parse may name an image: nothing goes.
    let config = env.root().join("config/banger/config.toml");
    let good = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, "[vm_defaults\n").unwrap();
    let broken = env.banger(&["system", "prune", "-f"]);
    broken.expect_code(2);
    assert!(broken.stderr.contains("config.toml"), "{}", broken.stderr);
    assert!(env.image_dir().join(&old).exists());
    std::fs::write(&config, good).unwrap();

    // Without a terminal it asks for -f, and removes nothing.
    let refused = env.banger(&["system", "prune"]);
    refused.expect_code(2);
    assert!(
        refused
            .stderr
            .contains("stdin is not a terminal, so confirm with: banger system prune -f"),
        "{}",
        refused.stderr
    );
    assert!(
        refused
            .stderr
            .contains("1 image, 1 snapshot dir, 1 cache, 1 layer")
    );
    assert!(env.image_dir().join(&old).exists());

    let want: BTreeSet<_> = [
        pair("image", &format!("debian-bookworm ({})", &old[..12])),
        pair("image-snapshots", &gone[..12]),
        pair("cache", "gone-0a1b2c"),
        pair("layer", &format!("sha256:{stray_layer}")),
    ]
    .into();
    assert_eq!(planned(&env), want);

    let run = env.banger(&["system", "prune", "-f"]);
    run.ok();
    // The table of what goes, then what was done.
    assert!(run.stdout.starts_with("KIND "), "{}", run.stdout);
    assert!(
        run.stdout
            .lines()
            .last()
            .unwrap_or_default()
            .starts_with("removed 1 image, 1 snapshot dir, 1 cache, 1 layer: freed "),
        "{}",
        run.stdout
    );
    assert!(!env.image_dir().join(&old).exists());
    assert!(!cache.join("snapshots").join(&old).exists());
    assert!(!cache.join("snapshots").join(&gone).exists());
    assert!(!cache.join("projects/gone-0a1b2c").exists());
    assert!(!blobs.join(&stray_layer).exists());
    for kept in [&newest, &by_vm, &by_snapshot, &by_config, &oci] {
        assert!(env.image_dir().join(kept).exists(), "{kept} was removed");
    }
    assert!(cache.join("projects/here-0a1b2c/cache.ext4").exists());
    assert!(blobs.join(&used_layer).exists());
    assert!(planned(&env).is_empty(), "a second prune finds nothing");

    // While a pull holds the layer store, its layers stay.
    std::fs::write(blobs.join(&stray_layer), vec![2u8; 4096]).unwrap();
    let held = std::fs::File::create(blobs.parent().unwrap().join(".lock")).unwrap();
    let held = nix::fcntl::Flock::lock(held, nix::fcntl::FlockArg::LockShared).unwrap();
    let kept = env.banger(&["system", "prune", "-f"]);
    kept.ok();
    assert!(
        kept.stderr.contains("1 of 1 were not removed"),
        "{}",
        kept.stderr
    );
    assert!(blobs.join(&stray_layer).exists());
    drop(held);
    env.banger(&["system", "prune", "-f"]).ok();
    assert!(!blobs.join(&stray_layer).exists());

    // Once its VM is deleted, the image it pinned goes too.
    env.banger(&["image", "delete", &by_vm]).expect_code(1);
    env.banger(&["vm", "delete", "pinned"]).ok();
    assert_eq!(
        planned(&env),
        [pair(
            "image",
            &format!("debian-bookworm ({})", &by_vm[..12])
        )]
        .into()
    );
    env.banger(&["system", "prune", "-f"]).ok();
    assert!(!env.image_dir().join(&by_vm).exists());
    env.assert_nothing_left();
}
