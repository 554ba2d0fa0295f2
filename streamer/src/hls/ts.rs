//! MPEG-TS segments (ISO/IEC 13818-1), the container every HLS player has
//! played since 2009, for the players that take no packed audio.
//!
//! A segment is self-contained: PAT and PMT first, then the segment's title
//! as timed ID3 metadata (stream type 0x15, as Apple's timed-metadata spec
//! and ffmpeg write it) at the segment's first timestamp, then one PES per
//! chunk (split at a frame boundary when a chunk would not fit a PES) with
//! its presentation timestamp from the stream's audio clock: the same
//! 90 kHz clock the packed-audio segments carry, so timestamps follow on
//! exactly from one segment to the next, whatever container a player uses.
//!
//! Hand-written (no maintained Rust muxer writes audio-only TS with timed
//! ID3): the container is a fixed layout of 188-byte packets.
//!
//! Continuity counters run on across segments without any state: the audio
//! PID's packets per segment are made a multiple of 16 (its counter starts
//! at 0 in every segment), and the one-packet PAT and PMT count with the
//! segment number. Segments can be built in any order, on any process.

use bytes::Bytes;

use super::{id3, Codec};

/// A TS packet.
pub const PACKET_LEN: usize = 188;

const PID_PAT: u16 = 0x0000;
const PID_PMT: u16 = 0x1000;
const PID_AUDIO: u16 = 0x0100;
const PID_ID3: u16 = 0x0102;

/// The largest audio payload of one PES (its 16-bit length field, less the
/// header after it).
const MAX_PES_PAYLOAD: usize = 65_535 - 8;

/// The PCR runs this far ahead of the first presentation (90 kHz): a decoder
/// buffers before it presents.
const PCR_LEAD: u64 = 9_000;

/// A run of whole frames with the stream audio time of its first sample.
#[derive(Debug, Clone)]
pub struct Piece<'a> {
    /// Stream audio time of the first sample, µs.
    pub audio_start_micros: u64,
    /// Whole frames, back to back.
    pub data: &'a [u8],
    /// Byte offset of each frame in `data`.
    pub frames: &'a [u32],
    /// Microseconds per frame.
    pub frame_micros: f64,
}

