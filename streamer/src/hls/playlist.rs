//! Media and multivariant playlists (RFC 8216 §4), `CODECS` and bandwidth.

use std::fmt::Write as _;

use time::macros::format_description;
use time::OffsetDateTime;

use super::id3::head_len;
use super::segment::SegmentInfo;
use super::Codec;

/// `EXT-X-VERSION` of both playlists: 3 for decimal `EXTINF` durations; no other
/// tag used needs more.
const VERSION: u32 = 3;

/// Where a timeshifted listener starts (`EXT-X-START`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartAt {
    /// `?offset=`: this much audio (µs) behind the live edge.
    BehindLive {
        /// Audio time behind the newest sample, µs.
        micros: u64,
    },
    /// `?at=`: the segment playing at this wall-clock time.
    At {
        /// µs since the Unix epoch.
        ts_micros: i64,
    },
}

/// How to render a media playlist.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MediaOptions<'a> {
    /// The stream's name: segment URIs are `<stream>/seg/<number>.<ext>`,
    /// relative to the playlist at `/<stream>.m3u8`.
    pub stream: &'a str,
    /// The stream's codec (segment extension).
    pub codec: Codec,
    /// The configured segment length, s: `EXT-X-TARGETDURATION` never goes
    /// below it.
    pub segment_seconds: u32,
    /// List only the newest N complete segments (a short live window, at
    /// least 1); `None` lists the whole buffer (timeshift).
    pub window: Option<usize>,
    /// Emit `EXT-X-START` for a timeshifted start.
    pub start: Option<StartAt>,
    /// Query string appended to every segment URI (without `?`; e.g. a
    /// session id). Characters that cannot appear in a URI are %-encoded.
    pub query: Option<&'a str>,
    /// Emit `EXT-X-ENDLIST`: the stream has ended and will not grow (an
    /// archive, or a test). Live playlists leave it out.
    pub end_list: bool,
    /// Segments as MPEG-TS (`.ts`) instead of packed audio.
    pub ts: bool,
}

impl<'a> MediaOptions<'a> {
    /// Live options: whole buffer, no start point, no query, no end.
    pub fn new(stream: &'a str, codec: Codec, segment_seconds: u32) -> Self {
        MediaOptions {
            stream,
            codec,
            segment_seconds,
            window: None,
            start: None,
            query: None,
            end_list: false,
            ts: false,
        }
    }
}

