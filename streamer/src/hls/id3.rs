//! The ID3 tag that opens every packed-audio segment (RFC 8216 §3.4).
//!
//! Layout (ID3v2.4, no flags, no padding; all sizes sync-safe):
//!
//! ```text
//! "ID3" 04 00 00 <size>                               tag header, 10 bytes
//! "PRIV" <size> 00 00 "com.apple.streaming.transportStreamTimestamp" 00
//!        <8 bytes: 33-bit 90 kHz timestamp, big-endian>
//! "TIT2" <size> 00 00 03 <title, UTF-8>               only with a title
//! ```

use std::borrow::Cow;

use bytes::Bytes;

use crate::format::id3::sync_safe;

/// Owner of the PRIV frame that carries a packed-audio segment's timestamp.
pub const PTS_OWNER: &str = "com.apple.streaming.transportStreamTimestamp";

/// Tag and frame header length.
const HEADER_LEN: usize = 10;

/// PRIV frame body: owner, its NUL terminator, the 8-byte timestamp.
const PRIV_BODY_LEN: usize = PTS_OWNER.len() + 1 + 8;

/// Longest title written to TIT2, in bytes (the longest an ICY title can be);
/// longer ones are cut at a character boundary.
const MAX_TITLE_BYTES: usize = 4080;

/// ID3 text encoding byte for UTF-8.
const UTF8: u8 = 3;

/// The MPEG-2 presentation timestamp of stream audio time `audio_micros`:
/// 90 kHz ticks, wrapped to 33 bits as the transport stream clock wraps.
pub fn pts_90khz(audio_micros: u64) -> u64 {
    let ticks = u128::from(audio_micros) * 90 / 1000;
    // The modulo keeps 33 bits, so the value fits a u64.
    u64::try_from(ticks % (1u128 << 33)).unwrap_or(0)
}

/// The ID3 tag to send before a segment's chunks: the timestamp of the
/// segment's first sample (from its stream audio time, so successive segments
/// line up sample-exactly) and, when non-empty, its title.
///
/// Every segment carries one, the first included, and a timestamp of 0
/// still gets its tag (RFC 8216 says clients should not play a segment
/// without it).
pub fn segment_head(audio_start_micros: u64, title: &str) -> Bytes {
    let title = tit2_text(title);
    let mut out = Vec::with_capacity(tag_len(&title));
    let body = tag_len(&title) - HEADER_LEN;
    out.extend_from_slice(b"ID3\x04\x00\x00");
    out.extend_from_slice(&sync_safe(body));
    out.extend_from_slice(b"PRIV");
    out.extend_from_slice(&sync_safe(PRIV_BODY_LEN));
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(PTS_OWNER.as_bytes());
    out.push(0);
    out.extend_from_slice(&pts_90khz(audio_start_micros).to_be_bytes());
    if !title.is_empty() {
        out.extend_from_slice(b"TIT2");
        out.extend_from_slice(&sync_safe(1 + title.len()));
        out.extend_from_slice(&[0, 0, UTF8]);
        out.extend_from_slice(title.as_bytes());
    }
    Bytes::from(out)
}

/// An ID3 tag with the title alone (TIT2): the timed metadata of an MPEG-TS
/// segment, whose timestamp is the PES packet's.
pub fn title_tag(title: &str) -> Bytes {
    let title = tit2_text(title);
    let frame = HEADER_LEN + 1 + title.len();
    let mut out = Vec::with_capacity(HEADER_LEN + frame);
    out.extend_from_slice(b"ID3\x04\x00\x00");
    out.extend_from_slice(&sync_safe(frame));
    out.extend_from_slice(b"TIT2");
    out.extend_from_slice(&sync_safe(1 + title.len()));
    out.extend_from_slice(&[0, 0, UTF8]);
    out.extend_from_slice(title.as_bytes());
    Bytes::from(out)
}

/// Length of [`segment_head`]'s tag for `title`, without building it (for
/// `Content-Length` and bandwidth figures).
pub fn head_len(title: &str) -> usize {
    tag_len(&tit2_text(title))
}

/// Tag length for an already cleaned title.
fn tag_len(title: &str) -> usize {
    let tit2 = if title.is_empty() {
        0
    } else {
        HEADER_LEN + 1 + title.len()
    };
    HEADER_LEN + HEADER_LEN + PRIV_BODY_LEN + tit2
}

