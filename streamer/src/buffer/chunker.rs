//! Groups frames into chunks of about a second.

use bytes::Bytes;

use super::chunk::ChunkDraft;
use crate::format::Frame;

/// Target chunk length. One second keeps the per-chunk bookkeeping under 1 % of
/// the audio at 128 kbit/s while letting live listeners trail the source by
/// about a second.
pub const CHUNK_TARGET_MICROS: u64 = 1_000_000;

/// A chunker's partial chunk, so another process can continue it (handoff).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChunkerState {
    /// Frames collected so far.
    pub data: Vec<u8>,
    /// Their offsets.
    pub frames: Vec<u32>,
    /// Samples per frame.
    pub samples_per_frame: u32,
    /// Sample rate.
    pub sample_rate: u32,
    /// Target length.
    pub target_micros: u64,
}

/// Collects frames and emits a [`ChunkDraft`] once a chunk's worth is there.
/// A change of sample rate or frame size closes the chunk early, so every chunk
/// has one frame duration.
#[derive(Debug, Default)]
pub struct Chunker {
    data: Vec<u8>,
    frames: Vec<u32>,
    samples_per_frame: u32,
    sample_rate: u32,
    target_micros: u64,
}

impl Chunker {
    /// A chunker with the default target length.
    pub fn new() -> Self {
        Self::with_target(CHUNK_TARGET_MICROS)
    }

    /// A chunker with another target length (tests use short chunks).
    pub fn with_target(target_micros: u64) -> Self {
        Chunker {
            target_micros,
            ..Default::default()
        }
    }

    /// Adds a frame; returns a finished chunk when one is complete. At most one
    /// chunk can complete per frame (a format change closes the previous one
    /// before this frame is added, and it is returned; the frame starts the next).
    pub fn push(&mut self, frame: &Frame) -> Option<ChunkDraft> {
        let h = &frame.header;
        let mut done = None;
        if !self.frames.is_empty()
            && (h.samples != self.samples_per_frame || h.sample_rate != self.sample_rate)
        {
            done = self.flush();
        }
        if self.frames.is_empty() {
            self.samples_per_frame = h.samples;
            self.sample_rate = h.sample_rate;
            // A second of audio plus a little: one allocation per chunk in the usual case.
            let frames_per_chunk = (self.target_micros * u64::from(h.sample_rate)
                / (1_000_000 * u64::from(h.samples.max(1))))
                as usize
                + 1;
            self.data.reserve(frames_per_chunk * frame.data.len() + 64);
            self.frames.reserve(frames_per_chunk);
        }
        self.frames
            .push(u32::try_from(self.data.len()).unwrap_or(u32::MAX));
        self.data.extend_from_slice(&frame.data);
        if done.is_none() && self.buffered_micros() >= self.target_micros {
            done = self.flush();
        }
        done
    }

    /// Its partial chunk (see [`ChunkerState`]).
    pub fn state(&self) -> ChunkerState {
        ChunkerState {
            data: self.data.clone(),
            frames: self.frames.clone(),
            samples_per_frame: self.samples_per_frame,
            sample_rate: self.sample_rate,
            target_micros: self.target_micros,
        }
    }

    /// A chunker that continues from `state`.
    pub fn resume(state: ChunkerState) -> Self {
        Chunker {
            data: state.data,
            frames: state.frames,
            samples_per_frame: state.samples_per_frame,
            sample_rate: state.sample_rate,
            target_micros: state.target_micros,
        }
    }

    /// Audio held so far, in microseconds.
    pub fn buffered_micros(&self) -> u64 {
        self.frames.len() as u64 * u64::from(self.samples_per_frame) * 1_000_000
            / u64::from(self.sample_rate.max(1))
    }

    /// Emits what is held (at the end of a source), if anything.
    pub fn flush(&mut self) -> Option<ChunkDraft> {
        if self.frames.is_empty() {
            return None;
        }
        // The buffer copies it into its arena (buffer/arena): this vector is
        // short-lived, so its growth slack costs nothing.
        let data = std::mem::take(&mut self.data);
        let frames = std::mem::take(&mut self.frames).into_boxed_slice();
        Some(ChunkDraft {
            data: Bytes::from(data),
            frames,
            samples_per_frame: self.samples_per_frame,
            sample_rate: self.sample_rate,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{Codec, Framer};

    fn frames(path: &str, codec: Codec) -> Vec<Frame> {
        let data =
            std::fs::read(format!("{}/fixtures/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap();
        let mut f = Framer::new(codec);
        f.push(&data);
        let mut out = Vec::new();
        while let Some(fr) = f.next_frame().unwrap() {
            out.push(fr);
        }
        while let Some(fr) = f.finish().unwrap() {
            out.push(fr);
        }
        out
    }

    #[test]
    fn chunks_are_about_a_second_and_keep_every_byte() {
        for (path, codec) in [
            ("mp3/mp3-44100-128-s.mp3", Codec::Mp3),
            ("aac-256.aac", Codec::Aac),
        ] {
            let frames = frames(path, codec);
            let mut c = Chunker::new();
            let mut chunks: Vec<ChunkDraft> = frames.iter().filter_map(|f| c.push(f)).collect();
            chunks.extend(c.flush());
            let (last, full) = chunks.split_last().unwrap();
            for ch in full {
                let d = ch.duration_micros();
                assert!(
                    (1_000_000..1_030_000).contains(&d),
                    "{path}: chunk of {d} us"
                );
            }
            assert!(last.duration_micros() <= 1_030_000);
            let joined: Vec<u8> = chunks.iter().flat_map(|c| c.data.iter().copied()).collect();
            let expected: Vec<u8> = frames.iter().flat_map(|f| f.data.iter().copied()).collect();
            assert_eq!(joined, expected, "{path}");
            let n: usize = chunks.iter().map(|c| c.frames.len()).sum();
            assert_eq!(n, frames.len());
            // Frame offsets point at frame headers.
            for ch in &chunks {
                for &o in ch.frames.iter() {
                    assert_eq!(ch.data[o as usize], 0xFF);
                }
            }
        }
    }
}
