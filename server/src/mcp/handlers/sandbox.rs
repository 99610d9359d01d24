//! Sandboxes: create (the repository's own setup first, under a lease),
//! list, stop, delete.

use std::path::Path;

use rmcp::RoleServer;
use rmcp::service::RequestContext;

use crate::api::{
    BangerApiClient, CreateParams, ImagePullParams, LeaseEvent, OpEvent, PrepareParams, VmView,
};
use crate::mcp::server::{Reply, Reporter, Sandboxes, daemon_error};
use crate::mcp::tools::*;

impl Sandboxes {
    pub(in crate::mcp) async fn create(
        &self,
        args: CreateArgs,
        ctx: &RequestContext<RoleServer>,
    ) -> Reply<Created> {
        let root = self.root().to_path_buf();
        if let Some(repo) = &args.repo {
            let asked = std::fs::canonicalize(repo).map_err(|e| format!("repo {repo:?}: {e}"))?;
            let asked_root = crate::workspace::select(&asked, false)
                .map(|s| std::fs::canonicalize(&s.root).unwrap_or(s.root))
                .map_err(|_| {
                    format!(
                        "repo {repo:?} is not inside a git repository; this server serves {}",
                        root.display()
                    )
                })?;
            if asked_root != root {
                return Err(format!(
                    "this server serves only {}; start another with: banger mcp --repo {}",
                    root.display(),
                    asked_root.display()
                ));
            }
        }
        let daemon = self.daemon().await?;
        let report = Reporter::new(ctx);
        let requested = crate::project::Requested {
            vcpu: args.vcpu,
            memory_mib: args.memory_mib,
            nat: args.nat.unwrap_or(false),
            allow: args.allow.clone().unwrap_or_default(),
            image: args.image.clone(),
        };
        for a in &requested.allow {
            a.parse::<crate::net::egress::AllowRule>()
                .map_err(|e| format!("allow {a:?}: {e}"))?;
        }
        let plan = crate::project::plan(&root, requested)?;
        let mut notes: Vec<String> = plan.warnings.clone();
        if !plan.used.is_empty() {
            notes.push(format!("repository settings: {}", plan.used.join(", ")));
        }
        let name = match args.name.clone() {
            Some(n) => n,
            None => {
                let vms = daemon.vm_list(true).await.map_err(daemon_error)?;
                let taken: Vec<String> = vms.into_iter().map(|v| v.name).collect();
                fresh_name(&root, &taken)
            }
        };
        let mut image = plan.requested.image.clone();
        if let Some(reference) = &plan.pull {
            report.say(format!("pulling {reference}")).await;
            let sub = daemon
                .image_pull(ImagePullParams {
                    reference: reference.clone(),
                    name: None,
                })
                .await
                .map_err(daemon_error)?;
            if let OpEvent::Image { image: pulled } = self.follow(sub, &report).await? {
                image = Some(pulled.id);
            }
        }
        if let Some(mut setup) = plan.setup.clone() {
            if image.is_some() {
                setup.image = image.clone();
            }
            report.say("project setup: looking for its image").await;
            let sub = daemon.image_setup(setup).await.map_err(daemon_error)?;
            match self.follow(sub, &report).await? {
                OpEvent::Image { image: made } => image = Some(made.id),
                other => return Err(format!("unexpected result {other:?}")),
            }
        }
        // Under a lease: a create interrupted (the call cancelled, the
        // client gone) leaves nothing; released once the workspace is in.
        let token = crate::spec::random_hex(16).map_err(|e| e.to_string())?;
        let mut lease = daemon
            .lease_hold(token.clone())
            .await
            .map_err(daemon_error)?;
        match lease.next().await {
            Some(Ok(LeaseEvent::Held)) => {}
            other => return Err(format!("bangerd did not hold the lease: {other:?}")),
        }
        report.say(format!("creating sandbox {name}")).await;
        let r = &plan.requested;
        let sub = daemon
            .vm_create(CreateParams {
                name: Some(name.clone()),
                vcpu: r.vcpu,
                memory_mib: r.memory_mib,
                nat: r.nat,
                allow: r.allow.clone(),
                image,
                cache: plan.cache.then(|| root.display().to_string()),
                start: true,
                delete_on_failure: true,
                lease: Some(token.clone()),
                ..CreateParams::default()
            })
            .await
            .map_err(daemon_error)?;
        let vm = match self.follow(sub, &report).await? {
            OpEvent::Vm { vm } => *vm,
            other => return Err(format!("unexpected result {other:?}")),
        };
        report.say("shipping the workspace").await;
        let shipped = daemon
            .vm_workspace_prepare(PrepareParams {
                vm: vm.id.clone(),
                path: root.display().to_string(),
                ..PrepareParams::default()
            })
            .await;
        let shipped = match shipped {
            Ok(p) => p,
            Err(e) => {
                // Deleted now rather than when the lease ends, so a caller
                // that sees the error sees no sandbox.
                let _ = daemon.vm_delete(vm.id.clone()).await;
                return Err(daemon_error(e));
            }
        };
        let plan_files = shipped.files.len();
        // The workspace's declared tools (mise), as `vm run PATH` and
        // `banger lsp` install them: only with a way out.
        if crate::daemon::tooling::declares_tools(shipped.files.iter().map(|f| f.path.as_str())) {
            if vm.network.mode == "none" {
                notes.push("this workspace declares tools for mise; create the sandbox with nat (or allow) to install them".into());
            } else {
                report
                    .say("installing the workspace's tools with mise")
                    .await;
                if let Err(e) = daemon.vm_bootstrap(vm.id.clone()).await {
                    let _ = daemon.vm_delete(vm.id.clone()).await;
                    return Err(daemon_error(e));
                }
            }
        }
        if self.shared.ephemeral {
            // Held for the server's life: the sandbox goes with it.
            self.shared
                .held
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(lease);
            notes.push("this server is --ephemeral: the sandbox is removed when it ends".into());
        } else {
            daemon
                .lease_release(token, vm.id.clone())
                .await
                .map_err(daemon_error)?;
        }
        let view = daemon.vm_show(vm.id.clone()).await.map_err(daemon_error)?;
        let text = format!(
            "sandbox {name} is running with {plan_files} files of {} in {}",
            root.display(),
            crate::workspace::transfer::GUEST_PATH
        );
        Ok((
            text,
            Created {
                name,
                sandbox: sandbox_view(&view),
                files: plan_files,
                notes,
            },
        ))
    }

