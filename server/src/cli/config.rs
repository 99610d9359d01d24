//! `banger config show`: the settings a new VM gets and where each comes
//! from, decided by the same [`crate::config::resolve`] the daemon uses.

use super::Failure;
use super::args::ConfigCommand;
use super::printer::Printer;
use crate::config::{Config, Flags, resolve};
use crate::paths::Dirs;
use crate::spec;

pub(crate) fn run(cmd: ConfigCommand, dirs: &Dirs, printer: &Printer) -> Result<u8, Failure> {
    let ConfigCommand::Show { spec: flags } = cmd;
    let file = dirs.config_file();
    let config = Config::load(dirs).map_err(|e| Failure::new(2, e))?;
    let flags = Flags {
        vcpu: flags.vcpu,
        memory_mib: flags.memory,
        disk_bytes: flags.disk_size,
        system_overlay_bytes: flags.system_overlay_size,
        vmm: flags.vmm.map(|v| v.as_str().to_string()),
        kernel: flags.kernel,
        image: flags.image,
        snapshots: flags.no_snapshot.then_some(false),
    };
    let e = resolve(&config, std::env::var("BANGER_VMM").ok(), &flags)
        .map_err(|m| Failure::new(2, format!("{}: {m}", file.display())))?;
    if printer.json() {
        printer.json_value(&serde_json::json!({
            "config_file": file.display().to_string(),
            "config_file_exists": file.exists(),
            "vm_defaults": e,
        }));
        return Ok(0);
    }
    printer.line(&format!(
        "config file: {}{}",
        file.display(),
        if file.exists() { "" } else { " (absent)" }
    ));
    let rows = [
        ("vcpu", e.vcpu.value.to_string(), e.vcpu.source),
        (
            "memory",
            format!("{}M", e.memory_mib.value),
            e.memory_mib.source,
        ),
        (
            "disk_size",
            spec::format_size(e.disk_bytes.value),
            e.disk_bytes.source,
        ),
        (
            "system_overlay_size",
            spec::format_size(e.system_overlay_bytes.value),
            e.system_overlay_bytes.source,
        ),
        ("vmm", e.vmm.value.clone(), e.vmm.source),
        (
            "kernel",
            e.kernel
                .value
                .clone()
                .unwrap_or_else(|| "(the image's)".into()),
            e.kernel.source,
        ),
        (
            "image",
            e.image
                .value
                .clone()
                .unwrap_or_else(|| crate::image::DEFAULT_IMAGE.into()),
            e.image.source,
        ),
        (
            "snapshots",
            e.snapshots.value.to_string(),
            e.snapshots.source,
        ),
    ];
    for (key, value, source) in rows {
        let source = match source {
            crate::config::Source::Env => "env BANGER_VMM".to_string(),
            other => other.to_string(),
        };
        printer.line(&format!("{key:<20} {value:<16} {source}"));
    }
    Ok(0)
}
