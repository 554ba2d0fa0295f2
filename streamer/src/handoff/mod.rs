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
//! length-prefixed payload — `H` hello (JSON), `M` memory files holding the
//! buffers' audio (their descriptors), `R` a stream's buffer by reference
//! into them, or `B` a stream's buffer copied (dump format) where its audio
//! is in no memory file (see [`buffers`]), `L` the listening sockets, `S` a
//! source, `C` a listener (JSON state + its descriptor), `E` end; the successor prepares everything and
//! answers `A` (ack) or `X` (refused); on `A` the predecessor, parked for
//! good, sends `C` (commit) and only then does the successor start driving
//! the sockets (`X` from the predecessor: it resumes, the successor drops
//! what it prepared).

mod buffers;
mod control;
pub mod fd;
mod receive;

pub use control::control_loop;
use receive::*;
pub use receive::{offer, receive_loop, Offer};

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
use crate::source::SourceInfo;

/// Largest single message (a stream's buffer: 8 h at 320 kbit/s is 1.2 GB).
const MAX_MESSAGE: u64 = 4 * 1024 * 1024 * 1024;

/// Connections paused for a handoff.
#[derive(Debug, Default)]
pub struct Parked {
    /// Listeners, at an exact byte.
    pub listeners: Vec<crate::output::listener::ParkedListener>,
    /// Sources, with their parsing state.
    pub sources: Vec<crate::source::icecast::ParkedSource>,
}

