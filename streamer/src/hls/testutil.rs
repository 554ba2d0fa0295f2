//! Test helpers: a minimal frame cutter for the fixture files and chunks
//! numbered as the server numbers them.
//!
//! The server's framer (`crate::format`) does much more (resync limits,
//! wrong-codec detection, streaming input); whole, clean fixture files only
//! need the frame lengths, so this stays self-contained.

use super::{Assigned, ChunkView, Segmenter};

/// One audio frame of a fixture.
#[derive(Clone, Copy, Debug)]
pub struct Frame<'a> {
    /// The whole frame.
    pub data: &'a [u8],
    /// PCM samples per channel.
    pub samples: u32,
    /// Sample rate, Hz.
    pub rate: u32,
}

/// Reads a test audio file: from the crate's `fixtures/` (as in the server's
/// crate), else from the shared fixture directory.
pub fn fixture(path: &str) -> Vec<u8> {
    let local = format!("{}/fixtures/{path}", env!("CARGO_MANIFEST_DIR"));
    let shared = format!("/work/shared/fixtures/{path}");
    std::fs::read(&local)
        .or_else(|_| std::fs::read(&shared))
        .unwrap_or_else(|e| panic!("fixture {path} in neither {local} nor {shared}: {e}"))
}

/// `(length, samples, rate)` of the MPEG Layer III or ADTS frame header at
/// the start of `b`.
fn header(b: &[u8]) -> Option<(usize, u32, u32)> {
    if b.len() < 7 || b[0] != 0xFF {
        return None;
    }
    if b[1] & 0xF6 == 0xF0 {
        // ADTS: sync 0xFFF, layer 00.
        let rate = *[
            96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
        ]
        .get(usize::from((b[2] >> 2) & 0x0F))?;
        let len = (usize::from(b[3] & 3) << 11) | (usize::from(b[4]) << 3) | usize::from(b[5] >> 5);
        let samples = 1024 * (u32::from(b[6] & 3) + 1);
        return (len >= 7).then_some((len, samples, rate));
    }
    // MPEG audio, Layer III only (the fixtures).
    if b[1] & 0xE0 != 0xE0 || (b[1] >> 1) & 3 != 1 {
        return None;
    }
    let (mpeg1, div) = match (b[1] >> 3) & 3 {
        3 => (true, 1),
        2 => (false, 2),
        0 => (false, 4),
        _ => return None,
    };
    const V1: [u32; 15] = [
        0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320,
    ];
    const V2: [u32; 15] = [0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160];
    let kbps = *if mpeg1 { &V1 } else { &V2 }.get(usize::from(b[2] >> 4))?;
    let rate = [44100, 48000, 32000].get(usize::from((b[2] >> 2) & 3))? / div;
    if kbps == 0 {
        return None;
    }
    let pad = u32::from((b[2] >> 1) & 1);
    let (len, samples) = if mpeg1 {
        (144 * kbps * 1000 / rate + pad, 1152)
    } else {
        (72 * kbps * 1000 / rate + pad, 576)
    };
    Some((len as usize, samples, rate))
}

/// Cuts a whole file into frames: skips a leading ID3v2 tag and the encoder's
/// Xing/Info/VBRI frame, as the server's framer does.
pub fn frames(file: &[u8]) -> Vec<Frame<'_>> {
    let mut pos = 0;
    if file.starts_with(b"ID3") && file.len() >= 10 {
        let size = file[6..10]
            .iter()
            .fold(0usize, |acc, &b| (acc << 7) | usize::from(b & 0x7F));
        pos = 10 + size + if file[5] & 0x10 != 0 { 10 } else { 0 };
    }
    let mut out = Vec::new();
    while pos < file.len() {
        let Some((len, samples, rate)) = header(&file[pos..]) else {
            pos += 1;
            continue;
        };
        let Some(data) = file.get(pos..pos + len) else {
            break; // truncated last frame
        };
        let encoder_tag = out.is_empty()
            && data.get(..64.min(data.len())).is_some_and(|h| {
                h.windows(4)
                    .any(|w| w == b"Info" || w == b"Xing" || w == b"VBRI")
            });
        if !encoder_tag {
            out.push(Frame {
                data,
                samples,
                rate,
            });
        }
        pos += len;
    }
    out
}

