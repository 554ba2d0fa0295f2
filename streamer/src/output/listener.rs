//! The listener port: one connection from accept to close.
//!
//! Short responses (playlists, status, health) may keep the connection alive;
//! an audio response owns the connection until it ends.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use streammachine_config::AudioFormat;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::icy::IcyWriter;
use super::live::Sender;
use super::playlist;
use super::start::{self, StartRequest};
use super::OutputHost;
use crate::http::{self, reason, Request, RequestError, Response};
use crate::stream::Stream;

/// How long a client may take to send a request head.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// Headers a browser player may read from our responses.
const EXPOSE: &str = "icy-metaint, icy-name, icy-genre, icy-url, icy-br, icy-description, icy-pub, Content-Length, X-Start-Time";

/// What a route answers.
enum Answer {
    Short(Response),
    Segment(super::hls::SegmentReply),
    Audio(Box<AudioRequest>),
}

struct AudioRequest {
    stream: Arc<Stream>,
    start: StartRequest,
    icy: bool,
    head_only: bool,
    user_agent: Option<String>,
    /// Let in by the stream's `listenerAuth`: its id and ticket.
    ticket: Option<(u64, super::auth::Ticket)>,
}

/// Serves one listener connection.
#[tracing::instrument(name = "listener", skip_all, fields(%peer))]
pub async fn handle_connection(server: Arc<dyn OutputHost>, mut sock: TcpStream, peer: SocketAddr) {
    let mut buf = BytesMut::new();
    loop {
        let req = match tokio::time::timeout(
            REQUEST_TIMEOUT,
            http::read_request(&mut sock, &mut buf, http::MAX_HEAD_BYTES),
        )
        .await
        {
            Err(_) => {
                if !buf.is_empty() {
                    send_short(
                        &mut sock,
                        &*server,
                        Response::text(408, reason(408), "request head timed out"),
                        false,
                        false,
                    )
                    .await;
                }
                return;
            }
            Ok(Ok(None)) | Ok(Err(RequestError::Closed)) | Ok(Err(RequestError::Io(_))) => return,
            Ok(Err(RequestError::TooLarge(n))) => {
                let r = Response::text(
                    431,
                    reason(431),
                    format!("request head larger than {n} bytes"),
                );
                send_short(&mut sock, &*server, r, false, false).await;
                return;
            }
            Ok(Err(RequestError::Malformed(e))) => {
                tracing::debug!(%peer, error = %e, "listener port: malformed request");
                let r = Response::text(400, reason(400), format!("malformed request: {e}"));
                send_short(&mut sock, &*server, r, false, false).await;
                return;
            }
            Ok(Ok(Some(r))) => r,
        };
        // A denied address (listeners.deny) gets nothing but a 403.
        if server.listeners_config().denies(peer.ip()) {
            let stream = req
                .path
                .trim_start_matches('/')
                .split(['/', '.'])
                .next()
                .unwrap_or("");
            server
                .metrics()
                .listeners_refused
                .with_label_values(&[stream, "denied"])
                .inc();
            let r = Response::text(403, reason(403), "this address may not listen here");
            send_short(&mut sock, &*server, r, false, req.method == "HEAD").await;
            return;
        }
        // HLS of a stream with listenerAuth: the session must be let in.
        if let Some(refused) = hls_auth(&server, &req, peer, &sock).await {
            send_short(&mut sock, &*server, refused, false, req.method == "HEAD").await;
            return;
        }
        // Draining: answer this request, then let the client go elsewhere.
        let draining = server.is_draining();
        let keep_alive = req.keep_alive() && !draining;
        let head_only = req.method == "HEAD";
        match route(&server, &req, &sock) {
            Answer::Audio(_) if draining => {
                let r = Response::text(
                    503,
                    reason(503),
                    "this server is draining for a restart: retry",
                )
                .header("Retry-After", "1");
                send_short(&mut sock, &*server, r, false, head_only).await;
                return;
            }
            Answer::Short(resp) => {
                if !send_short(&mut sock, &*server, resp, keep_alive, head_only).await
                    || !keep_alive
                {
                    return;
                }
            }
            Answer::Segment(seg) => {
                if !send_segment(&mut sock, seg, keep_alive, head_only).await || !keep_alive {
                    return;
                }
            }
            Answer::Audio(mut audio) => {
                if let Some(full) = super::control::listener_limit(&*server, &audio.stream) {
                    send_short(&mut sock, &*server, full, false, head_only).await;
                    return;
                }
                let auth = audio.stream.config().listener_auth.clone();
                if let (Some(cfg), false) = (auth, head_only) {
                    let id = crate::roster::next_id();
                    let asking = super::auth::Asking {
                        stream: audio.stream.key(),
                        client: id,
                        req: &req,
                        peer,
                        port: sock.local_addr().map_or(0, |a| a.port()),
                    };
                    match server.listener_auth().admit(&cfg, asking).await {
                        Ok(ticket) => audio.ticket = Some((id, ticket)),
                        Err(refused) => {
                            send_short(&mut sock, &*server, refused, false, head_only).await;
                            return;
                        }
                    }
                }
                spawn_audio(&server, sock, peer, *audio);
                return;
            }
        }
    }
}

