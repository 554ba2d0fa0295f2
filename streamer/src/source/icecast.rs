//! The Icecast source protocol: `SOURCE` (ICE/1.0, HTTP/1.0) and `PUT` (with
//! `Expect: 100-continue`), HTTP Basic auth against the mount's password, and
//! then raw audio until the encoder hangs up.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use streammachine_config::AudioFormat;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout_at, Instant};

use super::mount::{Mount, SourceInfo};
use super::{metadata, Rejection};
use crate::buffer::Chunker;
use crate::format::{Codec, Framer, FramerError};
use crate::http::{self, Request, RequestError};
use crate::source::SourceHost;

/// Why a source that was accepted stopped.
#[derive(Debug, thiserror::Error)]
pub enum SourceEnd {
    /// The encoder closed the connection.
    #[error("encoder disconnected")]
    Closed,
    /// No valid frame arrived in time after connecting.
    #[error("no valid {codec} frame within {secs} s of connecting")]
    NoFirstFrame {
        /// The mount's codec.
        codec: Codec,
        /// The limit.
        secs: f64,
    },
    /// Frames stopped arriving, and so did data.
    #[error("no audio frame for {secs} s (stalled encoder)")]
    Stalled {
        /// The limit.
        secs: f64,
    },
    /// Data kept coming, but no frame in it.
    #[error("no audio frame for {secs} s although {bytes} bytes came meanwhile: the source sends something that is not {codec} audio any more")]
    NoAudio {
        /// The limit.
        secs: f64,
        /// Bytes received since the last frame.
        bytes: u64,
        /// What the mount takes.
        codec: Codec,
    },
    /// The data is not what the mount takes.
    #[error(transparent)]
    Format(#[from] FramerError),
    /// A socket error.
    #[error("read error: {0}")]
    Io(#[from] std::io::Error),
    /// The server is shutting down.
    #[error("server shutting down")]
    Shutdown,
    /// Dropped through the admin API, or its mount was removed.
    #[error("dropped by the admin API (or its mount was removed)")]
    Dropped,
    /// Paused for a handoff to a successor process, with its parsing state.
    #[error("parked for a handoff")]
    Parked(Box<SourceRun>),
}

/// A source's parsing state: what must continue, byte-exact, in a successor
/// process after a handoff.
#[derive(Debug)]
pub struct SourceRun {
    /// The frame parser (with the bytes it holds).
    pub framer: Framer,
    /// The partial chunk.
    pub chunker: Chunker,
    /// The format key, once known.
    pub format_key: Option<String>,
}

impl SourceRun {
    /// A fresh state for a mount's codec.
    pub fn new(format: AudioFormat) -> Self {
        SourceRun {
            framer: Framer::new(codec_of(format)),
            chunker: Chunker::new(),
            format_key: None,
        }
    }
}

/// A source paused for a handoff: its connection, its place in the mount,
/// and its parsing state.
#[derive(Debug)]
pub struct ParkedSource {
    /// The connection.
    pub sock: TcpStream,
    /// The encoder's address.
    pub peer: SocketAddr,
    /// Its membership in the mount (kept until the handoff is done).
    pub guard: super::mount::SourceGuard,
    /// Its parsing state.
    pub run: Box<SourceRun>,
}

impl ParkedSource {
    /// Drives it again (after a failed handoff, or adopted by a successor).
    pub fn resume(self, server: &Arc<dyn SourceHost>) {
        tokio::spawn(drive(
            Arc::clone(server),
            self.sock,
            self.peer,
            self.guard,
            self.run,
            BytesMut::new(),
        ));
    }
}

/// Serves one connection on the source port, start to end.
#[tracing::instrument(name = "source", skip_all, fields(%peer))]
pub async fn handle_connection(server: Arc<dyn SourceHost>, mut sock: TcpStream, peer: SocketAddr) {
    let cfg = &server.sources_config();
    let deadline = Instant::now() + Duration::from_secs_f64(cfg.header_timeout_seconds);
    let mut buf = BytesMut::with_capacity(2048);
    let req = match timeout_at(
        deadline,
        http::read_request(&mut sock, &mut buf, http::MAX_HEAD_BYTES),
    )
    .await
    {
        Err(_) => {
            Rejection::new(408, "timeout", "timed out waiting for the request head")
                .send(&*server, &mut sock, peer)
                .await;
            return;
        }
        Ok(Ok(None)) | Ok(Err(RequestError::Closed)) => {
            tracing::debug!(%peer, "source port: connection closed before a request");
            return;
        }
        Ok(Err(RequestError::TooLarge(n))) => {
            Rejection::new(
                431,
                "head_too_large",
                format!("request head larger than {n} bytes"),
            )
            .send(&*server, &mut sock, peer)
            .await;
            return;
        }
        Ok(Err(RequestError::Malformed(e))) => {
            Rejection::new(
                400,
                "malformed",
                format!("not an Icecast source request ({e})"),
            )
            .send(&*server, &mut sock, peer)
            .await;
            return;
        }
        Ok(Err(RequestError::Io(e))) => {
            tracing::debug!(%peer, error = %e, "source port: read error before a request");
            return;
        }
        Ok(Ok(Some(r))) => r,
    };
    match (req.method.as_str(), req.path.as_str()) {
        ("SOURCE" | "PUT", _) => match accept_source(&server, &mut sock, peer, req).await {
            Err(rej) => rej.send(&*server, &mut sock, peer).await,
            Ok(None) => {}
            Ok(Some(guard)) => {
                let run = Box::new(SourceRun::new(guard.mount().format()));
                drive(server, sock, peer, guard, run, buf).await;
            }
        },
        ("GET", "/admin/metadata") => match metadata::update(&*server, &req, peer.ip()) {
            Ok(r) => {
                let _ = sock.write_all(&r.to_bytes(false, false)).await;
            }
            Err(rej) => rej.send(&*server, &mut sock, peer).await,
        },
        (m, p) => {
            Rejection::new(
                405,
                "method",
                format!("{m} {p}: the source port takes SOURCE or PUT /<mount> from encoders and GET /admin/metadata"),
            )
            .send(&*server, &mut sock, peer)
            .await;
        }
    }
}

/// Extracts the password of an HTTP Basic `Authorization` header.
pub fn basic_password(req: &Request) -> Option<String> {
    use base64::Engine as _;
    let value = req.header("authorization")?;
    let (scheme, b64) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (_user, pass) = text.split_once(':')?;
    Some(pass.to_string())
}

/// Finds the mount (by its own path, or one of its `inputs`) and checks the
/// password: the common part of a source connection and a metadata update;
/// with the priority the path gives (0 on the mount's own). An address that keeps failing must
/// wait between attempts ([`crate::lockout`]); its failures are counted by
/// reason and logged at the 1st, 2nd, 4th, 8th…
pub fn authorize(
    server: &dyn SourceHost,
    req: &Request,
    mount_path: &str,
    from: std::net::IpAddr,
) -> Result<(Arc<Mount>, i32), Rejection> {
    let lockout = server.lockout();
    if let Err(wait) = lockout.check(from) {
        let secs = wait.as_secs().max(1);
        let n = lockout.refused(from);
        count_auth_failure(server, "locked");
        return Err(Rejection::new(
            429,
            "auth_locked",
            format!("too many failed logins from {from}: try again in {secs} s"),
        )
        .retry_after(secs)
        .quiet(!crate::lockout::worth_logging(n)));
    }
    let refused = |rej: Rejection| {
        let n = lockout.failed(from);
        count_auth_failure(server, rej.reason());
        rej.auth().quiet(!crate::lockout::worth_logging(n))
    };
    let key = mount_path.strip_prefix('/').unwrap_or(mount_path);
    let (mount, input) = match server.mount(key) {
        Some(m) => (m, false),
        None => match server.input_mount(key) {
            Some(m) => (m, true),
            None => {
                return Err(Rejection::new(
                    404,
                    "unknown_mount",
                    format!("no mount {mount_path:?} on this server"),
                ))
            }
        },
    };
    let Some(password) = basic_password(req) else {
        return Err(refused(Rejection::new(
            401,
            "no_credentials",
            "HTTP Basic credentials required",
        )));
    };
    let priority = if input {
        mount.input_password_matches(key, &password)
    } else {
        mount.password_matches(&password).then_some(0)
    };
    let Some(priority) = priority else {
        return Err(refused(Rejection::new(
            401,
            "bad_password",
            format!("wrong password for mount {mount_path:?}"),
        )));
    };
    lockout.succeeded(from);
    Ok((mount, priority))
}

fn count_auth_failure(server: &dyn SourceHost, reason: &str) {
    server
        .metrics()
        .auth_failures
        .with_label_values(&["source", reason])
        .inc();
}

fn codec_of(format: AudioFormat) -> Codec {
    match format {
        AudioFormat::Mp3 => Codec::Mp3,
        AudioFormat::Aac => Codec::Aac,
    }
}

/// What a `Content-Type` says, when it says something definite.
fn declared_format(content_type: &str) -> Option<Result<AudioFormat, String>> {
    let ct = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match ct.as_str() {
        "audio/mpeg" | "audio/mp3" | "audio/mpeg3" | "audio/x-mpeg" => Some(Ok(AudioFormat::Mp3)),
        "audio/aac" | "audio/aacp" | "audio/x-aac" | "audio/x-hx-aac-adts" => {
            Some(Ok(AudioFormat::Aac))
        }
        "application/ogg" | "audio/ogg" | "audio/opus" | "audio/webm" | "audio/flac"
        | "audio/mp4" => Some(Err(ct)),
        _ => None,
    }
}

/// Checks and answers a source request; returns its place in the mount.
async fn accept_source(
    server: &Arc<dyn SourceHost>,
    sock: &mut TcpStream,
    peer: SocketAddr,
    req: Request,
) -> Result<Option<super::mount::SourceGuard>, Rejection> {
    let (mount, priority) = authorize(&**server, &req, &req.path, peer.ip())?;
    if let Some(ct) = req.header("content-type") {
        match declared_format(ct) {
            Some(Ok(f)) if f != mount.format() => {
                return Err(Rejection::new(
                    415,
                    "wrong_format",
                    format!(
                        "mount {:?} takes {}, the source declares {ct}",
                        mount.key(),
                        mount.format()
                    ),
                ));
            }
            Some(Err(ct)) => {
                return Err(Rejection::new(
                    415,
                    "unsupported_format",
                    format!("{ct} is not supported: send MP3 or AAC in ADTS"),
                ));
            }
            _ => {}
        }
    }
    let expect_continue = req
        .header("expect")
        .is_some_and(|e| e.eq_ignore_ascii_case("100-continue"));
    let reply: &[u8] = if expect_continue {
        b"HTTP/1.1 100 Continue\r\n\r\n"
    } else {
        b"HTTP/1.0 200 OK\r\n\r\n"
    };
    let info = SourceInfo {
        remote: Some(peer),
        user_agent: req.header("user-agent").map(str::to_string),
        content_type: req.header("content-type").map(str::to_string),
        name: req.header("ice-name").map(str::to_string),
        description: req.header("ice-description").map(str::to_string),
        genre: req.header("ice-genre").map(str::to_string),
        url: req.header("ice-url").map(str::to_string),
        audio_info: req.header("ice-audio-info").map(str::to_string),
        public: req.header("ice-public").map(str::to_string),
    };
    // Registered before the go-ahead: once an encoder has it, status and
    // metrics count it (a source that leaves at once is counted out after).
    let guard = mount.add_source_ranked(info, false, priority);
    if sock.write_all(reply).await.is_err() {
        return Ok(None);
    }
    server
        .metrics()
        .source_connections
        .with_label_values(&[mount.key()])
        .inc();
    tracing::info!(mount = %mount.key(), source = guard.id(), %peer, method = %req.method,
        active = mount.active_source() == Some(guard.id()), "source connected");
    Ok(Some(guard))
}

/// Runs an accepted source until it ends (or is parked for a handoff, when
/// its connection and state go to the server's handoff).
pub async fn drive(
    server: Arc<dyn SourceHost>,
    mut sock: TcpStream,
    peer: SocketAddr,
    guard: super::mount::SourceGuard,
    run_state: Box<SourceRun>,
    leftover: BytesMut,
) {
    let mount = Arc::clone(guard.mount());
    let end = run(
        &server,
        &mut sock,
        &mount,
        guard.id(),
        guard.entry(),
        leftover,
        run_state,
    )
    .await;
    match end {
        SourceEnd::Parked(run) => server.park_source(ParkedSource {
            sock,
            peer,
            guard,
            run,
        }),
        SourceEnd::Closed => {
            tracing::info!(mount = %mount.key(), source = guard.id(), %peer, "source disconnected")
        }
        e => {
            tracing::warn!(mount = %mount.key(), source = guard.id(), %peer, reason = %e, "source dropped")
        }
    }
}

/// Bytes without a frame, over a whole stall timeout, that make it "not
/// audio any more" rather than a stalled encoder (a few frames' worth: an
/// encoder that stops mid-frame leaves less).
const NOT_AUDIO_ANY_MORE: u64 = 16 * 1024;

/// Reads audio until the source ends, feeding the mount.
async fn run(
    server: &Arc<dyn SourceHost>,
    sock: &mut TcpStream,
    mount: &Arc<Mount>,
    id: u64,
    entry: &super::mount::SourceEntry,
    leftover: BytesMut,
    state: Box<SourceRun>,
) -> SourceEnd {
    let cfg = &server.sources_config();
    let codec = codec_of(mount.format());
    let SourceRun {
        mut framer,
        mut chunker,
        mut format_key,
    } = *state;
    let received = server
        .metrics()
        .source_received_bytes
        .with_label_values(&[mount.key()]);
    let discarded = server
        .metrics()
        .source_discarded_bytes
        .with_label_values(&[mount.key()]);
    let mut discarded_seen = 0u64;
    let first_frame = Duration::from_secs_f64(cfg.first_frame_timeout_seconds);
    let stall = Duration::from_secs_f64(cfg.data_timeout_seconds);
    let mut deadline = Instant::now() + first_frame;
    let mut shutdown = server.shutdown_signal();
    let mut parking = server.parking_signal();
    let mut buf = vec![0u8; 16 * 1024];
    let mut pending: &[u8] = &leftover;
    let mut eof = false;
    // Bytes received since the last frame: a stall with data is not a stall.
    let mut since_frame = 0u64;
    // The last frame's header, to see the format change.
    let mut last_header: Option<crate::format::FrameHeader> = None;
    let end = 'run: loop {
        if !pending.is_empty() {
            received.inc_by(pending.len() as u64);
            framer.push(pending);
            pending = &[];
        }
        loop {
            let next = if eof {
                framer.finish()
            } else {
                framer.next_frame()
            };
            let frame = match next {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => break 'run SourceEnd::Format(e),
            };
            deadline = Instant::now() + stall;
            since_frame = 0;
            if last_header.is_some_and(|h| !h.same_audio(&frame.header)) {
                // A new sample rate or channel count: chunks of their own,
                // and the streams start a new timeline piece (an HLS
                // discontinuity) when they see the new format key.
                if let (Some(draft), Some(key)) = (chunker.flush(), format_key.as_deref()) {
                    mount.push(id, draft, key);
                }
                tracing::warn!(mount = %mount.key(), source = id, from = %format_key.as_deref().unwrap_or_default(), to = %frame.header.format_key(),
                    "source format changed mid-stream (sample rate or channels): raw listeners get the new format as is, HLS marks a discontinuity, transcoders restart their decoder");
                format_key = None;
            }
            last_header = Some(frame.header);
            let key = format_key.get_or_insert_with(|| {
                let k = frame.header.format_key();
                tracing::info!(mount = %mount.key(), source = id, format = %k, "source format detected");
                if let Ok(mut fk) = entry.format_key.lock() {
                    *fk = Some(k.clone());
                }
                k
            });
            entry.bytes.fetch_add(
                frame.data.len() as u64,
                std::sync::atomic::Ordering::Relaxed,
            );
            if let Some(draft) = chunker.push(&frame) {
                mount.push(id, draft, key);
            }
        }
        let st = framer.stats();
        let d = st.garbage_bytes + st.dropped_bytes;
        if d > discarded_seen {
            discarded.inc_by(d - discarded_seen);
            discarded_seen = d;
        }
        if eof {
            break SourceEnd::Closed;
        }
        let read = tokio::select! {
            r = timeout_at(deadline, sock.read(&mut buf)) => r,
            _ = shutdown.changed() => break SourceEnd::Shutdown,
            _ = entry.kick.notified() => break SourceEnd::Dropped,
            r = parking.wait_for(|p| *p) => {
                if r.is_ok() {
                    return SourceEnd::Parked(Box::new(SourceRun { framer, chunker, format_key }));
                }
                continue;
            }
        };
        match read {
            // The timer judges the encoder, not the server's own absence: a
            // server paused (SIGSTOP, a starved CPU, a VM migration) wakes with
            // its timer due before the runtime has seen the socket readable.
            Err(_) if audio_waiting(sock) => deadline = Instant::now() + stall,
            Err(_) if format_key.is_none() => {
                break SourceEnd::NoFirstFrame {
                    codec,
                    secs: cfg.first_frame_timeout_seconds,
                }
            }
            Err(_) if since_frame > NOT_AUDIO_ANY_MORE => {
                break SourceEnd::NoAudio {
                    secs: cfg.data_timeout_seconds,
                    bytes: since_frame,
                    codec,
                }
            }
            Err(_) => {
                break SourceEnd::Stalled {
                    secs: cfg.data_timeout_seconds,
                }
            }
            Ok(Err(e)) => break SourceEnd::Io(e),
            Ok(Ok(0)) => eof = true,
            Ok(Ok(n)) => {
                received.inc_by(n as u64);
                since_frame += n as u64;
                framer.push(&buf[..n]);
            }
        }
    };
    // However it ended (but parked for a successor, which goes on with it),
    // its last frame (held until a next header confirms it) and partial
    // chunk are audio the listeners are owed.
    if let Some(key) = format_key.as_deref() {
        while let Ok(Some(frame)) = framer.finish() {
            if let Some(draft) = chunker.push(&frame) {
                mount.push(id, draft, key);
            }
        }
        if let Some(draft) = chunker.flush() {
            mount.push(id, draft, key);
        }
    }
    end
}

/// Whether bytes wait unread in the socket, asked of the kernel (a peek), not
/// of the runtime's cached readiness.
fn audio_waiting(sock: &TcpStream) -> bool {
    let mut probe = [std::mem::MaybeUninit::<u8>::uninit(); 1];
    matches!(socket2::SockRef::from(sock).peek(&mut probe), Ok(n) if n > 0)
}
