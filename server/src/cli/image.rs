//! `banger image`: build, list, show, delete guest images.

use super::args::ImageCommand;
use super::printer::Printer;
use super::{Failure, follow, pretty, print_table, rpc_failure};
use crate::api::{BangerApiClient, ImageView, OpEvent};
use crate::client;
use crate::paths::Dirs;

pub(crate) async fn run(cmd: ImageCommand, dirs: &Dirs, printer: &Printer) -> Result<u8, Failure> {
    let client = client::connect_or_start(dirs).await?;
    match cmd {
        ImageCommand::Build {
            name,
            from,
            packages,
            suite,
        } => {
            let params = crate::api::ImageBuildParams {
                name,
                from,
                packages,
                suite,
            };
            let sub = client.image_build(params).await.map_err(rpc_failure)?;
            if let OpEvent::Image { image } = follow(sub, printer).await? {
                printer.clear_progress();
                printer.line(&format!("{} {}", image.name, image.id));
            }
        }
        ImageCommand::Pull { reference, name } => {
            let params = crate::api::ImagePullParams { reference, name };
            let sub = client.image_pull(params).await.map_err(rpc_failure)?;
            if let OpEvent::Image { image } = follow(sub, printer).await? {
                printer.clear_progress();
                printer.line(&format!("{} {}", image.name, image.id));
            }
        }
        ImageCommand::Import { file, name } => {
            let params = crate::api::ImageImportParams {
                file: super::absolute(&file),
                name,
            };
            let sub = client.image_import(params).await.map_err(rpc_failure)?;
            if let OpEvent::Image { image } = follow(sub, printer).await? {
                printer.clear_progress();
                printer.line(&format!("{} {}", image.name, image.id));
            }
        }
        ImageCommand::List => {
            let images = client.image_list().await.map_err(rpc_failure)?;
            if printer.json() {
                printer.line(&pretty(&images));
            } else {
                let rows: Vec<Vec<String>> = images.iter().map(image_row).collect();
                print_table(
                    printer,
                    &["NAME", "ID", "KIND", "KERNEL", "SIZE", "CREATED"],
                    &rows,
                );
            }
        }
        ImageCommand::Show { image } => {
            let image = client.image_show(image).await.map_err(rpc_failure)?;
            // Always JSON (a manifest has no table form).
            printer.line(&pretty(&image));
        }
        ImageCommand::Warm {
            image,
            vcpu,
            memory,
            disk_size,
            system_overlay_size,
        } => {
            let params = crate::api::CreateParams {
                image,
                vcpu,
                memory_mib: memory,
                disk_bytes: disk_size,
                system_overlay_bytes: system_overlay_size,
                start: true,
                delete_on_failure: true,
                ..crate::api::CreateParams::default()
            };
            // A VM of that shape, restored (the snapshot made first if
            // there is none), then removed; its lease removes it if this
            // is interrupted.
            let (vm, _lease) = super::vm::create(&client, params, printer, false).await?;
            let deleted = client.vm_delete(vm.id.clone()).await.map_err(rpc_failure);
            printer.clear_progress();
            let Some(snapshot) = vm.restored_from else {
                return Err(Failure::new(
                    1,
                    format!(
                        "image {} has no snapshot: its vm booted cold (the messages above say why)",
                        vm.image
                    ),
                ));
            };
            deleted?;
            printer.line(&format!("{} {}", vm.image, snapshot));
        }
        ImageCommand::Delete { image } => {
            client
                .image_delete(image.clone())
                .await
                .map_err(rpc_failure)?;
            printer.line(&image);
        }
    }
    Ok(0)
}

/// `banger cache`: projects' dependency caches.
pub(crate) async fn cache(
    cmd: super::args::CacheCommand,
    dirs: &Dirs,
    printer: &Printer,
) -> Result<u8, Failure> {
    let client = client::connect_or_start(dirs).await?;
    match cmd {
        super::args::CacheCommand::List => {
            let caches = client.cache_list().await.map_err(rpc_failure)?;
            if printer.json() {
                printer.line(&pretty(&caches));
            } else {
                let rows: Vec<Vec<String>> = caches
                    .iter()
                    .map(|c| {
                        vec![
                            c.name.clone(),
                            format!("{}M", c.bytes >> 20),
                            if c.used_by.is_empty() {
                                "-".into()
                            } else {
                                c.used_by.join(",")
                            },
                            c.repo.clone(),
                        ]
                    })
                    .collect();
                print_table(printer, &["NAME", "SIZE", "VMS", "REPOSITORY"], &rows);
            }
        }
        super::args::CacheCommand::Clear { names, all } => {
            let names = if all {
                client
                    .cache_list()
                    .await
                    .map_err(rpc_failure)?
                    .into_iter()
                    .map(|c| c.name)
                    .collect()
            } else {
                names
            };
            for name in names {
                client
                    .cache_clear(name.clone())
                    .await
                    .map_err(rpc_failure)?;
                printer.line(&name);
            }
        }
    }
    Ok(0)
}

fn image_row(i: &ImageView) -> Vec<String> {
    vec![
        i.name.clone(),
        i.id[..12.min(i.id.len())].to_string(),
        match &i.parent {
            Some(parent) => format!("{} of {parent}", i.kind),
            None => i.kind.clone(),
        },
        i.kernel_version.clone(),
        format!("{}M", i.size_bytes >> 20),
        utc_time(i.created_at),
    ]
}

/// `2026-11-22 08:59 UTC` from unix seconds (civil-from-days, no time
/// zone database needed).
fn utc_time(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        rem / 3600,
        (rem % 3600) / 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_times() {
        assert_eq!(utc_time(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc_time(1_795_338_181), "2026-11-22 09:03 UTC");
        assert_eq!(utc_time(951_782_400), "2000-02-29 00:00 UTC");
    }
}