/// An HLS request (playlist or segment) of a stream with `listenerAuth`:
/// the refusal, or `None` when its session may go on (output/auth.rs).
async fn hls_auth(
    server: &Arc<dyn OutputHost>,
    req: &Request,
    peer: SocketAddr,
    sock: &TcpStream,
) -> Option<Response> {
    let stream = super::hls::auth_stream(&**server, &req.path)?;
    let cfg = stream.config().listener_auth.clone()?;
    let session = super::hls::session_for(req, Some(peer)).unwrap_or_else(|| peer.ip().to_string());
    let asking = super::auth::Asking {
        stream: stream.key(),
        client: crate::roster::next_id(),
        req,
        peer,
        port: sock.local_addr().map_or(0, |a| a.port()),
    };
    server
        .listener_auth()
        .admit_hls(&cfg, &session, asking)
        .await
        .err()
}

/// Writes a segment: head, then each part (shared chunk bytes, no copy).
async fn send_segment(
    sock: &mut TcpStream,
    seg: super::hls::SegmentReply,
    keep_alive: bool,
    head_only: bool,
) -> bool {
    let conn = if keep_alive {
        "Connection: keep-alive\r\n\r\n"
    } else {
        "Connection: close\r\n\r\n"
    };
    let mut head = seg.head.into_bytes();
    head.extend_from_slice(conn.as_bytes());
    // A client that does not read its segment must not hold this task.
    let write = async {
        sock.write_all(&head).await?;
        if !head_only {
            for part in &seg.parts {
                sock.write_all(part).await?;
            }
        }
        Ok::<_, std::io::Error>(())
    };
    matches!(
        tokio::time::timeout(WRITE_DEADLINE, write).await,
        Ok(Ok(()))
    )
}

/// The longest a short reply or an HLS segment may take to be written.
const WRITE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(60);

async fn send_short(
    sock: &mut TcpStream,
    server: &dyn OutputHost,
    resp: Response,
    keep_alive: bool,
    head_only: bool,
) -> bool {
    let resp = resp.header(
        "Access-Control-Allow-Origin",
        server.listeners_config().cors_origin.clone(),
    );
    let bytes = resp.to_bytes(keep_alive, head_only);
    matches!(
        tokio::time::timeout(WRITE_DEADLINE, sock.write_all(&bytes)).await,
        Ok(Ok(()))
    )
}

