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
fn make_and_push(dir: &Path, registry: &str, repo_tag: &str, marker: &str) {
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
        .arg(format!("docker://{registry}/{repo_tag}")));
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
    make_and_push(work.path(), &registry.addr, "test/bb:1", &marker);
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
    make_and_push(work.path(), &registry.addr, "test/bad:1", &marker());
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

/// Writes an OCI layout at `dir` whose one (uncompressed) layer is the
/// root tree tarball `rootfs` and tags it `tag`.
fn layout_from_tarball(dir: &Path, rootfs: &Path, tag: &str) {
    use sha2::Digest;
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8]| -> (String, usize) {
        let hex = format!("{:x}", sha2::Sha256::digest(bytes));
        std::fs::write(blobs.join(&hex), bytes).unwrap();
        (format!("sha256:{hex}"), bytes.len())
    };
    let layer = std::fs::read(rootfs).unwrap();
    let (layer_digest, layer_size) = put(&layer);
    drop(layer);
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]}
    });
    let (config_digest, config_size) = put(config.to_string().as_bytes());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer_size}]
    });
    let (manifest_digest, manifest_size) = put(manifest.to_string().as_bytes());
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_digest,
                       "size": manifest_size, "annotations": {"org.opencontainers.image.ref.name": tag}}]
    });
    std::fs::write(dir.join("index.json"), index.to_string()).unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
}

/// A repository with `.devcontainer/devcontainer.json` naming an image of
/// the test registry (a Debian slim tree from mmdebstrap, with git): its
/// image is pulled, its containerEnv reaches the setup and later commands,
/// its postCreateCommand is the cached setup (made again when an input
/// changes), and the fields banger does not carry out are named.
#[test]
fn a_devcontainer_image_env_and_post_create_command_make_the_sandbox() {
    let env = Env::new();
    env.ensure_image();
    let registry = Registry::start();
    let work = tempfile::tempdir().unwrap();
    let tarball = work.path().join("rootfs.tar");
    run(for_test(Tool::Mmdebstrap)
        .args(["--quiet", "--variant=minbase", "--include=git", "bookworm"])
        .arg(&tarball));
    let layout = work.path().join("layout");
    layout_from_tarball(&layout, &tarball, "dev");
    run(for_test(Tool::Skopeo)
        .args(["copy", "-q", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:dev", layout.display()))
        .arg(format!("docker://{}/test/deb:1", registry.addr)));

    let repo = env.root().join("dc-project");
    banger_tests::make_repo(&repo);
    let marker = marker();
    std::fs::write(repo.join("deps.txt"), format!("v1 {marker}\n")).unwrap();
    std::fs::create_dir(repo.join(".devcontainer")).unwrap();
    std::fs::write(
        repo.join(".devcontainer/devcontainer.json"),
        format!(
            r#"{{
  // JSON with comments, as editors write it
  "image": "{}/test/deb:1",
  "containerEnv": {{"APP_MODE": "dc"}},
  "postCreateCommand": "cp deps.txt /opt/deps-installed && echo \"$APP_MODE\" > /opt/mode",
  "features": {{"ghcr.io/devcontainers/features/node:1": {{}}}},
}}"#,
            registry.addr
        ),
    )
    .unwrap();
    std::fs::write(
        repo.join(".banger.toml"),
        "[sandbox]\nsetup-inputs = [\"deps.txt\"]\n",
    )
    .unwrap();
    banger_tests::git(&repo, &["add", "."]);
    banger_tests::git(&repo, &["commit", "-q", "-m", "devcontainer"]);
    let path = repo.to_str().unwrap();
    let script = "cat /opt/deps-installed /opt/mode; echo \"$APP_MODE\"; pwd";

    let first = env.banger(&["vm", "run", "--rm", path, "--", "sh", "-c", script]);
    first.ok();
    assert_eq!(
        first.stdout,
        format!("v1 {marker}\ndc\ndc\n/root/repo\n"),
        "{}",
        first.stderr
    );
    assert!(
        first.stderr.contains("does not carry out features"),
        "{}",
        first.stderr
    );
    assert!(
        first.stderr.contains("running setup: cp deps.txt"),
        "{}",
        first.stderr
    );
    let second = env.banger(&["vm", "run", "--rm", path, "--", "sh", "-c", script]);
    second.ok();
    assert_eq!(second.stdout, first.stdout);
    assert!(
        !second.stderr.contains("running setup"),
        "{}",
        second.stderr
    );
    env.assert_nothing_left();

    // banger lsp makes its sandbox from the same definition (a trusted
    // workspace), from the images made above.
    let mut lsp = banger_tests::lsp::LspClient::start(env.cmd(&[]));
    let canonical = repo.canonicalize().unwrap();
    crate::lsp::initialize(&mut lsp, &canonical);
    let (code, out) = crate::lsp::exec(&mut lsp, &["sh", "-c", script]);
    assert_eq!((code, out.as_str()), (0, first.stdout.as_str()));
    lsp.shutdown();
    env.banger(&["vm", "delete", "dc-project"]).ok();
    env.assert_nothing_left();

    // Clean up this test's images: the project's, and the pulled one.
    let list: serde_json::Value =
        serde_json::from_str(&env.banger(&["image", "list", "--json"]).stdout).unwrap();
    for image in list.as_array().unwrap() {
        let source = &image["manifest"]["source"];
        let ours = source["step"]["inputs"].to_string().contains("deps.txt")
            && image["name"] == "setup-dc-project";
        if ours {
            env.banger(&["image", "delete", image["id"].as_str().unwrap()])
                .ok();
        }
    }
    env.banger(&["image", "delete", "deb-1"]).ok();
}

