//! Segments as groups of numbered chunks.

use std::ops::Range;

use super::{Codec, HlsError};

/// What the HLS module needs to know about one chunk of the rewind buffer
/// (borrowed, so building the views costs no allocation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkView<'a> {
    /// Chunk sequence number (contiguous).
    pub seq: u64,
    /// Wall-clock time of the first sample, µs since the Unix epoch.
    pub ts_micros: i64,
    /// Stream audio time of the first sample, µs (continuous, no gaps).
    pub audio_start_micros: u64,
    /// Audio duration, µs.
    pub duration_micros: u64,
    /// Segment number (from [`Segmenter::assign`](super::Segmenter::assign)).
    pub segment: u64,
    /// Discontinuity sequence (from the segmenter).
    pub disc_seq: u64,
    /// First chunk of its segment (from the segmenter).
    pub segment_start: bool,
    /// The source changed or had a gap before this chunk.
    pub discontinuity: bool,
    /// The title current when the chunk arrived.
    pub title: &'a str,
    /// Length of the chunk's audio bytes.
    pub len: usize,
}

/// One segment: a run of chunks sharing a segment number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentInfo {
    /// Segment number: media sequence number and URL id.
    pub number: u64,
    /// Discontinuity sequence number.
    pub disc_seq: u64,
    /// The first chunk follows a discontinuity.
    pub discontinuity: bool,
    /// Sequence number of the first chunk.
    pub first_seq: u64,
    /// Number of chunks.
    pub chunks: u64,
    /// Wall-clock time of the first sample, µs since the Unix epoch.
    pub ts_micros: i64,
    /// Stream audio time of the first sample, µs.
    pub audio_start_micros: u64,
    /// Audio duration, µs.
    pub duration_micros: u64,
    /// Audio bytes (the ID3 head not included).
    pub bytes: u64,
    /// Title (the first chunk's; the segmenter gives every chunk of a segment
    /// the same one).
    pub title: String,
    /// False for the newest segment, which may still grow: playlists leave it
    /// out and it is not served.
    pub complete: bool,
}

impl SegmentInfo {
    /// Sequence numbers of the segment's chunks.
    pub fn seq_range(&self) -> Range<u64> {
        self.first_seq..self.first_seq.saturating_add(self.chunks)
    }

    /// Stream audio time just after the last sample, µs.
    pub fn audio_end_micros(&self) -> u64 {
        self.audio_start_micros.saturating_add(self.duration_micros)
    }
}

/// Groups chunks (oldest first) into segments.
///
/// Consecutive chunks with the same segment number form a segment. The first
/// group is dropped when its first chunk does not start its segment (the
/// buffer evicted the segment's head: it is incomplete). The last group is
/// marked `complete: false`: more chunks may join it.
///
/// Should the numbering ever break (a number that is not the previous + 1, or
/// a group not opened by a segment-start chunk), everything before the break
/// is dropped, so the list always has consecutive numbers, as media sequence
/// numbers must be.
pub fn segments<'a>(chunks: impl IntoIterator<Item = ChunkView<'a>>) -> Vec<SegmentInfo> {
    let mut out: Vec<SegmentInfo> = Vec::new();
    // The current group is a torso (head evicted, or after a break): skip it.
    let mut skipping = false;
    let mut current: Option<u64> = None;
    for c in chunks {
        if current == Some(c.segment) {
            if !skipping {
                if let Some(s) = out.last_mut() {
                    s.chunks = s.chunks.saturating_add(1);
                    s.duration_micros = s.duration_micros.saturating_add(c.duration_micros);
                    s.bytes = s.bytes.saturating_add(c.len as u64);
                }
            }
            continue;
        }
        current = Some(c.segment);
        let follows = out
            .last()
            .is_some_and(|s| s.number.checked_add(1) == Some(c.segment));
        if !c.segment_start || (!out.is_empty() && !follows) {
            out.clear();
        }
        skipping = !c.segment_start;
        if skipping {
            continue;
        }
        out.push(SegmentInfo {
            number: c.segment,
            disc_seq: c.disc_seq,
            discontinuity: c.discontinuity,
            first_seq: c.seq,
            chunks: 1,
            ts_micros: c.ts_micros,
            audio_start_micros: c.audio_start_micros,
            duration_micros: c.duration_micros,
            bytes: c.len as u64,
            title: c.title.to_owned(),
            complete: true,
        });
    }
    if let Some(last) = out.last_mut() {
        last.complete = false;
    }
    out
}