/// Renders the media playlist of the complete segments in `segments` (a list
/// from [`segments`](super::segments); the incomplete newest one is not listed
/// but marks the live edge for [`StartAt::BehindLive`]).
///
/// Every segment gets its `EXT-X-PROGRAM-DATE-TIME` (players map the audio to
/// wall-clock time, and `?at=` works in them too), an `EXT-X-DISCONTINUITY`
/// when its discontinuity sequence is above the previous one's, and its title
/// in `EXTINF`. `EXT-X-TARGETDURATION` is the segment length + 1
/// ([`super::segmenter::target_seconds`]), raised only by a longer segment
/// held (cut by another rule).
pub fn render_media(segments: &[SegmentInfo], opts: &MediaOptions<'_>) -> String {
    let mut complete = segments
        .iter()
        .position(|s| !s.complete)
        .map_or(segments, |i| &segments[..i]);
    // `?offset=`: a delayed live playlist. Its live edge is two segments
    // after the one holding the requested point, so a player that starts
    // three segments from the end (ffmpeg, VLC, hls.js, native players, as
    // RFC 8216 §6.3.3 advises) starts there, with or without EXT-X-START;
    // the edge moves on in real time as new audio comes.
    if let Some(StartAt::BehindLive { micros }) = opts.start {
        let live = segments.last().map_or(0, SegmentInfo::audio_end_micros);
        let point = live.saturating_sub(micros);
        if let Some(k) = complete.iter().rposition(|s| s.audio_start_micros <= point) {
            complete = &complete[..(k + 3).min(complete.len())];
        }
    }
    let listed = match opts.window {
        Some(n) => &complete[complete.len().saturating_sub(n.max(1))..],
        None => complete,
    };
    // Fixed by the segment length, not by what is held: it must not change
    // over a playlist's life (RFC 8216 §4.3.3.1), and the segmenter never
    // cuts a longer segment. Only segments cut otherwise (an older server's
    // dump, a changed segment length) can raise it, rounded as the RFC
    // compares (EXTINF rounded to the nearest integer).
    let target = complete
        .iter()
        .map(|s| (extinf_millis(s) + 500) / 1000)
        .max()
        .unwrap_or(0)
        .max(super::segmenter::target_seconds(opts.segment_seconds));
    // An empty list still says where numbering stands.
    let (media_seq, disc_seq) = listed
        .first()
        .or(segments.first())
        .map_or((0, 0), |s| (s.number, s.disc_seq));

    let mut out = String::with_capacity(256 + listed.len() * (120 + opts.stream.len()));
    out.push_str("#EXTM3U\n");
    let _ = writeln!(out, "#EXT-X-VERSION:{VERSION}");
    let _ = writeln!(out, "#EXT-X-TARGETDURATION:{target}");
    let _ = writeln!(out, "#EXT-X-MEDIA-SEQUENCE:{media_seq}");
    let _ = writeln!(out, "#EXT-X-DISCONTINUITY-SEQUENCE:{disc_seq}");
    if let Some(start) = opts.start {
        if !listed.is_empty() {
            let offset = start_offset_millis(listed, segments, start);
            let _ = writeln!(
                out,
                "#EXT-X-START:TIME-OFFSET={},PRECISE=YES",
                Millis(offset)
            );
        }
    }
    let stream = encode(opts.stream, is_segment_char);
    let query = opts
        .query
        .filter(|q| !q.is_empty())
        .map(|q| format!("?{}", encode(q, is_query_char)))
        .unwrap_or_default();
    let mut prev_disc = disc_seq;
    for s in listed {
        if s.disc_seq > prev_disc {
            out.push_str("#EXT-X-DISCONTINUITY\n");
        }
        prev_disc = s.disc_seq;
        if let Some(pdt) = program_date_time(s.ts_micros) {
            let _ = writeln!(out, "#EXT-X-PROGRAM-DATE-TIME:{pdt}");
        }
        let _ = writeln!(
            out,
            "#EXTINF:{},{}",
            Millis(extinf_millis(s)),
            clean_title(&s.title)
        );
        let ext = if opts.ts { "ts" } else { opts.codec.ext() };
        let _ = writeln!(out, "{stream}/seg/{}.{ext}{query}", s.number);
    }
    if opts.end_list {
        out.push_str("#EXT-X-ENDLIST\n");
    }
    out
}

/// One variant stream of a multivariant playlist.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Variant<'a> {
    /// The stream's name: its media playlist is `/<stream>.m3u8`.
    pub stream: &'a str,
    /// Peak bit rate, bit/s (see [`bandwidth`]).
    pub bandwidth: u64,
    /// Average bit rate, bit/s.
    pub average_bandwidth: u64,
    /// The `CODECS` value (see [`codecs`]); left out when empty.
    pub codecs: &'a str,
    /// Query string appended to the URI (without `?`), e.g. a session id.
    pub query: Option<&'a str>,
}

