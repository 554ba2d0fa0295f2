//! Link frames: `[u32 LE length][u8 type][payload]`, the length counting the
//! type byte and the payload. Reading is [`LinkCodec`], a `tokio_util`
//! decoder: the length prefix is its `LengthDelimitedCodec` (incremental, and
//! bounded: a frame longer than [`MAX_FRAME`] is an error before anything is
//! allocated), the type byte and payload ours. Frames are written by hand
//! (the functions below): a chunk's audio goes on the wire straight from the
//! shared buffer after its head, never copied into a frame.

use bytes::BytesMut;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use streammachine_config::StreamConfig;
use tokio_util::codec::{Decoder, Encoder, Framed, FramedParts, LengthDelimitedCodec};

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
    #[error("frame larger than the {MAX_FRAME}-byte limit")]
    TooLarge,
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

/// The frames read from `io`, starting with what `buf` already holds (bytes
/// that came with the HTTP upgrade: decoded before anything more is read).
pub fn reader<R: tokio::io::AsyncRead>(io: R, buf: BytesMut) -> Framed<R, LinkCodec> {
    let mut parts = FramedParts::new::<Frame>(io, LinkCodec::default());
    parts.read_buf = buf;
    Framed::from_parts(parts)
}

/// The next frame; [`LinkError::Closed`](super::LinkError::Closed) at the end.
pub async fn next<R: tokio::io::AsyncRead + Unpin>(
    frames: &mut Framed<R, LinkCodec>,
) -> Result<Frame, super::LinkError> {
    frames.next().await.unwrap_or(Err(super::LinkError::Closed))
}

/// The link's frames as a `tokio_util` decoder.
#[derive(Debug)]
pub struct LinkCodec {
    lengths: LengthDelimitedCodec,
}

impl Default for LinkCodec {
    fn default() -> Self {
        LinkCodec {
            lengths: LengthDelimitedCodec::builder()
                .little_endian()
                .length_field_length(4)
                .max_frame_length(MAX_FRAME)
                .new_codec(),
        }
    }
}

impl Decoder for LinkCodec {
    type Item = Frame;
    type Error = super::LinkError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, super::LinkError> {
        match self.lengths.decode(buf) {
            Ok(Some(body)) => Ok(Some(parse(&body)?)),
            Ok(None) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                Err(FrameError::TooLarge.into())
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// Encodes with the writers above (the same bytes as writing them by hand;
/// a chunk's audio is copied here, which the link's own writes avoid).
impl Encoder<Frame> for LinkCodec {
    type Error = super::LinkError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), super::LinkError> {
        let bytes = match &frame {
            Frame::Hello(h) => hello(h),
            Frame::Config(c) => config(c),
            Frame::Reset(r) => reset(r),
            Frame::Stats(st) => stats(st),
            Frame::Want(w) => want(w),
            Frame::Heartbeat => heartbeat(),
            Frame::Chunk(key, chunk) => {
                let mut head = Vec::new();
                crate::persist::encode_record_head(chunk, &Limits::default(), &mut head)
                    .map_err(|e| super::LinkError::Protocol(e.to_string()))?;
                let mut out = chunk_head(key, &head, chunk.data.len());
                out.extend_from_slice(&chunk.data);
                out
            }
        };
        dst.extend_from_slice(&bytes);
        Ok(())
    }
}

/// Parses one frame's type byte and payload.
fn parse(body: &[u8]) -> Result<Frame, FrameError> {
    let Some((&kind, payload)) = body.split_first() else {
        return Err(FrameError::Empty);
    };
    let json = |what| move |error| FrameError::Json { what, error };
    Ok(match kind {
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
    })
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
        let mut codec = LinkCodec::default();
        for b in wire {
            buf.extend_from_slice(&[b]);
            while let Some(f) = codec.decode(&mut buf).unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got.len(), 3);
        assert!(matches!(&got[0], Frame::Chunk(k, ch) if k == "news" && *ch == c));
        assert!(matches!(got[1], Frame::Heartbeat));
        assert!(matches!(&got[2], Frame::Hello(h) if h.next_seq["news"] == 5));
    }

    #[tokio::test]
    async fn a_reader_decodes_what_came_with_the_upgrade_first() {
        // The peer sent a heartbeat with its request and then nothing more:
        // the frame must come out without waiting for another read.
        let (ours, _theirs) = tokio::io::duplex(64);
        let mut frames = reader(ours, BytesMut::from(&heartbeat()[..]));
        let f = tokio::time::timeout(std::time::Duration::from_secs(5), next(&mut frames)).await;
        assert!(matches!(f, Ok(Ok(Frame::Heartbeat))), "{f:?}");
    }

    #[test]
    fn bad_frames_are_errors_before_allocation() {
        let decode = |bytes: &[u8]| LinkCodec::default().decode(&mut BytesMut::from(bytes));
        let frame_error = |r| match r {
            Err(super::super::LinkError::Frame(e)) => Some(e),
            _ => None,
        };
        let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 0x7f, 1][..]);
        let r = LinkCodec::default().decode(&mut buf);
        assert!(matches!(frame_error(r), Some(FrameError::TooLarge)));
        assert!(
            buf.capacity() < 1024,
            "nothing reserved for a frame refused"
        );
        assert!(matches!(
            frame_error(decode(&[0, 0, 0, 0])),
            Some(FrameError::Empty)
        ));
        assert!(matches!(
            frame_error(decode(&[1, 0, 0, 0, 99])),
            Some(FrameError::UnknownType(99))
        ));
        assert!(matches!(
            frame_error(decode(&frame(kind::HELLO, b"{nope"))),
            Some(FrameError::Json { .. })
        ));
        assert!(matches!(
            frame_error(decode(&frame(kind::CHUNK, &[3, 0, b'a']))),
            Some(FrameError::Chunk(_))
        ));
    }
}
