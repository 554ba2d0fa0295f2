//! The rewind dump format: a stream's rewind buffer as one versioned binary
//! file (or HTTP body), written and read chunk by chunk.
//!
//! A dump lets a restarted server (or a fresh replica) come back with its
//! hours of rewind audio instead of an empty buffer. It is written and read
//! as a stream: an 8-hour 128 kbit/s buffer is about 460 MB, so neither side
//! ever holds the encoded file in memory, and every decoded chunk owns an
//! exactly-sized [`Bytes`] so that evicting old chunks frees memory right
//! away.
//!
//! # Layout (format version 1)
//!
//! All integers are little-endian and fixed-width. Offsets are in bytes.
//!
//! ## File header
//!
//! | offset | size | field                                              |
//! |-------:|-----:|----------------------------------------------------|
//! | 0      | 8    | magic: ASCII `SMREWIND` (`53 4D 52 45 57 49 4E 44`)|
//! | 8      | 4    | format version, `u32` (= 1, [`FORMAT_VERSION`])    |
//! | 12     | 4    | `H`: length of the JSON header, `u32`              |
//! | 16     | `H`  | [`DumpHeader`] as UTF-8 JSON (unknown fields ignored on read) |
//!
//! ## Chunk record (repeated `header.chunks` times, from offset `16 + H`)
//!
//! | offset   | size | field                                            |
//! |---------:|-----:|--------------------------------------------------|
//! | 0        | 1    | record tag `0x43` (`'C'`)                        |
//! | 1        | 8    | `seq`, `u64`                                     |
//! | 9        | 8    | `ts_micros`, `i64`                               |
//! | 17       | 8    | `audio_start_micros`, `u64`                      |
//! | 25       | 8    | `byte_start`, `u64`                              |
//! | 33       | 8    | `hls_segment`, `u64`                             |
//! | 41       | 8    | `hls_disc_seq`, `u64`                            |
//! | 49       | 4    | `samples_per_frame`, `u32`                       |
//! | 53       | 4    | `sample_rate`, `u32`                             |
//! | 57       | 1    | flags: bit 0 `discontinuity`, bit 1 `hls_segment_start`, other bits 0 |
//! | 58       | 4    | `T`: title length in bytes, `u32`                |
//! | 62       | 4    | `F`: number of frames, `u32`                     |
//! | 66       | 4    | `D`: audio data length in bytes, `u32`           |
//! | 70       | `T`  | title, UTF-8                                     |
//! | 70+T     | `4F` | frame offsets, `u32` each                        |
//! | 70+T+4F  | `D`  | audio data                                       |
//!
//! A record is `70 + T + 4F + D` bytes.
//!
//! ## Trailer (13 bytes, last in the file)
//!
//! | offset | size | field                                                  |
//! |-------:|-----:|--------------------------------------------------------|
//! | 0      | 1    | record tag `0x45` (`'E'`)                              |
//! | 1      | 8    | number of chunk records, `u64`                         |
//! | 9      | 4    | CRC-32 (IEEE, as `crc32fast`) of every byte of the file before this field, from the magic through the record count |
//!
//! Nothing may follow the trailer.
//!
//! # Rules a reader enforces
//!
//! * The magic must match ([`DumpError::BadMagic`]) and the version must be
//!   one this build knows ([`DumpError::UnsupportedVersion`]).
//! * Every length is checked against [`Limits`] (and against the bytes left
//!   when the total length is known) before anything is allocated
//!   ([`DumpError::TooLarge`], [`DumpError::Truncated`]); buffers then grow
//!   at most 1 MiB ahead of the bytes actually read, so even a length within
//!   generous limits costs no memory that the input does not back.
//! * Records are consistent ([`DumpError::Inconsistent`]): sequence numbers run
//!   from `header.first_seq` by one up to `header.next_seq - 1`, there are
//!   exactly `header.chunks` of them (and the trailer agrees), the title is
//!   UTF-8, frame offsets start at 0, ascend strictly and stay inside the data,
//!   non-empty data has at least one frame, `sample_rate` and
//!   `samples_per_frame` are not 0, unknown flag bits are 0.
//! * The CRC matches ([`DumpError::Checksum`]) and nothing follows the trailer.
//!
//! The writer enforces the same rules (with [`Limits::default`]), so a dump it
//! produces is always readable with default limits.

use std::borrow::Borrow;
use std::fmt;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

mod read;

pub use read::{check_record, decode_record, decode_record_head, read_dump, read_dump_with};

/// The 8 bytes every dump starts with.
pub const MAGIC: [u8; 8] = *b"SMREWIND";

/// The format version this build writes, and the newest it reads.
pub const FORMAT_VERSION: u32 = 1;

/// Tag byte that opens a chunk record.
const TAG_CHUNK: u8 = b'C';
/// Tag byte that opens the trailer.
const TAG_END: u8 = b'E';
/// Bytes of a chunk record before its title (tag and fixed fields).
const RECORD_FIXED_LEN: usize = 70;
/// Flag bit: the chunk follows a gap.
const FLAG_DISCONTINUITY: u8 = 1;
/// Flag bit: the chunk opens an HLS segment.
const FLAG_HLS_SEGMENT_START: u8 = 2;
/// Variable-length fields are read (and allocated) in steps of at most this,
/// so a corrupt length costs no more memory than the bytes really present.
const READ_STEP: usize = 1 << 20;
/// I/O buffer size on both sides.
const IO_BUFFER: usize = 256 * 1024;

