//! Alerts: conditions watched every second, with hysteresis (raised after a
//! condition has held for `raiseSeconds`, cleared after it has been gone for
//! `clearSeconds`, so a flapping source does not page anyone twice a minute).
//!
//! Conditions: `source_lost` (a monitored mount without a source),
//! `buffer_stalled` (a stream whose source is connected but whose buffer does
//! not advance), `slave_unresponsive` and `slave_out_of_sync` (master: a
//! connected slave that stopped reporting, or that is behind), `slave_disconnected`
//! (master: a slave that was there and is gone), `link_down` (slave: no
//! link to the master).
//!
//! Delivered as the gauge `streammachine_alert_active{alert,subject}`, a log
//! line, and — when configured — a generic JSON webhook, PagerDuty Events
//! API v2 (trigger and resolve with a dedup key) and email ([`email`]).
//! Deliveries are queued and retried on their own task: they never hold up
//! audio.

pub mod email;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use streammachine_config::{AlertsConfig, Mode};
use tokio::sync::mpsc;

use crate::stream::format_time;
use crate::stream::now_micros;
use crate::transcode::TranscoderState;

/// One alert's identity: what, and about what.
pub type Key = (&'static str, String);

#[derive(Debug)]
struct State {
    /// Since when the condition holds (or, once raised, since when it is gone).
    since: Instant,
    holds: bool,
    raised: bool,
}

/// An alert changing state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// `source_lost`, …
    pub alert: &'static str,
    /// The mount, stream or slave.
    pub subject: String,
    /// Raised (true) or cleared.
    pub active: bool,
    /// What to tell a person.
    pub summary: String,
}

/// The hysteresis machine, independent of time sources (tests drive it).
#[derive(Debug)]
pub struct Hysteresis {
    raise: Duration,
    clear: Duration,
    states: BTreeMap<Key, State>,
}

impl Hysteresis {
    /// With these delays.
    pub fn new(raise: Duration, clear: Duration) -> Self {
        Hysteresis {
            raise,
            clear,
            states: BTreeMap::new(),
        }
    }

    /// Feeds the conditions that hold `now` (everything else does not);
    /// returns the alerts that were raised or cleared.
    pub fn update(&mut self, now: Instant, holding: &BTreeMap<Key, String>) -> Vec<Event> {
        let mut events = Vec::new();
        let keys: BTreeSet<Key> = self
            .states
            .keys()
            .cloned()
            .chain(holding.keys().cloned())
            .collect();
        for key in keys {
            let holds = holding.contains_key(&key);
            let st = self.states.entry(key.clone()).or_insert(State {
                since: now,
                holds,
                raised: false,
            });
            if st.holds != holds {
                st.holds = holds;
                st.since = now;
            }
            let for_ = now.saturating_duration_since(st.since);
            if holds && !st.raised && for_ >= self.raise {
                st.raised = true;
                events.push(Event {
                    alert: key.0,
                    subject: key.1.clone(),
                    active: true,
                    summary: holding.get(&key).cloned().unwrap_or_default(),
                });
            } else if !holds && st.raised && for_ >= self.clear {
                st.raised = false;
                events.push(Event {
                    alert: key.0,
                    subject: key.1.clone(),
                    active: false,
                    summary: format!("{} {}: back to normal", key.0, key.1),
                });
            }
        }
        // Forget what is quiet and not raised.
        self.states.retain(|_, s| s.holds || s.raised);
        events
    }

    /// The alerts raised now.
    pub fn active(&self) -> Vec<Key> {
        self.states
            .iter()
            .filter(|(_, s)| s.raised)
            .map(|(k, _)| k.clone())
            .collect()
    }
}

/// What the alert checks need from the server, and no more: the mounts,
/// streams and slaves to look at, the mode, the metrics, the shutdown signal.
/// The server implements it; nothing here names the server.
pub trait AlertsHost: Send + Sync + 'static {
    /// Standalone, master or slave.
    fn mode(&self) -> Mode;
    /// Every mount in service.
    fn mounts(&self) -> Vec<Arc<crate::source::Mount>>;
    /// The mount in service under `key`.
    fn mount(&self, key: &str) -> Option<Arc<crate::source::Mount>>;
    /// Every stream in service.
    fn streams(&self) -> Vec<Arc<crate::stream::Stream>>;
    /// The linked slaves (a master).
    fn slaves(&self) -> Vec<crate::link::master::SlaveInfo>;
    /// The server's metrics.
    fn metrics(&self) -> &crate::metrics::Metrics;
    /// Turns true when the server shuts down.
    fn shutdown_signal(&self) -> tokio::sync::watch::Receiver<bool>;
}

/// What holds now on this server.
/// A slave that left is reported for this long, then forgotten (in a cluster
/// a replaced slave comes back under a new name).
const FORGET_SLAVE: Duration = Duration::from_secs(600);

