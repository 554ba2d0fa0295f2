//! The admin port: the admin REST API under `/api/` (bearer token), Icecast's
//! admin interface under `/admin/` (Basic auth, [`crate::status::icecast_admin`]),
//! the master's side of the slave link (`GET /link`, upgraded), and the open
//! operational routes `/metrics`, `/healthz`, `/readyz`, `/status-json.xsl`.
//!
//! Its HTTP is hyper's and its routing axum's: plain request/response HTTP
//! that a maintained server does better than we would (keep-alive, HEAD,
//! chunked bodies, header limits and timeouts). The listener and source
//! ports keep their own HTTP layer, which Icecast's protocol and the handoff
//! of live connections need (see `docs/architecture.md`). The accept loop
//! stays the server's, so a handoff can pause it and pass its socket on.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::rejection::RawPathParamsRejection;
use axum::extract::{RawPathParams, Request, State};
use axum::http::{header, HeaderMap, Method, Uri};
use axum::response::IntoResponse;
use axum::routing::{get, on, MethodFilter};
use axum::Router;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpStream;

use crate::api::{is_api, ImportFn, Route, Transfer};
use crate::http::{pipe, reason, Response, WriteDeadline};

/// How long a client may take to send a request's head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(15);

/// How long a client may take to send a request's body (a dump import can
/// be a gigabyte).
const BODY_TIMEOUT: Duration = Duration::from_secs(300);

/// How long a reply may wait for a client that reads nothing (a JSON reply,
/// the metrics, a dump export) before the connection is dropped.
const WRITE_STALL: Duration = Duration::from_secs(20);

/// The connection as hyper holds it.
type Io = TokioIo<WriteDeadline<TcpStream>>;

/// What the admin port needs from the server: the API, the status pages and
/// the master's side of the link, which it serves. Any host of all three is
/// one; nothing here names the server.
pub trait AdminHost: crate::api::ApiHost + crate::link::master::MasterHost {}

impl<T: crate::api::ApiHost + crate::link::master::MasterHost> AdminHost for T {}

type Host = Arc<dyn AdminHost>;

/// The peer of the connection a request came on.
#[derive(Debug, Clone, Copy)]
struct Peer(SocketAddr);

/// The admin port's routes; build once, serve each connection with
/// [`handle_connection`].
pub fn router(host: Host) -> Router {
    let mut router = Router::new();
    for route in crate::api::ROUTES {
        let Some(filter) = method_filter(route.method) else {
            continue;
        };
        router = router.route(
            route.path,
            on(
                filter,
                move |State(host): State<Host>,
                      params: Result<RawPathParams, RawPathParamsRejection>,
                      req: Request| async move {
                    let params: Vec<String> = params
                        .map(|p| p.iter().map(|(_, v)| v.to_string()).collect())
                        .unwrap_or_default();
                    api(route, host, params, req).await
                },
            ),
        );
    }
    router
        .route("/link", get(link))
        .route("/metrics", get(status))
        .route("/healthz", get(status))
        .route("/readyz", get(status))
        .route("/status-json.xsl", get(status))
        .route("/admin/{command}", get(icecast_admin))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(host)
}

fn method_filter(method: &str) -> Option<MethodFilter> {
    Some(match method {
        "GET" => MethodFilter::GET,
        "POST" => MethodFilter::POST,
        "PUT" => MethodFilter::PUT,
        "DELETE" => MethodFilter::DELETE,
        "PATCH" => MethodFilter::PATCH,
        _ => return None,
    })
}

/// Serves one admin connection (keep-alive allowed) with `router`.
#[tracing::instrument(name = "admin", skip_all, fields(%peer))]
pub async fn handle_connection(router: Router, sock: TcpStream, peer: SocketAddr) {
    let service = hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(Peer(peer));
        tower::ServiceExt::oneshot(router.clone(), req)
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT)
        .max_buf_size(crate::http::MAX_HEAD_BYTES)
        .serve_connection(TokioIo::new(WriteDeadline::new(sock, WRITE_STALL)), service)
        .with_upgrades();
    if let Err(e) = conn.await {
        tracing::debug!(error = %e, "admin connection ended with an error");
    }
}

