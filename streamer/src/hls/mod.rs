//! HTTP Live Streaming (RFC 8216) out of the rewind buffer.
//!
//! The rewind buffer already holds each stream as ~1 s chunks of whole frames.
//! HLS needs three more things, all computed here without copying audio:
//!
//! * **Segment numbers** ([`Segmenter`]): assigned once, when a chunk is
//!   appended on the master, and carried with the chunk to the slaves, so every
//!   process serves the same segment numbers and boundaries. Boundaries follow
//!   wall-clock windows of the configured length, title changes, source
//!   discontinuities, and a cap of the length + 1.49 s (a source burst), so
//!   `EXT-X-TARGETDURATION` is the length + 1 for a playlist's whole life.
//! * **Segment list and playlists** ([`segments`], [`render_media`],
//!   [`render_multivariant`]): the chunks grouped by segment number, rendered as
//!   a live media playlist (`/<stream>.m3u8`) and a multivariant playlist
//!   (`/sg/<group>.m3u8`).
//! * **Segment bytes**: MPEG-TS ([`ts::segment`], the server's default: every
//!   player takes it), or packed audio ([`segment_head`], RFC 8216 §3.4): an
//!   ID3 tag carrying the first sample's MPEG-2 timestamp, followed by the
//!   segment's chunks unchanged; only the tag is built, and the server writes
//!   it and the chunk bytes with one vectored write.
//!
//! URLs: the media playlist `/<stream>.m3u8` lists segments as
//! `<stream>/seg/<number>.<ts|mp3|aac>` (relative, so `/<stream>/seg/…`);
//! [`parse_segment_name`] reads the last path element back. The multivariant
//! playlist `/sg/<group>.m3u8` lists `../<stream>.m3u8`.
//!
//! # Use
//!
//! ```text
//! // Master, on append (store `a` in the chunk; slaves receive it with the chunk):
//! let a = segmenter.assign(chunk.ts_micros, chunk.duration_micros(), chunk.discontinuity, title);
//! // After a restart, before the first append:
//! let segmenter = match ResumePoint::from_chunks(restored.iter().map(view)) {
//!     Some(p) => Segmenter::resume(segment_seconds, p),
//!     None => Segmenter::new(segment_seconds),
//! };
//! // GET /<stream>.m3u8
//! let list = segments(buffer.iter().map(view));
//! let body = render_media(&list, &MediaOptions { window, start, query, ..MediaOptions::new(name, codec, len) });
//! // GET /<stream>/seg/<n>.<ext>
//! let (n, ext) = parse_segment_name(last_path_element)?;
//! let seg = lookup(&list, n)?;            // chunks seg.seq_range()
//! let head = segment_head(seg.audio_start_micros, &seg.title);
//! // Content-Length: head.len() + seg.bytes; writev(head, chunk bytes…)
//! ```

mod id3;
mod playlist;
mod segment;
mod segmenter;
pub mod ts;

#[cfg(test)]
mod player_tests;
#[cfg(test)]
mod testutil;

pub use id3::{head_len, pts_90khz, segment_head, PTS_OWNER};
pub use playlist::{
    bandwidth, codecs, render_media, render_multivariant, AacExtension, MediaOptions, StartAt,
    Variant,
};
pub use segment::{close_last, lookup, parse_segment_name, segments, ChunkView, SegmentInfo};
pub use segmenter::{Assigned, ResumePoint, Segmenter};

/// The audio codec of a stream, as far as HLS cares: segment file extension,
/// `Content-Type` and the `CODECS` attribute.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Codec {
    /// MPEG audio (MP3), packed as `.mp3` segments.
    Mp3,
    /// AAC in ADTS, packed as `.aac` segments.
    Aac,
}

impl Codec {
    /// The segment file extension (`mp3` or `aac`).
    pub fn ext(self) -> &'static str {
        match self {
            Codec::Mp3 => "mp3",
            Codec::Aac => "aac",
        }
    }

    /// The `Content-Type` of a segment.
    pub fn content_type(self) -> &'static str {
        match self {
            Codec::Mp3 => "audio/mpeg",
            Codec::Aac => "audio/aac",
        }
    }

    /// The codec whose segment extension is `ext` (exact, lower case).
    pub fn from_ext(ext: &str) -> Option<Codec> {
        match ext {
            "mp3" => Some(Codec::Mp3),
            "aac" => Some(Codec::Aac),
            _ => None,
        }
    }
}

/// `Content-Type` of media and multivariant playlists.
pub const PLAYLIST_CONTENT_TYPE: &str = "application/vnd.apple.mpegurl";

/// Errors of the HLS module: requests that name no servable segment.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HlsError {
    /// The last path element is not `<number>.mp3` or `<number>.aac`.
    #[error("segment name {0:?}: expected <number>.mp3 or <number>.aac")]
    BadSegmentName(String),
    /// The segment has left the rewind buffer (or never was in it).
    #[error("segment {number} is no longer available (oldest is {oldest})")]
    SegmentGone {
        /// The segment asked for.
        number: u64,
        /// The oldest complete segment still available.
        oldest: u64,
    },
    /// The segment is still being written, or lies in the future.
    #[error("segment {number} is not complete yet")]
    SegmentNotReady {
        /// The segment asked for.
        number: u64,
    },
}
