//! Sending a stream to one listener: from a start position, chunk after chunk,
//! raw or with ICY metadata, until the client leaves, falls too far behind, or
//! (for a pump) the requested span is sent.
//!
//! The listener's whole state is its position (chunk seq + byte offset), its
//! ICY writer and its lag allowance; nothing is copied per listener: each write
//! goes straight from the shared chunk bytes to the socket.
//!
//! The send loop is a hand-written poll function rather than an `async fn`
//! with `select!`: the futures of a select (a watch `changed()`, a socket
//! `readable()`) cost hundreds of bytes per listener, while waiting here costs
//! one waker on the stream's wait list. Memory per listener is the figure that
//! decides how many listeners a box holds.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use prometheus::IntCounter;
use tokio::io::AsyncWrite;
use tokio::net::TcpStream;

use super::icy::{IcyWriter, Plan};
use crate::buffer::{Chunk, Position};
use crate::stream::Stream;

/// Why a listener's response ended.
#[derive(Debug, thiserror::Error)]
pub enum Ended {
    /// A pump sent everything it promised.
    #[error("complete")]
    Complete,
    /// The client closed the connection.
    #[error("client closed the connection")]
    Closed,
    /// The client's position was evicted from the buffer before it was sent.
    #[error("fell behind the oldest audio in the buffer")]
    FellBehind,
    /// The client's unsent backlog grew beyond the stream's `maxBufferBytes`.
    #[error("too slow: {backlog} bytes unsent beyond its start lag (limit {limit})")]
    TooSlow {
        /// Unsent bytes beyond the allowance.
        backlog: u64,
        /// The stream's limit.
        limit: u64,
    },
    /// The server is shutting down.
    #[error("server shutting down")]
    Shutdown,
    /// An admin disconnected it (`/admin/killclient`).
    #[error("disconnected by an admin")]
    Kicked,
    /// The time its listener authentication allowed is over
    /// (`icecast-auth-timelimit`).
    #[error("its listening time limit is over")]
    TimeLimit,
    /// A socket error.
    #[error("write error: {0}")]
    Io(#[from] io::Error),
}

impl Ended {
    /// Label for the disconnection metric.
    pub fn reason(&self) -> &'static str {
        match self {
            Ended::Complete => "complete",
            Ended::Closed => "closed",
            Ended::FellBehind => "fell_behind",
            Ended::TooSlow { .. } => "too_slow",
            Ended::Shutdown => "shutdown",
            Ended::Kicked => "kicked",
            Ended::TimeLimit => "time_limit",
            Ended::Io(_) => "error",
        }
    }
}

/// Loop iterations per poll before yielding to other tasks (a pump or a
/// rewound listener can have hours of audio ready to write).
const POLL_BUDGET: u32 = 32;

/// One listener's send state.
#[derive(Debug)]
pub struct Sender {
    stream: Arc<Stream>,
    /// Next byte to send.
    pub pos: Position,
    /// Where a pump ends.
    pub end: Option<Position>,
    /// ICY writer, for ICY listeners.
    pub icy: Option<IcyWriter>,
    /// Bytes between the start and live at connect: the backlog the listener
    /// is allowed; growth beyond it by more than `maxBufferBytes` means it is
    /// not keeping up.
    pub lag_allowance: u64,
    sent: IntCounter,
    current: Option<Arc<Chunk>>,
    registered: u64,
    /// Bytes written to this listener.
    pub bytes: u64,
    /// Audio written to this listener, µs (for analytics).
    pub audio_micros: u64,
}

impl Sender {
    /// A sender starting at `pos`.
    pub fn new(
        stream: Arc<Stream>,
        pos: Position,
        end: Option<Position>,
        icy: Option<IcyWriter>,
        lag_allowance: u64,
        sent: IntCounter,
    ) -> Self {
        Sender {
            stream,
            pos,
            end,
            icy,
            lag_allowance,
            sent,
            current: None,
            registered: u64::MAX,
            bytes: 0,
            audio_micros: 0,
        }
    }

    /// Seconds behind live and the wall-clock time of the audio being sent
    /// (analytics), when known.
    pub fn position(&self) -> Option<(f64, i64)> {
        let c = self.current.as_ref()?;
        let len = c.data().len().max(1) as u64;
        let offset = if c.seq == self.pos.seq {
            u64::from(self.pos.offset)
        } else {
            len
        };
        let into = c.duration_micros() * offset / len;
        let here = c.audio_start_micros + into;
        let behind = self.stream.audio_end().saturating_sub(here);
        Some((
            behind as f64 / 1e6,
            c.ts_micros + i64::try_from(into).unwrap_or(0),
        ))
    }

    /// The stream it reads.
    pub fn stream(&self) -> &Arc<Stream> {
        &self.stream
    }

