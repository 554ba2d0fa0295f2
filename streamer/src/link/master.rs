//! The master's side of the link: one task per slave, on the admin port.
//!
//! After the slave's hello (which says, per stream, the next chunk it needs)
//! the master sends the configuration, then each stream's missing chunks
//! straight out of the rewind buffer (hours at memory speed), then live chunks
//! as they are appended. Each slave has its own task and cursor: a slow slave
//! only slows itself; one that falls behind the buffer is reset to its oldest
//! chunk.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;

use super::frame::{self, Frame, LinkConfig, Reset};
use super::LinkError;
use crate::stream::Stream;

/// Chunks sent per stream before looking at the other streams.
const BATCH: u64 = 64;
/// A heartbeat after this much silence.
const HEARTBEAT: Duration = Duration::from_secs(5);
/// No frame from the slave for this long: it is gone.
const SLAVE_TIMEOUT: Duration = Duration::from_secs(20);

/// What the master knows of a connected slave.
#[derive(Debug, Clone)]
pub struct SlaveInfo {
    /// Its name (from its hello).
    pub id: String,
    /// Its address.
    pub peer: SocketAddr,
    /// When it connected.
    pub connected_at: SystemTime,
    /// Its last report.
    pub stats: frame::Stats,
    /// When it last said anything.
    pub last_seen: Instant,
}

/// What the master's side of the link needs from the server, and no more:
/// the streams and their configuration, the link secret, the registry of
/// connected slaves, and the resync hold. The server implements it; nothing
/// here names the server.
pub trait MasterHost: Send + Sync + 'static {
    /// The configuration in force (static and live changes together).
    fn effective_config(&self) -> streammachine_config::Config;
    /// Standalone, master or slave.
    fn mode(&self) -> streammachine_config::Mode;
    /// The secret slaves must present.
    fn link_secret(&self) -> Option<&streammachine_config::Secret>;
    /// The stream in service under `key`.
    fn stream(&self, key: &str) -> Option<Arc<crate::stream::Stream>>;
    /// Every stream in service.
    fn streams(&self) -> Vec<Arc<crate::stream::Stream>>;
    /// Counts configuration changes.
    fn config_epoch(&self) -> u64;
    /// Notified on each configuration change.
    fn config_changed(&self) -> &tokio::sync::Notify;
    /// The server's metrics.
    fn metrics(&self) -> &crate::metrics::Metrics;
    /// A slave linked: its slot.
    fn slave_connected(&self, info: SlaveInfo) -> u64;
    /// What a linked slave reported.
    fn slave_stats(&self, slot: u64, stats: Option<super::frame::Stats>);
    /// A slave left.
    fn slave_disconnected(&self, slot: u64);
    /// Ends a restarted master's hold on new audio.
    fn release_resync_hold(&self, why: &str);
}

/// The configuration slaves get: the streams, passwords left out, and formats.
pub fn link_config(server: &dyn MasterHost) -> LinkConfig {
    let c = server.effective_config();
    let formats = server
        .streams()
        .iter()
        .map(|s| (s.key().to_string(), s.format()))
        .collect();
    let streams = c
        .streams
        .into_iter()
        .map(|mut s| {
            s.password = None;
            s.password_file = None;
            s
        })
        .collect();
    LinkConfig { streams, formats }
}

/// How many chunks a slave is behind the master's buffer, per stream it
/// reported (from its last stats).
pub fn chunks_behind(server: &dyn MasterHost, slave: &SlaveInfo) -> BTreeMap<String, u64> {
    slave
        .stats
        .next_seq
        .iter()
        .map(|(key, theirs)| {
            let ours = server.stream(key).map_or(0, |s| s.read_buffer().next_seq());
            (key.clone(), ours.saturating_sub(*theirs))
        })
        .collect()
}

/// Checks a link request: this server is a master with a link secret, and
/// `authorization` carries it. `Err` is the status and reason to answer.
pub fn accept(server: &dyn MasterHost, authorization: Option<&str>) -> Result<(), (u16, String)> {
    let Some(secret) = server.link_secret() else {
        return Err((401, "the slave link is disabled: no link secret (link.secretFile or STREAMMACHINE_LINK_SECRET)".into()));
    };
    if server.mode() != streammachine_config::Mode::Master {
        return Err((
            409,
            format!("this server is {}, not a master", server.mode()),
        ));
    }
    let given = authorization
        .and_then(|a| a.split_once(' '))
        .filter(|(s, _)| s.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim());
    match given {
        Some(t) if crate::source::mount::constant_time_eq(t.as_bytes(), secret.0.as_bytes()) => {
            Ok(())
        }
        Some(_) => Err((401, "wrong link secret".into())),
        None => Err((401, "link secret required".into())),
    }
}

