//! Incremental, bounded frame parser ("framer") for live MPEG audio and AAC/ADTS.
//!
//! A source client's audio arrives from a TCP socket in arbitrary pieces. The
//! [`Framer`] cuts it into whole codec frames, so the server can count time,
//! key the stream's format and hand listeners clean frame boundaries. Along the
//! way it
//!
//! * skips ID3v2 tags (anywhere, by counting bytes: the tag is never buffered)
//!   and ID3v1 tags (at frame boundaries),
//! * resynchronises on garbage, counting the bytes it skips,
//! * drops the encoder's Xing/Info/VBRI frame (metadata, not audio; on a live
//!   stream its length fields are bogus),
//! * drops truncated frames, and
//! * tells an operator when the source sends the other codec ([`FramerError::WrongCodec`])
//!   or nothing recognisable at all ([`FramerError::NoSync`]).
//!
//! # Confirmation
//! A frame is only emitted once the header of the *following* frame has arrived
//! and validates exactly `frame_len` bytes later with the same fixed fields
//! (MPEG: version, layer, sample rate; ADTS: sampling index, channel
//! configuration, profile). While in sync an ID3v2 or ID3v1 tag may stand in for
//! that next header. A frame whose successor does not check out is dropped: it
//! was cut short, or garbage follows it, and the two cannot be told apart.
//! [`Framer::finish`] releases the last frame, which has no successor.
//!
//! # Memory
//! The framer's buffer holds only what it still has to look at. Whenever
//! [`Framer::next_frame`] returns `Ok(None)` (or an error) the buffer holds fewer
//! than [`MAX_BUFFERED`] bytes, so a caller that drains after every read,
//!
//! ```text
//! framer.push(&read_bytes);
//! while let Some(frame) = framer.next_frame()? { /* … */ }
//! ```
//!
//! never holds more than `MAX_BUFFERED` plus one read.

pub mod aac;
pub mod id3;
pub mod mp3;

use std::fmt;
use std::str::FromStr;

use bytes::{Buf, Bytes, BytesMut};

pub use aac::AdtsHeader;
pub use mp3::{ChannelMode, Layer, MpegHeader, MpegVersion};

/// Upper bound on the bytes a [`Framer`] keeps buffered between calls (16 392).
///
/// `next_frame` only waits for more data while the buffer is shorter than what
/// the current check needs, and the largest check is the wrong-codec probe on an
/// MP3 framer: two whole ADTS frames plus a header (2 × 8191 + 7). Confirming a
/// frame of the framer's own codec needs at most its largest frame plus 10 bytes
/// (an ID3v2 header): 2891 for MP3, 8201 for ADTS. ID3 tag bodies are never
/// buffered.
pub const MAX_BUFFERED: usize = 2 * aac::MAX_FRAME_LEN + id3::V2_HEADER_LEN;

/// Consecutive frames that [`sniff`] (and the wrong-codec check) require.
const SNIFF_FRAMES: usize = 3;

/// An audio codec the framer can parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Codec {
    /// MPEG-1/2/2.5 audio, Layers I–III.
    Mp3,
    /// AAC in ADTS.
    Aac,
}

impl Codec {
    /// The other codec (the one a wrong-codec source most likely sends).
    pub fn other(self) -> Codec {
        match self {
            Codec::Mp3 => Codec::Aac,
            Codec::Aac => Codec::Mp3,
        }
    }

    /// The usual `Content-Type` of a stream in this codec.
    pub fn content_type(self) -> &'static str {
        match self {
            Codec::Mp3 => "audio/mpeg",
            Codec::Aac => "audio/aac",
        }
    }

    /// The codec a source's `Content-Type` announces, if it is one we parse
    /// (parameters after `;` and case are ignored).
    pub fn from_content_type(content_type: &str) -> Option<Codec> {
        let mime = content_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        match mime.as_str() {
            "audio/mpeg" | "audio/mp3" | "audio/mpeg3" | "audio/x-mpeg" => Some(Codec::Mp3),
            "audio/aac" | "audio/aacp" | "audio/x-aac" | "audio/x-aacp" => Some(Codec::Aac),
            _ => None,
        }
    }

    /// Parses the start of a frame header of this codec.
    fn parse_header(self, buf: &[u8]) -> Probe<FrameHeader> {
        match self {
            Codec::Mp3 => mp3::parse_header(buf),
            Codec::Aac => aac::parse_header(buf),
        }
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Codec::Mp3 => "mp3",
            Codec::Aac => "aac",
        })
    }
}

impl FromStr for Codec {
    type Err = FramerError;

    /// Accepts `mp3` and `aac` (any case), as in StreamMachine's `format` setting.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "mp3" => Ok(Codec::Mp3),
            "aac" => Ok(Codec::Aac),
            _ => Err(FramerError::UnknownCodec(s.to_owned())),
        }
    }
}

/// Errors of the format module. `NoSync` and `WrongCodec` end a framer: every
/// later call returns the same error.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FramerError {
    /// No valid frame within [`Limits::max_sync_search`] bytes at the start.
    #[error(
        "no {codec} audio frame found in the first {scanned} bytes of the stream \
         (not {codec}, or corrupt data)"
    )]
    NoSync {
        /// Garbage bytes skipped before giving up.
        scanned: usize,
        /// The codec looked for.
        codec: Codec,
    },
    /// The stream clearly is the other codec (several consecutive valid frames).
    #[error("the source sends {found} audio, but this mount expects {expected}")]
    WrongCodec {
        /// The framer's codec.
        expected: Codec,
        /// The codec found in the data.
        found: Codec,
    },
    /// A codec name that is neither `mp3` nor `aac`.
    #[error("unknown audio format {0:?} (expected \"mp3\" or \"aac\")")]
    UnknownCodec(String),
}

/// Outcome of looking at the start of a byte slice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probe<T> {
    /// A valid structure was found.
    Valid(T),
    /// The bytes cannot start such a structure.
    Invalid,
    /// The bytes present are consistent with one, but more are needed to decide.
    NeedMore,
}

/// Codec-specific header fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HeaderDetail {
    /// An MPEG audio header.
    Mpeg(MpegHeader),
    /// An ADTS header.
    Adts(AdtsHeader),
}

