//! `banger system`: helper programs installed for this user, and the
//! cache's upkeep.

use super::args::SystemCommand;
use super::printer::Printer;
use super::{Failure, confirm, human_bytes, print_table, rpc_failure};
use crate::api::{BangerApiClient, PruneItem};
use crate::client;
use crate::paths::Dirs;

pub(crate) async fn run(cmd: SystemCommand, dirs: &Dirs, printer: &Printer) -> Result<u8, Failure> {
    match cmd {
        SystemCommand::InstallFirecracker { version } => {
            let bin = dirs.bin();
            let installed = tokio::task::spawn_blocking(move || {
                crate::install::install_firecracker(&version, &bin, &mut |m| {
                    tracing::debug!("{m}");
                })
            })
            .await
            .map_err(|e| Failure::new(1, format!("install task failed: {e}")))?
            .map_err(|e| Failure::new(1, e.to_string()))?;
            for f in &installed.files {
                printer.line(&format!("installed {}", f.display()));
            }
            printer.note(&format!("sha256 {} verified", installed.sha256));
            Ok(0)
        }
        SystemCommand::Prune { force, dry_run } => prune(dirs, printer, force, dry_run).await,
    }
}

/// `system prune`: lists what the daemon would remove, asks (on a
/// terminal, unless `-f`), then has it removed.
async fn prune(dirs: &Dirs, printer: &Printer, force: bool, dry_run: bool) -> Result<u8, Failure> {
    let client = client::connect_or_start(dirs).await?;
    printer.progress("looking for what nothing uses");
    let plan = client
        .system_prune(false, None)
        .await
        .map_err(rpc_failure)?;
    printer.clear_progress();
    if plan.is_empty() {
        if printer.json() {
            printer.json_value(&plan);
        } else {
            printer.note("nothing to prune");
        }
        return Ok(0);
    }
    let total: u64 = plan.iter().map(|i| i.bytes).sum();
    if !printer.json() {
        print_table(printer, &["KIND", "NAME", "SIZE", "WHY"], &rows(&plan));
    }
    if dry_run {
        if printer.json() {
            printer.json_value(&plan);
        } else {
            printer.note(&format!("would free {}", human_bytes(total)));
        }
        return Ok(0);
    }
    if !force
        && !confirm(
            printer,
            &format!(
                "system prune would free {} ({})",
                human_bytes(total),
                counts(&plan)
            ),
            "banger system prune -f",
            &format!("remove {} and free {}?", counts(&plan), human_bytes(total)),
        )?
    {
        printer.note("nothing removed");
        return Ok(1);
    }
    printer.progress("removing");
    let keys = plan.iter().map(|i| i.key.clone()).collect();
    let removed = client
        .system_prune(true, Some(keys))
        .await
        .map_err(rpc_failure)?;
    printer.clear_progress();
    if printer.json() {
        printer.json_value(&removed);
    } else {
        let freed: u64 = removed.iter().map(|i| i.bytes).sum();
        printer.line(&format!(
            "removed {}: freed {}",
            counts(&removed),
            human_bytes(freed)
        ));
    }
    if removed.len() < plan.len() {
        printer.note(&format!(
            "{} of {} were not removed (in use meanwhile); the daemon's log says why: {}",
            plan.len() - removed.len(),
            plan.len(),
            dirs.daemon_log().display()
        ));
    }
    Ok(0)
}

/// Table rows: one per item, the OCI layers as one.
fn rows(items: &[PruneItem]) -> Vec<Vec<String>> {
    let mut rows: Vec<Vec<String>> = items
        .iter()
        .filter(|i| i.kind != "layer")
        .map(|i| {
            vec![
                i.kind.clone(),
                i.name.clone(),
                human_bytes(i.bytes),
                i.reason.clone(),
            ]
        })
        .collect();
    let layers: Vec<&PruneItem> = items.iter().filter(|i| i.kind == "layer").collect();
    if !layers.is_empty() {
        rows.push(vec![
            "layer".into(),
            format!("{} OCI layer{}", layers.len(), plural(layers.len())),
            human_bytes(layers.iter().map(|i| i.bytes).sum()),
            "no image in the store was made from them".into(),
        ]);
    }
    rows
}

/// `2 images, 1 cache, 40 layers`.
fn counts(items: &[PruneItem]) -> String {
    let mut counted: Vec<(&str, usize)> = Vec::new();
    for item in items {
        match counted.iter_mut().find(|(k, _)| *k == item.kind) {
            Some((_, n)) => *n += 1,
            None => counted.push((&item.kind, 1)),
        }
    }
    if counted.is_empty() {
        return "nothing".into();
    }
    counted
        .iter()
        .map(|(kind, n)| {
            let noun = match *kind {
                "image-snapshots" => "snapshot dir",
                other => other,
            };
            format!("{n} {noun}{}", plural(*n))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(kind: &str, name: &str, bytes: u64) -> PruneItem {
        PruneItem {
            kind: kind.into(),
            name: name.into(),
            reason: "why".into(),
            bytes,
            key: format!("{kind}:{name}"),
        }
    }

    #[test]
    fn layers_are_one_row_and_counts_read_well() {
        let items = vec![
            item("image", "debian-bookworm (0123456789ab)", 3 << 29),
            item("cache", "repo-abc123", 1 << 20),
            item("layer", "sha256:aa", 1 << 20),
            item("layer", "sha256:bb", 1 << 20),
        ];
        let rows = rows(&items);
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0][2], "1.5G");
        assert_eq!(rows[2][..3], ["layer", "2 OCI layers", "2.0M"]);
        assert_eq!(counts(&items), "1 image, 1 cache, 2 layers");
        assert_eq!(counts(&[item("image-snapshots", "x", 0)]), "1 snapshot dir");
        assert_eq!(counts(&[]), "nothing");
    }
}
