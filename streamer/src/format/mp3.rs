//! MPEG audio frame headers (MPEG-1, MPEG-2 and MPEG-2.5; Layers I, II and III)
//! and recognition of the encoder's Xing/Info/VBRI tag frame.

use super::{Codec, FrameHeader, HeaderDetail, Probe};

/// Length of an MPEG audio frame header (a 16-bit CRC may follow it).
pub const HEADER_LEN: usize = 4;

/// Largest legal frame: MPEG-2.5 Layer II, 160 kbit/s at 8 kHz, padded
/// (`144 * 160000 / 8000 + 1`). Layer I tops out at 1540 bytes (MPEG-2.5,
/// 256 kbit/s at 8 kHz), MPEG-1 Layer II at 1729, Layer III at 1441.
pub const MAX_FRAME_LEN: usize = 2881;

/// MPEG audio version (header bits 20–19; `01` is reserved).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MpegVersion {
    /// MPEG-1 (32, 44.1, 48 kHz).
    Mpeg1,
    /// MPEG-2 LSF (16, 22.05, 24 kHz).
    Mpeg2,
    /// Unofficial MPEG-2.5 (8, 11.025, 12 kHz).
    Mpeg25,
}

/// MPEG audio layer (header bits 18–17; `00` is reserved).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Layer {
    /// Layer I, 384 samples per frame.
    I,
    /// Layer II, 1152 samples per frame.
    II,
    /// Layer III ("mp3"), 1152 samples (MPEG-1) or 576 (MPEG-2/2.5) per frame.
    III,
}

/// Channel mode (header bits 7–6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChannelMode {
    /// Two independent channels.
    Stereo,
    /// Joint stereo (mid/side or intensity).
    JointStereo,
    /// Two unrelated mono channels.
    DualChannel,
    /// One channel.
    Mono,
}

/// The MPEG-specific fields of a frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MpegHeader {
    /// MPEG version.
    pub version: MpegVersion,
    /// Layer.
    pub layer: Layer,
    /// Channel mode.
    pub channel_mode: ChannelMode,
    /// A 16-bit CRC follows the header (protection bit is 0).
    pub crc: bool,
    /// The frame carries one padding slot.
    pub padding: bool,
    /// Bitrate index, 1–14.
    pub bitrate_index: u8,
    /// Sample-rate index, 0–2.
    pub sample_rate_index: u8,
    /// Emphasis, 0, 1 or 3.
    pub emphasis: u8,
}

impl MpegHeader {
    /// Whether `other` can be the next frame of the same stream: the fields that
    /// never change inside an MPEG stream (version, layer, sample rate) agree.
    /// Bitrate (VBR) and channel mode (stereo/joint switching) may change.
    pub fn same_stream(&self, other: &MpegHeader) -> bool {
        self.version == other.version
            && self.layer == other.layer
            && self.sample_rate_index == other.sample_rate_index
    }

    /// Length of the Layer III side information that follows the header (and CRC).
    fn side_info_len(&self) -> usize {
        match (self.version, self.channel_mode) {
            (MpegVersion::Mpeg1, ChannelMode::Mono) => 17,
            (MpegVersion::Mpeg1, _) => 32,
            (_, ChannelMode::Mono) => 9,
            (_, _) => 17,
        }
    }
}

/// Bitrates in kbit/s by [row][bitrate index]; index 0 (free format) is unsupported.
const BITRATES_KBPS: [[u16; 15]; 5] = [
    // MPEG-1 Layer I
    [
        0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448,
    ],
    // MPEG-1 Layer II
    [
        0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384,
    ],
    // MPEG-1 Layer III
    [
        0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320,
    ],
    // MPEG-2/2.5 Layer I
    [
        0, 32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256,
    ],
    // MPEG-2/2.5 Layers II and III
    [0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160],
];

/// MPEG-1 sample rates by index; halved for MPEG-2, quartered for MPEG-2.5.
const SAMPLE_RATES: [u32; 3] = [44100, 48000, 32000];

