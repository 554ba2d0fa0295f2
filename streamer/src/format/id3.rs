//! ID3 tag recognition, so the framer can step over tags without buffering them.
//!
//! Only the tag *headers* are parsed: the framer needs a tag's total length to skip
//! it by counting bytes, never its content (an ID3v2 tag can hold megabytes of
//! cover art).

use super::Probe;

/// Length of an ID3v2 header (and of its optional footer).
pub const V2_HEADER_LEN: usize = 10;

/// Length of an ID3v1 tag (`TAG` followed by 125 bytes of fixed fields).
pub const V1_TAG_LEN: usize = 128;

/// ID3v2 header flag: a 10-byte footer follows the tag body (ID3v2.4).
const FLAG_FOOTER: u8 = 0x10;

/// Checks whether `buf` starts with an ID3v2 header and returns the tag's total
/// length in bytes: header + sync-safe body size, + 10 if the footer flag is set.
///
/// The header is validated strictly (`ID3`, major version 2–4, revision not 0xFF,
/// undefined flag bits clear, every size byte below 0x80) so that random audio
/// or garbage is very unlikely to be mistaken for a tag: a false tag would make
/// the framer throw away up to 256 MiB of stream.
pub fn probe_v2(buf: &[u8]) -> Probe<u64> {
    let magic = b"ID3";
    let n = buf.len().min(magic.len());
    if buf[..n] != magic[..n] {
        return Probe::Invalid;
    }
    if let Some(&major) = buf.get(3) {
        if !(2..=4).contains(&major) {
            return Probe::Invalid;
        }
    }
    if buf.get(4) == Some(&0xFF) {
        return Probe::Invalid;
    }
    if let Some(&flags) = buf.get(5) {
        if flags & 0x0F != 0 {
            return Probe::Invalid;
        }
    }
    let size_bytes = buf.get(6..V2_HEADER_LEN.min(buf.len())).unwrap_or(&[]);
    if size_bytes.iter().any(|&b| b & 0x80 != 0) {
        return Probe::Invalid;
    }
    if buf.len() < V2_HEADER_LEN {
        return Probe::NeedMore;
    }
    let size = size_bytes
        .iter()
        .fold(0u64, |acc, &b| (acc << 7) | u64::from(b));
    let footer = if buf[5] & FLAG_FOOTER != 0 {
        V2_HEADER_LEN as u64
    } else {
        0
    };
    Probe::Valid(V2_HEADER_LEN as u64 + size + footer)
}

/// Checks whether `buf` starts with an ID3v1 tag (`TAG`); the tag is always
/// [`V1_TAG_LEN`] bytes long.
///
/// Three bytes are weak evidence, so the framer only asks this at a frame
/// boundary (right after a confirmed frame or another tag, or at stream start).
pub fn probe_v1(buf: &[u8]) -> Probe<()> {
    let magic = b"TAG";
    let n = buf.len().min(magic.len());
    if buf[..n] != magic[..n] {
        Probe::Invalid
    } else if n < magic.len() {
        Probe::NeedMore
    } else {
        Probe::Valid(())
    }
}

/// A 28-bit ID3v2 size as four 7-bit ("sync-safe") bytes; the parser reads
/// them back, the HLS segmenter writes them (its sizes are far below 2^28).
pub(crate) fn sync_safe(n: usize) -> [u8; 4] {
    let n = u32::try_from(n).unwrap_or(u32::MAX);
    [
        ((n >> 21) & 0x7F) as u8,
        ((n >> 14) & 0x7F) as u8,
        ((n >> 7) & 0x7F) as u8,
        (n & 0x7F) as u8,
    ]
}

/// Builds an ID3v2.`major` header announcing a body of `body_len` bytes
/// (test helper, also handy for generating test streams).
#[cfg(test)]
pub(crate) fn v2_header(major: u8, flags: u8, body_len: u32) -> [u8; V2_HEADER_LEN] {
    let s = sync_safe(body_len as usize);
    [b'I', b'D', b'3', major, 0, flags, s[0], s[1], s[2], s[3]]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v2_size_is_sync_safe_plus_header() {
        // Header of the StreamMachine fixtures: size bytes 00 00 01 26 = 1*128 + 0x26 = 166.
        let h = [b'I', b'D', b'3', 4, 0, 0, 0, 0, 0x01, 0x26];
        assert_eq!(probe_v2(&h), Probe::Valid(176));
        assert_eq!(
            probe_v2(&v2_header(3, 0, 5_000_000)),
            Probe::Valid(5_000_010)
        );
        // Largest representable body: 2^28 - 1.
        assert_eq!(
            probe_v2(&[b'I', b'D', b'3', 3, 0, 0, 0x7F, 0x7F, 0x7F, 0x7F]),
            Probe::Valid(10 + (1 << 28) - 1)
        );
    }

    #[test]
    fn v2_footer_flag_adds_ten() {
        assert_eq!(probe_v2(&v2_header(4, 0x10, 100)), Probe::Valid(120));
        assert_eq!(probe_v2(&v2_header(4, 0x80, 100)), Probe::Valid(110));
    }

    #[test]
    fn v2_prefixes_need_more_and_bad_headers_are_invalid() {
        let h = v2_header(4, 0, 300);
        for n in 0..V2_HEADER_LEN {
            assert_eq!(probe_v2(&h[..n]), Probe::NeedMore, "prefix of {n} bytes");
        }
        assert_eq!(probe_v2(b"IDX"), Probe::Invalid);
        assert_eq!(probe_v2(b"\xFF\xFB"), Probe::Invalid);
        let mut bad = h;
        bad[3] = 5; // unknown major version
        assert_eq!(probe_v2(&bad), Probe::Invalid);
        let mut bad = h;
        bad[4] = 0xFF; // revision 0xFF is forbidden
        assert_eq!(probe_v2(&bad), Probe::Invalid);
        let mut bad = h;
        bad[5] = 0x01; // undefined flag bit
        assert_eq!(probe_v2(&bad), Probe::Invalid);
        let mut bad = h;
        bad[8] = 0x80; // not sync-safe
        assert_eq!(probe_v2(&bad), Probe::Invalid);
        // The invalid size byte is seen before the header is complete.
        assert_eq!(probe_v2(&bad[..9]), Probe::Invalid);
    }

    #[test]
    fn v1_magic() {
        assert_eq!(probe_v1(b"TAGsong title"), Probe::Valid(()));
        assert_eq!(probe_v1(b"TA"), Probe::NeedMore);
        assert_eq!(probe_v1(b""), Probe::NeedMore);
        assert_eq!(probe_v1(b"TAX"), Probe::Invalid);
        assert_eq!(probe_v1(b"\xFF"), Probe::Invalid);
    }
}