impl axum::response::IntoResponse for Response {
    fn into_response(self) -> axum::response::Response {
        let (status, headers, body) = self.into_parts();
        let mut b = axum::http::Response::builder().status(status);
        for (name, value) in headers {
            b = b.header(name, value);
        }
        b.body(Body::from(body)).unwrap_or_else(|e| {
            tracing::error!(error = %e, "admin response not built");
            let mut r = axum::http::Response::new(Body::empty());
            *r.status_mut() = axum::http::StatusCode::INTERNAL_SERVER_ERROR;
            r
        })
    }
}

/// One API route: the token is checked before the body is read, so nobody
/// unauthenticated can make the server hold a body.
async fn api(
    route: &'static Route,
    host: Host,
    params: Vec<String>,
    req: Request,
) -> axum::response::Response {
    let peer = req.extensions().get::<Peer>().map(|p| p.0);
    let auth = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if route.auth {
        if let Err(refusal) = login(host.as_ref(), peer, || route.authorize(host.as_ref(), auth)) {
            return refusal.into_response();
        }
    }
    if route.method != "GET" {
        tracing::info!(?peer, method = route.method, path = %req.uri().path(), "admin API change requested");
    }
    let params: Vec<&str> = params.iter().map(String::as_str).collect();
    match route.transfer() {
        Some(Transfer::Export(find)) => {
            return match find(host.as_ref(), &params) {
                Ok(stream) => export(stream),
                Err(e) => e.response().into_response(),
            }
        }
        Some(Transfer::Import(target, load)) => {
            return match target(host.as_ref(), &params) {
                Ok(stream) => import(host, stream, route.body_limit(), load, req).await,
                Err(e) => e.response().into_response(),
            }
        }
        None => {}
    }
    let body = if route.body.is_some() {
        match read_body(route.body_limit(), req).await {
            Ok(b) => b,
            Err(refusal) => return refusal.into_response(),
        }
    } else {
        Bytes::new()
    };
    route
        .call(host.as_ref(), &params, &body)
        .await
        .into_response()
}

/// Sends a stream's dump as it is written on a blocking thread, a few
/// pieces ahead of the client ([`pipe`]): the export holds the buffer's
/// chunks (shared) and a few pieces, never a copy of the buffer. A failure
/// midway breaks the connection, so a client never takes a short dump for a
/// whole one.
fn export(stream: Arc<crate::stream::Stream>) -> axum::response::Response {
    let (header, chunks) = crate::persist::rewind::snapshot(&stream);
    let len = match crate::persist::rewind::snapshot_len(&header, &chunks) {
        Ok(len) => len,
        Err(e) => return crate::api::bad_body(500, e.to_string()).into_response(),
    };
    let (tx, rx) = tokio::sync::mpsc::channel(pipe::PIECES);
    tokio::task::spawn_blocking(move || {
        let mut w = pipe::ChannelWriter::new(tx);
        match crate::persist::rewind::write_snapshot(&header, &chunks, &mut w) {
            Ok(stats) => {
                tracing::info!(stream = %stream.key(), chunks = stats.chunks, bytes = stats.dump_bytes, "rewind buffer exported through the API");
            }
            Err(crate::persist::DumpError::Io(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                tracing::info!(stream = %stream.key(), "rewind export ended early: the client left");
            }
            Err(e) => {
                tracing::warn!(stream = %stream.key(), error = %e, "rewind export failed");
                w.fail(std::io::Error::other(e.to_string()));
            }
        }
    });
    let pieces = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|piece| (piece, rx))
    });
    let mut r = axum::response::Response::new(Body::from_stream(pieces));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/octet-stream"),
    );
    r.headers_mut()
        .insert(header::CONTENT_LENGTH, header::HeaderValue::from(len));
    r
}