/// Parses the MPEG audio frame header at the start of `buf`.
///
/// Returns [`Probe::NeedMore`] only while every byte present is still consistent
/// with a valid header, so a caller can reject garbage as early as possible.
/// Rejected: bad sync, reserved version `01`, reserved layer `00`, bitrate index
/// 0 (free format) and 15, sample-rate index 3, reserved emphasis `10`.
pub fn parse_header(buf: &[u8]) -> Probe<FrameHeader> {
    let Some(&b0) = buf.first() else {
        return Probe::NeedMore;
    };
    if b0 != 0xFF {
        return Probe::Invalid;
    }
    let Some(&b1) = buf.get(1) else {
        return Probe::NeedMore;
    };
    if b1 & 0xE0 != 0xE0 {
        return Probe::Invalid;
    }
    let version = match (b1 >> 3) & 3 {
        0 => MpegVersion::Mpeg25,
        2 => MpegVersion::Mpeg2,
        3 => MpegVersion::Mpeg1,
        _ => return Probe::Invalid,
    };
    let layer = match (b1 >> 1) & 3 {
        1 => Layer::III,
        2 => Layer::II,
        3 => Layer::I,
        _ => return Probe::Invalid,
    };
    let crc = b1 & 1 == 0;
    let Some(&b2) = buf.get(2) else {
        return Probe::NeedMore;
    };
    let bitrate_index = b2 >> 4;
    let sample_rate_index = (b2 >> 2) & 3;
    if bitrate_index == 0 || bitrate_index == 15 || sample_rate_index == 3 {
        return Probe::Invalid;
    }
    let padding = (b2 >> 1) & 1 == 1;
    let Some(&b3) = buf.get(3) else {
        return Probe::NeedMore;
    };
    let emphasis = b3 & 3;
    if emphasis == 2 {
        return Probe::Invalid;
    }
    let channel_mode = match b3 >> 6 {
        0 => ChannelMode::Stereo,
        1 => ChannelMode::JointStereo,
        2 => ChannelMode::DualChannel,
        _ => ChannelMode::Mono,
    };

    let row = match (version, layer) {
        (MpegVersion::Mpeg1, Layer::I) => 0,
        (MpegVersion::Mpeg1, Layer::II) => 1,
        (MpegVersion::Mpeg1, Layer::III) => 2,
        (_, Layer::I) => 3,
        (_, _) => 4,
    };
    let bitrate_kbps = u32::from(BITRATES_KBPS[row][usize::from(bitrate_index)]);
    let divisor = match version {
        MpegVersion::Mpeg1 => 1,
        MpegVersion::Mpeg2 => 2,
        MpegVersion::Mpeg25 => 4,
    };
    let sample_rate = SAMPLE_RATES[usize::from(sample_rate_index)] / divisor;
    let bps = bitrate_kbps * 1000;
    let pad = u32::from(padding);
    let (frame_len, samples) = match (layer, version) {
        (Layer::I, _) => ((12 * bps / sample_rate + pad) * 4, 384),
        (Layer::II, _) => (144 * bps / sample_rate + pad, 1152),
        (Layer::III, MpegVersion::Mpeg1) => (144 * bps / sample_rate + pad, 1152),
        (Layer::III, _) => (72 * bps / sample_rate + pad, 576),
    };

    let mpeg = MpegHeader {
        version,
        layer,
        channel_mode,
        crc,
        padding,
        bitrate_index,
        sample_rate_index,
        emphasis,
    };
    Probe::Valid(FrameHeader {
        codec: Codec::Mp3,
        sample_rate,
        channels: if channel_mode == ChannelMode::Mono {
            1
        } else {
            2
        },
        samples,
        frame_len: frame_len as usize,
        bitrate_kbps: Some(bitrate_kbps),
        detail: HeaderDetail::Mpeg(mpeg),
    })
}

