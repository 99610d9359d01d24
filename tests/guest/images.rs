//! Images beyond the default one, on real guests: an image that adds
//! Debian packages to the default one (made in a guest, sharing the rest),
//! and a project's setup (`.banger.toml`) made once into the project's
//! image, which later runs boot; a changed input makes it again, a failing
//! setup leaves nothing.

use banger_tests::{Env, git, make_repo};

/// A marker that makes this run's images its own: the store is shared
/// between tests and runs, and an image made by an earlier run would be
/// found instead of made.
fn marker() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{:x}{:x}", std::process::id(), nanos % 0xffff_ffff)
}

#[test]
fn an_image_with_added_packages_runs_what_only_it_has() {
    let env = Env::new();
    env.ensure_image();
    let name = format!("hello-{}", marker());
    // Bad input: refused before anything is made.
    let bad = env.banger(&["image", "build", &name, "--packages", "hello;rm"]);
    bad.expect_code(2);
    assert!(
        bad.stderr.contains("not a Debian package name"),
        "{}",
        bad.stderr
    );
    let unnamed = env.banger(&["image", "build", "--packages", "hello"]);
    unnamed.expect_code(2);
    assert!(
        unnamed.stderr.contains("give the new image a name"),
        "{}",
        unnamed.stderr
    );
    env.assert_nothing_left();

    let built = env.banger(&["image", "build", &name, "--packages", "hello"]);
    built.ok();
    assert!(
        built.stdout.starts_with(&format!("{name} ")),
        "{}",
        built.stdout
    );
    assert!(
        built.stderr.contains("installing hello"),
        "{}",
        built.stderr
    );
    let shown: serde_json::Value =
        serde_json::from_str(&env.banger(&["image", "show", &name]).stdout).unwrap();
    assert_eq!(shown["kind"], "derived", "{shown}");
    let step = &shown["manifest"]["source"]["step"];
    assert_eq!(step["packages"], serde_json::json!(["hello"]), "{shown}");
    assert!(
        step["resolved"][0].as_str().unwrap().starts_with("hello="),
        "the installed version is recorded: {shown}"
    );
    // The layer holds what the step added, not a copy of the base.
    assert!(shown["size_bytes"].as_u64().unwrap() < 64 << 20, "{shown}");

    let hello = env.banger(&["vm", "run", "--rm", "--image", &name, "--", "hello"]);
    hello.ok();
    assert_eq!(hello.stdout, "Hello, world!\n");
    // The default image has no such program.
    env.banger(&[
        "vm",
        "run",
        "--rm",
        "--",
        "sh",
        "-c",
        "command -v hello || exit 7",
    ])
    .expect_code(7);

    // In use: not deleted; vm show names it.
    env.banger(&[
        "vm",
        "create",
        "--no-start",
        "--name",
        "user",
        "--image",
        &name,
    ])
    .ok();
    let vm = env.show("user");
    assert_eq!(vm["image"], name.as_str(), "{vm}");
    assert_eq!(vm["image_id"], shown["id"], "{vm}");
    let refused = env.banger(&["image", "delete", &name]);
    refused.expect_code(1);
    assert!(
        refused.stderr.contains("is used by vm user"),
        "{}",
        refused.stderr
    );
    env.banger(&["vm", "delete", "user"]).ok();
    env.banger(&["image", "delete", &name]).ok();
    env.assert_nothing_left();
}

