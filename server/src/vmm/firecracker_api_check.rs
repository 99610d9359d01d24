//! Checks every request the Firecracker driver can send against
//! Firecracker's own API description (v1.16.1, vendored next to this file
//! from the official swagger document): path and method exist, and each
//! body validates against its definition — types, enums, bounds, `required`
//! and no properties the definition does not declare (Firecracker rejects
//! unknown fields).

use serde_json::Value;
use yaml_rust2::{Yaml, YamlLoader};

use super::firecracker::{ApiCall, Firecracker};

const API_DESCRIPTION: &str = include_str!("firecracker-v1.16.1.yaml");

fn to_json(y: &Yaml) -> Value {
    match y {
        Yaml::Real(s) => s.parse::<f64>().map(Value::from).unwrap_or(Value::Null),
        Yaml::Integer(i) => Value::from(*i),
        Yaml::String(s) => Value::from(s.clone()),
        Yaml::Boolean(b) => Value::from(*b),
        Yaml::Array(a) => Value::Array(a.iter().map(to_json).collect()),
        Yaml::Hash(h) => Value::Object(
            h.iter()
                .map(|(k, v)| {
                    let key = match k {
                        Yaml::String(s) => s.clone(),
                        Yaml::Integer(i) => i.to_string(),
                        other => format!("{other:?}"),
                    };
                    (key, to_json(v))
                })
                .collect(),
        ),
        _ => Value::Null,
    }
}

struct ApiDescription {
    doc: Value,
}

impl ApiDescription {
    fn load() -> ApiDescription {
        let docs = YamlLoader::load_from_str(API_DESCRIPTION).expect("API description parses");
        let doc = to_json(&docs[0]);
        assert_eq!(doc["info"]["version"], "1.16.1");
        ApiDescription { doc }
    }

    /// The operation for a concrete path, matching `{param}` segments.
    fn operation(&self, method: &str, path: &str) -> Option<&Value> {
        let paths = self.doc["paths"].as_object()?;
        let want: Vec<&str> = path.split('/').collect();
        for (template, ops) in paths {
            let have: Vec<&str> = template.split('/').collect();
            let matches = have.len() == want.len()
                && have
                    .iter()
                    .zip(&want)
                    .all(|(h, w)| h == w || (h.starts_with('{') && !w.is_empty()));
            if matches {
                return ops.get(method.to_ascii_lowercase());
            }
        }
        None
    }

    fn resolve<'a>(&'a self, schema: &'a Value) -> &'a Value {
        match schema.get("$ref").and_then(Value::as_str) {
            Some(r) => {
                let name = r.strip_prefix("#/definitions/").expect("local ref");
                &self.doc["definitions"][name]
            }
            None => schema,
        }
    }