/// Serves one slave whose link request was accepted and answered (`101`),
/// from its hello to the end; `buf` holds what it sent after the request.
#[tracing::instrument(name = "slave_link", skip_all, fields(%peer))]
pub async fn serve(server: Arc<dyn MasterHost>, sock: TcpStream, peer: SocketAddr, buf: BytesMut) {
    let (rd, mut wr) = sock.into_split();
    let mut frames = frame::reader(rd, buf);
    let hello = match tokio::time::timeout(Duration::from_secs(10), frame::next(&mut frames)).await
    {
        Ok(Ok(Frame::Hello(h))) if h.version == frame::VERSION => h,
        Ok(Ok(Frame::Hello(h))) => {
            tracing::warn!(%peer, slave = %h.id, version = h.version, ours = frame::VERSION, "slave link refused: it speaks another link protocol version (upgrade the master and slaves to the same release)");
            return;
        }
        Ok(Ok(other)) => {
            tracing::warn!(%peer, "slave link: expected a hello, got {other:?}");
            return;
        }
        Ok(Err(e)) => {
            tracing::warn!(%peer, error = %e, "slave link: no hello");
            return;
        }
        Err(_) => {
            tracing::warn!(%peer, "slave link: no hello within 10 s");
            return;
        }
    };
    let slot = server.slave_connected(SlaveInfo {
        id: hello.id.clone(),
        peer,
        connected_at: SystemTime::now(),
        stats: frame::Stats::default(),
        last_seen: Instant::now(),
    });
    tracing::info!(slave = %hello.id, %peer, "slave connected");
    // The reader: the slave's reports, until it goes.
    let reader_server = Arc::clone(&server);
    let mut reader = tokio::spawn(async move {
        loop {
            match tokio::time::timeout(SLAVE_TIMEOUT, frame::next(&mut frames)).await {
                Ok(Ok(Frame::Stats(s))) => reader_server.slave_stats(slot, Some(s)),
                Ok(Ok(Frame::Heartbeat)) => reader_server.slave_stats(slot, None),
                Ok(Ok(Frame::Chunk(key, record))) => {
                    // Chunks pulled back from the slave (see `Want`).
                    if let Some(s) = reader_server.stream(&key) {
                        for c in crate::persist::rewind::from_records(vec![record]) {
                            s.push_replica(c);
                        }
                    }
                    reader_server.slave_stats(slot, None);
                }
                Ok(Ok(f)) => {
                    return LinkError::Protocol(format!("unexpected frame from a slave: {f:?}"))
                }
                Ok(Err(e)) => return e,
                Err(_) => return LinkError::Timeout(SLAVE_TIMEOUT.as_secs()),
            }
        }
    });
    let end = tokio::select! {
        r = feed(&server, &mut wr, hello.next_seq, &hello.last) => r.err().unwrap_or(LinkError::Closed),
        r = &mut reader => r.unwrap_or(LinkError::Closed),
    };
    reader.abort();
    server.slave_disconnected(slot);
    match end {
        LinkError::Closed => tracing::info!(slave = %hello.id, %peer, "slave disconnected"),
        e => tracing::warn!(slave = %hello.id, %peer, error = %e, "slave link ended"),
    }
}