fn conditions(
    server: &dyn AlertsHost,
    last_seqs: &mut BTreeMap<String, (u64, Instant)>,
    seen_slaves: &mut BTreeMap<String, Option<Instant>>,
    stall: Duration,
) -> BTreeMap<Key, String> {
    let mut holding = BTreeMap::new();
    let now = Instant::now();
    for m in server.mounts() {
        if m.monitored() && !m.has_live_source() {
            holding.insert(
                ("source_lost", m.key().to_string()),
                format!("mount {} has no live source", m.key()),
            );
        }
    }
    if server.mode() != Mode::Slave {
        for s in server.streams() {
            if let Some(t) = s.transcoder_status() {
                if t.state == TranscoderState::Failing {
                    holding.insert(
                        ("transcoder_failing", s.key().to_string()),
                        format!(
                            "transcoder of stream {} fails: {}",
                            s.key(),
                            t.last_error.as_deref().unwrap_or("unknown error")
                        ),
                    );
                }
            }
            let next = s.read_buffer().next_seq();
            let entry = last_seqs.entry(s.key().to_string()).or_insert((next, now));
            if entry.0 != next {
                *entry = (next, now);
            }
            let has_source = server
                .mount(s.config().mount_key())
                .is_some_and(|m| m.active_source().is_some());
            if has_source && now - entry.1 >= stall {
                holding.insert(
                    ("buffer_stalled", s.key().to_string()),
                    format!(
                        "stream {} has a source but no new audio for {} s",
                        s.key(),
                        (now - entry.1).as_secs()
                    ),
                );
            }
        }
    }
    if server.mode() == Mode::Master {
        let masters: BTreeMap<String, u64> = server
            .streams()
            .iter()
            .map(|s| (s.key().to_string(), s.read_buffer().next_seq()))
            .collect();
        let mut connected = BTreeSet::new();
        for sl in server.slaves() {
            connected.insert(sl.id.clone());
            if sl.last_seen.elapsed() > Duration::from_secs(15) {
                holding.insert(
                    ("slave_unresponsive", sl.id.clone()),
                    format!(
                        "slave {} has not reported for {} s",
                        sl.id,
                        sl.last_seen.elapsed().as_secs()
                    ),
                );
                // An unresponsive slave is not also "out of sync" (original #66).
                continue;
            }
            let behind: u64 = sl
                .stats
                .next_seq
                .iter()
                .map(|(k, v)| masters.get(k).map_or(0, |m| m.saturating_sub(*v)))
                .max()
                .unwrap_or(0);
            if behind > 10 {
                holding.insert(
                    ("slave_out_of_sync", sl.id.clone()),
                    format!("slave {} is {behind} chunks behind", sl.id),
                );
            }
        }
        for (id, gone_since) in seen_slaves.iter_mut() {
            if connected.contains(id) {
                *gone_since = None;
            } else if gone_since.is_none() {
                *gone_since = Some(now);
            }
        }
        for id in &connected {
            seen_slaves.entry(id.clone()).or_insert(None);
        }
        seen_slaves.retain(|_, g| g.is_none_or(|t| now - t < FORGET_SLAVE));
        for (id, g) in seen_slaves.iter() {
            if g.is_some() {
                holding.insert(
                    ("slave_disconnected", id.clone()),
                    format!("slave {id} disconnected"),
                );
            }
        }
    }
    if server.mode() == Mode::Slave && server.metrics().link_connected.get() == 0 {
        holding.insert(
            ("link_down", "master".to_string()),
            "no link to the master".to_string(),
        );
    }
    holding
}

/// Watches the conditions until shutdown.
pub async fn run(server: Arc<dyn AlertsHost>, config: AlertsConfig) {
    let mut h = Hysteresis::new(
        Duration::from_secs_f64(config.raise_seconds),
        Duration::from_secs_f64(config.clear_seconds),
    );
    let (tx, rx) = mpsc::channel::<Event>(1024);
    tokio::spawn(deliver(rx, config.clone(), server.mode().to_string()));
    let mut last_seqs = BTreeMap::new();
    let mut seen_slaves = BTreeMap::new();
    let mut shutdown = server.shutdown_signal();
    let stall = Duration::from_secs_f64(config.stall_seconds);
    let gauge = server.metrics().alert_active.clone();
    loop {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = shutdown.changed() => return,
        }
        let holding = conditions(server.as_ref(), &mut last_seqs, &mut seen_slaves, stall);
        for e in h.update(Instant::now(), &holding) {
            gauge
                .with_label_values(&[e.alert, &e.subject])
                .set(i64::from(e.active));
            if e.active {
                tracing::warn!(alert = e.alert, subject = %e.subject, "ALERT raised: {}", e.summary);
            } else {
                tracing::info!(alert = e.alert, subject = %e.subject, "alert cleared: {}", e.summary);
            }
            if tx.try_send(e).is_err() {
                tracing::error!("alert delivery queue full; an alert notification is dropped");
            }
        }
    }
}

