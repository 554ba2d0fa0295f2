//! Chunks: the unit of the rewind buffer, shared by every reader without copying.

use std::sync::Arc;

use bytes::Bytes;

/// A title as it travels with the audio, with its ICY metadata block built once
/// so no listener ever formats it again.
#[derive(Debug)]
pub struct Title {
    text: String,
    icy_block: Bytes,
}

/// The longest title kept (the most an ICY block or an HLS ID3 frame carries).
pub const MAX_TITLE_BYTES: usize = 4080;

/// The longest ICY metadata payload: the length byte counts 16-byte units.
const ICY_MAX_PAYLOAD: usize = 255 * 16;

impl Title {
    /// Builds a title and its ICY block. A title longer than
    /// [`MAX_TITLE_BYTES`] is cut at a character boundary: no output can carry
    /// more, and dumps and the slave link then never meet an oversized one.
    pub fn new(text: impl Into<String>) -> Arc<Title> {
        let mut text = text.into();
        if text.len() > MAX_TITLE_BYTES {
            let mut end = MAX_TITLE_BYTES;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
        }
        let icy_block = icy_block(&text);
        Arc::new(Title { text, icy_block })
    }

    /// The title text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The ICY metadata block: a length byte and `StreamTitle='…';` padded with
    /// NULs to a multiple of 16 bytes. An empty title is the single byte 0.
    pub fn icy_block(&self) -> &Bytes {
        &self.icy_block
    }

    /// True when both carry the same text.
    pub fn same_as(self: &Arc<Self>, other: &Arc<Title>) -> bool {
        Arc::ptr_eq(self, other) || self.text == other.text
    }
}

/// Formats the ICY block. ICY has no escaping: players read up to the `';`
/// that ends the value, so a `';` inside a title would cut it short. Such a
/// quote becomes a typographic apostrophe; plain apostrophes ("Don't") are kept.
/// Control characters are dropped, and the payload is cut at a character
/// boundary so it fits the 4080-byte maximum.
fn icy_block(text: &str) -> Bytes {
    if text.is_empty() {
        return Bytes::from_static(&[0]);
    }
    let mut clean = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_control() {
            continue;
        }
        if c == '\'' && chars.peek() == Some(&';') {
            clean.push('\u{2019}');
        } else {
            clean.push(c);
        }
    }
    const PREFIX: &str = "StreamTitle='";
    const SUFFIX: &str = "';";
    let room = ICY_MAX_PAYLOAD - PREFIX.len() - SUFFIX.len();
    let mut end = clean.len().min(room);
    while !clean.is_char_boundary(end) {
        end -= 1;
    }
    let payload_len = PREFIX.len() + end + SUFFIX.len();
    let units = payload_len.div_ceil(16);
    let mut block = Vec::with_capacity(1 + units * 16);
    // units <= 255 because payload_len <= ICY_MAX_PAYLOAD.
    block.push(u8::try_from(units).unwrap_or(u8::MAX));
    block.extend_from_slice(PREFIX.as_bytes());
    block.extend_from_slice(&clean.as_bytes()[..end]);
    block.extend_from_slice(SUFFIX.as_bytes());
    block.resize(1 + units * 16, 0);
    Bytes::from(block)
}

/// Audio that a source produced, before the buffer gives it a place in time.
#[derive(Debug, Clone)]
pub struct ChunkDraft {
    /// Whole frames, back to back.
    pub data: Bytes,
    /// Byte offset of each frame inside `data` (the first is 0).
    pub frames: Box<[u32]>,
    /// Samples per channel per frame (constant within a chunk).
    pub samples_per_frame: u32,
    /// Sample rate in Hz (constant within a chunk).
    pub sample_rate: u32,
}

impl ChunkDraft {
    /// Samples per channel in the whole chunk.
    pub fn samples(&self) -> u64 {
        self.frames.len() as u64 * u64::from(self.samples_per_frame)
    }

    /// Audio duration in microseconds.
    pub fn duration_micros(&self) -> u64 {
        self.samples() * 1_000_000 / u64::from(self.sample_rate.max(1))
    }
}

/// One immutable piece of a stream, about a second long, starting on a frame.
#[derive(Debug)]
pub struct Chunk {
    /// Sequence number: monotonic per stream, never reused.
    pub seq: u64,
    /// Wall-clock time of the first sample, microseconds since the Unix epoch.
    pub ts_micros: i64,
    /// Stream audio time of the first sample: total audio duration before this
    /// chunk, in microseconds. Offsets ("N seconds back") are measured on it.
    pub audio_start_micros: u64,
    /// Stream byte offset of the first byte: total bytes before this chunk.
    pub byte_start: u64,
    /// True when the source had a gap (or changed) before this chunk.
    pub discontinuity: bool,
    /// HLS segment number (media sequence number) this chunk belongs to.
    pub hls_segment: u64,
    /// HLS discontinuity sequence number.
    pub hls_disc_seq: u64,
    /// First chunk of its HLS segment.
    pub hls_segment_start: bool,
    /// The title current when this audio arrived.
    pub title: Arc<Title>,
    /// The audio itself.
    pub draft: ChunkDraft,
}

