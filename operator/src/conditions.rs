//! Status conditions, kept the Kubernetes way: one per type, and the
//! transition time only moves when the status does.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// A condition's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// `True`.
    True,
    /// `False`.
    False,
    /// `Unknown`.
    Unknown,
}

impl State {
    /// `True`, `False` or `Unknown`, as in a Condition.
    pub fn as_str(self) -> &'static str {
        match self {
            State::True => "True",
            State::False => "False",
            State::Unknown => "Unknown",
        }
    }
}

impl From<bool> for State {
    fn from(b: bool) -> Self {
        if b {
            State::True
        } else {
            State::False
        }
    }
}

/// The desired value of one condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    /// `Ready`, `SourceConnected`, `Degraded`.
    pub type_: &'static str,
    /// Its status.
    pub state: State,
    /// CamelCase reason.
    pub reason: String,
    /// For people.
    pub message: String,
}

impl Desired {
    /// A condition of `type_`.
    pub fn new(
        type_: &'static str,
        state: impl Into<State>,
        reason: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Desired {
            type_,
            state: state.into(),
            reason: reason.into(),
            message: message.into(),
        }
    }
}

/// The new condition list: `desired` in order, each keeping its old
/// `lastTransitionTime` when its status did not change, `now` otherwise.
pub fn merge(
    old: &[Condition],
    desired: &[Desired],
    generation: Option<i64>,
    now: &Time,
) -> Vec<Condition> {
    desired
        .iter()
        .map(|d| {
            let status = d.state.as_str().to_string();
            let since = old
                .iter()
                .find(|c| c.type_ == d.type_ && c.status == status)
                .map_or_else(|| now.clone(), |c| c.last_transition_time.clone());
            Condition {
                type_: d.type_.to_string(),
                status,
                reason: d.reason.clone(),
                message: d.message.clone(),
                last_transition_time: since,
                observed_generation: generation,
            }
        })
        .collect()
}

/// The status of condition `type_`, if present.
pub fn status_of<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a str> {
    conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.status.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::chrono::{TimeZone, Utc};

    fn at(secs: i64) -> Time {
        Time(Utc.timestamp_opt(secs, 0).unwrap())
    }

    #[test]
    fn transition_time_moves_only_with_the_status() {
        let first = merge(
            &[],
            &[Desired::new("Ready", false, "Pending", "starting")],
            Some(1),
            &at(100),
        );
        assert_eq!(first[0].last_transition_time, at(100));
        let same = merge(
            &first,
            &[Desired::new("Ready", false, "StillPending", "still")],
            Some(2),
            &at(200),
        );
        assert_eq!(same[0].last_transition_time, at(100));
        assert_eq!(same[0].reason, "StillPending");
        assert_eq!(same[0].observed_generation, Some(2));
        let flipped = merge(
            &same,
            &[Desired::new("Ready", true, "Serving", "ok")],
            Some(2),
            &at(300),
        );
        assert_eq!(flipped[0].last_transition_time, at(300));
        assert_eq!(status_of(&flipped, "Ready"), Some("True"));
        assert_eq!(status_of(&flipped, "Degraded"), None);
    }
}
