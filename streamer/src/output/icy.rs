//! ICY (Shoutcast) metadata interleaving.
//!
//! After every `metaint` audio bytes comes one metadata block: a length byte
//! and `StreamTitle='…';`, or the single byte 0 when the title has not changed
//! since the last block. The writer's state (bytes to the next block, a block
//! half written, the last title sent) is all a successor process needs to
//! continue a listener without breaking the phase.

use std::io::IoSlice;
use std::sync::Arc;

use bytes::Bytes;

use crate::buffer::Title;

static ZERO_BLOCK: [u8; 1] = [0];

/// One piece of a planned write.
#[derive(Debug, Clone)]
enum Segment {
    /// `len` audio bytes starting `start` bytes into the caller's audio slice.
    Audio { start: usize, len: usize },
    /// A metadata block (or its rest), and the title it announces.
    Meta {
        block: Bytes,
        from: usize,
        title: Option<Arc<Title>>,
    },
}

/// The next write for a listener: up to three pieces (audio, block, audio),
/// held inline so planning a write never allocates.
#[derive(Debug, Default)]
pub struct Plan {
    segments: [Option<Segment>; 3],
}

impl Plan {
    /// A plain audio write (no ICY): the whole slice.
    pub fn audio(len: usize) -> Plan {
        Plan {
            segments: [Some(Segment::Audio { start: 0, len }), None, None],
        }
    }

    fn push(&mut self, seg: Segment) {
        if let Some(slot) = self.segments.iter_mut().find(|s| s.is_none()) {
            *slot = Some(seg);
        }
    }

    fn iter(&self) -> impl Iterator<Item = &Segment> {
        self.segments.iter().flatten()
    }

    fn count(&self) -> usize {
        self.iter().count()
    }

    /// The slices to pass to `write_vectored`, and how many are used.
    pub fn slices<'a>(&'a self, audio: &'a [u8]) -> ([IoSlice<'a>; 3], usize) {
        let mut out = [IoSlice::new(&[]), IoSlice::new(&[]), IoSlice::new(&[])];
        let mut n = 0;
        for s in self.iter() {
            let slice: &[u8] = match s {
                Segment::Audio { start, len } => &audio[*start..*start + *len],
                Segment::Meta { block, from, .. } => &block[*from..],
            };
            if !slice.is_empty() {
                out[n] = IoSlice::new(slice);
                n += 1;
            }
        }
        (out, n)
    }

    /// Total bytes in the plan.
    pub fn len(&self) -> usize {
        self.iter()
            .map(|s| match s {
                Segment::Audio { len, .. } => *len,
                Segment::Meta { block, from, .. } => block.len() - from,
            })
            .sum()
    }

    /// True when there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// An ICY writer's state as data (handoff): the phase, a half-written block,
/// and the last title sent.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IcyState {
    /// The interval.
    pub metaint: usize,
    /// Audio bytes left before the next block.
    pub until_meta: usize,
    /// A block being written, and how much of it is out.
    pub pending: Option<(Vec<u8>, usize)>,
    /// The last title announced.
    pub last_title: Option<String>,
}

/// A listener's ICY writer state.
#[derive(Debug, Clone)]
pub struct IcyWriter {
    metaint: usize,
    /// Audio bytes left before the next block; 0 means a block is due.
    until_meta: usize,
    /// A block whose first `.1` bytes are written.
    pending: Option<(Bytes, usize)>,
    last_title: Option<Arc<Title>>,
}

impl IcyWriter {
    /// A writer at the start of a response.
    pub fn new(metaint: u32) -> Self {
        IcyWriter {
            metaint: metaint as usize,
            until_meta: metaint as usize,
            pending: None,
            last_title: None,
        }
    }

    /// Its state as data.
    pub fn state(&self) -> IcyState {
        IcyState {
            metaint: self.metaint,
            until_meta: self.until_meta,
            pending: self.pending.as_ref().map(|(b, n)| (b.to_vec(), *n)),
            last_title: self.last_title.as_ref().map(|t| t.text().to_string()),
        }
    }

    /// A writer continuing from `state`.
    pub fn from_state(state: IcyState) -> Self {
        IcyWriter {
            metaint: state.metaint,
            until_meta: state.until_meta,
            pending: state.pending.map(|(b, n)| (Bytes::from(b), n)),
            last_title: state.last_title.map(Title::new),
        }
    }

    /// The interval.
    pub fn metaint(&self) -> usize {
        self.metaint
    }

    /// Audio bytes left before the next metadata block.
    pub fn until_meta(&self) -> usize {
        self.until_meta
    }

    fn block_for(&self, title: &Arc<Title>) -> (Bytes, Option<Arc<Title>>) {
        match &self.last_title {
            Some(last) if last.same_as(title) => (Bytes::from_static(&ZERO_BLOCK), None),
            None if title.text().is_empty() => (Bytes::from_static(&ZERO_BLOCK), None),
            _ => (title.icy_block().clone(), Some(Arc::clone(title))),
        }
    }

