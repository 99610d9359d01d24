//! The user's settings: `$XDG_CONFIG_HOME/banger/config.toml`. A missing
//! file means defaults; an unreadable one is an error that names the file.
//!
//! ```toml
//! vmm = "auto"   # auto | firecracker | qemu (older spelling of vm_defaults.vmm)
//!
//! [vm_defaults]
//! vcpu = 2
//! memory = "2G"            # or MiB: 2048
//! disk_size = "8G"
//! system_overlay_size = "16G"
//! vmm = "qemu"
//! kernel = "my-kernel"     # a catalog kernel (banger kernel list)
//! image = "py-dev"         # an image by name or id (banger image list)
//! snapshots = true         # false: every VM boots cold (no image snapshots)
//! ```
//!
//! What a new VM gets is decided by [`resolve`], a pure function: a flag
//! wins over `$BANGER_VMM` (the VMM only), which wins over the file, which
//! wins over the built-in default. The daemon applies it to every create;
//! `banger config show` prints it with where each value came from.

use serde::{Deserialize, Serialize};

use crate::paths::Dirs;
use crate::spec;

/// banger's settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Default VMM for new VMs (kept for older files; `vm_defaults.vmm`
    /// wins).
    pub vmm: Option<String>,
    /// Defaults for new VMs.
    #[serde(default)]
    pub vm_defaults: VmDefaults,
}

/// `[vm_defaults]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmDefaults {
    /// Virtual CPUs.
    pub vcpu: Option<u32>,
    /// Memory: MiB as a number, or a size string (`2G`).
    pub memory: Option<Memory>,
    /// Work disk size (`8G`).
    pub disk_size: Option<String>,
    /// Root overlay upper disk size (`16G`).
    pub system_overlay_size: Option<String>,
    /// `auto`, `firecracker` or `qemu`.
    pub vmm: Option<String>,
    /// A catalog kernel by name or id.
    pub kernel: Option<String>,
    /// An image by name or id.
    pub image: Option<String>,
    /// Start new VMs from their image's snapshot (default true).
    pub snapshots: Option<bool>,
}

/// Memory in the file: `2048` (MiB) or `"2G"`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Memory {
    /// MiB.
    Mib(u64),
    /// A size string.
    Size(String),
}

impl Config {
    /// Reads the config file, or defaults when there is none.
    pub fn load(dirs: &Dirs) -> Result<Config, String> {
        let path = dirs.config_file();
        match std::fs::read_to_string(&path) {
            Ok(text) => Config::parse(&text).map_err(|e| format!("{}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
            Err(e) => Err(format!("cannot read {}: {e}", path.display())),
        }
    }

    /// Parses the file's text.
    pub fn parse(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }
}

/// Where a setting's value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// banger's built-in default.
    Default,
    /// `config.toml`.
    ConfigFile,
    /// An environment variable (`BANGER_VMM`).
    Env,
    /// A command-line flag.
    Flag,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Source::Default => "default",
            Source::ConfigFile => "config file",
            Source::Env => "env",
            Source::Flag => "flag",
        })
    }
}

/// One effective setting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Setting<T> {
    /// Its value.
    pub value: T,
    /// Where it came from.
    pub source: Source,
}

/// What a new VM gets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Effective {
    /// Virtual CPUs.
    pub vcpu: Setting<u32>,
    /// Memory in MiB.
    pub memory_mib: Setting<u64>,
    /// Work disk bytes.
    pub disk_bytes: Setting<u64>,
    /// Root overlay upper disk bytes.
    pub system_overlay_bytes: Setting<u64>,
    /// VMM preference.
    pub vmm: Setting<String>,
    /// Catalog kernel (`None`: the image's).
    pub kernel: Setting<Option<String>>,
    /// Image (`None`: the default image).
    pub image: Setting<Option<String>>,
    /// Start from the image's snapshot.
    pub snapshots: Setting<bool>,
}

/// What flags asked for (`None`: not given).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Flags {
    /// `--vcpu`.
    pub vcpu: Option<u32>,
    /// `--memory`, MiB.
    pub memory_mib: Option<u64>,
    /// `--disk-size`, bytes.
    pub disk_bytes: Option<u64>,
    /// `--system-overlay-size`, bytes.
    pub system_overlay_bytes: Option<u64>,
    /// `--vmm`.
    pub vmm: Option<String>,
    /// `--kernel`.
    pub kernel: Option<String>,
    /// `--image`.
    pub image: Option<String>,
    /// `--no-snapshot` gives `Some(false)`.
    pub snapshots: Option<bool>,
}

fn pick<T>(flag: Option<T>, env: Option<T>, file: Option<T>, default: T) -> Setting<T> {
    match (flag, env, file) {
        (Some(value), _, _) => Setting {
            value,
            source: Source::Flag,
        },
        (None, Some(value), _) => Setting {
            value,
            source: Source::Env,
        },
        (None, None, Some(value)) => Setting {
            value,
            source: Source::ConfigFile,
        },
        (None, None, None) => Setting {
            value: default,
            source: Source::Default,
        },
    }
}

fn file_size(key: &str, value: &Option<String>) -> Result<Option<u64>, String> {
    value
        .as_deref()
        .map(|s| {
            spec::parse_size(s)
                .map_err(|e| format!("[vm_defaults] {key}: {e}; fix it in config.toml"))
        })
        .transpose()
}

