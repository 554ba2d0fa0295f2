//! The rewind buffer: hours of one stream's chunks in memory.
//!
//! Append and eviction are O(1) (a `VecDeque`), finding a chunk by sequence
//! number is O(1) (sequence numbers are contiguous inside the buffer), and
//! seeking by audio offset or wall-clock time is a binary search.

use std::collections::VecDeque;
use std::sync::Arc;

use super::chunk::{Chunk, ChunkDraft, Title};
use crate::hls::{ResumePoint, Segmenter};

/// HLS segment length when the stream does not set one.
pub const DEFAULT_SEGMENT_SECONDS: u32 = 10;

/// A place in a stream: a chunk and a byte offset inside it.
/// `offset` is 0 or a frame boundary for every start position.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    /// Sequence number of the chunk (may be the next, not yet written, chunk).
    pub seq: u64,
    /// Byte offset inside that chunk.
    pub offset: u32,
}

/// A source that stalls longer than this beyond real time leaves a gap in the
/// timeline (and an HLS discontinuity) instead of being stitched on.
const GAP_TOLERANCE_MICROS: i64 = 2_000_000;

/// How far a chunk's end may run ahead of the wall clock before timestamps
/// are compressed: a real-time source's chunk often completes a few ms
/// before its audio clock says (network and encoder jitter), and clamping
/// those to "now" made the timeline (HLS `PROGRAM-DATE-TIME`) jump back.
const AHEAD_TOLERANCE_MICROS: i64 = 1_000_000;

/// One stream's chunks, oldest first.
#[derive(Debug)]
pub struct RewindBuffer {
    chunks: VecDeque<Arc<Chunk>>,
    max_micros: u64,
    next_seq: u64,
    audio_end: u64,
    byte_end: u64,
    last_end_ts: i64,
    bytes: usize,
    overhead: usize,
    micros: u64,
    segment_seconds: u32,
    segmenter: Segmenter,
    /// Replica chunks were appended: the segmenter resumes from them before
    /// numbering a chunk of our own.
    segmenter_stale: bool,
    /// Where the chunks' audio is kept (see [`super::arena`]).
    arena: Arc<super::arena::Arena>,
}

impl RewindBuffer {
    /// An empty buffer keeping `rewind_seconds` of audio; numbering starts at `first_seq`.
    pub fn new(rewind_seconds: u32, first_seq: u64) -> Self {
        RewindBuffer {
            chunks: VecDeque::new(),
            max_micros: u64::from(rewind_seconds) * 1_000_000,
            next_seq: first_seq,
            audio_end: 0,
            byte_end: 0,
            last_end_ts: i64::MIN,
            bytes: 0,
            overhead: 0,
            micros: 0,
            segment_seconds: DEFAULT_SEGMENT_SECONDS,
            segmenter: Segmenter::new(DEFAULT_SEGMENT_SECONDS),
            segmenter_stale: false,
            arena: Arc::new(super::arena::Arena::new()),
        }
    }

    /// Sets the HLS segment length; numbering continues.
    pub fn set_segment_seconds(&mut self, seconds: u32) {
        if seconds != self.segment_seconds {
            self.segment_seconds = seconds;
            self.segmenter = match self.segmenter.resume_point().cloned() {
                Some(p) => Segmenter::resume(seconds, p),
                None => Segmenter::new(seconds),
            };
        }
    }

    /// Where this buffer keeps its audio: bytes stored there ahead of an
    /// append (a dump being read) are kept as they are, not copied again.
    pub fn arena(&self) -> &Arc<super::arena::Arena> {
        &self.arena
    }

    /// The HLS segment length.
    pub fn segment_seconds(&self) -> u32 {
        self.segment_seconds
    }

