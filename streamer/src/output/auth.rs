//! Icecast's URL listener authentication (a stream's `listenerAuth`): one
//! `POST action=listener_add` to the station's web service before a listener
//! gets audio, one `action=listener_remove` when it leaves — per connection
//! (per HLS session), never per byte. The form fields, the
//! `icecast-auth-user: 1` answer, `icecast-auth-message` and
//! `icecast-auth-timelimit` are Icecast 2.4's, so auth scripts written for
//! Icecast work unchanged.
//!
//! HLS has no connection: an HLS session (see [`super::hls::session_for`]) is
//! let in once, from the address it was let in from, until it stops fetching
//! for the analytics' `sessionIdleSeconds` (then `listener_remove`) or its
//! time limit passes (then it is asked about again).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use serde::{Deserialize, Serialize};
use streammachine_config::{ListenerAuthConfig, WhenUnreachable};

use crate::http::{reason, Request, Response};
use crate::metrics::Metrics;
use crate::sync::MutexExt;

/// Why a call to the auth service gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The URL does not parse.
    #[error("invalid URL: {0}")]
    Url(String),
    /// No answer within `timeoutSeconds`.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// Connecting or the exchange failed.
    #[error("{0}")]
    Http(String),
    /// It answered with a server error.
    #[error("answered {0}")]
    Status(u16),
    /// No TLS client could be set up.
    #[error("TLS set-up: {0}")]
    Tls(String),
}

/// A listener that was let in: what `listener_remove` will say about it.
/// Carried across a handoff. (`Debug` leaves out the password.)
#[derive(Clone, Serialize, Deserialize)]
pub struct Ticket {
    /// The listener's id (`client=`), as `/admin/listclients` shows it.
    pub client: u64,
    mount: String,
    user: String,
    pass: String,
    ip: String,
    agent: String,
    server: String,
    port: u16,
    /// Where `listener_remove` goes.
    remove: Option<String>,
    timeout_ms: u64,
    /// Unix ms when it was let in.
    since_ms: u64,
    /// Unix ms until which it may stay (`icecast-auth-timelimit`).
    until_ms: Option<u64>,
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Ticket({} {} {})", self.client, self.mount, self.ip)
    }
}

impl Ticket {
    /// Whether its time limit has passed.
    pub fn expired(&self) -> bool {
        self.until_ms.is_some_and(|u| unix_ms() >= u)
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A connected listener's ticket, and the timer of its time limit (which
/// wakes its task even while no audio comes).
#[derive(Debug)]
pub struct Admitted {
    /// What `listener_remove` will say.
    pub ticket: Ticket,
    limit: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl Admitted {
    /// Starts the time limit's timer, if the ticket has one (a runtime's
    /// timer is needed: call from a task).
    pub fn new(ticket: Ticket) -> Admitted {
        let limit = ticket.until_ms.map(|until| {
            let left = until.saturating_sub(unix_ms());
            Box::pin(tokio::time::sleep(Duration::from_millis(left)))
        });
        Admitted { ticket, limit }
    }

    /// Whether the time limit is over (registers the waker until it is).
    pub fn poll_limit(&mut self, cx: &mut std::task::Context<'_>) -> bool {
        use std::future::Future as _;
        self.limit
            .as_mut()
            .is_some_and(|l| l.as_mut().poll(cx).is_ready())
    }
}

/// The request to authenticate: who asks for what.
#[derive(Debug)]
pub struct Asking<'a> {
    /// The stream (metrics label).
    pub stream: &'a str,
    /// The listener's id (`client=`).
    pub client: u64,
    /// The request.
    pub req: &'a Request,
    /// The listener's address.
    pub peer: SocketAddr,
    /// The port it connected to.
    pub port: u16,
}

use crate::http::client::HttpsClient;

struct HlsAllowance {
    ip: IpAddr,
    ticket: Ticket,
    last_seen: Instant,
}

/// Calls the auth services (one connection pool for all) and remembers the
/// HLS sessions let in.
pub struct Authenticator {
    client: HttpsClient,
    hls: Mutex<HashMap<(String, String), HlsAllowance>>,
    /// Calls are failing: logged once until one works again.
    failing: AtomicBool,
    metrics: Metrics,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Authenticator")
    }
}

/// Largest answer body read (and thrown away, so the connection is reused).
const MAX_BODY: usize = 64 * 1024;

impl Authenticator {
    /// A client for `http://` and `https://` services (the web PKI roots).
    pub fn new(metrics: &Metrics) -> Result<Authenticator, AuthError> {
        let client = crate::http::client::https_client().map_err(AuthError::Tls)?;
        Ok(Authenticator {
            client,
            hls: Mutex::new(HashMap::new()),
            failing: AtomicBool::new(false),
            metrics: metrics.clone(),
        })
    }

