//! `banger vm run PATH` and the repository's `.banger.toml`: its image,
//! network and size settings apply where no flag says otherwise, and its
//! setup makes (once) the image the VM boots.

use jsonrpsee::async_client::Client;

use super::args::{NetArgs, SpecArgs};
use super::printer::Printer;
use super::{Failure, follow, rpc_failure};
use crate::api::{BangerApiClient, OpEvent, SetupParams};

/// Applies `[sandbox]` of the repository at `repo` to what flags left
/// unset, and returns its setup (if any) as a request for the daemon.
pub(crate) fn apply(
    repo: &str,
    spec: &mut SpecArgs,
    net: &mut NetArgs,
    printer: &Printer,
) -> Result<Option<SetupParams>, Failure> {
    let sandbox = crate::project::load(std::path::Path::new(repo))
        .map_err(|e| Failure::new(2, format!("{e}; fix it, or remove the file")))?;
    let Some(sb) = sandbox else {
        return Ok(None);
    };
    let mut used = Vec::new();
    if spec.image.is_none() && sb.image.is_some() {
        spec.image = sb.image.clone();
        used.push("image");
    }
    if spec.vcpu.is_none() && sb.vcpu.is_some() {
        spec.vcpu = sb.vcpu;
        used.push("vcpu");
    }
    if spec.memory.is_none() {
        let mib = sb
            .memory_mib()
            .map_err(|e| Failure::new(2, format!("{}: {e}", crate::project::FILE)))?;
        if mib.is_some() {
            spec.memory = mib;
            used.push("memory");
        }
    }
    if !net.nat && sb.nat == Some(true) {
        net.nat = true;
        used.push("nat");
    }
    if net.allow.is_empty()
        && let Some(allow) = sb.allow.as_ref().filter(|a| !a.is_empty())
    {
        net.allow = allow
            .iter()
            .map(|a| a.parse())
            .collect::<Result<_, String>>()
            .map_err(|e| Failure::new(2, format!("{}: allow: {e}", crate::project::FILE)))?;
        used.push("allow");
    }
    let setup = sb
        .setup
        .as_ref()
        .filter(|s| !s.trim().is_empty())
        .map(|command| {
            used.push("setup");
            SetupParams {
                repo: repo.to_string(),
                command: command.clone(),
                inputs: sb.setup_inputs.clone().unwrap_or_default(),
                image: spec.image.clone(),
                nat: net.nat,
                allow: net.allow.iter().map(|a| a.to_string()).collect(),
                vcpu: spec.vcpu,
                memory_mib: spec.memory,
            }
        });
    if !used.is_empty() {
        printer.progress(&format!("{}: {}", crate::project::FILE, used.join(", ")));
    }
    Ok(setup)
}

/// The project's image: made by its setup now, or the one made before for
/// the same image, command and inputs. Returns its id.
pub(crate) async fn setup_image(
    client: &Client,
    setup: SetupParams,
    printer: &Printer,
) -> Result<String, Failure> {
    printer.progress("project setup: looking for its image");
    let sub = client.image_setup(setup).await.map_err(rpc_failure)?;
    match follow(sub, printer).await? {
        OpEvent::Image { image } => {
            printer.progress(&format!(
                "project image {} ({})",
                image.name,
                &image.id[..12.min(image.id.len())]
            ));
            Ok(image.id)
        }
        other => Err(Failure::new(1, format!("unexpected result {other:?}"))),
    }
}
