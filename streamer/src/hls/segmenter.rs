//! Segment numbering, done once per chunk when it is appended (on the master).

use super::segment::ChunkView;

/// The segment numbers given to one chunk. Stored with the chunk and sent to
/// the slaves with it, so every process groups the same chunks into the same
/// segments.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Assigned {
    /// The segment the chunk belongs to: the HLS media sequence number and the
    /// segment's URL id. Increases by exactly 1 per new segment.
    pub segment: u64,
    /// Discontinuities so far (`EXT-X-DISCONTINUITY-SEQUENCE` of the segment).
    pub disc_seq: u64,
    /// The chunk is the first of its segment.
    pub segment_start: bool,
}

/// Where numbering stands after the last chunk: what a restarted server needs
/// to continue the numbering where it stopped (see [`ResumePoint::from_chunks`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct ResumePoint {
    /// The last chunk's segment.
    pub segment: u64,
    /// The last chunk's discontinuity sequence.
    pub disc_seq: u64,
    /// The last chunk's wall-clock time (µs since the Unix epoch).
    pub ts_micros: i64,
    /// The last chunk's title.
    pub title: String,
    /// Audio in the last segment so far, the last chunk included (µs).
    pub segment_audio_micros: u64,
}

impl ResumePoint {
    /// The resume point after the given chunks (oldest first, already
    /// numbered: e.g. the rewind buffer restored from disk), or `None` if there
    /// are none.
    ///
    /// The last segment's audio is summed over the chunks given: pass at least
    /// that segment's chunks.
    pub fn from_chunks<'a>(chunks: impl IntoIterator<Item = ChunkView<'a>>) -> Option<Self> {
        let mut point: Option<ResumePoint> = None;
        for c in chunks {
            match &mut point {
                Some(p) if p.segment == c.segment => {
                    p.segment_audio_micros =
                        p.segment_audio_micros.saturating_add(c.duration_micros);
                    p.disc_seq = c.disc_seq;
                    p.ts_micros = c.ts_micros;
                    if p.title != c.title {
                        p.title = c.title.to_owned();
                    }
                }
                _ => {
                    point = Some(ResumePoint {
                        segment: c.segment,
                        disc_seq: c.disc_seq,
                        ts_micros: c.ts_micros,
                        title: c.title.to_owned(),
                        segment_audio_micros: c.duration_micros,
                    });
                }
            }
        }
        point
    }
}

/// How much longer than its configured length a segment may get (a window's
/// last chunk runs past the window's end by up to a chunk, ~1.03 s).
pub const OVERSHOOT_MICROS: u64 = 1_490_000;

/// The `EXT-X-TARGETDURATION` of a stream with segments of `segment_seconds`:
/// every segment the [`Segmenter`] cuts rounds to at most this.
pub fn target_seconds(segment_seconds: u32) -> u64 {
    u64::from(segment_seconds.max(1)) + 1
}

/// Assigns segment numbers to chunks as they are appended.
///
/// A chunk starts a new segment when it is the first; when it follows a
/// discontinuity; when its wall-clock time falls in another window of the
/// segment length than the previous chunk's (`floor(ts / L)`: boundaries line
/// up with the clock, so they are the same whichever process computes them);
/// when its title differs from the previous chunk's (each segment has one
/// title, so players show the title of the audio they play); or when the
/// segment would otherwise hold more than L + [`OVERSHOOT_MICROS`] of audio
/// (a source bursting faster than real time gets squeezed timestamps that
/// would otherwise pile into one window). So no segment lasts more than
/// L + 1.49 s: its duration rounds to at most L + 1, and the playlists can
/// announce that target from the start and never change it (RFC 8216
/// §4.3.3.1).
///
/// A brand-new stream's first segment is numbered `floor(ts / L)` of its first
/// chunk, so numbers are large and do not repeat across streams started at
/// different times; after that, numbers go up by 1 per segment. A restarted
/// server must [`resume`](Self::resume) instead: a fresh start could reuse
/// numbers if earlier segments were shorter than L.
#[derive(Clone, Debug)]
pub struct Segmenter {
    segment_micros: u64,
    last: Option<ResumePoint>,
}

impl Segmenter {
    /// A segmenter for a new stream with segments of `segment_seconds`
    /// (0 is taken as 1).
    pub fn new(segment_seconds: u32) -> Self {
        Segmenter {
            segment_micros: u64::from(segment_seconds.max(1)) * 1_000_000,
            last: None,
        }
    }

    /// A segmenter that continues after `last` (see [`ResumePoint::from_chunks`]).
    ///
    /// The next chunk continues the last segment if the rules allow (same
    /// window, same title, no discontinuity, room left), exactly as if the
    /// server had not stopped; otherwise it gets the next number.
    pub fn resume(segment_seconds: u32, last: ResumePoint) -> Self {
        Segmenter {
            last: Some(last),
            ..Segmenter::new(segment_seconds)
        }
    }