/// Reads a dump as it arrives: the body goes piece by piece ([`pipe`]) to
/// `load` on a blocking thread, which parses it and puts the audio where
/// the buffer keeps it. At most `limit` bytes, within [`BODY_TIMEOUT`].
async fn import(
    host: Host,
    stream: Arc<crate::stream::Stream>,
    limit: usize,
    load: ImportFn,
    req: Request,
) -> axum::response::Response {
    let too_large = || too_large(limit);
    if let Err(refusal) = declared_within(&req, limit) {
        return refusal.into_response();
    }
    let (tx, rx) = tokio::sync::mpsc::channel(pipe::PIECES);
    let job = tokio::task::spawn_blocking(move || {
        load(
            host.as_ref(),
            &stream,
            &mut pipe::ChannelReader::new(rx),
            limit as u64,
        )
    });
    // The body, piece by piece; what went wrong with it, if anything.
    let feed = async move {
        let mut body = Limited::new(req.into_body(), limit);
        let deadline = tokio::time::Instant::now() + BODY_TIMEOUT;
        loop {
            let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
                Err(_) => {
                    let _ = tx.send(Err(std::io::Error::other("body timeout"))).await;
                    return Some(crate::api::bad_body(
                        408,
                        format!("request body not sent within {} s", BODY_TIMEOUT.as_secs()),
                    ));
                }
                Ok(None) => return None,
                Ok(Some(Err(e))) => {
                    let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
                    return Some(if e.downcast_ref::<LengthLimitError>().is_some() {
                        too_large()
                    } else {
                        crate::api::bad_body(400, format!("request body not read: {e}"))
                    });
                }
                Ok(Some(Ok(frame))) => frame,
            };
            if let Ok(data) = frame.into_data() {
                if tx.send(Ok(data)).await.is_err() {
                    // The import stopped reading (it failed): its answer says why.
                    return None;
                }
            }
        }
    };
    let (body_error, result) = tokio::join!(feed, job);
    if let Some(refusal) = body_error {
        return refusal.into_response();
    }
    match result {
        Ok(Ok(reply)) => reply.into_response().into_response(),
        Ok(Err(e)) => e.response().into_response(),
        Err(e) => crate::api::bad_body(500, format!("import failed: {e}")).into_response(),
    }
}

/// Runs `attempt` (a token or secret check) for `peer`, which must wait if
/// it failed too often ([`crate::lockout`]): a failure is counted by reason
/// and logged at the 1st, 2nd, 4th, 8th… of that address.
fn login(
    host: &dyn AdminHost,
    peer: Option<SocketAddr>,
    attempt: impl FnOnce() -> Result<(), (&'static str, Response)>,
) -> Result<(), Response> {
    let lockout = host.admin_lockout();
    let failures = &crate::status::StatusHost::metrics(host).auth_failures;
    let ip = peer.map(|p| p.ip());
    if let Some(Err(wait)) = ip.map(|ip| lockout.check(ip)) {
        let secs = wait.as_secs().max(1);
        failures.with_label_values(&["admin", "locked"]).inc();
        if ip.is_some_and(|ip| crate::lockout::worth_logging(lockout.refused(ip))) {
            tracing::warn!(
                ?peer,
                "admin port: too many failed logins; refused unchecked"
            );
        }
        return Err(Response::text(
            429,
            reason(429),
            format!("too many failed logins from this address: try again in {secs} s"),
        )
        .header("Retry-After", secs.to_string()));
    }
    match attempt() {
        Ok(()) => {
            if let Some(ip) = ip {
                lockout.succeeded(ip);
            }
            Ok(())
        }
        Err((why, refusal)) => {
            failures.with_label_values(&["admin", why]).inc();
            let n = ip.map_or(1, |ip| lockout.failed(ip));
            if crate::lockout::worth_logging(n) {
                tracing::warn!(
                    ?peer,
                    reason = why,
                    failures = n,
                    "admin port: login failed"
                );
            }
            Err(refusal)
        }
    }
}

/// The 413 for a body beyond `limit`.
fn too_large(limit: usize) -> Response {
    crate::api::bad_body(413, format!("request body larger than {limit} bytes"))
}

/// Refuses a declared `Content-Length` beyond `limit` before anything is read.
fn declared_within(req: &Request, limit: usize) -> Result<(), Response> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    match declared {
        Some(n) if n > limit as u64 => Err(too_large(limit)),
        _ => Ok(()),
    }
}