/// Whether `frame` (a whole Layer III frame described by `h`) is an encoder tag
/// frame rather than audio: `Xing` or `Info` right after the side information
/// (LAME, Xing; looked for both without and with the 2-byte CRC, since readers
/// such as LAME and FFmpeg ignore the CRC there), or `VBRI` 32 bytes after the
/// header (Fraunhofer). Decoders treat such a frame as metadata; on a live stream
/// its frame count and byte size would be bogus, so the framer drops it.
pub fn is_encoder_tag_frame(frame: &[u8], h: &MpegHeader) -> bool {
    if h.layer != Layer::III {
        return false;
    }
    let tag_at = |offset: usize, tag: &[u8; 4]| frame.get(offset..offset + 4) == Some(&tag[..]);
    let xing_at = |offset: usize| tag_at(offset, b"Xing") || tag_at(offset, b"Info");
    let offset = HEADER_LEN + h.side_info_len();
    xing_at(offset) || (h.crc && xing_at(offset + 2)) || tag_at(HEADER_LEN + 32, b"VBRI")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: [u8; 4]) -> FrameHeader {
        match parse_header(&bytes) {
            Probe::Valid(h) => h,
            other => panic!("{bytes:02X?} did not parse: {other:?}"),
        }
    }

    fn mpeg(h: &FrameHeader) -> MpegHeader {
        match h.detail {
            HeaderDetail::Mpeg(m) => m,
            HeaderDetail::Adts(_) => panic!("not an MPEG header"),
        }
    }

    #[test]
    fn fixture_headers() {
        // mp3-44100-128-s audio frame: MPEG-1 L3, 128k, 44.1k, joint stereo, no CRC.
        let h = parse([0xFF, 0xFB, 0x90, 0x64]);
        assert_eq!(h.sample_rate, 44100);
        assert_eq!(h.bitrate_kbps, Some(128));
        assert_eq!(h.frame_len, 417); // 144 * 128000 / 44100 = 417.96
        assert_eq!(h.samples, 1152);
        assert_eq!(h.channels, 2);
        assert_eq!(mpeg(&h).channel_mode, ChannelMode::JointStereo);
        assert!(!mpeg(&h).crc);
        // Same, padded.
        assert_eq!(parse([0xFF, 0xFB, 0x92, 0x64]).frame_len, 418);
        // tone fixtures: FF FA = CRC present, mono.
        let h = parse([0xFF, 0xFA, 0x93, 0xCC]);
        assert!(mpeg(&h).crc);
        assert_eq!(h.channels, 1);
        assert_eq!(h.frame_len, 418);
        // mp3-22050-64-s: MPEG-2 L3 64k 22.05k: 72 * 64000 / 22050 = 208.98.
        let h = parse([0xFF, 0xF3, 0x80, 0x64]);
        assert_eq!(mpeg(&h).version, MpegVersion::Mpeg2);
        assert_eq!((h.sample_rate, h.frame_len, h.samples), (22050, 208, 576));
    }

    #[test]
    fn all_layers_and_versions() {
        // MPEG-1 Layer I, 128k, 44.1k: (12 * 128000 / 44100 = 34) * 4.
        let h = parse([0xFF, 0xFF, 0x40, 0x00]);
        assert_eq!((h.frame_len, h.samples), (136, 384));
        assert_eq!(parse([0xFF, 0xFF, 0x42, 0x00]).frame_len, 140);
        // MPEG-1 Layer II, 256k, 48k: 144 * 256000 / 48000.
        let h = parse([0xFF, 0xFD, 0xC4, 0x00]);
        assert_eq!(
            (h.frame_len, h.samples, h.bitrate_kbps),
            (768, 1152, Some(256))
        );
        // MPEG-2 Layer I, 256k (index 14), 24k: (12 * 256000 / 24000 = 128) * 4.
        let h = parse([0xFF, 0xF7, 0xE4, 0x00]);
        assert_eq!(
            (h.sample_rate, h.frame_len, h.bitrate_kbps),
            (24000, 512, Some(256))
        );
        // MPEG-2 Layer II, 160k, 16k: 144 * 160000 / 16000 = 1440.
        let h = parse([0xFF, 0xF5, 0xE8, 0x00]);
        assert_eq!((h.sample_rate, h.frame_len, h.samples), (16000, 1440, 1152));
        // MPEG-2.5 Layer III, 64k, 8k: 72 * 64000 / 8000.
        let h = parse([0xFF, 0xE3, 0x88, 0xC0]);
        assert_eq!(mpeg(&h).version, MpegVersion::Mpeg25);
        assert_eq!((h.sample_rate, h.frame_len, h.samples), (8000, 576, 576));
        // MPEG-2.5 11025 and 12000.
        assert_eq!(parse([0xFF, 0xE3, 0x80, 0xC0]).sample_rate, 11025);
        assert_eq!(parse([0xFF, 0xE3, 0x84, 0xC0]).sample_rate, 12000);
        // The largest frame: MPEG-2.5 Layer II, 160k, 8k, padded.
        assert_eq!(parse([0xFF, 0xE5, 0xEA, 0x00]).frame_len, MAX_FRAME_LEN);
    }

    #[test]
    fn reserved_values_are_rejected() {
        for bad in [
            [0xFF, 0xEB, 0x90, 0x00], // version 01
            [0xFF, 0xF9, 0x90, 0x00], // layer 00
            [0xFF, 0xFB, 0x00, 0x00], // free format
            [0xFF, 0xFB, 0xF0, 0x00], // bitrate index 15
            [0xFF, 0xFB, 0x9C, 0x00], // sample-rate index 3
            [0xFF, 0xFB, 0x90, 0x02], // emphasis 10
            [0xFE, 0xFB, 0x90, 0x00], // sync
            [0xFF, 0xDB, 0x90, 0x00], // sync
            [0xFF, 0xF1, 0x50, 0x80], // an ADTS header
        ] {
            assert_eq!(parse_header(&bad), Probe::Invalid, "{bad:02X?}");
        }
        assert_eq!(parse_header(&[0xFF, 0xFB, 0x90]), Probe::NeedMore);
        assert_eq!(parse_header(&[0xFF, 0xF9]), Probe::Invalid);
        assert_eq!(parse_header(&[0xFF, 0xFB, 0xF0]), Probe::Invalid);
        assert_eq!(parse_header(&[]), Probe::NeedMore);
    }

    /// Exhaustive: every valid header has a frame long enough to hold the header and
    /// CRC, and none exceeds MAX_FRAME_LEN (which the framer's buffer bound relies on).
    #[test]
    fn frame_length_bounds_over_all_headers() {
        let mut max = 0;
        let mut min = usize::MAX;
        for b1 in 0xE0..=0xFFu8 {
            for b2 in 0..=0xFFu8 {
                for b3 in 0..=0xFFu8 {
                    if let Probe::Valid(h) = parse_header(&[0xFF, b1, b2, b3]) {
                        max = max.max(h.frame_len);
                        min = min.min(h.frame_len);
                    }
                }
            }
        }
        assert_eq!(max, MAX_FRAME_LEN);
        assert!(min >= HEADER_LEN + 2, "min frame {min}");
    }

    #[test]
    fn encoder_tag_frames() {
        let mut frame = vec![0u8; 417];
        frame[..4].copy_from_slice(&[0xFF, 0xFB, 0x90, 0x64]);
        let h = mpeg(&parse([0xFF, 0xFB, 0x90, 0x64]));
        assert!(!is_encoder_tag_frame(&frame, &h));
        frame[36..40].copy_from_slice(b"Xing");
        assert!(is_encoder_tag_frame(&frame, &h));
        frame[36..40].copy_from_slice(b"VBRI");
        assert!(is_encoder_tag_frame(&frame, &h));
        // MPEG-2 mono: side info is 9 bytes.
        let mut frame = vec![0u8; 208];
        frame[..4].copy_from_slice(&[0xFF, 0xF3, 0x80, 0xC4]);
        let h = mpeg(&parse([0xFF, 0xF3, 0x80, 0xC4]));
        frame[13..17].copy_from_slice(b"Info");
        assert!(is_encoder_tag_frame(&frame, &h));
        // "Info" at the wrong place is audio data.
        frame[13..17].copy_from_slice(b"\0\0\0\0");
        frame[21..25].copy_from_slice(b"Info");
        assert!(!is_encoder_tag_frame(&frame, &h));
        // Layer II frames never are tag frames.
        let mut frame = vec![0u8; 768];
        frame[..4].copy_from_slice(&[0xFF, 0xFD, 0xC4, 0x00]);
        frame[36..40].copy_from_slice(b"Xing");
        let h = mpeg(&parse([0xFF, 0xFD, 0xC4, 0x00]));
        assert!(!is_encoder_tag_frame(&frame, &h));
    }
}