    /// Validates a call; returns every violation found.
    fn check(&self, call: &ApiCall) -> Vec<String> {
        let Some(op) = self.operation(call.method, &call.path) else {
            return vec![format!("{} {} is not in the API", call.method, call.path)];
        };
        let body_param = op["parameters"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["in"] == "body"));
        let Some(param) = body_param else {
            return vec![format!("{} {} takes no body", call.method, call.path)];
        };
        let mut errors = Vec::new();
        self.validate(&param["schema"], &call.body, "body", &mut errors);
        errors
    }

    fn validate(&self, schema: &Value, value: &Value, at: &str, errors: &mut Vec<String>) {
        let schema = self.resolve(schema);
        if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
            && !allowed.contains(value)
        {
            errors.push(format!("{at}: {value} is not one of {allowed:?}"));
        }
        let ty = schema
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("object");
        match ty {
            "object" => {
                let Some(obj) = value.as_object() else {
                    errors.push(format!("{at}: expected an object, got {value}"));
                    return;
                };
                let props = schema.get("properties").and_then(Value::as_object);
                for req in schema["required"].as_array().into_iter().flatten() {
                    let req = req.as_str().unwrap_or_default();
                    if !obj.contains_key(req) {
                        errors.push(format!("{at}: required property {req:?} is missing"));
                    }
                }
                let extra_allowed = match schema.get("additionalProperties") {
                    Some(Value::Bool(b)) => *b,
                    Some(Value::Object(_)) => true,
                    _ => false,
                };
                for (k, v) in obj {
                    match props.and_then(|p| p.get(k)) {
                        Some(prop) => self.validate(prop, v, &format!("{at}.{k}"), errors),
                        None if extra_allowed => {}
                        None => {
                            errors.push(format!("{at}: property {k:?} is not in the definition"))
                        }
                    }
                }
            }
            "string" => {
                if !value.is_string() {
                    errors.push(format!("{at}: expected a string, got {value}"));
                }
            }
            "boolean" => {
                if !value.is_boolean() {
                    errors.push(format!("{at}: expected a boolean, got {value}"));
                }
            }
            "integer" => match value.as_i64() {
                None => errors.push(format!("{at}: expected an integer, got {value}")),
                Some(n) => {
                    if let Some(min) = schema.get("minimum").and_then(Value::as_i64)
                        && n < min
                    {
                        errors.push(format!("{at}: {n} is below the minimum {min}"));
                    }
                    if let Some(max) = schema.get("maximum").and_then(Value::as_i64)
                        && n > max
                    {
                        errors.push(format!("{at}: {n} is above the maximum {max}"));
                    }
                }
            },
            "array" => match value.as_array() {
                None => errors.push(format!("{at}: expected an array, got {value}")),
                Some(items) => {
                    for (i, item) in items.iter().enumerate() {
                        self.validate(&schema["items"], item, &format!("{at}[{i}]"), errors);
                    }
                }
            },
            other => errors.push(format!(
                "{at}: schema type {other} is not handled by this check"
            )),
        }
    }
}

fn all_calls() -> Vec<ApiCall> {
    let mut calls = Vec::new();
    for (vcpu, memory_mib, networked) in [(1, 256, false), (2, 1024, true), (32, 65536, true)] {
        let mut plan = super::firecracker::tests::plan();
        plan.vcpu = vcpu;
        plan.memory_mib = memory_mib;
        plan.network = networked.then_some(crate::vmm::network::NetAttach { keeper_pid: 1 });
        calls.extend(Firecracker::config_requests(&plan));
    }
    calls.push(Firecracker::pause_request(true));
    calls.push(Firecracker::pause_request(false));
    let mut template = super::firecracker::tests::plan();
    template.memory = crate::vmm::Memory::Template("/snap/memory".into());
    calls.extend(Firecracker::config_requests(&template));
    let (memory, state) = (
        std::path::Path::new("/snap/memory"),
        std::path::Path::new("/snap/state"),
    );
    calls.extend(Firecracker::save_requests(memory, state));
    calls.extend(Firecracker::restore_requests(
        &super::firecracker::tests::plan(),
        memory,
        state,
    ));
    calls
}

#[test]
fn snapshot_calls_name_the_files_and_drives_relative_to_the_vm() {
    let mut template = super::firecracker::tests::plan();
    template.memory = crate::vmm::Memory::Template("/snap/memory".into());
    let calls = Firecracker::config_requests(&template);
    let drive = |id: &str| {
        calls
            .iter()
            .find(|c| c.path == format!("/drives/{id}"))
            .unwrap()
            .body["path_on_host"]
            .clone()
    };
    // Writable drives by name (each restored VM opens its own copies);
    // the shared read-only base by its full path.
    assert_eq!(drive("overlay"), "overlay.ext4");
    assert_eq!(drive("work"), "work.ext4");
    assert_eq!(drive("rootfs"), "/img/rootfs.ext4");
    let booted = Firecracker::config_requests(&super::firecracker::tests::plan());
    let work = booted.iter().find(|c| c.path == "/drives/work").unwrap();
    assert_eq!(work.body["path_on_host"], "/vm/work.ext4");

    let memory = std::path::Path::new("/snap/memory");
    let state = std::path::Path::new("/snap/state");
    let save = Firecracker::save_requests(memory, state);
    assert_eq!((save[0].method, save[0].path.as_str()), ("PATCH", "/vm"));
    assert_eq!(save[1].body["mem_file_path"], "/snap/memory");
    let load = Firecracker::restore_requests(&super::firecracker::tests::plan(), memory, state);
    let load = load.last().unwrap();
    assert_eq!(load.path, "/snapshot/load");
    assert_eq!(load.body["mem_backend"]["backend_path"], "/snap/memory");
    assert_eq!(
        load.body["vsock_override"]["uds_path"],
        "/run/vm/vsock.sock"
    );
    assert_eq!(load.body["resume_vm"], true);
}

