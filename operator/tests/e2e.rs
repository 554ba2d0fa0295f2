//! End to end against whatever cluster `KUBECONFIG` points to (DESIGN.md §9):
//!
//! ```text
//! cargo test -p streammachine-operator --test e2e -- --ignored
//! ```
//!
//! Applies the CRDs, runs both controllers in this process, applies
//! `manifests/examples/` (a password Secret, a SourceMount, an MP3 Stream and
//! an AAC transcode) into a new namespace with a Stream naming a missing
//! SourceMount, and checks the children, their owner references and the
//! statuses; changes a Stream's title and sees the ConfigMap change while the
//! workloads' pod templates stay (no rollout); deletes the SourceMount and
//! sees every child garbage-collected. Pods are never waited for (the cluster
//! may have no kubelets), unless `STREAMMACHINE_E2E_IMAGE` names a pullable
//! streamer image: then the Stream must also become served. The namespace is
//! deleted at the end.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use streammachine_crds::v1alpha1::{crds, SourceMount, Stream};
use streammachine_operator::build::Settings;
use streammachine_operator::controller::{self, Context};
use streammachine_operator::metrics::Metrics;
use streammachine_operator::status::HttpMasterStatus;
use streammachine_operator::{names, testdata};

async fn wait_for<T, F>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: AsyncFnMut() -> Option<T>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn condition(
    status: Option<&[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition]>,
    t: &str,
) -> Option<(String, String)> {
    status?
        .iter()
        .find(|c| c.type_ == t)
        .map(|c| (c.status.clone(), c.reason.clone()))
}

