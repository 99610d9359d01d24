//! banger's side of ssh: its own key pair, the known_hosts file it keeps
//! exact (each VM's host key, learnt through the agent, never on first
//! use), the ssh config that makes `ssh NAME.vm` work from any terminal
//! (`Host *.vm` with a `ProxyCommand` that runs the guest's `sshd -i`
//! through the agent: no DNS, no route, no `--nat` needed), and the one
//! `Include` line `banger ssh-config --install` puts in `~/.ssh/config`.
//!
//! Files live in `$XDG_STATE_HOME/banger/ssh/` (0700).

use std::path::{Path, PathBuf};

use crate::paths::Dirs;

/// Suffix of the host names `ssh` resolves through banger.
pub const HOST_SUFFIX: &str = ".vm";

/// ssh trouble.
#[derive(Debug, thiserror::Error)]
pub enum SshError {
    /// A file could not be read or written.
    #[error("{what} {path}: {source}")]
    File {
        /// What was being done.
        what: &'static str,
        /// Where.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A key could not be made or read.
    #[error("ssh key: {0}")]
    Key(String),
    /// `~/.ssh/config` is a symbolic link: banger does not write through it.
    #[error("{0} is a symbolic link; banger does not edit through it: add this line yourself: {1}")]
    Symlink(String, String),
}

fn file_error<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> SshError + 'a {
    move |source| SshError::File {
        what,
        path: path.display().to_string(),
        source,
    }
}

/// Where banger's ssh files are.
#[derive(Debug, Clone)]
pub struct SshFiles {
    dir: PathBuf,
}

impl SshFiles {
    /// The files of one banger installation.
    pub fn new(dirs: &Dirs) -> SshFiles {
        SshFiles {
            dir: dirs.state.join("ssh"),
        }
    }

    /// banger's private key (ed25519, OpenSSH format).
    pub fn identity(&self) -> PathBuf {
        self.dir.join("id_ed25519")
    }

    /// The known_hosts file banger keeps.
    pub fn known_hosts(&self) -> PathBuf {
        self.dir.join("known_hosts")
    }

    /// The ssh config `~/.ssh/config` includes.
    pub fn config(&self) -> PathBuf {
        self.dir.join("config")
    }

    fn ensure_dir(&self) -> Result<(), SshError> {
        Dirs::ensure_private(&self.dir).map_err(file_error("cannot create", &self.dir))
    }

    /// banger's public key (`ssh-ed25519 AAAA... banger`), making the key
    /// pair on first use.
    pub fn public_key(&self) -> Result<String, SshError> {
        use russh::keys::ssh_key::private::{Ed25519Keypair, KeypairData};
        use russh::keys::ssh_key::{LineEnding, PrivateKey};
        self.ensure_dir()?;
        let path = self.identity();
        let key = match std::fs::read_to_string(&path) {
            Ok(text) => PrivateKey::from_openssh(&text)
                .map_err(|e| SshError::Key(format!("{}: {e}", path.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut seed = [0u8; 32];
                std::io::Read::read_exact(
                    &mut std::fs::File::open("/dev/urandom")
                        .map_err(file_error("cannot read", Path::new("/dev/urandom")))?,
                    &mut seed,
                )
                .map_err(file_error("cannot read", Path::new("/dev/urandom")))?;
                let pair = KeypairData::from(Ed25519Keypair::from_seed(&seed));
                let mut key =
                    PrivateKey::try_from(pair).map_err(|e| SshError::Key(e.to_string()))?;
                key.set_comment("banger");
                let text = key
                    .to_openssh(LineEnding::LF)
                    .map_err(|e| SshError::Key(e.to_string()))?;
                write_private(&path, text.as_bytes())?;
                key
            }
            Err(e) => return Err(file_error("cannot read", &path)(e)),
        };
        key.public_key()
            .to_openssh()
            .map_err(|e| SshError::Key(e.to_string()))
    }

    /// Rewrites known_hosts with exactly these (host, key) pairs.
    pub fn write_known_hosts(&self, entries: &[(String, String)]) -> Result<(), SshError> {
        self.ensure_dir()?;
        write_private(&self.known_hosts(), known_hosts_text(entries).as_bytes())
    }

    /// Writes the ssh config for `*.vm` hosts; `banger` is the CLI's path.
    pub fn write_config(&self, banger: &Path) -> Result<(), SshError> {
        self.ensure_dir()?;
        let text = config_text(banger, &self.identity(), &self.known_hosts());
        write_private(&self.config(), text.as_bytes())
    }
}

fn write_private(path: &Path, data: &[u8]) -> Result<(), SshError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(file_error("cannot write", &tmp))?;
    f.write_all(data)
        .map_err(file_error("cannot write", &tmp))?;
    std::fs::rename(&tmp, path).map_err(file_error("cannot write", path))
}

/// The known_hosts text (pure): one `HOST KEY` line per VM, sorted.
pub fn known_hosts_text(entries: &[(String, String)]) -> String {
    let mut lines: Vec<String> = entries
        .iter()
        .map(|(host, key)| format!("{host} {key}"))
        .collect();
    lines.sort();
    let mut out =
        String::from("# written by banger: the host key of each vm, learnt through its agent\n");
    for l in lines {
        out.push_str(&l);
        out.push('\n');
    }
    out
}

/// Quotes a path for an ssh config value.
fn quoted(path: &Path) -> String {
    format!("\"{}\"", path.display().to_string().replace('"', "\\\""))
}

/// The ssh config for `*.vm` (pure).
pub fn config_text(banger: &Path, identity: &Path, known_hosts: &Path) -> String {
    format!(
        "# written by banger (banger ssh-config): ssh NAME.vm reaches vm NAME\n\
         Host *{HOST_SUFFIX}\n\
         \x20   User root\n\
         \x20   ProxyCommand {} ssh-proxy %n\n\
         \x20   IdentityFile {}\n\
         \x20   IdentitiesOnly yes\n\
         \x20   UserKnownHostsFile {}\n\
         \x20   StrictHostKeyChecking yes\n\
         \x20   LogLevel ERROR\n",
        quoted(banger),
        quoted(identity),
        quoted(known_hosts)
    )
}

/// The line `--install` adds to `~/.ssh/config`, and its marker comment.
fn include_lines(config: &Path) -> (String, String) {
    (
        "# banger: ssh NAME.vm (banger ssh-config --uninstall removes these two lines)".to_string(),
        format!("Include {}", quoted(config)),
    )
}

/// `~/.ssh/config` with banger's lines added at the top (pure; the same
/// text when they are there already).
pub fn with_include(user: &str, config: &Path) -> String {
    let (marker, include) = include_lines(config);
    if user.lines().any(|l| l.trim() == include) {
        return user.to_string();
    }
    // At the top: an Include after a Host block would apply only there.
    format!("{marker}\n{include}\n{user}")
}

/// `~/.ssh/config` without banger's lines (pure).
pub fn without_include(user: &str, config: &Path) -> String {
    let (marker, include) = include_lines(config);
    let mut out = String::new();
    for line in user.split_inclusive('\n') {
        let t = line.trim();
        if t == marker || t == include {
            continue;
        }
        out.push_str(line);
    }
    out
}

/// Adds (`install`) or removes banger's Include in `$HOME/.ssh/config`;
/// returns the file's path and whether it changed. Refuses a symlinked
/// config; keeps everything else in it.
pub fn edit_user_config(
    home: &Path,
    config: &Path,
    install: bool,
) -> Result<(PathBuf, bool), SshError> {
    let dir = home.join(".ssh");
    let path = dir.join("config");
    match std::fs::symlink_metadata(&path) {
        Ok(m) if m.file_type().is_symlink() => {
            return Err(SshError::Symlink(
                path.display().to_string(),
                include_lines(config).1,
            ));
        }
        _ => {}
    }
    let before = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(file_error("cannot read", &path)(e)),
    };
    let after = if install {
        with_include(&before, config)
    } else {
        without_include(&before, config)
    };
    if after == before {
        return Ok((path, false));
    }
    if !dir.exists() {
        Dirs::ensure_private(&dir).map_err(file_error("cannot create", &dir))?;
    }
    write_private(&path, after.as_bytes())?;
    Ok((path, true))
}

