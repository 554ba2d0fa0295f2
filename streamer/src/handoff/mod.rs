//! Handoff restarts (DESIGN.md §5): a running server passes its listening
//! sockets, its sources and its listeners — connections (`SCM_RIGHTS`) and
//! their exact state — and its rewind buffers to a successor process, which
//! continues every listener at exactly the next byte.
//!
//! The successor listens on a Unix socket (`--handoff-from <path>`) while it
//! serves. The predecessor is told to push by a line on its control socket
//! (`--control-socket <path>`; `streammachine handoff --to <path>` and
//! `streammachine run` send it): it stops accepting, parks every source and
//! listener at a poll boundary (no byte is in flight in user space), sends
//! everything, and exits once the successor acknowledges. If anything fails
//! before the acknowledgement, it resumes as if nothing happened.
//!
//! Messages on the handoff socket: a kind byte (carrying descriptors), then a
//! length-prefixed payload — `H` hello (JSON), `B` a stream's buffer (dump
//! format), `L` the listening sockets, `S` a source, `C` a listener (JSON
//! state + its descriptor), `E` end; the successor prepares everything and
//! answers `A` (ack) or `X` (refused); on `A` the predecessor, parked for
//! good, sends `C` (commit) and only then does the successor start driving
//! the sockets (`X` from the predecessor: it resumes, the successor drops
//! what it prepared).

pub mod fd;

use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use crate::buffer::chunker::ChunkerState;
use crate::buffer::Position;
use crate::format::FramerState;
use crate::output::icy::IcyState;
use crate::server::Server;
use crate::source::SourceInfo;

/// Largest single message (a stream's buffer: 8 h at 320 kbit/s is 1.2 GB).
const MAX_MESSAGE: u64 = 4 * 1024 * 1024 * 1024;

/// Why a handoff failed.
#[derive(Debug, thiserror::Error)]
pub enum HandoffError {
    /// Socket trouble.
    #[error("handoff i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The other side sent something else.
    #[error("handoff protocol: {0}")]
    Protocol(String),
    /// A state message that does not parse.
    #[error("handoff message: {0}")]
    Json(#[from] serde_json::Error),
    /// A buffer that does not load.
    #[error("handoff buffer: {0}")]
    Buffer(String),
    /// The predecessor's configuration cannot run here.
    #[error("handoff refused: {0}")]
    Refused(String),
    /// Nobody but this server itself listens at the handoff socket.
    #[error("no successor listens at {path} (waited {waited} s)")]
    NoSuccessor {
        /// The handoff socket.
        path: String,
        /// Seconds waited for one.
        waited: u64,
    },
    /// Not everyone stopped in time.
    #[error("only {parked} of {expected} connections paused in time")]
    NotParked {
        /// Paused.
        parked: usize,
        /// Expected.
        expected: usize,
    },
}

#[derive(Debug, Serialize, Deserialize)]
struct Hello {
    version: u32,
    mode: String,
    pid: u32,
    /// The streams and mounts running in the predecessor (standalone and
    /// master), API changes included: the successor serves exactly these, so
    /// no listener or source finds its stream missing. A slave's come from
    /// its master.
    #[serde(default)]
    running: Option<Running>,
}

/// A predecessor's running streams and mounts (passwords included: this goes
/// over a local socket between two processes of the same server, never to a log).
#[derive(Debug, Serialize, Deserialize)]
struct Running {
    source_mounts: Vec<streammachine_crds::config::SourceMountConfig>,
    streams: Vec<streammachine_crds::config::StreamConfig>,
}

/// Largest hello (it carries the running configuration).
const MAX_HELLO: u64 = 16 * 1024 * 1024;

#[derive(Debug, Serialize, Deserialize)]
struct ListeningMsg {
    kinds: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct SourceMsg {
    mount: String,
    peer: SocketAddr,
    active: bool,
    info: SourceInfo,
    framer: FramerState,
    chunker: ChunkerState,
    format_key: Option<String>,
    bytes: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct ListenerMsg {
    stream: String,
    output: String,
    peer: SocketAddr,
    seq: u64,
    offset: u32,
    end: Option<(u64, u32)>,
    icy: Option<IcyState>,
    lag_allowance: u64,
    bytes: u64,
    audio_micros: u64,
    /// Its analytics session, which goes on in the successor.
    #[serde(default)]
    session: Option<crate::analytics::SessionState>,
}

/// What a handoff moved.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Listeners handed over.
    pub listeners: usize,
    /// Sources handed over.
    pub sources: usize,
    /// Streams whose buffer was handed over.
    pub buffers: usize,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} listeners, {} sources, {} buffers",
            self.listeners, self.sources, self.buffers
        )
    }
}

