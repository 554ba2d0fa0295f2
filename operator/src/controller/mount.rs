//! The SourceMount reconciler, in stages: fetch → validate (an invalid name,
//! spec or missing password Secret is `Ready=False` with an Event, and nothing
//! is built) → choose the slaves' image (`rollout.rs`) → build the children
//! with the pure builders → apply them → status from the children and the
//! master's own report.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::chrono::Utc;
use kube::api::{Api, ListParams};
use kube::runtime::controller::Action;
use kube::{Client, ResourceExt};
use streammachine_crds::v1alpha1::{
    Handoff, SourceMount, SourceMountStatus, Stream, CONDITION_DEGRADED, CONDITION_READY,
    CONDITION_SOURCE_CONNECTED,
};

use super::api::{apply, apply_status, delete_if_present, get_opt};
use super::events::{self, REASON_PASSWORD_NOT_FOUND, REASON_SLAVES_OUT_OF_SYNC};
use super::{admin_token, master_ready, random_secret, Context, Error};
use crate::build::{self, Children, SlaveWorkload, StaleKind};
use crate::conditions::{self, Desired, State};
use crate::names;
use crate::rollout;
use crate::status::{MasterReport, StatusError};
use crate::validate::{self, Invalid};

/// Reconciles one SourceMount.
#[tracing::instrument(skip_all, fields(namespace = mount.namespace(), name = mount.name_any()))]
pub async fn reconcile_mount(mount: Arc<SourceMount>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let result = reconcile(&mount, &ctx).await;
    ctx.observe(mount.as_ref(), "sourcemount", started.elapsed(), &result);
    result
}

async fn reconcile(mount: &SourceMount, ctx: &Context) -> Result<Action, Error> {
    let client = &ctx.client;
    let ns = mount.namespace().ok_or(Error::NoNamespace)?;
    let name = mount.name_any();

    // Validate before fetching anything else: a bad name builds nothing.
    if let Err(invalid) = validate::source_mount_config(mount) {
        return not_served(ctx, mount, invalid).await;
    }
    let password = get_opt::<Secret>(client, &ns, &mount.spec.password.secret_key_ref.name).await?;
    if let Some(message) = password_problem(mount, password.as_ref()) {
        return not_served(ctx, mount, Invalid::new(REASON_PASSWORD_NOT_FOUND, message)).await;
    }

    // Fetch.
    let streams = streams_of(client, &ns, &name).await?;
    let link = get_opt::<Secret>(client, &ns, &names::link_secret(&name)).await?;
    let mut served = Vec::new();
    let mut bad = Vec::new();
    for s in &streams {
        match validate::stream_config(s, Some(mount)) {
            Ok(c) => served.push(c),
            Err(_) => bad.push(s.name_any()),
        }
    }

    // Rollout, build, apply.
    let (slave_image, holding_slaves) = slave_image(ctx, mount, &ns, link.as_ref()).await?;
    let children = build::children(
        mount,
        &served,
        link.as_ref(),
        &ctx.settings,
        &mut random_secret,
        Some(slave_image),
    )?;
    let applied = apply_children(client, &ns, &name, &children).await?;

    // Status.
    let master_ready = master_ready(Some(&applied.master));
    let report = if master_ready {
        Some(
            ctx.master_status
                .fetch(names::master_url(&name, &ns), admin_token(&applied.link))
                .await,
        )
    } else {
        None
    };
    let observed = Observed {
        master_ready,
        slaves: slave_replicas(&applied.slaves),
        report: report.as_ref(),
        bad_streams: &bad,
        served: served.len(),
    };
    let old = mount.status.clone().unwrap_or_default();
    let (status, desired) = mount_status(mount, &ns, &old, &observed);
    if status != old {
        let [ready, source, degraded] = &desired;
        events::ready_event(ctx, mount, &old.conditions, ready).await;
        events::source_event(ctx, mount, mount.spec.monitored, &old.conditions, source).await;
        events::sync_event(ctx, mount, &old.conditions, degraded).await;
        apply_status(client, mount, &status).await?;
    }
    // While the slaves wait for the master, look again soon: their relink
    // changes no watched object.
    Ok(Action::requeue(if holding_slaves {
        ctx.poll_interval.min(Duration::from_secs(2))
    } else {
        ctx.poll_interval
    }))
}

