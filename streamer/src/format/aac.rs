//! AAC in ADTS (Audio Data Transport Stream) frame headers.

use super::{Codec, FrameHeader, HeaderDetail, Probe};

/// Length of an ADTS header without CRC (`protection_absent = 1`); 9 with CRC.
pub const MIN_HEADER_LEN: usize = 7;

/// Largest frame the 13-bit `frame_length` field can describe.
pub const MAX_FRAME_LEN: usize = 8191;

/// Sample rates by `sampling_frequency_index` (13–15 are reserved/escape).
const SAMPLE_RATES: [u32; 13] = [
    96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
];

/// The ADTS-specific fields of a frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AdtsHeader {
    /// The ID bit: MPEG-2 AAC (true) or MPEG-4 AAC (false).
    pub mpeg2: bool,
    /// The 2-bit profile field; the MPEG-4 audio object type is `profile + 1`
    /// (0 Main, 1 LC, 2 SSR, 3 LTP).
    pub profile: u8,
    /// `sampling_frequency_index`, 0–12.
    pub sampling_index: u8,
    /// `channel_configuration`, 0–7 (0: defined in-band by a program config element).
    pub channel_config: u8,
    /// A 16-bit CRC follows the 7 fixed header bytes (`protection_absent = 0`).
    pub crc: bool,
    /// `number_of_raw_data_blocks_in_frame` (the frame holds this + 1 blocks).
    pub raw_blocks: u8,
    /// `adts_buffer_fullness` (0x7FF = variable bitrate).
    pub buffer_fullness: u16,
}

impl AdtsHeader {
    /// The MPEG-4 audio object type (`profile + 1`; AAC-LC is 2).
    pub fn object_type(&self) -> u8 {
        self.profile + 1
    }

    /// Header length in bytes: 7, or 9 with CRC.
    pub fn header_len(&self) -> usize {
        header_len(self.crc)
    }

    /// Whether `other` can be the next frame of the same stream: sampling index,
    /// channel configuration and profile agree (the layer is always `00`).
    pub fn same_stream(&self, other: &AdtsHeader) -> bool {
        self.sampling_index == other.sampling_index
            && self.channel_config == other.channel_config
            && self.profile == other.profile
    }
}

/// Parses the ADTS header at the start of `buf`.
///
/// Returns [`Probe::NeedMore`] only while every byte present is still consistent
/// with a valid header. Rejected: bad 12-bit sync, layer other than `00`, sampling
/// index 13–15, `frame_length` shorter than the header itself.
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
    // Sync nibble 0xF and layer 00; the ID and protection_absent bits are free.
    if b1 & 0xF6 != 0xF0 {
        return Probe::Invalid;
    }
    let mpeg2 = b1 & 0x08 != 0;
    let crc = b1 & 1 == 0;
    let Some(&b2) = buf.get(2) else {
        return Probe::NeedMore;
    };
    let profile = b2 >> 6;
    let sampling_index = (b2 >> 2) & 0x0F;
    let Some(&sample_rate) = SAMPLE_RATES.get(usize::from(sampling_index)) else {
        return Probe::Invalid;
    };
    let (Some(&b3), Some(&b4), Some(&b5), Some(&b6)) =
        (buf.get(3), buf.get(4), buf.get(5), buf.get(6))
    else {
        // frame_length spans bytes 3–5: reject a too-short one as early as possible.
        if let (Some(&b3), Some(&b4), Some(&b5)) = (buf.get(3), buf.get(4), buf.get(5)) {
            if adts_frame_len(b3, b4, b5) < header_len(crc) {
                return Probe::Invalid;
            }
        }
        return Probe::NeedMore;
    };
    let channel_config = ((b2 & 1) << 2) | (b3 >> 6);
    let frame_len = adts_frame_len(b3, b4, b5);
    if frame_len < header_len(crc) {
        return Probe::Invalid;
    }
    let buffer_fullness = (u16::from(b5 & 0x1F) << 6) | u16::from(b6 >> 2);
    let raw_blocks = b6 & 3;
    let adts = AdtsHeader {
        mpeg2,
        profile,
        sampling_index,
        channel_config,
        crc,
        raw_blocks,
        buffer_fullness,
    };
    Probe::Valid(FrameHeader {
        codec: Codec::Aac,
        sample_rate,
        channels: if channel_config == 7 {
            8
        } else {
            channel_config
        },
        samples: 1024 * (u32::from(raw_blocks) + 1),
        frame_len,
        bitrate_kbps: None,
        detail: HeaderDetail::Adts(adts),
    })
}