    /// Follows a daemon operation, its phases as progress.
    /// Follows a daemon operation, its phases reported as progress.
    pub(in crate::mcp) async fn follow(
        &self,
        mut sub: jsonrpsee::core::client::Subscription<OpEvent>,
        report: &Reporter,
    ) -> Result<OpEvent, String> {
        while let Some(ev) = sub.next().await {
            match ev.map_err(|e| e.to_string())? {
                OpEvent::Progress { message } => report.say(message).await,
                OpEvent::Failed { message, .. } => return Err(message),
                done => return Ok(done),
            }
        }
        Err("bangerd closed the operation before it finished".into())
    }

    pub(in crate::mcp) async fn list_sandboxes(&self) -> Reply<SandboxList> {
        let daemon = self.daemon().await?;
        let vms = daemon.vm_list(true).await.map_err(daemon_error)?;
        let sandboxes: Vec<Sandbox> = vms
            .iter()
            .filter(|v| {
                v.workspace
                    .as_ref()
                    .is_some_and(|w| Path::new(&w.source) == self.root())
            })
            .map(sandbox_view)
            .collect();
        let text = if sandboxes.is_empty() {
            "no sandboxes yet; sandbox_create makes one".to_string()
        } else {
            sandboxes
                .iter()
                .map(|s| format!("{} {}\n", s.name, s.state))
                .collect()
        };
        Ok((
            text,
            SandboxList {
                repo: self.root().display().to_string(),
                sandboxes,
            },
        ))
    }

    pub(in crate::mcp) async fn delete(&self, args: SandboxArg) -> Reply<Done> {
        let (daemon, view, _) = self.sandbox(&args.sandbox).await?;
        daemon.vm_delete(view.id).await.map_err(daemon_error)?;
        Ok((
            format!("deleted sandbox {}", args.sandbox),
            Done {
                name: args.sandbox.clone(),
                state: "deleted".into(),
            },
        ))
    }

    pub(in crate::mcp) async fn stop(&self, args: SandboxArg) -> Reply<Done> {
        let (daemon, view, _) = self.sandbox(&args.sandbox).await?;
        let v = daemon.vm_stop(view.id).await.map_err(daemon_error)?;
        Ok((
            format!("sandbox {} is {}", args.sandbox, v.state),
            Done {
                name: args.sandbox.clone(),
                state: v.state,
            },
        ))
    }
}

/// A name for a new sandbox of the repository: its base name, else the
/// base with the first free number (pure).
pub(in crate::mcp) fn fresh_name(root: &Path, taken: &[String]) -> String {
    let base = crate::lsp::settings::base_vm_name(root);
    if !taken.contains(&base) {
        return base;
    }
    (2..)
        .map(|n| format!("{base}-{n}"))
        .find(|n| !taken.contains(n))
        .unwrap_or(base)
}

pub(in crate::mcp) fn sandbox_view(v: &VmView) -> Sandbox {
    Sandbox {
        name: v.name.clone(),
        state: v.state.clone(),
        image: v.image.clone(),
        guest_path: v
            .workspace
            .as_ref()
            .map(|w| w.guest_path.clone())
            .unwrap_or_default(),
        network: v.network.mode.clone(),
        vcpu: v.vcpu,
        memory_mib: v.memory_mib,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_names_take_the_first_free_number() {
        let root = Path::new("/src/My App");
        assert_eq!(fresh_name(root, &[]), "my-app");
        let taken = vec!["my-app".to_string(), "my-app-2".to_string()];
        assert_eq!(fresh_name(root, &taken), "my-app-3");
    }
}
