//! Transcoding end to end: ffmpeg encodes a 1 kHz tone as the source, the
//! server transcodes it to AAC and MP3 in-process, and ffmpeg decodes what
//! listeners get: no errors, the same length, still a 1 kHz tone, titles kept.
//! And a transcoder that cannot work fails alone, visibly, and recovers.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use streammachine_tests::*;

const EXE: &str = env!("CARGO_BIN_EXE_streammachine-under-test");

/// Seconds of tone the source sends.
const TONE_SECONDS: u32 = 120;

/// ffmpeg output options: MP3 128k to an MP3 mount.
const MP3_128K: [&str; 8] = [
    "-c:a",
    "libmp3lame",
    "-b:a",
    "128k",
    "-f",
    "mp3",
    "-content_type",
    "audio/mpeg",
];

/// ffmpeg output options: AAC (ADTS) to an AAC mount, with `channels` and `bitrate`.
fn aac_args<'a>(channels: &'a str, bitrate: &'a str) -> [&'a str; 10] {
    [
        "-ac",
        channels,
        "-c:a",
        "aac",
        "-b:a",
        bitrate,
        "-f",
        "adts",
        "-content_type",
        "audio/aac",
    ]
}

fn api(server: &ServerProcess, path: &str) -> Value {
    let r = http_get(server.admin, path, &[("Authorization", "Bearer t")]);
    assert_eq!(r.status, 200, "{path}: {}", r.text());
    serde_json::from_slice(&r.body).unwrap()
}

/// The whole buffer of `stream`, saved to a file.
fn save_buffer(server: &ServerProcess, stream: &str, ext: &str) -> PathBuf {
    let r = http_get(server.listen, &format!("/{stream}?pump=100000"), &[]);
    assert_eq!(r.status, 200, "{stream}: {}", r.text());
    let path = server.dir.join(format!("{stream}.{ext}"));
    std::fs::write(&path, &r.body).unwrap();
    path
}

