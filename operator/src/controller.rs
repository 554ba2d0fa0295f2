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

use std::fmt::Debug;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::chrono::Utc;
use k8s_openapi::NamespaceResourceScope;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::json;
use streammachine_crds::v1alpha1::{
    Handoff, SourceMount, SourceMountStatus, Stream, StreamStatus, CONDITION_DEGRADED,
    CONDITION_READY, CONDITION_SOURCE_CONNECTED,
};

use crate::build::{self, BuildError, Settings, SlaveWorkload, StaleKind};
use crate::conditions::{self, Desired, State};
use crate::metrics::Metrics;
use crate::names;
use crate::rollout;
use crate::status::{MasterReport, MasterStatus};
use crate::validate;

/// Reason: the source password Secret (or its key) is missing.
pub const REASON_PASSWORD_NOT_FOUND: &str = "SourcePasswordNotFound";

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

fn apply_params() -> PatchParams {
    PatchParams::apply(names::FIELD_MANAGER).force()
}

async fn apply<K>(client: &Client, ns: &str, obj: &K) -> Result<K, kube::Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    api.patch(&obj.name_any(), &apply_params(), &Patch::Apply(obj))
        .await
}

async fn delete_if_present<K>(client: &Client, ns: &str, name: &str) -> Result<(), kube::Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Debug
        + DeserializeOwned,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

async fn get_opt<K>(client: &Client, ns: &str, name: &str) -> Result<Option<K>, kube::Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Debug
        + DeserializeOwned,
{
    Api::<K>::namespaced(client.clone(), ns).get_opt(name).await
}