impl Chunk {
    /// The audio bytes.
    pub fn data(&self) -> &Bytes {
        &self.draft.data
    }

    /// Audio duration in microseconds.
    pub fn duration_micros(&self) -> u64 {
        self.draft.duration_micros()
    }

    /// Stream audio time just after the last sample.
    pub fn audio_end_micros(&self) -> u64 {
        self.audio_start_micros + self.duration_micros()
    }

    /// Number of frames.
    pub fn frame_count(&self) -> usize {
        self.draft.frames.len()
    }

    /// Byte offset of frame `i` (the chunk's length for `i == frame_count()`).
    pub fn frame_offset(&self, i: usize) -> u32 {
        match self.draft.frames.get(i) {
            Some(o) => *o,
            None => self.draft.data.len() as u32,
        }
    }

    /// Audio duration of the first `i` frames, in microseconds.
    pub fn frames_micros(&self, i: usize) -> u64 {
        i as u64 * u64::from(self.draft.samples_per_frame) * 1_000_000
            / u64::from(self.draft.sample_rate.max(1))
    }

    /// The index of the frame at or after audio time `t` (micros from chunk start),
    /// rounded down to the frame containing `t`.
    pub fn frame_at_micros(&self, t: u64) -> usize {
        let per_frame = u64::from(self.draft.samples_per_frame) * 1_000_000;
        let rate = u64::from(self.draft.sample_rate.max(1));
        let i = (t * rate) / per_frame.max(1);
        (i as usize).min(self.frame_count())
    }

    /// The frame index that begins at byte `offset`, if one does.
    pub fn frame_index_of(&self, offset: u32) -> Option<usize> {
        self.draft.frames.binary_search(&offset).ok()
    }

    /// The view the HLS module works on.
    pub fn hls_view(&self) -> crate::hls::ChunkView<'_> {
        crate::hls::ChunkView {
            seq: self.seq,
            ts_micros: self.ts_micros,
            audio_start_micros: self.audio_start_micros,
            duration_micros: self.duration_micros(),
            segment: self.hls_segment,
            disc_seq: self.hls_disc_seq,
            segment_start: self.hls_segment_start,
            discontinuity: self.discontinuity,
            title: self.title.text(),
            len: self.draft.data.len(),
        }
    }

    /// Memory held for this chunk beyond the audio bytes (struct, frame table).
    pub fn overhead_bytes(&self) -> usize {
        std::mem::size_of::<Chunk>() + self.draft.frames.len() * 4
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn icy_block_is_padded_and_sized() {
        let t = Title::new("Artist - Song");
        let b = t.icy_block();
        let payload = b"StreamTitle='Artist - Song';";
        assert_eq!(b[0] as usize, payload.len().div_ceil(16));
        assert_eq!(b.len(), 1 + b[0] as usize * 16);
        assert_eq!(&b[1..1 + payload.len()], payload);
        assert!(b[1 + payload.len()..].iter().all(|&x| x == 0));
    }

    #[test]
    fn empty_title_is_a_zero_byte() {
        assert_eq!(&Title::new("").icy_block()[..], &[0]);
    }

    #[test]
    fn a_long_title_is_cut_at_a_character_boundary() {
        let long = "é".repeat(5000);
        let t = Title::new(long);
        assert_eq!(t.text().len(), MAX_TITLE_BYTES);
        assert!(t.text().chars().all(|c| c == 'é'));
    }

    #[test]
    fn quotes_keep_apostrophes_but_not_terminators() {
        let t = Title::new("Don't Stop';evil='x");
        let b = t.icy_block();
        let s = std::str::from_utf8(&b[1..]).unwrap().trim_end_matches('\0');
        assert_eq!(s, "StreamTitle='Don't Stop\u{2019};evil='x';");
        // The only `';` left is the terminator.
        assert_eq!(s.matches("';").count(), 1);
    }

    #[test]
    fn long_titles_are_cut_at_a_char_boundary() {
        let t = Title::new("é".repeat(5000));
        let b = t.icy_block();
        assert_eq!(b[0], 255);
        assert_eq!(b.len(), 1 + 4080);
        let s = std::str::from_utf8(&b[1..]).unwrap().trim_end_matches('\0');
        assert!(s.ends_with("é';"));
    }
}
