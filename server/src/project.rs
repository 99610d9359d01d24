//! A repository's own settings: `[sandbox]` in its `.banger.toml`, read by
//! `banger vm run PATH` and by `banger lsp` (which lets the editor's
//! settings win, and ignores what runs commands or opens the network until
//! the workspace is trusted).
//!
//! ```toml
//! [sandbox]
//! image = "py-dev"                       # an image by name or id
//! setup = "pip install -r requirements.txt"
//! setup-inputs = ["requirements.txt"]    # files the setup reads
//! nat = true                             # outbound network
//! allow = ["pypi.org", "*.pythonhosted.org"]
//! test-command = "pytest -q"             # banger lsp's test command
//! vm = "my-vm"                           # banger lsp's VM
//! vcpu = 2
//! memory = "2G"
//! cache = false                          # no dependency cache disk
//! ```

use std::path::Path;

use serde::Deserialize;

/// File name of the repository's settings.
pub const FILE: &str = ".banger.toml";

/// `.banger.toml`.
#[derive(Debug, Default, Deserialize)]
struct RepoFile {
    sandbox: Option<Sandbox>,
}

/// `[sandbox]`.
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Sandbox {
    /// banger lsp's VM.
    pub vm: Option<String>,
    /// banger lsp's test command.
    pub test_command: Option<String>,
    /// Virtual CPUs.
    pub vcpu: Option<u32>,
    /// Memory: MiB or a size string.
    pub memory: Option<toml::Value>,
    /// Outbound network.
    pub nat: Option<bool>,
    /// Egress rules.
    pub allow: Option<Vec<String>>,
    /// The image to boot.
    pub image: Option<String>,
    /// A shell command run once in the workspace (with the setup inputs in
    /// it) whose changes to the system become the project's image.
    pub setup: Option<String>,
    /// Files (paths in the repository) the setup reads; the project image
    /// is made again when one changes.
    pub setup_inputs: Option<Vec<String>>,
    /// Mount the project's dependency cache (default true).
    pub cache: Option<bool>,
}

impl Sandbox {
    /// Memory in MiB, when set.
    pub fn memory_mib(&self) -> Result<Option<u64>, String> {
        self.memory
            .as_ref()
            .map(|m| match m {
                toml::Value::Integer(i) => u64::try_from(*i).map_err(|_| format!("bad memory {i}")),
                toml::Value::String(s) => crate::spec::parse_size(s)
                    .map(|b| b >> 20)
                    .map_err(|e| e.to_string()),
                other => Err(format!(
                    "bad memory {other:?}; use MiB (2048) or a size (\"2G\")"
                )),
            })
            .transpose()
    }

    /// Whether it names something that runs commands or reaches the
    /// network (what an untrusted workspace must not get from it).
    pub fn asks_for_trust(&self) -> bool {
        self.test_command.is_some()
            || self.vm.is_some()
            || self.setup.is_some()
            || self.nat == Some(true)
            || self.allow.as_ref().is_some_and(|a| !a.is_empty())
    }
}

/// The repository's `[sandbox]`: `Ok(None)` without a file (or without the
/// table), an error naming the file when it cannot be read or parsed.
pub fn load(repo_root: &Path) -> Result<Option<Sandbox>, String> {
    let path = repo_root.join(FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let file: RepoFile = toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(file.sandbox)
}

/// Checks a setup input path: relative, inside the repository, no `..`,
/// `.` or empty parts.
pub fn validate_input(path: &str) -> Result<(), String> {
    let bad = path.is_empty()
        || path.starts_with('/')
        || path.len() > 4096
        || path.contains('\0')
        || path
            .split('/')
            .any(|part| part.is_empty() || part == "." || part == "..");
    if bad {
        Err(format!(
            "setup input {path:?} is not a path inside the repository (relative, no `..`)"
        ))
    } else {
        Ok(())
    }
}

/// Dependency manifests at a repository's top level: a setup's inputs when
/// `setup-inputs` names none (the setup is made again when one changes).
pub const DEFAULT_INPUTS: &[&str] = &[
    "requirements.txt",
    "requirements-dev.txt",
    "pyproject.toml",
    "poetry.lock",
    "uv.lock",
    "Pipfile",
    "Pipfile.lock",
    "package.json",
    "package-lock.json",
    "yarn.lock",
    "pnpm-lock.yaml",
    "Cargo.toml",
    "Cargo.lock",
    "go.mod",
    "go.sum",
    "Gemfile",
    "Gemfile.lock",
];

/// The inputs of a setup: those named, else the dependency manifests the
/// repository has.
pub fn setup_inputs(repo_root: &Path, named: Option<&[String]>) -> Vec<String> {
    match named {
        Some(named) => named.to_vec(),
        None => DEFAULT_INPUTS
            .iter()
            .filter(|f| repo_root.join(f).is_file())
            .map(|f| f.to_string())
            .collect(),
    }
}

/// What banger takes from a Dev Container definition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DevContainer {
    /// The OCI image (`image`).
    pub image: Option<String>,
    /// `containerEnv` then `remoteEnv`, as `KEY=VALUE`.
    pub env: Vec<String>,
    /// `onCreateCommand`, `updateContentCommand` and `postCreateCommand`,
    /// in that order, as one shell command: the project's setup.
    pub setup: Option<String>,
    /// Fields banger does not carry out (named in a warning).
    pub unsupported: Vec<String>,
    /// The file it came from, relative to the repository.
    pub file: String,
}

