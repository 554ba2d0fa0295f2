//! Snapshot tests of every child object the builders make, for representative
//! SourceMounts. The expected YAML is under `tests/snapshots/<case>/`, one file
//! per object; a difference fails the test and prints a diff. After an
//! intended change, regenerate and review them:
//!
//! ```text
//! UPDATE_SNAPSHOTS=1 cargo test -p streammachine-operator --test snapshots
//! git diff operator/tests/snapshots
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use serde::Serialize;
use streammachine_crds::v1alpha1::{
    Format, Handoff, HlsSpec, ImagePullPolicy, ServiceType, SourceMount, Stream,
};
use streammachine_operator::build::{self, Children, Settings, SlaveWorkload};
use streammachine_operator::{testdata, validate};

fn settings() -> Settings {
    Settings {
        default_image: "registry.example/streammachine:0.1.0".into(),
    }
}

fn yaml<T: Serialize>(v: &T) -> String {
    serde_yaml::to_string(v).unwrap()
}

/// Every child as (file name, YAML).
fn files(c: &Children) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut add = |kind: &str, name: &Option<String>, text: String| {
        out.insert(format!("{kind}-{}.yaml", name.as_deref().unwrap()), text);
    };
    add(
        "configmap",
        &c.config_map.metadata.name,
        yaml(&c.config_map),
    );
    add("secret", &c.link_secret.metadata.name, yaml(&c.link_secret));
    add(
        "deployment",
        &c.master_deployment.metadata.name,
        yaml(&c.master_deployment),
    );
    add(
        "service",
        &c.master_service.metadata.name,
        yaml(&c.master_service),
    );
    if let Some(s) = &c.source_service {
        add("service", &s.metadata.name, yaml(s));
    }
    match &c.slaves {
        SlaveWorkload::Deployment(d) => add("deployment", &d.metadata.name, yaml(d)),
        SlaveWorkload::DaemonSet(d) => add("daemonset", &d.metadata.name, yaml(d)),
    }
    add(
        "service",
        &c.slave_service.metadata.name,
        yaml(&c.slave_service),
    );
    if let Some(p) = &c.pod_disruption_budget {
        add("poddisruptionbudget", &p.metadata.name, yaml(p));
    }
    out
}

fn snapshot_dir(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/snapshots")
        .join(case)
}

/// Compares (or, with UPDATE_SNAPSHOTS=1, rewrites) the snapshots of one case.
fn check(case: &str, mount: &SourceMount, streams: &[Stream]) {
    let configs: Vec<_> = streams
        .iter()
        .map(|s| validate::stream_config(s, Some(mount)).unwrap())
        .collect();
    let children = build::children(
        mount,
        &configs,
        None,
        &settings(),
        &mut testdata::counter(),
        None,
    )
    .unwrap();
    let want = files(&children);
    let dir = snapshot_dir(case);
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some_and(|v| v == "1") {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for (name, text) in &want {
            std::fs::write(dir.join(name), text).unwrap();
        }
        return;
    }
    let mut failures = Vec::new();
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    on_disk.sort();
    for extra in on_disk.iter().filter(|f| !want.contains_key(*f)) {
        failures.push(format!("{case}/{extra}: no such object is built any more"));
    }
    for (name, text) in &want {
        match std::fs::read_to_string(dir.join(name)) {
            Err(_) => failures.push(format!("{case}/{name}: missing snapshot")),
            Ok(old) if old != *text => {
                failures.push(format!("{case}/{name} differs:\n{}", diff(&old, text)))
            }
            Ok(_) => {}
        }
    }
    assert!(
        failures.is_empty(),
        "{}\n(UPDATE_SNAPSHOTS=1 rewrites the snapshots; review the diff)",
        failures.join("\n")
    );
}

/// A minimal line diff: the lines only in one side, with their line numbers.
fn diff(old: &str, new: &str) -> String {
    let o: Vec<&str> = old.lines().collect();
    let n: Vec<&str> = new.lines().collect();
    let mut out = String::new();
    for i in 0..o.len().max(n.len()) {
        let (a, b) = (o.get(i), n.get(i));
        if a != b {
            if let Some(a) = a {
                out.push_str(&format!("  {:4} - {a}\n", i + 1));
            }
            if let Some(b) = b {
                out.push_str(&format!("  {:4} + {b}\n", i + 1));
            }
        }
    }
    out
}

fn resources(cpu: &str, memory: &str) -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_string(), Quantity(cpu.into())),
            ("memory".to_string(), Quantity(memory.into())),
        ])),
        limits: Some(BTreeMap::from([(
            "memory".to_string(),
            Quantity(memory.into()),
        )])),
        ..Default::default()
    }
}

/// Every default: an MP3 mount, one plain stream, slaves as a Deployment.
#[test]
fn defaults_drain() {
    let mount = testdata::mount("main");
    check(
        "defaults-drain",
        &mount,
        &[testdata::stream("hits", "main")],
    );
}

/// Everything set: AAC source, zero-drop handoff, external source and
/// listener services, a dump volume, transcodes and HLS.
#[test]
fn everything_socket() {
    let mut mount = testdata::mount("studio");
    mount.spec.format = Format::Aac;
    mount.spec.monitored = true;
    mount.spec.image = Some("registry.example/streammachine:0.2.0".into());
    mount.spec.image_pull_policy = Some(ImagePullPolicy::IfNotPresent);
    mount.spec.master.resources = Some(resources("500m", "2Gi"));
    mount.spec.master.dump_interval_seconds = 60;
    mount.spec.master.dumps_claim_name = Some("studio-dumps".into());
    mount.spec.master.service_type = ServiceType::LoadBalancer;
    mount.spec.master.node_selector = BTreeMap::from([("radio/role".into(), "master".into())]);
    mount.spec.slaves.handoff = Handoff::Socket;
    mount.spec.slaves.drain_seconds = 30;
    mount.spec.slaves.resources = Some(resources("250m", "1Gi"));
    mount.spec.slaves.service.type_ = ServiceType::LoadBalancer;
    mount.spec.slaves.service.annotations =
        BTreeMap::from([("metallb.universe.tf/address-pool".into(), "public".into())]);
    mount.spec.slaves.node_selector = BTreeMap::from([("radio/role".into(), "edge".into())]);

    let plain = testdata::stream("studio-aac", "studio");
    let mut hls = testdata::stream("studio-hls", "studio");
    hls.spec.hls = Some(HlsSpec {
        segment_seconds: 6,
        group: Some("studio".into()),
    });
    hls.spec.title = Some("Studio One".into());
    hls.spec.name = Some("Radio Studio".into());
    hls.spec.rewind_seconds = 28_800;
    let mut mp3 = testdata::stream("studio-mp3", "studio");
    mp3.spec.format = Some(Format::Mp3);
    mp3.spec.bitrate = Some(128);
    mp3.spec.burst_seconds = 5;
    mp3.spec.icy_meta_interval = 8192;
    mp3.spec.max_buffer_bytes = Some(1 << 20);
    check("everything-socket", &mount, &[plain, hls, mp3]);
}

/// No streams yet: the workloads still come up, ready for the first Stream.
#[test]
fn no_streams() {
    let mut mount = testdata::mount("empty");
    mount.spec.slaves.replicas = 1;
    mount.spec.master.service_type = ServiceType::NodePort;
    check("no-streams", &mount, &[]);
}