    /// Asks `cfg.listenerAdd` whether `who` may listen: its ticket, or the
    /// response that turns it away (`401` refused, `503` unreachable and
    /// failing closed).
    pub async fn admit(
        &self,
        cfg: &ListenerAuthConfig,
        who: Asking<'_>,
    ) -> Result<Ticket, Response> {
        let req = who.req;
        let (user, pass) = basic_credentials(req).unwrap_or_default();
        let mount = match req.query.as_str() {
            "" => req.path.clone(),
            q => format!("{}?{q}", req.path),
        };
        let server = req
            .header("host")
            .map(|h| host_only(h).to_string())
            .unwrap_or_else(|| "localhost".into());
        let mut ticket = Ticket {
            client: who.client,
            mount,
            user,
            pass,
            ip: plain_ip(who.peer.ip()).to_string(),
            agent: req.header("user-agent").unwrap_or("").to_string(),
            server,
            port: who.port,
            remove: cfg.listener_remove.clone(),
            timeout_ms: (cfg.timeout_seconds * 1000.0) as u64,
            since_ms: unix_ms(),
            until_ms: None,
        };
        let forwarded: Vec<(String, String)> = (cfg.headers.iter())
            .filter_map(|h| {
                let v = req.header(&h.to_ascii_lowercase())?;
                Some((format!("{}{h}", cfg.header_prefix), v.to_string()))
            })
            .collect();
        let body = ticket.form("listener_add", &forwarded);
        let (auth_name, auth_value) = cfg.auth_header_parts();
        let limit_name = cfg.timelimit_header_name();
        let answer = self
            .call(&cfg.listener_add, body, ticket.timeout())
            .await
            .map_err(|e| self.failed(&cfg.listener_add, e));
        let result = match answer {
            Ok(headers) => {
                let allowed = headers
                    .get_all(auth_name.as_str())
                    .iter()
                    .any(|v| v.to_str().is_ok_and(|v| v.trim() == auth_value));
                if allowed {
                    ticket.until_ms = headers
                        .get(limit_name.as_str())
                        .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok())
                        .map(|s| ticket.since_ms.saturating_add(s.saturating_mul(1000)));
                    Ok(("allowed", ticket))
                } else {
                    let message = headers
                        .get("icecast-auth-message")
                        .and_then(|v| v.to_str().ok())
                        .map(|m| m.replace(|c: char| c.is_control(), " "))
                        .filter(|m| !m.trim().is_empty())
                        .unwrap_or_else(|| "not allowed to listen".into());
                    let body = format!("listener authentication refused: {message}");
                    let realm = who.stream.replace(['"', '\\'], "");
                    Err((
                        "denied",
                        Response::text(401, reason(401), body)
                            .header("WWW-Authenticate", format!("Basic realm=\"{realm}\"")),
                    ))
                }
            }
            Err(()) => match cfg.when_unreachable {
                WhenUnreachable::Allow => Ok(("unreachable_allowed", ticket)),
                WhenUnreachable::Deny => Err((
                    "unreachable_denied",
                    Response::text(
                        503,
                        reason(503),
                        "listener authentication is unavailable: try again",
                    )
                    .header("Retry-After", "10"),
                )),
            },
        };
        let (label, result) = match result {
            Ok((l, t)) => (l, Ok(t)),
            Err((l, r)) => (l, Err(r)),
        };
        self.metrics
            .listener_auth
            .with_label_values(&[who.stream, label])
            .inc();
        result
    }

    /// Tells the ticket's `listenerRemove` (if any) that the listener left;
    /// in the background, never holding anyone up.
    pub fn remove(self: &std::sync::Arc<Self>, ticket: Ticket) {
        let Some(url) = ticket.remove.clone() else {
            return;
        };
        let duration = (unix_ms().saturating_sub(ticket.since_ms) / 1000).to_string();
        let body = ticket.form("listener_remove", &[("duration".into(), duration)]);
        let this = std::sync::Arc::clone(self);
        tokio::spawn(async move {
            if let Err(e) = this.post(&url, body, ticket.timeout()).await {
                this.failed(&url, e);
            }
        });
    }

    /// Lets in an HLS request of `session`: at once if this session was let
    /// in from this address and its time limit has not passed, else after
    /// asking the service.
    pub async fn admit_hls(
        self: &std::sync::Arc<Self>,
        cfg: &ListenerAuthConfig,
        session: &str,
        who: Asking<'_>,
    ) -> Result<(), Response> {
        let key = (who.stream.to_string(), session.to_string());
        let ip = plain_ip(who.peer.ip());
        let stale = {
            let mut map = self.hls.locked();
            match map.get_mut(&key) {
                Some(a) if a.ip == ip && !a.ticket.expired() => {
                    a.last_seen = Instant::now();
                    return Ok(());
                }
                Some(_) => map.remove(&key),
                None => None,
            }
        };
        if let Some(old) = stale {
            self.remove(old.ticket);
        }
        let ticket = self.admit(cfg, who).await?;
        let raced = self.hls.locked().insert(
            key,
            HlsAllowance {
                ip,
                ticket,
                last_seen: Instant::now(),
            },
        );
        // Two first requests of one session at once: both were let in, one
        // stays.
        if let Some(other) = raced {
            self.remove(other.ticket);
        }
        Ok(())
    }