/// Quotes one argument for a POSIX shell (sshd runs the command through
/// the user's shell: argv must survive it exactly).
pub fn shell_quote(arg: &str) -> String {
    if !arg.is_empty()
        && arg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b))
    {
        return arg.to_string();
    }
    format!("'{}'", arg.replace('\'', "'\\''"))
}

/// A command line for sshd that the remote shell splits back into exactly
/// `argv`.
pub fn command_line(argv: &[String]) -> String {
    argv.iter()
        .map(|a| shell_quote(a))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_keeps_the_users_config_and_is_idempotent_and_uninstall_removes_only_its_lines() {
        let cfg = Path::new("/home/u/.local/state/banger/ssh/config");
        let user = "Host myserver\n    HostName 192.0.2.9\n";
        let once = with_include(user, cfg);
        assert!(once.starts_with("# banger:"), "{once}");
        assert!(once.contains(&format!("Include \"{}\"\n", cfg.display())));
        assert!(once.ends_with(user));
        assert_eq!(with_include(&once, cfg), once);
        assert_eq!(without_include(&once, cfg), user);
        assert_eq!(without_include(user, cfg), user);
        assert_eq!(with_include("", cfg).lines().count(), 2);
    }

    #[test]
    fn the_config_routes_every_vm_through_banger_with_exact_host_keys() {
        let text = config_text(
            Path::new("/usr/bin/banger"),
            Path::new("/s/id_ed25519"),
            Path::new("/s/known_hosts"),
        );
        assert!(text.contains("Host *.vm\n"));
        assert!(text.contains("ProxyCommand \"/usr/bin/banger\" ssh-proxy %n\n"));
        assert!(text.contains("StrictHostKeyChecking yes"));
        assert!(text.contains("UserKnownHostsFile \"/s/known_hosts\""));
    }

    #[test]
    fn known_hosts_has_one_sorted_line_per_vm() {
        let text = known_hosts_text(&[
            ("web.vm".into(), "ssh-ed25519 BBBB".into()),
            ("api.vm".into(), "ssh-ed25519 AAAA".into()),
        ]);
        let lines: Vec<&str> = text.lines().skip(1).collect();
        assert_eq!(
            lines,
            ["api.vm ssh-ed25519 AAAA", "web.vm ssh-ed25519 BBBB"]
        );
    }

    #[test]
    fn argv_survives_a_remote_shell() {
        let argv: Vec<String> = ["sh", "-c", "echo \"a  b\"; exit 42", "it's", ""]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let line = command_line(&argv);
        let out = crate::tool::for_test(crate::tool::Tool::Sh)
            .args(["-c", &format!("printf '[%s]' {line}")])
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            "[sh][-c][echo \"a  b\"; exit 42][it's][]"
        );
    }
}
