//! The Stream reconciler: only status (a Stream's settings reach its master
//! through the SourceMount's ConfigMap): valid or not, loaded by the master or
//! not, listeners, buffered seconds, listener URLs, and the SourceMount that
//! carries it (`status.sourceMount`, so a move reconciles the old one too).

use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::chrono::Utc;
use kube::runtime::controller::Action;
use kube::ResourceExt;
use streammachine_crds::v1alpha1::{
    SourceMount, Stream, StreamStatus, CONDITION_DEGRADED, CONDITION_READY,
    CONDITION_SOURCE_CONNECTED,
};

use super::api::{apply_status, get_opt};
use super::events;
use super::mount::{master_not_ready_message, REASON_MASTER_NOT_READY, REASON_MASTER_UNREACHABLE};
use super::{admin_token, master_ready, Context, Error};
use crate::conditions::{self, Desired, State};
use crate::names;
use crate::status::{MasterReport, StatusError};
use crate::validate;

/// Reconciles one Stream's status.
#[tracing::instrument(skip_all, fields(namespace = stream.namespace(), name = stream.name_any()))]
pub async fn reconcile_stream(stream: Arc<Stream>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let result = reconcile(&stream, &ctx).await;
    ctx.observe(stream.as_ref(), "stream", started.elapsed(), &result);
    result
}

/// What the master says, as far as it got.
enum Master {
    /// The SourceMount has no master Deployment with a ready pod.
    NotReady,
    /// It is ready; its status API answered, or not.
    Report(Result<MasterReport, StatusError>),
}

async fn reconcile(stream: &Stream, ctx: &Context) -> Result<Action, Error> {
    let client = &ctx.client;
    let ns = stream.namespace().ok_or(Error::NoNamespace)?;
    let name = stream.name_any();
    let mount_name = &stream.spec.source_mount;

    // Fetch and validate.
    let mount = get_opt::<SourceMount>(client, &ns, mount_name).await?;
    let checked = validate::stream_config(stream, mount.as_ref()).and_then(|c| {
        if let Some(m) = &mount {
            validate::source_mount_config(m).map_err(|i| validate::Invalid {
                reason: validate::REASON_SOURCE_MOUNT_INVALID,
                message: format!("SourceMount {mount_name:?}: {}", i.message),
            })?;
        }
        Ok(c)
    });
    let (desired, master, action) = match checked {
        Err(invalid) => {
            tracing::info!(reason = invalid.reason, message = %invalid.message, "Stream not served");
            let not_served = "the Stream is not served";
            (
                [
                    Desired::new(CONDITION_READY, false, invalid.reason, invalid.message),
                    Desired::new(
                        CONDITION_SOURCE_CONNECTED,
                        State::Unknown,
                        "NotServed",
                        not_served,
                    ),
                    Desired::new(CONDITION_DEGRADED, State::Unknown, "NotServed", not_served),
                ],
                None,
                // A change of the Stream, or of SourceMounts (watched), brings it back.
                Action::await_change(),
            )
        }
        Ok(_) => {
            let deployment = get_opt::<Deployment>(client, &ns, &names::master(mount_name)).await?;
            let link = get_opt::<Secret>(client, &ns, &names::link_secret(mount_name)).await?;
            let master = match &link {
                Some(secret) if master_ready(deployment.as_ref()) => Master::Report(
                    ctx.master_status
                        .fetch(names::master_url(mount_name, &ns), admin_token(secret))
                        .await,
                ),
                _ => Master::NotReady,
            };
            let desired = served_conditions(&name, mount_name, &master);
            (desired, Some(master), Action::requeue(ctx.poll_interval))
        }
    };

    // Status.
    let mine = match &master {
        Some(Master::Report(Ok(r))) => r.streams.get(&name),
        _ => None,
    };
    let urls = if mine.is_some() {
        let base = format!(
            "http://{}.{ns}.svc:{}/{name}",
            names::slave(mount_name),
            names::LISTENER_PORT
        );
        // Every stream serves HLS from the same buffer.
        vec![base.clone(), format!("{base}.m3u8")]
    } else {
        Vec::new()
    };
    let old = stream.status.clone().unwrap_or_default();
    let generation = stream.metadata.generation;
    let status = StreamStatus {
        observed_generation: generation,
        conditions: conditions::merge(&old.conditions, &desired, generation, &Time(Utc::now())),
        listeners: mine.map(|s| s.listeners),
        buffered_seconds: mine.map(|s| s.buffered_seconds.floor() as i64),
        listener_urls: urls,
        // The mount that carries it now: the one named, when the Stream is valid.
        source_mount: master.is_some().then(|| mount_name.clone()),
    };
    if status != old {
        events::ready_event(ctx, stream, &old.conditions, &desired[0]).await;
        apply_status(client, stream, &status).await?;
    }
    Ok(action)
}

/// Conditions of a valid Stream, from its master: the same reasons and
/// messages its SourceMount shows for the same state.
fn served_conditions(name: &str, mount: &str, master: &Master) -> [Desired; 3] {
    let not_yet = |reason: &str, message: String| {
        [
            Desired::new(CONDITION_READY, false, reason, message.clone()),
            Desired::new(CONDITION_SOURCE_CONNECTED, State::Unknown, reason, message),
            Desired::new(CONDITION_DEGRADED, false, "AsExpected", ""),
        ]
    };
    let r = match master {
        Master::NotReady => {
            return not_yet(REASON_MASTER_NOT_READY, master_not_ready_message(mount))
        }
        Master::Report(Err(e)) => return not_yet(REASON_MASTER_UNREACHABLE, e.to_string()),
        Master::Report(Ok(r)) => r,
    };
    let Some(s) = r.streams.get(name) else {
        return not_yet(
            "NotLoaded",
            "the master has not loaded this stream yet".into(),
        );
    };
    [
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
    ]
}