/// `Ready=False` with the reason, an Event on the transition, no children
/// built. A new spec, name or Secret (all watched) brings it back.
async fn not_served(ctx: &Context, mount: &SourceMount, invalid: Invalid) -> Result<Action, Error> {
    tracing::info!(reason = invalid.reason, message = %invalid.message, "SourceMount not served");
    let old = mount.status.clone().unwrap_or_default();
    let generation = mount.metadata.generation;
    let ready = Desired::new(CONDITION_READY, false, invalid.reason, invalid.message);
    let status = SourceMountStatus {
        observed_generation: generation,
        conditions: conditions::merge(
            &old.conditions,
            &[
                ready.clone(),
                Desired::new(
                    CONDITION_SOURCE_CONNECTED,
                    State::Unknown,
                    "NotServed",
                    "the SourceMount is not served",
                ),
                Desired::new(
                    CONDITION_DEGRADED,
                    State::Unknown,
                    "NotServed",
                    "the SourceMount is not served",
                ),
            ],
            generation,
            &Time(Utc::now()),
        ),
        ..Default::default()
    };
    if status != old {
        events::ready_event(ctx, mount, &old.conditions, &ready).await;
        apply_status(&ctx.client, mount, &status).await?;
    }
    Ok(Action::await_change())
}

/// The slaves roll to a new image only once the master serves it and the
/// running slaves have linked to it again (`rollout.rs`). Returns the image
/// for the slaves and whether it holds them back.
async fn slave_image(
    ctx: &Context,
    mount: &SourceMount,
    ns: &str,
    link: Option<&Secret>,
) -> Result<(String, bool), Error> {
    let client = &ctx.client;
    let name = mount.name_any();
    let desired = build::image(mount, &ctx.settings);
    let master_now = get_opt::<Deployment>(client, ns, &names::master(&name)).await?;
    let slave_name = names::slave(&name);
    let (slaves_now, slaves_running) = match mount.spec.slaves.handoff {
        Handoff::Drain => get_opt::<Deployment>(client, ns, &slave_name)
            .await?
            .map(|d| {
                let ready = d.status.as_ref().and_then(|s| s.ready_replicas);
                (
                    rollout::slaves_image(Some(&d), None).map(String::from),
                    ready,
                )
            }),
        Handoff::Socket => get_opt::<DaemonSet>(client, ns, &slave_name)
            .await?
            .map(|d| {
                let ready = d.status.as_ref().map(|s| s.number_ready);
                (
                    rollout::slaves_image(None, Some(&d)).map(String::from),
                    ready,
                )
            }),
    }
    .unwrap_or_default();
    let relinked = match link {
        Some(secret)
            if slaves_running.unwrap_or(0) > 0
                && rollout::asks_relinked(&desired, master_now.as_ref(), slaves_now.as_deref()) =>
        {
            Some(matches!(
                ctx.master_status
                    .fetch(names::master_url(&name, ns), admin_token(secret))
                    .await,
                Ok(r) if r.slaves > 0
            ))
        }
        _ => None,
    };
    let image = rollout::slave_image(
        &desired,
        master_now.as_ref(),
        slaves_now.as_deref(),
        relinked,
    );
    let holding = image != desired;
    if holding {
        tracing::info!(slaves = %image, master = %desired,
            "slaves keep their image until the master serves the new one");
    }
    Ok((image, holding))
}

/// What the API server answered to the applies the status needs.
struct Applied {
    master: Deployment,
    slaves: SlaveWorkload,
    link: Secret,
}