#[test]
fn a_projects_setup_is_made_once_and_boots_later_runs() {
    let env = Env::new();
    env.ensure_image();
    let repo = env.root().join("py-project");
    make_repo(&repo);
    let marker = marker();
    std::fs::write(repo.join("requirements.txt"), "pytest\n").unwrap();
    std::fs::write(
        repo.join("test_calc.py"),
        "def test_adds():\n    assert 1 + 1 == 2\n",
    )
    .unwrap();
    std::fs::write(
        repo.join(".banger.toml"),
        format!(
            "[sandbox]\nsetup = \"pip install -r requirements.txt  # {marker}\"\nsetup-inputs = [\"requirements.txt\"]\nnat = true\n"
        ),
    )
    .unwrap();
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-q", "-m", "python project"]);
    let path = repo.to_str().unwrap();

    // First run: the setup runs (pytest from PyPI, through the VM's NAT),
    // then the tests pass in a VM booted from its image.
    let first = env.banger(&["vm", "run", "--rm", path, "--", "pytest", "-q"]);
    first.ok();
    assert!(first.stdout.contains("1 passed"), "{}", first.stdout);
    assert!(
        first.stderr.contains("running setup: pip install"),
        "{}",
        first.stderr
    );
    assert!(
        first.stderr.contains("Successfully installed"),
        "{}",
        first.stderr
    );
    // Second run: nothing installed, same result.
    let second = env.banger(&["vm", "run", "--rm", path, "--", "pytest", "-q"]);
    second.ok();
    assert!(second.stdout.contains("1 passed"), "{}", second.stdout);
    assert!(
        !second.stderr.contains("running setup"),
        "{}",
        second.stderr
    );
    assert!(
        second.stderr.contains("project image setup-py-project"),
        "{}",
        second.stderr
    );
    env.assert_nothing_left();

    // A changed input makes the image again (this one fails: its output
    // and exit code are shown, and nothing is left of it).
    std::fs::write(
        repo.join("requirements.txt"),
        "no-such-package-banger-test==0\n",
    )
    .unwrap();
    git(&repo, &["commit", "-q", "-am", "bad requirement"]);
    let failed = env.banger(&["vm", "run", "--rm", path, "--", "true"]);
    assert_ne!(failed.code, 0, "{}", failed.stderr);
    assert!(
        failed.stderr.contains("running setup: pip install"),
        "{}",
        failed.stderr
    );
    assert!(
        failed.stderr.contains("failed (exit 1)"),
        "{}",
        failed.stderr
    );
    assert!(
        failed.stderr.contains("no-such-package-banger-test"),
        "the setup's output is shown: {}",
        failed.stderr
    );
    let ours = project_images(&env, &marker);
    assert_eq!(ours.len(), 1, "the failed setup made no image: {ours:?}");
    env.assert_nothing_left();
    // The project's image is removable like any other.
    env.banger(&["image", "delete", &ours[0]]).ok();
}

/// Ids of the images made by a setup whose command holds `marker`.
fn project_images(env: &Env, marker: &str) -> Vec<String> {
    let list: serde_json::Value =
        serde_json::from_str(&env.banger(&["image", "list", "--json"]).stdout).unwrap();
    list.as_array()
        .unwrap()
        .iter()
        .filter(|i| {
            i["manifest"]["source"]["step"]["command"]
                .as_str()
                .is_some_and(|c| c.contains(marker))
        })
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect()
}

/// The project's dependency cache outlives `--rm` runs: the second run's
/// `apt-get install` downloads nothing it already has (apt keeps packages
/// whatever the server says; pip keeps only what HTTP caching headers let
/// it, and this machine's registry proxy sends none, so pip would fetch
/// again here); `banger cache list` shows the cache and `banger cache
/// clear` removes it.
#[test]
fn a_projects_dependency_cache_outlives_rm_runs() {
    let env = Env::new();
    env.ensure_image();
    let repo = env.root().join("cache-project");
    make_repo(&repo);
    let path = repo.to_str().unwrap();
    let install = [
        "vm",
        "run",
        "--rm",
        "--nat",
        path,
        "--",
        "sh",
        "-c",
        "apt-get update -qq && apt-get install -y --no-install-recommends hello && ls /root/.cache/pip >/dev/null",
    ];
    let first = env.banger(&install);
    first.ok();
    assert!(
        first.stdout.contains(" hello amd64 "),
        "a Get: line: {}",
        first.stdout
    );
    let second = env.banger(&install);
    second.ok();
    assert!(
        !second.stdout.contains(" hello amd64 "),
        "{}\n{}",
        second.stdout,
        second.stderr
    );
    assert!(
        second.stdout.contains("Need to get 0 B/"),
        "{}",
        second.stdout
    );
    env.assert_nothing_left();

    let list: serde_json::Value =
        serde_json::from_str(&env.banger(&["cache", "list", "--json"]).stdout).unwrap();
    let ours: Vec<&serde_json::Value> = list
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["repo"] == path)
        .collect();
    assert_eq!(ours.len(), 1, "{list}");
    assert!(ours[0]["bytes"].as_u64().unwrap() > 100 << 10, "{list}");
    let name = ours[0]["name"].as_str().unwrap().to_string();
    env.banger(&["cache", "clear", &name]).ok();
    let list = env.banger(&["cache", "list", "--json"]).stdout;
    assert!(!list.contains(&name), "{list}");
    env.banger(&["cache", "clear", &name]).expect_code(1);
}
