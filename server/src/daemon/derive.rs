//! Images made in a guest: boot a VM from a parent image, run one step in
//! it (`apt-get install` of packages, a project's setup command in its
//! workspace), and keep what the step changed in the root file system as a
//! new image (the parent plus one layer, see `image::add_derived`).
//!
//! An image is made once per key (the parent's id and the step, with the
//! contents of the files it reads): the next request with the same key gets
//! the image already made. The VM that makes it is held by a lease of the
//! daemon's own, so it goes whatever ends the step (a failure, a panic, a
//! daemon that dies: the next one removes VMs left leased).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use banger_agent::client::ExecEvent;
use banger_agent::protocol::ExecSpec;
use sha2::{Digest, Sha256};

use super::{Daemon, LeaseGuard, OpError, Progress};
use crate::api::{CreateParams, code};
use crate::image::{Image, ImageStore, Source, Step};

/// Where a setup's files go, and where it runs.
pub(crate) const SETUP_DIR: &str = "/root/repo";
/// The longest a step may run.
const STEP_TIMEOUT: Duration = Duration::from_secs(3600);
/// How many lines of a failed step's output its error shows.
const TAIL_LINES: usize = 40;
/// Limits on a setup's input files.
pub(crate) const MAX_INPUTS: usize = 256;
pub(crate) const MAX_INPUT_BYTES: usize = 64 << 20;

