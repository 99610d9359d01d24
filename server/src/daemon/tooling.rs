//! Tooling bootstrap: a workspace that declares its tools for mise
//! (`.mise.toml`, `.tool-versions`, ...) gets them installed in the guest
//! on its first boot, and guest commands in that workspace then run
//! through `mise exec` so the tools are on PATH.
//!
//! mise itself comes from the npm registry (the `@jdxcode/mise-linux-x64`
//! package, a version pinned here with its SHA-256), fetched by the guest
//! through its own network (so `--nat` is required, and `--allow` must
//! name registry.npmjs.org and the tools' sources).

use super::{Daemon, OpError};
use crate::api::code;

/// The mise version banger installs.
pub(crate) const MISE_VERSION: &str = "2026.9.15";
/// Its npm package tarball.
const MISE_URL: &str =
    "https://registry.npmjs.org/@jdxcode/mise-linux-x64/-/mise-linux-x64-2026.9.15.tgz";
/// SHA-256 of that tarball.
const MISE_SHA256: &str = "b51f2463bc4fcdc3b0959b1454792f64be3612e73d856cbca4a062e39e070e74";
/// Where mise lives in the guest.
pub(crate) const MISE_BIN: &str = "/usr/local/bin/mise";

/// Files by which a workspace declares its tools for mise.
pub(crate) const TOOL_FILES: &[&str] = &[
    ".mise.toml",
    "mise.toml",
    ".tool-versions",
    ".config/mise.toml",
    ".config/mise/config.toml",
    ".mise/config.toml",
    "mise/config.toml",
];

/// Whether a workspace (its shipped files) declares tools for mise.
pub(crate) fn declares_tools<'a>(files: impl IntoIterator<Item = &'a str>) -> bool {
    files.into_iter().any(|f| TOOL_FILES.contains(&f))
}

/// Installs mise (when missing, checked against its SHA-256) and the
/// workspace's tools; `$1` URL, `$2` SHA-256, `$3` workspace.
const BOOTSTRAP_SCRIPT: &str = r#"set -eu
if [ ! -x /usr/local/bin/mise ]; then
	tmp=$(mktemp -d)
	trap 'rm -rf "$tmp"' EXIT
	curl -fsSL --retry 2 -o "$tmp/mise.tgz" "$1"
	echo "$2  $tmp/mise.tgz" | sha256sum -c --quiet
	tar -xzf "$tmp/mise.tgz" -C "$tmp" package/bin/mise
	install -m 0755 "$tmp/package/bin/mise" /usr/local/bin/mise.new
	mv -f /usr/local/bin/mise.new /usr/local/bin/mise
fi
cd "$3"
export MISE_YES=1
mise trust --quiet "$3" >/dev/null
mise install 2>&1
"#;

impl Daemon {
    /// Installs the tools a running VM's workspace declares; returns mise's
    /// output.
    pub(crate) async fn bootstrap_tools(&self, name_or_id: &str) -> Result<String, OpError> {
        let vm = self.refresh(self.find(name_or_id)?)?;
        let Some(ws) = vm.workspace.clone() else {
            return Err(OpError::new(
                code::CONFLICT,
                format!("vm {:?} has no workspace to install tools for", vm.name),
            ));
        };
        if !vm.nat && vm.allow.is_empty() {
            return Err(OpError::new(
                code::INVALID,
                "tooling bootstrap requires --nat (or pass --no-bootstrap to skip)",
            ));
        }
        let out = self
            .guest_script(
                &vm.id,
                BOOTSTRAP_SCRIPT,
                &[MISE_URL, MISE_SHA256, &ws.guest_path],
                4 << 20,
            )
            .await
            .map_err(|(code, err)| {
                OpError::internal(format!(
                    "installing the workspace's tools with mise failed (exit {}): {err}",
                    code.map_or("?".to_string(), |c| c.to_string())
                ))
            })?;
        self.with_store(|s| s.set_tooling(&vm.id, Some(MISE_VERSION)))?;
        tracing::info!(vm = %vm.name, "tools installed with mise {MISE_VERSION}");
        Ok(String::from_utf8_lossy(&out).into_owned())
    }
}

/// A guest command in a workspace with mise tools, run through `mise
/// exec` (argv kept exactly: no shell).
pub(crate) fn through_mise(argv: &[String]) -> Vec<String> {
    let mut out = vec![MISE_BIN.to_string(), "exec".into(), "--".into()];
    out.extend(argv.iter().cloned());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_files_are_recognised_and_argv_is_kept() {
        assert!(declares_tools(["src/main.rs", ".mise.toml"]));
        assert!(declares_tools([".tool-versions"]));
        assert!(!declares_tools(["src/.mise.toml", "README.md"]));
        assert_eq!(
            through_mise(&["sh".into(), "-c".into(), "echo \"a  b\"".into()]),
            [
                "/usr/local/bin/mise",
                "exec",
                "--",
                "sh",
                "-c",
                "echo \"a  b\""
            ]
        );
    }
}