#[tokio::test]
#[ignore = "needs a cluster (KUBECONFIG)"]
async fn sourcemount_and_stream_in_a_real_cluster() {
    let client = Client::try_default()
        .await
        .expect("a cluster from KUBECONFIG");
    let pp = PatchParams::apply(names::FIELD_MANAGER).force();

    let crd_api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in crds().unwrap() {
        crd_api
            .patch(&crd.name_any(), &pp, &Patch::Apply(&crd))
            .await
            .unwrap();
    }
    for name in ["sourcemounts.streammachine.io", "streams.streammachine.io"] {
        let api = crd_api.clone();
        wait_for(
            "the CRDs to be established",
            Duration::from_secs(30),
            async || {
                let crd = api.get(name).await.ok()?;
                let established = crd
                    .status?
                    .conditions?
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True");
                established.then_some(())
            },
        )
        .await;
    }

    let ns = format!("streammachine-e2e-{}", std::process::id());
    let ns_api: Api<Namespace> = Api::all(client.clone());
    ns_api
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap(),
        )
        .await
        .unwrap();

    let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let image = std::env::var("STREAMMACHINE_E2E_IMAGE").ok();
    let ctx = Arc::new(Context::new(
        client.clone(),
        Settings {
            default_image: image.clone().unwrap_or_else(|| "streammachine:e2e".into()),
        },
        Arc::new(HttpMasterStatus::new(Duration::from_secs(3))),
        Arc::new(Metrics::new().unwrap()),
        Duration::from_secs(5),
    ));
    let controllers = tokio::spawn(controller::run(ctx, Some(ns.clone()), async move {
        let _ = stop_rx.await;
    }));

    // The examples, as a user applies them.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let mounts: Api<SourceMount> = Api::namespaced(client.clone(), &ns);
    let streams: Api<Stream> = Api::namespaced(client.clone(), &ns);
    for (file, v) in testdata::example_documents().unwrap() {
        let name = v["metadata"]["name"].as_str().unwrap().to_string();
        match v["kind"].as_str() {
            Some("Secret") => {
                let o: Secret = serde_json::from_value(v).unwrap();
                secrets.patch(&name, &pp, &Patch::Apply(&o)).await.unwrap();
            }
            Some("SourceMount") => {
                let o: SourceMount = serde_json::from_value(v).unwrap();
                mounts.patch(&name, &pp, &Patch::Apply(&o)).await.unwrap();
            }
            Some("Stream") => {
                let o: Stream = serde_json::from_value(v).unwrap();
                streams.patch(&name, &pp, &Patch::Apply(&o)).await.unwrap();
            }
            other => panic!("{}: unexpected kind {other:?}", file.display()),
        }
    }
    let mut lost = testdata::stream("lost", "nope");
    lost.metadata = Default::default();
    lost.metadata.name = Some("lost".into());
    streams.create(&PostParams::default(), &lost).await.unwrap();

    // Children, owned by the SourceMount.
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let cm = wait_for("the ConfigMap", Duration::from_secs(60), async || {
        let cm = cms.get_opt("main-config").await.ok()??;
        let master = cm.data.as_ref()?.get("master.yaml")?.clone();
        (master.contains("key: main-mp3") && master.contains("key: main-aac")).then_some(master)
    })
    .await;
    assert!(!cm.contains("key: lost"));
    assert!(
        cm.contains("transcode:"),
        "the AAC Stream is a transcode:\n{cm}"
    );
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    let owned_by_main =
        |refs: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference]| {
            refs.iter()
                .any(|r| r.kind == "SourceMount" && r.name == "main" && r.controller == Some(true))
        };
    let mut templates = Vec::new();
    for d in ["main-master", "main-slave"] {
        let got = deployments.get(d).await.unwrap();
        assert!(owned_by_main(got.owner_references()), "{d}");
        templates.push(serde_json::to_value(&got.spec.unwrap().template).unwrap());
    }
    for name in ["main-master", "main-slave"] {
        assert!(owned_by_main(
            services.get(name).await.unwrap().owner_references()
        ));
    }
    assert!(owned_by_main(
        secrets.get("main-link").await.unwrap().owner_references()
    ));
    assert!(owned_by_main(
        cms.get("main-config").await.unwrap().owner_references()
    ));

    // A live change: the ConfigMap changes, the pod templates do not (no rollout).
    streams
        .patch(
            "main-mp3",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"title": "Changed Live"}})),
        )
        .await
        .unwrap();
    wait_for(
        "the ConfigMap to change",
        Duration::from_secs(60),
        async || {
            let cm = cms.get_opt("main-config").await.ok()??;
            cm.data?
                .get("master.yaml")?
                .contains("Changed Live")
                .then_some(())
        },
    )
    .await;
    // One more reconcile round, then compare.
    tokio::time::sleep(Duration::from_secs(6)).await;
    for (d, before) in ["main-master", "main-slave"].iter().zip(&templates) {
        let got = deployments.get(d).await.unwrap();
        let now = serde_json::to_value(&got.spec.unwrap().template).unwrap();
        assert_eq!(&now, before, "{d}: a title change must not roll its pods");
    }

    // Statuses.
    let lost = wait_for(
        "the invalid Stream's status",
        Duration::from_secs(60),
        async || {
            let s = streams.get("lost").await.ok()?;
            condition(s.status.as_ref().map(|s| s.conditions.as_slice()), "Ready")
        },
    )
    .await;
    assert_eq!(
        lost,
        ("False".to_string(), "SourceMountNotFound".to_string())
    );
    wait_for(
        "the SourceMount's status",
        Duration::from_secs(60),
        async || {
            let m = mounts.get("main").await.ok()?;
            let st = m.status?;
            (st.observed_generation == m.metadata.generation).then_some(())
        },
    )
    .await;
    if image.is_some() {
        wait_for(
            "the Stream to be served",
            Duration::from_secs(300),
            async || {
                let s = streams.get("main-mp3").await.ok()?;
                let ready = condition(s.status.as_ref().map(|s| s.conditions.as_slice()), "Ready")?;
                (ready.0 == "True").then_some(())
            },
        )
        .await;
    }

    // Deleting the SourceMount: the garbage collector removes every child.
    mounts
        .delete("main", &DeleteParams::default())
        .await
        .unwrap();
    wait_for(
        "the children to be garbage-collected",
        Duration::from_secs(120),
        async || {
            let gone = deployments.get_opt("main-master").await.ok()?.is_none()
                && deployments.get_opt("main-slave").await.ok()?.is_none()
                && services.get_opt("main-master").await.ok()?.is_none()
                && services.get_opt("main-slave").await.ok()?.is_none()
                && cms.get_opt("main-config").await.ok()?.is_none()
                && secrets.get_opt("main-link").await.ok()?.is_none();
            gone.then_some(())
        },
    )
    .await;
    // The Streams stay (they are the user's), now naming a missing mount.
    let orphan = wait_for(
        "the orphaned Stream's status",
        Duration::from_secs(60),
        async || {
            let s = streams.get("main-mp3").await.ok()?;
            let ready = condition(s.status.as_ref().map(|s| s.conditions.as_slice()), "Ready")?;
            (ready.1 == "SourceMountNotFound").then_some(ready)
        },
    )
    .await;
    assert_eq!(orphan.0, "False");

    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(20), controllers).await;
    ns_api.delete(&ns, &DeleteParams::default()).await.unwrap();
}