/// The title as written: NULs removed (they separate values in ID3v2.4 text
/// frames), cut to [`MAX_TITLE_BYTES`] at a character boundary.
fn tit2_text(title: &str) -> Cow<'_, str> {
    let mut t = if title.contains('\0') {
        Cow::Owned(title.replace('\0', ""))
    } else {
        Cow::Borrowed(title)
    };
    if t.len() > MAX_TITLE_BYTES {
        let mut end = MAX_TITLE_BYTES;
        while !t.is_char_boundary(end) {
            end -= 1;
        }
        match &mut t {
            Cow::Borrowed(s) => *s = &s[..end],
            Cow::Owned(s) => s.truncate(end),
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads a sync-safe size, checking that every byte is below 0x80.
    fn read_size(b: &[u8]) -> usize {
        assert_eq!(b.len(), 4);
        assert!(b.iter().all(|&x| x < 0x80), "not sync-safe: {b:02x?}");
        b.iter().fold(0, |acc, &x| (acc << 7) | usize::from(x))
    }

    /// Parses a tag as a player would: returns (PRIV owner, PRIV data, TIT2 body).
    fn parse(tag: &[u8]) -> (String, Vec<u8>, Option<Vec<u8>>) {
        assert_eq!(&tag[..5], b"ID3\x04\x00", "ID3v2.4.0");
        assert_eq!(tag[5], 0, "no flags");
        let size = read_size(&tag[6..10]);
        assert_eq!(tag.len(), 10 + size, "the header's size covers the rest");
        let mut rest = &tag[10..];
        let (mut priv_frame, mut tit2) = (None, None);
        while !rest.is_empty() {
            let id = &rest[..4];
            let len = read_size(&rest[4..8]);
            assert_eq!(&rest[8..10], &[0, 0], "frame flags");
            let body = &rest[10..10 + len];
            match id {
                b"PRIV" => {
                    let nul = body.iter().position(|&b| b == 0).unwrap();
                    let owner = String::from_utf8(body[..nul].to_vec()).unwrap();
                    priv_frame = Some((owner, body[nul + 1..].to_vec()));
                }
                b"TIT2" => tit2 = Some(body.to_vec()),
                other => panic!("unexpected frame {other:?}"),
            }
            rest = &rest[10 + len..];
        }
        let (owner, data) = priv_frame.expect("a PRIV frame");
        (owner, data, tit2)
    }

    #[test]
    fn tag_parses_back() {
        // 1 h 2.5 s of audio: 3 602 500 000 µs = 324 225 000 ticks.
        let tag = segment_head(3_602_500_000, "Alt-J – Intro, live");
        assert_eq!(tag.len(), head_len("Alt-J – Intro, live"));
        let (owner, data, tit2) = parse(&tag);
        assert_eq!(owner, PTS_OWNER);
        assert_eq!(data, 324_225_000u64.to_be_bytes());
        let mut expected = vec![3];
        expected.extend_from_slice("Alt-J – Intro, live".as_bytes());
        assert_eq!(tit2, Some(expected));
        // The fixed part, byte by byte.
        assert_eq!(
            &tag[..20],
            b"ID3\x04\x00\x00\x00\x00\x00\x5f\x50\x52\x49\x56\x00\x00\x00\x35\x00\x00"
        );
        // PRIV 10 + 53, TIT2 10 + 1 + 21 (the dash is 3 bytes): 95 = 0x5f.
        assert_eq!(tag.len(), 10 + 0x5f);
    }

    #[test]
    fn large_tags_use_sync_safe_sizes() {
        // A title long enough that the sizes need more than 7 bits.
        let title = "é".repeat(3000); // 6000 bytes, cut to 4080
        let tag = segment_head(0, &title);
        let (_, _, tit2) = parse(&tag);
        let tit2 = tit2.unwrap();
        assert_eq!(tit2.len(), 1 + 4080);
        assert!(std::str::from_utf8(&tit2[1..]).is_ok());
        assert_eq!(&tag[6..10], &sync_safe(tag.len() - 10));
        assert_eq!(sync_safe(0x1234), [0, 0, 0x24, 0x34]);
        assert_eq!(sync_safe((1 << 28) - 1), [0x7F; 4]);
        assert_eq!(read_size(&tag[6..10]), 10 + 53 + 10 + 4081);
        assert_eq!(tag.len(), head_len(&title));
    }

    #[test]
    fn zero_pts_still_gets_a_tag() {
        let tag = segment_head(0, "");
        assert_eq!(tag.len(), 73);
        assert_eq!(head_len(""), 73);
        let (owner, data, tit2) = parse(&tag);
        assert_eq!(owner, PTS_OWNER);
        assert_eq!(data, [0u8; 8]);
        assert_eq!(tit2, None);
    }

    #[test]
    fn pts_wraps_at_33_bits() {
        assert_eq!(pts_90khz(0), 0);
        assert_eq!(pts_90khz(1_000_000), 90_000);
        assert_eq!(pts_90khz(11), 0); // 0.99 tick, rounded down
        assert_eq!(pts_90khz(12), 1);
        // 2^33 ticks = 95 443.717 688 88… s.
        let wrap_micros = (1u64 << 33) * 1000 / 90; // 95 443 717 688 µs (just below)
        assert_eq!(pts_90khz(wrap_micros), (1 << 33) - 1);
        assert_eq!(pts_90khz(wrap_micros + 1), 0);
        assert_eq!(pts_90khz(wrap_micros + 1_000_000), 89_999);
        let tag = segment_head(wrap_micros + 1_000_000, "");
        assert_eq!(parse(&tag).1, 89_999u64.to_be_bytes());
        // Upper 31 bits are always zero, even for absurd inputs.
        assert!(pts_90khz(u64::MAX) < 1 << 33);
        assert_eq!(parse(&segment_head(u64::MAX, "")).1[..3], [0, 0, 0]);
    }

    #[test]
    fn nul_in_title_is_dropped() {
        let (_, _, tit2) = parse(&segment_head(5, "a\0b"));
        assert_eq!(tit2, Some(b"\x03ab".to_vec()));
        assert_eq!(head_len("a\0b"), segment_head(5, "a\0b").len());
    }
}
