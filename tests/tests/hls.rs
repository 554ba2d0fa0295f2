//! HLS from the rewind buffer against the real server, read by ffmpeg.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::process::Command;
use std::time::Duration;

use streamer::format::Codec;
use streammachine_tests::*;

const EXE: &str = env!("CARGO_BIN_EXE_streammachine-under-test");

fn config() -> String {
    "streams:\n  - key: music\n    password: pw\n    title: Station\n    hls: { segmentSeconds: 2, group: main }\n  - key: music-aac\n    format: aac\n    password: pw2\n    hls: { segmentSeconds: 2, group: main }\n".to_string()
}

/// The segment URIs of a playlist, without their `?session=` query (every
/// URI of one playlist carries the same one).
fn segment_uris(playlist: &str) -> Vec<String> {
    playlist
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split('?').next().unwrap_or(l).to_string())
        .collect()
}

/// Feeds 9 s of MP3 to `music` and of AAC to `music-aac` in real time, and
/// changes `music`'s title to "Second Song" 3 s in (from "Station").
fn feed_both_with_a_title_change(
    server: &ServerProcess,
) -> (std::thread::JoinHandle<()>, std::thread::JoinHandle<()>) {
    let mp3 = feed(
        server,
        "music",
        "pw",
        fixture("mp3/mp3-44100-128-s.mp3"),
        Codec::Mp3,
        9.0,
    );
    let aac = feed(
        server,
        "music-aac",
        "pw2",
        fixture("aac-256.aac"),
        Codec::Aac,
        9.0,
    );
    std::thread::sleep(Duration::from_secs(3));
    use base64::Engine as _;
    let auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("source:pw")
    );
    let r = http_get(
        server.source,
        "/admin/metadata?mount=/music&mode=updinfo&song=Second+Song",
        &[("Authorization", &auth)],
    );
    assert_eq!(r.status, 200);
    (mp3, aac)
}

