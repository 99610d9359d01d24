//! How an image build gets root-owned files: as root, or as a normal user
//! through a user namespace over the user's subordinate id range (read
//! from `/etc/subuid` and `/etc/subgid`).

use std::fs;
use std::process::Command;

use super::ImageError;
use crate::tool::{self, Tool};

/// Subordinate ids needed for a Debian tree (uids/gids 0..65535).
pub(super) const SUBID_COUNT: u64 = 65536;

/// How the build gets root-owned files without being root on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BuildMode {
    /// Running as root: `mmdebstrap --mode=root`, plain `mkfs.ext4`.
    Root,
    /// A normal user with subordinate ids: `mmdebstrap --mode=unshare`, and
    /// the tree read under the same mapping.
    Unshare {
        /// First subordinate uid (inner uid 0).
        uid: u64,
        /// First subordinate gid (inner gid 0).
        gid: u64,
    },
}

impl BuildMode {
    pub(super) fn detect() -> Result<BuildMode, ImageError> {
        let status = fs::read_to_string("/proc/self/status")
            .map_err(|e| ImageError::io("cannot read /proc/self/status", e))?;
        let (uid, euid) = parse_status_uids(&status).ok_or_else(|| {
            ImageError::Privileges(
                "cannot tell who this process runs as (/proc/self/status has no Uid: line)".into(),
            )
        })?;
        if euid == 0 {
            return Ok(BuildMode::Root);
        }
        let read = |path: &str| fs::read_to_string(path).unwrap_or_default();
        let user = user_name(&read("/etc/passwd"), uid).unwrap_or_else(|| uid.to_string());
        let how = format!(
            "building an image needs root, or user namespaces with {SUBID_COUNT} subordinate ids for user {user}; as root run `usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {user}` and `apt-get install uidmap`, or run the build as root"
        );
        let subuid = subid_start(&read("/etc/subuid"), &user, uid);
        let subgid = subid_start(&read("/etc/subgid"), &user, uid);
        let (Some(uid_start), Some(gid_start)) = (subuid, subgid) else {
            return Err(ImageError::Privileges(how));
        };
        let userns = read("/proc/sys/user/max_user_namespaces");
        let clone = read("/proc/sys/kernel/unprivileged_userns_clone");
        if userns.trim() == "0" || clone.trim() == "0" {
            return Err(ImageError::Privileges(format!(
                "user namespaces are disabled on this host (max_user_namespaces or unprivileged_userns_clone is 0); {how}"
            )));
        }
        Ok(BuildMode::Unshare {
            uid: uid_start,
            gid: gid_start,
        })
    }

    /// `program` (a host tool's name, or a path) run as root of the tree:
    /// directly when root, else through `unshare` inside the subordinate
    /// id mapping mmdebstrap used. The C locale either way.
    pub(super) fn as_root(self, program: &std::ffi::OsStr) -> Command {
        let mut command = match self {
            // A host tool by name, or banger's own binary by path.
            #[allow(clippy::disallowed_methods)]
            BuildMode::Root => Command::new(program),
            BuildMode::Unshare { uid, gid } => {
                let mut command = tool::command(Tool::Unshare);
                command.args([
                    format!("--map-users={uid},0,{SUBID_COUNT}"),
                    format!("--map-groups={gid},0,{SUBID_COUNT}"),
                    "--setuid".into(),
                    "0".into(),
                    "--setgid".into(),
                    "0".into(),
                    "--".into(),
                ]);
                command.arg(program);
                command
            }
        };
        command.env("LC_ALL", "C");
        command
    }

    pub(super) fn mmdebstrap_mode(self) -> &'static str {
        match self {
            BuildMode::Root => "--mode=root",
            BuildMode::Unshare { .. } => "--mode=unshare",
        }
    }
}

/// Real and effective uid from `/proc/self/status`.
fn parse_status_uids(status: &str) -> Option<(u32, u32)> {
    let line = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
    let mut ids = line.split_whitespace().map(|s| s.parse::<u32>().ok());
    Some((ids.next()??, ids.next()??))
}

/// The login name of `uid` in an `/etc/passwd` text.
fn user_name(passwd: &str, uid: u32) -> Option<String> {
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let id = fields.nth(1)?.parse::<u32>().ok()?;
        (id == uid).then(|| name.to_owned())
    })
}

/// Start of a subordinate id range of at least [`SUBID_COUNT`] ids for this
/// user (by name or uid) in an `/etc/subuid` or `/etc/subgid` text.
fn subid_start(text: &str, user: &str, uid: u32) -> Option<u64> {
    let uid = uid.to_string();
    text.lines().find_map(|line| {
        let mut fields = line.trim().split(':');
        let owner = fields.next()?;
        let start = fields.next()?.parse::<u64>().ok()?;
        let count = fields.next()?.parse::<u64>().ok()?;
        ((owner == user || owner == uid) && count >= SUBID_COUNT).then_some(start)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_subordinate_ranges_are_parsed() {
        let status = "Name:\tx\nUid:\t1000\t1001\t1000\t1000\nGid:\t1000\t1000\t1000\t1000\n";
        assert_eq!(parse_status_uids(status), Some((1000, 1001)));
        assert_eq!(parse_status_uids("Name: x\n"), None);
        let passwd = "root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000::/home/alice:/bin/sh\n";
        assert_eq!(user_name(passwd, 1000).as_deref(), Some("alice"));
        assert_eq!(user_name(passwd, 7), None);
        let subuid = "bob:100000:65536\nalice:165536:1000\n1000:300000:65536\n";
        assert_eq!(subid_start(subuid, "bob", 1001), Some(100000));
        // alice's own range is too small; her uid entry is big enough.
        assert_eq!(subid_start(subuid, "alice", 1000), Some(300000));
        assert_eq!(subid_start(subuid, "carol", 1002), None);
    }
}