/// One chunk of the rewind buffer as it is saved: about a second of whole
/// MP3/ADTS frames with everything needed to put it back in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpChunk {
    /// Sequence number; contiguous within a dump.
    pub seq: u64,
    /// Wall-clock time of the first sample, microseconds since the Unix epoch.
    pub ts_micros: i64,
    /// Stream audio clock at the first sample, microseconds.
    pub audio_start_micros: u64,
    /// Stream byte offset of the first byte.
    pub byte_start: u64,
    /// True when the source had a gap (or changed) before this chunk.
    pub discontinuity: bool,
    /// HLS media sequence number of the segment this chunk belongs to.
    pub hls_segment: u64,
    /// HLS discontinuity sequence.
    pub hls_disc_seq: u64,
    /// True for the first chunk of its HLS segment.
    pub hls_segment_start: bool,
    /// Samples per channel per frame (not 0).
    pub samples_per_frame: u32,
    /// Sample rate in Hz (not 0).
    pub sample_rate: u32,
    /// Byte offset of each frame in `data`: the first is 0, strictly
    /// ascending, each below `data.len()`.
    pub frames: Vec<u32>,
    /// The title current when this audio arrived.
    pub title: String,
    /// Whole frames, back to back.
    pub data: Bytes,
}

/// What a dump is about, stored as JSON at the start of the file so that
/// fields can be added later: readers ignore fields they do not know.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DumpHeader {
    /// Stream name (mount).
    pub stream: String,
    /// Audio format: `"mp3"` or `"aac"`.
    pub format: String,
    /// Codec parameters key (bitrate, rate, channels) the chunks were cut
    /// with, if the stream has one; lets a loader refuse audio that no longer
    /// matches the stream's configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format_key: Option<String>,
    /// Rewind length configured when the dump was written, seconds.
    pub rewind_seconds: u32,
    /// When the dump was written, microseconds since the Unix epoch.
    pub created_micros: i64,
    /// Number of chunk records.
    pub chunks: u64,
    /// Sequence number of the first chunk (equals `next_seq` when empty).
    pub first_seq: u64,
    /// Sequence number after the last chunk: `first_seq + chunks`.
    pub next_seq: u64,
}

/// Bounds a reader applies before trusting any length in a dump, so that a
/// corrupt or hostile dump can neither exhaust memory nor run forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest JSON header, bytes (default 1 MiB).
    pub max_header_bytes: u32,
    /// Longest title, bytes (default 64 KiB).
    pub max_title_bytes: u32,
    /// Largest chunk audio data, bytes (default 16 MiB).
    pub max_chunk_bytes: u32,
    /// Most frames in one chunk (default 65536).
    pub max_frames: u32,
    /// Most chunks in one dump (default 4,194,304: about 48 days of 1 s chunks).
    pub max_chunks: u64,
    /// Total length of the dump when known (a file's length): no length field
    /// may point past it. `None` (the default) for a stream of unknown length.
    pub max_total_bytes: Option<u64>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: 1 << 20,
            max_title_bytes: 64 << 10,
            max_chunk_bytes: 16 << 20,
            max_frames: 65536,
            max_chunks: 1 << 22,
            max_total_bytes: None,
        }
    }
}

/// What a write produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DumpStats {
    /// Chunk records written.
    pub chunks: u64,
    /// Audio bytes in those chunks (the sum of `data.len()`).
    pub audio_bytes: u64,
    /// Bytes of the whole dump, trailer included.
    pub dump_bytes: u64,
    /// The CRC-32 stored in the trailer.
    pub crc32: u32,
}

/// Everything that can go wrong writing or reading a dump. A reader returns
/// one of these for any damage, never a partial result.
#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    /// The underlying reader or writer (or file system) failed.
    #[error("dump I/O error: {0}")]
    Io(#[from] io::Error),
    /// The data does not start with [`MAGIC`]: not a dump at all.
    #[error("not a rewind dump (bad magic bytes)")]
    BadMagic,
    /// A dump of a format version this build cannot read (newer, or 0).
    #[error("unsupported rewind dump version {0} (this build reads version {FORMAT_VERSION})")]
    UnsupportedVersion(u32),
    /// The dump ends (or a length field points) before the data it announces.
    #[error("rewind dump truncated at byte {at_byte}")]
    Truncated {
        /// Offset at which more bytes were needed.
        at_byte: u64,
    },
    /// The trailer's CRC-32 does not match the bytes.
    #[error(
        "rewind dump checksum mismatch: trailer says {expected:#010x}, content gives {found:#010x}"
    )]
    Checksum {
        /// The CRC stored in the trailer.
        expected: u32,
        /// The CRC of the bytes actually read.
        found: u32,
    },
    /// A length exceeds its [`Limits`] bound.
    #[error("rewind dump {what} is {len}, over the limit of {limit}")]
    TooLarge {
        /// Which length ("header", "title", "chunk data", "frame count", "chunk count").
        what: &'static str,
        /// The length found.
        len: u64,
        /// The limit it exceeds.
        limit: u64,
    },
    /// The dump (or the data given to the writer) breaks a format rule.
    #[error("inconsistent rewind dump: {0}")]
    Inconsistent(String),
}

/// Checks the header's own arithmetic and its chunk count against `limits`.
fn validate_header(header: &DumpHeader, limits: &Limits) -> Result<(), DumpError> {
    if header.chunks > limits.max_chunks {
        return Err(DumpError::TooLarge {
            what: "chunk count",
            len: header.chunks,
            limit: limits.max_chunks,
        });
    }
    match header.first_seq.checked_add(header.chunks) {
        Some(next) if next == header.next_seq => Ok(()),
        _ => Err(DumpError::Inconsistent(format!(
            "header says {} chunks from seq {} but next_seq {}",
            header.chunks, header.first_seq, header.next_seq
        ))),
    }
}