/// Decides every setting of a new VM (pure). `env_vmm` is `$BANGER_VMM`.
/// A bad value in the file is an error that names the key.
pub fn resolve(
    config: &Config,
    env_vmm: Option<String>,
    flags: &Flags,
) -> Result<Effective, String> {
    let d = &config.vm_defaults;
    let memory = match &d.memory {
        None => None,
        Some(Memory::Mib(n)) => Some(*n),
        Some(Memory::Size(s)) => Some(
            spec::parse_memory_mib(s)
                .map_err(|e| format!("[vm_defaults] memory: {e}; fix it in config.toml"))?,
        ),
    };
    let vmm_file = d.vmm.clone().or_else(|| config.vmm.clone());
    Ok(Effective {
        vcpu: pick(flags.vcpu, None, d.vcpu, spec::DEFAULT_VCPU),
        memory_mib: pick(flags.memory_mib, None, memory, spec::DEFAULT_MEMORY_MIB),
        disk_bytes: pick(
            flags.disk_bytes,
            None,
            file_size("disk_size", &d.disk_size)?,
            spec::DEFAULT_DISK_BYTES,
        ),
        system_overlay_bytes: pick(
            flags.system_overlay_bytes,
            None,
            file_size("system_overlay_size", &d.system_overlay_size)?,
            spec::DEFAULT_OVERLAY_BYTES,
        ),
        vmm: pick(
            flags.vmm.clone(),
            env_vmm.filter(|v| !v.is_empty()),
            vmm_file,
            "auto".to_string(),
        ),
        kernel: pick(
            flags.kernel.clone().map(Some),
            None,
            d.kernel.clone().map(Some),
            None,
        ),
        image: pick(
            flags.image.clone().map(Some),
            None,
            d.image.clone().filter(|i| !i.is_empty()).map(Some),
            None,
        ),
        snapshots: pick(flags.snapshots, None, d.snapshots, true),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects_unknown_keys() {
        assert_eq!(
            Config::parse("vmm = \"qemu\"\n").unwrap().vmm.as_deref(),
            Some("qemu")
        );
        assert_eq!(Config::parse("").unwrap(), Config::default());
        assert!(Config::parse("vmmm = \"qemu\"").is_err());
        assert!(Config::parse("[vm_defaults]\nvcpus = 2").is_err());
    }

    #[test]
    fn flags_win_over_env_over_the_file_over_defaults() {
        let config = Config::parse(
            "vmm = \"firecracker\"\n[vm_defaults]\nvcpu = 4\nmemory = \"2G\"\nsystem_overlay_size = \"4G\"\nkernel = \"k1\"\n",
        )
        .unwrap();
        let e = resolve(&config, None, &Flags::default()).unwrap();
        assert_eq!(
            e.vcpu,
            Setting {
                value: 4,
                source: Source::ConfigFile
            }
        );
        assert_eq!(e.memory_mib.value, 2048);
        assert_eq!(e.disk_bytes.source, Source::Default);
        assert_eq!(e.disk_bytes.value, spec::DEFAULT_DISK_BYTES);
        assert_eq!(e.system_overlay_bytes.value, 4 << 30);
        assert_eq!(e.vmm.value, "firecracker");
        assert_eq!(e.vmm.source, Source::ConfigFile);
        assert_eq!(e.kernel.value.as_deref(), Some("k1"));

        let e = resolve(&config, Some("qemu".into()), &Flags::default()).unwrap();
        assert_eq!((e.vmm.value.as_str(), e.vmm.source), ("qemu", Source::Env));

        let flags = Flags {
            vcpu: Some(1),
            memory_mib: Some(512),
            vmm: Some("auto".into()),
            ..Flags::default()
        };
        let e = resolve(&config, Some("qemu".into()), &flags).unwrap();
        assert_eq!((e.vcpu.value, e.vcpu.source), (1, Source::Flag));
        assert_eq!(
            (e.memory_mib.value, e.memory_mib.source),
            (512, Source::Flag)
        );
        assert_eq!((e.vmm.value.as_str(), e.vmm.source), ("auto", Source::Flag));

        let e = resolve(&Config::default(), None, &Flags::default()).unwrap();
        assert_eq!(e.vmm.value, "auto");
        assert_eq!(e.memory_mib.source, Source::Default);
        assert_eq!(e.kernel.value, None);
        assert_eq!(
            (e.snapshots.value, e.snapshots.source),
            (true, Source::Default)
        );
    }

    #[test]
    fn snapshots_come_from_the_file_and_no_snapshot_wins() {
        let config = Config::parse(
            "[vm_defaults]
snapshots = false
",
        )
        .unwrap();
        let e = resolve(&config, None, &Flags::default()).unwrap();
        assert_eq!(
            (e.snapshots.value, e.snapshots.source),
            (false, Source::ConfigFile)
        );
        let config = Config::parse(
            "[vm_defaults]
snapshots = true
",
        )
        .unwrap();
        let flags = Flags {
            snapshots: Some(false),
            ..Flags::default()
        };
        let e = resolve(&config, None, &flags).unwrap();
        assert_eq!(
            (e.snapshots.value, e.snapshots.source),
            (false, Source::Flag)
        );
        assert!(
            Config::parse(
                "[vm_defaults]
snapshots = \"no\"\n"
            )
            .is_err()
        );
    }

    #[test]
    fn a_bad_value_in_the_file_names_its_key() {
        let config = Config::parse("[vm_defaults]\nmemory = 2048\ndisk_size = \"lots\"\n").unwrap();
        let e = resolve(&config, None, &Flags::default()).unwrap_err();
        assert!(e.contains("disk_size"), "{e}");
        let config = Config::parse("[vm_defaults]\nmemory = \"1.5G\"\n").unwrap();
        let e = resolve(&config, None, &Flags::default()).unwrap_err();
        assert!(e.contains("memory"), "{e}");
    }
}