/// Applies the children (config and Secret first, so the pods find them) and
/// deletes those of the other handoff mode.
async fn apply_children(
    client: &Client,
    ns: &str,
    name: &str,
    children: &Children,
) -> Result<Applied, Error> {
    apply(client, ns, &children.config_map).await?;
    let link = apply(client, ns, &children.link_secret).await?;
    let master = apply(client, ns, &children.master_deployment).await?;
    apply(client, ns, &children.master_service).await?;
    if let Some(s) = &children.source_service {
        apply(client, ns, s).await?;
    }
    let slaves = match &children.slaves {
        SlaveWorkload::Deployment(d) => {
            SlaveWorkload::Deployment(Box::new(apply(client, ns, d.as_ref()).await?))
        }
        SlaveWorkload::DaemonSet(d) => {
            SlaveWorkload::DaemonSet(Box::new(apply(client, ns, d.as_ref()).await?))
        }
    };
    apply(client, ns, &children.slave_service).await?;
    if let Some(p) = &children.pod_disruption_budget {
        apply(client, ns, p).await?;
    }
    for (kind, stale) in children.stale(name) {
        match kind {
            StaleKind::Deployment => delete_if_present::<Deployment>(client, ns, &stale).await?,
            StaleKind::DaemonSet => delete_if_present::<DaemonSet>(client, ns, &stale).await?,
            StaleKind::Service => delete_if_present::<Service>(client, ns, &stale).await?,
            StaleKind::PodDisruptionBudget => {
                delete_if_present::<PodDisruptionBudget>(client, ns, &stale).await?
            }
        }
    }
    Ok(Applied {
        master,
        slaves,
        link,
    })
}

/// What the status is made of.
struct Observed<'a> {
    master_ready: bool,
    /// Ready and wanted slaves.
    slaves: (i32, i32),
    /// The master's report, when it is ready.
    report: Option<&'a Result<MasterReport, StatusError>>,
    bad_streams: &'a [String],
    served: usize,
}

/// The status and its three conditions (Ready, SourceConnected, Degraded).
fn mount_status(
    mount: &SourceMount,
    ns: &str,
    old: &SourceMountStatus,
    o: &Observed<'_>,
) -> (SourceMountStatus, [Desired; 3]) {
    let name = mount.name_any();
    let (slaves_ready, slaves_wanted) = o.slaves;
    let ready = match (o.master_ready, slaves_ready > 0) {
        (true, true) => Desired::new(
            CONDITION_READY,
            true,
            "Serving",
            "master and slaves are ready",
        ),
        (false, _) => Desired::new(
            CONDITION_READY,
            false,
            REASON_MASTER_NOT_READY,
            master_not_ready_message(&name),
        ),
        (true, false) => Desired::new(
            CONDITION_READY,
            false,
            "SlavesNotReady",
            format!("no ready slave of {}", names::slave(&name)),
        ),
    };
    let source_url = format!(
        "icecast://{}.{ns}.svc:{}/{name}",
        names::master(&name),
        names::SOURCE_PORT
    );
    let (source, listeners) = match o.report {
        None => (
            Desired::new(
                CONDITION_SOURCE_CONNECTED,
                State::Unknown,
                REASON_MASTER_NOT_READY,
                master_not_ready_message(&name),
            ),
            None,
        ),
        Some(Err(e)) => (
            Desired::new(
                CONDITION_SOURCE_CONNECTED,
                State::Unknown,
                REASON_MASTER_UNREACHABLE,
                e.to_string(),
            ),
            None,
        ),
        Some(Ok(r)) => (
            if r.source_connected(&name) {
                Desired::new(
                    CONDITION_SOURCE_CONNECTED,
                    true,
                    "Connected",
                    "an encoder is connected",
                )
            } else {
                Desired::new(
                    CONDITION_SOURCE_CONNECTED,
                    false,
                    "NoSource",
                    format!("no encoder is connected to {source_url}"),
                )
            },
            Some(r.listeners()),
        ),
    };
    let out_of_sync = match o.report {
        Some(Ok(r)) => r.out_of_sync.clone(),
        _ => Vec::new(),
    };
    let degraded = degraded(o.bad_streams, (slaves_ready, slaves_wanted), &out_of_sync);
    let generation = mount.metadata.generation;
    let desired = [ready, source, degraded];
    let status = SourceMountStatus {
        observed_generation: generation,
        conditions: conditions::merge(&old.conditions, &desired, generation, &Time(Utc::now())),
        streams: Some(i32::try_from(o.served).unwrap_or(i32::MAX)),
        listeners,
        slaves: Some(format!("{slaves_ready}/{slaves_wanted}")),
        source_url: Some(source_url),
    };
    (status, desired)
}

