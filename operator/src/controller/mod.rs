//! The reconcilers (DESIGN.md §7), each a short pipeline: fetch the related
//! objects → validate (an invalid spec is a `Ready=False` condition with its
//! reason and no retry storm) → build the children with the pure builders →
//! server-side apply with one field manager → status.
//!
//! * SourceMount: owns the children; its status says whether master and
//!   slaves run and whether an encoder is connected.
//! * Stream: only status (its settings reach the master through the
//!   SourceMount's ConfigMap): valid or not, loaded by the master or not,
//!   listeners, buffered seconds, listener URLs.
//!
//! What wakes a SourceMount: itself, its children (the PodDisruptionBudget
//! too), its Streams (the mount they name and the one that carried them
//! before a move), and the password Secret it names (a metadata-only watch:
//! the operator never holds users' Secret data in a cache).

mod api;
pub mod events;
mod mount;
mod stream;

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::NamespaceResourceScope;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{metadata_watcher, watcher, WatchStreamExt};
use kube::{Client, Resource, ResourceExt};
use streammachine_crds::v1alpha1::{SourceMount, Stream};

pub use events::REASON_PASSWORD_NOT_FOUND;
pub use mount::reconcile_mount;
pub use stream::reconcile_stream;

use crate::build::{BuildError, Settings};
use crate::metrics::Metrics;
use crate::names;
use crate::status::MasterStatus;

/// Errors worth a retry (the API server failed us); invalid specs are not errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The children could not be built.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// The object has no namespace.
    #[error("object has no namespace")]
    NoNamespace,
}

/// What the reconcilers share.
pub struct Context {
    /// The API client.
    pub client: Client,
    /// Builder settings.
    pub settings: Settings,
    /// Asks masters for their status.
    pub master_status: Arc<dyn MasterStatus>,
    /// Reconcile counters and durations.
    pub metrics: Arc<Metrics>,
    /// Publishes Events.
    pub recorder: Recorder,
    /// How often status is refreshed from the masters.
    pub poll_interval: Duration,
}

impl Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("settings", &self.settings)
            .field("poll_interval", &self.poll_interval)
            .finish_non_exhaustive()
    }
}

impl Context {
    /// A context with the given master status source.
    pub fn new(
        client: Client,
        settings: Settings,
        master_status: Arc<dyn MasterStatus>,
        metrics: Arc<Metrics>,
        poll_interval: Duration,
    ) -> Self {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: names::FIELD_MANAGER.into(),
                instance: std::env::var("POD_NAME").ok(),
            },
        );
        Context {
            client,
            settings,
            master_status,
            metrics,
            recorder,
            poll_interval,
        }
    }
}

/// A new secret value: 32 random bytes as hex.
pub fn random_secret() -> String {
    let mut buf = [0u8; 32];
    if getrandom::fill(&mut buf).is_err() {
        // getrandom only fails without any OS entropy source; refuse to
        // invent a weak secret.
        return String::new();
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// The admin token from the link Secret.
fn admin_token(secret: &Secret) -> String {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(names::ADMIN_TOKEN_KEY))
        .map(|v| String::from_utf8_lossy(&v.0).into_owned())
        .unwrap_or_default()
}

/// Whether the master Deployment has a ready pod.
fn master_ready(master: Option<&Deployment>) -> bool {
    master
        .and_then(|d| d.status.as_ref())
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0)
        > 0
}

/// The SourceMounts a Stream change concerns: the one it names and the one
/// that carried it before (`status.sourceMount`), which must drop it.
fn mounts_of_stream(s: Stream) -> Vec<ObjectRef<SourceMount>> {
    let Some(ns) = s.namespace() else {
        return Vec::new();
    };
    let mut out = vec![ObjectRef::new(&s.spec.source_mount).within(&ns)];
    if let Some(before) = s.status.as_ref().and_then(|st| st.source_mount.as_deref()) {
        if before != s.spec.source_mount {
            out.push(ObjectRef::new(before).within(&ns));
        }
    }
    out
}

/// The SourceMounts whose password is in `secret`.
fn mounts_using_secret(
    mounts: &[Arc<SourceMount>],
    secret: &PartialObjectMeta<Secret>,
) -> Vec<ObjectRef<SourceMount>> {
    let ns = secret.namespace();
    let name = secret.name_any();
    mounts
        .iter()
        .filter(|m| m.namespace() == ns && m.spec.password.secret_key_ref.name == name)
        .map(|m| ObjectRef::from_obj(m.as_ref()))
        .collect()
}

/// Retry after an API error, without a storm.
pub fn error_policy<K>(_obj: Arc<K>, error: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(%error, "reconcile failed; retrying in 15s");
    Action::requeue(Duration::from_secs(15))
}

/// Watches of the children: only objects the operator manages.
fn managed() -> watcher::Config {
    watcher::Config::default().labels(names::MANAGED_BY_SELECTOR)
}

/// An API for `K` in `ns`, or in all namespaces.
fn api<K>(client: &Client, ns: Option<&str>) -> Api<K>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>,
{
    match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Completes once `stop` turns true (or its sender is gone).
async fn stopped(mut stop: tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Runs both controllers (in `namespace`, or all) until `shutdown` completes.
pub async fn run(
    ctx: Arc<Context>,
    namespace: Option<String>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let client = ctx.client.clone();
    let ns = namespace.as_deref();
    let (stop, stop_rx) = tokio::sync::watch::channel(false);

    let mounts = Controller::new(api::<SourceMount>(&client, ns), watcher::Config::default());
    let mount_store = mounts.store();
    let secrets =
        metadata_watcher(api::<Secret>(&client, ns), watcher::Config::default()).touched_objects();
    let mounts = mounts
        .owns(api::<ConfigMap>(&client, ns), managed())
        .owns(api::<Secret>(&client, ns), managed())
        .owns(api::<Deployment>(&client, ns), managed())
        .owns(api::<DaemonSet>(&client, ns), managed())
        .owns(api::<Service>(&client, ns), managed())
        .owns(api::<PodDisruptionBudget>(&client, ns), managed())
        .watches(
            api::<Stream>(&client, ns),
            watcher::Config::default(),
            mounts_of_stream,
        )
        .watches_stream(secrets, move |secret: PartialObjectMeta<Secret>| {
            mounts_using_secret(&mount_store.state(), &secret)
        })
        .graceful_shutdown_on(stopped(stop_rx.clone()))
        .run(reconcile_mount, error_policy, ctx.clone())
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "sourcemount controller");
            }
        });

    // A SourceMount appearing, changing or going away re-checks its Streams.
    let streams = Controller::new(api::<Stream>(&client, ns), watcher::Config::default());
    let store = streams.store();
    let streams = streams
        .watches(
            api::<SourceMount>(&client, ns),
            watcher::Config::default(),
            move |m: SourceMount| {
                let ns = m.namespace();
                let name = m.name_any();
                store
                    .state()
                    .into_iter()
                    .filter(|s| s.spec.source_mount == name && s.namespace() == ns)
                    .map(|s| ObjectRef::from_obj(s.as_ref()))
                    .collect::<Vec<_>>()
            },
        )
        .graceful_shutdown_on(stopped(stop_rx))
        .run(reconcile_stream, error_policy, ctx)
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "stream controller");
            }
        });

    let trigger = async move {
        shutdown.await;
        let _ = stop.send(true);
    };
    tokio::join!(mounts, streams, trigger);
}