fn route(server: &Arc<dyn OutputHost>, req: &Request, sock: &TcpStream) -> Answer {
    let method = req.method.as_str();
    if method == "OPTIONS" {
        return Answer::Short(
            Response::new(204, reason(204))
                .header("Access-Control-Allow-Methods", "GET, HEAD, OPTIONS")
                .header(
                    "Access-Control-Allow-Headers",
                    "Icy-MetaData, Range, Content-Type",
                )
                .header("Access-Control-Max-Age", "86400"),
        );
    }
    if method != "GET" && method != "HEAD" {
        return Answer::Short(
            Response::text(
                405,
                reason(405),
                format!("{method} is not allowed here: use GET or HEAD"),
            )
            .header("Allow", "GET, HEAD, OPTIONS"),
        );
    }
    let path = req.path.as_str();
    if let Some(resp) = crate::status::common_route(server.as_ref(), path, req.header("host")) {
        return Answer::Short(resp);
    }
    let name = path.strip_prefix('/').unwrap_or(path);
    if name.is_empty() {
        // A browser gets the status page; curl and scripts the plain list.
        if super::pages::wants_html(req) {
            return Answer::Short(super::pages::index());
        }
        return Answer::Short(crate::status::index(server.as_ref()));
    }
    if let Some(stream) = name.strip_suffix("/player").and_then(|k| server.stream(k)) {
        return Answer::Short(super::pages::player(stream.key()));
    }
    // Signed streams: the stream, its playlists and segments need a valid
    // signed URL (output/signed.rs).
    let key = name
        .strip_prefix("sg/")
        .map(|_| name.trim_end_matches(".m3u8"))
        .or_else(|| name.split_once("/seg/").map(|(k, _)| k))
        .or_else(|| name.strip_suffix("/titles.json"))
        .unwrap_or_else(|| {
            name.trim_end_matches(".m3u8")
                .trim_end_matches(".pls")
                .trim_end_matches(".m3u")
        });
    let signed = if key.starts_with("sg/") {
        server.streams().iter().any(|s| {
            s.config().signed_urls
                && s.config().hls.as_ref().and_then(|h| h.group.as_deref())
                    == key.strip_prefix("sg/")
        })
    } else {
        server.stream(key).is_some_and(|s| s.config().signed_urls)
    };
    if let Some(refused) = super::signed::gate(&**server, signed, key, req) {
        return Answer::Short(refused);
    }
    if let Some(stream) = server.stream(name) {
        let start = match StartRequest::from_request(req) {
            Ok(s) => s,
            Err(e) => return Answer::Short(Response::text(400, reason(400), e.to_string())),
        };
        let icy =
            req.header("icy-metadata").is_some_and(|v| v.trim() == "1") && start.pump.is_none();
        return Answer::Audio(Box::new(AudioRequest {
            stream,
            start,
            icy,
            head_only: method == "HEAD",
            user_agent: req.header("user-agent").map(str::to_string),
            ticket: None,
        }));
    }
    for (ext, kind) in [(".pls", playlist::Kind::Pls), (".m3u", playlist::Kind::M3u)] {
        if let Some(stream) = name.strip_suffix(ext).and_then(|k| server.stream(k)) {
            let base = playlist::base_url(&**server, req, sock);
            return Answer::Short(playlist::render(kind, &stream, &base));
        }
    }
    if let Some(group) = name
        .strip_prefix("sg/")
        .and_then(|g| g.strip_suffix(".m3u8"))
    {
        return Answer::Short(super::hls::multivariant(
            &**server,
            group,
            req,
            sock.peer_addr().ok(),
        ));
    }
    if let Some(stream) = name.strip_suffix(".m3u8").and_then(|k| server.stream(k)) {
        if let Some(full) =
            super::control::hls_limit(&**server, &stream, req, sock.peer_addr().ok())
        {
            return Answer::Short(full);
        }
        return Answer::Short(super::hls::media_playlist(
            &stream,
            req,
            sock.peer_addr().ok(),
            server.url_secret(),
        ));
    }
    if let Some(stream) = name
        .strip_suffix("/titles.json")
        .and_then(|k| server.stream(k))
    {
        return Answer::Short(super::titles::reply(&stream));
    }
    if let Some((key, seg)) = name.split_once("/seg/") {
        if let Some(stream) = server.stream(key) {
            return match super::hls::segment(&**server, &stream, seg, req, sock.peer_addr().ok()) {
                Ok(reply) => Answer::Segment(reply),
                Err(resp) => Answer::Short(resp),
            };
        }
    }
    Answer::Short(Response::text(
        404,
        reason(404),
        format!("no stream named {name:?}"),
    ))
}

/// The `icy-br` value: from the format key (mp3) or the source's `ice-audio-info`.
fn bitrate(server: &dyn OutputHost, stream: &Stream) -> Option<String> {
    if let Some(key) = stream.format_key() {
        let mut parts = key.split('-');
        if parts.next() == Some("mp3") {
            if let Some(br) = parts.nth(1) {
                return Some(br.to_string());
            }
        }
    }
    let info = server.source_info(stream)?;
    let audio_info = info.audio_info?;
    audio_info.split(';').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        matches!(k.trim(), "bitrate" | "ice-bitrate").then(|| v.trim().to_string())
    })
}