/// Runs in the guest after the step: nothing that belongs to one VM may
/// become part of an image every later VM boots (the machine id, ssh host
/// keys, temporary files), nor apt's downloads. (The agent is never on the
/// disk: every boot mounts its own at `/usr/sbin/banger-agent`.)
const SEAL_SCRIPT: &str = r#"set -eu
: >/etc/machine-id
rm -f /etc/ssh/ssh_host_* /var/lib/systemd/random-seed
find /tmp /var/tmp -mindepth 1 -maxdepth 1 -exec rm -rf {} +
# apt's downloads go, unless they are the project's cache (a mount).
if command -v apt-get >/dev/null 2>&1 && ! grep -q " /var/cache/apt/archives " /proc/mounts; then
	apt-get clean
	rm -rf /var/lib/apt/lists/*
fi
sync
"#;

/// Installs packages; `$@` the packages (validated names).
const PACKAGES_SCRIPT: &str = r#"set -eu
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "$@"
dpkg-query -W -f '${binary:Package}=${Version}\n' "$@" >/run/banger-resolved
"#;

/// What to make.
#[derive(Debug, Clone)]
pub(crate) struct DeriveRequest {
    /// The parent image (name or id); the default image when absent.
    pub(crate) base: Option<String>,
    /// Name of the new image.
    pub(crate) name: String,
    /// What runs in the guest.
    pub(crate) step: Step,
    /// For a setup: its input files (path in the workspace, contents),
    /// put under [`SETUP_DIR`] before it runs.
    pub(crate) files: Vec<(String, Vec<u8>)>,
    /// Outbound network for the step's VM.
    pub(crate) nat: bool,
    /// Egress rules for the step's VM.
    pub(crate) allow: Vec<String>,
    /// Virtual CPUs and memory of the step's VM (defaults when absent).
    pub(crate) vcpu: Option<u32>,
    pub(crate) memory_mib: Option<u64>,
    /// The repository whose dependency cache the step's VM mounts.
    pub(crate) cache: Option<String>,
}

/// The cache key of image `name` made by `step` over `parent`.
pub(crate) fn derive_key(parent: &str, name: &str, step: &Step) -> String {
    let mut h = Sha256::new();
    h.update(b"banger-derive-1\0");
    h.update(parent.as_bytes());
    h.update(b"\0");
    h.update(name.as_bytes());
    h.update(b"\0");
    // Serializing strings and maps cannot fail.
    h.update(serde_json::to_vec(step).expect("a step serializes"));
    crate::image::hex(&h.finalize())
}

/// The inputs of a setup, by path, as their SHA-256.
pub(crate) fn input_hashes(files: &[(String, Vec<u8>)]) -> BTreeMap<String, String> {
    files
        .iter()
        .map(|(path, data)| (path.clone(), crate::image::hex(&Sha256::digest(data))))
        .collect()
}

impl Daemon {
    /// The image `req` describes: made now (with progress) unless one with
    /// its key exists.
    pub(crate) async fn derive_image(
        self: &Arc<Self>,
        req: DeriveRequest,
        progress: &Progress,
    ) -> Result<Image, OpError> {
        crate::image::validate_name(&req.name)
            .map_err(|e| OpError::new(code::INVALID, e.to_string()))?;
        if let Step::Packages { packages, .. } = &req.step {
            if packages.is_empty() {
                return Err(OpError::new(code::INVALID, "no packages to install"));
            }
            crate::image::check_packages(packages).map_err(|e| OpError::new(code::INVALID, e))?;
        }
        let parent = self.ensure_image(req.base.as_deref(), progress).await?;
        if parent.layers().len() >= crate::disk::MAX_LAYERS {
            return Err(OpError::new(
                code::INVALID,
                format!(
                    "image {} already has {} layers, the most an image can have",
                    parent.name,
                    parent.layers().len()
                ),
            ));
        }
        let key = derive_key(&parent.id, &req.name, &req.step);
        if let Some(image) = self.images.find_key(&key).map_err(OpError::from_display)? {
            return Ok(image);
        }
        // One step at a time: a second request for the same key waits and
        // then finds the image made.
        let _one = self.derive_lock.lock().await;
        if let Some(image) = self.images.find_key(&key).map_err(OpError::from_display)? {
            return Ok(image);
        }
        let lease = LeaseGuard::hold(self)?;
        let params = CreateParams {
            name: Some(format!("image-{}", &key[..10])),
            vcpu: req.vcpu,
            memory_mib: req.memory_mib,
            disk_bytes: None,
            system_overlay_bytes: None,
            image: Some(parent.id.clone()),
            vmm: None,
            kernel: None,
            start: true,
            delete_on_failure: true,
            lease: Some(lease.token().to_string()),
            nat: req.nat,
            publish: Vec::new(),
            allow: req.allow.clone(),
            cache: req.cache.clone(),
            no_snapshot: false,
            from: None,
        };
        progress.say(&format!(
            "booting {} to make image {}",
            parent.name, req.name
        ));
        let vm = self.create_vm(params, progress).await?;
        let made = self.make_layer(&vm.id, parent, key, req, progress).await;
        // Gone before the caller hears the outcome (the lease would remove
        // it too, but later).
        if let Err(e) = self.delete_vm(&vm.id).await {
            tracing::warn!(vm = %vm.name, "cannot delete the vm that made an image: {}", e.message);
        }
        drop(lease);
        let image = made?;
        tracing::info!(image = %image.name, id = %image.id, "derived image made");
        Ok(image)
    }

    /// The step, then the VM's upper disk kept as the new image's layer.
    async fn make_layer(
        &self,
        vm: &str,
        parent: Image,
        key: String,
        req: DeriveRequest,
        progress: &Progress,
    ) -> Result<Image, OpError> {
        let resolved = self.run_step(vm, &req, progress).await?;
        progress.say("sealing the new layer");
        self.guest_script(vm, SEAL_SCRIPT, &[], 64 << 10)
            .await
            .map_err(|(_, e)| {
                OpError::internal(format!(
                    "cannot clean up the guest before keeping its layer: {e}"
                ))
            })?;
        {
            let lock = self.vm_lock(vm);
            let _guard = lock.lock().await;
            let mut record = self.refresh(self.find(vm)?)?;
            self.stop_locked(&mut record).await?;
        }
        progress.say("keeping the layer");
        let step = match req.step {
            Step::Packages { packages, .. } => Step::Packages { packages, resolved },
            other => other,
        };
        let source = Source::Derived {
            parent: parent.id.clone(),
            parent_name: parent.name.clone(),
            step,
            key,
        };
        let upper = crate::disk::OverlayRoot::path(&self.dirs.vm_state(vm));
        let store = ImageStore::new(self.images.root());
        let name = req.name;
        tokio::task::spawn_blocking(move || {
            let lock_path = store.root().join(".build.lock");
            let _lock = super::lock_exclusive(&lock_path, super::BUILD_LOCK_TIMEOUT, || {})
                .map_err(OpError::internal)?;
            crate::image::shrink_layer(&upper).map_err(OpError::from_display)?;
            crate::image::add_derived(&store, &parent, &name, &upper, source)
                .map_err(OpError::from_display)
        })
        .await
        .map_err(|e| OpError::internal(format!("image task failed: {e}")))?
    }

    /// Runs the step in the VM, its output shown as progress; returns the
    /// packages' resolved versions for a packages step.
    async fn run_step(
        &self,
        vm: &str,
        req: &DeriveRequest,
        progress: &Progress,
    ) -> Result<Vec<String>, OpError> {
        let (argv, cwd, what) = match &req.step {
            Step::Packages { packages, .. } => {
                let mut argv: Vec<String> = vec![
                    "sh".into(),
                    "-c".into(),
                    PACKAGES_SCRIPT.into(),
                    "sh".into(),
                ];
                argv.extend(packages.iter().cloned());
                (
                    argv,
                    "/".to_string(),
                    format!("installing {}", packages.join(" ")),
                )
            }
            Step::Setup { command, .. } => {
                self.put_files(vm, &req.files).await?;
                (
                    vec!["sh".into(), "-c".into(), command.clone()],
                    SETUP_DIR.to_string(),
                    format!("running setup: {command}"),
                )
            }
        };
        progress.say(&what);
        let spec = ExecSpec {
            argv,
            // A setup sees the variables its image will give commands.
            env: match &req.step {
                Step::Setup { env, .. } => env
                    .iter()
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                Step::Packages { .. } => Vec::new(),
            },
            cwd: Some(cwd),
            stdin: false,
            tty: None,
            user: None,
        };
        let (_, mut session) = self.exec(vm, spec).await?;
        let mut tail: std::collections::VecDeque<String> = Default::default();
        let mut partial = Vec::new();
        let status = tokio::time::timeout(STEP_TIMEOUT, async {
            loop {
                match session.next().await {
                    Ok(ExecEvent::Stdout(b) | ExecEvent::Stderr(b)) => {
                        partial.extend_from_slice(&b);
                        while let Some(at) = partial.iter().position(|&c| c == b'\n') {
                            let line: Vec<u8> = partial.drain(..=at).collect();
                            let line = printable(&line);
                            progress.say(&format!("  {line}"));
                            if tail.len() == TAIL_LINES {
                                tail.pop_front();
                            }
                            tail.push_back(line);
                        }
                    }
                    Ok(ExecEvent::Exited(s)) => return Ok(s),
                    Err(e) => return Err(OpError::internal(format!("{what}: {e}"))),
                }
            }
        })
        .await
        .map_err(|_| {
            OpError::internal(format!(
                "{what}: still running after {} s; it was stopped",
                STEP_TIMEOUT.as_secs()
            ))
        })??;
        if !partial.is_empty() {
            tail.push_back(printable(&partial));
        }
        if status.code != Some(0) {
            let mut message = format!(
                "{what} failed (exit {}); its output ends with:\n{}",
                status.shell_code(),
                Vec::from(tail).join("\n")
            );
            if !req.nat && req.allow.is_empty() {
                message.push_str(
                    "\n(it ran without network access: add nat = true or allow = [...] under [sandbox] in .banger.toml, or pass --nat)",
                );
            }
            return Err(OpError::new(code::CANNOT_RUN, message));
        }
        if matches!(req.step, Step::Packages { .. }) {
            let out = self
                .guest_run(
                    vm,
                    vec!["cat".into(), "/run/banger-resolved".into()],
                    Vec::new(),
                    1 << 20,
                )
                .await
                .map_err(|(_, e)| {
                    OpError::internal(format!("cannot read the installed versions: {e}"))
                })?;
            return Ok(String::from_utf8_lossy(&out)
                .lines()
                .map(printable_str)
                .filter(|l| !l.is_empty())
                .collect());
        }
        Ok(Vec::new())
    }

    /// Writes `files` under [`SETUP_DIR`] in the guest (one tar stream).
    async fn put_files(&self, vm: &str, files: &[(String, Vec<u8>)]) -> Result<(), OpError> {
        let mut archive = tar::Builder::new(Vec::new());
        for (path, data) in files {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_entry_type(tar::EntryType::Regular);
            archive
                .append_data(&mut header, path, data.as_slice())
                .map_err(|e| OpError::internal(format!("cannot pack {path}: {e}")))?;
        }
        let tarball = archive
            .into_inner()
            .map_err(|e| OpError::internal(format!("cannot pack the setup's files: {e}")))?;
        let script =
            format!("set -eu\nmkdir -p {SETUP_DIR}\ntar -x --no-same-owner -C {SETUP_DIR} -f -\n");
        self.guest_run(
            vm,
            vec!["sh".into(), "-c".into(), script],
            tarball,
            64 << 10,
        )
        .await
        .map_err(|(_, e)| {
            OpError::internal(format!("cannot put the setup's files in the guest: {e}"))
        })?;
        Ok(())
    }
}

/// A line of guest output made safe for a terminal (no control characters,
/// bounded); of a line redrawn with `\r`, the last drawing.
fn printable(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim_end_matches(['\n', '\r']);
    printable_str(text.rsplit('\r').next().unwrap_or_default())
}

fn printable_str(text: &str) -> String {
    text.chars()
        .filter(|c| *c != '\r')
        .map(|c| if c.is_control() { '?' } else { c })
        .take(500)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_changes_with_the_parent_the_command_and_the_inputs() {
        let setup = |command: &str, data: &[u8]| Step::Setup {
            command: command.into(),
            inputs: input_hashes(&[("requirements.txt".into(), data.to_vec())]),
            env: Vec::new(),
        };
        let k = derive_key(
            "p1",
            "n",
            &setup("pip install -r requirements.txt", b"pytest\n"),
        );
        assert_eq!(
            k,
            derive_key(
                "p1",
                "n",
                &setup("pip install -r requirements.txt", b"pytest\n")
            )
        );
        assert_ne!(
            k,
            derive_key(
                "p2",
                "n",
                &setup("pip install -r requirements.txt", b"pytest\n")
            )
        );
        assert_ne!(
            k,
            derive_key(
                "p1",
                "n",
                &setup("pip install -r requirements.txt ", b"pytest\n")
            )
        );
        assert_ne!(
            k,
            derive_key(
                "p1",
                "n",
                &setup("pip install -r requirements.txt", b"pytest==8\n")
            )
        );
        assert_eq!(k.len(), 64);
    }

    #[test]
    fn guest_output_is_made_printable() {
        assert_eq!(printable(b"ok \x1b[31mred\r\n"), "ok ?[31mred");
        assert_eq!(printable(b"reading 5%\rreading 100%\n"), "reading 100%");
        assert_eq!(printable(&[b'x'; 900]).len(), 500);
    }
}