    /// Reads `to` from now on, from `pos` (a frame boundary there), with
    /// `lag` as its new backlog allowance; the ICY phase runs on.
    pub fn switch(&mut self, to: Arc<Stream>, pos: Position, lag: u64, sent: IntCounter) {
        self.stream = to;
        self.pos = pos;
        self.lag_allowance = lag;
        self.sent = sent;
        self.current = None;
        self.registered = u64::MAX;
    }

    fn backlog_check(&self, chunk: &Chunk) -> Result<(), Ended> {
        if chunk.seq < self.stream.first_seq() {
            // Still writing a chunk the buffer has already let go of.
            return Err(Ended::FellBehind);
        }
        let here = chunk.byte_start + u64::from(self.pos.offset);
        let lag = self.stream.byte_end().saturating_sub(here);
        let limit = self.stream.config().max_buffer_bytes;
        let backlog = lag.saturating_sub(self.lag_allowance);
        if backlog > limit {
            return Err(Ended::TooSlow { backlog, limit });
        }
        Ok(())
    }

    /// Sends until the response ends.
    pub async fn run(&mut self, sock: &mut TcpStream) -> Ended {
        std::future::poll_fn(|cx| self.poll_run(sock, cx)).await
    }

    /// One poll of the send loop.
    pub fn poll_run(&mut self, sock: &mut TcpStream, cx: &mut Context<'_>) -> Poll<Ended> {
        let r = self.step(sock, cx);
        if r.is_ready() {
            self.stream.unwait(cx.waker(), self.registered);
        }
        r
    }

    fn step(&mut self, sock: &mut TcpStream, cx: &mut Context<'_>) -> Poll<Ended> {
        for _ in 0..POLL_BUDGET {
            // Read the epoch before looking, so an append after the look wakes us.
            let epoch = self.stream.epoch();
            if self.stream.is_closed() {
                return Poll::Ready(Ended::Shutdown);
            }
            if self.end.is_some_and(|e| self.pos >= e) {
                return Poll::Ready(Ended::Complete);
            }
            if self.current.as_ref().is_none_or(|c| c.seq != self.pos.seq) {
                let b = self.stream.read_buffer();
                // An empty buffer cannot say a position is gone (a slave that
                // took listeners over before its replica arrived): wait.
                if self.pos.seq < b.first_seq() && !b.is_empty() {
                    return Poll::Ready(Ended::FellBehind);
                }
                // Keep the last chunk when the next is not there yet: it says
                // where this listener is (analytics) while it waits.
                if let Some(next) = b.get(self.pos.seq) {
                    self.current = Some(Arc::clone(next));
                }
            }
            let Some(chunk) = self.current.clone().filter(|c| c.seq == self.pos.seq) else {
                // Caught up: wait for audio, and notice a client that leaves
                // meanwhile (a source can be away for a long time).
                match sock.poll_read_ready(cx) {
                    Poll::Ready(Ok(())) => {
                        let mut scratch = [0u8; 64];
                        match sock.try_read(&mut scratch) {
                            Ok(0) => return Poll::Ready(Ended::Closed),
                            // Whatever a client sends is ignored; look again
                            // (which also re-arms the readiness wake-up).
                            Ok(_) => continue,
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                            Err(e) => return Poll::Ready(Ended::Io(e)),
                        }
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Ended::Io(e)),
                    Poll::Pending => {}
                }
                if self.stream.wait(cx.waker(), epoch, &mut self.registered) {
                    return Poll::Pending;
                }
                continue;
            };
            let data = chunk.data();
            let stop = match self.end {
                Some(e) if e.seq == chunk.seq => e.offset as usize,
                _ => data.len(),
            };
            let offset = self.pos.offset as usize;
            if offset >= stop {
                if stop == data.len() {
                    self.pos = Position {
                        seq: chunk.seq + 1,
                        offset: 0,
                    };
                }
                continue;
            }
            let audio = &data[offset..stop];
            let plan = match &self.icy {
                Some(icy) => icy.plan(audio.len(), &chunk.title),
                None => Plan::audio(audio.len()),
            };
            let (slices, count) = plan.slices(audio);
            match Pin::new(&mut *sock).poll_write_vectored(cx, &slices[..count]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Ended::Closed),
                Poll::Ready(Ok(n)) => {
                    self.sent.inc_by(n as u64);
                    self.bytes += n as u64;
                    let audio_bytes = match &mut self.icy {
                        Some(icy) => icy.advance(&plan, n),
                        None => n,
                    };
                    self.audio_micros +=
                        chunk.duration_micros() * audio_bytes as u64 / data.len().max(1) as u64;
                    self.pos.offset += audio_bytes as u32;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Ended::Io(e)),
                Poll::Pending => {
                    // The socket is full: wake at the next append too, to see
                    // whether this listener is falling too far behind.
                    if let Err(e) = self.backlog_check(&chunk) {
                        return Poll::Ready(e);
                    }
                    if self.stream.wait(cx.waker(), epoch, &mut self.registered) {
                        return Poll::Pending;
                    }
                }
            }
        }
        // Budget spent with work left: let other listeners run.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}