fn audio_head(server: &dyn OutputHost, a: &AudioRequest, s: &start::Start) -> String {
    use std::fmt::Write as _;
    let stream = &a.stream;
    let cfg = stream.config();
    let info = server.source_info(stream).unwrap_or_default();
    let content_type = match stream.format() {
        AudioFormat::Mp3 => "audio/mpeg",
        AudioFormat::Aac => "audio/aac",
    };
    let mut h = String::with_capacity(512);
    h.push_str("HTTP/1.1 200 OK\r\n");
    let _ = write!(h, "Content-Type: {content_type}\r\n");
    h.push_str("Cache-Control: no-cache, no-store\r\nPragma: no-cache\r\nAccept-Ranges: none\r\n");
    let _ = write!(
        h,
        "Access-Control-Allow-Origin: {}\r\nAccess-Control-Expose-Headers: {EXPOSE}\r\n",
        server.listeners_config().cors_origin
    );
    let clean = |v: &str| v.replace(['\r', '\n'], " ");
    let fields = [
        ("icy-name", cfg.name.clone().or(info.name)),
        (
            "icy-description",
            cfg.description.clone().or(info.description),
        ),
        ("icy-genre", cfg.genre.clone().or(info.genre)),
        ("icy-url", cfg.url.clone().or(info.url)),
        ("icy-br", bitrate(server, stream)),
    ];
    for (name, value) in fields {
        if let Some(v) = value {
            let _ = write!(h, "{name}: {}\r\n", clean(&v));
        }
    }
    h.push_str("icy-pub: 0\r\n");
    if a.icy {
        let _ = write!(h, "icy-metaint: {}\r\n", cfg.icy_meta_interval);
    }
    if a.start.is_positioned() {
        if let Some(t) = s.time {
            let _ = write!(h, "X-Start-Time: {}\r\n", crate::stream::format_time(t));
        }
    }
    if let Some(n) = s.content_length {
        let _ = write!(h, "Content-Length: {n}\r\n");
    }
    h.push_str("Server: StreamMachine\r\nConnection: close\r\n\r\n");
    h
}

/// Starts an audio response on its own task, so the request-reading task
/// (and its buffers) is gone while the listener streams for hours.
fn spawn_audio(server: &Arc<dyn OutputHost>, sock: TcpStream, peer: SocketAddr, a: AudioRequest) {
    tokio::spawn(serve_audio(Arc::clone(server), sock, peer, a));
}

async fn serve_audio(
    server: Arc<dyn OutputHost>,
    mut sock: TcpStream,
    peer: SocketAddr,
    a: AudioRequest,
) {
    let s = match start::resolve(&a.stream, &a.start) {
        Ok(s) => s,
        Err(e) => {
            let r = Response::text(503, reason(503), e.to_string()).header("Retry-After", "5");
            send_short(&mut sock, &*server, r, false, a.head_only).await;
            return;
        }
    };
    {
        let head = audio_head(&*server, &a, &s);
        if sock.write_all(head.as_bytes()).await.is_err() || a.head_only {
            return;
        }
    }
    let output = if a.start.pump.is_some() {
        "pump"
    } else if a.icy {
        "icy"
    } else {
        "raw"
    };
    let m = server.metrics();
    let key = a.stream.key();
    m.listener_connections
        .with_label_values(&[key, output])
        .inc();
    let gauge = m.listeners.with_label_values(&[key, output]);
    gauge.inc();
    let (id, ticket) = match a.ticket {
        Some((id, t)) => (Some(id), Some(Box::new(t))),
        None => (None, None),
    };
    let count = a.stream.listener_joined(crate::roster::Who {
        id,
        ..crate::roster::Who::new(peer.ip(), a.user_agent.clone(), output)
    });
    let sent = m.listener_sent_bytes.with_label_values(&[key, output]);
    let icy = a
        .icy
        .then(|| IcyWriter::new(a.stream.config().icy_meta_interval));
    let sender = Sender::new(Arc::clone(&a.stream), s.pos, s.end, icy, s.lag, sent);
    // The hours-long part runs on a task of its own whose state is only what
    // streaming needs: the setup above (head text, request) is gone.
    let client = crate::analytics::Client {
        ip: peer.ip().to_string(),
        ua: a.user_agent.clone(),
    };
    let session = server.analytics().start(a.stream.key(), output, client);
    let mut task = super::listening::listen(
        Arc::clone(&server),
        sock,
        peer,
        sender,
        output,
        gauge,
        count,
    );
    task.attach(
        session,
        ticket.map(|t| Box::new(super::auth::Admitted::new(*t))),
    );
    tokio::spawn(task);
}

pub use super::listening::{adopted, resume, Carried, Conn, ParkedListener};