/// Sends notifications, retrying each a few times with backoff.
async fn deliver(mut rx: mpsc::Receiver<Event>, config: AlertsConfig, mode: String) {
    let routing_key =
        config
            .pagerduty
            .as_ref()
            .and_then(|p| match (&p.routing_key, &p.routing_key_file) {
                (Some(k), _) => Some(k.0.clone()),
                (None, Some(f)) => std::fs::read_to_string(f)
                    .ok()
                    .map(|s| s.trim().to_string()),
                _ => None,
            });
    let mailer = config
        .email
        .as_ref()
        .and_then(|c| match email::Mailer::new(c) {
            Ok(m) => Some(std::sync::Arc::new(m)),
            Err(e) => {
                tracing::error!(error = %e, "alerts.email cannot be used; no email alerts");
                None
            }
        });
    while let Some(e) = rx.recv().await {
        if let Some(m) = &mailer {
            tokio::spawn(send_email(
                std::sync::Arc::clone(m),
                e.clone(),
                mode.clone(),
            ));
        }
        let mut posts = Vec::new();
        if let Some(w) = &config.webhook {
            posts.push((
                w.url.clone(),
                json!({
                    "alert": e.alert,
                    "subject": e.subject,
                    "active": e.active,
                    "summary": e.summary,
                    "time": format_time(now_micros()),
                    "source": format!("streammachine ({mode})"),
                }),
            ));
        }
        if let (Some(p), Some(key)) = (&config.pagerduty, &routing_key) {
            let mut body = json!({
                "routing_key": key,
                "event_action": if e.active { "trigger" } else { "resolve" },
                "dedup_key": format!("streammachine/{}/{}", e.alert, e.subject),
            });
            if e.active {
                body["payload"] = json!({
                    "summary": e.summary,
                    "source": format!("streammachine ({mode})"),
                    "severity": if e.alert == "source_lost" || e.alert == "link_down" { "critical" } else { "warning" },
                    "component": e.subject,
                    "class": e.alert,
                });
            }
            posts.push((p.url.clone(), body));
        }
        for (url, body) in posts {
            tokio::spawn(async move {
                let mut wait =
                    crate::retry::Backoff::new(Duration::from_secs(1), Duration::from_secs(16));
                for attempt in 1..=5 {
                    let (u, b) = (url.clone(), body.to_string());
                    let r = tokio::task::spawn_blocking(move || post(&u, &b)).await;
                    match r {
                        Ok(Ok(())) => return,
                        Ok(Err(err)) if attempt == 5 => {
                            tracing::error!(url = %url, error = %err, "alert notification failed 5 times; giving up")
                        }
                        _ => {}
                    }
                    tokio::time::sleep(wait.next_delay()).await;
                }
            });
        }
    }
}

/// Sends the email about `e`, retrying with backoff: each failed attempt is
/// logged (5 at most).
async fn send_email(mailer: std::sync::Arc<email::Mailer>, e: Event, mode: String) {
    let mut wait = crate::retry::Backoff::new(Duration::from_secs(1), Duration::from_secs(16));
    for attempt in 1..=5u32 {
        match mailer.send(&e, &mode).await {
            Ok(()) => return,
            Err(err) if attempt == 5 => {
                tracing::error!(attempt, alert = e.alert, subject = %e.subject, error = %err, "email alert failed 5 times; giving up");
                return;
            }
            Err(err) => {
                tracing::warn!(attempt, alert = e.alert, subject = %e.subject, error = %err, "email alert failed; retrying");
            }
        }
        tokio::time::sleep(wait.next_delay()).await;
    }
}

fn post(url: &str, body: &str) -> Result<(), String> {
    let agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .http_status_as_error(true)
        .build()
        .new_agent();
    agent
        .post(url)
        .header("Content-Type", "application/json")
        .send(body)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hold(keys: &[(&'static str, &str)]) -> BTreeMap<Key, String> {
        keys.iter()
            .map(|(a, s)| ((*a, s.to_string()), format!("{a} {s}")))
            .collect()
    }

    #[test]
    fn raises_after_the_delay_clears_after_the_delay_and_ignores_flapping() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut h = Hysteresis::new(3 * s, 2 * s);
        let lost = hold(&[("source_lost", "m")]);
        let none = hold(&[]);
        assert!(h.update(t0, &lost).is_empty());
        assert!(h.update(t0 + 2 * s, &lost).is_empty());
        // Flaps back before the delay: nothing.
        assert!(h.update(t0 + 2 * s + s / 2, &none).is_empty());
        assert!(h.update(t0 + 3 * s, &lost).is_empty());
        assert!(h.update(t0 + 5 * s, &lost).is_empty());
        let e = h.update(t0 + 6 * s, &lost);
        assert_eq!(e.len(), 1);
        assert!(e[0].active && e[0].alert == "source_lost" && e[0].subject == "m");
        assert_eq!(h.active(), vec![("source_lost", "m".to_string())]);
        // Raised once only.
        assert!(h.update(t0 + 9 * s, &lost).is_empty());
        // A short recovery does not clear it.
        assert!(h.update(t0 + 10 * s, &none).is_empty());
        assert!(h.update(t0 + 11 * s, &lost).is_empty());
        assert!(h.update(t0 + 12 * s, &none).is_empty());
        let e = h.update(t0 + 14 * s, &none);
        assert_eq!(e.len(), 1);
        assert!(!e[0].active);
        assert!(h.active().is_empty());
    }
}