    /// Ends HLS sessions that fetched nothing for `idle` (`listener_remove`).
    pub fn sweep(self: &std::sync::Arc<Self>, idle: Duration) {
        let gone: Vec<Ticket> = {
            let mut map = self.hls.locked();
            let keys: Vec<_> = map
                .iter()
                .filter(|(_, a)| a.last_seen.elapsed() >= idle)
                .map(|(k, _)| k.clone())
                .collect();
            keys.iter()
                .filter_map(|k| map.remove(k))
                .map(|a| {
                    // Its time ended when it last fetched: counted from a
                    // start moved on by the idle time.
                    let mut t = a.ticket;
                    let idle_ms = a.last_seen.elapsed().as_millis() as u64;
                    t.since_ms = t.since_ms.saturating_add(idle_ms).min(unix_ms());
                    t
                })
                .collect()
        };
        for t in gone {
            self.remove(t);
        }
    }

    /// HLS sessions let in now.
    pub fn hls_sessions(&self) -> usize {
        self.hls.locked().len()
    }

    async fn post(&self, url: &str, body: String, timeout: Duration) -> Result<(), AuthError> {
        self.call(url, body, timeout).await.map(|_| ())
    }

    async fn call(
        &self,
        url: &str,
        body: String,
        timeout: Duration,
    ) -> Result<http::HeaderMap, AuthError> {
        let (uri, basic) = crate::http::client::split_userinfo(url);
        let uri: http::Uri = uri.parse().map_err(|_| AuthError::Url(redacted(url)))?;
        let mut req = http::Request::post(uri).header(
            http::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        );
        if let Some(b) = basic {
            req = req.header(http::header::AUTHORIZATION, b);
        }
        let req = req
            .header(http::header::USER_AGENT, "StreamMachine")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| AuthError::Url(e.to_string()))?;
        let exchange = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| AuthError::Http(crate::error::error_chain(&e)))?;
            let (parts, body) = resp.into_parts();
            // Read (and drop) the body so the connection goes back to the pool.
            let _ = Limited::new(body, MAX_BODY).collect().await;
            Ok::<_, AuthError>(parts)
        };
        let parts = tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| AuthError::Timeout(timeout))??;
        if parts.status.is_server_error() {
            return Err(AuthError::Status(parts.status.as_u16()));
        }
        if self.failing.swap(false, Ordering::Relaxed) {
            tracing::info!(url = %redacted(url), "listener authentication answers again");
        }
        Ok(parts.headers)
    }

    /// Logs a failed call once per failure streak.
    fn failed(&self, url: &str, e: AuthError) {
        if !self.failing.swap(true, Ordering::Relaxed) {
            tracing::warn!(url = %redacted(url), error = %e, "listener authentication call failed (logged once until a call works)");
        }
    }
}

impl Ticket {
    /// The form Icecast posts for `action`, then `extra` fields.
    fn form(&self, action: &str, extra: &[(String, String)]) -> String {
        let mut f = form_urlencoded::Serializer::new(String::new());
        f.append_pair("action", action)
            .append_pair("server", &self.server)
            .append_pair("port", &self.port.to_string())
            .append_pair("client", &self.client.to_string())
            .append_pair("mount", &self.mount)
            .append_pair("user", &self.user)
            .append_pair("pass", &self.pass)
            .append_pair("ip", &self.ip)
            .append_pair("agent", &self.agent);
        for (k, v) in extra {
            f.append_pair(k, v);
        }
        f.finish()
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms.max(1))
    }
}

/// User and password of a request's `Authorization: Basic`.
fn basic_credentials(req: &Request) -> Option<(String, String)> {
    use base64::Engine as _;
    let v = req.header("authorization")?;
    let (scheme, b64) = v.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (u, p) = text.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

/// A Host header's host, without the port.
fn host_only(h: &str) -> &str {
    let h = h.trim();
    if let Some(rest) = h.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    h.rsplit_once(':')
        .filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit()))
        .map_or(h, |(host, _)| host)
}

/// An IPv4 client on a dual-stack socket as a.b.c.d.
fn plain_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn redacted(url: &str) -> String {
    streammachine_config::redact_url(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_hosts_and_userinfo() {
        let raw = "GET /live?x=1 HTTP/1.1\r\nAuthorization: Basic Zm9vOmJhcjpiYXo=\r\n\r\n";
        let req = crate::http::request::parse(raw.as_bytes(), 4096)
            .unwrap()
            .unwrap()
            .0;
        assert_eq!(
            basic_credentials(&req),
            Some(("foo".into(), "bar:baz".into()))
        );
        assert_eq!(host_only("radio.example:8000"), "radio.example");
        assert_eq!(host_only("[::1]:8000"), "::1");
        assert_eq!(host_only("radio.example"), "radio.example");
    }
}
