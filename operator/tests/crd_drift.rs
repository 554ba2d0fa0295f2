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