/// Checks one chunk's lengths against `limits` and its frame table and rates
/// against the format rules.
fn validate_chunk(chunk: &DumpChunk, limits: &Limits) -> Result<(), DumpError> {
    check_len("title", chunk.title.len(), limits.max_title_bytes)?;
    check_len("frame count", chunk.frames.len(), limits.max_frames)?;
    check_len("chunk data", chunk.data.len(), limits.max_chunk_bytes)?;
    let seq = chunk.seq;
    if chunk.sample_rate == 0 {
        return Err(DumpError::Inconsistent(format!(
            "chunk {seq}: sample_rate is 0"
        )));
    }
    if chunk.samples_per_frame == 0 {
        return Err(DumpError::Inconsistent(format!(
            "chunk {seq}: samples_per_frame is 0"
        )));
    }
    match chunk.frames.first() {
        None if !chunk.data.is_empty() => {
            return Err(DumpError::Inconsistent(format!(
                "chunk {seq}: {} data bytes but no frames",
                chunk.data.len()
            )));
        }
        Some(&first) if first != 0 => {
            return Err(DumpError::Inconsistent(format!(
                "chunk {seq}: first frame at offset {first}, not 0"
            )));
        }
        _ => {}
    }
    if let Some(w) = chunk.frames.windows(2).find(|w| w[0] >= w[1]) {
        return Err(DumpError::Inconsistent(format!(
            "chunk {seq}: frame offsets not ascending ({} then {})",
            w[0], w[1]
        )));
    }
    if let Some(&last) = chunk.frames.last() {
        if last as usize >= chunk.data.len() {
            return Err(DumpError::Inconsistent(format!(
                "chunk {seq}: frame at offset {last} outside {} data bytes",
                chunk.data.len()
            )));
        }
    }
    Ok(())
}

/// `TooLarge` unless `len <= limit`.
fn check_len(what: &'static str, len: usize, limit: u32) -> Result<(), DumpError> {
    if len as u64 > u64::from(limit) {
        return Err(DumpError::TooLarge {
            what,
            len: len as u64,
            limit: u64::from(limit),
        });
    }
    Ok(())
}

/// A length as the `u32` the format stores (already bounded by the limits).
fn len_u32(what: &'static str, len: usize) -> Result<u32, DumpError> {
    u32::try_from(len).map_err(|_| DumpError::TooLarge {
        what,
        len: len as u64,
        limit: u64::from(u32::MAX),
    })
}

/// Writes a dump chunk by chunk, for callers that cannot hand over an
/// iterator (for example because they copy chunks out of a locked buffer a
/// few at a time). [`write_dump`] is the one-call form.
///
/// Every chunk is validated before a byte of it is written; after any error
/// the writer refuses further use, and whatever was written is not a valid
/// dump (no trailer), so readers reject it.
pub struct DumpWriter<W: Write> {
    out: BufWriter<W>,
    crc: crc32fast::Hasher,
    limits: Limits,
    header_chunks: u64,
    next_seq: u64,
    chunks: u64,
    audio_bytes: u64,
    dump_bytes: u64,
    scratch: Vec<u8>,
    failed: bool,
}

impl<W: Write> fmt::Debug for DumpWriter<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DumpWriter")
            .field("header_chunks", &self.header_chunks)
            .field("next_seq", &self.next_seq)
            .field("chunks", &self.chunks)
            .field("audio_bytes", &self.audio_bytes)
            .field("dump_bytes", &self.dump_bytes)
            .field("failed", &self.failed)
            .finish()
    }
}

