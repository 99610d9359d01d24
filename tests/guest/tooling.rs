//! Tooling bootstrap on a real guest: a workspace whose `.mise.toml`
//! declares a tool (esbuild, from the npm registry through mise's `http`
//! backend: a registry is the only outside address tests may reach) gets
//! it installed on its first boot; without `--nat` the run is refused
//! before anything exists; `--no-bootstrap` skips it; `-d` returns only
//! once the tools are in; `vm exec` in the workspace runs through `mise
//! exec`, so the tool is on PATH.

use banger_tests::{Env, git, make_repo};

pub(crate) const MISE_TOML: &str = r#"[tools]
"http:esbuild" = { version = "0.25.9", url = "https://registry.npmjs.org/@esbuild/linux-x64/-/linux-x64-0.25.9.tgz", bin_path = "package/bin" }
"#;

#[test]
fn a_workspace_declaring_tools_gets_them_with_mise() {
    let env = Env::new();
    let repo = env.root().join("tools-repo");
    make_repo(&repo);
    std::fs::write(repo.join(".mise.toml"), MISE_TOML).unwrap();
    git(&repo, &["add", ".mise.toml"]);
    git(&repo, &["commit", "-q", "-m", "tools"]);
    let repo = repo.to_str().unwrap();

    // Without outbound access: refused, nothing made.
    let refused = env.banger(&["vm", "run", "--rm", repo, "--", "true"]);
    refused.expect_code(2);
    assert!(
        refused
            .stderr
            .contains("tooling bootstrap requires --nat (or pass --no-bootstrap to skip)"),
        "{}",
        refused.stderr
    );
    env.assert_nothing_left();

    // Skipped: the workspace runs, without the tool.
    env.banger(&[
        "vm",
        "run",
        "--rm",
        "--no-bootstrap",
        repo,
        "--",
        "sh",
        "-c",
        "command -v esbuild || exit 9",
    ])
    .expect_code(9);

    // -d returns once the tools are in; commands then find them.
    env.banger(&["vm", "run", "--nat", "--name", "tools", "-d", repo])
        .ok();
    let version = env.banger(&["vm", "exec", "tools", "--", "esbuild", "--version"]);
    version.ok();
    assert_eq!(version.stdout.trim(), "0.25.9", "{}", version.stderr);
    // Exact argv still, through mise exec.
    let quoted = env.banger(&["vm", "exec", "tools", "--", "sh", "-c", "echo \"a  b\""]);
    assert_eq!(quoted.stdout, "a  b\n");
    env.banger(&["vm", "delete", "tools"]).ok();
    env.assert_nothing_left();
}