/// Writes `status` with server-side apply (fields no longer set are removed).
async fn apply_status<K>(
    client: &Client,
    obj: &K,
    status: &impl Serialize,
) -> Result<(), kube::Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Debug
        + DeserializeOwned,
{
    let ns = obj.namespace().unwrap_or_default();
    let api: Api<K> = Api::namespaced(client.clone(), &ns);
    let patch = json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(&obj.name_any(), &apply_params(), &Patch::Apply(&patch))
        .await?;
    Ok(())
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

/// Reconciles one SourceMount.
pub async fn reconcile_mount(mount: Arc<SourceMount>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let result = reconcile_mount_inner(&mount, &ctx).await;
    ctx.metrics
        .observe("sourcemount", started.elapsed(), result.is_ok());
    result
}

async fn reconcile_mount_inner(mount: &SourceMount, ctx: &Context) -> Result<Action, Error> {
    let client = &ctx.client;
    let ns = mount.namespace().ok_or(Error::NoNamespace)?;
    let name = mount.name_any();
    let generation = mount.metadata.generation;
    let old = mount.status.clone().unwrap_or_default();

    // Fetch.
    let streams = streams_of(client, &ns, &name).await?;
    let link = get_opt::<Secret>(client, &ns, &names::link_secret(&name)).await?;
    let password = get_opt::<Secret>(client, &ns, &mount.spec.password.secret_key_ref.name).await?;

    // Validate.
    let invalid = validate::source_mount_config(mount)
        .err()
        .map(|i| (i.reason, i.message, false))
        .or_else(|| {
            password_problem(mount, password.as_ref()).map(|m| (REASON_PASSWORD_NOT_FOUND, m, true))
        });
    if let Some((reason, message, watch_secret)) = invalid {
        tracing::info!(namespace = %ns, name = %name, reason, message = %message, "SourceMount not served");
        let status = SourceMountStatus {
            observed_generation: generation,
            conditions: conditions::merge(
                &old.conditions,
                &[
                    Desired::new(CONDITION_READY, false, reason, message),
                    Desired::new(
                        CONDITION_SOURCE_CONNECTED,
                        State::Unknown,
                        "NotServed",
                        "the SourceMount is not served",
                    ),
                    Desired::new(CONDITION_DEGRADED, false, "NotServed", ""),
                ],
                generation,
                &Time(Utc::now()),
            ),
            ..Default::default()
        };
        if status != old {
            apply_status(client, mount, &status).await?;
        }
        // A bad name only changes with a new object; the password Secret is not
        // watched, so look again now and then.
        return Ok(if watch_secret {
            Action::requeue(ctx.poll_interval * 2)
        } else {
            Action::await_change()
        });
    }
    let mut served = Vec::new();
    let mut bad = Vec::new();
    for s in &streams {
        match validate::stream_config(s, Some(mount)) {
            Ok(c) => served.push(c),
            Err(_) => bad.push(s.name_any()),
        }
    }

    // The slaves roll to a new image only once the master serves it and the
    // running slaves have linked to it again (`rollout.rs`).
    let desired_image = build::image(mount, &ctx.settings);
    let master_now = get_opt::<Deployment>(client, &ns, &names::master(&name)).await?;
    let slave_name = names::slave(&name);
    let (slaves_now, slaves_running) = match mount.spec.slaves.handoff {
        Handoff::Drain => get_opt::<Deployment>(client, &ns, &slave_name)
            .await?
            .map(|d| {
                let ready = d.status.as_ref().and_then(|s| s.ready_replicas);
                (
                    rollout::slaves_image(Some(&d), None).map(String::from),
                    ready,
                )
            }),
        Handoff::Socket => get_opt::<DaemonSet>(client, &ns, &slave_name)
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
    let relinked = match &link {
        Some(secret)
            if slaves_running.unwrap_or(0) > 0
                && rollout::asks_relinked(
                    &desired_image,
                    master_now.as_ref(),
                    slaves_now.as_deref(),
                ) =>
        {
            Some(matches!(
                ctx.master_status
                    .fetch(names::master_url(&name, &ns), admin_token(secret))
                    .await,
                Ok(r) if r.slaves > 0
            ))
        }
        _ => None,
    };
    let slave_image = rollout::slave_image(
        &desired_image,
        master_now.as_ref(),
        slaves_now.as_deref(),
        relinked,
    );
    let holding_slaves = slave_image != desired_image;
    if holding_slaves {
        tracing::info!(namespace = %ns, name = %name, slaves = %slave_image, master = %desired_image,
            "slaves keep their image until the master serves the new one");
    }

    // Build.
    let children = build::children(
        mount,
        &served,
        link.as_ref(),
        &ctx.settings,
        &mut random_secret,
        Some(slave_image),
    )?;

    // Apply: config and secret first, so the pods find them.
    apply(client, &ns, &children.config_map).await?;
    let secret = apply(client, &ns, &children.link_secret).await?;
    let master = apply(client, &ns, &children.master_deployment).await?;
    apply(client, &ns, &children.master_service).await?;
    if let Some(s) = &children.source_service {
        apply(client, &ns, s).await?;
    }
    let slaves = match &children.slaves {
        SlaveWorkload::Deployment(d) => {
            SlaveWorkload::Deployment(Box::new(apply(client, &ns, d.as_ref()).await?))
        }
        SlaveWorkload::DaemonSet(d) => {
            SlaveWorkload::DaemonSet(Box::new(apply(client, &ns, d.as_ref()).await?))
        }
    };
    apply(client, &ns, &children.slave_service).await?;
    if let Some(p) = &children.pod_disruption_budget {
        apply(client, &ns, p).await?;
    }
    for (kind, stale) in children.stale(&name) {
        match kind {
            StaleKind::Deployment => delete_if_present::<Deployment>(client, &ns, &stale).await?,
            StaleKind::DaemonSet => delete_if_present::<DaemonSet>(client, &ns, &stale).await?,
            StaleKind::Service => delete_if_present::<Service>(client, &ns, &stale).await?,
            StaleKind::PodDisruptionBudget => {
                delete_if_present::<PodDisruptionBudget>(client, &ns, &stale).await?
            }
        }
    }

    // Status.
    let master_ready = master
        .status
        .as_ref()
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0)
        > 0;
    let (slaves_ready, slaves_wanted) = slave_replicas(&slaves);
    let report = if master_ready {
        let token = admin_token(&secret);
        Some(
            ctx.master_status
                .fetch(names::master_url(&name, &ns), token)
                .await,
        )
    } else {
        None
    };
    let ready = match (master_ready, slaves_ready > 0) {
        (true, true) => Desired::new(
            CONDITION_READY,
            true,
            "Serving",
            "master and slaves are ready",
        ),
        (false, _) => Desired::new(
            CONDITION_READY,
            false,
            "MasterNotReady",
            format!("Deployment {} has no ready pod", names::master(&name)),
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
    let (source, listeners) = match &report {
        None => (
            Desired::new(
                CONDITION_SOURCE_CONNECTED,
                State::Unknown,
                "MasterNotReady",
                "the master is not ready",
            ),
            None,
        ),
        Some(Err(e)) => (
            Desired::new(
                CONDITION_SOURCE_CONNECTED,
                State::Unknown,
                "MasterUnreachable",
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
    let mut degraded = Vec::new();
    let mut reason = None;
    if slaves_ready < slaves_wanted {
        degraded.push(format!("{slaves_ready} of {slaves_wanted} slaves ready"));
        reason = reason.or(Some("SlavesUnavailable"));
    }
    let out_of_sync = match &report {
        Some(Ok(r)) => r.out_of_sync.clone(),
        _ => Vec::new(),
    };
    if !out_of_sync.is_empty() {
        let list: Vec<String> = out_of_sync
            .iter()
            .map(|(id, n)| format!("{id} ({n} chunks behind)"))
            .collect();
        degraded.push(format!("slaves out of sync: {}", list.join(", ")));
        reason = reason.or(Some(REASON_SLAVES_OUT_OF_SYNC));
    }
    if !bad.is_empty() {
        degraded.push(format!("Streams with an invalid spec: {}", bad.join(", ")));
        reason = reason.or(Some("InvalidStreams"));
    }
    let degraded = match reason {
        None => Desired::new(CONDITION_DEGRADED, false, "AsExpected", ""),
        Some(reason) => Desired::new(CONDITION_DEGRADED, true, reason, degraded.join("; ")),
    };
    let new_conditions = conditions::merge(
        &old.conditions,
        &[ready, source.clone(), degraded.clone()],
        generation,
        &Time(Utc::now()),
    );
    let status = SourceMountStatus {
        observed_generation: generation,
        conditions: new_conditions,
        streams: Some(i32::try_from(served.len()).unwrap_or(i32::MAX)),
        listeners,
        slaves: Some(format!("{slaves_ready}/{slaves_wanted}")),
        source_url: Some(source_url),
    };
    if status != old {
        source_event(ctx, mount, &old, &source).await;
        sync_event(ctx, mount, &old, &degraded).await;
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

/// Degraded reason while slaves lag the master.
const REASON_SLAVES_OUT_OF_SYNC: &str = "SlavesOutOfSync";

/// A Warning Event when slaves fall out of sync, a Normal one when they are back.
async fn sync_event(ctx: &Context, mount: &SourceMount, old: &SourceMountStatus, new: &Desired) {
    let was = old
        .conditions
        .iter()
        .any(|c| c.type_ == CONDITION_DEGRADED && c.reason == REASON_SLAVES_OUT_OF_SYNC);
    let is = new.reason == REASON_SLAVES_OUT_OF_SYNC;
    let (reason, type_) = match (was, is) {
        (false, true) => ("SlaveOutOfSync", EventType::Warning),
        (true, false) => ("SlavesInSync", EventType::Normal),
        _ => return,
    };
    let note = if is {
        new.message.clone()
    } else {
        "every slave is in sync".into()
    };
    publish(ctx, mount, type_, reason, note).await;
}

fn admin_token(secret: &Secret) -> String {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(names::ADMIN_TOKEN_KEY))
        .map(|v| String::from_utf8_lossy(&v.0).into_owned())
        .unwrap_or_default()
}

/// An Event when the source comes or goes (a Warning for a monitored mount).
async fn source_event(ctx: &Context, mount: &SourceMount, old: &SourceMountStatus, new: &Desired) {
    let before = conditions::status_of(&old.conditions, CONDITION_SOURCE_CONNECTED);
    let (reason, type_) = match (before, new.state) {
        (Some("True"), State::False) => (
            "SourceLost",
            if mount.spec.monitored {
                EventType::Warning
            } else {
                EventType::Normal
            },
        ),
        (Some(b), State::True) if b != "True" => ("SourceConnected", EventType::Normal),
        _ => return,
    };
    publish(ctx, mount, type_, reason, new.message.clone()).await;
}

/// Publishes an Event about `mount` (a failure is logged, never fatal).
async fn publish(ctx: &Context, mount: &SourceMount, type_: EventType, reason: &str, note: String) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: "Observe".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &mount.object_ref(&())).await {
        tracing::warn!(error = %e, "cannot publish event");
    }
}

/// Reconciles one Stream's status.
pub async fn reconcile_stream(stream: Arc<Stream>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let result = reconcile_stream_inner(&stream, &ctx).await;
    ctx.metrics
        .observe("stream", started.elapsed(), result.is_ok());
    result
}

async fn reconcile_stream_inner(stream: &Stream, ctx: &Context) -> Result<Action, Error> {
    let client = &ctx.client;
    let ns = stream.namespace().ok_or(Error::NoNamespace)?;
    let name = stream.name_any();
    let generation = stream.metadata.generation;
    let old = stream.status.clone().unwrap_or_default();
    let mount_name = &stream.spec.source_mount;

    // Fetch.
    let mount = get_opt::<SourceMount>(client, &ns, mount_name).await?;

    // Validate.
    let checked = validate::stream_config(stream, mount.as_ref()).and_then(|c| {
        if let Some(m) = &mount {
            validate::source_mount_config(m).map_err(|i| validate::Invalid {
                reason: "SourceMountInvalid",
                message: format!("SourceMount {mount_name:?}: {}", i.message),
            })?;
        }
        Ok(c)
    });
    let now = Time(Utc::now());
    let (desired, report, action) = match checked {
        Err(invalid) => {
            tracing::info!(namespace = %ns, name = %name, reason = invalid.reason, message = %invalid.message, "Stream not served");
            (
                vec![
                    Desired::new(CONDITION_READY, false, invalid.reason, invalid.message),
                    Desired::new(
                        CONDITION_SOURCE_CONNECTED,
                        State::Unknown,
                        "NotServed",
                        "the Stream is not served",
                    ),
                    Desired::new(CONDITION_DEGRADED, false, "NotServed", ""),
                ],
                None,
                // A change of the Stream, or of SourceMounts (watched), brings it back.
                Action::await_change(),
            )
        }
        Ok(_) => {
            let link = get_opt::<Secret>(client, &ns, &names::link_secret(mount_name)).await?;
            let report = match &link {
                None => None,
                Some(secret) => Some(
                    ctx.master_status
                        .fetch(names::master_url(mount_name, &ns), admin_token(secret))
                        .await,
                ),
            };
            let desired = served_conditions(&name, mount_name, report.as_ref());
            let report = report.and_then(Result::ok);
            (desired, report, Action::requeue(ctx.poll_interval))
        }
    };
    let mine = report.as_ref().and_then(|r| r.streams.get(&name));
    let mut urls = Vec::new();
    if mine.is_some() {
        let base = format!(
            "http://{}.{ns}.svc:{}/{name}",
            names::slave(mount_name),
            names::LISTENER_PORT
        );
        if stream.spec.hls.is_some() {
            urls.push(format!("{base}.m3u8"));
        }
        urls.insert(0, base);
    }
    let status = StreamStatus {
        observed_generation: generation,
        conditions: conditions::merge(&old.conditions, &desired, generation, &now),
        listeners: mine.map(|s| s.listeners),
        buffered_seconds: mine.map(|s| s.buffered_seconds.floor() as i64),
        listener_urls: urls,
    };
    if status != old {
        apply_status(client, stream, &status).await?;
    }
    Ok(action)
}

/// Conditions of a valid Stream, from what its master says.
fn served_conditions(
    name: &str,
    mount: &str,
    report: Option<&Result<MasterReport, crate::status::StatusError>>,
) -> Vec<Desired> {
    let not_yet = |reason: &str, message: String| {
        vec![
            Desired::new(CONDITION_READY, false, reason, message.clone()),
            Desired::new(CONDITION_SOURCE_CONNECTED, State::Unknown, reason, message),
            Desired::new(CONDITION_DEGRADED, false, "AsExpected", ""),
        ]
    };
    match report {
        None => not_yet(
            "Pending",
            format!("waiting for SourceMount {mount:?} to start its master"),
        ),
        Some(Err(e)) => not_yet("MasterUnreachable", e.to_string()),
        Some(Ok(r)) => match r.streams.get(name) {
            None => not_yet(
                "NotLoaded",
                "the master has not loaded this stream yet".into(),
            ),
            Some(s) => vec![
                Desired::new(
                    CONDITION_READY,
                    true,
                    "Serving",
                    "the master serves this stream",
                ),
                if s.source_connected {
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
                        format!("no encoder is connected to SourceMount {mount:?}"),
                    )
                },
                if let Some(error) = &s.transcoder_failing {
                    Desired::new(
                        CONDITION_DEGRADED,
                        true,
                        "TranscoderFailing",
                        format!("the transcoder fails and restarts with backoff: {error}"),
                    )
                } else if r.slaves == 0 {
                    Desired::new(
                        CONDITION_DEGRADED,
                        true,
                        "NoSlaves",
                        "no slave is connected to the master",
                    )
                } else {
                    Desired::new(CONDITION_DEGRADED, false, "AsExpected", "")
                },
            ],
        },
    }
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

    let mounts = Controller::new(api::<SourceMount>(&client, ns), watcher::Config::default())
        .owns(api::<ConfigMap>(&client, ns), managed())
        .owns(api::<Secret>(&client, ns), managed())
        .owns(api::<Deployment>(&client, ns), managed())
        .owns(api::<DaemonSet>(&client, ns), managed())
        .owns(api::<Service>(&client, ns), managed())
        .watches(
            api::<Stream>(&client, ns),
            watcher::Config::default(),
            |s: Stream| {
                let ns = s.namespace()?;
                Some(ObjectRef::<SourceMount>::new(&s.spec.source_mount).within(&ns))
            },
        )
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
