//! Kubernetes Events on transitions (DESIGN.md §7): the `Ready` condition
//! changing its status or reason (an invalid name or spec is a Warning the
//! user sees in `kubectl describe`), the source lost or back, slaves out of
//! sync or back. One Event per transition, never one per reconcile.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::runtime::events::{Event, EventType};
use kube::Resource;
use streammachine_crds::v1alpha1::{
    CONDITION_DEGRADED, CONDITION_READY, CONDITION_SOURCE_CONNECTED,
};

use super::Context;
use crate::conditions::{self, Desired, State};
use crate::validate;

/// Reason: the source password Secret (or its key) is missing.
pub const REASON_PASSWORD_NOT_FOUND: &str = "SourcePasswordNotFound";
/// Degraded reason while slaves lag the master.
pub const REASON_SLAVES_OUT_OF_SYNC: &str = "SlavesOutOfSync";

/// `Ready=False` reasons only the user can fix: a Warning each time.
const NEEDS_A_FIX: &[&str] = &[
    validate::REASON_INVALID_NAME,
    validate::REASON_INVALID_SPEC,
    validate::REASON_SOURCE_MOUNT_NOT_FOUND,
    validate::REASON_SOURCE_MOUNT_INVALID,
    REASON_PASSWORD_NOT_FOUND,
];

/// Publishes an Event about `obj` (a failure is logged, never fatal).
pub async fn publish<K>(ctx: &Context, obj: &K, type_: EventType, reason: &str, note: String)
where
    K: Resource<DynamicType = ()>,
{
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &obj.object_ref(&())).await {
        tracing::warn!(error = %e, "cannot publish event");
    }
}

/// The Event for `Ready` going from `old` to `new`, if it changed: a Warning
/// when the user must fix something or readiness was lost, else Normal.
pub fn ready_transition(old: &[Condition], new: &Desired) -> Option<(EventType, String, String)> {
    let before = old.iter().find(|c| c.type_ == CONDITION_READY);
    if before.is_some_and(|c| c.status == new.state.as_str() && c.reason == new.reason) {
        return None;
    }
    let was_ready = before.is_some_and(|c| c.status == "True");
    let type_ = match new.state {
        State::True => EventType::Normal,
        _ if NEEDS_A_FIX.contains(&new.reason.as_str()) || was_ready => EventType::Warning,
        _ => EventType::Normal,
    };
    let note = if new.message.is_empty() {
        format!("Ready is {}", new.state.as_str())
    } else {
        new.message.clone()
    };
    Some((type_, new.reason.clone(), note))
}

/// Publishes the `Ready` transition, if any.
pub async fn ready_event<K>(ctx: &Context, obj: &K, old: &[Condition], new: &Desired)
where
    K: Resource<DynamicType = ()>,
{
    if let Some((type_, reason, note)) = ready_transition(old, new) {
        publish(ctx, obj, type_, &reason, note).await;
    }
}

/// An Event when the source comes or goes (a Warning for a monitored mount).
pub async fn source_event<K>(
    ctx: &Context,
    obj: &K,
    monitored: bool,
    old: &[Condition],
    new: &Desired,
) where
    K: Resource<DynamicType = ()>,
{
    let before = conditions::status_of(old, CONDITION_SOURCE_CONNECTED);
    let (reason, type_) = match (before, new.state) {
        (Some("True"), State::False) => (
            "SourceLost",
            if monitored {
                EventType::Warning
            } else {
                EventType::Normal
            },
        ),
        (Some(b), State::True) if b != "True" => ("SourceConnected", EventType::Normal),
        _ => return,
    };
    publish(ctx, obj, type_, reason, new.message.clone()).await;
}

/// Whether a Degraded condition (old or new) says slaves are out of sync.
fn out_of_sync(reason: &str, message: &str) -> bool {
    reason == REASON_SLAVES_OUT_OF_SYNC || message.contains("slaves out of sync")
}

/// A Warning Event when slaves fall out of sync, a Normal one when they are back.
pub async fn sync_event<K>(ctx: &Context, obj: &K, old: &[Condition], new: &Desired)
where
    K: Resource<DynamicType = ()>,
{
    let was = old
        .iter()
        .any(|c| c.type_ == CONDITION_DEGRADED && out_of_sync(&c.reason, &c.message));
    let is = new.state == State::True && out_of_sync(&new.reason, &new.message);
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
    publish(ctx, obj, type_, reason, note).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::chrono::Utc;

    fn ready(state: State, reason: &str) -> Vec<Condition> {
        conditions::merge(
            &[],
            &[Desired::new(CONDITION_READY, state, reason, "m")],
            Some(1),
            &Time(Utc::now()),
        )
    }

    #[test]
    fn one_event_per_ready_transition() {
        let invalid = Desired::new(CONDITION_READY, false, validate::REASON_INVALID_NAME, "bad");
        let (t, reason, _) = ready_transition(&[], &invalid).unwrap();
        assert_eq!((t, reason.as_str()), (EventType::Warning, "InvalidName"));
        assert!(ready_transition(&ready(State::False, "InvalidName"), &invalid).is_none());
        let serving = Desired::new(CONDITION_READY, true, "Serving", "ok");
        let (t, _, _) = ready_transition(&ready(State::False, "InvalidName"), &serving).unwrap();
        assert_eq!(t, EventType::Normal);
        let starting = Desired::new(CONDITION_READY, false, "MasterNotReady", "m");
        assert_eq!(
            ready_transition(&[], &starting).unwrap().0,
            EventType::Normal
        );
        // Readiness lost is a Warning.
        let lost = ready_transition(&ready(State::True, "Serving"), &starting).unwrap();
        assert_eq!(lost.0, EventType::Warning);
    }
}
