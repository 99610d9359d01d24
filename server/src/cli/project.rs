//! `banger vm run PATH` and the repository's own description of its
//! sandbox: `.banger.toml` (`[sandbox]`: image, setup, network and size
//! where no flag says otherwise), else `.devcontainer/devcontainer.json`
//! (its OCI image, its env and its create commands as the setup). The
//! setup makes, once, the image the VM boots.

use jsonrpsee::async_client::Client;

use super::args::{NetArgs, SpecArgs};
use super::printer::Printer;
use super::{Failure, follow, rpc_failure};
use crate::api::{BangerApiClient, ImagePullParams, OpEvent, SetupParams};

/// What the repository asks for before its VM is made.
#[derive(Debug)]
pub(crate) struct Plan {
    /// An OCI image to pull first (a Dev Container's `image`); the setup
    /// then starts from it.
    pub(crate) pull: Option<String>,
    /// The project's setup.
    pub(crate) setup: Option<SetupParams>,
    /// Whether its VMs mount its dependency cache (`cache = false` in
    /// `.banger.toml` says no).
    pub(crate) cache: bool,
}

impl Default for Plan {
    fn default() -> Plan {
        Plan {
            pull: None,
            setup: None,
            cache: true,
        }
    }
}

/// Applies the repository's settings at `repo` to what flags left unset,
/// and returns what has to happen before the VM is made.
pub(crate) fn apply(
    repo: &str,
    spec: &mut SpecArgs,
    net: &mut NetArgs,
    printer: &Printer,
) -> Result<Plan, Failure> {
    let root = std::path::Path::new(repo);
    let sandbox = crate::project::load(root)
        .map_err(|e| Failure::new(2, format!("{e}; fix it, or pass --no-project")))?
        .unwrap_or_default();
    let mut used = Vec::new();
    let mut plan = Plan::default();
    if sandbox.cache == Some(false) {
        plan.cache = false;
        used.push("cache = false");
    }
    if spec.vcpu.is_none() && sandbox.vcpu.is_some() {
        spec.vcpu = sandbox.vcpu;
        used.push("vcpu");
    }
    if spec.memory.is_none() {
        let mib = sandbox
            .memory_mib()
            .map_err(|e| Failure::new(2, format!("{}: {e}", crate::project::FILE)))?;
        if mib.is_some() {
            spec.memory = mib;
            used.push("memory");
        }
    }
    if !net.nat && sandbox.nat == Some(true) {
        net.nat = true;
        used.push("nat");
    }
    if net.allow.is_empty()
        && let Some(allow) = sandbox.allow.as_ref().filter(|a| !a.is_empty())
    {
        net.allow = allow
            .iter()
            .map(|a| a.parse())
            .collect::<Result<_, String>>()
            .map_err(|e| Failure::new(2, format!("{}: allow: {e}", crate::project::FILE)))?;
        used.push("allow");
    }
    let mut command = sandbox.setup.clone().filter(|s| !s.trim().is_empty());
    let mut env = Vec::new();
    if spec.image.is_none() && sandbox.image.is_some() {
        spec.image = sandbox.image.clone();
        used.push("image");
    }
    // A Dev Container definition, unless .banger.toml already names the
    // image and the setup (or a flag names the image).
    if spec.image.is_none() && command.is_none() {
        let local = |k: &str| std::env::var(k).ok();
        let dc = crate::project::devcontainer(root, &local)
            .map_err(|e| Failure::new(2, format!("{e}; fix it, or pass --no-project")))?;
        if let Some(dc) = dc {
            if !dc.unsupported.is_empty() {
                printer.note(&format!(
                    "warning: {}: banger does not carry out {}; they are ignored",
                    dc.file,
                    dc.unsupported.join(", ")
                ));
            }
            match &dc.image {
                Some(image) => plan.pull = Some(image.clone()),
                None => printer.note(&format!(
                    "warning: {} names no image (banger cannot build one from a Dockerfile); the default image is used",
                    dc.file
                )),
            }
            // Its variables live in the project's image, so even without
            // create commands there is a (trivial) setup to carry them.
            command = dc
                .setup
                .clone()
                .or_else(|| (!dc.env.is_empty()).then(|| ":".into()));
            env = dc.env;
            used.push("devcontainer");
        }
    }
    if let Some(command) = command {
        used.push("setup");
        plan.setup = Some(SetupParams {
            repo: repo.to_string(),
            command,
            inputs: crate::project::setup_inputs(root, sandbox.setup_inputs.as_deref()),
            image: spec.image.clone(),
            nat: net.nat,
            allow: net.allow.iter().map(|a| a.to_string()).collect(),
            vcpu: spec.vcpu,
            memory_mib: spec.memory,
            env,
            cache: plan.cache,
        });
    }
    if !used.is_empty() {
        printer.progress(&format!("repository settings: {}", used.join(", ")));
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