/// Reads `.devcontainer/devcontainer.json` (or `.devcontainer.json`);
/// `Ok(None)` when there is neither. `local_env` resolves
/// `${localEnv:NAME}`.
pub fn devcontainer(
    repo_root: &Path,
    local_env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<DevContainer>, String> {
    let Some((file, text)) = [".devcontainer/devcontainer.json", ".devcontainer.json"]
        .iter()
        .find_map(|f| {
            std::fs::read_to_string(repo_root.join(f))
                .ok()
                .map(|t| (*f, t))
        })
    else {
        return Ok(None);
    };
    let value: serde_json::Value =
        serde_json::from_str(&strip_jsonc(&text)).map_err(|e| format!("{file}: {e}"))?;
    let obj = value
        .as_object()
        .ok_or_else(|| format!("{file}: not a JSON object"))?;
    let mut dc = DevContainer {
        file: file.to_string(),
        ..DevContainer::default()
    };
    let mut container_env = Vec::new();
    for (key, v) in obj {
        match key.as_str() {
            "image" => dc.image = v.as_str().map(String::from),
            "containerEnv" | "remoteEnv" => {
                for (k, val) in v.as_object().into_iter().flatten() {
                    let Some(val) = val.as_str() else { continue };
                    let val = substitute(val, local_env, &container_env);
                    if key == "containerEnv" {
                        container_env.push((k.clone(), val.clone()));
                    }
                    dc.env.push(format!("{k}={val}"));
                }
            }
            "onCreateCommand" | "updateContentCommand" | "postCreateCommand" => {}
            // Descriptive, or the editor's own business.
            "name" | "$schema" | "customizations" | "forwardPorts" => {}
            other => dc.unsupported.push(other.to_string()),
        }
    }
    let steps: Vec<String> = [
        "onCreateCommand",
        "updateContentCommand",
        "postCreateCommand",
    ]
    .iter()
    .filter_map(|k| obj.get(*k).and_then(command_line))
    .collect();
    if !steps.is_empty() {
        dc.setup = Some(steps.join(" && "));
    }
    dc.unsupported.sort();
    Ok(Some(dc))
}

/// A lifecycle command as a shell line: a string as it is, an array as
/// quoted words, an object's commands one after the other.
fn command_line(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
        serde_json::Value::Array(words) => {
            let words: Vec<String> = words
                .iter()
                .filter_map(|w| w.as_str())
                .map(|w| format!("'{}'", w.replace('\'', "'\\''")))
                .collect();
            (!words.is_empty()).then(|| words.join(" "))
        }
        serde_json::Value::Object(map) => {
            let parts: Vec<String> = map.values().filter_map(command_line).collect();
            (!parts.is_empty()).then(|| parts.join(" && "))
        }
        _ => None,
    }
}

/// `${localEnv:NAME}` and `${containerEnv:NAME}` in a value.
fn substitute(
    value: &str,
    local_env: &dyn Fn(&str) -> Option<String>,
    container_env: &[(String, String)],
) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let Some(end) = rest[start..].find('}') else {
            out.push_str(&rest[start..]);
            return out;
        };
        let inner = &rest[start + 2..start + end];
        let (var, default) = match inner.split_once(':') {
            Some((kind, name)) => {
                let (name, default) = name.split_once(':').unwrap_or((name, ""));
                let found = match kind {
                    "localEnv" => local_env(name),
                    "containerEnv" => container_env
                        .iter()
                        .find(|(k, _)| k == name)
                        .map(|(_, v)| v.clone()),
                    _ => None,
                };
                (found, default.to_string())
            }
            None => (None, String::new()),
        };
        out.push_str(&var.unwrap_or(default));
        rest = &rest[start + end + 1..];
    }
    out.push_str(rest);
    out
}