fn json<T: Serialize>(v: &T) -> Result<Vec<u8>, HandoffError> {
    Ok(serde_json::to_vec(v)?)
}

/// Pushes everything to the successor listening at `target`. On success the
/// caller exits; on failure everything is resumed here.
///
/// Waits up to `wait` for a successor to listen there. A socket this server
/// offers itself (it was started with `--handoff-from` the same path, and no
/// successor has replaced the file yet) is not a successor: handing off to
/// it would close every listener.
pub async fn hand_off(
    server: &Arc<Server>,
    target: &Path,
    wait: Duration,
) -> Result<Summary, HandoffError> {
    let mut sock = connect_successor(server, target, wait).await?;
    sock.set_read_timeout(Some(Duration::from_secs(60)))?;
    let started = Instant::now();
    server.set_accepting(false);
    server.begin_parking();
    // Wait until every source and listener stopped at a poll boundary.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (expected_l, expected_s) = server.expected_parked();
        let (parked_l, parked_s) = server.parked_counts();
        if parked_l >= expected_l && parked_s >= expected_s {
            break;
        }
        if Instant::now() > deadline {
            server.end_parking();
            return Err(HandoffError::NotParked {
                parked: parked_l + parked_s,
                expected: expected_l + expected_s,
            });
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let parked = server.take_parked();
    let listening: Vec<(&'static str, std::os::fd::RawFd)> = server
        .listening_sockets()
        .iter()
        .map(|(k, l)| (*k, fd::raw(l.as_ref())))
        .collect();
    let transfer_buffers = server.config().mode != streammachine_crds::config::Mode::Slave;
    let streams = server.streams();
    let mode = server.config().mode.to_string();
    let running = transfer_buffers.then(|| {
        let c = server.effective_config();
        Running {
            source_mounts: c.source_mounts,
            streams: c.streams,
        }
    });
    let (result, parked, sock) = tokio::task::spawn_blocking(move || {
        let r = (|| -> Result<Summary, HandoffError> {
            let mut summary = Summary::default();
            fd::send(
                &mut sock,
                b'H',
                &[],
                &json(&Hello {
                    version: 1,
                    mode,
                    pid: std::process::id(),
                    running,
                })?,
            )?;
            if transfer_buffers {
                for s in &streams {
                    let dump = crate::persist::rewind::export_stream(s)
                        .map_err(|e| HandoffError::Buffer(e.to_string()))?;
                    let mut payload = Vec::with_capacity(2 + s.key().len() + dump.len());
                    payload.extend_from_slice(&(s.key().len() as u16).to_le_bytes());
                    payload.extend_from_slice(s.key().as_bytes());
                    payload.extend_from_slice(&dump);
                    fd::send(&mut sock, b'B', &[], &payload)?;
                    summary.buffers += 1;
                }
            }
            let kinds: Vec<String> = listening.iter().map(|(k, _)| k.to_string()).collect();
            let fds: Vec<_> = listening.iter().map(|(_, f)| *f).collect();
            fd::send(&mut sock, b'L', &fds, &json(&ListeningMsg { kinds })?)?;
            for p in &parked.sources {
                let entry = p.guard.entry();
                let msg = SourceMsg {
                    mount: p.guard.mount().key().to_string(),
                    peer: p.peer,
                    active: p.guard.mount().active_source() == Some(p.guard.id()),
                    info: entry.info.clone(),
                    framer: p.run.framer.state(),
                    chunker: p.run.chunker.state(),
                    format_key: p.run.format_key.clone(),
                    bytes: entry.bytes.load(std::sync::atomic::Ordering::Relaxed),
                };
                fd::send(&mut sock, b'S', &[fd::raw(&p.sock)], &json(&msg)?)?;
                summary.sources += 1;
            }
            for p in &parked.listeners {
                let s = &p.conn.sender;
                let msg = ListenerMsg {
                    stream: s.stream().key().to_string(),
                    output: p.output.to_string(),
                    peer: p.peer,
                    seq: s.pos.seq,
                    offset: s.pos.offset,
                    end: s.end.map(|e| (e.seq, e.offset)),
                    icy: s.icy.as_ref().map(|i| i.state()),
                    lag_allowance: s.lag_allowance,
                    bytes: s.bytes,
                    audio_micros: s.audio_micros,
                    session: p.conn.session_state(),
                };
                fd::send(&mut sock, b'C', &[fd::raw(&p.conn.sock)], &json(&msg)?)?;
                summary.listeners += 1;
            }
            fd::send(&mut sock, b'E', &[], &[])?;
            let (kind, _, payload) = match fd::recv(&mut sock, 4096) {
                Ok(m) => m,
                Err(e) => {
                    // Tell the successor to drop what it prepared (if it
                    // still listens), then resume here.
                    let _ = fd::send(&mut sock, b'X', &[], b"no acknowledgement");
                    return Err(e.into());
                }
            };
            if kind != b'A' {
                return Err(HandoffError::Protocol(format!(
                    "the successor did not acknowledge: {}",
                    String::from_utf8_lossy(&payload)
                )));
            }
            // Everything here is parked for good: let the successor start.
            let _ = fd::send(&mut sock, b'C', &[], &[]);
            Ok(summary)
        })();
        (r, parked, sock)
    })
    .await
    .map_err(|e| HandoffError::Protocol(e.to_string()))?;
    drop(sock);
    match result {
        Ok(summary) => {
            tracing::info!(%summary, took_ms = started.elapsed().as_millis() as u64, "handed off to the successor");
            // Our copies of the descriptors close without a FIN: the successor holds them.
            drop(parked);
            server.mark_handed_off();
            Ok(summary)
        }
        Err(e) => {
            tracing::error!(error = %e, "handoff failed; resuming here, nothing lost");
            server.resume_parked(parked);
            server.end_parking();
            server.set_accepting(true);
            Err(e)
        }
    }
}

/// Connects to the successor at `target`, retrying until `wait` is over.
async fn connect_successor(
    server: &Arc<Server>,
    target: &Path,
    wait: Duration,
) -> Result<UnixStream, HandoffError> {
    use std::os::unix::fs::MetadataExt;
    let deadline = Instant::now() + wait;
    let mut logged = false;
    loop {
        let own = std::fs::metadata(target)
            .ok()
            .is_some_and(|m| server.handoff_offer() == Some((m.dev(), m.ino())));
        if !own {
            let t = target.to_path_buf();
            let r = tokio::task::spawn_blocking(move || UnixStream::connect(t))
                .await
                .map_err(|e| HandoffError::Protocol(e.to_string()))?;
            match r {
                Ok(sock) => return Ok(sock),
                Err(e)
                    if !matches!(
                        e.kind(),
                        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                    ) =>
                {
                    return Err(e.into())
                }
                Err(_) => {}
            }
        }
        if Instant::now() >= deadline {
            return Err(HandoffError::NoSuccessor {
                path: target.display().to_string(),
                waited: wait.as_secs(),
            });
        }
        if !logged {
            tracing::info!(path = %target.display(), own, "waiting for a successor to listen for the handoff");
            logged = true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What a successor received, before adopting it.
struct Received {
    hello: Hello,
    buffers: Vec<(String, Vec<u8>)>,
    listening: Vec<(String, OwnedFd)>,
    sources: Vec<(SourceMsg, OwnedFd)>,
    listeners: Vec<(ListenerMsg, OwnedFd)>,
}

fn receive(sock: &mut UnixStream) -> Result<Received, HandoffError> {
    let (kind, _, payload) = fd::recv(sock, MAX_HELLO)?;
    if kind != b'H' {
        return Err(HandoffError::Protocol("no hello".into()));
    }
    let hello: Hello = serde_json::from_slice(&payload)?;
    tracing::info!(pid = hello.pid, mode = %hello.mode, "a predecessor is handing off");
    let mut r = Received {
        hello,
        buffers: Vec::new(),
        listening: Vec::new(),
        sources: Vec::new(),
        listeners: Vec::new(),
    };
    loop {
        let (kind, mut fds, payload) = fd::recv(sock, MAX_MESSAGE)?;
        match kind {
            b'B' => {
                if payload.len() < 2 {
                    return Err(HandoffError::Protocol("short buffer message".into()));
                }
                let klen = u16::from_le_bytes([payload[0], payload[1]]) as usize;
                let key = payload
                    .get(2..2 + klen)
                    .and_then(|k| std::str::from_utf8(k).ok())
                    .ok_or_else(|| HandoffError::Protocol("bad stream name".into()))?
                    .to_string();
                r.buffers.push((key, payload[2 + klen..].to_vec()));
            }
            b'L' => {
                let msg: ListeningMsg = serde_json::from_slice(&payload)?;
                if msg.kinds.len() != fds.len() {
                    return Err(HandoffError::Protocol(
                        "listening sockets without descriptors".into(),
                    ));
                }
                r.listening.extend(msg.kinds.into_iter().zip(fds));
            }
            b'S' | b'C' => {
                let fd = fds.pop().ok_or_else(|| {
                    HandoffError::Protocol("a connection without its descriptor".into())
                })?;
                if kind == b'S' {
                    r.sources.push((serde_json::from_slice(&payload)?, fd));
                } else {
                    r.listeners.push((serde_json::from_slice(&payload)?, fd));
                }
            }
            b'E' => return Ok(r),
            k => return Err(HandoffError::Protocol(format!("unknown message {k}"))),
        }
    }
}

fn tcp(fd: OwnedFd) -> std::io::Result<tokio::net::TcpStream> {
    let s = std::net::TcpStream::from(fd);
    s.set_nonblocking(true)?;
    tokio::net::TcpStream::from_std(s)
}

fn output_name(s: &str) -> &'static str {
    match s {
        "icy" => "icy",
        "pump" => "pump",
        _ => "raw",
    }
}

/// What a successor has made ready to run, not yet running: nothing drives a
/// socket until the predecessor confirms it has let go ([`commit`]).
struct Prepared {
    listening: Vec<(String, tokio::net::TcpListener)>,
    sources: Vec<crate::source::icecast::ParkedSource>,
    listeners: Vec<crate::output::listener::ParkedListener>,
    summary: Summary,
}

/// Prepares what a predecessor sent: config, buffers, listening sockets,
/// sources and listeners, without starting anything.
fn prepare(server: &Arc<Server>, r: Received) -> Result<Prepared, HandoffError> {
    let mut summary = Summary::default();
    let mut ready = Prepared {
        listening: Vec::new(),
        sources: Vec::new(),
        listeners: Vec::new(),
        summary: Summary::default(),
    };
    let ours = server.config().mode.to_string();
    if r.hello.mode != ours {
        return Err(HandoffError::Refused(format!(
            "the predecessor is a {} server, this one is {ours}",
            r.hello.mode
        )));
    }
    if let Some(running) = r.hello.running {
        // Before anything is adopted, so a failure leaves the predecessor serving.
        let applied = server
            .apply(running.source_mounts, running.streams)
            .map_err(|e| HandoffError::Refused(format!("its configuration: {e}")))?;
        tracing::info!(created = ?applied.created, updated = ?applied.updated, removed = ?applied.removed, "handoff: serving the predecessor's streams and mounts");
    }
    for (key, dump) in r.buffers {
        let Some(stream) = server.stream(&key) else {
            tracing::warn!(stream = %key, "handoff: no such stream here; its buffer is skipped");
            continue;
        };
        let limits = crate::persist::Limits {
            max_total_bytes: Some(dump.len() as u64),
            ..Default::default()
        };
        let (header, records) = crate::persist::read_dump(&dump[..], &limits)
            .map_err(|e| HandoffError::Buffer(e.to_string()))?;
        stream.clear_buffer();
        crate::persist::rewind::restore_into(&stream, header, records, true)
            .map_err(|e| HandoffError::Buffer(e.to_string()))?;
        summary.buffers += 1;
    }
    // The predecessor's buffers are the truth: nothing to wait for.
    server.release_resync_hold("buffers handed over by the predecessor");
    for (kind, fd) in r.listening {
        let l = std::net::TcpListener::from(fd);
        l.set_nonblocking(true)?;
        ready
            .listening
            .push((kind, tokio::net::TcpListener::from_std(l)?));
    }
    for (msg, fd) in r.sources {
        let Some(mount) = server.mount(&msg.mount) else {
            tracing::warn!(mount = %msg.mount, "handoff: no such mount here; the source is closed");
            continue;
        };
        let sock = tcp(fd)?;
        let guard = mount.add_source(msg.info);
        guard
            .entry()
            .bytes
            .store(msg.bytes, std::sync::atomic::Ordering::Relaxed);
        if let Ok(mut k) = guard.entry().format_key.lock() {
            k.clone_from(&msg.format_key);
        }
        if msg.active {
            mount.continue_with(guard.id());
        }
        let codec = match mount.format() {
            streammachine_crds::config::AudioFormat::Mp3 => crate::format::Codec::Mp3,
            streammachine_crds::config::AudioFormat::Aac => crate::format::Codec::Aac,
        };
        let run = Box::new(crate::source::icecast::SourceRun {
            framer: crate::format::Framer::resume(codec, msg.framer),
            chunker: crate::buffer::Chunker::resume(msg.chunker),
            format_key: msg.format_key,
        });
        ready.sources.push(crate::source::icecast::ParkedSource {
            sock,
            peer: msg.peer,
            guard,
            run,
        });
        summary.sources += 1;
    }
    for (msg, fd) in r.listeners {
        let Some(stream) = server.stream(&msg.stream) else {
            tracing::warn!(stream = %msg.stream, "handoff: no such stream here; the listener is closed");
            continue;
        };
        let sock = tcp(fd)?;
        let output = output_name(&msg.output);
        let sent = server
            .metrics()
            .listener_sent_bytes
            .with_label_values(&[stream.key(), output]);
        let icy = msg.icy.map(crate::output::icy::IcyWriter::from_state);
        let mut sender = crate::output::live::Sender::new(
            stream,
            Position {
                seq: msg.seq,
                offset: msg.offset,
            },
            msg.end.map(|(seq, offset)| Position { seq, offset }),
            icy,
            msg.lag_allowance,
            sent,
        );
        sender.bytes = msg.bytes;
        sender.audio_micros = msg.audio_micros;
        let session = msg
            .session
            .and_then(|st| server.analytics().resume(&msg.stream, output, st));
        ready.listeners.push(crate::output::listener::adopted(
            sock, msg.peer, output, sender, session,
        ));
        summary.listeners += 1;
    }
    ready.summary = summary;
    Ok(ready)
}

/// Starts everything prepared: from here on this process drives the sockets.
fn commit(server: &Arc<Server>, ready: Prepared) -> Summary {
    for (kind, l) in ready.listening {
        server.adopt_listening(&kind, l);
    }
    for src in ready.sources {
        src.resume(server);
    }
    for l in ready.listeners {
        crate::output::listener::resume(server, l);
    }
    ready.summary
}

/// Listens on the Unix socket `path`, replacing a stale one a previous process
/// left behind; logs `what` once and gives `None` when it cannot.
/// Only this server's user may connect (mode 0600): whoever connects can
/// take over or hand over every listener.
fn bind(path: &Path, what: &str) -> Option<tokio::net::UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::remove_file(path);
    let listener = tokio::net::UnixListener::bind(path)
        .and_then(|l| {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
            Ok(l)
        })
        .map_err(|e| tracing::error!(path = %path.display(), error = %e, "{what}"))
        .ok()?;
    Some(listener)
}

/// The successor side: waits on `path` for predecessors, while serving.
pub async fn receive_loop(server: Arc<Server>, path: PathBuf) {
    // Offer to take over only once this server can serve (a slave: once it
    // has its master's streams); whoever hands off waits for the socket.
    let mut shutdown = server.shutdown_signal();
    while !server.is_ready() {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(50)) => {}
            _ = shutdown.changed() => return,
        }
    }
    let Some(listener) = bind(&path, "cannot listen for a handoff") else {
        return;
    };
    {
        use std::os::unix::fs::MetadataExt;
        let id = std::fs::metadata(&path).ok().map(|m| (m.dev(), m.ino()));
        server.set_handoff_offer(id);
    }
    tracing::info!(path = %path.display(), "waiting for a predecessor's handoff");
    loop {
        let conn = tokio::select! {
            c = listener.accept() => c,
            _ = shutdown.changed() => return,
        };
        let Ok((conn, _)) = conn else { continue };
        let Ok(mut std_sock) = conn.into_std() else {
            continue;
        };
        if std_sock.set_nonblocking(false).is_err() {
            continue;
        }
        let started = Instant::now();
        let got = tokio::task::spawn_blocking(move || {
            let _ = std_sock.set_read_timeout(Some(Duration::from_secs(60)));
            let r = receive(&mut std_sock);
            (r, std_sock)
        })
        .await;
        let Ok((received, mut std_sock)) = got else {
            continue;
        };
        let outcome = received.and_then(|r| prepare(&server, r));
        match outcome {
            Ok(ready) => {
                // Acknowledge, then start only once the predecessor confirms
                // it let go (or is gone): never both driving one socket.
                let decision = tokio::task::spawn_blocking(move || {
                    fd::send(&mut std_sock, b'A', &[], b"ok")?;
                    match fd::recv(&mut std_sock, 4096) {
                        Ok((b'C', _, _)) => Ok(true),
                        Ok((b'X', _, _)) => Ok(false),
                        Ok((k, _, _)) => Err(HandoffError::Protocol(format!(
                            "expected a commit, got message {k}"
                        ))),
                        // Gone after our acknowledgement: it had let go.
                        Err(_) => Ok(true),
                    }
                })
                .await
                .map_err(|e| HandoffError::Protocol(e.to_string()))
                .and_then(|r| r);
                match decision {
                    Ok(true) => {
                        let summary = commit(&server, ready);
                        server.handoff_settled();
                        tracing::info!(%summary, took_ms = started.elapsed().as_millis() as u64, "took over from the predecessor");
                    }
                    Ok(false) | Err(_) => {
                        // Our copies of the descriptors close without a FIN.
                        drop(ready);
                        tracing::error!(
                            "the predecessor did not take the acknowledgement; it keeps serving"
                        );
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "handoff from the predecessor failed; it keeps serving");
                let msg = e.to_string();
                let _ = tokio::task::spawn_blocking(move || {
                    fd::send(&mut std_sock, b'X', &[], msg.as_bytes())
                })
                .await;
            }
        }
    }
}

/// The control socket, one command a connection:
/// * `HANDOFF <path>` pushes everything to the successor listening at `path`;
/// * `HANDOFF-WAIT <wait s> <drain s> <path>` the same, waiting up to `wait`
///   for a successor to listen there, and draining for `drain` seconds when
///   none does (0: fail);
/// * `DRAIN <seconds>` stops accepting listeners, reports not ready, and
///   waits until the listeners are gone (or the time is up);
/// * `READY` answers `OK` when this server can take listeners: ready (a
///   slave: caught up with its master) and, when it expects a predecessor
///   (`offers_handoff`), listening for its handoff. A Kubernetes exec probe
///   asks this where an HTTP probe on a shared host port could be answered
///   by another process.
pub async fn control_loop(server: Arc<Server>, path: PathBuf, offers_handoff: bool) {
    let Some(listener) = bind(&path, "cannot open the control socket") else {
        return;
    };
    let mut shutdown = server.shutdown_signal();
    loop {
        let conn = tokio::select! {
            c = listener.accept() => c,
            _ = shutdown.changed() => return,
        };
        let Ok((conn, _)) = conn else { continue };
        let server = Arc::clone(&server);
        tokio::spawn(async move {
            let (rd, mut wr) = conn.into_split();
            let mut line = String::new();
            let mut rd = BufReader::new(rd).take(4096);
            if rd.read_line(&mut line).await.is_err() {
                return;
            }
            let reply = command(&server, line.trim(), offers_handoff).await;
            let _ = wr.write_all(reply.as_bytes()).await;
            let _ = wr.shutdown().await;
        });
    }
}

/// Carries out one control command and gives the reply line.
async fn command(server: &Arc<Server>, line: &str, offers_handoff: bool) -> String {
    let (verb, rest) = line.split_once(' ').unwrap_or((line, ""));
    match verb {
        "HANDOFF" => handoff_reply(server, Path::new(rest.trim()), Duration::ZERO, 0).await,
        "HANDOFF-WAIT" => {
            let mut parts = rest.splitn(3, ' ');
            let wait = parts.next().and_then(|w| w.parse().ok());
            let drain = parts.next().and_then(|d| d.parse().ok());
            match (wait, drain, parts.next()) {
                (Some(w), Some(d), Some(p)) => {
                    handoff_reply(server, Path::new(p.trim()), Duration::from_secs(w), d).await
                }
                _ => "ERR usage: HANDOFF-WAIT <wait seconds> <drain seconds> <path>\n".to_string(),
            }
        }
        "DRAIN" => {
            let secs: u64 = rest.trim().parse().unwrap_or(30);
            let left = server.drain(Duration::from_secs(secs)).await;
            format!("OK drained ({left} listeners left)\n")
        }
        "READY" => {
            if !server.is_ready() {
                "ERR not ready (starting, syncing with the master, draining or stopping)\n".into()
            } else if offers_handoff && server.handoff_offer().is_none() {
                "ERR not listening for a handoff yet\n".into()
            } else {
                "OK ready\n".into()
            }
        }
        _ => "ERR unknown command (HANDOFF <path> | HANDOFF-WAIT <wait> <drain> <path> | DRAIN <seconds> | READY)\n"
            .to_string(),
    }
}

async fn handoff_reply(server: &Arc<Server>, target: &Path, wait: Duration, drain: u64) -> String {
    match hand_off(server, target, wait).await {
        Ok(s) => format!("OK handed off {s}\n"),
        Err(e @ HandoffError::NoSuccessor { .. }) if drain > 0 => {
            tracing::warn!(error = %e, seconds = drain, "no successor: draining instead");
            let left = server.drain(Duration::from_secs(drain)).await;
            format!("OK {e}; drained instead ({left} listeners left)\n")
        }
        Err(e) => format!("ERR {e}\n"),
    }
}
