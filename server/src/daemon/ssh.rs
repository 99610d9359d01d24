//! ssh into a VM: its host key (made on first use inside the guest, read
//! back through the agent), banger's key authorized for root, and the
//! known_hosts file kept exact from the database (`crate::ssh`).

use super::{Daemon, OpError, offload};
use crate::api::SshInfo;
use crate::ssh::{HOST_SUFFIX, SshFiles};

/// Runs in the guest with banger's public key as `$1`: makes the host key
/// if there is none, authorizes the key once, and prints the host key.
/// `/run/sshd` is what `sshd -i` needs when no ssh service ran this boot.
const PREPARE_SCRIPT: &str = r#"set -e
k=/etc/ssh/ssh_host_ed25519_key
if [ ! -s "$k" ]; then
	rm -f "$k.new" "$k.new.pub"
	ssh-keygen -q -t ed25519 -N '' -f "$k.new" </dev/null >/dev/null
	mv -f "$k.new.pub" "$k.pub"
	mv -f "$k.new" "$k"
fi
mkdir -p -m 0755 /run/sshd
umask 077
mkdir -p /root/.ssh
touch /root/.ssh/authorized_keys
grep -qxF "$1" /root/.ssh/authorized_keys || printf '%s\n' "$1" >>/root/.ssh/authorized_keys
cat "$k.pub"
"#;

impl Daemon {
    /// Makes a running VM reachable with ssh and says how.
    pub(crate) async fn ssh_prepare(&self, name_or_id: &str) -> Result<SshInfo, OpError> {
        let files = SshFiles::new(&self.dirs);
        let public = offload(|| files.public_key()).map_err(OpError::from_display)?;
        let (vm, _) = self.running_agent(name_or_id).await?;
        // One at a time per VM (the boot's own prepare and a first ssh
        // may meet).
        let lock = {
            let mut locks = super::lock(&self.ssh_locks);
            locks.entry(vm.id.clone()).or_default().clone()
        };
        let _guard = lock.lock().await;
        let out = self
            .guest_script(&vm.id, PREPARE_SCRIPT, &[&public], 16 << 10)
            .await
            .map_err(|(code, err)| {
                OpError::internal(format!(
                    "cannot prepare ssh in vm {:?} (exit {code:?}): {err}",
                    vm.name
                ))
            })?;
        // Guest output: accepted only as one well-formed public key.
        let text = String::from_utf8_lossy(&out);
        let key = russh::keys::PublicKey::from_openssh(text.trim())
            .and_then(|k| k.to_openssh())
            .map_err(|e| {
                OpError::internal(format!("vm {:?} reported a bad ssh host key: {e}", vm.name))
            })?;
        let key = key.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
        self.with_store(|s| s.set_ssh_host_key(&vm.id, &key))?;
        self.write_known_hosts()?;
        Ok(SshInfo {
            host: format!("{}{HOST_SUFFIX}", vm.name),
            user: "root".into(),
            identity: files.identity().display().to_string(),
            known_hosts: files.known_hosts().display().to_string(),
            host_key: key,
        })
    }

    /// Rewrites known_hosts from the database (after a key or a VM
    /// changed).
    pub(crate) fn write_known_hosts(&self) -> Result<(), OpError> {
        let files = SshFiles::new(&self.dirs);
        let entries: Vec<(String, String)> = self
            .with_store(|s| s.ssh_host_keys())?
            .into_iter()
            .map(|(name, key)| (format!("{name}{HOST_SUFFIX}"), key))
            .collect();
        offload(|| files.write_known_hosts(&entries)).map_err(OpError::from_display)
    }
}