/// A parsed frame header: what the server needs to know about one frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FrameHeader {
    /// The codec.
    pub codec: Codec,
    /// Sample rate in Hz.
    pub sample_rate: u32,
    /// Number of channels (ADTS channel configuration 0, "defined in-band", gives 0;
    /// configuration 7 gives 8).
    pub channels: u8,
    /// PCM samples per channel in this frame (MP3: 384, 1152 or 576; ADTS:
    /// 1024 per raw data block).
    pub samples: u32,
    /// Frame length in bytes, header included.
    pub frame_len: usize,
    /// Bitrate from the header (MP3); `None` for ADTS, which has no such field.
    pub bitrate_kbps: Option<u32>,
    /// Version, layer, channel mode, profile, CRC and the like.
    pub detail: HeaderDetail,
}

impl FrameHeader {
    /// The stream's format key, as the original StreamMachine names it:
    /// `mp3-<sampleRateHz>-<bitrateKbps>-<s|m>` (`s` for stereo or joint stereo,
    /// `m` for mono or dual channel), e.g. `mp3-44100-128-s`; and
    /// `aac-<sampleRateHz>-<profile>-<channels>` where profile is the ADTS profile
    /// field + 1 (AAC-LC = 2), e.g. `aac-44100-2-2`.
    ///
    /// Take it from the first audio frame: a VBR MP3 stream's bitrate changes.
    pub fn format_key(&self) -> String {
        match self.detail {
            HeaderDetail::Mpeg(m) => {
                let mode = match m.channel_mode {
                    ChannelMode::Stereo | ChannelMode::JointStereo => 's',
                    ChannelMode::DualChannel | ChannelMode::Mono => 'm',
                };
                format!(
                    "mp3-{}-{}-{}",
                    self.sample_rate,
                    self.bitrate_kbps.unwrap_or_default(),
                    mode
                )
            }
            HeaderDetail::Adts(a) => format!(
                "aac-{}-{}-{}",
                self.sample_rate,
                a.object_type(),
                self.channels
            ),
        }
    }

    /// Playing time of this frame in microseconds (`samples / sample_rate`).
    pub fn duration_micros(&self) -> f64 {
        f64::from(self.samples) * 1_000_000.0 / f64::from(self.sample_rate)
    }

    /// Whether `other` has this frame's codec, sample rate and channels: what
    /// a decoder is set up for (an MP3 stream's bitrate may change every
    /// frame; these may not without a new decoder).
    pub fn same_audio(&self, other: &FrameHeader) -> bool {
        self.codec == other.codec
            && self.sample_rate == other.sample_rate
            && self.channels == other.channels
    }

    /// Whether `next` can follow this frame in the same stream (same codec and
    /// the same fixed fields).
    pub fn same_stream(&self, next: &FrameHeader) -> bool {
        match (&self.detail, &next.detail) {
            (HeaderDetail::Mpeg(a), HeaderDetail::Mpeg(b)) => a.same_stream(b),
            (HeaderDetail::Adts(a), HeaderDetail::Adts(b)) => a.same_stream(b),
            _ => false,
        }
    }
}

/// One whole audio frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// Its parsed header.
    pub header: FrameHeader,
    /// The whole frame, header included. A copy that owns exactly these bytes, so
    /// keeping frames (e.g. in a rewind buffer) never pins larger read buffers.
    pub data: Bytes,
}

/// Tunable limits of a [`Framer`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Garbage bytes tolerated before the first frame (ID3 tags excluded); one
    /// more gives [`FramerError::NoSync`]. Default 64 KiB.
    pub max_sync_search: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_sync_search: 64 * 1024,
        }
    }
}

/// Counters of what a [`Framer`] has seen. Every byte pushed ends up in exactly
/// one of the `*_bytes` counters (or is still buffered).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FramerStats {
    /// Audio frames emitted.
    pub frames: u64,
    /// Bytes of those frames.
    pub audio_bytes: u64,
    /// PCM samples per channel in those frames (duration × sample rate).
    pub samples: u64,
    /// Bytes skipped while searching for sync.
    pub garbage_bytes: u64,
    /// ID3v2 and ID3v1 tags skipped.
    pub id3_tags: u64,
    /// Bytes of ID3 tags skipped so far.
    pub id3_bytes: u64,
    /// Xing/Info/VBRI encoder tag frames dropped.
    pub tag_frames: u64,
    /// Bytes of those frames.
    pub tag_frame_bytes: u64,
    /// Truncated or unconfirmed frames dropped (the next header did not follow).
    pub dropped_frames: u64,
    /// Bytes of those frames (up to where sync was found again).
    pub dropped_bytes: u64,
}

/// The incremental framer. See the [module documentation](self) for the rules.
#[derive(Debug)]
pub struct Framer {
    codec: Codec,
    limits: Limits,
    /// Bytes not yet consumed; starts at the position under examination.
    buf: BytesMut,
    /// Bytes of an ID3 tag still to discard as they arrive (buffer is empty then).
    skip: u64,
    /// Bytes of a dropped frame still to attribute to `dropped_bytes` while skipping.
    drop_remaining: usize,
    /// The buffer starts where the last confirmed frame ended (tags may have
    /// followed): a tag may confirm the frame here, and a bad frame here is "dropped".
    in_sync: bool,
    /// The buffer starts at stream start, after a frame or after a tag (ID3v1 allowed).
    at_boundary: bool,
    /// A frame (audio or encoder tag) has been confirmed.
    got_first: bool,
    /// `finish` was called.
    eof: bool,
    /// Garbage bytes skipped before the first frame.
    pre_sync_garbage: usize,
    /// A fatal error already returned.
    failed: Option<FramerError>,
    stats: FramerStats,
}

/// A framer's position in its input, so another process can continue it
/// exactly (handoff): the bytes it holds (a frame waiting for the next header
/// to confirm it, a partial frame) and where it is in the stream's structure.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FramerState {
    /// Buffered, not yet consumed bytes.
    pub buffered: Vec<u8>,
    /// Bytes of an ID3 tag still to skip.
    pub skip: u64,
    /// See [`Framer::is_synced`].
    pub in_sync: bool,
    /// At a frame or tag boundary.
    pub at_boundary: bool,
    /// A frame has been confirmed already.
    pub got_first: bool,
}

/// What `next_frame` does with the bytes at the start of the buffer.
enum Action {
    NeedMore,
    Tag(u64),
    Emit(FrameHeader),
    Skip,
    Drop(usize),
    Fail(FramerError),
}

impl Framer {
    /// A framer for `codec` with default [`Limits`].
    pub fn new(codec: Codec) -> Self {
        Self::with_limits(codec, Limits::default())
    }

