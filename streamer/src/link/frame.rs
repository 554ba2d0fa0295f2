//! Link frames: `[u32 LE length][u8 type][payload]`, the length counting the
//! type byte and the payload. Decoding is incremental (the `Incomplete` state
//! is `Ok(None)`), and bounded: a frame longer than [`MAX_FRAME`] is an error
//! before anything is allocated.

use bytes::{Buf, BytesMut};
use serde::{Deserialize, Serialize};
use streammachine_config::StreamConfig;

use crate::persist::{decode_record, DumpChunk, Limits};

/// Largest frame (a chunk of 16 MiB of audio plus its record head fits).
pub const MAX_FRAME: usize = 17 * 1024 * 1024;

/// Frame type bytes.
mod kind {
    pub const HELLO: u8 = 1;
    pub const CONFIG: u8 = 2;
    pub const CHUNK: u8 = 3;
    pub const RESET: u8 = 4;
    pub const STATS: u8 = 5;
    pub const HEARTBEAT: u8 = 6;
    pub const WANT: u8 = 7;
}

/// Errors reading frames.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// Declared length beyond the limit.
    #[error("frame of {0} bytes is larger than the {MAX_FRAME}-byte limit")]
    TooLarge(usize),
    /// Length 0 (no type byte).
    #[error("empty frame")]
    Empty,
    /// Unknown type byte.
    #[error("unknown frame type {0}")]
    UnknownType(u8),
    /// A JSON payload that does not parse.
    #[error("bad {what} frame: {error}")]
    Json {
        /// Which frame.
        what: &'static str,
        /// The parse error.
        error: serde_json::Error,
    },
    /// A chunk frame that does not parse.
    #[error("bad chunk frame: {0}")]
    Chunk(String),
}

/// The link protocol version this build speaks.
pub const VERSION: u32 = 1;

/// The slave's greeting: who it is and what it already holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Hello {
    /// Protocol version (1).
    pub version: u32,
    /// A name for logs and status (the slave's host name, pod name…).
    pub id: String,
    /// Per stream, the sequence number of the next chunk it needs
    /// (absent: it holds nothing of that stream).
    pub next_seq: std::collections::BTreeMap<String, u64>,
    /// Per stream, its newest chunk, so the master can tell whether that
    /// chunk is also the master's (after a restart it may not be).
    #[serde(default)]
    pub last: std::collections::BTreeMap<String, ChunkId>,
}

/// Enough of a chunk to tell two chunks of one number apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChunkId {
    /// Sequence number.
    pub seq: u64,
    /// Wall-clock start, µs since the epoch.
    pub ts_micros: i64,
    /// Audio bytes.
    pub len: u64,
}

impl ChunkId {
    /// The id of `c`.
    pub fn of(c: &crate::buffer::Chunk) -> ChunkId {
        ChunkId {
            seq: c.seq,
            ts_micros: c.ts_micros,
            len: c.data().len() as u64,
        }
    }
}

/// The master's streams, as slaves serve them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LinkConfig {
    /// The streams (passwords left out).
    pub streams: Vec<StreamConfig>,
    /// Each stream's audio format (`mp3` | `aac`): its mount's.
    pub formats: std::collections::BTreeMap<String, streammachine_config::AudioFormat>,
}

/// A slave must drop what it holds of a stream and continue at `next_seq`
/// (it fell behind the master's buffer, or the master's buffer restarted).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Reset {
    /// The stream.
    pub stream: String,
    /// Where the chunks continue.
    pub next_seq: u64,
}

/// Master → slave: send me your chunks of `stream` from `from_seq` on (a
/// master that restarted with less than its slaves hold takes it back from
/// them: DESIGN.md §5, "buffers survive … through re-sync from the slaves").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Want {
    /// The stream.
    pub stream: String,
    /// The first chunk wanted.
    pub from_seq: u64,
}

/// What a slave reports back.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    /// Listeners per stream.
    pub listeners: std::collections::BTreeMap<String, u64>,
    /// Next sequence number per stream.
    pub next_seq: std::collections::BTreeMap<String, u64>,
}

/// A decoded frame.
#[derive(Debug)]
pub enum Frame {
    /// Slave → master, first.
    Hello(Hello),
    /// Master → slave.
    Config(LinkConfig),
    /// Master → slave: a chunk of a stream.
    Chunk(String, DumpChunk),
    /// Master → slave.
    Reset(Reset),
    /// Slave → master.
    Stats(Stats),
    /// Either way, when idle.
    Heartbeat,
    /// Master → slave: send chunks back.
    Want(Want),
}

fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + payload.len());
    out.extend_from_slice(&((payload.len() + 1) as u32).to_le_bytes());
    out.push(kind);
    out.extend_from_slice(payload);
    out
}

fn json_frame<T: Serialize>(kind: u8, v: &T) -> Vec<u8> {
    frame(kind, &serde_json::to_vec(v).unwrap_or_default())
}

/// Encodes a hello.
pub fn hello(h: &Hello) -> Vec<u8> {
    json_frame(kind::HELLO, h)
}

/// Encodes a config.
pub fn config(c: &LinkConfig) -> Vec<u8> {
    json_frame(kind::CONFIG, c)
}

/// Encodes a reset.
pub fn reset(r: &Reset) -> Vec<u8> {
    json_frame(kind::RESET, r)
}

/// Encodes stats.
pub fn stats(s: &Stats) -> Vec<u8> {
    json_frame(kind::STATS, s)
}

/// Encodes a want.
pub fn want(w: &Want) -> Vec<u8> {
    json_frame(kind::WANT, w)
}

