//! Representative objects for the operator's tests (unit, snapshot and
//! mocked-API tests). Not used by the operator itself.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use streammachine_crds::v1alpha1::{
    SecretKeySelector, SourceMount, SourceMountSpec, SourcePassword, Stream, StreamSpec,
};

/// The namespace of the test objects.
pub const NAMESPACE: &str = "radio";

/// A SourceMount named `name` with every setting at its default and the
/// password in the Secret `<name>-source`.
pub fn mount(name: &str) -> SourceMount {
    let spec: SourceMountSpec = SourceMountSpec {
        format: Default::default(),
        password: SourcePassword {
            secret_key_ref: SecretKeySelector {
                name: format!("{name}-source"),
                key: "password".into(),
            },
        },
        monitored: false,
        image: None,
        image_pull_policy: None,
        master: Default::default(),
        slaves: Default::default(),
        inputs: Vec::new(),
        listeners: None,
    };
    let mut m = SourceMount::new(name, spec);
    m.metadata = meta(name, "8e5bd4b0-4b7a-4c43-9d9e-0000000000a1");
    m
}

/// A Stream named `name` of the SourceMount `mount`, every setting at its default.
pub fn stream(name: &str, mount: &str) -> Stream {
    let mut s = Stream::new(name, StreamSpec::new(mount));
    s.metadata = meta(name, "8e5bd4b0-4b7a-4c43-9d9e-0000000000b2");
    s
}

fn meta(name: &str, uid: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: Some(NAMESPACE.into()),
        uid: Some(uid.into()),
        generation: Some(1),
        resource_version: Some("1".into()),
        ..Default::default()
    }
}

/// A deterministic stand-in for the random secret generator.
pub fn counter() -> impl FnMut() -> String {
    let mut n = 0;
    move || {
        n += 1;
        format!("generated-{n}")
    }
}

/// Every document of `manifests/examples/` (files in name order), with the
/// file it came from: what a user applies. Errors name the file.
pub fn example_documents() -> Result<Vec<(std::path::PathBuf, serde_json::Value)>, String> {
    use serde::Deserialize;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/examples");
    let mut files = Vec::new();
    for e in std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))? {
        files.push(e.map_err(|e| format!("{}: {e}", dir.display()))?.path());
    }
    files.sort();
    let mut out = Vec::new();
    for file in files {
        let text =
            std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let v = serde_json::Value::deserialize(doc)
                .map_err(|e| format!("{}: {e}", file.display()))?;
            out.push((file.clone(), v));
        }
    }
    Ok(out)
}
