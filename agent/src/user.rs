//! Who a guest command runs as: an OCI image's `User` (`NAME`, `UID`,
//! `NAME:GROUP`, `UID:GID`), looked up in the guest's own `/etc/passwd` and
//! `/etc/group` (an id that is not listed is used as it is, as container
//! runtimes do).

use crate::protocol::ExecSpec;

/// The ids and login details of a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Login name (the uid when it has none).
    pub name: String,
    /// Home directory (`/` when unknown).
    pub home: String,
    /// Login shell (`/bin/sh` when unknown).
    pub shell: String,
}

/// Resolves `spec` against the texts of `/etc/passwd` and `/etc/group`.
pub fn resolve(spec: &str, passwd: &str, group: &str) -> Result<Account, String> {
    let (user, grp) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let entries: Vec<Vec<&str>> = passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() >= 7)
        .collect();
    let by_name = entries.iter().find(|f| f[0] == user);
    let by_id = user.parse::<u32>().ok().and_then(|id| {
        entries
            .iter()
            .find(|f| f[2].parse::<u32>().ok() == Some(id))
    });
    let (uid, mut gid, name, home, shell) = match by_name.or(by_id) {
        Some(f) => (
            f[2].parse::<u32>()
                .map_err(|_| format!("bad uid for {user} in /etc/passwd"))?,
            f[3].parse::<u32>()
                .map_err(|_| format!("bad gid for {user} in /etc/passwd"))?,
            f[0].to_string(),
            f[5].to_string(),
            f[6].to_string(),
        ),
        None => match user.parse::<u32>() {
            Ok(id) => (
                id,
                id,
                id.to_string(),
                "/".to_string(),
                "/bin/sh".to_string(),
            ),
            Err(_) => return Err(format!("no user {user:?} in the guest's /etc/passwd")),
        },
    };
    if let Some(g) = grp {
        gid = match g.parse::<u32>() {
            Ok(id) => id,
            Err(_) => group
                .lines()
                .map(|l| l.split(':').collect::<Vec<_>>())
                .find(|f| f.len() >= 3 && f[0] == g)
                .and_then(|f| f[2].parse().ok())
                .ok_or_else(|| format!("no group {g:?} in the guest's /etc/group"))?,
        };
    }
    Ok(Account {
        uid,
        gid,
        name,
        home: if home.is_empty() { "/".into() } else { home },
        shell: if shell.is_empty() {
            "/bin/sh".into()
        } else {
            shell
        },
    })
}

/// [`resolve`] against the guest's files.
pub fn lookup(spec: &str) -> Result<Account, String> {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    resolve(spec, &read("/etc/passwd"), &read("/etc/group"))
}

/// The user a command runs as, when not root.
pub(crate) fn for_spec(spec: &ExecSpec) -> Result<Option<Account>, String> {
    match spec.user.as_deref() {
        None | Some("") | Some("root") | Some("0") | Some("0:0") => Ok(None),
        Some(user) => lookup(user).map(Some),
    }
}

/// Where a command runs when the host names no directory: root's home, or
/// the user's.
pub(crate) fn cwd(spec: &ExecSpec, account: Option<&Account>) -> String {
    spec.cwd
        .clone()
        .unwrap_or_else(|| account.map_or_else(|| "/root".into(), |a| a.home.clone()))
}

/// HOME, USER, LOGNAME and SHELL of a user other than root.
pub(crate) fn env(account: Option<&Account>) -> Vec<(&'static str, String)> {
    account.map_or_else(Vec::new, |a| {
        vec![
            ("HOME", a.home.clone()),
            ("USER", a.name.clone()),
            ("LOGNAME", a.name.clone()),
            ("SHELL", a.shell.clone()),
        ]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\napp:x:1000:1001:App:/home/app:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nstaff:x:50:\napp:x:1001:\n";

    #[test]
    fn users_resolve_by_name_id_and_group() {
        let app = resolve("app", PASSWD, GROUP).unwrap();
        assert_eq!(
            (app.uid, app.gid, app.home.as_str()),
            (1000, 1001, "/home/app")
        );
        assert_eq!(resolve("1000", PASSWD, GROUP).unwrap().name, "app");
        assert_eq!(resolve("app:staff", PASSWD, GROUP).unwrap().gid, 50);
        assert_eq!(resolve("app:7", PASSWD, GROUP).unwrap().gid, 7);
        let bare = resolve("4242:4243", PASSWD, GROUP).unwrap();
        assert_eq!((bare.uid, bare.gid, bare.home.as_str()), (4242, 4243, "/"));
        assert!(
            resolve("nobody-here", PASSWD, GROUP)
                .unwrap_err()
                .contains("no user")
        );
        assert!(
            resolve("app:nogroup", PASSWD, GROUP)
                .unwrap_err()
                .contains("no group")
        );
    }
}