    /// A framer for `codec` with the given limits.
    pub fn with_limits(codec: Codec, limits: Limits) -> Self {
        Framer {
            codec,
            limits,
            buf: BytesMut::new(),
            skip: 0,
            drop_remaining: 0,
            in_sync: false,
            at_boundary: true,
            got_first: false,
            eof: false,
            pre_sync_garbage: 0,
            failed: None,
            stats: FramerStats::default(),
        }
    }

    /// Its position in the input (see [`FramerState`]).
    pub fn state(&self) -> FramerState {
        FramerState {
            buffered: self.buf.to_vec(),
            skip: self.skip,
            in_sync: self.in_sync,
            at_boundary: self.at_boundary,
            got_first: self.got_first,
        }
    }

    /// A framer that continues where `state` was taken.
    pub fn resume(codec: Codec, state: FramerState) -> Self {
        let mut f = Framer::new(codec);
        f.buf = BytesMut::from(&state.buffered[..]);
        f.skip = state.skip;
        f.in_sync = state.in_sync;
        f.at_boundary = state.at_boundary;
        f.got_first = state.got_first;
        f
    }

    /// The codec this framer parses.
    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// Counters so far.
    pub fn stats(&self) -> &FramerStats {
        &self.stats
    }

    /// Bytes currently buffered (below [`MAX_BUFFERED`] after `next_frame`
    /// returned `Ok(None)`).
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Whether the framer is in sync: the last thing consumed was a confirmed
    /// frame or a tag following one.
    pub fn is_synced(&self) -> bool {
        self.in_sync
    }

    /// Feeds bytes as they arrive, split anywhere. Bytes belonging to an ID3 tag
    /// being skipped are discarded here, unbuffered. Ignored after `finish` or a
    /// fatal error. Call [`next_frame`](Self::next_frame) until `Ok(None)` after
    /// each push to keep the buffer bounded.
    pub fn push(&mut self, data: &[u8]) {
        if self.failed.is_some() || self.eof {
            return;
        }
        let mut data = data;
        if self.skip > 0 {
            let n = data
                .len()
                .min(usize::try_from(self.skip).unwrap_or(usize::MAX));
            self.skip -= n as u64;
            self.stats.id3_bytes += n as u64;
            data = &data[n..];
        }
        self.buf.extend_from_slice(data);
    }

    /// The next confirmed audio frame; `Ok(None)` means more data is needed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FramerError> {
        loop {
            if let Some(err) = &self.failed {
                return Err(err.clone());
            }
            match self.decide() {
                Action::NeedMore => return Ok(None),
                Action::Tag(len) => self.skip_tag(len),
                Action::Emit(header) => {
                    if let Some(frame) = self.emit(header) {
                        return Ok(Some(frame));
                    }
                }
                Action::Drop(len) => {
                    self.stats.dropped_frames += 1;
                    self.drop_remaining = len;
                    self.skip_byte();
                }
                Action::Skip => self.skip_byte(),
                Action::Fail(err) => {
                    self.buf = BytesMut::new();
                    self.failed = Some(err.clone());
                    return Err(err);
                }
            }
        }
    }

    /// Signals the end of input and returns the next frame still held back
    /// (normally the last one, which has no successor to confirm it). Call
    /// repeatedly until `Ok(None)`; leftover bytes of an incomplete frame are
    /// counted in `dropped_frames`/`dropped_bytes`.
    pub fn finish(&mut self) -> Result<Option<Frame>, FramerError> {
        self.eof = true;
        self.next_frame()
    }

    /// Decides what to do with the bytes at the start of the buffer.
    fn decide(&self) -> Action {
        if self.skip > 0 || self.buf.is_empty() {
            return Action::NeedMore;
        }
        let buf = &self.buf[..];
        let eof = self.eof;

        match id3::probe_v2(buf) {
            Probe::Valid(len) => return Action::Tag(len),
            Probe::NeedMore if !eof => return Action::NeedMore,
            _ => {}
        }
        if self.at_boundary {
            match id3::probe_v1(buf) {
                Probe::Valid(()) => return Action::Tag(id3::V1_TAG_LEN as u64),
                Probe::NeedMore if !eof => return Action::NeedMore,
                _ => {}
            }
        }

        match self.codec.parse_header(buf) {
            Probe::Valid(header) => match self.confirm(&header, buf) {
                Probe::Valid(()) => Action::Emit(header),
                Probe::NeedMore if !eof => Action::NeedMore,
                Probe::NeedMore if self.in_sync && buf.len() >= header.frame_len => {
                    Action::Emit(header)
                }
                _ if self.in_sync => Action::Drop(header.frame_len),
                _ => self.garbage(),
            },
            Probe::NeedMore if !eof => Action::NeedMore,
            Probe::NeedMore if self.in_sync => Action::Drop(buf.len()),
            _ => {
                if !self.got_first {
                    let other = self.codec.other();
                    match probe_chain(other, buf, SNIFF_FRAMES) {
                        Probe::Valid(_) => {
                            return Action::Fail(FramerError::WrongCodec {
                                expected: self.codec,
                                found: other,
                            })
                        }
                        Probe::NeedMore if !eof => return Action::NeedMore,
                        _ => {}
                    }
                }
                self.garbage()
            }
        }
    }

    /// Checks what follows the frame `header` at the start of `buf`: a header of
    /// the same stream, or (in sync) an ID3 tag.
    fn confirm(&self, header: &FrameHeader, buf: &[u8]) -> Probe<()> {
        let rest = match buf.get(header.frame_len..) {
            Some(rest) if !rest.is_empty() => rest,
            _ => return Probe::NeedMore,
        };
        let mut need_more = false;
        match self.codec.parse_header(rest) {
            Probe::Valid(next) if header.same_stream(&next) => return Probe::Valid(()),
            Probe::NeedMore => need_more = true,
            _ => {}
        }
        if self.in_sync {
            for probe in [id3::probe_v2(rest).map(|_| ()), id3::probe_v1(rest)] {
                match probe {
                    Probe::Valid(()) => return Probe::Valid(()),
                    Probe::NeedMore => need_more = true,
                    Probe::Invalid => {}
                }
            }
        }
        if need_more {
            Probe::NeedMore
        } else {
            Probe::Invalid
        }
    }

    /// Skipping one garbage byte, or giving up before the first frame.
    fn garbage(&self) -> Action {
        if !self.got_first && self.pre_sync_garbage >= self.limits.max_sync_search {
            Action::Fail(FramerError::NoSync {
                scanned: self.pre_sync_garbage,
                codec: self.codec,
            })
        } else {
            Action::Skip
        }
    }

    fn skip_byte(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        self.buf.advance(1);
        self.in_sync = false;
        self.at_boundary = false;
        if self.drop_remaining > 0 {
            self.drop_remaining -= 1;
            self.stats.dropped_bytes += 1;
        } else {
            self.stats.garbage_bytes += 1;
            if !self.got_first {
                self.pre_sync_garbage += 1;
            }
        }
    }

    fn skip_tag(&mut self, len: u64) {
        let now = usize::try_from(len)
            .unwrap_or(usize::MAX)
            .min(self.buf.len());
        self.buf.advance(now);
        self.skip = len - now as u64;
        self.stats.id3_tags += 1;
        self.stats.id3_bytes += now as u64;
        self.at_boundary = true;
        self.drop_remaining = 0;
    }

    /// Consumes the confirmed frame at the start of the buffer; `None` if it was
    /// an encoder tag frame (dropped).
    fn emit(&mut self, header: FrameHeader) -> Option<Frame> {
        let len = header.frame_len;
        let Some(bytes) = self.buf.get(..len) else {
            // Not reached: frames are only emitted complete.
            self.skip_byte();
            return None;
        };
        let is_tag_frame = match &header.detail {
            HeaderDetail::Mpeg(m) => mp3::is_encoder_tag_frame(bytes, m),
            HeaderDetail::Adts(_) => false,
        };
        let frame = (!is_tag_frame).then(|| Frame {
            header,
            data: Bytes::copy_from_slice(bytes),
        });
        self.buf.advance(len);
        self.in_sync = true;
        self.at_boundary = true;
        self.got_first = true;
        self.drop_remaining = 0;
        if frame.is_some() {
            self.stats.frames += 1;
            self.stats.audio_bytes += len as u64;
            self.stats.samples += u64::from(header.samples);
        } else {
            self.stats.tag_frames += 1;
            self.stats.tag_frame_bytes += len as u64;
        }
        frame
    }
}