impl<W: Write> DumpWriter<W> {
    /// Starts a dump: validates `header` and writes the magic, version and
    /// JSON header. The chunks given afterwards must match the header
    /// (`header.chunks` of them, sequence numbers from `header.first_seq`).
    pub fn new(w: W, header: &DumpHeader) -> Result<Self, DumpError> {
        let limits = Limits::default();
        validate_header(header, &limits)?;
        let json = serde_json::to_vec(header)
            .map_err(|e| DumpError::Inconsistent(format!("header cannot be encoded: {e}")))?;
        check_len("header", json.len(), limits.max_header_bytes)?;
        let mut writer = DumpWriter {
            out: BufWriter::with_capacity(IO_BUFFER, w),
            crc: crc32fast::Hasher::new(),
            limits,
            header_chunks: header.chunks,
            next_seq: header.first_seq,
            chunks: 0,
            audio_bytes: 0,
            dump_bytes: 0,
            scratch: Vec::with_capacity(RECORD_FIXED_LEN),
            failed: false,
        };
        let mut start = [0u8; 16];
        start[..8].copy_from_slice(&MAGIC);
        start[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        start[12..16].copy_from_slice(&len_u32("header", json.len())?.to_le_bytes());
        writer.put(&start)?;
        writer.put(&json)?;
        Ok(writer)
    }

    /// Appends one chunk record. Its sequence number must be the next one
    /// and it must not exceed the header's chunk count.
    pub fn write_chunk(&mut self, chunk: &DumpChunk) -> Result<(), DumpError> {
        self.usable()?;
        let result = self.write_chunk_inner(chunk);
        if result.is_err() {
            self.failed = true;
        }
        result
    }

    fn write_chunk_inner(&mut self, chunk: &DumpChunk) -> Result<(), DumpError> {
        if self.chunks >= self.header_chunks {
            return Err(DumpError::Inconsistent(format!(
                "more chunks than the {} the header announces",
                self.header_chunks
            )));
        }
        if chunk.seq != self.next_seq {
            return Err(DumpError::Inconsistent(format!(
                "chunk seq {} where {} was expected",
                chunk.seq, self.next_seq
            )));
        }
        let mut rec = std::mem::take(&mut self.scratch);
        let encoded = encode_record_head(chunk, &self.limits, &mut rec);
        if let Err(e) = encoded {
            self.scratch = rec;
            return Err(e);
        }
        let result = self.put(&rec).and_then(|()| self.put(&chunk.data));
        self.scratch = rec;
        result?;
        self.chunks += 1;
        self.audio_bytes += chunk.data.len() as u64;
        // Cannot overflow: validate_header checked first_seq + chunks.
        self.next_seq = self.next_seq.saturating_add(1);
        Ok(())
    }

    /// Writes the trailer (record count and CRC) and flushes. Fails if fewer
    /// chunks were written than the header announced.
    pub fn finish(mut self) -> Result<DumpStats, DumpError> {
        self.usable()?;
        if self.chunks != self.header_chunks {
            return Err(DumpError::Inconsistent(format!(
                "{} chunks written but the header announces {}",
                self.chunks, self.header_chunks
            )));
        }
        let mut end = [0u8; 9];
        end[0] = TAG_END;
        end[1..].copy_from_slice(&self.chunks.to_le_bytes());
        self.put(&end)?;
        let crc32 = self.crc.clone().finalize();
        self.out.write_all(&crc32.to_le_bytes())?;
        self.out.flush()?;
        Ok(DumpStats {
            chunks: self.chunks,
            audio_bytes: self.audio_bytes,
            dump_bytes: self.dump_bytes + 4,
            crc32,
        })
    }

    fn usable(&self) -> Result<(), DumpError> {
        if self.failed {
            return Err(DumpError::Inconsistent(
                "dump writer used after an error".to_string(),
            ));
        }
        Ok(())
    }

    /// Writes bytes covered by the CRC.
    fn put(&mut self, bytes: &[u8]) -> Result<(), DumpError> {
        if let Err(e) = self.out.write_all(bytes) {
            self.failed = true;
            return Err(e.into());
        }
        self.crc.update(bytes);
        self.dump_bytes += bytes.len() as u64;
        Ok(())
    }
}

/// Writes a whole dump to `w`, encoding chunk by chunk through a buffer (the
/// dump is never built in memory). The chunks must match the header: exactly
/// `header.chunks` of them, sequence numbers `header.first_seq..header.next_seq`.
/// Items may be `&DumpChunk` or `DumpChunk`, so chunks can be converted from
/// the live buffer on the fly (`buffer.iter().map(to_dump_chunk)`).
/// Pass `&mut w` to keep the writer (for example to fsync a file).
pub fn write_dump<W, I>(w: W, header: &DumpHeader, chunks: I) -> Result<DumpStats, DumpError>
where
    W: Write,
    I: IntoIterator,
    I::Item: Borrow<DumpChunk>,
{
    let mut writer = DumpWriter::new(w, header)?;
    for chunk in chunks {
        writer.write_chunk(chunk.borrow())?;
    }
    writer.finish()
}

/// The exact length of the dump [`write_dump`] writes for `header` and
/// records of these sizes (title bytes, frames, audio bytes): an export can
/// announce its `Content-Length` before writing a byte.
pub fn dump_len<I>(header: &DumpHeader, records: I) -> Result<u64, DumpError>
where
    I: IntoIterator<Item = (usize, usize, usize)>,
{
    let json = serde_json::to_vec(header)
        .map_err(|e| DumpError::Inconsistent(format!("header cannot be encoded: {e}")))?;
    let body: u64 = records
        .into_iter()
        .map(|(title, frames, data)| (RECORD_FIXED_LEN + title + 4 * frames + data) as u64)
        .sum();
    Ok(16 + json.len() as u64 + body + TRAILER_LEN)
}

/// The trailer: tag, record count, CRC.
const TRAILER_LEN: u64 = 13;

/// Encodes a chunk record without its audio bytes (tag, fixed fields, title,
/// frame table) into `out` (cleared first); the record is `out` followed by
/// `chunk.data`. The master↔slave link sends chunks with this same encoding,
/// the data written straight from the shared buffer.
pub fn encode_record_head(
    chunk: &DumpChunk,
    limits: &Limits,
    out: &mut Vec<u8>,
) -> Result<(), DumpError> {
    validate_chunk(chunk, limits)?;
    let mut flags = 0u8;
    if chunk.discontinuity {
        flags |= FLAG_DISCONTINUITY;
    }
    if chunk.hls_segment_start {
        flags |= FLAG_HLS_SEGMENT_START;
    }
    out.clear();
    out.push(TAG_CHUNK);
    out.extend_from_slice(&chunk.seq.to_le_bytes());
    out.extend_from_slice(&chunk.ts_micros.to_le_bytes());
    out.extend_from_slice(&chunk.audio_start_micros.to_le_bytes());
    out.extend_from_slice(&chunk.byte_start.to_le_bytes());
    out.extend_from_slice(&chunk.hls_segment.to_le_bytes());
    out.extend_from_slice(&chunk.hls_disc_seq.to_le_bytes());
    out.extend_from_slice(&chunk.samples_per_frame.to_le_bytes());
    out.extend_from_slice(&chunk.sample_rate.to_le_bytes());
    out.push(flags);
    out.extend_from_slice(&len_u32("title", chunk.title.len())?.to_le_bytes());
    out.extend_from_slice(&len_u32("frame count", chunk.frames.len())?.to_le_bytes());
    out.extend_from_slice(&len_u32("chunk data", chunk.data.len())?.to_le_bytes());
    debug_assert_eq!(out.len(), RECORD_FIXED_LEN);
    out.extend_from_slice(chunk.title.as_bytes());
    for off in &chunk.frames {
        out.extend_from_slice(&off.to_le_bytes());
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn dump_len_is_what_write_dump_writes() {
        let (header, chunks, out) = small_dump();
        let sizes = chunks
            .iter()
            .map(|c| (c.title.len(), c.frames.len(), c.data.len()));
        assert_eq!(dump_len(&header, sizes).unwrap(), out.len() as u64);
    }

    /// A small deterministic PRNG (xorshift64*), so tests need no extra crate.
    pub(crate) struct Rng(u64);

    impl Rng {
        pub(crate) fn new(seed: u64) -> Self {
            Rng(seed.max(1))
        }

        pub(crate) fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            self.0 = x;
            x.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }

        /// Uniform in `0..n` (n > 0).
        pub(crate) fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }

        pub(crate) fn bytes(&mut self, len: usize) -> Vec<u8> {
            (0..len).map(|_| self.next() as u8).collect()
        }
    }

    pub(crate) fn header(first_seq: u64, chunks: u64) -> DumpHeader {
        DumpHeader {
            stream: "radio-1".to_string(),
            format: "mp3".to_string(),
            format_key: Some("mp3-128-44100-2".to_string()),
            rewind_seconds: 8 * 3600,
            created_micros: 1_700_000_000_000_000,
            chunks,
            first_seq,
            next_seq: first_seq + chunks,
        }
    }

