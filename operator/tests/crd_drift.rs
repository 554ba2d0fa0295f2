//! The committed CRD YAML (`crds/yaml/`, `helm/streammachine/crds/`) must be
//! what `crdgen` makes from the types. On failure run
//! `cargo run -p streammachine-operator --bin crdgen` and commit the files.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::path::Path;

#[test]
fn committed_crds_match_the_types() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let files = streammachine_crds::v1alpha1::crd_files().unwrap();
    assert_eq!(files.len(), 2);
    let mut drift = Vec::new();
    for dir in streammachine_operator::CRD_DIRS {
        for f in &files {
            let path = root.join(dir).join(&f.name);
            let committed = std::fs::read_to_string(&path).unwrap_or_default();
            if committed != f.yaml {
                drift.push(path.display().to_string());
            }
        }
    }
    assert!(
        drift.is_empty(),
        "out of date: {drift:?}; run `cargo run -p streammachine-operator --bin crdgen` and commit"
    );
}

#[test]
fn generated_crds_parse_back() {
    for f in streammachine_crds::v1alpha1::crd_files().unwrap() {
        let crd: k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition =
            serde_yaml::from_str(&f.yaml).unwrap();
        assert_eq!(crd.spec.group, "streammachine.io");
        assert_eq!(crd.spec.versions.len(), 1);
        assert_eq!(crd.spec.versions[0].name, "v1alpha1");
    }
}

/// The API server knows the integer formats `int32` and `int64` only; any
/// other (schemars' `uint32`) is a warning on every `kubectl apply`.
#[test]
fn crds_use_only_formats_the_api_server_knows() {
    fn walk(v: &serde_json::Value, path: &str, bad: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(o) => {
                if let Some(f) = o.get("format").and_then(|f| f.as_str()) {
                    let known = [
                        "int32",
                        "int64",
                        "float",
                        "double",
                        "byte",
                        "date-time",
                        "int-or-string",
                    ];
                    if o.get("type").and_then(|t| t.as_str()) != Some("string")
                        && !known.contains(&f)
                    {
                        bad.push(format!("{path}: {f}"));
                    }
                }
                for (k, v) in o {
                    walk(v, &format!("{path}.{k}"), bad);
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, path, bad)),
            _ => {}
        }
    }
    let mut bad = Vec::new();
    for crd in streammachine_crds::v1alpha1::crds().unwrap() {
        walk(
            &serde_json::to_value(&crd).unwrap(),
            &crd.metadata.name.unwrap(),
            &mut bad,
        );
    }
    assert!(bad.is_empty(), "unknown formats: {bad:?}");
}

/// Every `kubectl apply … -f PATH` in the docs names a file, or a directory
/// holding YAML (kubectl reads only `.yaml`/`.yml`/`.json` files of a
/// directory: `-f crds/`, the Rust crate, applies nothing).
#[test]
fn documented_apply_paths_hold_yaml() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let docs = [
        "README.md",
        "operator/README.md",
        "docs/kubernetes.md",
        "helm/streammachine/templates/NOTES.txt",
    ];
    let mut checked = 0;
    for doc in docs {
        let text = std::fs::read_to_string(root.join(doc)).unwrap();
        for line in text.lines().filter(|l| l.contains("kubectl apply")) {
            let words: Vec<&str> = line.split_whitespace().collect();
            for w in words.windows(2).filter(|w| w[0] == "-f") {
                let path = root.join(w[1].trim_end_matches(['`', ')', ',', ':']));
                let ok = if path.is_dir() {
                    std::fs::read_dir(&path).unwrap().any(|e| {
                        let p = e.unwrap().path();
                        matches!(
                            p.extension().and_then(|x| x.to_str()),
                            Some("yaml" | "yml" | "json")
                        )
                    })
                } else {
                    path.is_file()
                };
                assert!(ok, "{doc}: `{line}`: {} holds no YAML", w[1]);
                checked += 1;
            }
        }
    }
    assert!(checked >= 4, "found {checked} documented apply paths");
}
