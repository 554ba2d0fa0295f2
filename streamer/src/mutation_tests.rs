//! Mutation tests of every parser that reads bytes from outside: valid input
//! (fixtures, real link frames) mutated thousands of ways (bytes flipped,
//! set, inserted, deleted, duplicated, truncated), fed in random pieces. No
//! input may panic, grow a buffer beyond its bound, or yield a frame that is
//! not one. Deterministic (seeded), so a failure names its seed; stable Rust,
//! so CI runs it (cargo-fuzz needs a nightly toolchain this project does not use).

use std::panic::AssertUnwindSafe;

use bytes::BytesMut;

use crate::buffer::{ChunkDraft, Chunker};
use crate::format::{Codec, Framer};
use crate::link::frame;
use crate::persist::dump::tests::{chunk, Rng};

/// Uniform in `0..n` (0 when `n` is 0).
fn pick(rng: &mut Rng, n: usize) -> usize {
    (rng.next() % n.max(1) as u64) as usize
}

/// `data` with 1–8 random mutations.
fn mutate(rng: &mut Rng, data: &[u8]) -> Vec<u8> {
    let mut d = data.to_vec();
    for _ in 0..1 + pick(rng, 8) {
        if d.is_empty() {
            d.push(rng.next() as u8);
        }
        let at = pick(rng, d.len());
        match pick(rng, 6) {
            0 => d[at] ^= 1 << pick(rng, 8),
            1 => d[at] = rng.next() as u8,
            2 => {
                let n = 1 + pick(rng, 16);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                d.splice(at..at, bytes);
            }
            3 => {
                let end = (at + 1 + pick(rng, 64)).min(d.len());
                d.drain(at..end);
            }
            4 => {
                let end = (at + 1 + pick(rng, 512)).min(d.len());
                let copy = d[at..end].to_vec();
                let to = pick(rng, d.len());
                d.splice(to..to, copy);
            }
            _ => d.truncate(at),
        }
    }
    d
}

fn fixture(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Runs `f(seed)` for `n` seeds; a panic is reported with its seed.
fn for_seeds(n: u64, f: impl Fn(u64)) {
    for seed in 1..=n {
        if std::panic::catch_unwind(AssertUnwindSafe(|| f(seed))).is_err() {
            panic!("failed at seed {seed}");
        }
    }
}

/// Framer: every frame out is a whole frame (its header parses, its length
/// is the header's), and the buffer stays bounded.
#[test]
fn the_framer_survives_mutated_streams() {
    let inputs = [
        (fixture("mp3/mp3-44100-128-s.mp3"), Codec::Mp3),
        (fixture("mp3/tone1kHz-44100-128-m.mp3"), Codec::Mp3),
        (fixture("aac-256.aac"), Codec::Aac),
    ];
    for_seeds(600, |seed| {
        let mut rng = Rng::new(seed);
        let (clean, codec) = &inputs[pick(&mut rng, inputs.len())];
        let data = mutate(&mut rng, clean);
        let mut framer = Framer::new(*codec);
        let mut at = 0;
        let mut frames = 0;
        'feed: while at < data.len() {
            let n = (1 + pick(&mut rng, 8192)).min(data.len() - at);
            framer.push(&data[at..at + n]);
            at += n;
            loop {
                match framer.next_frame() {
                    Ok(Some(f)) => {
                        frames += 1;
                        let h = crate::transcode::decode::frame_header(&f.data)
                            .expect("a frame out of the framer has a valid header");
                        assert_eq!(h.frame_len, f.data.len());
                    }
                    Ok(None) => break,
                    Err(_) => break 'feed,
                }
                assert!(framer.buffered() <= 64 * 1024 + 2 * 16_392 + 8192);
            }
        }
        while let Ok(Some(_)) = framer.finish() {
            frames += 1;
        }
        assert!(frames <= data.len() / 7 + 1);
    });
}

/// The transcoder's decoders (Symphonia) on mutated audio: errors, never a
/// panic (the worker would survive one, but it would restart the stream).
#[test]
fn the_transcoder_survives_mutated_audio() {
    let inputs = [
        (fixture("mp3/tone1kHz-44100-128-m.mp3"), Codec::Mp3),
        (fixture("aac-256.aac"), Codec::Aac),
    ];
    for_seeds(40, |seed| {
        let mut rng = Rng::new(seed);
        let (clean, codec) = &inputs[pick(&mut rng, inputs.len())];
        // Mutate inside frames (the framer drops broken ones): flip bytes
        // of the frames that come out.
        let mut framer = Framer::new(*codec);
        framer.push(clean);
        let mut chunker = Chunker::with_target(250_000);
        let mut drafts: Vec<ChunkDraft> = Vec::new();
        while let Ok(Some(mut f)) = framer.finish() {
            if pick(&mut rng, 4) == 0 {
                let mut d = f.data.to_vec();
                for _ in 0..1 + pick(&mut rng, 4) {
                    let i = 4 + pick(&mut rng, d.len().saturating_sub(4));
                    if let Some(b) = d.get_mut(i) {
                        *b = rng.next() as u8;
                    }
                }
                f.data = d.into();
            }
            drafts.extend(chunker.push(&f));
        }
        drafts.extend(chunker.flush());
        let config =
            streammachine_config::TranscodeConfig::new(streammachine_config::AudioFormat::Aac, 64);
        let mut p = crate::transcode::Pipeline::new(config);
        for d in &drafts {
            let _ = p.feed(1, d, None, 0);
        }
        let _ = p.end(1);
    });
}

/// The link decoder: mutated frame streams give frames or errors, never a
/// panic, and never an allocation beyond the frame size limit.
#[test]
fn the_link_decoder_survives_mutated_frames() {
    let mut wire = frame::heartbeat();
    wire.extend(frame::hello(&frame::Hello {
        version: 1,
        id: "slave-1".into(),
        next_seq: [("news".to_string(), 5)].into(),
        last: Default::default(),
    }));
    wire.extend(frame::stats(&frame::Stats::default()));
    wire.extend(frame::want(&frame::Want {
        stream: "news".into(),
        from_seq: 3,
    }));
    let c = chunk(&mut Rng::new(1), 5, 200, 2, "a title");
    let mut head = Vec::new();
    crate::persist::encode_record_head(&c, &crate::persist::dump::Limits::default(), &mut head)
        .unwrap();
    wire.extend(frame::chunk_head("news", &head, c.data.len()));
    wire.extend_from_slice(&c.data);
    for_seeds(3000, |seed| {
        let mut rng = Rng::new(seed);
        let data = mutate(&mut rng, &wire);
        let mut buf = BytesMut::new();
        let mut codec = frame::LinkCodec::default();
        let mut at = 0;
        'feed: while at < data.len() {
            let n = (1 + pick(&mut rng, 64)).min(data.len() - at);
            buf.extend_from_slice(&data[at..at + n]);
            at += n;
            loop {
                match tokio_util::codec::Decoder::decode(&mut codec, &mut buf) {
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(_) => break 'feed,
                }
            }
        }
    });
}