    /// A chunk of `len` bytes cut into `frames` roughly equal frames.
    pub(crate) fn chunk(
        rng: &mut Rng,
        seq: u64,
        len: usize,
        frames: usize,
        title: &str,
    ) -> DumpChunk {
        let frames = if len == 0 { 0 } else { frames.clamp(1, len) };
        let offsets = (0..frames)
            .map(|i| (i * len / frames.max(1)) as u32)
            .collect();
        DumpChunk {
            seq,
            ts_micros: 1_700_000_000_000_000 + seq as i64 * 1_000_000,
            audio_start_micros: seq * 1_000_000,
            byte_start: seq * len as u64,
            discontinuity: seq % 17 == 3,
            hls_segment: seq / 10,
            hls_disc_seq: seq / 50,
            hls_segment_start: seq.is_multiple_of(10),
            samples_per_frame: 1152,
            sample_rate: 44_100,
            frames: offsets,
            title: title.to_string(),
            data: Bytes::from(rng.bytes(len)),
        }
    }

    pub(crate) fn encode(header: &DumpHeader, chunks: &[DumpChunk]) -> Vec<u8> {
        let mut buf = Vec::new();
        let stats = write_dump(&mut buf, header, chunks).unwrap();
        assert_eq!(stats.dump_bytes, buf.len() as u64);
        buf
    }

    /// A valid dump of three small chunks.
    pub(crate) fn small_dump() -> (DumpHeader, Vec<DumpChunk>, Vec<u8>) {
        let mut rng = Rng::new(7);
        let h = header(41, 3);
        let chunks = vec![
            chunk(&mut rng, 41, 40, 3, "A - B"),
            chunk(&mut rng, 42, 25, 2, ""),
            chunk(&mut rng, 43, 33, 4, "Ünïcødé 🎵"),
        ];
        let buf = encode(&h, &chunks);
        (h, chunks, buf)
    }

    /// Recomputes the trailer CRC so that a structural change is what the
    /// reader trips on.
    pub(crate) fn reseal(buf: &mut [u8]) {
        if buf.len() < 4 {
            return;
        }
        let n = buf.len() - 4;
        let crc = crc32fast::hash(&buf[..n]);
        buf[n..].copy_from_slice(&crc.to_le_bytes());
    }

    /// Offset of the first chunk record.
    fn first_record(buf: &[u8]) -> usize {
        16 + u32::from_le_bytes(buf[12..16].try_into().unwrap()) as usize
    }

    fn read(buf: &[u8]) -> Result<(DumpHeader, Vec<DumpChunk>), DumpError> {
        read_dump(buf, &Limits::default())
    }

    fn inconsistent(r: Result<(DumpHeader, Vec<DumpChunk>), DumpError>, needle: &str) {
        match r {
            Err(DumpError::Inconsistent(msg)) => {
                assert!(msg.contains(needle), "{msg:?} does not mention {needle:?}")
            }
            other => panic!("expected Inconsistent({needle}), got {other:?}"),
        }
    }

    #[test]
    fn single_records_round_trip_and_reject_damage() {
        let c = DumpChunk {
            seq: 7,
            ts_micros: -3,
            audio_start_micros: 9,
            byte_start: 11,
            discontinuity: true,
            hls_segment: 13,
            hls_disc_seq: 1,
            hls_segment_start: true,
            samples_per_frame: 1152,
            sample_rate: 44_100,
            frames: vec![0, 100],
            title: "Titel – ü".into(),
            data: Bytes::from(vec![0xAB; 200]),
        };
        let mut rec = Vec::new();
        encode_record_head(&c, &Limits::default(), &mut rec).unwrap();
        rec.extend_from_slice(&c.data);
        assert_eq!(decode_record(&rec, &Limits::default()).unwrap(), c);
        for cut in 0..rec.len() {
            assert!(
                decode_record(&rec[..cut], &Limits::default()).is_err(),
                "cut at {cut}"
            );
        }
        let mut longer = rec.clone();
        longer.push(0);
        assert!(decode_record(&longer, &Limits::default()).is_err());
    }

    #[test]
    fn round_trip_of_varied_chunks() {
        let mut rng = Rng::new(1);
        let long_title = "Long title ".repeat(1000); // 11 000 bytes
        let titles = [
            "",
            "Artist - Song",
            "Ünïcødé – 日本語 🎵",
            long_title.as_str(),
        ];
        let n = 300u64;
        let first = 1_000_000u64;
        let chunks: Vec<DumpChunk> = (0..n)
            .map(|i| {
                let seq = first + i;
                let (len, frames) = match i % 100 {
                    7 => (1 << 20, 2500), // 1 MiB chunk
                    8 => (0, 0),          // empty chunk
                    9 => (1, 1),          // a single one-byte frame
                    _ => (16_000, 38),
                };
                let mut c = chunk(&mut rng, seq, len, frames, titles[(i / 5) as usize % 4]);
                if i % 31 == 0 {
                    c.ts_micros = -(i as i64) * 7; // before the epoch still round-trips
                    c.hls_disc_seq = u64::MAX - i;
                }
                c
            })
            .collect();
        assert!(chunks.iter().any(|c| c.discontinuity));
        let h = header(first, n);
        let mut buf = Vec::new();
        let stats = write_dump(&mut buf, &h, chunks.iter()).unwrap();
        assert_eq!(stats.chunks, n);
        assert_eq!(stats.dump_bytes, buf.len() as u64);
        assert_eq!(
            stats.audio_bytes,
            chunks.iter().map(|c| c.data.len() as u64).sum::<u64>()
        );
        let limits = Limits {
            max_total_bytes: Some(buf.len() as u64),
            ..Limits::default()
        };
        let (h2, chunks2) = read_dump(&buf[..], &limits).unwrap();
        assert_eq!(h2, h);
        assert_eq!(chunks2, chunks);

        // Owned items (converted on the fly) encode the same bytes.
        let mut owned = Vec::new();
        write_dump(&mut owned, &h, chunks.iter().cloned()).unwrap();
        assert!(owned == buf);
    }

