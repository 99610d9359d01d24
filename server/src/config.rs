//! The user's settings: `$XDG_CONFIG_HOME/banger/config.toml`. A missing
//! file means defaults; an unreadable one is an error that names the file.
//!
//! ```toml
//! vmm = "auto"   # auto | firecracker | qemu
//! ```

use serde::Deserialize;

use crate::paths::Dirs;

/// banger's settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Default VMM for new VMs.
    pub vmm: Option<String>,
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
    }
}