/// Decodes `path` with ffmpeg to mono 16-bit PCM at its own rate.
fn decode_pcm(path: &Path) -> (Vec<i16>, u32) {
    let rate: u32 = {
        let out = Command::new("ffprobe")
            .args(["-v", "error", "-select_streams", "a:0"])
            .args(["-show_entries", "stream=sample_rate", "-of", "csv=p=0"])
            .arg(path)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    };
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-v", "error", "-i"])
        .arg(path)
        .args(["-ac", "1", "-f", "s16le", "-"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pcm = out
        .stdout
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect();
    (pcm, rate)
}

/// Frequency from rising zero crossings over the middle half.
fn pitch(pcm: &[i16], rate: u32) -> f64 {
    let mid = &pcm[pcm.len() / 4..pcm.len() * 3 / 4];
    let rising = mid.windows(2).filter(|w| w[0] < 0 && w[1] >= 0).count();
    rising as f64 * f64::from(rate) / mid.len() as f64
}

#[test]
fn a_tone_is_transcoded_to_aac_and_mp3_that_ffmpeg_plays_at_the_same_length_and_pitch() {
    require("ffmpeg");
    let server = ServerProcess::start(
        EXE,
        "admin: { token: t }\nsourceMounts:\n  - key: studio\n    password: pw\nstreams:\n  - key: source\n    sourceMount: studio\n    hls: { group: main }\n  - key: aac64\n    sourceMount: studio\n    hls: { group: main }\n    transcode: { format: aac, bitrate: 64 }\n  - key: mp364\n    sourceMount: studio\n    transcode: { format: mp3, bitrate: 64 }\n  - key: he48\n    sourceMount: studio\n    hls: { group: main }\n    transcode: { format: aac, bitrate: 48, profile: he, channels: 2 }\n",
    );
    let url = format!("icecast://source:pw@{}/studio", server.source);
    let mut ff = ffmpeg_tone_source(&url, 1000, TONE_SECONDS, "6", &MP3_128K);
    assert!(server.wait_metric(
        "streammachine_source_connected{mount=\"studio\"}",
        1.0,
        Duration::from_secs(10)
    ));
    // A title from the encoder's side, the way Icecast clients send it.
    let r = http_get(
        server.source,
        "/admin/metadata?mount=/studio&mode=updinfo&song=Tone%20test",
        &[("Authorization", "Basic c291cmNlOnB3")],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let status = ff.wait().unwrap();
    assert!(status.success(), "the ffmpeg source failed");
    // The source left: every transcoder flushes its last audio.
    let deadline = Instant::now() + Duration::from_secs(30);
    let settled = |key: &str| {
        let v = api(&server, &format!("/api/streams/{key}"));
        (
            v["buffer"]["seconds"].as_f64().unwrap(),
            v["transcoder"].clone(),
        )
    };
    let source_seconds = settled("source").0;
    assert!(
        (f64::from(TONE_SECONDS) - source_seconds).abs() < 0.1,
        "source buffer {source_seconds} s"
    );
    for key in ["aac64", "mp364", "he48"] {
        while settled(key).0 < source_seconds && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
        }
        let (secs, t) = settled(key);
        assert_eq!(t["state"], "running", "{key}: {t}");
        assert_eq!(t["droppedChunks"], 0, "{key}: {t}");
        assert!(
            secs >= source_seconds,
            "{key}: {secs} s of {source_seconds} s"
        );
    }

    let source = save_buffer(&server, "source", "mp3");
    let (src_pcm, src_rate) = decode_pcm(&source);
    let src_len = src_pcm.len() as f64 / f64::from(src_rate);
    // HE-AAC: 1024 core samples at half rate are 2048 at the output rate.
    for (key, ext, frame) in [
        ("aac64", "aac", 1024.0),
        ("mp364", "mp3", 1152.0),
        ("he48", "aac", 2048.0),
    ] {
        let path = save_buffer(&server, key, ext);
        let errors = ffmpeg_decode_errors(&path);
        assert!(errors.trim().is_empty(), "{key}: ffmpeg says: {errors}");
        let (pcm, rate) = decode_pcm(&path);
        assert_eq!(rate, 44_100, "{key}");
        let hz = pitch(&pcm, rate);
        assert!(
            (hz - 1000.0).abs() < 2.0,
            "{key}: the tone is at {hz:.2} Hz"
        );
        // Length: the source's plus the codec's fixed delay (under two
        // frames), and no drift: within one frame per minute beyond that.
        let len = pcm.len() as f64 / f64::from(rate);
        let frame_s = frame / f64::from(rate);
        let extra = len - src_len;
        let allowed = 2.0 * frame_s + f64::from(TONE_SECONDS) / 60.0 * frame_s;
        eprintln!(
            "{key}: {len:.4} s decoded for {src_len:.4} s of source ({:+.1} ms, {:.2} frames); tone {hz:.2} Hz",
            extra * 1e3,
            extra / frame_s
        );
        assert!(
            (0.0..=allowed).contains(&extra),
            "{key}: {len} s decoded, source {src_len} s (allowed +{allowed} s)"
        );
    }

    // The title travels with the transcoded audio: an ICY listener started a
    // minute back hears it.
    let (mut s, metaint, rest) = icy_listener(server.listen, "/aac64?offset=60");
    let wire = read_n(&mut s, rest, metaint * 2 + 4096, Duration::from_secs(5));
    let (_, metas) = strip_icy(&wire, metaint);
    assert!(
        metas
            .iter()
            .any(|(_, t)| t.contains("StreamTitle='Tone test'")),
        "{metas:?}"
    );

    // The HLS group names real codecs and bandwidths; ffmpeg plays the
    // transcoded variant's playlist.
    let group = http_get(server.listen, "/sg/main.m3u8", &[]).text();
    assert!(group.contains("CODECS=\"mp4a.40.34\""), "{group}");
    assert!(group.contains("CODECS=\"mp4a.40.2\""), "{group}");
    assert!(group.contains("CODECS=\"mp4a.40.5\""), "{group}");
    // From the first segment: the source has ended, so the live playlist
    // will not grow, and ffmpeg's default live start (three segments from the
    // end) could hold less than the 30 s asked, and wait for more for hours.
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-v", "error"])
        .args(["-live_start_index", "0", "-i"])
        .arg(format!("http://{}/aac64.m3u8", server.listen))
        .args(["-t", "30", "-f", "null", "-"])
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "ffmpeg on the HLS playlist: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        server.metric("streammachine_transcoder_up{stream=\"aac64\"}"),
        Some(1.0)
    );
}

#[test]
fn a_failing_transcoder_is_reported_restarted_and_recovers_without_touching_other_streams() {
    require("ffmpeg");
    let server = ServerProcess::start(
        EXE,
        "admin: { token: t }\nalerts: { raiseSeconds: 1, clearSeconds: 1 }\nsourceMounts:\n  - key: studio\n    format: aac\n    password: pw\nstreams:\n  - key: raw\n    sourceMount: studio\n  - key: mp3\n    sourceMount: studio\n    transcode: { format: mp3, bitrate: 128 }\n",
    );
    let url = format!("icecast://source:pw@{}/studio", server.source);
    // A 5.1 encoder: the raw stream takes it, the AAC-LC stereo decoder cannot.
    let surround = aac_args("6", "256k");
    let mut ff = ffmpeg_tone_source(&url, 1000, 600, "1", &surround);
    let failing = |server: &ServerProcess| api(server, "/api/streams/mp3")["transcoder"].clone();
    let deadline = Instant::now() + Duration::from_secs(15);
    while failing(&server)["restarts"].as_u64().unwrap_or(0) < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    let t = failing(&server);
    assert_eq!(t["state"], "failing", "{t}");
    assert_eq!(t["lastError"], "unsupported input: 6 input channels", "{t}");
    assert!(
        t["restarts"].as_u64().unwrap() >= 2,
        "restarted with backoff: {t}"
    );
    assert_eq!(
        server.metric("streammachine_transcoder_up{stream=\"mp3\"}"),
        Some(0.0)
    );
    assert!(server.wait_metric(
        "streammachine_alert_active{alert=\"transcoder_failing\",subject=\"mp3\"}",
        1.0,
        Duration::from_secs(5)
    ));
    assert_eq!(
        server
            .log_lines("transcoder failed; restarting with backoff")
            .len(),
        1,
        "the same failure is logged once"
    );
    // The untranscoded stream plays on, and ffmpeg decodes it cleanly.
    let raw = api(&server, "/api/streams/raw");
    assert!(raw["buffer"]["seconds"].as_f64().unwrap() >= 3.0, "{raw}");
    let path = save_buffer(&server, "raw", "aac");
    let errors = ffmpeg_decode_errors(&path);
    assert!(errors.trim().is_empty(), "raw stream: {errors}");

    // A stereo encoder replaces it: the transcoder recovers, the alert clears.
    ff.kill().unwrap();
    ff.wait().unwrap();
    let stereo = aac_args("2", "128k");
    let mut ff = ffmpeg_tone_source(&url, 1000, 600, "1", &stereo);
    assert!(server.wait_metric(
        "streammachine_transcoder_up{stream=\"mp3\"}",
        1.0,
        Duration::from_secs(40)
    ));
    assert!(server.wait_metric_at_least(
        "streammachine_buffer_seconds{stream=\"mp3\"}",
        2.0,
        Duration::from_secs(10)
    ));
    assert_eq!(failing(&server)["state"], "running");
    assert!(server.wait_metric(
        "streammachine_alert_active{alert=\"transcoder_failing\",subject=\"mp3\"}",
        0.0,
        Duration::from_secs(5)
    ));
    assert!(server
        .wait_log("transcoder recovered", Duration::from_secs(1))
        .is_some());
    let path = save_buffer(&server, "mp3", "mp3");
    let errors = ffmpeg_decode_errors(&path);
    assert!(errors.trim().is_empty(), "transcoded stream: {errors}");
    ff.kill().unwrap();
    ff.wait().unwrap();
}

/// The original's `sources/transcoding` test, our way: AAC → AAC emits audio
/// within 4 s, and a stop/start of the input is a discontinuity (the gap is
/// kept as a gap: HLS says `EXT-X-DISCONTINUITY`), not drift.
#[test]
fn aac_to_aac_starts_within_4_s_and_an_input_gap_is_a_discontinuity() {
    require("ffmpeg");
    let server = ServerProcess::start(
        EXE,
        "admin: { token: t }\nsourceMounts:\n  - key: studio\n    format: aac\n    password: pw\nstreams:\n  - key: low\n    sourceMount: studio\n    transcode: { format: aac, bitrate: 48 }\n",
    );
    let url = format!("icecast://source:pw@{}/studio", server.source);
    let aac = aac_args("1", "128k");
    // Two encoder runs with a gap between.
    let mut first = None;
    for i in 0..2 {
        if i > 0 {
            std::thread::sleep(Duration::from_secs(3));
        }
        let started = Instant::now();
        let mut ff = ffmpeg_tone_source(&url, 1000, 5, "1", &aac);
        if i == 0 {
            assert!(server.wait_metric_at_least(
                "streammachine_buffer_seconds{stream=\"low\"}",
                0.5,
                Duration::from_secs(4)
            ));
            first = Some(started.elapsed());
        }
        assert!(ff.wait().unwrap().success());
    }
    // With the source gone for 5 s, the last segment is published too.
    std::thread::sleep(Duration::from_millis(5500));
    let playlist = http_get(server.listen, "/low.m3u8", &[]).text();
    assert_eq!(
        playlist.matches("#EXT-X-DISCONTINUITY\n").count(),
        1,
        "one gap, one discontinuity:\n{playlist}"
    );
    let listed: f64 = playlist
        .lines()
        .filter_map(|l| l.strip_prefix("#EXTINF:"))
        .map(|l| l.trim_end_matches(',').parse::<f64>().unwrap())
        .sum();
    let secs = server
        .metric("streammachine_buffer_seconds{stream=\"low\"}")
        .unwrap();
    assert!(
        (10.0..=10.3).contains(&secs),
        "10 s of input give 10 s of audio plus the codec delay per run: {secs} s"
    );
    assert!(
        (listed - secs).abs() < 0.01,
        "the playlist lists all of it ({listed} s of {secs} s)"
    );
    eprintln!("first transcoded audio after {first:?}; {secs:.3} s buffered");
    let path = save_buffer(&server, "low", "aac");
    let errors = ffmpeg_decode_errors(&path);
    assert!(errors.trim().is_empty(), "{errors}");
}

/// Changing a transcode's bitrate through the API applies live: the stream
/// and its listeners stay, the new encoder takes over after a discontinuity.
#[test]
fn a_live_bitrate_change_restarts_only_the_encoder() {
    require("ffmpeg");
    let server = ServerProcess::start(
        EXE,
        "admin: { token: t }\nsourceMounts:\n  - key: studio\n    password: pw\nstreams:\n  - key: low\n    sourceMount: studio\n    transcode: { format: aac, bitrate: 32 }\n",
    );
    let url = format!("icecast://source:pw@{}/studio", server.source);
    let mut ff = ffmpeg_tone_source(&url, 1000, 30, "1", &MP3_128K);
    assert!(server.wait_metric_at_least(
        "streammachine_buffer_seconds{stream=\"low\"}",
        4.0,
        Duration::from_secs(10)
    ));
    let rate = |server: &ServerProcess| {
        // Bytes per second over the newest 3 s.
        http_get(server.listen, "/low?pump=3", &[]).body.len() as f64 / 3.0
    };
    let before = rate(&server);
    let (l, st, _, rest) = request(server.listen, "GET", "/low", &[]);
    assert_eq!(st, 200);
    let r = http_send(
        server.admin,
        "PUT",
        "/api/streams/low",
        &[("Authorization", "Bearer t"), ("Content-Type", "application/json")],
        br#"{"key": "low", "sourceMount": "studio", "transcode": {"format": "aac", "bitrate": 128}}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    std::thread::sleep(Duration::from_secs(6));
    let after = rate(&server);
    assert!(
        after > 2.5 * before,
        "32 → 128 kbit/s: {before:.0} B/s before, {after:.0} B/s after"
    );
    // The listener connected before the change is still being served.
    let mut l = l;
    l.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let got = read_n(&mut l, rest, 64 * 1024, Duration::from_secs(3));
    assert!(
        got.len() >= 16 * 1024,
        "the listener kept receiving ({} bytes)",
        got.len()
    );
    let v = api(&server, "/api/streams/low");
    assert_eq!(v["config"]["transcode"]["bitrate"], 128, "{v}");
    assert_eq!(v["transcoder"]["state"], "running", "{v}");
    let _ = ff.kill();
    let _ = ff.wait();
    eprintln!("32 kbit/s: {before:.0} B/s; 128 kbit/s: {after:.0} B/s");
}