/// What a handoff needs from the server, on either side: its streams and
/// mounts, parking and resuming connections, its listening sockets, the
/// drain, the offer of a handoff socket. The server implements it; nothing
/// here names the server. (A handoff moves the whole process's state, so
/// this is the widest of the host traits.)
pub trait HandoffHost: Send + Sync + 'static {
    /// Standalone, master or slave.
    fn mode(&self) -> streammachine_config::Mode;
    /// The configuration in force.
    fn effective_config(&self) -> streammachine_config::Config;
    /// Makes `mounts` and `streams` the ones in service.
    fn apply(
        &self,
        mounts: Vec<streammachine_config::SourceMountConfig>,
        streams: Vec<streammachine_config::StreamConfig>,
    ) -> Result<crate::store::Applied, crate::error::ServerError>;
    /// The stream in service under `key`.
    fn stream(&self, key: &str) -> Option<Arc<crate::stream::Stream>>;
    /// Every stream in service.
    fn streams(&self) -> Vec<Arc<crate::stream::Stream>>;
    /// The mount in service under `key`.
    fn mount(&self, key: &str) -> Option<Arc<crate::source::Mount>>;
    /// The server's metrics.
    fn metrics(&self) -> &crate::metrics::Metrics;
    /// Listener analytics (sessions carried over).
    fn analytics(&self) -> &crate::analytics::Analytics;
    /// Ready to serve.
    fn is_ready(&self) -> bool;
    /// Turns true when the server shuts down.
    fn shutdown_signal(&self) -> tokio::sync::watch::Receiver<bool>;
    /// Ends a restarted master's hold on new audio.
    fn release_resync_hold(&self, why: &str);
    /// Opens or closes the accept loops.
    fn set_accepting(&self, on: bool);
    /// Asks every connection to park.
    fn begin_parking(&self);
    /// Connections resume where they parked.
    fn end_parking(&self);
    /// How many listeners and sources should park.
    fn expected_parked(&self) -> (usize, usize);
    /// How many have parked.
    fn parked_counts(&self) -> (usize, usize);
    /// The parked connections, taken.
    fn take_parked(&self) -> Parked;
    /// Resumes parked connections here (the handoff failed).
    fn resume_parked(self: Arc<Self>, parked: Parked);
    /// The sockets the server listens on.
    fn listening_sockets(&self) -> Vec<(&'static str, Arc<tokio::net::TcpListener>)>;
    /// Serves a listening socket inherited from the predecessor.
    fn adopt_listening(self: Arc<Self>, kind: &str, l: tokio::net::TcpListener);
    /// The successor took over: this process stops.
    fn mark_handed_off(&self);
    /// The takeover is complete: accept loops open.
    fn handoff_settled(&self);
    /// Drains: new listeners turned away, the connected ones served up to `max`.
    fn drain(
        &self,
        max: std::time::Duration,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = usize> + Send + '_>>;
    /// The handoff socket this server offers (device, inode), if any.
    fn handoff_offer(&self) -> Option<(u64, u64)>;
    /// Records the handoff socket this server offers.
    fn set_handoff_offer(&self, id: Option<(u64, u64)>);
    /// The server as the source side sees it.
    fn source_host(self: Arc<Self>) -> Arc<dyn crate::source::SourceHost>;
    /// The server as the listener side sees it.
    fn output_host(self: Arc<Self>) -> Arc<dyn crate::output::OutputHost>;
}

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
    source_mounts: Vec<streammachine_config::SourceMountConfig>,
    streams: Vec<streammachine_config::StreamConfig>,
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
    /// Its place in the mount's line (`inputs` priority).
    #[serde(default)]
    priority: i32,
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
    /// Its roster id, User-Agent and connection time (unix ms), kept.
    #[serde(default)]
    id: Option<u64>,
    #[serde(default)]
    user_agent: Option<String>,
    #[serde(default)]
    connected_ms: Option<u64>,
    /// Its `listenerAuth` ticket: the successor says `listener_remove`.
    #[serde(default)]
    auth: Option<crate::output::auth::Ticket>,
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
    server: &Arc<dyn HandoffHost>,
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
    let transfer_buffers = server.mode() != streammachine_config::Mode::Slave;
    let streams = server.streams();
    let mode = server.mode().to_string();
    let running = transfer_buffers.then(|| {
        let c = server.effective_config();
        Running {
            source_mounts: c.source_mounts,
            streams: c.streams,
        }
    });
    // From here the buffers' memory may be mapped by the successor: nothing
    // of it is given back (or reused) unless the handoff fails.
    let frozen = transfer_buffers.then(crate::buffer::arena::freeze);
    let (result, parked, sock, frozen) = tokio::task::spawn_blocking(move || {
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
            if let Some(frozen) = &frozen {
                let (sent, copied) = buffers::send(&mut sock, &streams, frozen)?;
                summary.buffers += sent;
                if copied > 0 {
                    tracing::warn!(copied, "handoff: buffers outside memory files were copied");
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
                    priority: entry.priority,
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
                    id: Some(p.conn.info().id),
                    user_agent: p.conn.info().user_agent.clone(),
                    connected_ms: p
                        .conn
                        .info()
                        .connected_at
                        .duration_since(std::time::UNIX_EPOCH)
                        .ok()
                        .map(|d| d.as_millis() as u64),
                    auth: p.conn.auth.as_ref().map(|a| a.ticket.clone()),
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
        (r, parked, sock, frozen)
    })
    .await
    .map_err(|e| HandoffError::Protocol(e.to_string()))?;
    drop(sock);
    match result {
        Ok(summary) => {
            tracing::info!(%summary, took_ms = started.elapsed().as_millis() as u64, "handed off to the successor");
            // Our copies of the descriptors close without a FIN: the successor holds them.
            drop(parked);
            // The buffers' memory is the successor's now: never given back here.
            drop(frozen);
            server.mark_handed_off();
            Ok(summary)
        }
        Err(e) => {
            tracing::error!(error = %e, "handoff failed; resuming here, nothing lost");
            if let Some(f) = frozen {
                f.thaw();
            }
            Arc::clone(server).resume_parked(parked);
            server.end_parking();
            server.set_accepting(true);
            Err(e)
        }
    }
}

/// Connects to the successor at `target`, retrying until `wait` is over.
async fn connect_successor(
    server: &Arc<dyn HandoffHost>,
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