/// A chunk as the server keeps it, numbered by a [`Segmenter`].
#[derive(Clone, Debug)]
pub struct TestChunk {
    pub seq: u64,
    pub ts_micros: i64,
    pub audio_start_micros: u64,
    pub duration_micros: u64,
    pub discontinuity: bool,
    pub title: String,
    pub data: Vec<u8>,
    pub assigned: Assigned,
}

impl TestChunk {
    /// The module's view of it.
    pub fn view(&self) -> ChunkView<'_> {
        ChunkView {
            seq: self.seq,
            ts_micros: self.ts_micros,
            audio_start_micros: self.audio_start_micros,
            duration_micros: self.duration_micros,
            segment: self.assigned.segment,
            disc_seq: self.assigned.disc_seq,
            segment_start: self.assigned.segment_start,
            discontinuity: self.discontinuity,
            title: &self.title,
            len: self.data.len(),
        }
    }
}

/// Groups frames into chunks of at least 1 s, as the server's chunker does,
/// stamps them as the server's buffer does (wall clock from `start_ts`
/// following the audio, audio clock from `audio_base`) and numbers them.
///
/// `title(i)` is chunk `i`'s title; chunks in `disc` follow a discontinuity,
/// with a 5 s wall-clock gap before them (the source was away).
pub fn chunks(
    frames: &[Frame<'_>],
    start_ts: i64,
    audio_base: u64,
    title: impl Fn(usize) -> String,
    disc: &[usize],
    seg: &mut Segmenter,
) -> Vec<TestChunk> {
    let mut out: Vec<TestChunk> = Vec::new();
    let (mut ts, mut audio) = (start_ts, audio_base);
    let mut rest = frames;
    while !rest.is_empty() {
        let (mut n, mut samples) = (0, 0u64);
        let rate = u64::from(rest[0].rate);
        while n < rest.len() && samples * 1_000_000 / rate < 1_000_000 {
            samples += u64::from(rest[n].samples);
            n += 1;
        }
        let (these, tail) = rest.split_at(n);
        rest = tail;
        let i = out.len();
        let discontinuity = disc.contains(&i);
        if discontinuity {
            ts += 5_000_000;
        }
        let duration = samples * 1_000_000 / rate;
        let title = title(i);
        let assigned = seg.assign(ts, duration, discontinuity, &title);
        out.push(TestChunk {
            seq: 1000 + i as u64,
            ts_micros: ts,
            audio_start_micros: audio,
            duration_micros: duration,
            discontinuity,
            title,
            data: these.iter().flat_map(|f| f.data.iter().copied()).collect(),
            assigned,
        });
        ts += duration as i64;
        audio += duration;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixtures_cut_into_whole_frames() {
        let mp3 = fixture("mp3/mp3-44100-128-s.mp3");
        let f = frames(&mp3);
        // 176-byte ID3 tag, 417-byte Info frame, then 1150 frames of 417/418 bytes.
        let bytes: usize = f.iter().map(|f| f.data.len()).sum();
        assert_eq!(bytes, mp3.len() - 176 - 417);
        assert!(f.iter().all(|f| f.samples == 1152 && f.rate == 44100));
        assert!(f.iter().all(|f| f.data[..2] == [0xFF, 0xFB]));
        let aac = fixture("aac-256.aac");
        let f = frames(&aac);
        let bytes: usize = f.iter().map(|f| f.data.len()).sum();
        assert_eq!(bytes, aac.len());
        assert!(f.iter().all(|f| f.samples == 1024 && f.rate == 44100));
    }
}