impl<T> Probe<T> {
    /// Maps the value of a `Valid` probe.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Probe<U> {
        match self {
            Probe::Valid(v) => Probe::Valid(f(v)),
            Probe::Invalid => Probe::Invalid,
            Probe::NeedMore => Probe::NeedMore,
        }
    }
}

/// Checks for `count` consecutive frames of `codec` at the start of `buf`, each
/// header exactly one frame length after the previous, with the same fixed
/// fields; returns the first header.
fn probe_chain(codec: Codec, buf: &[u8], count: usize) -> Probe<FrameHeader> {
    let first = match codec.parse_header(buf) {
        Probe::Valid(h) => h,
        Probe::Invalid => return Probe::Invalid,
        Probe::NeedMore => return Probe::NeedMore,
    };
    let mut prev = first;
    let mut offset = first.frame_len;
    for _ in 1..count {
        let Some(rest) = buf.get(offset..) else {
            return Probe::NeedMore;
        };
        match codec.parse_header(rest) {
            Probe::Valid(next) if prev.same_stream(&next) => {
                offset += next.frame_len;
                prev = next;
            }
            Probe::NeedMore => return Probe::NeedMore,
            _ => return Probe::Invalid,
        }
    }
    Probe::Valid(first)
}

/// Looks at the first bytes of a stream and says which codec it is, if it can
/// tell: after skipping leading ID3v2 tags, the first position where three
/// consecutive valid frames of one codec follow each other decides. `None` if
/// `data` is too short or holds neither. Used to tell a user "you send AAC to an
/// mp3 mount".
pub fn sniff(data: &[u8]) -> Option<Codec> {
    let mut start = 0usize;
    while let Probe::Valid(len) = id3::probe_v2(data.get(start..)?) {
        start = start.checked_add(usize::try_from(len).ok()?)?;
    }
    let data = data.get(start..)?;
    (0..data.len()).find_map(|pos| {
        [Codec::Mp3, Codec::Aac].into_iter().find(|&codec| {
            matches!(
                probe_chain(codec, &data[pos..], SNIFF_FRAMES),
                Probe::Valid(_)
            )
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn fixture(name: &str) -> Vec<u8> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures")
            .join(name);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// Deterministic noise (xorshift64*).
    fn noise(seed: u64, len: usize) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                x ^= x >> 12;
                x ^= x << 25;
                x ^= x >> 27;
                (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
            })
            .collect()
    }

    /// Feeds `data` in pieces of `chunk` bytes like a server does (push, then drain
    /// until `Ok(None)`), checking the buffer bound after every drain, then
    /// finishes. Also checks that every input byte is accounted for in the stats.
    fn run(codec: Codec, data: &[u8], chunk: usize) -> (Vec<Frame>, FramerStats) {
        let mut framer = Framer::new(codec);
        let mut frames = Vec::new();
        for piece in data.chunks(chunk) {
            framer.push(piece);
            while let Some(frame) = framer.next_frame().unwrap() {
                frames.push(frame);
            }
            assert!(framer.buffered() < MAX_BUFFERED, "{}", framer.buffered());
        }
        while let Some(frame) = framer.finish().unwrap() {
            frames.push(frame);
        }
        assert_eq!(framer.buffered(), 0);
        let s = *framer.stats();
        let accounted =
            s.audio_bytes + s.garbage_bytes + s.id3_bytes + s.tag_frame_bytes + s.dropped_bytes;
        assert_eq!(accounted, data.len() as u64, "{s:?}");
        assert_eq!(s.frames, frames.len() as u64);
        let frame_bytes: u64 = frames.iter().map(|f| f.data.len() as u64).sum();
        assert_eq!(s.audio_bytes, frame_bytes);
        (frames, s)
    }

    /// Feeds `data` like `run` and returns the error it must end in.
    fn run_err(framer: &mut Framer, data: &[u8], chunk: usize) -> FramerError {
        for piece in data.chunks(chunk) {
            framer.push(piece);
            assert!(framer.buffered() <= MAX_BUFFERED + piece.len());
            match framer.next_frame() {
                Ok(Some(frame)) => panic!("unexpected frame {:?}", frame.header),
                Ok(None) => {}
                Err(err) => return err,
            }
            assert!(framer.buffered() < MAX_BUFFERED, "{}", framer.buffered());
        }
        match framer.finish() {
            Err(err) => err,
            other => panic!("no error: {other:?}"),
        }
    }

    /// What each fixture must give. All numbers come from ffprobe (FFmpeg 7),
    /// not from this parser:
    ///
    /// `ffprobe -v error -show_entries packet=pos,size,duration:stream=time_base,sample_rate,channels -of json FILE`
    ///
    /// * `frames`: the number of packets (= `-count_packets` `nb_read_packets`).
    ///   FFmpeg's mp3 demuxer reads the LAME "Info" frame as a header and returns no
    ///   packet for it, so the `mp3-*` files hold one MPEG frame more than the
    ///   packet count: that frame is `tag_frames` here, not audio.
    /// * `samples`: the sum of packet durations × sample_rate × time_base
    ///   (1152 per MPEG-1 Layer III packet, 576 per MPEG-2 one, 1024 per ADTS one).
    ///   For the mp3 files this equals the stream's `duration_ts`; for raw ADTS
    ///   ffprobe's `duration_ts` is only a bitrate estimate, hence the packet sum.
    /// * `audio_bytes`: the sum of packet sizes; the packets are contiguous and the
    ///   last one ends at end of file (no ID3v1 in any fixture).
    /// * `id3_bytes`: the ID3v2.4 header's sync-safe size `00 00 01 26` = 166 + 10 =
    ///   176 (also the fixtures README); `tag_frame_bytes`: the first packet's `pos`
    ///   (593 or 384) − 176, i.e. the Info frame, whose header `FF FB 90 ..` /
    ///   `FF F3 80 ..` gives 417 / 208 bytes and which holds "Info" after the side info.
    /// * `sample_rate`, `channels`: ffprobe's stream fields; the keys are the file
    ///   names' stems (`mp3-44100-128-m` for the tones, `aac-44100-2-2` for AAC).
    struct Expected {
        path: &'static str,
        codec: Codec,
        key: &'static str,
        sample_rate: u32,
        channels: u8,
        frames: u64,
        samples: u64,
        audio_bytes: u64,
        id3_bytes: u64,
        tag_frames: u64,
        tag_frame_bytes: u64,
    }

    #[allow(clippy::too_many_arguments)] // one table row, named in the table's comment
    const fn mp3_file(
        path: &'static str,
        key: &'static str,
        sample_rate: u32,
        channels: u8,
        frames: u64,
        samples: u64,
        audio_bytes: u64,
        tag_frame_bytes: u64,
    ) -> Expected {
        Expected {
            path,
            codec: Codec::Mp3,
            key,
            sample_rate,
            channels,
            frames,
            samples,
            audio_bytes,
            id3_bytes: 176,
            tag_frames: 1,
            tag_frame_bytes,
        }
    }

    const fn tone(path: &'static str) -> Expected {
        Expected {
            path,
            codec: Codec::Mp3,
            key: "mp3-44100-128-m",
            sample_rate: 44100,
            channels: 1,
            frames: 193,
            samples: 193 * 1152,
            audio_bytes: 80666,
            id3_bytes: 0,
            tag_frames: 0,
            tag_frame_bytes: 0,
        }
    }

    #[rustfmt::skip]
    const FIXTURES: &[Expected] = &[
        // path, key, sample rate, channels, frames, samples, audio bytes, Info frame bytes
        mp3_file("mp3/mp3-22050-128-s.mp3", "mp3-22050-128-s", 22050, 2, 1151, 1151 * 576, 481_071, 417),
        mp3_file("mp3/mp3-22050-64-s.mp3", "mp3-22050-64-s", 22050, 2, 1151, 1151 * 576, 240_535, 208),
        mp3_file("mp3/mp3-44100-128-m.mp3", "mp3-44100-128-m", 44100, 1, 1150, 1150 * 1152, 480_653, 417),
        mp3_file("mp3/mp3-44100-128-s.mp3", "mp3-44100-128-s", 44100, 2, 1150, 1150 * 1152, 480_653, 417),
        mp3_file("mp3/mp3-44100-64-m.mp3", "mp3-44100-64-m", 44100, 1, 1150, 1150 * 1152, 240_326, 208),
        mp3_file("mp3/mp3-44100-64-s.mp3", "mp3-44100-64-s", 44100, 2, 1150, 1150 * 1152, 240_326, 208),
        tone("mp3/tone1kHz-44100-128-m.mp3"),
        tone("mp3/tone250Hz-44100-128-m.mp3"),
        tone("mp3/tone440Hz-44100-128-m.mp3"),
        Expected {
            path: "aac-256.aac", codec: Codec::Aac, key: "aac-44100-2-2", sample_rate: 44100,
            channels: 2, frames: 1294, samples: 1294 * 1024, audio_bytes: 961_547,
            id3_bytes: 0, tag_frames: 0, tag_frame_bytes: 0,
        },
    ];

    const TONE: &str = "mp3/tone440Hz-44100-128-m.mp3";
    /// Size of the tone's first and last frames (padded; a few in between are 417).
    const TONE_FRAME: usize = 418;

    #[test]
    fn fixtures_frame_exactly() {
        for e in FIXTURES {
            let data = fixture(e.path);
            let (frames, s) = run(e.codec, &data, data.len());
            let p = e.path;
            assert_eq!(s.frames, e.frames, "{p}");
            assert_eq!(s.samples, e.samples, "{p}");
            assert_eq!(s.audio_bytes, e.audio_bytes, "{p}");
            assert_eq!(s.id3_bytes, e.id3_bytes, "{p}");
            assert_eq!(s.id3_tags, u64::from(e.id3_bytes > 0), "{p}");
            assert_eq!(s.tag_frames, e.tag_frames, "{p}");
            assert_eq!(s.tag_frame_bytes, e.tag_frame_bytes, "{p}");
            assert_eq!(s.garbage_bytes, 0, "{p}");
            assert_eq!((s.dropped_frames, s.dropped_bytes), (0, 0), "{p}");

            let first = frames[0].header;
            assert_eq!(first.format_key(), e.key, "{p}");
            assert_eq!(
                (first.sample_rate, first.channels),
                (e.sample_rate, e.channels)
            );
            assert!(frames.iter().all(|f| f.header.format_key() == e.key), "{p}");
            let micros: f64 = frames.iter().map(|f| f.header.duration_micros()).sum();
            let expected_micros = e.samples as f64 * 1e6 / f64::from(e.sample_rate);
            assert!((micros - expected_micros).abs() < 1.0, "{p}: {micros}");

            // The frames are the file's bytes, back to back, up to the end of file.
            let start = (e.id3_bytes + e.tag_frame_bytes) as usize;
            let joined: Vec<u8> = frames.iter().flat_map(|f| f.data.to_vec()).collect();
            assert!(joined == data[start..], "{p}");

            assert_eq!(sniff(&data), Some(e.codec), "{p}");
            assert_eq!(sniff(&data[..4096]), Some(e.codec), "{p}");
        }
    }

    #[test]
    fn any_split_gives_the_same_frames() {
        for e in FIXTURES {
            let data = fixture(e.path);
            let whole = run(e.codec, &data, data.len());
            for chunk in [1, 7, 4093] {
                assert!(run(e.codec, &data, chunk) == whole, "{} by {chunk}", e.path);
            }
        }
    }

    #[test]
    fn last_frame_is_held_back_until_finish() {
        let data = fixture(TONE);
        let mut framer = Framer::new(Codec::Mp3);
        framer.push(&data);
        let mut n = 0;
        while framer.next_frame().unwrap().is_some() {
            n += 1;
        }
        assert_eq!(n, 192);
        assert_eq!(framer.buffered(), TONE_FRAME);
        let last = framer.finish().unwrap().unwrap();
        assert_eq!(last.data[..], data[data.len() - TONE_FRAME..]);
        assert_eq!(framer.finish().unwrap(), None);
        assert_eq!(framer.next_frame().unwrap(), None);
        assert_eq!(framer.stats().frames, 193);
        // Pushing after finish is ignored.
        framer.push(&data[..1000]);
        assert_eq!(framer.buffered(), 0);
    }

    #[test]
    fn incomplete_tail_is_counted_as_dropped() {
        let data = fixture(TONE);
        let (frames, s) = run(Codec::Mp3, &data[..data.len() - 100], 4096);
        assert_eq!(frames.len(), 192);
        assert_eq!(
            (s.dropped_frames, s.dropped_bytes),
            (1, TONE_FRAME as u64 - 100)
        );
        // A complete last frame followed by half a header is kept.
        let mut cut_header = data.clone();
        cut_header.extend_from_slice(&[0xFF, 0xFA]);
        let (frames, s) = run(Codec::Mp3, &cut_header, 4096);
        assert_eq!(frames.len(), 193);
        assert_eq!(
            (s.dropped_frames, s.dropped_bytes, s.garbage_bytes),
            (1, 2, 0)
        );
    }

    /// Offsets of the audio frames of a clean fixture run.
    fn offsets(start: usize, frames: &[Frame]) -> Vec<usize> {
        frames
            .iter()
            .scan(start, |pos, f| {
                let here = *pos;
                *pos += f.data.len();
                Some(here)
            })
            .collect()
    }

    fn without(frames: &[Frame], index: usize) -> Vec<Frame> {
        let mut v = frames.to_vec();
        v.remove(index);
        v
    }

    #[test]
    fn garbage_before_and_between_frames_is_skipped_and_counted() {
        for (path, k) in [
            (TONE, 100),
            ("mp3/mp3-44100-128-s.mp3", 600),
            ("aac-256.aac", 700),
        ] {
            let e = FIXTURES.iter().find(|e| e.path == path).unwrap();
            let data = fixture(path);
            let (clean, _) = run(e.codec, &data, data.len());
            let cut = offsets((e.id3_bytes + e.tag_frame_bytes) as usize, &clean)[k];
            let (g1, g2) = (noise(1, 1000), noise(2, 777));
            let dirty = [&g1, &data[..cut], &g2, &data[cut..]].concat();
            for chunk in [1, 1000, dirty.len()] {
                let (frames, s) = run(e.codec, &dirty, chunk);
                assert_eq!(s.garbage_bytes, 1777, "{path} by {chunk}");
                // Frame k-1 is followed by garbage, so nothing confirms it: dropped.
                assert_eq!(s.dropped_frames, 1, "{path}");
                assert_eq!(s.dropped_bytes, clean[k - 1].data.len() as u64, "{path}");
                assert_eq!((s.id3_bytes, s.tag_frames), (e.id3_bytes, e.tag_frames));
                assert!(frames == without(&clean, k - 1), "{path} by {chunk}");
            }
        }
    }

    #[test]
    fn truncated_frame_is_dropped_and_the_rest_come_out() {
        for (path, k) in [
            (TONE, 50),
            ("mp3/mp3-22050-64-s.mp3", 400),
            ("aac-256.aac", 500),
        ] {
            let e = FIXTURES.iter().find(|e| e.path == path).unwrap();
            let data = fixture(path);
            let (clean, _) = run(e.codec, &data, data.len());
            let offs = offsets((e.id3_bytes + e.tag_frame_bytes) as usize, &clean);
            let half = clean[k].data.len() / 2;
            let cut = [&data[..offs[k] + half], &data[offs[k + 1]..]].concat();
            for chunk in [1, 1000, cut.len()] {
                let (frames, s) = run(e.codec, &cut, chunk);
                assert_eq!(s.dropped_frames, 1, "{path}");
                assert_eq!(s.dropped_bytes, half as u64, "{path}");
                assert_eq!(s.garbage_bytes, 0, "{path}");
                assert!(frames == without(&clean, k), "{path} by {chunk}");
            }
        }
    }

    #[test]
    fn random_garbage_gives_no_sync_with_bounded_buffer() {
        let data = noise(42, 1 << 20);
        for codec in [Codec::Mp3, Codec::Aac] {
            let mut framer = Framer::new(codec);
            let err = run_err(&mut framer, &data, 4096);
            let scanned = 64 * 1024;
            assert_eq!(err, FramerError::NoSync { scanned, codec });
            assert_eq!(framer.stats().garbage_bytes, scanned as u64);
            assert!(err.to_string().contains(&format!("no {codec} audio frame")));
            assert!(err.to_string().contains("65536 bytes"));
            // The error is final and the buffer is released.
            framer.push(&data[..4096]);
            assert_eq!(framer.buffered(), 0);
            assert_eq!(framer.next_frame(), Err(err.clone()));
            assert_eq!(framer.finish(), Err(err));
        }
    }

    #[test]
    fn max_sync_search_is_exact() {
        let data = fixture(TONE);
        let limits = Limits {
            max_sync_search: 5000,
        };
        let ok = [&noise(7, 5000)[..], &data].concat();
        let mut framer = Framer::with_limits(Codec::Mp3, limits);
        framer.push(&ok);
        let mut n = 0;
        while framer.next_frame().unwrap().is_some() {
            n += 1;
        }
        assert_eq!((n, framer.stats().garbage_bytes), (192, 5000));

        let bad = [&noise(7, 5001)[..], &data].concat();
        let mut framer = Framer::with_limits(Codec::Mp3, limits);
        let err = run_err(&mut framer, &bad, 1000);
        assert_eq!(
            err,
            FramerError::NoSync {
                scanned: 5000,
                codec: Codec::Mp3
            }
        );
        // Garbage after the first frame is never an error.
        let (clean, _) = run(Codec::Mp3, &data, data.len());
        let cut = offsets(0, &clean)[10];
        let later = [&data[..cut], &noise(8, 100_000), &data[cut..]].concat();
        let (frames, s) = run(Codec::Mp3, &later, 4096);
        assert_eq!((frames.len(), s.garbage_bytes), (192, 100_000));
    }

    #[test]
    fn the_other_codec_gives_wrong_codec() {
        for e in FIXTURES {
            let data = fixture(e.path);
            let expected = e.codec.other();
            let want = FramerError::WrongCodec {
                expected,
                found: e.codec,
            };
            let mut framer = Framer::new(expected);
            assert_eq!(run_err(&mut framer, &data, 4096), want, "{}", e.path);
            assert_eq!(framer.stats().frames, 0);
            let noisy = [&noise(3, 1000)[..], &data].concat();
            let mut framer = Framer::new(expected);
            assert_eq!(run_err(&mut framer, &noisy, 1), want, "{}", e.path);
        }
        let err = FramerError::WrongCodec {
            expected: Codec::Mp3,
            found: Codec::Aac,
        };
        assert_eq!(
            err.to_string(),
            "the source sends aac audio, but this mount expects mp3"
        );
    }

    #[test]
    fn sniff_needs_three_frames() {
        let tone = fixture(TONE);
        assert_eq!(sniff(&tone[..2 * TONE_FRAME + 3]), None);
        assert_eq!(sniff(&tone[..2 * TONE_FRAME + 4]), Some(Codec::Mp3));
        let aac = fixture("aac-256.aac");
        let (frames, _) = run(Codec::Aac, &aac, aac.len());
        let two: usize = frames[..2].iter().map(|f| f.data.len()).sum();
        assert_eq!(sniff(&aac[..two + 6]), None);
        assert_eq!(sniff(&aac[..two + 7]), Some(Codec::Aac));
        // Garbage first is fine; an ID3 tag longer than the data is not.
        let noisy = [&noise(5, 3000)[..], &aac[..10_000]].concat();
        assert_eq!(sniff(&noisy), Some(Codec::Aac));
        let tagged = [&id3::v2_header(3, 0, 1_000_000)[..], &tone].concat();
        assert_eq!(sniff(&tagged), None);
        assert_eq!(sniff(&noise(9, 100_000)), None);
        assert_eq!(sniff(&[]), None);
    }

    #[test]
    fn huge_id3v2_tag_between_frames_is_skipped_unbuffered() {
        let tone = fixture(TONE);
        let (clean, _) = run(Codec::Mp3, &tone, tone.len());
        const BODY: usize = 5_000_000;
        // The tag's body is made of real MP3 frames: none of them may come out.
        let body: Vec<u8> = tone.iter().copied().cycle().take(BODY).collect();
        let cut = offsets(0, &clean)[100];
        let header = id3::v2_header(4, 0, BODY as u32);
        let data = [&tone[..cut], &header[..], &body, &tone[cut..]].concat();

        let mut framer = Framer::new(Codec::Mp3);
        let mut frames = Vec::new();
        let mut peak = 0;
        for piece in data.chunks(64 * 1024) {
            framer.push(piece);
            peak = peak.max(framer.buffered());
            while let Some(frame) = framer.next_frame().unwrap() {
                frames.push(frame);
            }
            assert!(framer.buffered() < MAX_BUFFERED);
        }
        while let Some(frame) = framer.finish().unwrap() {
            frames.push(frame);
        }
        assert!(peak <= 64 * 1024 + MAX_BUFFERED, "peak {peak}");
        let s = framer.stats();
        assert!(frames == clean, "{} {s:?}", frames.len());
        assert_eq!((s.id3_tags, s.id3_bytes), (1, BODY as u64 + 10));
        assert_eq!((s.garbage_bytes, s.dropped_frames), (0, 0));

        // Same with small reads: while the tag is skipped nothing is buffered.
        let mut framer = Framer::new(Codec::Mp3);
        for (i, piece) in data.chunks(1000).enumerate() {
            framer.push(piece);
            while framer.next_frame().unwrap().is_some() {}
            let pos = (i + 1) * 1000;
            if pos > cut + 20_000 && pos < cut + BODY {
                assert_eq!(framer.buffered(), 0, "at {pos}");
            }
        }
        while framer.finish().unwrap().is_some() {}
        assert_eq!(framer.stats().frames, 193);
    }

    #[test]
    fn id3_tags_between_frames_and_at_the_end() {
        let tone = fixture(TONE);
        let (clean, _) = run(Codec::Mp3, &tone, tone.len());
        let cut = offsets(0, &clean)[100];
        let v1 = [&b"TAG"[..], &[b' '; 125][..]].concat();
        let v2 = [&id3::v2_header(4, 0x10, 300)[..], &[0xFF; 310][..]].concat();
        let data = [&v2, &tone[..cut], &v1, &v2, &tone[cut..], &v1].concat();
        for chunk in [1, 7, data.len()] {
            let (frames, s) = run(Codec::Mp3, &data, chunk);
            assert!(frames == clean, "by {chunk}: {} {s:?}", frames.len());
            assert_eq!((s.id3_tags, s.id3_bytes), (4, 2 * 128 + 2 * 320));
            assert_eq!((s.garbage_bytes, s.dropped_frames), (0, 0));
        }
        // ADTS too.
        let aac = fixture("aac-256.aac");
        let (clean, _) = run(Codec::Aac, &aac, aac.len());
        let cut = offsets(0, &clean)[10];
        let data = [&aac[..cut], &v2, &aac[cut..]].concat();
        let (frames, s) = run(Codec::Aac, &data, 7);
        assert!(frames == clean);
        assert_eq!((s.id3_tags, s.id3_bytes, s.garbage_bytes), (1, 320, 0));
    }

    /// A synthetic MP3 frame with a zero body.
    fn mp3_frame(header: [u8; 4]) -> Vec<u8> {
        let Probe::Valid(h) = mp3::parse_header(&header) else {
            panic!("bad test header {header:02X?}");
        };
        let mut frame = vec![0u8; h.frame_len];
        frame[..4].copy_from_slice(&header);
        frame
    }

    /// A synthetic ADTS frame (no CRC, AAC-LC, one block) with a zero body.
    fn adts_frame(len: usize, sampling_index: u8, channels: u8) -> Vec<u8> {
        let mut frame = vec![0u8; len];
        frame[..7].copy_from_slice(&[
            0xFF,
            0xF1,
            (1 << 6) | (sampling_index << 2) | (channels >> 2),
            ((channels & 3) << 6) | ((len >> 11) & 3) as u8,
            ((len >> 3) & 0xFF) as u8,
            (((len & 7) as u8) << 5) | 0x1F,
            0xFC,
        ]);
        frame
    }

    #[test]
    fn fixed_fields_must_match_between_frames() {
        let a = mp3_frame([0xFF, 0xFB, 0x90, 0x64]); // 44.1 kHz, 417 bytes
        let b = mp3_frame([0xFF, 0xFB, 0x94, 0x64]); // 48 kHz, 384 bytes
                                                     // Out of sync, a header followed by another stream's header is not a frame.
        let (frames, s) = run(Codec::Mp3, &[&a[..], &b, &b].concat(), 100);
        assert_eq!((frames.len(), s.garbage_bytes), (2, 417));
        // In sync, the last frame before the change cannot be confirmed: dropped.
        let (frames, s) = run(Codec::Mp3, &[&a[..], &a, &b, &b].concat(), 100);
        assert_eq!(frames.len(), 3);
        assert_eq!(
            (s.dropped_frames, s.dropped_bytes, s.garbage_bytes),
            (1, 417, 0)
        );
        assert_eq!(frames[2].header.sample_rate, 48000);
        // Channel mode and bitrate may change from frame to frame.
        let mono_160 = mp3_frame([0xFF, 0xFB, 0xA0, 0xC4]);
        let (frames, s) = run(Codec::Mp3, &[&a[..], &mono_160, &a].concat(), 100);
        assert_eq!((frames.len(), s.garbage_bytes), (3, 0));
        // ADTS: channel configuration and sampling index are fixed.
        let stereo = adts_frame(300, 4, 2);
        let mono = adts_frame(300, 4, 1);
        let (frames, s) = run(Codec::Aac, &[&stereo[..], &mono, &mono].concat(), 100);
        assert_eq!((frames.len(), s.garbage_bytes), (2, 300));
        let khz48 = adts_frame(300, 3, 2);
        let (frames, s) = run(Codec::Aac, &[&stereo[..], &khz48, &khz48].concat(), 100);
        assert_eq!((frames.len(), s.garbage_bytes), (2, 300));
    }

    #[test]
    fn largest_frames_stay_within_the_buffer_bound() {
        // ADTS frames of the maximum length: framed by an AAC framer, and recognised
        // as the wrong codec by an MP3 framer, which has to look at two of them.
        let adts = adts_frame(aac::MAX_FRAME_LEN, 4, 2).repeat(5);
        let (frames, _) = run(Codec::Aac, &adts, 1000);
        assert_eq!(frames.len(), 5);
        let mut framer = Framer::new(Codec::Mp3);
        let err = run_err(&mut framer, &adts, 1000);
        assert!(matches!(err, FramerError::WrongCodec { .. }));
        // The largest MPEG frames (MPEG-2.5 Layer II, 160 kbit/s, 8 kHz, padded).
        let mpeg = mp3_frame([0xFF, 0xE5, 0xEA, 0x00]);
        assert_eq!(mpeg.len(), mp3::MAX_FRAME_LEN);
        let mpeg = mpeg.repeat(5);
        let (frames, _) = run(Codec::Mp3, &mpeg, 1000);
        assert_eq!(frames.len(), 5);
        assert_eq!(frames[0].header.format_key(), "mp3-8000-160-s");
        let mut framer = Framer::new(Codec::Aac);
        let err = run_err(&mut framer, &mpeg, 1000);
        assert!(matches!(err, FramerError::WrongCodec { .. }));
    }

    #[test]
    fn codec_names_and_keys() {
        assert_eq!("mp3".parse::<Codec>(), Ok(Codec::Mp3));
        assert_eq!("AAC".parse::<Codec>(), Ok(Codec::Aac));
        assert_eq!(
            "ogg".parse::<Codec>(),
            Err(FramerError::UnknownCodec("ogg".into()))
        );
        assert_eq!(Codec::Aac.to_string(), "aac");
        assert_eq!(
            Codec::from_content_type("Audio/AACP; x=1"),
            Some(Codec::Aac)
        );
        assert_eq!(Codec::from_content_type("audio/mpeg"), Some(Codec::Mp3));
        assert_eq!(Codec::from_content_type("application/ogg"), None);
        assert_eq!(Codec::Mp3.content_type(), "audio/mpeg");

        // Dual channel counts as "m"; joint stereo as "s".
        let key = |b: [u8; 4]| match mp3::parse_header(&b) {
            Probe::Valid(h) => h.format_key(),
            other => panic!("{other:?}"),
        };
        assert_eq!(key([0xFF, 0xFB, 0x90, 0x80]), "mp3-44100-128-m");
        assert_eq!(key([0xFF, 0xFB, 0x90, 0x40]), "mp3-44100-128-s");
        assert_eq!(key([0xFF, 0xF3, 0x80, 0x00]), "mp3-22050-64-s");
        let Probe::Valid(h) = aac::parse_header(&[0xFF, 0xF1, 0x58, 0x40, 0x5C, 0xE1, 0x8C]) else {
            panic!("ADTS header did not parse");
        };
        // HE-AAC is signalled in-band; ADTS says LC (2), 24 kHz, mono.
        assert_eq!(h.format_key(), "aac-24000-2-1");
        assert!((h.duration_micros() - 1024.0 / 24000.0 * 1e6).abs() < 1e-6);
    }
}