/// Marks the last segment of a list from [`segments`] complete (the stream's
/// live edge is closed: nothing more can join it).
pub fn close_last(segments: &mut [SegmentInfo]) {
    if let Some(last) = segments.last_mut() {
        last.complete = true;
    }
}

/// Finds complete segment `number` in a list from [`segments`].
///
/// Errors tell a request for a segment that has left the buffer
/// ([`HlsError::SegmentGone`], HTTP 404/410) from one for the growing or a
/// future segment ([`HlsError::SegmentNotReady`], HTTP 404).
pub fn lookup(segments: &[SegmentInfo], number: u64) -> Result<&SegmentInfo, HlsError> {
    let Some(first) = segments.first() else {
        return Err(HlsError::SegmentNotReady { number });
    };
    if number < first.number {
        return Err(HlsError::SegmentGone {
            number,
            oldest: first.number,
        });
    }
    usize::try_from(number - first.number)
        .ok()
        .and_then(|i| segments.get(i))
        .filter(|s| s.complete && s.number == number)
        .ok_or(HlsError::SegmentNotReady { number })
}

/// Reads a segment URL's last path element, `<number>.<mp3|aac>`.
///
/// Only plain decimal digits are accepted (no sign, no spaces); the extension
/// must match the stream's codec, which the caller checks.
pub fn parse_segment_name(name: &str) -> Result<(u64, Codec), HlsError> {
    let bad = || HlsError::BadSegmentName(name.to_owned());
    let (digits, ext) = name.split_once('.').ok_or_else(bad)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let number = digits.parse::<u64>().map_err(|_| bad())?;
    let codec = Codec::from_ext(ext).ok_or_else(bad)?;
    Ok((number, codec))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A chunk of `ms` milliseconds and `len` bytes.
    fn chunk(seq: u64, segment: u64, start: bool, ms: u64, len: usize) -> ChunkView<'static> {
        ChunkView {
            seq,
            ts_micros: 1_000_000_000 + seq as i64 * 1_000_000,
            audio_start_micros: seq * 1_000_000,
            duration_micros: ms * 1000,
            segment,
            disc_seq: 0,
            segment_start: start,
            discontinuity: false,
            title: "",
            len,
        }
    }

    #[test]
    fn groups_drop_the_torso_and_leave_the_last_open() {
        let mut chunks = [
            // Segment 7 lost its first chunk to eviction.
            chunk(10, 7, false, 1000, 100),
            chunk(11, 7, false, 1000, 100),
            chunk(12, 8, true, 1000, 110),
            chunk(13, 8, false, 1026, 120),
            chunk(14, 8, false, 1001, 130),
            chunk(15, 9, true, 999, 140),
            chunk(16, 10, true, 1000, 150),
            chunk(17, 10, false, 1000, 160),
        ];
        chunks[3].title = "ignored: the first chunk's title counts";
        chunks[5].title = "Nine";
        chunks[5].discontinuity = true;
        chunks[5].disc_seq = 1;
        chunks[6].disc_seq = 1;
        chunks[7].disc_seq = 1;
        let s = segments(chunks.iter().copied());
        assert_eq!(s.len(), 3);
        assert_eq!(
            s[0],
            SegmentInfo {
                number: 8,
                disc_seq: 0,
                discontinuity: false,
                first_seq: 12,
                chunks: 3,
                ts_micros: 1_012_000_000,
                audio_start_micros: 12_000_000,
                duration_micros: 3_027_000,
                bytes: 360,
                title: String::new(),
                complete: true,
            }
        );
        assert_eq!(s[0].seq_range(), 12..15);
        assert_eq!(s[0].audio_end_micros(), 15_027_000);
        assert_eq!(
            (s[1].number, s[1].chunks, s[1].duration_micros, s[1].bytes),
            (9, 1, 999_000, 140)
        );
        assert_eq!(
            (s[1].disc_seq, s[1].discontinuity, s[1].title.as_str()),
            (1, true, "Nine")
        );
        assert!(s[1].complete);
        assert_eq!(
            (s[2].number, s[2].chunks, s[2].bytes, s[2].complete),
            (10, 2, 310, false)
        );
        // Starting exactly at a segment start keeps it.
        let s = segments(chunks[2..].iter().copied());
        assert_eq!(s.first().map(|s| s.number), Some(8));
        assert!(segments(Vec::new()).is_empty());
        // Only a torso: nothing.
        assert!(segments(chunks[..2].iter().copied()).is_empty());
        // One segment: listed, incomplete.
        let s = segments(chunks[2..5].iter().copied());
        assert_eq!((s.len(), s[0].complete), (1, false));
    }

    #[test]
    fn a_break_in_numbering_drops_what_precedes_it() {
        let chunks = [
            chunk(1, 5, true, 1000, 1),
            chunk(2, 6, true, 1000, 1),
            chunk(3, 9, true, 1000, 1), // jump
            chunk(4, 10, true, 1000, 1),
            chunk(5, 11, false, 1000, 1), // not a start: torso
            chunk(6, 12, true, 1000, 1),
            chunk(7, 13, true, 1000, 1),
        ];
        let s = segments(chunks.iter().copied());
        let n: Vec<u64> = s.iter().map(|s| s.number).collect();
        assert_eq!(n, vec![12, 13]);
        let s = segments(chunks[..4].iter().copied());
        let n: Vec<u64> = s.iter().map(|s| s.number).collect();
        assert_eq!(n, vec![9, 10]);
    }

    #[test]
    fn lookup_tells_gone_from_not_ready() {
        let chunks = [
            chunk(1, 5, true, 1000, 1),
            chunk(2, 6, true, 1000, 1),
            chunk(3, 7, true, 1000, 1),
        ];
        let s = segments(chunks.iter().copied());
        assert_eq!(lookup(&s, 5).map(|s| s.first_seq), Ok(1));
        assert_eq!(lookup(&s, 6).map(|s| s.first_seq), Ok(2));
        assert_eq!(
            lookup(&s, 4),
            Err(HlsError::SegmentGone {
                number: 4,
                oldest: 5
            })
        );
        assert_eq!(lookup(&s, 7), Err(HlsError::SegmentNotReady { number: 7 }));
        assert_eq!(
            lookup(&s, u64::MAX),
            Err(HlsError::SegmentNotReady { number: u64::MAX })
        );
        assert_eq!(lookup(&[], 1), Err(HlsError::SegmentNotReady { number: 1 }));
    }

    #[test]
    fn segment_names() {
        assert_eq!(
            parse_segment_name("176370840.mp3"),
            Ok((176_370_840, Codec::Mp3))
        );
        assert_eq!(parse_segment_name("0.aac"), Ok((0, Codec::Aac)));
        for bad in [
            "",
            ".mp3",
            "12",
            "12.",
            "12.ogg",
            "12.MP3",
            "+12.mp3",
            "-1.mp3",
            " 1.mp3",
            "1.mp3.mp3",
            "99999999999999999999999.mp3",
            "1e3.aac",
        ] {
            assert_eq!(
                parse_segment_name(bad),
                Err(HlsError::BadSegmentName(bad.to_owned())),
                "{bad:?}"
            );
        }
    }
}