    #[test]
    fn empty_dump_round_trips() {
        let h = header(5, 0);
        let buf = encode(&h, &[]);
        assert_eq!(read(&buf).unwrap(), (h, Vec::new()));
    }

    /// A reader that hands out a few bytes at a time and is sometimes interrupted.
    struct Trickle<'a> {
        data: &'a [u8],
        calls: u64,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.calls += 1;
            if self.calls.is_multiple_of(5) {
                return Err(io::Error::new(io::ErrorKind::Interrupted, "again"));
            }
            let n = buf
                .len()
                .min(self.data.len())
                .min((self.calls % 7 + 1) as usize);
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    #[test]
    fn reads_through_short_and_interrupted_reads() {
        let (h, chunks, buf) = small_dump();
        let got = read_dump(
            Trickle {
                data: &buf,
                calls: 0,
            },
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(got, (h, chunks));
    }

    #[test]
    fn each_chunk_owns_an_exactly_sized_buffer() {
        let mut rng = Rng::new(11);
        // Sizes around the read step, so that multi-step reads are covered.
        let sizes = [
            1usize,
            16_000,
            READ_STEP - 1,
            READ_STEP,
            READ_STEP + 1,
            1_500_000,
        ];
        let chunks: Vec<DumpChunk> = sizes
            .iter()
            .enumerate()
            .map(|(i, &len)| chunk(&mut rng, i as u64, len, 40, "t"))
            .collect();
        let buf = encode(&header(0, sizes.len() as u64), &chunks);
        let (_, chunks) = read(&buf).unwrap();
        // Distinct allocations: no chunk's data lies inside the input buffer
        // or overlaps another chunk's.
        let in_input = |p: *const u8| buf.as_ptr_range().contains(&p);
        for (i, a) in chunks.iter().enumerate() {
            assert!(!in_input(a.data.as_ptr()));
            for b in &chunks[i + 1..] {
                let (ra, rb) = (a.data.as_ptr_range(), b.data.as_ptr_range());
                assert!(ra.end <= rb.start || rb.end <= ra.start);
            }
        }
        for c in chunks {
            let len = c.data.len();
            // The only handle on its buffer, and the buffer is exactly the data.
            let owned = c.data.try_into_mut().expect("data shares its buffer");
            assert_eq!(owned.capacity(), len);
        }
    }

    #[test]
    fn every_truncation_is_an_error() {
        let (_, _, buf) = small_dump();
        for n in 0..buf.len() {
            match read(&buf[..n]) {
                Err(DumpError::Truncated { at_byte }) => {
                    assert_eq!(at_byte, n as u64, "prefix {n}")
                }
                other => panic!("prefix of {n} bytes: {other:?}"),
            }
            // The same with the length known up front, as `load` reads files.
            let limits = Limits {
                max_total_bytes: Some(n as u64),
                ..Limits::default()
            };
            match read_dump(&buf[..n], &limits) {
                Err(DumpError::Truncated { at_byte }) => assert!(at_byte <= n as u64),
                other => panic!("prefix of {n} bytes, length known: {other:?}"),
            }
        }
        assert!(read(&buf).is_ok());
    }

    #[test]
    fn every_byte_flip_is_an_error() {
        let (_, _, buf) = small_dump();
        let mut checksum = 0;
        for pos in 0..buf.len() {
            for x in [0x01u8, 0x80, 0xFF] {
                let mut bad = buf.clone();
                bad[pos] ^= x;
                match read(&bad) {
                    Ok(_) => panic!("flip {x:#04x} at {pos} read fine"),
                    Err(DumpError::Checksum { .. }) => checksum += 1,
                    Err(_) => {}
                }
            }
        }
        // Most flips land in the audio and are caught by the CRC alone.
        assert!(checksum > buf.len(), "only {checksum} checksum errors");
    }

    #[test]
    fn garbage_is_bad_magic() {
        let mut rng = Rng::new(99);
        for len in [1usize, 7, 8, 100, 10_000] {
            let mut junk = rng.bytes(len);
            junk[0] = b'x';
            assert!(matches!(read(&junk), Err(DumpError::BadMagic)), "len {len}");
        }
        assert!(matches!(
            read(b"SMREWINX and more"),
            Err(DumpError::BadMagic)
        ));
        assert!(matches!(
            read(b""),
            Err(DumpError::Truncated { at_byte: 0 })
        ));
        assert!(matches!(
            read(b"SMRE"),
            Err(DumpError::Truncated { at_byte: 4 })
        ));
    }

    #[test]
    fn newer_and_zero_versions_are_rejected() {
        let (_, _, buf) = small_dump();
        for v in [2u32, 0, u32::MAX] {
            let mut bad = buf.clone();
            bad[8..12].copy_from_slice(&v.to_le_bytes());
            reseal(&mut bad);
            match read(&bad) {
                Err(DumpError::UnsupportedVersion(n)) => assert_eq!(n, v),
                other => panic!("version {v}: {other:?}"),
            }
        }
        let msg = DumpError::UnsupportedVersion(2).to_string();
        assert!(msg.contains("version 2"), "{msg}");
    }

    #[test]
    fn huge_lengths_hit_limits_before_allocating() {
        let (_, _, buf) = small_dump();
        let rec = first_record(&buf);

        let mut bad = buf.clone();
        bad[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            read(&bad),
            Err(DumpError::TooLarge {
                what: "header",
                len: 0xFFFF_FFFF,
                limit: 1_048_576
            })
        ));

        for (field, what) in [(58, "title"), (62, "frame count"), (66, "chunk data")] {
            let mut bad = buf.clone();
            bad[rec + field..rec + field + 4].copy_from_slice(&u32::MAX.to_le_bytes());
            match read(&bad) {
                Err(DumpError::TooLarge { what: w, len, .. }) => {
                    assert_eq!((w, len), (what, u64::from(u32::MAX)))
                }
                other => panic!("{what}: {other:?}"),
            }
        }

        // With the limits lifted, a known length still stops a lying field
        // before any allocation, and an unknown one allocates only in steps
        // as bytes arrive (this would take seconds and 4 GiB otherwise).
        let open = Limits {
            max_header_bytes: u32::MAX,
            max_title_bytes: u32::MAX,
            max_chunk_bytes: u32::MAX,
            max_frames: u32::MAX,
            max_chunks: u64::MAX,
            max_total_bytes: None,
        };
        let mut bad = buf.clone();
        bad[rec + 66..rec + 70].copy_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
        let known = Limits {
            max_total_bytes: Some(bad.len() as u64),
            ..open
        };
        assert!(matches!(
            read_dump(&bad[..], &known),
            Err(DumpError::Truncated { at_byte }) if at_byte == bad.len() as u64
        ));
        assert!(matches!(
            read_dump(&bad[..], &open),
            Err(DumpError::Truncated { .. })
        ));

        // The chunk count too.
        let tight = Limits {
            max_chunks: 2,
            ..Limits::default()
        };
        assert!(matches!(
            read_dump(&buf[..], &tight),
            Err(DumpError::TooLarge {
                what: "chunk count",
                len: 3,
                limit: 2
            })
        ));
    }