/// A segment's TS bytes: `number` (for the PSI continuity counters), the
/// codec, the title, and its audio in order.
pub fn segment(number: u64, codec: Codec, title: &str, pieces: &[Piece<'_>]) -> Bytes {
    let mut out = Vec::new();
    let cc = (number % 16) as u8;
    let first_pts = pieces
        .first()
        .map_or(0, |p| id3::pts_90khz(p.audio_start_micros));
    packetize(&mut out, PID_PAT, &pat(), cc, 1, None);
    packetize(&mut out, PID_PMT, &pmt(codec), cc, 1, None);
    let tag = id3::title_tag(title);
    let id3_pes = pes(0xBD, first_pts, &tag);
    let id3_packets = packets_needed(id3_pes.len(), false);
    packetize(&mut out, PID_ID3, &id3_pes, cc, id3_packets, None);

    // Audio: every PES, then packet counts padded to a multiple of 16.
    let mut all = Vec::new();
    for p in pieces {
        split(p, &mut all);
    }
    let mut counts: Vec<usize> = all
        .iter()
        .enumerate()
        .map(|(i, pes)| packets_needed(pes.len(), i == 0))
        .collect();
    let total: usize = counts.iter().sum();
    let extra = (16 - total % 16) % 16;
    if let Some((i, _)) = all.iter().enumerate().max_by_key(|(_, pes)| pes.len()) {
        counts[i] += extra;
    }
    let pcr = first_pts.saturating_sub(PCR_LEAD);
    let mut cc = 0u8;
    for (i, (pes, n)) in all.iter().zip(counts).enumerate() {
        cc = packetize(&mut out, PID_AUDIO, pes, cc, n, (i == 0).then_some(pcr));
    }
    Bytes::from(out)
}

/// An upper bound of the bytes [`segment`] writes for `audio_bytes` of audio
/// in `chunks` pieces under `title`, within a few packets of the real size:
/// for `BANDWIDTH` without building the segment.
pub fn max_len(audio_bytes: u64, chunks: u64, title: &str) -> u64 {
    // A piece splits into a PES per MAX_PES_PAYLOAD bytes at most, plus one.
    let pes = chunks.max(1) + audio_bytes / MAX_PES_PAYLOAD as u64;
    // Each PES: a 14-byte header, and at most one part-filled packet; the
    // first carries the PCR (8 bytes); then padding to a multiple of 16.
    let audio_packets = (audio_bytes + 14 * pes + 8).div_ceil(184) + pes + 15;
    let id3_packets = packets_needed(id3::title_tag(title).len() + 14, false) as u64;
    (2 + id3_packets + audio_packets) * PACKET_LEN as u64
}

/// Cuts a piece into PES packets that fit the length field, at frame
/// boundaries.
fn split(p: &Piece<'_>, out: &mut Vec<Vec<u8>>) {
    let n = p.frames.len();
    // Where frame `i` starts (the end for `i == n`).
    let boundary = |i: usize| p.frames.get(i).map_or(p.data.len(), |&o| o as usize);
    let mut frame = 0usize;
    while frame < n {
        let start = boundary(frame);
        // This PES holds frames [frame, last): as many as fit, at least one.
        let mut last = frame + 1;
        while last < n && boundary(last + 1) - start <= MAX_PES_PAYLOAD {
            last += 1;
        }
        let micros = p.audio_start_micros + (frame as f64 * p.frame_micros).round() as u64;
        out.push(pes(
            0xC0,
            id3::pts_90khz(micros),
            &p.data[start..boundary(last)],
        ));
        frame = last;
    }
}

/// A PES packet with a presentation timestamp.
fn pes(stream_id: u8, pts: u64, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(14 + payload.len());
    v.extend_from_slice(&[0, 0, 1, stream_id]);
    let len = u16::try_from(payload.len() + 8).unwrap_or(0);
    v.extend_from_slice(&len.to_be_bytes());
    // '10', not scrambled, data aligned; PTS only; 5 header bytes.
    v.extend_from_slice(&[0x84, 0x80, 5]);
    v.extend_from_slice(&timestamp(0x2, pts));
    v.extend_from_slice(payload);
    v
}

/// A 33-bit timestamp in the PES layout, after a 4-bit prefix.
fn timestamp(prefix: u8, ts: u64) -> [u8; 5] {
    [
        (prefix << 4) | (((ts >> 30) as u8 & 0x07) << 1) | 1,
        (ts >> 22) as u8,
        (((ts >> 15) as u8 & 0x7F) << 1) | 1,
        (ts >> 7) as u8,
        ((ts as u8 & 0x7F) << 1) | 1,
    ]
}

/// Packets a payload of `len` needs at least (the first may carry a PCR).
fn packets_needed(len: usize, pcr: bool) -> usize {
    let first = if pcr { 184 - 8 } else { 184 };
    if len <= first {
        1
    } else {
        1 + (len - first).div_ceil(184)
    }
}

/// Writes `payload` as exactly `n` packets of `pid` (stuffing in adaptation
/// fields where it does not fill them), the first starting the unit and
/// carrying `pcr` if given; returns the next continuity counter.
fn packetize(
    out: &mut Vec<u8>,
    pid: u16,
    payload: &[u8],
    cc: u8,
    n: usize,
    pcr: Option<u64>,
) -> u8 {
    let n = n
        .max(packets_needed(payload.len(), pcr.is_some()))
        .min(payload.len().max(1));
    // Payload bytes per packet: fill from the front, leave stuffing at the end,
    // every packet at least one byte.
    let mut room: Vec<usize> = (0..n)
        .map(|i| {
            if i == 0 && pcr.is_some() {
                184 - 8
            } else {
                184
            }
        })
        .collect();
    let mut excess = room.iter().sum::<usize>() - payload.len();
    for r in room.iter_mut().rev() {
        // A packet with an adaptation field loses its length and flags bytes.
        let take = excess.min(*r - 1);
        *r -= take;
        excess -= take;
        if excess == 0 {
            break;
        }
    }
    let mut at = 0;
    let mut cc = cc & 0x0F;
    for (i, r) in room.into_iter().enumerate() {
        let base = out.len();
        out.push(0x47);
        let pusi = if i == 0 { 0x40 } else { 0 };
        out.push(pusi | ((pid >> 8) as u8 & 0x1F));
        out.push(pid as u8);
        let with_pcr = i == 0 && pcr.is_some();
        let body = r.min(payload.len() - at);
        if body == 184 && !with_pcr {
            out.push(0x10 | cc);
        } else {
            out.push(0x30 | cc);
            // Adaptation field: everything before the payload.
            let af_len = 183 - body;
            out.push(af_len as u8);
            if af_len > 0 {
                let mut used = 1;
                out.push(if with_pcr { 0x10 } else { 0x00 });
                if let Some(pcr) = pcr.filter(|_| with_pcr) {
                    out.extend_from_slice(&pcr_bytes(pcr));
                    used += 6;
                }
                out.resize(out.len() + af_len - used, 0xFF);
            }
        }
        out.extend_from_slice(&payload[at..at + body]);
        at += body;
        debug_assert_eq!(out.len() - base, PACKET_LEN);
        cc = (cc + 1) & 0x0F;
    }
    cc
}

/// The 6-byte PCR field (base only, extension 0).
fn pcr_bytes(base: u64) -> [u8; 6] {
    let b = base & ((1 << 33) - 1);
    [
        (b >> 25) as u8,
        (b >> 17) as u8,
        (b >> 9) as u8,
        (b >> 1) as u8,
        (((b & 1) as u8) << 7) | 0x7E,
        0,
    ]
}

/// The program association table: program 1 at the PMT's PID.
fn pat() -> Vec<u8> {
    let mut s = vec![0x00, 0xB0, 0, 0x00, 0x01, 0xC1, 0x00, 0x00];
    s.extend_from_slice(&[0x00, 0x01, 0xE0 | (PID_PMT >> 8) as u8, PID_PMT as u8]);
    section(s)
}

/// The program map table: the audio (which carries the PCR) and the timed
/// ID3 metadata.
fn pmt(codec: Codec) -> Vec<u8> {
    let mut s = vec![0x02, 0xB0, 0, 0x00, 0x01, 0xC1, 0x00, 0x00];
    s.extend_from_slice(&[0xE0 | (PID_AUDIO >> 8) as u8, PID_AUDIO as u8]);
    // Program info: a metadata pointer descriptor for the ID3 stream.
    let mut pointer = vec![0x25, 15, 0xFF, 0xFF];
    pointer.extend_from_slice(b"ID3 \xFFID3 ");
    pointer.extend_from_slice(&[0x00, 0x1F, 0x00, 0x01]);
    s.extend_from_slice(&[0xF0, pointer.len() as u8]);
    s.extend_from_slice(&pointer);
    let stream_type = match codec {
        Codec::Mp3 => 0x03,
        Codec::Aac => 0x0F,
    };
    s.extend_from_slice(&[
        stream_type,
        0xE0 | (PID_AUDIO >> 8) as u8,
        PID_AUDIO as u8,
        0xF0,
        0x00,
    ]);
    let mut descriptor = vec![0x26, 13, 0xFF, 0xFF];
    descriptor.extend_from_slice(b"ID3 \xFFID3 ");
    descriptor.extend_from_slice(&[0x00, 0x0F]);
    s.extend_from_slice(&[
        0x15,
        0xE0 | (PID_ID3 >> 8) as u8,
        PID_ID3 as u8,
        0xF0,
        descriptor.len() as u8,
    ]);
    s.extend_from_slice(&descriptor);
    section(s)
}

/// Fills in a PSI section's length, appends its CRC, and puts the pointer
/// field before it.
fn section(mut s: Vec<u8>) -> Vec<u8> {
    let len = s.len() - 3 + 4;
    s[1] = 0xB0 | ((len >> 8) as u8 & 0x0F);
    s[2] = len as u8;
    let crc = crc32_mpeg(&s);
    s.extend_from_slice(&crc.to_be_bytes());
    let mut out = Vec::with_capacity(1 + s.len());
    out.push(0);
    out.extend_from_slice(&s);
    out
}

/// CRC-32/MPEG-2 (polynomial 0x04C11DB7, not reflected, initial all ones).
fn crc32_mpeg(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= u32::from(b) << 24;
        for _ in 0..8 {
            crc = if crc & 0x8000_0000 != 0 {
                (crc << 1) ^ 0x04C1_1DB7
            } else {
                crc << 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_is_mpeg2s() {
        // The check value of CRC-32/MPEG-2.
        assert_eq!(crc32_mpeg(b"123456789"), 0x0376_E6E7);
    }

    /// Every packet: sync byte, PID, and per PID a counter that runs on.
    fn packets(ts: &[u8]) -> Vec<(u16, u8, bool)> {
        assert_eq!(ts.len() % PACKET_LEN, 0);
        ts.chunks(PACKET_LEN)
            .map(|p| {
                assert_eq!(p[0], 0x47);
                let pid = (u16::from(p[1] & 0x1F) << 8) | u16::from(p[2]);
                (pid, p[3] & 0x0F, p[1] & 0x40 != 0)
            })
            .collect()
    }

    #[test]
    fn max_len_bounds_the_segment_closely() {
        for (bytes, frame, per_chunk) in [
            (40_000u32, 417u32, 96u32),
            (200_000, 1044, 200),
            (300, 100, 3),
        ] {
            let data: Vec<u8> = (0..bytes).map(|i| i as u8).collect();
            let frames: Vec<u32> = (0..per_chunk)
                .map(|i| i * frame)
                .filter(|&o| o < bytes)
                .collect();
            let pieces: Vec<Piece<'_>> = (0..3)
                .map(|i| Piece {
                    audio_start_micros: 5_000_000 + i * 1_000_000,
                    data: &data,
                    frames: &frames,
                    frame_micros: 26_122.0,
                })
                .collect();
            let real = segment(9, Codec::Mp3, "A title", &pieces).len() as u64;
            let bound = max_len(3 * u64::from(bytes), 3, "A title");
            assert!(real <= bound, "{real} > {bound}");
            // Within 1 % and a few packets.
            assert!(
                bound - real <= real / 100 + 24 * PACKET_LEN as u64,
                "{real} vs {bound}"
            );
        }
    }

    #[test]
    fn audio_counters_run_on_from_one_segment_to_the_next() {
        let data: Vec<u8> = (0..40_000u32).map(|i| i as u8).collect();
        let frames: Vec<u32> = (0..96).map(|i| i * 417).collect();
        let piece = Piece {
            audio_start_micros: 5_000_000,
            data: &data,
            frames: &frames,
            frame_micros: 26_122.0,
        };
        for number in [7u64, 8] {
            let ts = segment(number, Codec::Mp3, "Title", std::slice::from_ref(&piece));
            let p = packets(&ts);
            assert_eq!((p[0].0, p[0].1), (PID_PAT, (number % 16) as u8));
            assert_eq!((p[1].0, p[1].1), (PID_PMT, (number % 16) as u8));
            let audio: Vec<u8> = p.iter().filter(|x| x.0 == PID_AUDIO).map(|x| x.1).collect();
            assert_eq!(audio.len() % 16, 0, "a multiple of 16 packets");
            for (i, cc) in audio.iter().enumerate() {
                assert_eq!(*cc as usize, i % 16);
            }
        }
    }
}