#[test]
fn every_request_the_driver_sends_validates() {
    let api = ApiDescription::load();
    for call in all_calls() {
        let errors = api.check(&call);
        assert!(
            errors.is_empty(),
            "{} {} {}: {errors:?}",
            call.method,
            call.path,
            call.body
        );
        if let Some(id) = call.path.strip_prefix("/drives/") {
            assert_eq!(call.body["drive_id"], id, "path and body drive ids differ");
        }
        if let Some(id) = call.path.strip_prefix("/network-interfaces/") {
            assert_eq!(
                call.body["iface_id"], id,
                "path and body interface ids differ"
            );
        }
    }
}

#[test]
fn deliberately_wrong_bodies_fail() {
    let api = ApiDescription::load();
    let good = Firecracker::config_requests(&super::firecracker::tests::plan());
    let find = |path: &str| good.iter().find(|c| c.path == path).unwrap().clone();
    let mut cases: Vec<(ApiCall, &str)> = Vec::new();

    let mut c = find("/machine-config");
    c.body.as_object_mut().unwrap().remove("vcpu_count");
    cases.push((c, "required property \"vcpu_count\""));

    let mut c = find("/machine-config");
    c.body["vcpu_count"] = "2".into();
    cases.push((c, "expected an integer"));

    let mut c = find("/machine-config");
    c.body["vcpu_count"] = 33.into();
    cases.push((c, "above the maximum"));

    let mut c = find("/drives/rootfs");
    c.body["cache_type"] = "Fast".into();
    cases.push((c, "is not one of"));

    let mut c = find("/drives/rootfs");
    c.body["readonly"] = true.into();
    cases.push((c, "not in the definition"));

    let mut c = find("/vsock");
    c.body["guest_cid"] = 2.into();
    cases.push((c, "below the minimum"));

    let mut c = find("/actions");
    c.body["action_type"] = "Reboot".into();
    cases.push((c, "is not one of"));

    let mut c = find("/boot-source");
    c.path = "/boot".into();
    cases.push((c, "is not in the API"));

    let restore = Firecracker::restore_requests(
        &super::firecracker::tests::plan(),
        std::path::Path::new("/snap/memory"),
        std::path::Path::new("/snap/state"),
    );
    let load = restore.last().unwrap().clone();
    let mut c = load.clone();
    c.body["mem_backend"]["backend_type"] = "Mmap".into();
    cases.push((c, "is not one of"));
    let mut c = load.clone();
    c.body["vsock_override"] = serde_json::json!({ "path": "/x" });
    cases.push((c, "required property \"uds_path\""));
    let mut c = load;
    c.body.as_object_mut().unwrap().remove("snapshot_path");
    cases.push((c, "required property \"snapshot_path\""));

    for (call, expected) in cases {
        let errors = api.check(&call);
        assert!(
            errors.iter().any(|e| e.contains(expected)),
            "{} {} {} should fail with {expected:?}, got {errors:?}",
            call.method,
            call.path,
            call.body
        );
    }
}

#[test]
fn vendored_description_is_the_shared_one() {
    // The project's shared/ folder beside the repository (CI runs with a
    // copy of it there) holds the copy the driver is specified against.
    // Missing, it is a failure: a skipped comparison would let the vendored
    // copy drift unseen.
    let shared = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/firecracker/firecracker-v1.16.1.yaml");
    let text = std::fs::read_to_string(&shared).unwrap_or_else(|e| {
        panic!(
            "cannot read {}: {e}; the shared Firecracker API description must sit in shared/ beside the repository (../shared from its root), as CI provides it",
            shared.display()
        )
    });
    assert!(
        text == API_DESCRIPTION,
        "the vendored server/src/vmm/firecracker-v1.16.1.yaml differs from {}; copy the shared one over it",
        shared.display()
    );
}