/// Sends the configuration and then chunks, forever.
async fn feed(
    server: &Arc<dyn MasterHost>,
    wr: &mut OwnedWriteHalf,
    mut cursors: BTreeMap<String, u64>,
    their_last: &BTreeMap<String, frame::ChunkId>,
) -> Result<(), LinkError> {
    // A slave whose newest chunk is not ours under that number (it kept audio
    // a restarted master numbered differently) starts over from our buffer.
    let mut forced: std::collections::BTreeSet<String> = their_last
        .iter()
        .filter(|(key, id)| {
            server.stream(key).is_some_and(|s| {
                s.read_buffer()
                    .get(id.seq)
                    .is_some_and(|c| frame::ChunkId::of(c) != **id)
            })
        })
        .map(|(key, _)| key.clone())
        .collect();
    for key in &forced {
        tracing::warn!(stream = %key, "a slave holds a different chunk under one of our numbers: resetting it to our buffer");
    }
    let mut config_epoch = server.config_epoch();
    wr.write_all(&frame::config(&link_config(&**server)))
        .await?;
    // A slave holding more than we do (we restarted with an older dump, or
    // none): take it back from the slave instead of making it forget.
    let mut pulling = std::collections::BTreeSet::new();
    for stream in server.streams() {
        let Some(&theirs) = cursors.get(stream.key()) else {
            continue;
        };
        let (empty, first, next) = {
            let b = stream.read_buffer();
            (b.is_empty(), b.first_seq(), b.next_seq())
        };
        if (empty && theirs > 0) || (theirs > next && theirs > first) {
            let from_seq = if empty { 0 } else { next };
            tracing::info!(stream = %stream.key(), from_seq, up_to = theirs, "master behind a slave: pulling the missing chunks from it");
            wr.write_all(&frame::want(&frame::Want {
                stream: stream.key().to_string(),
                from_seq,
            }))
            .await?;
            pulling.insert(stream.key().to_string());
        }
    }
    if pulling.is_empty() {
        server.release_resync_hold("a slave linked and holds nothing the master lacks");
    }
    let mut registered: BTreeMap<String, u64> = BTreeMap::new();
    // Each stream's buffer generation as this slave last saw it.
    let mut generations: BTreeMap<String, u64> = server
        .streams()
        .iter()
        .map(|s| (s.key().to_string(), s.generation()))
        .collect();
    let mut scratch = Vec::with_capacity(256);
    let sent_chunks = server.metrics().link_sent_chunks.clone();
    loop {
        // Registered before the epoch is looked at, so a change between the
        // look and the wait below wakes it (notify_waiters keeps no permit).
        let changed = server.config_changed().notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        if server.config_epoch() != config_epoch {
            config_epoch = server.config_epoch();
            wr.write_all(&frame::config(&link_config(&**server)))
                .await?;
        }
        let streams = server.streams();
        let epochs: Vec<(Arc<Stream>, u64)> =
            streams.iter().map(|s| (Arc::clone(s), s.epoch())).collect();
        let mut sent = false;
        for stream in &streams {
            let mut pulled_back = false;
            let (reset, chunks) = {
                let b = stream.read_buffer();
                let (first, next) = (b.first_seq(), b.next_seq());
                let cursor = cursors.entry(stream.key().to_string()).or_insert(first);
                if pulling.contains(stream.key()) {
                    if b.is_empty() || *cursor > next {
                        // Still coming back from the slave.
                        continue;
                    }
                    pulling.remove(stream.key());
                    pulled_back = pulling.is_empty();
                }
                // Behind the buffer (fell behind, or never had any), ahead of
                // it (the master's numbering restarted), or the buffer was
                // emptied or replaced (clear, import): start from the oldest.
                let generation = stream.generation();
                let replaced = generations
                    .insert(stream.key().to_string(), generation)
                    .is_some_and(|g| g != generation);
                let reset =
                    *cursor < first || *cursor > next || replaced || forced.remove(stream.key());
                if reset {
                    *cursor = first;
                }
                let end = next.min(*cursor + BATCH);
                let chunks: Vec<_> = b.range(*cursor..end).cloned().collect();
                (reset.then_some(*cursor), chunks)
            };
            if pulled_back {
                // Outside the buffer lock: releasing appends to the buffers.
                server.release_resync_hold("the audio a slave held was pulled back");
            }
            if let Some(next_seq) = reset {
                wr.write_all(&frame::reset(&Reset {
                    stream: stream.key().to_string(),
                    next_seq,
                }))
                .await?;
            }
            for c in chunks {
                super::write_chunk(wr, stream.key(), &c, &mut scratch).await?;
                if let Some(cursor) = cursors.get_mut(stream.key()) {
                    *cursor = c.seq + 1;
                }
                sent_chunks.inc();
                sent = true;
            }
        }
        if sent {
            continue;
        }
        // Caught up with every stream: wait for an append, a config change
        // (its epoch is checked above after any wake), or send a heartbeat.
        let wait = std::future::poll_fn(|cx| {
            for (s, e) in &epochs {
                let r = registered.entry(s.key().to_string()).or_insert(u64::MAX);
                if !s.wait(cx.waker(), *e, r) {
                    return std::task::Poll::Ready(());
                }
            }
            std::task::Poll::Pending
        });
        tokio::select! {
            () = wait => {}
            () = tokio::time::sleep(HEARTBEAT) => wr.write_all(&frame::heartbeat()).await?,
            () = &mut changed => {}
        }
    }
}