fn header_len(crc: bool) -> usize {
    if crc {
        MIN_HEADER_LEN + 2
    } else {
        MIN_HEADER_LEN
    }
}

/// The 13-bit `frame_length` (header included) from header bytes 3–5.
fn adts_frame_len(b3: u8, b4: u8, b5: u8) -> usize {
    (usize::from(b3 & 3) << 11) | (usize::from(b4) << 3) | usize::from(b5 >> 5)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn adts(h: &FrameHeader) -> AdtsHeader {
        match h.detail {
            HeaderDetail::Adts(a) => a,
            HeaderDetail::Mpeg(_) => panic!("not ADTS"),
        }
    }

    /// Builds a 7-byte ADTS header.
    fn header(profile: u8, sf: u8, ch: u8, len: usize, blocks: u8, crc: bool) -> [u8; 7] {
        [
            0xFF,
            if crc { 0xF0 } else { 0xF1 },
            (profile << 6) | (sf << 2) | (ch >> 2),
            ((ch & 3) << 6) | ((len >> 11) & 3) as u8,
            ((len >> 3) & 0xFF) as u8,
            (((len & 7) as u8) << 5) | 0x1F,
            0xFC | blocks,
        ]
    }

    #[test]
    fn fixture_header() {
        // First header of aac-256.aac: MPEG-4, LC, 44.1 kHz, stereo, no CRC, 743 bytes.
        let Probe::Valid(h) = parse_header(&[0xFF, 0xF1, 0x50, 0x80, 0x5C, 0xE1, 0x8C]) else {
            panic!("fixture header did not parse");
        };
        let a = adts(&h);
        assert_eq!(
            (h.sample_rate, h.channels, h.frame_len, h.samples),
            (44100, 2, 743, 1024)
        );
        assert_eq!((a.profile, a.object_type(), a.sampling_index), (1, 2, 4));
        assert!(!a.crc && !a.mpeg2);
        assert_eq!(a.header_len(), 7);
        assert_eq!(h.bitrate_kbps, None);
    }

    #[test]
    fn fields() {
        let Probe::Valid(h) = parse_header(&header(0, 11, 7, MAX_FRAME_LEN, 3, true)) else {
            panic!("did not parse");
        };
        let a = adts(&h);
        assert_eq!((h.sample_rate, h.channels, h.samples), (8000, 8, 4096));
        assert_eq!(
            (h.frame_len, a.raw_blocks, a.crc, a.header_len()),
            (8191, 3, true, 9)
        );
        assert_eq!(a.buffer_fullness, 0x7FF);
        let Probe::Valid(h) = parse_header(&header(3, 12, 1, 9, 0, true)) else {
            panic!("did not parse");
        };
        assert_eq!((h.sample_rate, h.channels, h.frame_len), (7350, 1, 9));
        assert_eq!(adts(&h).object_type(), 4);
    }

    #[test]
    fn invalid_headers() {
        let good = header(1, 4, 2, 743, 0, false);
        assert!(matches!(parse_header(&good), Probe::Valid(_)));
        for n in 0..7 {
            assert_eq!(parse_header(&good[..n]), Probe::NeedMore, "prefix {n}");
        }
        let mut bad = good;
        bad[1] = 0xF3; // layer 01
        assert_eq!(parse_header(&bad), Probe::Invalid);
        assert_eq!(parse_header(&[0xFF, 0xFB, 0x90, 0x64]), Probe::Invalid); // MP3
        assert_eq!(
            parse_header(&header(1, 13, 2, 743, 0, false)),
            Probe::Invalid
        );
        assert_eq!(
            parse_header(&header(1, 15, 2, 743, 0, false)),
            Probe::Invalid
        );
        assert_eq!(parse_header(&header(1, 4, 2, 6, 0, false)), Probe::Invalid);
        assert_eq!(parse_header(&header(1, 4, 2, 8, 0, true)), Probe::Invalid);
        assert_eq!(
            parse_header(&header(1, 4, 2, 0, 0, false)[..6]),
            Probe::Invalid
        );
        assert!(matches!(
            parse_header(&header(1, 4, 2, 7, 0, false)),
            Probe::Valid(_)
        ));
    }
}