/// Reads a request body of at most `limit` bytes: a declared length beyond
/// it is refused before anything is read.
async fn read_body(limit: usize, req: Request) -> Result<Bytes, Response> {
    let too_large = || too_large(limit);
    declared_within(&req, limit)?;
    let collect = Limited::new(req.into_body(), limit).collect();
    match tokio::time::timeout(BODY_TIMEOUT, collect).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => Err(too_large()),
        Ok(Err(e)) => Err(crate::api::bad_body(
            400,
            format!("request body not read: {e}"),
        )),
        Err(_) => Err(crate::api::bad_body(
            408,
            format!("request body not sent within {} s", BODY_TIMEOUT.as_secs()),
        )),
    }
}

/// The open operational routes (shared with the listener port).
async fn status(State(host): State<Host>, uri: Uri, headers: HeaderMap) -> Response {
    let host_header = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    crate::status::common_route(host.as_ref(), uri.path(), host_header)
        .unwrap_or_else(|| not_found_response(uri.path()))
}

/// Icecast's admin interface (`/admin/stats`, …), behind Icecast's Basic
/// auth (see [`crate::status::icecast_admin`]).
async fn icecast_admin(
    State(host): State<Host>,
    axum::extract::Path(command): axum::extract::Path<String>,
    req: Request,
) -> Response {
    let auth = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let peer = req.extensions().get::<Peer>().map(|p| p.0);
    if let Err(refusal) = login(host.as_ref(), peer, || {
        crate::status::icecast_admin::authorize(host.admin_token(), auth)
    }) {
        return refusal;
    }
    let query: Vec<(String, String)> = req
        .uri()
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    let host_header = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok());
    crate::status::icecast_admin::handle(host.as_ref(), &command, &query, host_header)
}

/// The master's side of the slave link: checks the slave's secret, answers
/// `101 Switching Protocols`, and hands the raw connection to the link.
async fn link(State(host): State<Host>, mut req: Request) -> Response {
    let auth = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let peer = req.extensions().get::<Peer>().map(|p| p.0);
    let accepted = login(host.as_ref(), peer, || {
        crate::link::master::accept(host.as_ref(), auth).map_err(|(status, msg)| {
            tracing::warn!(status, "slave link refused: {msg}");
            let why = if status == 401 {
                "wrong_link_secret"
            } else {
                "not_a_master"
            };
            (why, Response::text(status, reason(status), msg))
        })
    });
    let peer = match (accepted, peer) {
        (Ok(()), Some(peer)) => peer,
        (Err(refusal), _) => return refusal,
        (Ok(()), None) => return Response::text(500, reason(500), "no peer address"),
    };
    let asked = req.headers().get(header::UPGRADE).is_some_and(|v| {
        v.as_bytes()
            .eq_ignore_ascii_case(crate::link::UPGRADE.as_bytes())
    });
    if !asked {
        return Response::text(
            400,
            reason(400),
            format!("a link request asks for Upgrade: {}", crate::link::UPGRADE),
        );
    }
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        match upgrade.await.map(|u| u.downcast::<Io>()) {
            Ok(Ok(parts)) => {
                let read = bytes::BytesMut::from(&parts.read_buf[..]);
                // The link keeps its own deadlines.
                let sock = parts.io.into_inner().into_inner();
                crate::link::master::serve(host, sock, peer, read).await;
            }
            Ok(Err(_)) => tracing::error!(%peer, "slave link: the upgraded connection is not TCP"),
            Err(e) => tracing::debug!(%peer, error = %e, "slave link: upgrade failed"),
        }
    });
    Response::new(101, reason(101))
        .header("Upgrade", crate::link::UPGRADE)
        .header("Connection", "Upgrade")
}

async fn not_found(uri: Uri) -> Response {
    not_found_response(uri.path())
}

fn not_found_response(path: &str) -> Response {
    if is_api(path) {
        return crate::api::no_route(path);
    }
    Response::new(404, reason(404))
        .header("Content-Type", "application/json")
        .body(
            serde_json::json!({
                "error": format!("no admin route {path}"),
                "routes": ["/api/openapi.json", "/metrics", "/healthz", "/readyz", "/status-json.xsl", "/admin/stats", "/admin/listmounts", "/admin/listclients", "/admin/killclient", "/admin/moveclients", "/admin/killsource"],
            })
            .to_string()
            .into_bytes(),
        )
}

async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    if is_api(uri.path()) {
        return crate::api::method_not_allowed(method.as_str(), uri.path());
    }
    Response::text(405, reason(405), format!("{method} is not allowed here"))
}