    /// The segment length in microseconds.
    pub fn segment_micros(&self) -> u64 {
        self.segment_micros
    }

    /// Where numbering stands (`None` before the first chunk).
    pub fn resume_point(&self) -> Option<&ResumePoint> {
        self.last.as_ref()
    }

    /// Numbers the next chunk: its wall-clock start `ts_micros`, its audio
    /// duration, whether a discontinuity precedes it, and its title.
    ///
    /// `disc_seq` goes up by one per discontinuity; a discontinuity flag on the
    /// very first chunk of a new stream is not counted (nothing precedes it).
    pub fn assign(
        &mut self,
        ts_micros: i64,
        duration_micros: u64,
        discontinuity: bool,
        title: &str,
    ) -> Assigned {
        let window = self.window(ts_micros);
        let max_micros = self.segment_micros.saturating_add(OVERSHOOT_MICROS);
        match &mut self.last {
            None => {
                let segment = u64::try_from(window).unwrap_or(0);
                self.last = Some(ResumePoint {
                    segment,
                    disc_seq: 0,
                    ts_micros,
                    title: title.to_owned(),
                    segment_audio_micros: duration_micros,
                });
                Assigned {
                    segment,
                    disc_seq: 0,
                    segment_start: true,
                }
            }
            Some(p) => {
                let prev_window = p.ts_micros.div_euclid(window_len(self.segment_micros));
                let start = discontinuity
                    || prev_window != window
                    || p.title != title
                    || p.segment_audio_micros.saturating_add(duration_micros) > max_micros;
                if start {
                    p.segment = p.segment.saturating_add(1);
                    p.segment_audio_micros = duration_micros;
                } else {
                    p.segment_audio_micros = p.segment_audio_micros.saturating_add(duration_micros);
                }
                if discontinuity {
                    p.disc_seq = p.disc_seq.saturating_add(1);
                }
                if p.title != title {
                    title.clone_into(&mut p.title);
                }
                p.ts_micros = ts_micros;
                Assigned {
                    segment: p.segment,
                    disc_seq: p.disc_seq,
                    segment_start: start,
                }
            }
        }
    }

    /// `floor(ts / L)`.
    fn window(&self, ts_micros: i64) -> i64 {
        ts_micros.div_euclid(window_len(self.segment_micros))
    }
}

