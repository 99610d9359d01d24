//! `banger vm run PATH` and the repository's own description of its
//! sandbox: `.banger.toml` (`[sandbox]`: image, setup, network and size
//! where no flag says otherwise), else `.devcontainer/devcontainer.json`
//! (its OCI image, its env and its create commands as the setup). The
//! setup makes, once, the image the VM boots.

use jsonrpsee::async_client::Client;

use super::args::{NetArgs, SpecArgs};
use super::printer::Printer;
use super::{Failure, follow, rpc_failure};
use crate::api::{BangerApiClient, ImagePullParams, OpEvent};

pub(crate) use crate::project::ProjectPlan as Plan;

/// Applies the repository's settings at `repo` to what flags left unset,
/// and returns what has to happen before the VM is made.
pub(crate) fn apply(
    repo: &str,
    spec: &mut SpecArgs,
    net: &mut NetArgs,
    printer: &Printer,
) -> Result<Plan, Failure> {
    let requested = crate::project::Requested {
        vcpu: spec.vcpu,
        memory_mib: spec.memory,
        nat: net.nat,
        allow: net.allow.iter().map(|a| a.to_string()).collect(),
        image: spec.image.clone(),
    };
    let plan = crate::project::plan(std::path::Path::new(repo), requested)
        .map_err(|e| Failure::new(2, format!("{e}; fix it, or pass --no-project")))?;
    for w in &plan.warnings {
        printer.note(&format!("warning: {w}"));
    }
    let r = &plan.requested;
    spec.vcpu = r.vcpu;
    spec.memory = r.memory_mib;
    spec.image = r.image.clone();
    net.nat = r.nat;
    if net.allow.is_empty() && !r.allow.is_empty() {
        net.allow = r
            .allow
            .iter()
            .map(|a| a.parse())
            .collect::<Result<_, String>>()
            .map_err(|e| Failure::new(2, format!("{}: allow: {e}", crate::project::FILE)))?;
    }
    if !plan.used.is_empty() {
        printer.progress(&format!("repository settings: {}", plan.used.join(", ")));
    }
    Ok(plan)
}

/// Carries out the plan: pulls the image, makes (or finds) the project's
/// image. Returns the image the VM boots, when the plan names one.
pub(crate) async fn prepare(
    client: &Client,
    plan: Plan,
    printer: &Printer,
) -> Result<Option<String>, Failure> {
    let mut image = None;
    if let Some(reference) = plan.pull {
        printer.progress(&format!("pulling {reference}"));
        let sub = client
            .image_pull(ImagePullParams {
                reference,
                name: None,
            })
            .await
            .map_err(rpc_failure)?;
        if let OpEvent::Image { image: pulled } = follow(sub, printer).await? {
            image = Some(pulled.id);
        }
    }
    if let Some(mut setup) = plan.setup {
        if image.is_some() {
            setup.image = image.clone();
        }
        printer.progress("project setup: looking for its image");
        let sub = client.image_setup(setup).await.map_err(rpc_failure)?;
        match follow(sub, printer).await? {
            OpEvent::Image { image: made } => {
                printer.progress(&format!(
                    "project image {} ({})",
                    made.name,
                    &made.id[..12.min(made.id.len())]
                ));
                image = Some(made.id);
            }
            other => return Err(Failure::new(1, format!("unexpected result {other:?}"))),
        }
    }
    Ok(image)
}
