//! Leader election through a `coordination.k8s.io/v1` Lease, with kubert's
//! lease manager (the one linkerd's policy controller uses): one replica runs
//! the controllers, any other is a hot standby.
//!
//! What this module adds to the library is the operator's side of it:
//!
//! * **Leading means holding an unexpired claim.** A claim carries its expiry;
//!   the leader stops reconciling when it passes without a renewal (an API
//!   outage, a paused process), which is before any standby can take the
//!   Lease over: no two replicas reconcile at once.
//! * **An outage is waited out, not fatal.** While the API server does not
//!   answer, the process keeps running (health and metrics answer), says so
//!   once, and claims the Lease again when the server is back.
//! * **A standby looks again every [`STANDBY_POLL`]**, so a Lease vacated by a
//!   leader that shut down is taken in about that time, not after its expiry.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use kube::Client;
use kubert::lease::{ClaimParams, LeaseManager};
use tokio::sync::watch;

use crate::names;

/// The claims the manager publishes, and its task.
type Claims = (
    watch::Receiver<std::sync::Arc<kubert::lease::Claim>>,
    tokio::task::JoinHandle<Result<(), kubert::lease::Error>>,
);

/// How often a standby asks whether the Lease is free.
pub const STANDBY_POLL: Duration = Duration::from_secs(2);
/// The longest wait between attempts while the API server does not answer.
const MAX_RETRY: Duration = Duration::from_secs(5);

/// Why the Lease could not be claimed.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    /// Creating or reading the Lease failed.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The lease manager failed.
    #[error("{0}")]
    Lease(#[from] kubert::lease::Error),
}

/// One candidate for a Lease.
#[derive(Debug, Clone)]
pub struct Election {
    api: Api<Lease>,
    name: String,
    identity: String,
    params: ClaimParams,
}

impl Election {
    /// A candidate `identity` for the Lease `name` in `namespace`; a claim
    /// lasts `duration` and is renewed a third of it before it ends.
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        identity: &str,
        duration: Duration,
    ) -> Self {
        Election {
            api: Api::namespaced(client, namespace),
            name: name.into(),
            identity: identity.into(),
            params: ClaimParams {
                lease_duration: duration,
                renew_grace_period: duration / 3,
            },
        }
    }

    /// The Lease's name.
    pub fn lease_name(&self) -> &str {
        &self.name
    }

    /// Creates the Lease if there is none, so the manager can read it.
    async fn ensure_lease(&self) -> Result<(), kube::Error> {
        if self.api.get_opt(&self.name).await?.is_some() {
            return Ok(());
        }
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                ..Default::default()
            },
            spec: None,
        };
        match self.api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn claim(&self) -> Result<Claims, LeaderError> {
        self.ensure_lease().await?;
        let manager = LeaseManager::init(self.api.clone(), &self.name)
            .await?
            .with_field_manager(names::FIELD_MANAGER);
        Ok(manager.spawn(&self.identity, self.params.clone()).await?)
    }

    /// Publishes on `leading` whether this replica holds the Lease, until
    /// `shutdown` turns true (or its sender is dropped); then vacates the
    /// Lease so a standby takes over at once. Stop reconciling before that.
    pub async fn run(self, leading: watch::Sender<bool>, mut shutdown: watch::Receiver<bool>) {
        let mut retry = Duration::from_millis(500);
        let mut failing = false;
        loop {
            let (mut claims, task) = match self.claim().await {
                Ok(spawned) => {
                    if failing {
                        tracing::info!(lease = %self.name, "the API server answers again");
                    }
                    failing = false;
                    retry = Duration::from_millis(500);
                    spawned
                }
                Err(e) => {
                    leading.send_replace(false);
                    if !failing {
                        tracing::warn!(lease = %self.name, error = %e,
                            "cannot claim the lease; not leading until the API server answers");
                    }
                    failing = true;
                    tokio::select! {
                        () = tokio::time::sleep(retry) => {}
                        () = stopping(&mut shutdown) => return,
                    }
                    retry = (retry * 2).min(MAX_RETRY);
                    continue;
                }
            };
            loop {
                let claim = claims.borrow_and_update().clone();
                let mine = claim.is_current_for(&self.identity);
                leading.send_if_modified(|l| std::mem::replace(l, mine) != mine);
                tokio::select! {
                    biased;
                    () = stopping(&mut shutdown) => {
                        leading.send_replace(false);
                        // Dropping the receiver makes the manager vacate the Lease.
                        drop(claims);
                        if let Ok(Ok(Err(e))) = tokio::time::timeout(Duration::from_secs(5), task).await {
                            tracing::warn!(lease = %self.name, error = %e, "cannot vacate the lease");
                        }
                        return;
                    }
                    changed = claims.changed() => if changed.is_err() { break },
                    // Unrenewed: stop leading at the claim's end.
                    () = claim.expire(), if mine => {}
                    // A standby asks again soon, in case the Lease was vacated.
                    () = tokio::time::sleep(STANDBY_POLL), if !mine => break,
                }
            }
            // The manager stopped (it gave up renewing while the API server
            // did not answer) or the standby looks again.
            leading.send_replace(false);
            drop(claims);
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    if !failing {
                        tracing::warn!(lease = %self.name, error = %e,
                            "cannot renew the lease; not leading until the API server answers");
                    }
                    failing = true;
                }
                Err(e) => tracing::warn!(lease = %self.name, error = %e, "lease task failed"),
            }
        }
    }
}

/// Completes once `shutdown` is true or its sender is gone.
async fn stopping(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}