/// Encodes a heartbeat.
pub fn heartbeat() -> Vec<u8> {
    frame(kind::HEARTBEAT, &[])
}

/// Encodes a chunk frame's head: everything but the audio bytes, which follow
/// it on the wire (written from the shared buffer, not copied).
pub fn chunk_head(stream: &str, record_head: &[u8], data_len: usize) -> Vec<u8> {
    let key = stream.as_bytes();
    let payload_len = 2 + key.len() + record_head.len() + data_len;
    let mut out = Vec::with_capacity(5 + 2 + key.len() + record_head.len());
    out.extend_from_slice(&((payload_len + 1) as u32).to_le_bytes());
    out.push(kind::CHUNK);
    out.extend_from_slice(&(key.len() as u16).to_le_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(record_head);
    out
}

/// Reads the next frame from `io`, buffering in `buf` (which may hold the
/// start of the following frame afterwards).
pub async fn read(
    io: &mut (impl tokio::io::AsyncReadExt + Unpin),
    buf: &mut BytesMut,
) -> Result<Frame, super::LinkError> {
    loop {
        if let Some(f) = decode(buf)? {
            return Ok(f);
        }
        if io.read_buf(buf).await? == 0 {
            return Err(super::LinkError::Closed);
        }
    }
}

/// Takes one complete frame off the front of `buf`, if there is one.
pub fn decode(buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    if len == 0 {
        return Err(FrameError::Empty);
    }
    if buf.len() < 4 + len {
        buf.reserve(4 + len - buf.len());
        return Ok(None);
    }
    buf.advance(4);
    let body = buf.split_to(len);
    let (kind, payload) = (body[0], &body[1..]);
    let json = |what| move |error| FrameError::Json { what, error };
    Ok(Some(match kind {
        kind::HELLO => Frame::Hello(serde_json::from_slice(payload).map_err(json("hello"))?),
        kind::CONFIG => Frame::Config(serde_json::from_slice(payload).map_err(json("config"))?),
        kind::RESET => Frame::Reset(serde_json::from_slice(payload).map_err(json("reset"))?),
        kind::STATS => Frame::Stats(serde_json::from_slice(payload).map_err(json("stats"))?),
        kind::HEARTBEAT => Frame::Heartbeat,
        kind::WANT => Frame::Want(serde_json::from_slice(payload).map_err(json("want"))?),
        kind::CHUNK => {
            if payload.len() < 2 {
                return Err(FrameError::Chunk("no stream name".into()));
            }
            let klen = u16::from_le_bytes([payload[0], payload[1]]) as usize;
            let key = payload
                .get(2..2 + klen)
                .and_then(|k| std::str::from_utf8(k).ok())
                .ok_or_else(|| FrameError::Chunk("bad stream name".into()))?
                .to_string();
            let chunk = decode_record(&payload[2 + klen..], &Limits::default())
                .map_err(|e| FrameError::Chunk(e.to_string()))?;
            Frame::Chunk(key, chunk)
        }
        k => return Err(FrameError::UnknownType(k)),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::persist::encode_record_head;

    #[test]
    fn frames_round_trip_in_pieces() {
        let c = DumpChunk {
            seq: 5,
            ts_micros: 1,
            audio_start_micros: 2,
            byte_start: 3,
            discontinuity: false,
            hls_segment: 4,
            hls_disc_seq: 0,
            hls_segment_start: true,
            samples_per_frame: 1152,
            sample_rate: 44_100,
            frames: vec![0],
            title: "t".into(),
            data: bytes::Bytes::from(vec![9u8; 50]),
        };
        let mut head = Vec::new();
        encode_record_head(&c, &Limits::default(), &mut head).unwrap();
        let mut wire = chunk_head("news", &head, c.data.len());
        wire.extend_from_slice(&c.data);
        wire.extend(heartbeat());
        wire.extend(hello(&Hello {
            version: 1,
            id: "s1".into(),
            next_seq: [("news".to_string(), 5)].into(),
            last: [(
                "news".to_string(),
                ChunkId {
                    seq: 4,
                    ts_micros: 1_700_000_000_000_000,
                    len: 417,
                },
            )]
            .into(),
        }));
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for b in wire {
            buf.extend_from_slice(&[b]);
            while let Some(f) = decode(&mut buf).unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got.len(), 3);
        assert!(matches!(&got[0], Frame::Chunk(k, ch) if k == "news" && *ch == c));
        assert!(matches!(got[1], Frame::Heartbeat));
        assert!(matches!(&got[2], Frame::Hello(h) if h.next_seq["news"] == 5));
    }

    #[test]
    fn bad_frames_are_errors_before_allocation() {
        let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 0x7f, 1][..]);
        assert!(matches!(decode(&mut buf), Err(FrameError::TooLarge(_))));
        let mut buf = BytesMut::from(&[0, 0, 0, 0][..]);
        assert!(matches!(decode(&mut buf), Err(FrameError::Empty)));
        let mut buf = BytesMut::from(&[1, 0, 0, 0, 99][..]);
        assert!(matches!(decode(&mut buf), Err(FrameError::UnknownType(99))));
        let mut buf = BytesMut::from(&frame(kind::HELLO, b"{nope")[..]);
        assert!(matches!(decode(&mut buf), Err(FrameError::Json { .. })));
        let mut buf = BytesMut::from(&frame(kind::CHUNK, &[3, 0, b'a'])[..]);
        assert!(matches!(decode(&mut buf), Err(FrameError::Chunk(_))));
    }
}