/// JSON with comments (`//`, `/* */`) and trailing commas made JSON.
pub fn strip_jsonc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    let mut in_string = false;
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            if c == '\\' {
                if let Some(n) = chars.next() {
                    out.push(n);
                }
            } else if c == '"' {
                in_string = false;
            }
            continue;
        }
        match (c, chars.peek()) {
            ('"', _) => {
                in_string = true;
                out.push(c);
            }
            ('/', Some('/')) => {
                for n in chars.by_ref() {
                    if n == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            ('/', Some('*')) => {
                chars.next();
                let mut prev = ' ';
                for n in chars.by_ref() {
                    if prev == '*' && n == '/' {
                        break;
                    }
                    prev = n;
                }
            }
            _ => out.push(c),
        }
    }
    // Trailing commas: a comma whose next non-space is } or ].
    let bytes: Vec<char> = out.chars().collect();
    let mut cleaned = String::with_capacity(out.len());
    let mut in_string = false;
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if in_string {
            cleaned.push(c);
            if c == '\\' && i + 1 < bytes.len() {
                cleaned.push(bytes[i + 1]);
                i += 2;
                continue;
            }
            if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
            cleaned.push(c);
        } else if c == ',' {
            let next = bytes[i + 1..].iter().find(|n| !n.is_whitespace());
            if !matches!(next, Some('}') | Some(']')) {
                cleaned.push(c);
            }
        } else {
            cleaned.push(c);
        }
        i += 1;
    }
    cleaned
}

/// What a front end asks for a sandbox before the repository's settings
/// fill in what it left unset.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Requested {
    /// Virtual CPUs.
    pub vcpu: Option<u32>,
    /// Memory in MiB.
    pub memory_mib: Option<u64>,
    /// Outbound network.
    pub nat: bool,
    /// Egress rules (`HOST[:PORT]` or `*.DOMAIN`).
    pub allow: Vec<String>,
    /// The image to boot.
    pub image: Option<String>,
}

/// What the repository asks for before its VM is made (`plan`).
#[derive(Debug, Clone)]
pub struct ProjectPlan {
    /// The request with the repository's settings applied.
    pub requested: Requested,
    /// An OCI image to pull first (a Dev Container's `image`); the setup
    /// then starts from it.
    pub pull: Option<String>,
    /// The project's setup.
    pub setup: Option<crate::api::SetupParams>,
    /// Whether its VMs mount its dependency cache (`cache = false` says no).
    pub cache: bool,
    /// The settings taken from the repository, for a progress line.
    pub used: Vec<&'static str>,
    /// What the user should know (Dev Container fields banger ignores).
    pub warnings: Vec<String>,
}

impl Default for ProjectPlan {
    /// Nothing asked of the repository: no pull, no setup, the cache on.
    fn default() -> ProjectPlan {
        ProjectPlan {
            requested: Requested::default(),
            pull: None,
            setup: None,
            cache: true,
            used: Vec::new(),
            warnings: Vec::new(),
        }
    }
}

