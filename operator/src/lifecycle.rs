//! The operator's life from start to shutdown, apart from `main`'s wiring:
//! wait until the CRDs are served (not ready until then, saying what is
//! missing), then run the controllers while this replica leads, stop them
//! when it no longer does (an API outage, another replica took over) and start
//! them again when it leads again; at shutdown, stop them and vacate the
//! Lease.

use std::sync::Arc;
use std::time::Duration;

use kube::api::{Api, ListParams};
use kube::{Client, Resource};
use streammachine_crds::v1alpha1::{SourceMount, Stream};
use tokio::sync::watch;

use crate::build::Settings;
use crate::controller::{self, Context};
use crate::http::Health;
use crate::leader::Election;
use crate::metrics::Metrics;
use crate::status::MasterStatus;

/// How often the CRDs are looked for while they are missing.
const CRD_POLL: Duration = Duration::from_secs(3);
/// How long the controllers get to finish their reconciles when they stop.
const STOP_GRACE: Duration = Duration::from_secs(20);

/// What the operator runs with.
pub struct Options {
    /// Watch only this namespace (default: all).
    pub namespace: Option<String>,
    /// Builder settings.
    pub settings: Settings,
    /// How often status is refreshed from the masters.
    pub poll_interval: Duration,
    /// Leader election, or none (a single replica).
    pub election: Option<Election>,
    /// Asks masters for their status.
    pub master_status: Arc<dyn MasterStatus>,
}

/// Why the controllers stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Shutdown,
    Lost,
    Stopped,
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("namespace", &self.namespace)
            .field("settings", &self.settings)
            .field("poll_interval", &self.poll_interval)
            .field("election", &self.election)
            .finish_non_exhaustive()
    }
}

/// Runs until `shutdown` turns true (or its sender is gone).
pub async fn run(
    client: Client,
    options: Options,
    metrics: Arc<Metrics>,
    health: Health,
    mut shutdown: watch::Receiver<bool>,
) {
    let ns = options.namespace.clone();
    if !wait_for_crds(&client, ns.as_deref(), &health, &mut shutdown).await {
        return;
    }
    health.set_ready();

    let (leading_tx, mut leading) = watch::channel(options.election.is_none());
    let (stop_election, stop_election_rx) = watch::channel(false);
    // Without an election nobody changes `leading`: it stays true while this lives.
    let mut _always_leading = None;
    let election = match options.election {
        Some(e) => {
            tracing::info!(lease = e.lease_name(), "waiting to lead");
            Some(tokio::spawn(e.run(leading_tx, stop_election_rx)))
        }
        None => {
            _always_leading = Some(leading_tx);
            None
        }
    };
    let ctx = Arc::new(Context::new(
        client,
        options.settings,
        options.master_status,
        metrics,
        options.poll_interval,
    ));
    loop {
        tokio::select! {
            biased;
            () = stopping(&mut shutdown) => break,
            r = leading.wait_for(|l| *l) => if r.is_err() { break },
        }
        tracing::info!("leading: the controllers start");
        ctx.metrics.set_leading(true);
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let controllers = controller::run(ctx.clone(), ns.clone(), async move {
            let _ = stop_rx.await;
        });
        tokio::pin!(controllers);
        let end = tokio::select! {
            biased;
            () = stopping(&mut shutdown) => End::Shutdown,
            _ = leading.wait_for(|l| !*l) => End::Lost,
            () = &mut controllers => End::Stopped,
        };
        match end {
            // Still holding the Lease: let running reconciles finish.
            End::Shutdown => {
                let _ = stop.send(());
                if tokio::time::timeout(STOP_GRACE, &mut controllers)
                    .await
                    .is_err()
                {
                    tracing::warn!("the controllers did not stop in {STOP_GRACE:?}");
                }
            }
            // A standby may lead now: drop the controllers at once, cancelling
            // reconciles in flight.
            End::Lost => tracing::warn!(
                "the lease was not renewed: the controllers stop until it is claimed again"
            ),
            End::Stopped => {
                tracing::warn!("the controllers stopped; starting them again in 1 s");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        ctx.metrics.set_leading(false);
        let shutting_down = end == End::Shutdown;
        if shutting_down {
            break;
        }
    }
    // The controllers are stopped: now a standby may lead.
    let _ = stop_election.send(true);
    if let Some(task) = election {
        let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
    }
}

/// Waits until both CRDs are served; not ready meanwhile, with what is
/// missing logged once. `false` when shut down first.
async fn wait_for_crds(
    client: &Client,
    ns: Option<&str>,
    health: &Health,
    shutdown: &mut watch::Receiver<bool>,
) -> bool {
    let mut said = String::new();
    loop {
        let why = match missing_crds(client, ns).await {
            Ok(missing) if missing.is_empty() => return true,
            Ok(missing) => format!(
                "the CustomResourceDefinition(s) {} are not served: install them with \
                 `kubectl apply --server-side -f crds/yaml/` (the Helm chart installs them)",
                missing.join(", ")
            ),
            Err(e) => format!("cannot ask the API server for the CustomResourceDefinitions: {e}"),
        };
        if why != said {
            tracing::warn!("not ready: {why}");
            health.set_not_ready(why.clone());
            said = why;
        }
        tokio::select! {
            () = tokio::time::sleep(CRD_POLL) => {}
            () = stopping(shutdown) => return false,
        }
    }
}

/// The names of the CRDs the API server does not serve.
async fn missing_crds(client: &Client, ns: Option<&str>) -> Result<Vec<String>, kube::Error> {
    let mut missing = Vec::new();
    if !served::<SourceMount>(client, ns).await? {
        missing.push(crd_name::<SourceMount>());
    }
    if !served::<Stream>(client, ns).await? {
        missing.push(crd_name::<Stream>());
    }
    Ok(missing)
}

fn crd_name<K: Resource<DynamicType = ()>>() -> String {
    format!("{}.{}", K::plural(&()), K::group(&()))
}

/// Whether listing `K` works (a 404 means its CRD is not served).
async fn served<K>(client: &Client, ns: Option<&str>) -> Result<bool, kube::Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned,
{
    let api: Api<K> = match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    match api.list_metadata(&ListParams::default().limit(1)).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(false),
        Err(e) => Err(e),
    }
}

/// Completes once `shutdown` is true or its sender is gone.
async fn stopping(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}
