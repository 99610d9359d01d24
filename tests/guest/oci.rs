//! OCI images on real guests, from a real registry (Debian's
//! `docker-registry`, on loopback) holding images the test makes with
//! `umoci` from a busybox-only tree (Debian's busybox-static) and pushes
//! with `skopeo`: never an outside registry. Pull by tag, by digest and
//! through a multi-arch index; the image's Env, WorkingDir and User apply; a file
//! deleted in an upper layer is absent; a layer whose bytes do not match
//! its digest is refused and nothing of it is kept.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use banger::tool::{Tool, for_test};
use banger_tests::Env;

/// A registry on a free loopback port, storing in its own directory;
/// killed when dropped.
struct Registry {
    dir: tempfile::TempDir,
    addr: String,
    child: Child,
}

impl Registry {
    fn start() -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let child = for_test(Tool::DockerRegistry)
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start docker-registry");
        let started = Instant::now();
        while TcpStream::connect(&addr).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the registry did not listen"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Registry { dir, addr, child }
    }

    /// The file the registry serves for blob `digest`.
    fn blob_data(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Makes an OCI layout in `dir` whose image `img:base` has two layers (a
/// busybox tree with `bb-hello` and `/etc/deleted-later`, then that file
/// removed, plus `/etc/marker` holding `marker`), `GREETING` in its Env,
/// `/etc` as its WorkingDir and user 1000; pushes it as `repo:tag`.
fn make_and_push(dir: &Path, registry: &Registry, repo_tag: &str, marker: &str) {
    let layout = dir.join("img");
    let image = format!("{}:base", layout.display());
    let bundle = dir.join("bundle");
    let bundle2 = dir.join("bundle2");
    run(for_test(Tool::Umoci)
        .args(["init", "--layout"])
        .arg(&layout));
    run(for_test(Tool::Umoci).args(["new", "--image", &image]));
    run(for_test(Tool::Umoci)
        .args(["unpack", "--rootless", "--image", &image])
        .arg(&bundle));
    let root = bundle.join("rootfs");
    for d in ["bin", "etc", "usr/local/bin"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    let busybox = banger::tool::Tool::Busybox
        .find()
        .expect("busybox (busybox-static)");
    std::fs::copy(&busybox, root.join("bin/busybox")).unwrap();
    for applet in ["sh", "ls", "cat", "test", "pwd", "env", "id"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    std::fs::write(
        root.join("usr/local/bin/bb-hello"),
        "#!/bin/sh\necho only-in-bb \"$GREETING\"\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        root.join("usr/local/bin/bb-hello"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::fs::write(root.join("etc/deleted-later"), "gone\n").unwrap();
    run(for_test(Tool::Umoci)
        .args(["repack", "--image", &image])
        .arg(&bundle));
    run(for_test(Tool::Umoci)
        .args(["unpack", "--rootless", "--image", &image])
        .arg(&bundle2));
    std::fs::remove_file(bundle2.join("rootfs/etc/deleted-later")).unwrap();
    std::fs::write(bundle2.join("rootfs/etc/marker"), marker).unwrap();
    run(for_test(Tool::Umoci)
        .args(["repack", "--image", &image])
        .arg(&bundle2));
    run(for_test(Tool::Umoci).args([
        "config",
        "--image",
        &image,
        "--config.env",
        "GREETING=hi-from-config",
        "--config.workingdir",
        "/etc",
        "--config.user",
        "1000:1000",
    ]));
    run(for_test(Tool::Skopeo)
        .args(["copy", "-q", "--dest-tls-verify=false"])
        .arg(format!("oci:{image}"))
        .arg(format!("docker://{}/{repo_tag}", registry.addr)));
}

/// `skopeo inspect` of a pushed image, parsed.
fn inspect(registry: &Registry, repo_tag: &str) -> serde_json::Value {
    let out = run(for_test(Tool::Skopeo)
        .args(["inspect", "--tls-verify=false"])
        .arg(format!("docker://{}/{repo_tag}", registry.addr)));
    serde_json::from_str(&out).unwrap()
}

fn marker() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{}-{nanos}", std::process::id())
}

#[test]
fn pulled_images_run_with_their_env_and_layers() {
    let env = Env::new();
    env.ensure_image();
    let registry = Registry::start();
    let work = tempfile::tempdir().unwrap();
    let marker = marker();
    make_and_push(work.path(), &registry, "test/bb:1", &marker);
    let info = inspect(&registry, "test/bb:1");
    let digest = info["Digest"].as_str().unwrap().to_string();
    let name = format!("bb-{marker}");

    // By tag.
    let pulled = env.banger(&[
        "image",
        "pull",
        &format!("{}/test/bb:1", registry.addr),
        "--name",
        &name,
    ]);
    pulled.ok();
    assert!(
        pulled.stdout.starts_with(&format!("{name} ")),
        "{}",
        pulled.stdout
    );
    let shown: serde_json::Value =
        serde_json::from_str(&env.banger(&["image", "show", &name]).stdout).unwrap();
    assert_eq!(shown["kind"], "oci", "{shown}");
    assert_eq!(
        shown["manifest"]["source"]["digest"],
        digest.as_str(),
        "{shown}"
    );

    // Its program, its Env and WorkingDir; the file an upper layer deleted
    // is gone; banger's agent runs it although it has no init.
    let ran = env.banger(&[
        "vm",
        "run",
        "--rm",
        "--image",
        &name,
        "--",
        "sh",
        "-c",
        "bb-hello; pwd; id -u; cat /etc/marker; echo; test -e /etc/deleted-later && echo still-there; exit 3",
    ]);
    ran.expect_code(3);
    assert_eq!(
        ran.stdout,
        format!("only-in-bb hi-from-config\n/etc\n1000\n{marker}\n"),
        "{}",
        ran.stderr
    );
    env.assert_nothing_left();

    // From archives: an OCI layout and docker save output, as skopeo
    // writes them.
    let layout = work.path().join("img");
    for (kind, file) in [
        ("oci-archive", "bb-oci.tar"),
        ("docker-archive", "bb-docker.tar"),
    ] {
        let archive = work.path().join(file);
        run(for_test(Tool::Skopeo)
            .args(["copy", "-q"])
            .arg(format!("oci:{}:base", layout.display()))
            .arg(format!("{kind}:{}:test/bb:1", archive.display())));
        let imported = env.banger(&[
            "image",
            "import",
            archive.to_str().unwrap(),
            "--name",
            &format!("{name}-{kind}"),
        ]);
        imported.ok();
    }
    let ran = env.banger(&[
        "vm",
        "run",
        "--rm",
        "--image",
        &format!("{name}-docker-archive"),
        "--",
        "bb-hello",
    ]);
    assert_eq!(ran.stdout, "only-in-bb hi-from-config\n", "{}", ran.stderr);
    let not_an_archive = env.banger(&["image", "import", "/etc/passwd"]);
    not_an_archive.expect_code(2);
    assert!(
        not_an_archive.stderr.contains("not a readable tar archive"),
        "{}",
        not_an_archive.stderr
    );

    // By digest, and through a multi-arch index: the same layers, from
    // the cache this time.
    let by_digest = env.banger(&[
        "image",
        "pull",
        &format!("{}/test/bb@{digest}", registry.addr),
        "--name",
        &format!("{name}-d"),
    ]);
    by_digest.ok();
    assert!(
        by_digest.stderr.contains("(cached)"),
        "{}",
        by_digest.stderr
    );
    let manifest = run(for_test(Tool::Curl)
        .args([
            "-fsS",
            "-H",
            "Accept: application/vnd.oci.image.manifest.v1+json",
        ])
        .arg(format!("http://{}/v2/test/bb/manifests/1", registry.addr)));
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest,
             "size": manifest.len(), "platform": {"architecture": "arm64", "os": "linux"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest,
             "size": manifest.len(), "platform": {"architecture": "amd64", "os": "linux"}}
        ]
    });
    run(for_test(Tool::Curl)
        .args([
            "-fsS",
            "-X",
            "PUT",
            "-H",
            "Content-Type: application/vnd.oci.image.index.v1+json",
        ])
        .arg("--data-binary")
        .arg(index.to_string())
        .arg(format!(
            "http://{}/v2/test/bb/manifests/multi",
            registry.addr
        )));
    let multi = env.banger(&[
        "image",
        "pull",
        &format!("{}/test/bb:multi", registry.addr),
        "--name",
        &format!("{name}-m"),
    ]);
    multi.ok();
    let shown: serde_json::Value =
        serde_json::from_str(&env.banger(&["image", "show", &format!("{name}-m")]).stdout).unwrap();
    assert_eq!(
        shown["manifest"]["source"]["digest"],
        digest.as_str(),
        "the amd64 entry: {shown}"
    );

    for n in [
        name.clone(),
        format!("{name}-d"),
        format!("{name}-m"),
        format!("{name}-oci-archive"),
        format!("{name}-docker-archive"),
    ] {
        env.banger(&["image", "delete", &n]).ok();
    }
}

#[test]
fn a_layer_whose_bytes_do_not_match_its_digest_is_refused_and_not_kept() {
    let env = Env::new();
    env.ensure_image();
    let registry = Registry::start();
    let work = tempfile::tempdir().unwrap();
    make_and_push(work.path(), &registry, "test/bad:1", &marker());
    let info = inspect(&registry, "test/bad:1");
    let layers = info["Layers"].as_array().unwrap();
    let top = layers.last().unwrap().as_str().unwrap().to_string();
    // The registry now serves other bytes under that digest.
    let data = registry.blob_data(&top);
    let mut bytes = std::fs::read(&data).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&data, bytes).unwrap();

    let name = format!("bad-{}", std::process::id());
    let refused = env.banger(&[
        "image",
        "pull",
        &format!("{}/test/bad:1", registry.addr),
        "--name",
        &name,
    ]);
    assert_ne!(refused.code, 0, "{}", refused.stderr);
    assert!(
        refused.stderr.contains(&top),
        "names the layer: {}",
        refused.stderr
    );
    assert!(
        refused.stderr.contains("nothing of it was kept"),
        "{}",
        refused.stderr
    );
    let hex = top.strip_prefix("sha256:").unwrap();
    let cache = Env::image_dir().parent().unwrap().join("oci/blobs/sha256");
    assert!(!cache.join(hex).exists(), "the bad layer is not cached");
    let shown = env.banger(&["image", "show", &name]);
    assert_ne!(shown.code, 0, "no image was made: {}", shown.stdout);
    env.assert_nothing_left();
}