    /// Plans the next write of `audio_len` bytes of audio whose title is `title`.
    /// The plan never covers more than one metaint of audio, so a block is
    /// chosen with the title of the audio around it.
    pub fn plan(&self, audio_len: usize, title: &Arc<Title>) -> Plan {
        let mut segments = Plan::default();
        let mut until = self.until_meta;
        if let Some((block, from)) = &self.pending {
            segments.push(Segment::Meta {
                block: block.clone(),
                from: *from,
                title: None,
            });
            until = self.metaint;
        } else if until == 0 {
            let (block, t) = self.block_for(title);
            segments.push(Segment::Meta {
                block,
                from: 0,
                title: t,
            });
            until = self.metaint;
        }
        let a = until.min(audio_len);
        segments.push(Segment::Audio { start: 0, len: a });
        if a == until && a < audio_len && segments.count() == 1 {
            let (block, t) = self.block_for(title);
            segments.push(Segment::Meta {
                block,
                from: 0,
                title: t,
            });
            let b = self.metaint.min(audio_len - a);
            segments.push(Segment::Audio { start: a, len: b });
        }
        segments
    }

    /// Accounts for `n` bytes of `plan` written; returns the audio bytes among them.
    pub fn advance(&mut self, plan: &Plan, mut n: usize) -> usize {
        let mut audio = 0;
        for seg in plan.iter() {
            if n == 0 {
                break;
            }
            match seg {
                Segment::Audio { len, .. } => {
                    let k = n.min(*len);
                    audio += k;
                    self.until_meta -= k;
                    n -= k;
                }
                Segment::Meta { block, from, title } => {
                    let left = block.len() - from;
                    let k = n.min(left);
                    n -= k;
                    if let Some(t) = title {
                        // Committed once its first byte is out.
                        self.last_title = Some(Arc::clone(t));
                    }
                    if k == left {
                        self.pending = None;
                        self.until_meta = self.metaint;
                    } else {
                        self.pending = Some((block.clone(), from + k));
                        self.until_meta = self.metaint;
                        return audio;
                    }
                }
            }
        }
        audio
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `audio` through the writer in writes of at most `max_write` bytes,
    /// switching titles at the given audio offsets; returns the wire bytes.
    fn run(audio: &[u8], metaint: u32, max_write: usize, titles: &[(usize, &str)]) -> Vec<u8> {
        let titles: Vec<(usize, Arc<Title>)> =
            titles.iter().map(|(at, t)| (*at, Title::new(*t))).collect();
        let mut w = IcyWriter::new(metaint);
        let mut out = Vec::new();
        let mut pos = 0;
        while pos < audio.len() {
            let title = &titles.iter().rev().find(|(at, _)| *at <= pos).unwrap().1;
            // Chunk boundaries: never plan past the next title change.
            let next_change = titles
                .iter()
                .map(|(at, _)| *at)
                .find(|&at| at > pos)
                .unwrap_or(audio.len());
            let rest = &audio[pos..next_change];
            let plan = w.plan(rest.len(), title);
            let mut flat = Vec::new();
            let (slices, n) = plan.slices(rest);
            for s in &slices[..n] {
                flat.extend_from_slice(s);
            }
            let n = flat.len().min(max_write);
            out.extend_from_slice(&flat[..n]);
            pos += w.advance(&plan, n);
        }
        out
    }

    /// Splits an ICY byte stream into audio and the metadata blocks with
    /// their audio offsets, checking that blocks sit exactly every metaint bytes.
    fn parse(wire: &[u8], metaint: usize) -> (Vec<u8>, Vec<(usize, String)>) {
        let mut audio = Vec::new();
        let mut metas = Vec::new();
        let mut i = 0;
        while i < wire.len() {
            let n = metaint.min(wire.len() - i);
            audio.extend_from_slice(&wire[i..i + n]);
            i += n;
            if i >= wire.len() {
                break;
            }
            let len = wire[i] as usize * 16;
            let text = String::from_utf8(wire[i + 1..i + 1 + len].to_vec()).unwrap();
            if len > 0 {
                metas.push((audio.len(), text.trim_end_matches('\0').to_string()));
            }
            i += 1 + len;
        }
        (audio, metas)
    }

    #[test]
    fn blocks_every_metaint_and_only_on_change() {
        let audio: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        for max_write in [1, 7, 1000, 16_000, usize::MAX] {
            let wire = run(
                &audio,
                16_000,
                max_write,
                &[(0, "A"), (40_000, "B"), (41_000, "B2"), (90_000, "C")],
            );
            let (back, metas) = parse(&wire, 16_000);
            assert_eq!(back, audio, "max_write {max_write}");
            assert_eq!(
                metas,
                vec![
                    (16_000, "StreamTitle='A';".to_string()),
                    (48_000, "StreamTitle='B2';".to_string()),
                    (96_000, "StreamTitle='C';".to_string()),
                ],
                "max_write {max_write}"
            );
        }
    }

    #[test]
    fn empty_title_sends_zero_blocks() {
        let audio = vec![1u8; 50_000];
        let wire = run(&audio, 16_000, usize::MAX, &[(0, "")]);
        assert_eq!(wire.len(), 50_000 + 3);
        let (back, metas) = parse(&wire, 16_000);
        assert_eq!(back, audio);
        assert!(metas.is_empty());
    }
}
