//! The master↔slave link (DESIGN.md §4).
//!
//! One long-lived connection per slave: an HTTP upgrade on the master's admin
//! port (`GET /link`, `Upgrade: streammachine-link/1`, `Authorization: Bearer
//! <link secret>`), then length-delimited binary frames ([`frame`]) both ways.
//! Chunks keep their sequence numbers, times and HLS numbers, so a slave's
//! buffer is an exact replica and re-sync after any break asks for exactly
//! what is missing.

pub mod catchup;
pub mod frame;
pub mod master;
pub mod slave;

/// The protocol name in the link's `Upgrade` header.
pub const UPGRADE: &str = "streammachine-link/1";

/// Why a link ended or could not start.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The peer closed the connection.
    #[error("connection closed")]
    Closed,
    /// A socket error.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// A frame that cannot be read.
    #[error(transparent)]
    Frame(#[from] frame::FrameError),
    /// Silence beyond the limit.
    #[error("nothing received for {0} s")]
    Timeout(u64),
    /// The master said no.
    #[error("refused by the master: {0}")]
    Refused(String),
    /// The peer broke the protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
}

/// Writes one chunk frame: its head (built in `scratch`), then the audio bytes
/// straight from the shared buffer. Both ends send chunks this way: the master
/// feeding a slave, a slave giving a restarted master back what it lacks.
async fn write_chunk(
    wr: &mut (impl tokio::io::AsyncWriteExt + Unpin),
    stream: &str,
    chunk: &crate::buffer::Chunk,
    scratch: &mut Vec<u8>,
) -> Result<(), LinkError> {
    let record = crate::persist::rewind::record_of(chunk);
    crate::persist::encode_record_head(&record, &crate::persist::Limits::default(), scratch)
        .map_err(|e| LinkError::Protocol(e.to_string()))?;
    wr.write_all(&frame::chunk_head(stream, scratch, chunk.data().len()))
        .await?;
    wr.write_all(chunk.data()).await?;
    Ok(())
}
