//! Sending a stream to one listener: from a start position, chunk after chunk,
//! raw or with ICY metadata, until the client leaves, falls too far behind, or
//! (for a pump) the requested span is sent.
//!
//! The listener's whole state is its position (chunk seq + byte offset), its
//! ICY writer and its lag allowance; nothing is copied per listener: each write
//! goes straight from the shared chunk bytes to the socket.

use std::io;
use std::sync::Arc;

use prometheus::IntCounter;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::icy::IcyWriter;
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
            Ended::Io(_) => "error",
        }
    }
}

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
        }
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
    pub async fn run(
        &mut self,
        sock: &mut TcpStream,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Ended {
        let mut live = self.stream.subscribe();
        loop {
            if self.end.is_some_and(|e| self.pos >= e) {
                return Ended::Complete;
            }
            let chunk = {
                let b = self.stream.read_buffer();
                if self.pos.seq < b.first_seq() {
                    return Ended::FellBehind;
                }
                live.borrow_and_update();
                b.get(self.pos.seq).cloned()
            };
            let Some(chunk) = chunk else {
                // Caught up: wait for audio, and notice a client that leaves
                // meanwhile (a source can be away for a long time).
                tokio::select! {
                    r = live.changed() => if r.is_err() { return Ended::Shutdown },
                    _ = shutdown.changed() => return Ended::Shutdown,
                    r = sock.readable() => {
                        if let Err(e) = r {
                            return Ended::Io(e);
                        }
                        let mut scratch = [0u8; 256];
                        match sock.try_read(&mut scratch) {
                            Ok(0) => return Ended::Closed,
                            Ok(_) => {} // a client may send anything; it is ignored
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                            Err(e) => return Ended::Io(e),
                        }
                    }
                }
                continue;
            };
            if let Err(e) = self.send_chunk(&chunk, sock, &mut live, shutdown).await {
                return e;
            }
        }
    }

    /// Writes the rest of `chunk` (up to the pump end), then moves to the next chunk.
    async fn send_chunk(
        &mut self,
        chunk: &Chunk,
        sock: &mut TcpStream,
        live: &mut watch::Receiver<u64>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), Ended> {
        let data = chunk.data();
        let stop = match self.end {
            Some(e) if e.seq == chunk.seq => e.offset as usize,
            _ => data.len(),
        };
        while (self.pos.offset as usize) < stop {
            let audio = &data[self.pos.offset as usize..stop];
            let written = match &self.icy {
                None => {
                    tokio::select! {
                        r = sock.write(audio) => {
                            let n = r?;
                            if n == 0 {
                                return Err(Ended::Closed);
                            }
                            self.sent.inc_by(n as u64);
                            n
                        }
                        r = live.changed() => {
                            if r.is_err() { return Err(Ended::Shutdown) }
                            self.backlog_check(chunk)?;
                            0
                        }
                        _ = shutdown.changed() => return Err(Ended::Shutdown),
                    }
                }
                Some(icy) => {
                    let plan = icy.plan(audio.len(), &chunk.title);
                    let slices = plan.slices(audio);
                    tokio::select! {
                        r = sock.write_vectored(&slices) => {
                            let n = r?;
                            if n == 0 {
                                return Err(Ended::Closed);
                            }
                            self.sent.inc_by(n as u64);
                            match &mut self.icy {
                                Some(icy) => icy.advance(&plan, n),
                                None => 0,
                            }
                        }
                        r = live.changed() => {
                            if r.is_err() { return Err(Ended::Shutdown) }
                            self.backlog_check(chunk)?;
                            0
                        }
                        _ = shutdown.changed() => return Err(Ended::Shutdown),
                    }
                }
            };
            self.pos.offset += written as u32;
        }
        if stop == data.len() {
            self.pos = Position {
                seq: chunk.seq + 1,
                offset: 0,
            };
        }
        Ok(())
    }
}

/// Writes the response head and flushes it.
pub async fn write_head(sock: &mut TcpStream, head: &[u8]) -> Result<(), Ended> {
    sock.write_all(head).await?;
    Ok(())
}