#[test]
fn playlists_and_segments_play_in_ffmpeg_across_boundaries() {
    require("ffmpeg");
    let server = ServerProcess::start(EXE, &config());
    let (mp3, aac) = feed_both_with_a_title_change(&server);
    // Issue 16: a live playlist's whole life passes the RFC 8216 check
    // (fetched every 300 ms while the sources play): target duration
    // constant, numbering monotonic, PDT continuous, segments within target.
    let mut lives: Vec<Vec<hls_check::MediaPlaylist>> = vec![Vec::new(); 3];
    // This test is an HLS listener meanwhile (it fetches the newest segment):
    // /status-json.xsl counts it with the others (issue 16).
    let mut counted = 0;
    while !mp3.is_finished() {
        for (i, q) in ["", "?window=2", "?offset=4"].iter().enumerate() {
            let text = http_get(server.listen, &format!("/music.m3u8{q}"), &[]).text();
            let p = hls_check::check_media(&text).unwrap_or_else(|e| panic!("{q}: {e}\n{text}"));
            if let Some(prev) = lives[i].last() {
                hls_check::check_successive(prev, &p).unwrap_or_else(|e| panic!("{q}: {e}"));
            }
            lives[i].push(p);
        }
        if let Some(newest) = lives[0].last().and_then(|p| p.segments.last()) {
            assert_eq!(
                http_get(server.listen, &format!("/{}", newest.uri), &[]).status,
                200
            );
            let stats: serde_json::Value =
                serde_json::from_slice(&http_get(server.listen, "/status-json.xsl", &[]).body)
                    .unwrap();
            let sources = &stats["icestats"]["source"];
            counted = sources
                .as_array()
                .into_iter()
                .flatten()
                .chain(std::iter::once(sources))
                .find(|s| {
                    s["listenurl"]
                        .as_str()
                        .is_some_and(|u| u.ends_with("/music"))
                })
                .and_then(|s| s["listeners"].as_u64())
                .unwrap_or(0)
                .max(counted);
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(lives[0].len() >= 5, "{} fetches", lives[0].len());
    assert_eq!(counted, 1, "the HLS listener in /status-json.xsl");
    assert_eq!(lives[0][0].target, 3, "segment length 2 s + 1");
    mp3.join().unwrap();
    aac.join().unwrap();
    std::thread::sleep(Duration::from_millis(300));

    // The default container is MPEG-TS (it plays in every player);
    // `?container=packed` gives packed audio, checked byte for byte here.
    let default = http_get(server.listen, "/music.m3u8", &[]).text();
    assert!(
        segment_uris(&default).iter().all(|u| u.ends_with(".ts")),
        "{default}"
    );
    let pl = http_get(server.listen, "/music.m3u8?container=packed", &[]);
    assert_eq!(pl.status, 200);
    assert_eq!(
        pl.header("content-type"),
        Some("application/vnd.apple.mpegurl")
    );
    let text = pl.text();
    assert!(text.starts_with("#EXTM3U\n"), "{text}");
    assert!(text.contains("#EXT-X-MEDIA-SEQUENCE:"));
    assert!(text.contains("#EXT-X-TARGETDURATION:3"), "{text}");
    assert!(text.contains("#EXT-X-PROGRAM-DATE-TIME:20"));
    assert!(!text.contains("#EXT-X-ENDLIST"), "a live playlist");
    let uris = segment_uris(&text);
    assert!(uris.len() >= 3, "{text}");
    assert!(uris
        .iter()
        .all(|u| u.starts_with("music/seg/") && u.ends_with(".mp3")));
    // Numbers are consecutive from MEDIA-SEQUENCE.
    let first: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-MEDIA-SEQUENCE:"))
        .unwrap()
        .parse()
        .unwrap();
    for (i, u) in uris.iter().enumerate() {
        let n: u64 = u
            .trim_start_matches("music/seg/")
            .trim_end_matches(".mp3")
            .parse()
            .unwrap();
        assert_eq!(n, first + i as u64);
    }
    // Titles travel into the playlist and the segments (one title per segment).
    assert!(
        text.contains(",Station\n") && text.contains(",Second Song\n"),
        "{text}"
    );

    // Every segment: ID3 PRIV timestamp first, then our frames; the bytes of
    // consecutive segments join into one contiguous run of the source's audio.
    let audio = audio_of(&fixture("mp3/mp3-44100-128-s.mp3"), Codec::Mp3);
    let mut joined = Vec::new();
    let mut last_pts = None;
    for u in &uris {
        let seg = http_get(server.listen, &format!("/{u}"), &[]);
        assert_eq!(seg.status, 200, "{u}");
        assert_eq!(seg.header("content-type"), Some("audio/mpeg"));
        assert_eq!(
            seg.header("content-length")
                .unwrap()
                .parse::<usize>()
                .unwrap(),
            seg.body.len()
        );
        let b = &seg.body;
        assert_eq!(&b[..3], b"ID3");
        let size = ((b[6] as usize) << 21)
            | ((b[7] as usize) << 14)
            | ((b[8] as usize) << 7)
            | b[9] as usize;
        let tag = &b[10..10 + size];
        let owner = b"com.apple.streaming.transportStreamTimestamp\0";
        let at = find(tag, owner).expect("PRIV timestamp");
        let pts = u64::from_be_bytes(
            tag[at + owner.len()..at + owner.len() + 8]
                .try_into()
                .unwrap(),
        );
        if let Some(prev) = last_pts {
            assert!(pts > prev, "PTS grows: {prev} then {pts}");
        }
        last_pts = Some(pts);
        joined.extend_from_slice(&b[10 + size..]);
    }
    // HLS bytes are counted like the others' (issue 16).
    let sent = server
        .metric("streammachine_listener_sent_bytes_total{output=\"hls\",stream=\"music\"}")
        .unwrap_or(0.0);
    assert!(
        sent >= joined.len() as f64,
        "hls bytes {sent} < {}",
        joined.len()
    );
    let at = find(&audio, &joined[..2048]).expect("segments carry the source audio");
    assert!(
        audio[at..].starts_with(&joined),
        "segments join without gap or overlap"
    );

    // ffmpeg reads the default (TS) live playlists and decodes across the
    // boundaries without a single warning (no "non monotonically increasing
    // dts": that was its packed-MP3 reader's artefact).
    for stream in ["music", "music-aac"] {
        let out = Command::new("ffmpeg")
            .args(["-hide_banner", "-nostdin", "-v", "warning"])
            .args(["-live_start_index", "0", "-i"])
            .arg(format!("http://{}/{stream}.m3u8", server.listen))
            .args(["-map", "0:a", "-t", "5", "-f", "null", "-"])
            .output()
            .unwrap();
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "ffmpeg {stream}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // Multivariant: both streams, real BANDWIDTH and CODECS.
    let mv = http_get(server.listen, "/sg/main.m3u8", &[]).text();
    assert!(mv.contains("CODECS=\"mp4a.40.34\""), "{mv}");
    assert!(mv.contains("CODECS=\"mp4a.40.2\""), "{mv}");
    for line in mv.lines().filter(|l| l.starts_with("#EXT-X-STREAM-INF:")) {
        let bw: u64 = line
            .split("BANDWIDTH=")
            .nth(1)
            .unwrap()
            .split(',')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(bw > 100_000, "{line}");
    }
    assert!(mv.contains("../music.m3u8") && mv.contains("../music-aac.m3u8"));
    assert_eq!(http_get(server.listen, "/sg/nope.m3u8", &[]).status, 404);

    // Timeshift: ?offset= has EXT-X-START; ?at= is a multivariant playlist
    // whose one variant is the delayed live playlist that starts there now.
    let ts = http_get(server.listen, "/music.m3u8?offset=4", &[]).text();
    assert!(ts.contains("#EXT-X-START:TIME-OFFSET="), "{ts}");
    // ?at=<the third segment's PROGRAM-DATE-TIME + 0.5 s>.
    // (Five segments once the ended source's last one is published, its
    // edge closed 5 s after it left.)
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let full = loop {
        let text = http_get(server.listen, "/music.m3u8", &[]).text();
        let p = hls_check::check_media(&text).unwrap();
        if p.segments.len() >= 5 || std::time::Instant::now() > deadline {
            break p;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(full.segments.len() >= 5, "{full:?}");
    let third = full.segments[2].pdt_micros.expect("PROGRAM-DATE-TIME");
    let at = streamer::stream::format_time(third + 500_000).replace('+', "%2B");
    let mv = http_get(server.listen, &format!("/music.m3u8?at={at}"), &[]).text();
    let variants: Vec<&str> = mv
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .collect();
    assert!(
        mv.contains("#EXT-X-STREAM-INF:BANDWIDTH=") && variants.len() == 1,
        "{mv}"
    );
    assert!(
        variants[0].starts_with("music.m3u8?container=ts&offset="),
        "{mv}"
    );
    let delayed =
        hls_check::check_media(&http_get(server.listen, &format!("/{}", variants[0]), &[]).text())
            .unwrap();
    // The delayed playlist is the live one up to two segments after the
    // third: a player starting three from the end starts in the third.
    assert_eq!(delayed.segments.len(), 5, "{delayed:?}");
    assert_eq!(delayed.segments[..], full.segments[..5]);
    let short = http_get(server.listen, "/music.m3u8?window=2", &[]).text();
    assert_eq!(segment_uris(&short).len(), 2);
    assert_eq!(
        http_get(server.listen, "/music.m3u8?window=0", &[]).status,
        400
    );
    assert_eq!(http_get(server.listen, "/music/seg/1.mp3", &[]).status, 404);
    assert_eq!(
        http_get(server.listen, &format!("/music/seg/{first}.aac"), &[]).status,
        404
    );
    assert_eq!(http_get(server.listen, "/music/seg/x.mp3", &[]).status, 404);
}

#[test]
fn a_source_gap_is_a_discontinuity() {
    let server = ServerProcess::start(EXE, &config());
    feed(
        &server,
        "music",
        "pw",
        fixture("mp3/tone440Hz-44100-128-m.mp3"),
        Codec::Mp3,
        4.5,
    )
    .join()
    .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    feed(
        &server,
        "music",
        "pw",
        fixture("mp3/tone1kHz-44100-128-m.mp3"),
        Codec::Mp3,
        4.5,
    )
    .join()
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let text = http_get(server.listen, "/music.m3u8", &[]).text();
    assert_eq!(text.matches("#EXT-X-DISCONTINUITY\n").count(), 1, "{text}");
    assert!(text.contains("#EXT-X-DISCONTINUITY-SEQUENCE:0"), "{text}");
}

/// The audio elementary stream of TS bytes (PID 0x100), PES headers removed,
/// and every PES's PTS.
fn ts_audio(ts: &[u8]) -> (Vec<u8>, Vec<u64>) {
    assert_eq!(ts.len() % 188, 0, "whole packets");
    let (mut pes, mut audio, mut pts) = (Vec::new(), Vec::new(), Vec::new());
    let mut flush = |pes: &mut Vec<u8>| {
        if pes.len() >= 14 {
            let hlen = pes[8] as usize;
            let p = &pes[9..14];
            pts.push(
                (u64::from(p[0] >> 1) & 7) << 30
                    | u64::from(p[1]) << 22
                    | u64::from(p[2] >> 1) << 15
                    | u64::from(p[3]) << 7
                    | u64::from(p[4] >> 1),
            );
            audio.extend_from_slice(&pes[9 + hlen..]);
        }
        pes.clear();
    };
    for p in ts.chunks(188) {
        assert_eq!(p[0], 0x47);
        let pid = (u16::from(p[1] & 0x1F) << 8) | u16::from(p[2]);
        if pid != 0x100 {
            continue;
        }
        let start = if p[3] & 0x20 != 0 {
            5 + p[4] as usize
        } else {
            4
        };
        if p[1] & 0x40 != 0 {
            flush(&mut pes);
        }
        pes.extend_from_slice(&p[start..]);
    }
    flush(&mut pes);
    (audio, pts)
}

/// The first second of audio ffmpeg takes from a playlist URL (copied, as MP3).
fn first_second(url: &str) -> Vec<u8> {
    let path = scratch_dir("hls-first-second").join("first.mp3");
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-v", "error", "-i", url])
        .args(["-map", "0:a", "-c", "copy", "-t", "1", "-f", "mp3"])
        .args(["-write_xing", "0", "-id3v2_version", "0", "-y"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read(&path).unwrap()
}

/// Issue 16: MPEG-TS segments (`?container=ts`) carry the same audio byte for
/// byte, with timestamps that run on across segments, and the titles as timed
/// ID3 metadata; ffmpeg decodes them with no warning at all and sees the titles.
#[test]
fn ts_segments_carry_the_audio_exactly_with_titles_as_timed_metadata() {
    require("ffmpeg");
    let server = ServerProcess::start(EXE, &config());
    let (mp3, aac) = feed_both_with_a_title_change(&server);
    mp3.join().unwrap();
    aac.join().unwrap();
    std::thread::sleep(Duration::from_millis(300));

    let text = http_get(server.listen, "/music.m3u8?container=ts", &[]).text();
    let playlist = hls_check::check_media(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert!(playlist.segments.len() >= 3, "{text}");
    let audio = audio_of(&fixture("mp3/mp3-44100-128-s.mp3"), Codec::Mp3);
    let (mut joined, mut last_pts) = (Vec::new(), None::<u64>);
    for s in &playlist.segments {
        assert!(s.uri.ends_with(".ts"), "{}", s.uri);
        let seg = http_get(server.listen, &format!("/{}", s.uri), &[]);
        assert_eq!(seg.status, 200);
        assert_eq!(seg.header("content-type"), Some("video/mp2t"));
        let (a, pts) = ts_audio(&seg.body);
        for p in pts {
            if let Some(prev) = last_pts {
                assert!(p > prev, "PTS grows across segments: {prev} then {p}");
            }
            last_pts = Some(p);
        }
        joined.extend_from_slice(&a);
    }
    let at = find(&audio, &joined[..2048]).expect("TS segments carry the source audio");
    assert!(
        audio[at..].starts_with(&joined),
        "TS segments join without gap or overlap"
    );

    for stream in ["music", "music-aac"] {
        let url = format!("http://{}/{stream}.m3u8?container=ts", server.listen);
        let out = Command::new("ffmpeg")
            .args([
                "-hide_banner",
                "-nostdin",
                "-v",
                "warning",
                "-live_start_index",
                "0",
                "-i",
                &url,
            ])
            .args(["-map", "0:a", "-t", "6", "-f", "null", "-"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && err.trim().is_empty(),
            "ffmpeg {stream}: {err}"
        );
    }
    // The titles, as ffmpeg reads them from the timed ID3 stream.
    let ids = scratch_dir("hls-ts").join("id3.bin");
    let out = Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-nostdin",
            "-v",
            "error",
            "-live_start_index",
            "0",
            "-i",
        ])
        .arg(format!("http://{}/music.m3u8?container=ts", server.listen))
        .args(["-map", "0:d", "-c", "copy", "-t", "6", "-f", "data", "-y"])
        .arg(&ids)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id3 = std::fs::read(&ids).unwrap();
    assert!(find(&id3, b"Station").is_some() && find(&id3, b"Second Song").is_some());
    // Timeshift in every player (issue 16): ?offset=6 is a delayed live
    // playlist whose third segment from the end holds the point 6 s back, so
    // ffmpeg, starting three from the end as players do, starts there.
    // (Compared with the live playlist of the same moment: one fetched just
    // before and just after, equal, once the ended source's edge is closed.)
    let fetch = |q: &str| {
        hls_check::check_media(&http_get(server.listen, &format!("/music.m3u8?{q}"), &[]).text())
            .unwrap()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let (live, delayed) = loop {
        let before = fetch("container=ts");
        let delayed = fetch("container=ts&offset=6");
        if fetch("container=ts") == before {
            break (before, delayed);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the live playlist never settled"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let live_end: f64 = live.segments.iter().map(|s| s.duration).sum();
    let point = live_end - 6.0;
    // The segment of the live playlist holding the point… (EXTINF is rounded
    // to the millisecond and the server counts microseconds: a point within
    // the summed rounding of a boundary may be in the segment on either side.)
    let slack = 0.0005 * live.segments.len() as f64;
    let mut start = 0.0;
    let holding: Vec<usize> = (live.segments.iter().enumerate())
        .filter_map(|(i, s)| {
            let holds = start - slack <= point && point < start + s.duration + slack;
            start += s.duration;
            holds.then_some(i)
        })
        .collect();
    // …is the third from the end of the delayed one, a prefix of the live one
    // (all of it when the point is within the live playlist's last three).
    assert!(
        holding
            .iter()
            .any(|k| delayed.segments.len() == (k + 3).min(live.segments.len())),
        "{point} s in segment(s) {holding:?} of {}, delayed lists {}",
        live.segments.len(),
        delayed.segments.len()
    );
    assert_eq!(
        delayed.segments[..],
        live.segments[..delayed.segments.len()]
    );
    let k = delayed.segments.len() - 3;
    let seg_k = http_get(server.listen, &format!("/{}", delayed.segments[k].uri), &[]);
    let (seg_k_audio, _) = ts_audio(&seg_k.body);
    let got = first_second(&format!(
        "http://{}/music.m3u8?container=ts&offset=6",
        server.listen
    ));
    assert!(
        got.len() >= 1024 && find(&seg_k_audio, &got[..1024]).is_some(),
        "ffmpeg starts in the segment holding the requested point"
    );
    // ?at= the same segment (its PROGRAM-DATE-TIME plus a little): ffmpeg
    // takes the multivariant playlist, reloads its delayed variant, and
    // starts in the segment playing at that time too.
    let within = (delayed.segments[k].duration * 1e6 / 2.0).min(300_000.0) as i64;
    let at = streamer::stream::format_time(delayed.segments[k].pdt_micros.unwrap() + within)
        .replace('+', "%2B");
    let got = first_second(&format!("http://{}/music.m3u8?at={at}", server.listen));
    assert!(
        got.len() >= 1024 && find(&seg_k_audio, &got[..1024]).is_some(),
        "ffmpeg starts ?at= in the segment playing at that time"
    );
    // Unknown containers are refused.
    assert_eq!(
        http_get(server.listen, "/music.m3u8?container=mp4", &[]).status,
        400
    );
    let mv = http_get(server.listen, "/sg/main.m3u8?container=ts", &[]).text();
    assert!(mv.contains("container=ts"), "{mv}");
}