/// A registry inside a network namespace this test makes (a veth pair to
/// the host), so a guest reaches it through its NAT like any server;
/// removed when dropped.
struct NamespacedRegistry {
    ns: String,
    host_veth: String,
    addr: String,
    dir: tempfile::TempDir,
    child: Child,
}

impl NamespacedRegistry {
    fn start() -> NamespacedRegistry {
        let id = std::process::id() % 200 + 20;
        let ns = format!("bgreg{id}");
        let host_veth = format!("bgrh{id}");
        let (host_ip, ns_ip) = (format!("10.251.{id}.1"), format!("10.251.{id}.2"));
        let ip = |args: &[&str]| run(for_test(Tool::Ip).args(args));
        let _ = for_test(Tool::Ip).args(["netns", "del", &ns]).output();
        let _ = for_test(Tool::Ip)
            .args(["link", "del", &host_veth])
            .output();
        ip(&["netns", "add", &ns]);
        ip(&[
            "link", "add", &host_veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ]);
        ip(&["addr", "add", &format!("{host_ip}/24"), "dev", &host_veth]);
        ip(&["link", "set", &host_veth, "up"]);
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{ns_ip}/24"),
            "dev",
            "eth0",
        ]);
        ip(&["-n", &ns, "link", "set", "eth0", "up"]);
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        let dir = tempfile::tempdir().unwrap();
        let addr = format!("{ns_ip}:5000");
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let registry = Tool::DockerRegistry.find().expect("docker-registry");
        let child = for_test(Tool::Ip)
            .args(["netns", "exec", &ns])
            .arg(registry)
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start docker-registry in the namespace");
        let started = Instant::now();
        while TcpStream::connect(&addr).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the registry did not listen"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        NamespacedRegistry {
            ns,
            host_veth,
            addr,
            dir,
            child,
        }
    }
}

impl Drop for NamespacedRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = for_test(Tool::Ip).args(["netns", "del", &self.ns]).output();
        let _ = for_test(Tool::Ip)
            .args(["link", "del", &self.host_veth])
            .output();
        let _ = &self.dir;
    }
}

/// Docker's engine from Debian (`docker.io`) in an image banger makes
/// (`image build --packages docker.io`) runs a container from an image
/// the guest pulls from a registry (in a network namespace the test
/// makes, reached through the VM's NAT): the guest's kernel modules,
/// cgroups and a renamable overlay root are what the engine needs.
#[test]
fn docker_in_the_guest_runs_a_container_pulled_from_a_registry() {
    let env = Env::new();
    env.ensure_image();
    let registry = NamespacedRegistry::start();
    let work = tempfile::tempdir().unwrap();
    let marker = marker();
    make_and_push(work.path(), &registry.addr, "test/bb:1", &marker);
    // Kept across runs like the default image (made once per parent).
    env.banger(&[
        "image",
        "build",
        "banger-test-docker",
        "--packages",
        "docker.io",
    ])
    .ok();
    env.banger(&[
        "vm",
        "create",
        "--name",
        "docker",
        "--nat",
        "--image",
        "banger-test-docker",
    ])
    .ok();
    let script = format!(
        "set -e; mkdir -p /etc/docker; echo '{{\"insecure-registries\": [\"{0}\"]}}' >/etc/docker/daemon.json; \
         systemctl restart docker; for i in $(seq 120); do docker info >/dev/null 2>&1 && break; sleep 1; done; \
         docker run --rm {0}/test/bb:1 sh -c 'bb-hello; cat /etc/marker'",
        registry.addr
    );
    let ran = env.banger(&["vm", "exec", "docker", "--", "sh", "-c", &script]);
    assert_eq!(
        ran.stdout,
        format!("only-in-bb hi-from-config\n{marker}"),
        "{}",
        ran.stderr
    );
    env.banger(&["vm", "delete", "docker"]).ok();
    env.assert_nothing_left();
}
