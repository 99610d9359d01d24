//! A repository's own settings: `[sandbox]` in its `.banger.toml`, read by
//! `banger vm run PATH` and by `banger lsp` (which lets the editor's
//! settings win, and ignores what runs commands or opens the network until
//! the workspace is trusted).
//!
//! ```toml
//! [sandbox]
//! image = "py-dev"                       # an image by name or id
//! setup = "pip install -r requirements.txt"
//! setup-inputs = ["requirements.txt"]    # files the setup reads
//! nat = true                             # outbound network
//! allow = ["pypi.org", "*.pythonhosted.org"]
//! test-command = "pytest -q"             # banger lsp's test command
//! vm = "my-vm"                           # banger lsp's VM
//! vcpu = 2
//! memory = "2G"
//! ```

use std::path::Path;

use serde::Deserialize;

/// File name of the repository's settings.
pub const FILE: &str = ".banger.toml";

/// `.banger.toml`.
#[derive(Debug, Default, Deserialize)]
struct RepoFile {
    sandbox: Option<Sandbox>,
}

/// `[sandbox]`.
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Sandbox {
    /// banger lsp's VM.
    pub vm: Option<String>,
    /// banger lsp's test command.
    pub test_command: Option<String>,
    /// Virtual CPUs.
    pub vcpu: Option<u32>,
    /// Memory: MiB or a size string.
    pub memory: Option<toml::Value>,
    /// Outbound network.
    pub nat: Option<bool>,
    /// Egress rules.
    pub allow: Option<Vec<String>>,
    /// The image to boot.
    pub image: Option<String>,
    /// A shell command run once in the workspace (with the setup inputs in
    /// it) whose changes to the system become the project's image.
    pub setup: Option<String>,
    /// Files (paths in the repository) the setup reads; the project image
    /// is made again when one changes.
    pub setup_inputs: Option<Vec<String>>,
}

impl Sandbox {
    /// Memory in MiB, when set.
    pub fn memory_mib(&self) -> Result<Option<u64>, String> {
        self.memory
            .as_ref()
            .map(|m| match m {
                toml::Value::Integer(i) => u64::try_from(*i).map_err(|_| format!("bad memory {i}")),
                toml::Value::String(s) => crate::spec::parse_size(s)
                    .map(|b| b >> 20)
                    .map_err(|e| e.to_string()),
                other => Err(format!(
                    "bad memory {other:?}; use MiB (2048) or a size (\"2G\")"
                )),
            })
            .transpose()
    }

    /// Whether it names something that runs commands or reaches the
    /// network (what an untrusted workspace must not get from it).
    pub fn asks_for_trust(&self) -> bool {
        self.test_command.is_some()
            || self.vm.is_some()
            || self.setup.is_some()
            || self.nat == Some(true)
            || self.allow.as_ref().is_some_and(|a| !a.is_empty())
    }
}

/// The repository's `[sandbox]`: `Ok(None)` without a file (or without the
/// table), an error naming the file when it cannot be read or parsed.
pub fn load(repo_root: &Path) -> Result<Option<Sandbox>, String> {
    let path = repo_root.join(FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let file: RepoFile = toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(file.sandbox)
}

/// Checks a setup input path: relative, inside the repository, no `..`,
/// `.` or empty parts.
pub fn validate_input(path: &str) -> Result<(), String> {
    let bad = path.is_empty()
        || path.starts_with('/')
        || path.len() > 4096
        || path.contains('\0')
        || path
            .split('/')
            .any(|part| part.is_empty() || part == "." || part == "..");
    if bad {
        Err(format!(
            "setup input {path:?} is not a path inside the repository (relative, no `..`)"
        ))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sandbox_table_is_read_and_unknown_keys_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()).unwrap(), None);
        std::fs::write(
            dir.path().join(FILE),
            "[sandbox]\nsetup = \"pip install -r requirements.txt\"\nsetup-inputs = [\"requirements.txt\"]\nimage = \"py\"\nnat = true\nmemory = \"1G\"\n",
        )
        .unwrap();
        let sb = load(dir.path()).unwrap().unwrap();
        assert_eq!(sb.setup.as_deref(), Some("pip install -r requirements.txt"));
        assert_eq!(
            sb.setup_inputs.as_deref(),
            Some(&["requirements.txt".to_string()][..])
        );
        assert_eq!(sb.image.as_deref(), Some("py"));
        assert_eq!(sb.memory_mib().unwrap(), Some(1024));
        assert!(sb.asks_for_trust());
        std::fs::write(dir.path().join(FILE), "[sandbox]\nsetpu = \"x\"\n").unwrap();
        let err = load(dir.path()).unwrap_err();
        assert!(
            err.contains(".banger.toml") && err.contains("setpu"),
            "{err}"
        );
    }

    #[test]
    fn setup_inputs_stay_in_the_repository() {
        for ok in ["requirements.txt", "sub/dir/package.json", ".tool-versions"] {
            validate_input(ok).unwrap();
        }
        for bad in ["", "/etc/passwd", "../x", "a/../../b", "a//b", "./a", "a/"] {
            assert!(validate_input(bad).is_err(), "{bad}");
        }
    }
}