    /// The chunks, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Chunk>> {
        self.chunks.iter()
    }

    /// The chunks with sequence numbers in `range`.
    pub fn range(&self, range: std::ops::Range<u64>) -> impl Iterator<Item = &Arc<Chunk>> {
        range.filter_map(|seq| self.get(seq))
    }

    /// Fills an empty buffer with restored chunks (from a dump), keeping their
    /// numbers and times; appends continue after the last one.
    pub fn restore(&mut self, chunks: Vec<Chunk>) {
        if !self.chunks.is_empty() {
            return;
        }
        for c in chunks {
            self.push_stamped(c);
        }
        if let Some(p) = ResumePoint::from_chunks(self.chunks.iter().map(|c| c.hls_view())) {
            self.segmenter = Segmenter::resume(self.segment_seconds, p);
        }
        self.evict();
    }

    /// Appends a chunk that already has its numbers and times (a replica of
    /// the master's). Returns false for a chunk already held (a duplicate); a
    /// gap (a chunk beyond the next) empties the buffer first, since chunks
    /// must be contiguous.
    pub fn append_replica(&mut self, c: Chunk) -> bool {
        if !self.chunks.is_empty() {
            if c.seq < self.next_seq {
                return false;
            }
            if c.seq > self.next_seq {
                self.clear();
            }
        }
        self.push_stamped(c);
        self.evict();
        self.segmenter_stale = true;
        true
    }

    /// Empties the buffer and continues numbering at `next_seq` (a master's reset).
    pub fn reset_to(&mut self, next_seq: u64) {
        self.clear();
        self.next_seq = next_seq;
    }

    fn push_stamped(&mut self, mut c: Chunk) {
        c.draft.data = self.arena.store(std::mem::take(&mut c.draft.data));
        self.next_seq = c.seq + 1;
        self.audio_end = c.audio_end_micros();
        self.byte_end = c.byte_start + c.data().len() as u64;
        self.last_end_ts = c.ts_micros + i64::try_from(c.duration_micros()).unwrap_or(0);
        self.bytes += c.data().len();
        self.overhead += c.overhead_bytes();
        self.micros += c.duration_micros();
        self.chunks.push_back(Arc::new(c));
    }

    /// Appends a chunk, stamping its sequence number and wall-clock time.
    ///
    /// Time comes from the audio clock: a chunk follows the previous one
    /// (`continuous`, same source) at exactly the previous one's end, as long as
    /// that is not more than [`AHEAD_TOLERANCE_MICROS`] in the future (a source
    /// bursting faster than real time gets compressed timestamps beyond that)
    /// and not more than a gap tolerance in the past (a stalled source leaves
    /// a gap). A chunk from a new
    /// source starts `duration` before `now_micros`, never before the previous end.
    pub fn append(
        &mut self,
        draft: ChunkDraft,
        title: Arc<Title>,
        now_micros: i64,
        continuous: bool,
    ) -> Arc<Chunk> {
        let mut draft = draft;
        draft.data = self.arena.store(std::mem::take(&mut draft.data));
        let d = i64::try_from(draft.duration_micros()).unwrap_or(i64::MAX);
        let had_any = self.last_end_ts != i64::MIN;
        // Plus one chunk: a new source's first chunk, pushed after the
        // previous source's end (its audio overlapped that end by up to its
        // own length when it took over or came back), runs that far ahead
        // for as long as it plays in real time; compressing it would make
        // every PROGRAM-DATE-TIME of it disagree with the EXTINF before.
        let limit = now_micros + AHEAD_TOLERANCE_MICROS + d;
        let (start, discontinuity) = if had_any && continuous {
            let on_clock = self.last_end_ts;
            if now_micros - (on_clock + d) > GAP_TOLERANCE_MICROS {
                (now_micros - d, true)
            } else {
                (on_clock.min(limit), false)
            }
        } else {
            ((now_micros - d).max(self.last_end_ts), had_any)
        };
        let end = (start + d).min(limit).max(start);
        if self.segmenter_stale {
            self.segmenter_stale = false;
            if let Some(p) = ResumePoint::from_chunks(self.chunks.iter().map(|c| c.hls_view())) {
                self.segmenter = Segmenter::resume(self.segment_seconds, p);
            }
        }
        let hls = self
            .segmenter
            .assign(start, d.unsigned_abs(), discontinuity, title.text());
        let chunk = Arc::new(Chunk {
            seq: self.next_seq,
            ts_micros: start,
            audio_start_micros: self.audio_end,
            byte_start: self.byte_end,
            discontinuity,
            hls_segment: hls.segment,
            hls_disc_seq: hls.disc_seq,
            hls_segment_start: hls.segment_start,
            title,
            draft,
        });
        self.next_seq += 1;
        self.last_end_ts = end;
        self.audio_end += chunk.duration_micros();
        self.byte_end += chunk.data().len() as u64;
        self.bytes += chunk.data().len();
        self.overhead += chunk.overhead_bytes();
        self.micros += chunk.duration_micros();
        self.chunks.push_back(Arc::clone(&chunk));
        self.evict();
        chunk
    }

    /// Drops the oldest chunks while the rest still hold `rewind_seconds`.
    fn evict(&mut self) {
        while let Some(front) = self.chunks.front() {
            let d = front.duration_micros();
            if self.micros - d < self.max_micros {
                break;
            }
            self.micros -= d;
            self.bytes -= front.data().len();
            self.overhead -= front.overhead_bytes();
            self.chunks.pop_front();
        }
    }

    /// Changes the rewind length; shrinking evicts at once.
    pub fn set_rewind_seconds(&mut self, seconds: u32) {
        self.max_micros = u64::from(seconds) * 1_000_000;
        self.evict();
    }

    /// The chunk with sequence number `seq`, if it is still (or already) held.
    pub fn get(&self, seq: u64) -> Option<&Arc<Chunk>> {
        let first = self.chunks.front()?.seq;
        let i = usize::try_from(seq.checked_sub(first)?).ok()?;
        self.chunks.get(i)
    }

    /// Where numbering stands: the next sequence number, and the last HLS
    /// segment and discontinuity numbers used (kept across a clear).
    pub fn numbering(&self) -> (u64, Option<(u64, u64)>) {
        let from_chunk = self.chunks.back().map(|c| (c.hls_segment, c.hls_disc_seq));
        let from_segmenter = self
            .segmenter
            .resume_point()
            .map(|p| (p.segment, p.disc_seq));
        let last = match (from_chunk, from_segmenter) {
            (Some(a), Some(b)) => Some((a.0.max(b.0), a.1.max(b.1))),
            (a, b) => a.or(b),
        };
        (self.next_seq, last)
    }

    /// The chunk at `index` (0 = oldest).
    pub fn at(&self, index: usize) -> Option<&Arc<Chunk>> {
        self.chunks.get(index)
    }

    /// Index of the first chunk whose HLS segment is `number` or later
    /// (segment numbers grow with sequence numbers): a binary search.
    pub fn first_of_segment(&self, number: u64) -> usize {
        self.chunks.partition_point(|c| c.hls_segment < number)
    }

    /// Sequence number of the oldest chunk held (the next one when empty).
    pub fn first_seq(&self) -> u64 {
        self.chunks.front().map_or(self.next_seq, |c| c.seq)
    }

    /// Sequence number the next chunk will get.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The newest chunk.
    pub fn last(&self) -> Option<&Arc<Chunk>> {
        self.chunks.back()
    }

    /// The oldest chunk.
    pub fn first(&self) -> Option<&Arc<Chunk>> {
        self.chunks.front()
    }

    /// Number of chunks held.
    pub fn len(&self) -> usize {
        self.chunks.len()
    }

    /// True before the first chunk.
    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// Audio bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Bookkeeping bytes held beyond the audio (chunk structs, frame tables).
    pub fn overhead_bytes(&self) -> usize {
        self.overhead + self.chunks.capacity() * std::mem::size_of::<Arc<Chunk>>()
    }

    /// Audio held, in microseconds.
    pub fn duration_micros(&self) -> u64 {
        self.micros
    }

    /// Total bytes ever appended (the live end, as a stream byte offset).
    pub fn byte_end(&self) -> u64 {
        self.byte_end
    }

    /// Wall-clock end of the newest chunk (µs since the epoch), if any.
    pub fn last_end_ts(&self) -> Option<i64> {
        (self.last_end_ts != i64::MIN).then_some(self.last_end_ts)
    }

    /// Whether the newest chunk ended so long ago (the source is gone) that
    /// any next chunk starts a new timeline piece, and so a new HLS segment:
    /// the last segment can then be published. The margin covers a chunk's
    /// length and a transcoder's lag behind the wall clock.
    pub fn edge_closed(&self, now_micros: i64) -> bool {
        self.last_end_ts != i64::MIN
            && now_micros - self.last_end_ts > GAP_TOLERANCE_MICROS + 3_000_000
    }

    /// The live edge: the start of the next chunk to arrive.
    pub fn live(&self) -> Position {
        Position {
            seq: self.next_seq,
            offset: 0,
        }
    }

    /// Stream byte offset of a position, if it is held (or is the live edge).
    pub fn byte_pos(&self, pos: Position) -> Option<u64> {
        if pos.seq == self.next_seq {
            return Some(self.byte_end);
        }
        self.get(pos.seq)
            .map(|c| c.byte_start + u64::from(pos.offset))
    }

    /// Stream audio time (µs) at a frame-aligned position.
    fn audio_pos(&self, pos: Position) -> Option<u64> {
        if pos.seq == self.next_seq {
            return Some(self.audio_end);
        }
        let c = self.get(pos.seq)?;
        let i = c.frame_index_of(pos.offset)?;
        Some(c.audio_start_micros + c.frames_micros(i))
    }

    /// The frame-aligned position at stream audio time `t`: the start of the
    /// frame containing `t` (`round_up`: the first frame starting at or after `t`).
    fn position_at_audio(&self, t: u64, round_up: bool) -> Position {
        let Some(first) = self.chunks.front() else {
            return self.live();
        };
        if t <= first.audio_start_micros {
            return Position {
                seq: first.seq,
                offset: 0,
            };
        }
        if t >= self.audio_end {
            return self.live();
        }
        let idx = self
            .chunks
            .partition_point(|c| c.audio_start_micros <= t)
            .saturating_sub(1);
        let c = &self.chunks[idx];
        let within = t - c.audio_start_micros;
        let mut i = c.frame_at_micros(within);
        if round_up && c.frames_micros(i) < within {
            i += 1;
        }
        self.frame_position(c, i)
    }

    fn frame_position(&self, c: &Chunk, frame: usize) -> Position {
        if frame >= c.frame_count() {
            Position {
                seq: c.seq + 1,
                offset: 0,
            }
        } else {
            Position {
                seq: c.seq,
                offset: c.frame_offset(frame),
            }
        }
    }

    /// The position `back_micros` of audio before the live edge (at least that
    /// much audio lies between it and live, at most one frame more), clamped to
    /// the oldest chunk.
    pub fn position_back(&self, back_micros: u64) -> Position {
        self.position_at_audio(self.audio_end.saturating_sub(back_micros), false)
    }

    /// The position of wall-clock time `ts_micros`: the frame playing then. Before
    /// the buffer it is the oldest chunk; after the newest audio it is live.
    pub fn position_at_time(&self, ts_micros: i64) -> Position {
        let Some(first) = self.chunks.front() else {
            return self.live();
        };
        if ts_micros <= first.ts_micros {
            return Position {
                seq: first.seq,
                offset: 0,
            };
        }
        let idx = self
            .chunks
            .partition_point(|c| c.ts_micros <= ts_micros)
            .saturating_sub(1);
        let c = &self.chunks[idx];
        let within = u64::try_from(ts_micros - c.ts_micros).unwrap_or(0);
        if within >= c.duration_micros() {
            // In a gap after this chunk, or past the end: the next chunk.
            return self.frame_position(c, c.frame_count());
        }
        self.frame_position(c, c.frame_at_micros(within))
    }

    /// Audio (µs) between the frame playing at wall-clock `ts_micros` and the
    /// live edge: the `?offset=` that starts, now, where `?at=` does.
    pub fn behind_live_at_time(&self, ts_micros: i64) -> u64 {
        let pos = self.position_at_time(ts_micros);
        self.audio_pos(pos)
            .map_or(0, |a| self.audio_end.saturating_sub(a))
    }

    /// The frame-aligned position `span_micros` of audio after `from` (rounded up
    /// to whole frames, capped at the live edge). With `from`, it delimits a pump.
    pub fn position_after(&self, from: Position, span_micros: u64) -> Position {
        match self.audio_pos(from) {
            Some(a) => self.position_at_audio(a + span_micros, true),
            None => from,
        }
    }

    /// Audio bytes between two held positions.
    pub fn bytes_between(&self, from: Position, to: Position) -> u64 {
        match (self.byte_pos(from), self.byte_pos(to)) {
            (Some(a), Some(b)) => b.saturating_sub(a),
            _ => 0,
        }
    }

    /// Wall-clock time (µs) of a held position.
    pub fn time_of(&self, pos: Position) -> Option<i64> {
        if pos.seq == self.next_seq {
            return self.last_end_ts();
        }
        let c = self.get(pos.seq)?;
        let i = c.frame_index_of(pos.offset)?;
        Some(c.ts_micros + i64::try_from(c.frames_micros(i)).unwrap_or(0))
    }

    /// Empties the buffer; numbering continues.
    pub fn clear(&mut self) {
        self.chunks.clear();
        self.bytes = 0;
        self.overhead = 0;
        self.micros = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    /// A draft of `frames` frames of `size` bytes, 1152 samples at 44.1 kHz each,
    /// whose bytes count up from `first_byte` so positions can be checked.
    fn draft(frames: usize, size: usize, first_byte: u8) -> ChunkDraft {
        let data: Vec<u8> = (0..frames * size)
            .map(|i| first_byte.wrapping_add((i / size) as u8))
            .collect();
        ChunkDraft {
            data: Bytes::from(data),
            frames: (0..frames).map(|i| (i * size) as u32).collect(),
            samples_per_frame: 1152,
            sample_rate: 44_100,
        }
    }

    const FRAME_US: i64 = 26_122; // 1152 / 44100 s, rounded down

    fn title() -> Arc<Title> {
        Title::new("t")
    }

    #[test]
    fn append_numbers_and_evicts_from_the_front() {
        let mut b = RewindBuffer::new(10, 100);
        let mut now = 1_000_000_000_000i64;
        for i in 0..30u8 {
            now += 38 * FRAME_US;
            b.append(draft(38, 417, i), title(), now, true);
        }
        // 38 frames ≈ 0.9927 s; 10 s needs 11 chunks (10.92 s), eviction keeps >= 10 s.
        assert_eq!(b.len(), 11);
        assert_eq!(b.first_seq(), 119);
        assert_eq!(b.next_seq(), 130);
        assert!(b.duration_micros() >= 10_000_000);
        assert!(b.duration_micros() - b.first().unwrap().duration_micros() < 10_000_000);
        assert_eq!(b.bytes(), 11 * 38 * 417);
        assert!(b.get(118).is_none());
        assert_eq!(b.get(125).unwrap().seq, 125);
        assert!(b.get(130).is_none());
    }

    #[test]
    fn timestamps_follow_the_audio_clock_and_not_far_into_the_future() {
        let mut b = RewindBuffer::new(3600, 0);
        let t0 = 1_700_000_000_000_000i64;
        // Real-time source: chunk k arrives at t0 + (k+1)*d.
        let d = draft(38, 417, 0).duration_micros() as i64;
        for k in 0..5 {
            let c = b.append(draft(38, 417, 0), title(), t0 + (k + 1) * d + 300, true);
            assert_eq!(c.ts_micros, t0 + k * d + 300);
            assert!(!c.discontinuity || k == 0);
        }
        // A chunk a little early (jitter) still follows on exactly.
        let c = b.append(draft(38, 417, 0), title(), t0 + 6 * d + 300 - 20_000, true);
        assert_eq!(c.ts_micros, t0 + 5 * d + 300);
        // A burst: ten chunks at one instant are squeezed, not pushed more
        // than the tolerance (and one chunk) into the future.
        let now = t0 + 7 * d;
        for _ in 0..10 {
            let c = b.append(draft(38, 417, 0), title(), now, true);
            assert!(c.ts_micros <= now + AHEAD_TOLERANCE_MICROS + d);
        }
        assert!(b.last_end_ts().unwrap() <= now + AHEAD_TOLERANCE_MICROS + d);
        // A stall of 10 s leaves a gap.
        let later = now + 10_000_000;
        let c = b.append(draft(38, 417, 0), title(), later, true);
        assert!(c.discontinuity);
        assert_eq!(c.ts_micros, later - d);
        // Timestamps never go backwards.
        let ts: Vec<i64> = (0..b.len()).map(|i| b.chunks[i].ts_micros).collect();
        assert!(ts.windows(2).all(|w| w[0] <= w[1]));
    }

    /// A source that comes back after another one (whose timeline ran up
    /// to now) has a chunk of audio that overlaps the other's end: it is put
    /// after it, a chunk's length ahead of the clock, and its chunks go on at
    /// exactly its audio clock (PROGRAM-DATE-TIME agrees with EXTINF).
    #[test]
    fn a_source_back_after_another_follows_on_its_own_clock() {
        let mut b = RewindBuffer::new(3600, 0);
        let t0 = 1_700_000_000_000_000i64;
        // Chunks a little over a second, as the chunker cuts them.
        let d = draft(40, 417, 0).duration_micros() as i64;
        assert!(d > 1_000_000);
        b.append(draft(40, 417, 0), title(), t0 + d, true);
        let first = b.append(draft(40, 417, 0), title(), t0 + d + 5_000, false);
        assert!(first.discontinuity);
        assert_eq!(first.ts_micros, t0 + d);
        for k in 1..5 {
            let c = b.append(draft(40, 417, 0), title(), t0 + (k + 1) * d + 5_000, true);
            assert_eq!(c.ts_micros, first.ts_micros + k * d, "chunk {k}");
        }
    }

    #[test]
    fn the_edge_closes_only_when_the_next_chunk_must_start_a_new_piece() {
        let mut b = RewindBuffer::new(3600, 0);
        assert!(
            !b.edge_closed(i64::MAX),
            "an empty buffer has no segment to close"
        );
        let t0 = 1_700_000_000_000_000i64;
        let d = draft(38, 417, 0).duration_micros() as i64;
        b.append(draft(38, 417, 0), title(), t0, true);
        assert!(!b.edge_closed(t0 + 5_000_000));
        assert!(b.edge_closed(t0 + 5_000_001));
        // The latest a continuing chunk could come without a gap: it still
        // joins the timeline, so the edge was not closed then.
        let late = t0 + GAP_TOLERANCE_MICROS + d;
        assert!(!b.edge_closed(late));
        let c = b.append(draft(38, 417, 0), title(), late, true);
        assert!(!c.discontinuity);
        // Past the closing time, any chunk is a discontinuity (a new segment).
        let end = b.last_end_ts().unwrap();
        assert!(b.edge_closed(end + 5_000_001));
        let c = b.append(draft(38, 417, 0), title(), end + 5_000_001 + d, true);
        assert!(c.discontinuity);
        assert!(c.hls_segment_start, "and starts a new HLS segment");
    }

    #[test]
    fn positions_by_offset_are_frame_exact() {
        let mut b = RewindBuffer::new(3600, 0);
        let mut now = 1_000_000_000_000i64;
        for i in 0..20u8 {
            now += 38 * FRAME_US;
            b.append(draft(38, 400, i.wrapping_mul(38)), title(), now, true);
        }
        // 5 s back: 5 / (1152/44100) = 191.4 frames → the frame containing that
        // time is 192 frames before the end: frame 760 - 192 = 568 = chunk 14, frame 36.
        let p = b.position_back(5_000_000);
        assert_eq!(
            p,
            Position {
                seq: 14,
                offset: 36 * 400
            }
        );
        let audio_back = b.audio_end - b.audio_pos(p).unwrap();
        assert!(audio_back >= 5_000_000 && audio_back < 5_000_000 + FRAME_US as u64 + 1);
        // Too far back clamps to the oldest; zero is live.
        assert_eq!(
            b.position_back(3_600_000_000),
            Position { seq: 0, offset: 0 }
        );
        assert_eq!(b.position_back(0), b.live());
        // A span after a position, rounded up to whole frames.
        let end = b.position_after(p, 2_000_000);
        let span = b.audio_pos(end).unwrap() - b.audio_pos(p).unwrap();
        assert!(
            span >= 2_000_000 && span < 2_000_000 + FRAME_US as u64 + 1,
            "{span}"
        );
        assert_eq!(b.bytes_between(p, end), (span / (FRAME_US as u64)) * 400);
        // A span beyond live stops at live.
        assert_eq!(b.position_after(p, 100_000_000), b.live());
    }

    #[test]
    fn positions_by_time() {
        let mut b = RewindBuffer::new(3600, 7);
        let t0 = 1_700_000_000_000_000i64;
        let d = draft(38, 400, 0).duration_micros() as i64;
        for k in 0..10 {
            b.append(draft(38, 400, 0), title(), t0 + (k + 1) * d, true);
        }
        assert_eq!(b.position_at_time(t0 - 5), Position { seq: 7, offset: 0 });
        assert_eq!(
            b.position_at_time(t0 + 3 * d),
            Position { seq: 10, offset: 0 }
        );
        // 10 frames into chunk 3 (plus a bit) → frame 10.
        let p = b.position_at_time(t0 + 3 * d + 10 * FRAME_US + 1000);
        assert_eq!(
            p,
            Position {
                seq: 10,
                offset: 4000
            }
        );
        assert!(b.time_of(p).unwrap() <= t0 + 3 * d + 10 * FRAME_US + 1000);
        assert_eq!(b.position_at_time(t0 + 100 * d), b.live());
        // The offset that starts there now: chunks 3..10 less 10 frames.
        let back = b.behind_live_at_time(t0 + 3 * d + 10 * FRAME_US + 1000);
        assert_eq!(back, b.audio_end - b.audio_pos(p).unwrap());
        assert!(back.abs_diff((7 * d - 10 * FRAME_US) as u64) < 10, "{back}");
        assert_eq!(b.behind_live_at_time(t0 + 100 * d), 0);
        assert_eq!(b.behind_live_at_time(t0 - 5), 10 * d as u64);
    }

    #[test]
    fn shrinking_the_rewind_evicts() {
        let mut b = RewindBuffer::new(3600, 0);
        for i in 0..100 {
            b.append(
                draft(38, 400, 0),
                title(),
                1_000_000_000 + i * 1_000_000,
                true,
            );
        }
        assert_eq!(b.len(), 100);
        b.set_rewind_seconds(10);
        assert_eq!(b.len(), 11);
        b.clear();
        assert!(b.is_empty());
        assert_eq!(b.first_seq(), 100);
        assert_eq!(b.byte_pos(b.live()), Some(100 * 38 * 400));
    }
}
