//! End to end against whatever cluster `KUBECONFIG` points to (DESIGN.md §9):
//!
//! ```text
//! cargo test -p streammachine-operator --test e2e -- --ignored
//! ```
//!
//! Applies the CRDs, runs both controllers in this process, creates a
//! namespace with a password Secret, a SourceMount, a Stream and a Stream
//! naming a missing SourceMount, and checks the children and the statuses.
//! With `STREAMMACHINE_E2E_IMAGE` set to a pullable streamer image it also
//! waits for the master and the slaves to become ready and the Stream to be
//! served. The namespace is deleted at the end.

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

    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"metadata": {"name": "main-source"}, "stringData": {"password": "e2e"}}),
            )
            .unwrap(),
        )
        .await
        .unwrap();
    let mut mount = testdata::mount("main");
    mount.metadata = Default::default();
    mount.metadata.name = Some("main".into());
    let mounts: Api<SourceMount> = Api::namespaced(client.clone(), &ns);
    mounts.create(&PostParams::default(), &mount).await.unwrap();
    let streams: Api<Stream> = Api::namespaced(client.clone(), &ns);
    for (name, mount) in [("hits", "main"), ("lost", "nope")] {
        let mut s = testdata::stream(name, mount);
        s.metadata = Default::default();
        s.metadata.name = Some(name.into());
        streams.create(&PostParams::default(), &s).await.unwrap();
    }

    // Children.
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let cm = wait_for("the ConfigMap", Duration::from_secs(60), async || {
        let cm = cms.get_opt("main-config").await.ok()??;
        let master = cm.data.as_ref()?.get("master.yaml")?.clone();
        master.contains("key: hits").then_some(master)
    })
    .await;
    assert!(!cm.contains("key: lost"));
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    for d in ["main-master", "main-slave"] {
        let got = deployments.get(d).await.unwrap();
        assert_eq!(got.owner_references()[0].kind, "SourceMount");
    }
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    services.get("main-master").await.unwrap();
    services.get("main-slave").await.unwrap();
    secrets.get("main-link").await.unwrap();

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
                let s = streams.get("hits").await.ok()?;
                let ready = condition(s.status.as_ref().map(|s| s.conditions.as_slice()), "Ready")?;
                (ready.0 == "True").then_some(())
            },
        )
        .await;
    }

    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(20), controllers).await;
    ns_api.delete(&ns, &DeleteParams::default()).await.unwrap();
}