/// Renders a multivariant playlist, variants in the order given (players
/// usually start with the first).
///
/// Variant URIs are `<base><stream>.m3u8`, relative so that they work behind
/// a path-prefixing proxy too: `base` is `../` for a stream group's
/// `/sg/<group>.m3u8`, empty for a playlist at `/<stream>.m3u8` itself.
pub fn render_multivariant(variants: &[Variant<'_>], base: &str) -> String {
    let mut out = String::with_capacity(64 + variants.len() * 128);
    out.push_str("#EXTM3U\n");
    let _ = writeln!(out, "#EXT-X-VERSION:{VERSION}");
    for v in variants {
        let _ = write!(
            out,
            "#EXT-X-STREAM-INF:BANDWIDTH={},AVERAGE-BANDWIDTH={}",
            v.bandwidth.max(1),
            v.average_bandwidth.max(1)
        );
        // A quoted-string may hold neither `"` nor a line break.
        let codecs: String = v
            .codecs
            .chars()
            .filter(|&c| c != '"' && !c.is_control())
            .collect();
        if !codecs.is_empty() {
            let _ = write!(out, ",CODECS=\"{codecs}\"");
        }
        out.push('\n');
        let _ = write!(out, "{base}{}.m3u8", encode(v.stream, is_segment_char));
        if let Some(q) = v.query.filter(|q| !q.is_empty()) {
            let _ = write!(out, "?{}", encode(q, is_query_char));
        }
        out.push('\n');
    }
    out
}

/// What an ADTS header cannot tell: whether the AAC stream carries SBR
/// (HE-AAC) or SBR and parametric stereo (HE-AACv2). The caller knows it from
/// the stream's configuration.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum AacExtension {
    /// Plain AAC of the ADTS profile.
    #[default]
    Plain,
    /// HE-AAC (AAC-LC + SBR).
    He,
    /// HE-AACv2 (AAC-LC + SBR + PS).
    HeV2,
}

/// The `CODECS` attribute (RFC 6381) of a stream: MP3 is `mp4a.40.34`; AAC
/// is `mp4a.40.<object type>` from the ADTS `profile` field (object type =
/// profile + 1: Main `mp4a.40.1`, LC `mp4a.40.2`), or HE-AAC `mp4a.40.5` /
/// HE-AACv2 `mp4a.40.29` when `extension` says so. `adts_profile` and
/// `extension` are ignored for MP3.
pub fn codecs(codec: Codec, adts_profile: u8, extension: AacExtension) -> &'static str {
    match (codec, extension) {
        (Codec::Mp3, _) => "mp4a.40.34",
        (Codec::Aac, AacExtension::He) => "mp4a.40.5",
        (Codec::Aac, AacExtension::HeV2) => "mp4a.40.29",
        (Codec::Aac, AacExtension::Plain) => match adts_profile {
            0 => "mp4a.40.1",
            2 => "mp4a.40.3",
            3 => "mp4a.40.4",
            _ => "mp4a.40.2",
        },
    }
}

/// Peak and average bit rate (bit/s) of the complete segments, as served:
/// audio bytes plus each segment's ID3 head (packed audio), or the MPEG-TS
/// size bound ([`super::ts::max_len`]) when `ts`, over the segment's duration.
/// Peak is the highest segment's rate (`BANDWIDTH`), average the total over
/// the total duration (`AVERAGE-BANDWIDTH`); both rounded up. Without a
/// complete segment both are `nominal_bps` (the configured bit rate). Never 0.
pub fn bandwidth(segments: &[SegmentInfo], nominal_bps: u64, ts: bool) -> (u64, u64) {
    let mut peak = 0u64;
    let (mut bits, mut micros) = (0u128, 0u128);
    for s in segments
        .iter()
        .filter(|s| s.complete && s.duration_micros > 0)
    {
        let served = if ts {
            super::ts::max_len(s.bytes, s.chunks, &s.title)
        } else {
            s.bytes + head_len(&s.title) as u64
        };
        let b = u128::from(served) * 8;
        let d = u128::from(s.duration_micros);
        peak = peak.max(rate(b, d));
        bits += b;
        micros += d;
    }
    if micros == 0 {
        let n = nominal_bps.max(1);
        return (n, n);
    }
    (peak.max(1), rate(bits, micros).max(1))
}

/// `bits / micros` in bit/s, rounded up.
fn rate(bits: u128, micros: u128) -> u64 {
    u64::try_from((bits * 1_000_000).div_ceil(micros.max(1))).unwrap_or(u64::MAX)
}

/// The `EXTINF` duration in whole milliseconds (rounded to nearest).
fn extinf_millis(s: &SegmentInfo) -> u64 {
    s.duration_micros.saturating_add(500) / 1000
}

