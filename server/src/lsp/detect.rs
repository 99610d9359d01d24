//! Which test command a repository uses, and how a run is narrowed.

use std::path::Path;

/// A test runner banger knows how to narrow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runner {
    /// `cargo test`.
    Cargo,
    /// `go test ./...`.
    Go,
    /// `npm test`.
    Npm,
    /// `pytest`.
    Pytest,
    /// `bats test`.
    Bats,
    /// `make test`.
    Make,
    /// A configured command line.
    Custom,
}

/// The command a run executes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestCommand {
    /// The shell command line (shown to the user).
    pub line: String,
    /// The runner, for narrowing.
    pub runner: Runner,
}

impl TestCommand {
    /// The guest argv for a run, narrowed by `filter` (a test name or a
    /// file). The filter travels as an argument, never spliced into the
    /// command line.
    pub fn argv(&self, filter: Option<&str>) -> Vec<String> {
        let Some(f) = filter.filter(|f| !f.is_empty()) else {
            return vec!["sh".into(), "-c".into(), self.line.clone()];
        };
        let looks_like_file = f.contains('/') || f.contains('.');
        let extra: Vec<&str> = match self.runner {
            Runner::Go => vec!["-run", f],
            Runner::Npm => vec!["--", f],
            Runner::Pytest if !looks_like_file => vec!["-k", f],
            Runner::Bats if !looks_like_file => vec!["-f", f],
            _ => vec![f],
        };
        let mut argv = vec![
            "sh".into(),
            "-c".into(),
            format!("{} \"$@\"", self.line),
            "banger-test".into(),
        ];
        argv.extend(extra.into_iter().map(String::from));
        argv
    }
}

fn has_test_script(package_json: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(package_json) else {
        return false;
    };
    let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
        return false;
    };
    v.pointer("/scripts/test")
        .and_then(|t| t.as_str())
        // npm init's placeholder fails on purpose; it is not a test suite.
        .is_some_and(|t| !t.contains("no test specified"))
}

fn makefile_has_test_target(root: &Path) -> bool {
    ["GNUmakefile", "makefile", "Makefile"].iter().any(|m| {
        std::fs::read_to_string(root.join(m)).is_ok_and(|text| {
            text.lines().any(|l| {
                l.strip_prefix("test").is_some_and(|rest| {
                    rest.trim_start().starts_with(':') && !rest.trim_start().starts_with(":=")
                })
            })
        })
    })
}

fn has_bats(root: &Path) -> bool {
    std::fs::read_dir(root.join("test"))
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| e.path().extension().is_some_and(|x| x == "bats"))
}

/// The configured command, else the one detected from the repository's
/// files; `None` when neither says.
pub fn test_command(root: &Path, configured: Option<&str>) -> Option<TestCommand> {
    if let Some(line) = configured.filter(|l| !l.trim().is_empty()) {
        return Some(TestCommand {
            line: line.to_string(),
            runner: Runner::Custom,
        });
    }
    let has = |f: &str| root.join(f).is_file();
    let (line, runner) = if has("Cargo.toml") {
        ("cargo test", Runner::Cargo)
    } else if has("go.mod") {
        ("go test ./...", Runner::Go)
    } else if has_test_script(&root.join("package.json")) {
        ("npm test", Runner::Npm)
    } else if has("pyproject.toml") || has("pytest.ini") {
        ("pytest", Runner::Pytest)
    } else if has_bats(root) {
        ("bats test", Runner::Bats)
    } else if makefile_has_test_target(root) {
        ("make test", Runner::Make)
    } else {
        return None;
    };
    Some(TestCommand {
        line: line.into(),
        runner,
    })
}

/// What to tell a user whose repository has no test command.
pub const NONE_FOUND: &str = "no test command found: set banger.testCommand (or test-command under [sandbox] in .banger.toml); banger detects Cargo.toml, go.mod, package.json with a test script, pyproject.toml/pytest.ini, test/*.bats and a Makefile test target";

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (p, c) in files {
            let p = dir.path().join(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, c).unwrap();
        }
        dir
    }

    fn line(files: &[(&str, &str)]) -> Option<String> {
        let dir = repo(files);
        test_command(dir.path(), None).map(|c| c.line)
    }

    #[test]
    fn detection_follows_the_repos_files() {
        assert_eq!(line(&[("Cargo.toml", "")]).as_deref(), Some("cargo test"));
        assert_eq!(line(&[("go.mod", "")]).as_deref(), Some("go test ./..."));
        assert_eq!(
            line(&[("package.json", r#"{"scripts":{"test":"jest"}}"#)]).as_deref(),
            Some("npm test")
        );
        assert_eq!(
            line(&[(
                "package.json",
                r#"{"scripts":{"test":"echo \"Error: no test specified\" && exit 1"}}"#
            )]),
            None
        );
        assert_eq!(line(&[("pytest.ini", "")]).as_deref(), Some("pytest"));
        assert_eq!(line(&[("test/a.bats", "")]).as_deref(), Some("bats test"));
        assert_eq!(
            line(&[("Makefile", "all:\n\ttrue\ntest: all\n\t./t.sh\n")]).as_deref(),
            Some("make test")
        );
        assert_eq!(line(&[("Makefile", "testing:\n\ttrue\n")]), None);
        assert_eq!(line(&[("README", "")]), None);
        let dir = repo(&[("Cargo.toml", "")]);
        assert_eq!(
            test_command(dir.path(), Some("make check")).unwrap().line,
            "make check"
        );
    }

    #[test]
    fn filters_travel_as_arguments() {
        let cmd = |runner, line: &str| TestCommand {
            line: line.into(),
            runner,
        };
        assert_eq!(
            cmd(Runner::Cargo, "cargo test").argv(None),
            ["sh", "-c", "cargo test"]
        );
        assert_eq!(
            cmd(Runner::Cargo, "cargo test").argv(Some("it's; rm -rf /")),
            [
                "sh",
                "-c",
                "cargo test \"$@\"",
                "banger-test",
                "it's; rm -rf /"
            ]
        );
        assert_eq!(
            cmd(Runner::Go, "go test ./...").argv(Some("TestX"))[4..],
            ["-run", "TestX"]
        );
        assert_eq!(
            cmd(Runner::Pytest, "pytest").argv(Some("name"))[4..],
            ["-k", "name"]
        );
        assert_eq!(
            cmd(Runner::Pytest, "pytest").argv(Some("tests/test_a.py"))[4..],
            ["tests/test_a.py"]
        );
    }
}