    /// Replaces the JSON header and fixes the length and CRC.
    fn with_json(buf: &[u8], json: &str) -> Vec<u8> {
        let rec = first_record(buf);
        let mut out = buf[..12].to_vec();
        out.extend_from_slice(&(json.len() as u32).to_le_bytes());
        out.extend_from_slice(json.as_bytes());
        out.extend_from_slice(&buf[rec..]);
        reseal(&mut out);
        out
    }

    #[test]
    fn unknown_header_fields_are_ignored() {
        let (h, chunks, buf) = small_dump();
        let mut value = serde_json::to_value(&h).unwrap();
        value["added_in_v1_5"] = serde_json::json!({"nested": [1, 2, 3]});
        value["bitrate"] = serde_json::json!(128);
        let out = with_json(&buf, &value.to_string());
        assert_eq!(read(&out).unwrap(), (h.clone(), chunks));

        // format_key may be absent.
        let mut plain = h.clone();
        plain.format_key = None;
        let json = serde_json::to_string(&plain).unwrap();
        assert!(!json.contains("format_key"));
        assert_eq!(read(&with_json(&buf, &json)).unwrap().0, plain);

        // Not JSON, or missing a required field.
        inconsistent(read(&with_json(&buf, "{not json")), "JSON");
        inconsistent(read(&with_json(&buf, r#"{"stream":"x"}"#)), "JSON");
        // Arithmetic that does not add up.
        let mut wrong = h;
        wrong.next_seq += 1;
        inconsistent(
            read(&with_json(&buf, &serde_json::to_string(&wrong).unwrap())),
            "next_seq",
        );
    }

    #[test]
    fn structural_damage_is_inconsistent() {
        let (h, _, buf) = small_dump();
        let rec = first_record(&buf);
        let patch = |at: usize, bytes: &[u8]| {
            let mut bad = buf.clone();
            bad[at..at + bytes.len()].copy_from_slice(bytes);
            reseal(&mut bad);
            read(&bad)
        };
        inconsistent(patch(rec, b"X"), "unknown record tag");
        inconsistent(patch(rec + 1, &40u64.to_le_bytes()), "seq 40 where 41");
        inconsistent(patch(rec + 53, &0u32.to_le_bytes()), "sample_rate is 0");
        inconsistent(
            patch(rec + 49, &0u32.to_le_bytes()),
            "samples_per_frame is 0",
        );
        inconsistent(patch(rec + 57, &[4]), "unknown flags");
        // Title "A - B" becomes invalid UTF-8.
        inconsistent(patch(rec + 70, &[0xFF]), "UTF-8");
        // Frames of the first chunk (3 frames after the 5-byte title).
        let frames = rec + 70 + 5;
        inconsistent(patch(frames, &1u32.to_le_bytes()), "not 0");
        inconsistent(patch(frames + 4, &0u32.to_le_bytes()), "not ascending");
        inconsistent(patch(frames + 8, &40u32.to_le_bytes()), "outside");
        // Trailer count disagrees.
        let count_at = buf.len() - 12;
        inconsistent(patch(count_at, &2u64.to_le_bytes()), "trailer counts 2");
        // Bytes after the trailer.
        let mut longer = buf.clone();
        longer.push(0);
        inconsistent(read(&longer), "after the trailer");
        // A record beyond the announced count: header says 2, three follow.
        let mut fewer = h.clone();
        fewer.chunks = 2;
        fewer.next_seq = 43;
        let two = with_json(&buf, &serde_json::to_string(&fewer).unwrap());
        inconsistent(read(&two), "beyond the 2");
        // The trailer arrives early: header says 4.
        let mut more = h;
        more.chunks = 4;
        more.next_seq = 45;
        let four = with_json(&buf, &serde_json::to_string(&more).unwrap());
        inconsistent(read(&four), "header announces 4");
    }

    #[test]
    fn checksum_error_reports_both_values() {
        let (_, _, buf) = small_dump();
        let n = buf.len();
        let mut bad = buf.clone();
        bad[n - 20] ^= 0x10; // inside the last chunk's audio
        match read(&bad) {
            Err(DumpError::Checksum { expected, found }) => {
                assert_eq!(
                    expected,
                    u32::from_le_bytes(buf[n - 4..].try_into().unwrap())
                );
                assert_eq!(found, crc32fast::hash(&bad[..n - 4]));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn writer_refuses_what_readers_would_reject() {
        let mut rng = Rng::new(3);
        let h = header(10, 2);
        let good = [
            chunk(&mut rng, 10, 50, 2, "t"),
            chunk(&mut rng, 11, 50, 2, "t"),
        ];
        let write = |h: &DumpHeader, chunks: &[DumpChunk]| write_dump(Vec::new(), h, chunks);

        assert!(write(&h, &good).is_ok());
        inconsistent_w(write(&h, &good[..1]), "1 chunks written");
        inconsistent_w(
            write(&h, &[good[0].clone(), good[0].clone()]),
            "seq 10 where 11",
        );
        inconsistent_w(write(&header(10, 1), &good), "more chunks than the 1");
        let mut bad_header = h.clone();
        bad_header.next_seq = 99;
        inconsistent_w(write(&bad_header, &good), "next_seq");

        let mut c = good[1].clone();
        c.frames = vec![0, 30, 20];
        inconsistent_w(write(&h, &[good[0].clone(), c]), "not ascending");
        let mut c = good[1].clone();
        c.frames.clear();
        inconsistent_w(write(&h, &[good[0].clone(), c]), "no frames");
        let mut c = good[1].clone();
        c.sample_rate = 0;
        inconsistent_w(write(&h, &[good[0].clone(), c]), "sample_rate");
        let mut c = good[1].clone();
        c.title = "x".repeat(64 * 1024 + 1);
        assert!(matches!(
            write(&h, &[good[0].clone(), c]),
            Err(DumpError::TooLarge { what: "title", .. })
        ));

        // After an error the writer is unusable.
        let mut w = DumpWriter::new(Vec::new(), &h).unwrap();
        assert!(w.write_chunk(&good[1]).is_err());
        assert!(w.write_chunk(&good[0]).is_err());
        assert!(w.finish().is_err());
    }

    fn inconsistent_w(r: Result<DumpStats, DumpError>, needle: &str) {
        match r {
            Err(DumpError::Inconsistent(msg)) => {
                assert!(msg.contains(needle), "{msg:?} does not mention {needle:?}")
            }
            other => panic!("expected Inconsistent({needle}), got {other:?}"),
        }
    }

    /// Fails after `budget` bytes.
    struct Failing {
        budget: usize,
    }

    impl Read for Failing {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.budget == 0 {
                return Err(io::Error::other("disk on fire"));
            }
            let n = buf.len().min(self.budget);
            buf[..n].fill(0);
            self.budget -= n;
            Ok(n)
        }
    }

    impl Write for Failing {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.budget == 0 {
                return Err(io::Error::other("disk full"));
            }
            let n = buf.len().min(self.budget);
            self.budget -= n;
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn io_errors_surface_as_io() {
        let (h, chunks, _) = small_dump();
        assert!(matches!(
            write_dump(Failing { budget: 100 }, &h, &chunks),
            Err(DumpError::Io(_))
        ));
        let (_, _, buf) = small_dump();
        let mut failing = buf.clone();
        failing.truncate(50);
        let r = read_dump(
            io::Read::chain(&failing[..], Failing { budget: 0 }),
            &Limits::default(),
        );
        assert!(matches!(r, Err(DumpError::Io(_))), "{r:?}");
    }

    /// Applies one random mutation; returns whether the CRC was fixed up.
    fn mutate(rng: &mut Rng, buf: &mut Vec<u8>) -> bool {
        if buf.is_empty() {
            buf.push(rng.next() as u8);
            return false;
        }
        let len = buf.len() as u64;
        match rng.below(8) {
            0 => {
                for _ in 0..=rng.below(4) {
                    let at = rng.below(len) as usize;
                    buf[at] ^= 1 << rng.below(8);
                }
            }
            1 => {
                let at = rng.below(len) as usize;
                buf[at] = rng.next() as u8;
            }
            2 => buf.truncate(rng.below(len) as usize),
            3 => {
                let n = rng.below(64) as usize + 1;
                let extra = rng.bytes(n);
                let at = rng.below(len + 1) as usize;
                buf.splice(at..at, extra);
            }
            4 => {
                let a = rng.below(len) as usize;
                let b = (a + rng.below(200) as usize).min(buf.len());
                let piece = buf[a..b].to_vec();
                let at = rng.below(len) as usize;
                buf.splice(at..at, piece);
            }
            5 => {
                let a = rng.below(len) as usize;
                let b = (a + rng.below(100) as usize).min(buf.len());
                buf.drain(a..b);
            }
            _ => {
                // A random or extreme u32 somewhere: length fields are the target.
                let at = rng.below(len.saturating_sub(4).max(1)) as usize;
                let v = match rng.below(4) {
                    0 => u32::MAX,
                    1 => 0,
                    2 => rng.below(1 << 20) as u32,
                    _ => rng.next() as u32,
                };
                if at + 4 <= buf.len() {
                    buf[at..at + 4].copy_from_slice(&v.to_le_bytes());
                }
            }
        }
        // Half the time fix the CRC so mutations reach the structural checks.
        if rng.below(2) == 0 {
            reseal(buf);
            true
        } else {
            false
        }
    }

    #[test]
    fn fuzzed_dumps_never_panic_or_lie() {
        let mut rng = Rng::new(0x5EED);
        let (h, chunks, buf) = small_dump();
        let mut oks = 0;
        for round in 0..20_000 {
            let mut bad = buf.clone();
            let mut resealed = false;
            for _ in 0..=rng.below(3) {
                resealed |= mutate(&mut rng, &mut bad);
            }
            let limits = if round % 2 == 0 {
                Limits::default()
            } else {
                Limits {
                    max_total_bytes: Some(bad.len() as u64),
                    ..Limits::default()
                }
            };
            let Ok((h2, chunks2)) = read_dump(&bad[..], &limits) else {
                continue;
            };
            oks += 1;
            if bad == buf || !resealed {
                // Without a CRC fix-up, only the original may read fine.
                assert_eq!((&h2, &chunks2), (&h, &chunks), "round {round}");
            } else {
                // Whatever a reader accepts, the writer accepts and reproduces.
                let again = encode(&h2, &chunks2);
                assert_eq!(read(&again).unwrap(), (h2, chunks2), "round {round}");
            }
        }
        assert!(oks < 20_000);
    }
}
