//! Leader election through a `coordination.k8s.io/v1` Lease: one replica runs
//! the controllers, any other waits as a hot standby and takes over once the
//! leader stops renewing. Optimistic concurrency (the Lease's resourceVersion)
//! makes sure only one candidate wins a race.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::chrono::{DateTime, Utc};
use kube::api::{Api, PostParams};
use kube::Client;

/// What a candidate should do with the Lease as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// No Lease yet: create it, holding it.
    Create,
    /// We hold it: renew.
    Renew,
    /// Nobody holds it, or the holder stopped renewing: take it.
    TakeOver,
    /// Someone else holds it and renews it: wait.
    Wait,
}

/// Decides from the Lease (if any), who we are and the time.
pub fn decide(
    lease: Option<&Lease>,
    identity: &str,
    now: DateTime<Utc>,
    default_duration: Duration,
) -> Decision {
    let Some(lease) = lease else {
        return Decision::Create;
    };
    let spec = lease.spec.clone().unwrap_or_default();
    let holder = spec.holder_identity.unwrap_or_default();
    if holder == identity {
        return Decision::Renew;
    }
    if holder.is_empty() {
        return Decision::TakeOver;
    }
    let duration = spec.lease_duration_seconds.map_or(default_duration, |s| {
        Duration::from_secs(u64::try_from(s).unwrap_or(0))
    });
    let last = spec.renew_time.or(spec.acquire_time).map(|t| t.0);
    match last {
        Some(t) if t + duration > now => Decision::Wait,
        _ => Decision::TakeOver,
    }
}

/// One candidate for a Lease.
#[derive(Debug, Clone)]
pub struct LeaseLock {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
}

impl LeaseLock {
    /// A candidate `identity` for the Lease `name` in `namespace`.
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        identity: &str,
        duration: Duration,
    ) -> Self {
        LeaseLock {
            api: Api::namespaced(client, namespace),
            name: name.into(),
            identity: identity.into(),
            duration,
        }
    }

    fn spec(
        &self,
        now: DateTime<Utc>,
        acquire: Option<DateTime<Utc>>,
        transitions: i32,
    ) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(
                i32::try_from(self.duration.as_secs()).unwrap_or(i32::MAX),
            ),
            acquire_time: Some(MicroTime(acquire.unwrap_or(now))),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }

    /// Takes or renews the Lease; `Ok(true)` when we hold it now. A lost race
    /// (409 Conflict) is `Ok(false)`, not an error.
    pub async fn try_acquire_or_renew(&self) -> Result<bool, kube::Error> {
        let now = Utc::now();
        let current = self.api.get_opt(&self.name).await?;
        let result = match decide(current.as_ref(), &self.identity, now, self.duration) {
            Decision::Wait => return Ok(false),
            Decision::Create => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        ..Default::default()
                    },
                    spec: Some(self.spec(now, None, 0)),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            Decision::Renew | Decision::TakeOver => {
                let Some(mut lease) = current else {
                    return Ok(false);
                };
                let old = lease.spec.clone().unwrap_or_default();
                let renew = old.holder_identity.as_deref() == Some(self.identity.as_str());
                let transitions = old.lease_transitions.unwrap_or(0) + i32::from(!renew);
                let acquire = if renew {
                    old.acquire_time.map(|t| t.0)
                } else {
                    None
                };
                lease.spec = Some(self.spec(now, acquire, transitions));
                // metadata.resourceVersion is kept: a concurrent change fails with 409.
                self.api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await
            }
        };
        match result {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Gives the Lease up (at shutdown), so a standby takes over at once.
    pub async fn release(&self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            return Ok(());
        };
        let mut spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        lease.spec = Some(spec);
        self.api
            .replace(&self.name, &PostParams::default(), &lease)
            .await?;
        Ok(())
    }

    /// Waits until we hold the Lease.
    pub async fn acquire(&self, retry: Duration) {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => return,
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, lease = %self.name, "leader election"),
            }
            tokio::time::sleep(retry).await;
        }
    }

    /// Renews every `every` while we hold the Lease; returns when it is lost
    /// (someone else holds it, or renewing failed for a whole lease duration).
    pub async fn keep(&self, every: Duration) {
        let mut last_ok = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(every).await;
            match self.try_acquire_or_renew().await {
                Ok(true) => last_ok = tokio::time::Instant::now(),
                Ok(false) => return,
                Err(e) => {
                    tracing::warn!(error = %e, lease = %self.name, "cannot renew the lease");
                    if last_ok.elapsed() >= self.duration {
                        return;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::chrono::TimeZone;

    fn lease(holder: Option<&str>, renewed: i64) -> Lease {
        Lease {
            metadata: ObjectMeta::default(),
            spec: Some(LeaseSpec {
                holder_identity: holder.map(String::from),
                lease_duration_seconds: Some(15),
                renew_time: Some(MicroTime(Utc.timestamp_opt(renewed, 0).unwrap())),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn decisions() {
        let now = Utc.timestamp_opt(1000, 0).unwrap();
        let d = Duration::from_secs(15);
        assert_eq!(decide(None, "a", now, d), Decision::Create);
        assert_eq!(
            decide(Some(&lease(Some("a"), 990)), "a", now, d),
            Decision::Renew
        );
        assert_eq!(
            decide(Some(&lease(Some("b"), 990)), "a", now, d),
            Decision::Wait
        );
        assert_eq!(
            decide(Some(&lease(Some("b"), 980)), "a", now, d),
            Decision::TakeOver
        );
        assert_eq!(
            decide(Some(&lease(None, 999)), "a", now, d),
            Decision::TakeOver
        );
    }
}