/// The `EXT-X-START` offset: the listed segment to start with, as the sum of
/// the listed durations before it, exactly as the player adds up `EXTINF`s
/// (so the player lands on that segment's first sample).
fn start_offset_millis(listed: &[SegmentInfo], all: &[SegmentInfo], start: StartAt) -> u64 {
    let index = match start {
        StartAt::BehindLive { micros } => {
            let live = all.last().map_or(0, SegmentInfo::audio_end_micros);
            let target = live.saturating_sub(micros);
            listed
                .iter()
                .rposition(|s| s.audio_start_micros <= target)
                .unwrap_or(0)
        }
        StartAt::At { ts_micros } => listed
            .iter()
            .rposition(|s| s.ts_micros <= ts_micros)
            .unwrap_or(0),
    };
    listed[..index]
        .iter()
        .map(extinf_millis)
        .fold(0, u64::saturating_add)
}

/// `2025-11-21T07:00:00.123Z` (RFC 3339, UTC, milliseconds); `None` outside
/// the years 0–9999.
fn program_date_time(ts_micros: i64) -> Option<String> {
    let t = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ts_micros) * 1000).ok()?;
    if !(0..=9999).contains(&t.year()) {
        return None;
    }
    t.format(format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    ))
    .ok()
}

/// A title fit for the rest of an `EXTINF` line: control characters (line
/// breaks above all) become spaces, outer spaces go. Commas need no escape:
/// the title is everything after the first comma.
fn clean_title(title: &str) -> String {
    let t: String = title
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    t.trim().to_owned()
}

/// Milliseconds as seconds with 3 decimals.
struct Millis(u64);

impl std::fmt::Display for Millis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{:03}", self.0 / 1000, self.0 % 1000)
    }
}

/// Characters kept as they are in a path segment (RFC 3986 `pchar` without
/// `%` and `:`: a stream name is taken literally, and a colon could read as
/// a URI scheme).
fn is_segment_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=@".contains(&b)
}

/// Characters kept as they are in a query string (`%` too: the caller's
/// query may already be encoded).
fn is_query_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/?%".contains(&b)
}