/// The segment length as a divisor for signed timestamps.
fn window_len(segment_micros: u64) -> i64 {
    i64::try_from(segment_micros).unwrap_or(i64::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000;
    /// 2025-11-21T07:00:00Z, a multiple of 10 s.
    const T0: i64 = 1_763_708_400 * S;

    /// Assigns `n` chunks of 1 s starting at `ts`, `step` apart, with `title`.
    fn run(seg: &mut Segmenter, ts: i64, step: i64, n: usize, title: &str) -> Vec<Assigned> {
        (0..n)
            .map(|i| seg.assign(ts + i as i64 * step, 1_000_000, false, title))
            .collect()
    }

    /// The first chunk index of each segment.
    fn starts(a: &[Assigned]) -> Vec<usize> {
        a.iter()
            .enumerate()
            .filter(|(_, x)| x.segment_start)
            .map(|(i, _)| i)
            .collect()
    }

    #[test]
    fn real_time_chunks_make_aligned_segments() {
        let mut seg = Segmenter::new(10);
        // Starts 3.5 s into a window: the first segment is short, the rest are 10 s.
        let a = run(&mut seg, T0 + 3_500_000, S, 40, "t");
        assert_eq!(starts(&a), vec![0, 7, 17, 27, 37]);
        let first = (T0 / (10 * S)) as u64;
        assert_eq!(a[0].segment, first);
        assert_eq!(a[6].segment, first);
        assert_eq!(a[7].segment, first + 1);
        assert_eq!(a[17].segment, first + 2);
        assert_eq!(a[39].segment, first + 4);
        // Each segment is one 10 s window: chunk 7 starts at T0 + 10.5 s.
        for (i, x) in a.iter().enumerate() {
            let ts = T0 + 3_500_000 + i as i64 * S;
            assert_eq!(
                x.segment - first,
                ((ts - T0) / (10 * S)) as u64,
                "chunk {i}"
            );
            assert_eq!(x.disc_seq, 0);
        }
    }

    #[test]
    fn numbers_step_by_one_even_across_a_wall_clock_gap() {
        let mut seg = Segmenter::new(10);
        let a = seg.assign(T0, 1_000_000, false, "");
        // An hour later (no discontinuity flag): next number, not floor(ts/L).
        let b = seg.assign(T0 + 3600 * S, 1_000_000, false, "");
        assert_eq!(b.segment, a.segment + 1);
        assert!(b.segment_start);
    }

    #[test]
    fn title_change_mid_window_starts_a_segment() {
        let mut seg = Segmenter::new(10);
        let mut a = run(&mut seg, T0, S, 4, "A");
        a.extend(run(&mut seg, T0 + 4 * S, S, 10, "B"));
        assert_eq!(starts(&a), vec![0, 4, 10]);
        assert_eq!(a[4].segment, a[3].segment + 1);
        assert_eq!(a[10].segment, a[4].segment + 1);
        // Same title again: no new segment.
        let b = seg.assign(T0 + 14 * S, 1_000_000, false, "B");
        assert!(!b.segment_start);
    }

    #[test]
    fn burst_with_equal_timestamps_is_split_past_the_length_plus_the_overshoot() {
        let mut seg = Segmenter::new(10);
        let a = run(&mut seg, T0 + S, 0, 30, "t");
        assert_eq!(starts(&a), vec![0, 11, 22]);
        assert_eq!(a[29].segment, a[0].segment + 2);
        // Real time resumes in the next window.
        let b = seg.assign(T0 + 10 * S, 1_000_000, false, "t");
        assert_eq!((b.segment, b.segment_start), (a[0].segment + 3, true));
        // Chunks slightly over 1 s: 11 fit (11.33 s), the 12th would pass 11.49 s.
        let mut seg = Segmenter::new(10);
        let a: Vec<_> = (0..20)
            .map(|_| seg.assign(T0, 1_030_000, false, ""))
            .collect();
        assert_eq!(starts(&a), vec![0, 11]);
        // So every segment rounds to at most the target duration.
        assert_eq!(target_seconds(10), 11);
    }

    #[test]
    fn discontinuity_starts_a_segment_and_counts() {
        let mut seg = Segmenter::new(10);
        let a = seg.assign(T0, 1_000_000, true, "");
        assert_eq!(a.disc_seq, 0, "the first chunk's flag is not counted");
        let b = seg.assign(T0 + S, 1_000_000, true, "");
        assert_eq!(
            (b.segment, b.disc_seq, b.segment_start),
            (a.segment + 1, 1, true)
        );
        let c = seg.assign(T0 + 2 * S, 1_000_000, false, "");
        assert_eq!(
            (c.segment, c.disc_seq, c.segment_start),
            (b.segment, 1, false)
        );
        let d = seg.assign(T0 + 3 * S, 1_000_000, true, "");
        assert_eq!((d.segment, d.disc_seq), (b.segment + 1, 2));
    }

    #[test]
    fn resume_continues_numbering() {
        let mut seg = Segmenter::new(10);
        let mut views = Vec::new();
        let mut all = Vec::new();
        for i in 0..25 {
            let ts = T0 + i * S;
            let disc = i == 12;
            let a = seg.assign(ts, 1_000_000, disc, "x");
            all.push(a);
            views.push(ChunkView {
                seq: i as u64,
                ts_micros: ts,
                audio_start_micros: i as u64 * 1_000_000,
                duration_micros: 1_000_000,
                segment: a.segment,
                disc_seq: a.disc_seq,
                segment_start: a.segment_start,
                discontinuity: disc,
                title: "x",
                len: 100,
            });
        }
        let point = ResumePoint::from_chunks(views.iter().copied()).unwrap();
        assert_eq!(Some(&point), seg.resume_point());
        assert_eq!(point.segment_audio_micros, 5_000_000);
        let mut resumed = Segmenter::resume(10, point);
        // The same chunks give the same numbers as without a restart.
        for i in 25..45 {
            let ts = T0 + i * S;
            let x = resumed.assign(ts, 1_000_000, false, "x");
            assert_eq!(x, seg.assign(ts, 1_000_000, false, "x"), "chunk {i}");
        }
        // A restart usually comes with a discontinuity: next number, next disc_seq.
        let last = all[24];
        let mut resumed =
            Segmenter::resume(10, ResumePoint::from_chunks(views.iter().copied()).unwrap());
        let x = resumed.assign(T0 + 30 * S, 1_000_000, true, "x");
        assert_eq!(
            (x.segment, x.disc_seq, x.segment_start),
            (last.segment + 1, last.disc_seq + 1, true)
        );
        assert_eq!(ResumePoint::from_chunks(Vec::new()), None);
    }

    #[test]
    fn first_number_is_the_window_index() {
        let mut seg = Segmenter::new(6);
        assert_eq!(seg.assign(61 * S, 1, false, "").segment, 10);
        let mut seg = Segmenter::new(0);
        assert_eq!(seg.segment_micros(), 1_000_000);
        // Before 1970 (never, but no panic): numbers start at 0.
        assert_eq!(seg.assign(-5 * S, 1, false, "").segment, 0);
    }
}
