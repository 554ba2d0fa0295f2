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

/// What kind of failure an [`Error`] is: it sets how soon the reconcile is
/// tried again and labels the error metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Category {
    /// The API server is away, overloaded, or a write raced another:
    /// worth trying again soon (1 s, doubling, jittered, at most 5 min).
    Transient,
    /// The API server refused what we sent (forbidden, invalid): nothing
    /// changes by itself soon; retried from 1 min, at most every 15 min.
    Rejected,
    /// Our own failure (an object we cannot build from): as `Rejected`.
    Internal,
}

impl Category {
    /// The `error` label of `streammachine_operator_reconcile_errors_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Transient => "transient",
            Category::Rejected => "rejected",
            Category::Internal => "internal",
        }
    }

    /// The delay before retry number `attempt` (0-based), jittered.
    pub fn retry_delay(self, attempt: u32) -> Duration {
        use backon::BackoffBuilder;
        let (min, max) = match self {
            Category::Transient => (Duration::from_secs(1), Duration::from_secs(300)),
            Category::Rejected | Category::Internal => {
                (Duration::from_secs(60), Duration::from_secs(900))
            }
        };
        backon::ExponentialBuilder::default()
            .with_min_delay(min)
            .with_max_delay(max)
            .with_factor(2.0)
            .with_jitter()
            .without_max_times()
            .build()
            .nth(usize::try_from(attempt).unwrap_or(usize::MAX))
            .unwrap_or(max)
    }
}

impl Error {
    /// The failure's [`Category`].
    pub fn category(&self) -> Category {
        match self {
            Error::Kube(kube::Error::Api(e)) => match e.code {
                409 | 429 => Category::Transient,
                code if code >= 500 => Category::Transient,
                _ => Category::Rejected,
            },
            // Connection, TLS, timeouts, bodies cut short: the server is away.
            Error::Kube(_) => Category::Transient,
            Error::Build(_) | Error::NoNamespace => Category::Internal,
        }
    }

    /// The metric label of the failure.
    pub fn metric_label(&self) -> &'static str {
        self.category().as_str()
    }
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
    /// Failed reconciles in a row, by object (for the retry delay).
    failures: std::sync::Mutex<std::collections::HashMap<String, u32>>,
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
            failures: Default::default(),
        }
    }

    /// Counts a failed reconcile of `key`; gives how many failed before it.
    fn failed(&self, key: &str) -> u32 {
        let Ok(mut f) = self.failures.lock() else {
            return 0;
        };
        let n = f.entry(key.to_string()).or_insert(0);
        *n = n.saturating_add(1);
        *n - 1
    }

    /// Ends `obj`'s run of failures, and records the reconcile's outcome.
    fn observe<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        controller: &str,
        took: Duration,
        result: &Result<Action, Error>,
    ) {
        if result.is_ok() {
            if let Ok(mut f) = self.failures.lock() {
                f.remove(&failure_key(obj));
            }
        }
        self.metrics.observe(
            controller,
            took,
            result.as_ref().err().map(Error::metric_label),
        );
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

/// Retry after a failure, by its category, with a per-object exponential
/// and jittered delay (reset by the object's next successful reconcile).
pub fn error_policy<K>(obj: Arc<K>, error: &Error, ctx: Arc<Context>) -> Action
where
    K: Resource<DynamicType = ()>,
{
    let category = error.category();
    let attempt = ctx.failed(&failure_key(obj.as_ref()));
    let delay = category.retry_delay(attempt);
    tracing::warn!(%error, category = category.as_str(), attempt, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// The key of an object in the failure counts.
fn failure_key<K: Resource<DynamicType = ()>>(obj: &K) -> String {
    format!(
        "{}/{}/{}",
        K::kind(&()),
        obj.meta().namespace.as_deref().unwrap_or_default(),
        obj.meta().name.as_deref().unwrap_or_default()
    )
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

#[cfg(test)]
mod tests {
    use super::*;

    fn api_error(code: u16) -> Error {
        Error::Kube(kube::Error::Api(kube::core::ErrorResponse {
            status: "Failure".into(),
            message: "m".into(),
            reason: "r".into(),
            code,
        }))
    }

    #[test]
    fn categories_drive_the_retry_delay() {
        assert_eq!(api_error(503).category(), Category::Transient);
        assert_eq!(api_error(409).category(), Category::Transient);
        assert_eq!(api_error(429).category(), Category::Transient);
        assert_eq!(api_error(403).category(), Category::Rejected);
        assert_eq!(api_error(422).category(), Category::Rejected);
        assert_eq!(Error::NoNamespace.category(), Category::Internal);
        assert_eq!(api_error(422).metric_label(), "rejected");
        // Exponential, jittered (the delay is d..2d), capped.
        let first = Category::Transient.retry_delay(0);
        assert!(
            first >= Duration::from_secs(1) && first <= Duration::from_secs(2),
            "{first:?}"
        );
        let fifth = Category::Transient.retry_delay(4);
        assert!(
            fifth >= Duration::from_secs(16) && fifth <= Duration::from_secs(32),
            "{fifth:?}"
        );
        assert!(Category::Transient.retry_delay(40) <= Duration::from_secs(600));
        assert!(Category::Rejected.retry_delay(0) >= Duration::from_secs(60));
        // Jittered: two objects failing together do not retry in step.
        let delays: std::collections::BTreeSet<_> = (0..20)
            .map(|_| Category::Transient.retry_delay(3))
            .collect();
        assert!(delays.len() > 1, "no jitter: {delays:?}");
    }
}