/// Applies the repository's `.banger.toml` (else its `devcontainer.json`)
/// to what `requested` left unset (pure but for reading those files and,
/// for `${localEnv:}`, the environment). `Err` says what is wrong with
/// the files.
pub fn plan(root: &Path, mut requested: Requested) -> Result<ProjectPlan, String> {
    let sandbox = load(root)?.unwrap_or_default();
    let mut used = Vec::new();
    let mut warnings = Vec::new();
    let mut cache = true;
    if sandbox.cache == Some(false) {
        cache = false;
        used.push("cache = false");
    }
    if requested.vcpu.is_none() && sandbox.vcpu.is_some() {
        requested.vcpu = sandbox.vcpu;
        used.push("vcpu");
    }
    if requested.memory_mib.is_none() {
        let mib = sandbox.memory_mib().map_err(|e| format!("{FILE}: {e}"))?;
        if mib.is_some() {
            requested.memory_mib = mib;
            used.push("memory");
        }
    }
    if !requested.nat && sandbox.nat == Some(true) {
        requested.nat = true;
        used.push("nat");
    }
    if requested.allow.is_empty()
        && let Some(allow) = sandbox.allow.as_ref().filter(|a| !a.is_empty())
    {
        for a in allow {
            a.parse::<crate::net::egress::AllowRule>()
                .map_err(|e| format!("{FILE}: allow: {e}"))?;
        }
        requested.allow = allow.clone();
        used.push("allow");
    }
    let mut command = sandbox.setup.clone().filter(|s| !s.trim().is_empty());
    let mut env = Vec::new();
    let mut pull = None;
    if requested.image.is_none() && sandbox.image.is_some() {
        requested.image = sandbox.image.clone();
        used.push("image");
    }
    // A Dev Container definition, unless .banger.toml already names the
    // image and the setup (or the request names the image).
    if requested.image.is_none() && command.is_none() {
        let local = |k: &str| std::env::var(k).ok();
        if let Some(dc) = devcontainer(root, &local)? {
            if !dc.unsupported.is_empty() {
                warnings.push(format!(
                    "{}: banger does not carry out {}; they are ignored",
                    dc.file,
                    dc.unsupported.join(", ")
                ));
            }
            match &dc.image {
                Some(image) => pull = Some(image.clone()),
                None => warnings.push(format!(
                    "{} names no image (banger cannot build one from a Dockerfile); the default image is used",
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
    let setup = command.map(|command| {
        used.push("setup");
        crate::api::SetupParams {
            repo: root.display().to_string(),
            command,
            inputs: setup_inputs(root, sandbox.setup_inputs.as_deref()),
            image: requested.image.clone(),
            nat: requested.nat,
            allow: requested.allow.clone(),
            vcpu: requested.vcpu,
            memory_mib: requested.memory_mib,
            env,
            cache,
        }
    });
    Ok(ProjectPlan {
        requested,
        pull,
        setup,
        cache,
        used,
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sandbox_table_is_read_and_unknown_keys_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()).unwrap(), None);
        std::fs::write(
            dir.path().join(FILE),
            "[sandbox]\nsetup = \"pip install -r requirements.txt\"\nsetup-inputs = [\"requirements.txt\"]\nimage = \"py\"\nnat = true\nmemory = \"1G\"\n",
        )
        .unwrap();
        let sb = load(dir.path()).unwrap().unwrap();
        assert_eq!(sb.setup.as_deref(), Some("pip install -r requirements.txt"));
        assert_eq!(
            sb.setup_inputs.as_deref(),
            Some(&["requirements.txt".to_string()][..])
        );
        assert_eq!(sb.image.as_deref(), Some("py"));
        assert_eq!(sb.memory_mib().unwrap(), Some(1024));
        assert!(sb.asks_for_trust());
        std::fs::write(dir.path().join(FILE), "[sandbox]\nsetpu = \"x\"\n").unwrap();
        let err = load(dir.path()).unwrap_err();
        assert!(
            err.contains(".banger.toml") && err.contains("setpu"),
            "{err}"
        );
    }

    #[test]
    fn setup_inputs_stay_in_the_repository() {
        for ok in ["requirements.txt", "sub/dir/package.json", ".tool-versions"] {
            validate_input(ok).unwrap();
        }
        for bad in ["", "/etc/passwd", "../x", "a/../../b", "a//b", "./a", "a/"] {
            assert!(validate_input(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_devcontainer_gives_its_image_env_and_setup_and_names_what_it_leaves_out() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(".devcontainer")).unwrap();
        std::fs::write(
            dir.path().join(".devcontainer/devcontainer.json"),
            r#"{
  // a comment, "with quotes"
  "name": "py",
  "image": "127.0.0.1:5000/test/py:1", /* inline */
  "containerEnv": {"APP_MODE": "test", "URL": "http://x//y"},
  "remoteEnv": {"FROM_HOST": "${localEnv:HOST_THING}", "MODE2": "${containerEnv:APP_MODE}-2", "D": "${localEnv:NOPE:dflt}"},
  "onCreateCommand": ["echo", "it's"],
  "postCreateCommand": {"a": "pip install -r requirements.txt", "b": "true"},
  "features": {"ghcr.io/devcontainers/features/node:1": {}},
  "build": {"dockerfile": "Dockerfile"},
}"#,
        )
        .unwrap();
        let local = |k: &str| (k == "HOST_THING").then(|| "h".to_string());
        let dc = devcontainer(dir.path(), &local).unwrap().unwrap();
        assert_eq!(dc.image.as_deref(), Some("127.0.0.1:5000/test/py:1"));
        assert_eq!(
            dc.env,
            // containerEnv first (remoteEnv may use it), each by key.
            [
                "APP_MODE=test",
                "URL=http://x//y",
                "D=dflt",
                "FROM_HOST=h",
                "MODE2=test-2"
            ]
        );
        assert_eq!(
            dc.setup.as_deref(),
            Some("'echo' 'it'\\''s' && pip install -r requirements.txt && true")
        );
        assert_eq!(dc.unsupported, ["build", "features"]);
        assert_eq!(dc.file, ".devcontainer/devcontainer.json");
        let none = tempfile::tempdir().unwrap();
        assert_eq!(devcontainer(none.path(), &local).unwrap(), None);
        std::fs::write(none.path().join(".devcontainer.json"), "{nope").unwrap();
        assert!(
            devcontainer(none.path(), &local)
                .unwrap_err()
                .contains(".devcontainer.json")
        );
    }

    #[test]
    fn setup_inputs_default_to_the_dependency_manifests_present() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("requirements.txt"), "x").unwrap();
        std::fs::write(dir.path().join("go.mod"), "x").unwrap();
        assert_eq!(
            setup_inputs(dir.path(), None),
            ["requirements.txt", "go.mod"]
        );
        assert_eq!(setup_inputs(dir.path(), Some(&["a".to_string()])), ["a"]);
    }
}