/// %-encodes every byte of `s` that `keep` rejects.
fn encode(s: &str, keep: fn(u8) -> bool) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if keep(b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2025-11-21T07:00:00Z.
    const T0: i64 = 1_763_708_400_000_000;

    /// A segment of `micros`, starting `ts_off` µs after T0 and at `audio` µs.
    fn seg(number: u64, disc_seq: u64, ts_off: i64, audio: u64, micros: u64) -> SegmentInfo {
        SegmentInfo {
            number,
            disc_seq,
            discontinuity: false,
            first_seq: number * 10,
            chunks: 10,
            ts_micros: T0 + ts_off,
            audio_start_micros: audio,
            duration_micros: micros,
            bytes: micros / 1000 * 16, // 128 kbit/s
            title: format!("Song {number}"),
            complete: true,
        }
    }

    /// Four complete segments (the third after a discontinuity and a 5 s
    /// wall-clock gap) and a growing fifth.
    fn list() -> Vec<SegmentInfo> {
        let mut v = vec![
            seg(100, 7, 0, 50_000_000, 10_030_000),
            seg(101, 7, 10_030_123, 60_030_000, 9_999_500),
            seg(102, 8, 25_000_000, 70_029_500, 10_400_400),
            seg(103, 8, 35_400_400, 80_429_900, 9_000_000),
            seg(104, 8, 44_400_400, 89_429_900, 3_000_000),
        ];
        v[2].discontinuity = true;
        v[1].title = "Artist, with comma\r\nand a line break ".into();
        v[4].complete = false;
        v
    }

    #[test]
    fn whole_buffer_playlist() {
        let opts = MediaOptions::new("my radio", Codec::Mp3, 10);
        let expected = "\
#EXTM3U
#EXT-X-VERSION:3
#EXT-X-TARGETDURATION:11
#EXT-X-MEDIA-SEQUENCE:100
#EXT-X-DISCONTINUITY-SEQUENCE:7
#EXT-X-PROGRAM-DATE-TIME:2025-11-21T07:00:00.000Z
#EXTINF:10.030,Song 100
my%20radio/seg/100.mp3
#EXT-X-PROGRAM-DATE-TIME:2025-11-21T07:00:10.030Z
#EXTINF:10.000,Artist, with comma  and a line break
my%20radio/seg/101.mp3
#EXT-X-DISCONTINUITY
#EXT-X-PROGRAM-DATE-TIME:2025-11-21T07:00:25.000Z
#EXTINF:10.400,Song 102
my%20radio/seg/102.mp3
#EXT-X-PROGRAM-DATE-TIME:2025-11-21T07:00:35.400Z
#EXTINF:9.000,Song 103
my%20radio/seg/103.mp3
";
        assert_eq!(render_media(&list(), &opts), expected);
    }

    #[test]
    fn window_start_and_query() {
        let opts = MediaOptions {
            window: Some(2),
            start: Some(StartAt::BehindLive { micros: 12_500_000 }),
            query: Some("sid=ab c"),
            codec: Codec::Aac,
            ..MediaOptions::new("live", Codec::Mp3, 10)
        };
        // Live edge: 92.4299 s of audio; 12.5 s back is 79.9299 s, inside 102
        // (70.0295–80.4299), the first listed: offset 0.
        let expected = "\
#EXTM3U
#EXT-X-VERSION:3
#EXT-X-TARGETDURATION:11
#EXT-X-MEDIA-SEQUENCE:102
#EXT-X-DISCONTINUITY-SEQUENCE:8
#EXT-X-START:TIME-OFFSET=0.000,PRECISE=YES
#EXT-X-PROGRAM-DATE-TIME:2025-11-21T07:00:25.000Z
#EXTINF:10.400,Song 102
live/seg/102.aac?sid=ab%20c
#EXT-X-PROGRAM-DATE-TIME:2025-11-21T07:00:35.400Z
#EXTINF:9.000,Song 103
live/seg/103.aac?sid=ab%20c
";
        assert_eq!(render_media(&list(), &opts), expected);

        // The window shrinks to what exists; TARGETDURATION is the length + 1.
        let opts = MediaOptions {
            window: Some(1),
            segment_seconds: 12,
            end_list: true,
            ..MediaOptions::new("live", Codec::Mp3, 10)
        };
        let text = render_media(&list(), &opts);
        assert!(text.contains("#EXT-X-TARGETDURATION:13\n#EXT-X-MEDIA-SEQUENCE:103\n"));
        assert!(text.ends_with("live/seg/103.mp3\n#EXT-X-ENDLIST\n"));
        assert!(!text.contains("#EXT-X-DISCONTINUITY\n"));
    }

    /// The `EXT-X-START` line for `start` over the whole buffer.
    fn start_line(start: StartAt) -> String {
        let opts = MediaOptions {
            start: Some(start),
            ..MediaOptions::new("s", Codec::Mp3, 10)
        };
        render_media(&list(), &opts)
            .lines()
            .find(|l| l.starts_with("#EXT-X-START:"))
            .unwrap_or_default()
            .to_owned()
    }

    #[test]
    fn start_offsets_land_on_segment_starts() {
        let line = |s| start_line(s);
        // 12.5 s behind live (92.4299 s) is 79.9299 s: segment 102, after
        // 10.030 + 10.000 listed seconds.
        assert_eq!(
            line(StartAt::BehindLive { micros: 12_500_000 }),
            "#EXT-X-START:TIME-OFFSET=20.030,PRECISE=YES"
        );
        // 0 behind live: the newest listed segment.
        assert_eq!(
            line(StartAt::BehindLive { micros: 0 }),
            "#EXT-X-START:TIME-OFFSET=30.430,PRECISE=YES"
        );
        // Further back than the buffer: the oldest.
        assert_eq!(
            line(StartAt::BehindLive { micros: u64::MAX }),
            "#EXT-X-START:TIME-OFFSET=0.000,PRECISE=YES"
        );
        // Wall-clock: 07:00:24 is in the gap before 102 → still 101.
        assert_eq!(
            line(StartAt::At {
                ts_micros: T0 + 24_000_000
            }),
            "#EXT-X-START:TIME-OFFSET=10.030,PRECISE=YES"
        );
        assert_eq!(
            line(StartAt::At {
                ts_micros: T0 + 25_000_000
            }),
            "#EXT-X-START:TIME-OFFSET=20.030,PRECISE=YES"
        );
        assert_eq!(
            line(StartAt::At { ts_micros: 0 }),
            "#EXT-X-START:TIME-OFFSET=0.000,PRECISE=YES"
        );
        assert_eq!(
            line(StartAt::At {
                ts_micros: i64::MAX
            }),
            "#EXT-X-START:TIME-OFFSET=30.430,PRECISE=YES"
        );
    }

    #[test]
    fn empty_and_single_incomplete() {
        let opts = MediaOptions {
            start: Some(StartAt::BehindLive { micros: 0 }),
            ..MediaOptions::new("s", Codec::Mp3, 10)
        };
        let head0 = "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:11\n\
                     #EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-DISCONTINUITY-SEQUENCE:0\n";
        assert_eq!(render_media(&[], &opts), head0);
        let growing = &list()[4..];
        assert_eq!(
            render_media(growing, &opts),
            "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:11\n\
             #EXT-X-MEDIA-SEQUENCE:104\n#EXT-X-DISCONTINUITY-SEQUENCE:8\n"
        );
    }

    #[test]
    fn an_offset_gives_a_delayed_live_playlist() {
        // Live edge 92.43 s; 40 s back is 52.43 s, in segment 100: the
        // playlist ends two segments later, so players that start three from
        // the end start at 100.
        let opts = MediaOptions {
            start: Some(StartAt::BehindLive { micros: 40_000_000 }),
            ..MediaOptions::new("s", Codec::Mp3, 10)
        };
        let text = render_media(&list(), &opts);
        assert!(
            text.contains("s/seg/102.mp3\n") && !text.contains("seg/103"),
            "{text}"
        );
        assert!(
            text.contains("#EXT-X-START:TIME-OFFSET=0.000,PRECISE=YES\n"),
            "{text}"
        );
        // A point in the last three segments: the whole live playlist.
        let opts = MediaOptions {
            start: Some(StartAt::BehindLive { micros: 5_000_000 }),
            ..MediaOptions::new("s", Codec::Mp3, 10)
        };
        assert!(render_media(&list(), &opts).contains("seg/103"));
    }

    #[test]
    fn target_duration_is_the_length_plus_one_and_rises_only_for_a_longer_segment() {
        // Empty, growing or full: the same target (RFC 8216: it must not change).
        let opts = MediaOptions::new("s", Codec::Mp3, 10);
        for n in 0..=5 {
            let text = render_media(&list()[..n], &opts);
            assert!(text.contains("#EXT-X-TARGETDURATION:11\n"), "{n}: {text}");
        }
        // Compared as the RFC does: EXTINF rounded to the nearest integer.
        let mut v = list();
        v[0].duration_micros = 11_499_000; // 11.499 → 11
        v.truncate(3);
        let text = render_media(&v, &opts);
        assert!(text.contains("#EXT-X-TARGETDURATION:11\n"), "{text}");
        v[0].duration_micros = 11_500_000; // 11.500 → 12 (cut by another rule)
        let text = render_media(&v, &opts);
        assert!(text.contains("#EXT-X-TARGETDURATION:12\n"), "{text}");
    }

    #[test]
    fn a_short_window_keeps_the_target_of_the_whole_buffer() {
        let mut v = list();
        v[0].duration_micros = 14_500_000; // a burst segment, outside the window
        let mut opts = MediaOptions::new("s", Codec::Mp3, 10);
        opts.window = Some(2);
        let text = render_media(&v, &opts);
        assert!(!text.contains("Song 100"), "{text}");
        assert!(text.contains("#EXT-X-TARGETDURATION:15\n"), "{text}");
    }

    #[test]
    fn program_date_time_format() {
        assert_eq!(
            program_date_time(0).as_deref(),
            Some("1970-01-01T00:00:00.000Z")
        );
        assert_eq!(
            program_date_time(T0 + 1_999).as_deref(),
            Some("2025-11-21T07:00:00.001Z")
        );
        assert_eq!(
            program_date_time(-1_500_000).as_deref(),
            Some("1969-12-31T23:59:58.500Z")
        );
        assert_eq!(program_date_time(i64::MAX), None);
    }

    #[test]
    fn multivariant() {
        let v = [
            Variant {
                stream: "radio-128",
                bandwidth: 133_000,
                average_bandwidth: 130_500,
                codecs: codecs(Codec::Mp3, 0, AacExtension::Plain),
                query: None,
            },
            Variant {
                stream: "radio aac",
                bandwidth: 0,
                average_bandwidth: 0,
                codecs: codecs(Codec::Aac, 1, AacExtension::He),
                query: Some("sid=42"),
            },
            Variant {
                stream: "x",
                bandwidth: 1,
                average_bandwidth: 1,
                codecs: "",
                query: Some(""),
            },
        ];
        assert_eq!(
            render_multivariant(&v, "../"),
            "#EXTM3U\n#EXT-X-VERSION:3\n\
             #EXT-X-STREAM-INF:BANDWIDTH=133000,AVERAGE-BANDWIDTH=130500,CODECS=\"mp4a.40.34\"\n\
             ../radio-128.m3u8\n\
             #EXT-X-STREAM-INF:BANDWIDTH=1,AVERAGE-BANDWIDTH=1,CODECS=\"mp4a.40.5\"\n\
             ../radio%20aac.m3u8?sid=42\n\
             #EXT-X-STREAM-INF:BANDWIDTH=1,AVERAGE-BANDWIDTH=1\n\
             ../x.m3u8\n"
        );
    }

    #[test]
    fn codec_strings() {
        assert_eq!(codecs(Codec::Mp3, 1, AacExtension::He), "mp4a.40.34");
        assert_eq!(codecs(Codec::Aac, 0, AacExtension::Plain), "mp4a.40.1");
        assert_eq!(codecs(Codec::Aac, 1, AacExtension::Plain), "mp4a.40.2");
        assert_eq!(codecs(Codec::Aac, 3, AacExtension::Plain), "mp4a.40.4");
        assert_eq!(codecs(Codec::Aac, 1, AacExtension::He), "mp4a.40.5");
        assert_eq!(codecs(Codec::Aac, 1, AacExtension::HeV2), "mp4a.40.29");
    }

    #[test]
    fn bandwidth_counts_heads_and_never_is_zero() {
        let mut v = vec![
            seg(1, 0, 0, 0, 10_000_000),
            seg(2, 0, 10_000_000, 10_000_000, 5_000_000),
            seg(3, 0, 15_000_000, 15_000_000, 1_000_000),
        ];
        v[0].bytes = 160_000; // 128 000 bit/s
        v[1].bytes = 100_000; // 160 000 bit/s
        v[2].complete = false; // not counted
        v[2].bytes = 1_000_000;
        let head = head_len("Song 1") as u64; // "Song 2" is as long
        assert_eq!(head, 73 + 10 + 1 + 6);
        let peak = (100_000 + head) * 8 / 5;
        let avg = ((260_000 + 2 * head) * 8).div_ceil(15);
        assert_eq!(bandwidth(&v, 999, false), (peak, avg));
        let (ts_peak, ts_avg) = bandwidth(&v, 999, true);
        assert!(
            ts_peak > peak && ts_avg > avg && ts_avg < avg * 11 / 10,
            "{ts_peak} {ts_avg}"
        );
        assert_eq!(bandwidth(&v[2..], 128_000, true), (128_000, 128_000));
        assert_eq!(bandwidth(&[], 0, false), (1, 1));
        v[0].duration_micros = 0;
        v[1].duration_micros = 0;
        assert_eq!(bandwidth(&v, 64_000, false), (64_000, 64_000));
    }

    #[test]
    fn uri_encoding() {
        assert_eq!(encode("a/b:c%é", is_segment_char), "a%2Fb%3Ac%25%C3%A9");
        assert_eq!(
            encode("sid=1&x=a%20b#\"\n", is_query_char),
            "sid=1&x=a%20b%23%22%0A"
        );
    }
}