/// Reason, on the SourceMount and its Streams alike: the master has no ready pod.
pub const REASON_MASTER_NOT_READY: &str = "MasterNotReady";
/// Reason, on the SourceMount and its Streams alike: the master's status API
/// did not answer.
pub const REASON_MASTER_UNREACHABLE: &str = "MasterUnreachable";

/// The message of [`REASON_MASTER_NOT_READY`].
pub fn master_not_ready_message(mount: &str) -> String {
    format!("Deployment {} has no ready pod", names::master(mount))
}

/// Degraded: every problem in the message; the reason is that of the first,
/// in the order a user can act on them (invalid Streams are theirs to fix).
fn degraded(
    bad_streams: &[String],
    (ready, wanted): (i32, i32),
    out_of_sync: &[(String, u64)],
) -> Desired {
    let mut problems: Vec<(&str, String)> = Vec::new();
    if !bad_streams.is_empty() {
        problems.push((
            "InvalidStreams",
            format!("Streams with an invalid spec: {}", bad_streams.join(", ")),
        ));
    }
    if ready < wanted {
        problems.push((
            "SlavesUnavailable",
            format!("{ready} of {wanted} slaves ready"),
        ));
    }
    if !out_of_sync.is_empty() {
        let list: Vec<String> = out_of_sync
            .iter()
            .map(|(id, n)| format!("{id} ({n} chunks behind)"))
            .collect();
        problems.push((
            REASON_SLAVES_OUT_OF_SYNC,
            format!("slaves out of sync: {}", list.join(", ")),
        ));
    }
    match problems.first() {
        None => Desired::new(CONDITION_DEGRADED, false, "AsExpected", ""),
        Some((reason, _)) => {
            let message: Vec<&str> = problems.iter().map(|(_, m)| m.as_str()).collect();
            Desired::new(CONDITION_DEGRADED, true, *reason, message.join("; "))
        }
    }
}

/// Ready and wanted replicas of the slave workload, from the apply's answer.
fn slave_replicas(applied: &SlaveWorkload) -> (i32, i32) {
    match applied {
        SlaveWorkload::Deployment(d) => {
            let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
            let ready = d
                .status
                .as_ref()
                .and_then(|s| s.ready_replicas)
                .unwrap_or(0);
            (ready, want)
        }
        SlaveWorkload::DaemonSet(d) => {
            let s = d.status.clone().unwrap_or_default();
            (s.number_ready, s.desired_number_scheduled)
        }
    }
}

/// The Streams of namespace `ns` that name `mount`, sorted by name.
async fn streams_of(client: &Client, ns: &str, mount: &str) -> Result<Vec<Stream>, kube::Error> {
    let api: Api<Stream> = Api::namespaced(client.clone(), ns);
    let mut streams: Vec<Stream> = api
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|s| s.spec.source_mount == mount)
        .collect();
    streams.sort_by_key(|s| s.name_any());
    Ok(streams)
}

/// Checks the source password Secret and its key.
fn password_problem(mount: &SourceMount, secret: Option<&Secret>) -> Option<String> {
    let sel = &mount.spec.password.secret_key_ref;
    match secret {
        None => Some(format!(
            "spec.password.secretKeyRef: no Secret {:?} in this namespace",
            sel.name
        )),
        Some(s) => {
            let has = s.data.as_ref().is_some_and(|d| d.contains_key(&sel.key))
                || s.string_data
                    .as_ref()
                    .is_some_and(|d| d.contains_key(&sel.key));
            (!has).then(|| {
                format!(
                    "spec.password.secretKeyRef: Secret {:?} has no key {:?}",
                    sel.name, sel.key
                )
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn degraded_reason_is_the_first_problem_listed() {
        let d = degraded(&["bad".into()], (0, 1), &[]);
        assert_eq!(d.reason, "InvalidStreams");
        assert!(
            d.message.contains("Streams with an invalid spec: bad"),
            "{}",
            d.message
        );
        assert!(d.message.contains("0 of 1 slaves ready"), "{}", d.message);
        let d = degraded(&[], (1, 1), &[("s1".into(), 3)]);
        assert_eq!(d.reason, REASON_SLAVES_OUT_OF_SYNC);
        let d = degraded(&[], (1, 1), &[]);
        assert_eq!((d.state, d.reason.as_str()), (State::False, "AsExpected"));
    }
}
