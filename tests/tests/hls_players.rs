//! HLS in the players listeners use (issue 16), side by side on one server
//! set up as a station runs it: three streams from one mount (two of them
//! transcoded), a 1 h buffer, a real-time ffmpeg encoder.
//!
//! * Chromium's native player (`<audio src=…m3u8>`, no hls.js) plays the MP3
//!   and the AAC stream's default playlists, and a `?at=` one starts at the
//!   requested time (the server's analytics show which segments it fetched).
//! * VLC 3 (`cvlc --aout=dummy`, as a non-root user: VLC refuses root) plays
//!   each default playlist and a timeshifted one for 30 s without ending.
//! * ffmpeg decodes 60 s of the live playlist with no warning at all and
//!   reads a title change from the timed ID3 metadata.
//!
//! All players run at once, so the test takes about as long as its longest
//! player (ffmpeg's minute). VLC comes from Debian's `vlc-bin` and
//! `vlc-plugin-base` (test.sh installs them).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use streammachine_tests::browser::{chromium, serve_page, Browser, Reports};
use streammachine_tests::*;

const EXE: &str = env!("CARGO_BIN_EXE_streammachine-under-test");

/// Segment length: short, so players get going within seconds.
const SEGMENT: f64 = 2.0;

/// How far back the timeshifted players start, s.
const BACK: f64 = 12.0;

fn config(analytics: &Path) -> String {
    let stream = |key: &str, transcode: &str| {
        format!(
            "  - key: {key}\n    sourceMount: studio\n    rewindSeconds: 3600\n    hls: {{ segmentSeconds: {SEGMENT}, group: main }}\n{transcode}"
        )
    };
    format!(
        "analytics: {{ file: {}, intervalSeconds: 1 }}\nsourceMounts:\n  - key: studio\n    password: pw\nstreams:\n{}{}{}",
        analytics.display(),
        stream("music", ""),
        stream("aac64", "    transcode: { format: aac, bitrate: 64 }\n"),
        stream("mp364", "    transcode: { format: mp3, bitrate: 64 }\n"),
    )
}

/// Segments a stream's live playlist lists.
fn listed(server: &ServerProcess, stream: &str) -> usize {
    let text = http_get(server.listen, &format!("/{stream}.m3u8"), &[]).text();
    hls_check::check_media(&text)
        .unwrap_or_else(|e| panic!("{stream}: {e}\n{text}"))
        .segments
        .len()
}

fn set_title(server: &ServerProcess, title: &str) {
    use base64::Engine as _;
    let auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("source:pw")
    );
    let r = http_get(
        server.source,
        &format!(
            "/admin/metadata?mount=/studio&mode=updinfo&song={}",
            title.replace(' ', "+")
        ),
        &[("Authorization", &auth)],
    );
    assert_eq!(r.status, 200);
}

/// VLC on one URL, logging to `log`; as `nobody` when this runs as root.
fn vlc(url: &str, dir: &Path, log: &Path) -> Child {
    let mut cmd = if nix_is_root() {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "cvlc"]);
        c
    } else {
        Command::new("cvlc")
    };
    cmd.args([
        "-vv",
        "--no-media-library",
        "--play-and-exit",
        "--aout=dummy",
        "--no-video",
    ])
    .arg(url)
    .env("HOME", dir)
    .stdin(Stdio::null());
    let file = std::fs::File::create(log).unwrap();
    cmd.stderr(file.try_clone().unwrap())
        .stdout(file)
        .spawn()
        .expect("spawn cvlc")
}

fn nix_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// The page: one native `<audio>` per player, reporting every 250 ms.
fn page(players: &[(&str, String)]) -> String {
    let list: Vec<String> = players
        .iter()
        .map(|(name, url)| format!("[\"{name}\", \"{url}\"]"))
        .collect();
    r#"<!doctype html>
<html><head><meta charset="utf-8"><title>native HLS</title></head>
<body><script>
"use strict";
const players = {};
const elements = {};
const canPlay = document.createElement("audio").canPlayType("application/vnd.apple.mpegurl");
for (const [name, url] of [PLAYERS]) {
  const s = players[name] = { url, error: null, playError: null, startTime: null, maxTime: 0, advanced: 0 };
  const audio = new Audio();
  audio.muted = true;
  audio.addEventListener("error", () => { s.error = audio.error ? audio.error.code + ": " + audio.error.message : "error"; });
  audio.addEventListener("playing", () => { if (s.startTime === null) s.startTime = audio.currentTime; });
  audio.src = url;
  audio.play().catch((e) => { s.playError = String(e); });
  elements[name] = audio;
}
setInterval(() => {
  for (const [name, s] of Object.entries(players)) {
    const a = elements[name];
    if (s.startTime !== null) { s.maxTime = Math.max(s.maxTime, a.currentTime); s.advanced = s.maxTime - s.startTime; }
    s.readyState = a.readyState;
  }
  fetch("/report", { method: "POST", body: JSON.stringify({ canPlay, players }) }).catch(() => {});
}, 250);
</script></body></html>
"#
    .replace("PLAYERS", &list.join(", "))
}

#[test]
fn native_chromium_vlc_and_ffmpeg_play_the_default_and_timeshifted_playlists() {
    require("ffmpeg");
    require("cvlc");
    let chromium = chromium();
    let dir = scratch_dir("hls-players");
    let analytics = dir.join("analytics.jsonl");
    let server = ServerProcess::start(EXE, &config(&analytics));
    let url = format!("icecast://source:pw@{}/studio", server.source);
    let mut encoder = ffmpeg_source(
        &fixture_path("mp3/mp3-44100-128-s.mp3"),
        &["-c", "copy", "-content_type", "audio/mpeg", "-f", "mp3"],
        &url,
    );
    // Enough buffer for a start BACK s ago plus a live window on every stream.
    let need = ((BACK + 4.0 * SEGMENT) / SEGMENT).ceil() as usize;
    let deadline = Instant::now() + Duration::from_secs(60);
    while ["music", "aac64", "mp364"]
        .iter()
        .any(|s| listed(&server, s) < need)
    {
        assert!(
            Instant::now() < deadline,
            "fewer than {need} segments after 60 s: {:#?}",
            server.logs()
        );
        assert!(encoder.try_wait().unwrap().is_none(), "the encoder ended");
        std::thread::sleep(Duration::from_millis(250));
    }
    let base = format!("http://{}", server.listen);
    let at_micros = now_micros() - (BACK * 1e6) as i64;
    let at = streamer::stream::format_time(at_micros).replace('+', "%2B");

    // ffmpeg: a minute of the live playlist, audio decoded, timed ID3 kept.
    let id3 = dir.join("id3.bin");
    let ffmpeg = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-v", "warning", "-i"])
        .arg(format!("{base}/music.m3u8"))
        .args(["-map", "0:a", "-t", "60", "-f", "null", "-"])
        .args(["-map", "0:d", "-c", "copy", "-t", "60", "-f", "data", "-y"])
        .arg(&id3)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let ffmpeg_started = Instant::now();

    // VLC: both default playlists and a timeshifted one.
    let home = dir.join("vlc-home");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let vlc_urls = [
        ("mp3", format!("{base}/music.m3u8")),
        ("aac", format!("{base}/aac64.m3u8")),
        ("offset", format!("{base}/music.m3u8?offset={BACK}")),
    ];
    let mut vlcs: Vec<(&str, Child, std::path::PathBuf)> = vlc_urls
        .iter()
        .map(|(name, url)| {
            let log = dir.join(format!("vlc-{name}.log"));
            (*name, vlc(url, &home, &log), log)
        })
        .collect();
    let vlc_started = Instant::now();

    // Chromium's native player.
    let players = [
        ("mp3", format!("{base}/music.m3u8")),
        ("aac", format!("{base}/aac64.m3u8")),
        (
            "shift",
            format!("{base}/music.m3u8?at={at}&session=nativeshift"),
        ),
    ];
    let reports: Reports = Arc::default();
    let site = serve_page(
        vec![("/", "text/html; charset=utf-8", page(&players).into_bytes())],
        Arc::clone(&reports),
    );
    let browser = Browser::open(&chromium, &format!("http://{site}/"));
    let deadline = Instant::now() + Duration::from_secs(40);
    let report = loop {
        let last: Option<Value> = reports
            .lock()
            .unwrap()
            .as_deref()
            .map(|j| serde_json::from_str(j).unwrap());
        let done = last.as_ref().is_some_and(|r| {
            ["mp3", "aac", "shift"].iter().all(|p| {
                let p = &r["players"][p];
                !p["error"].is_null() || p["advanced"].as_f64().unwrap_or(0.0) >= 10.5
            })
        });
        if done || Instant::now() > deadline {
            break last;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    let report =
        report.unwrap_or_else(|| panic!("the page never reported: {}", browser.log_tail()));
    eprintln!("native players: {report}");
    assert_eq!(report["canPlay"], "maybe", "Chromium plays HLS natively");
    for p in ["mp3", "aac", "shift"] {
        let r = &report["players"][p];
        assert!(
            r["error"].is_null() && r["playError"].is_null(),
            "native {p}: {r}\n{}",
            browser.log_tail()
        );
        assert!(
            r["advanced"].as_f64().unwrap_or(0.0) >= 10.0,
            "native {p} played 10 s: {r}\n{}",
            browser.log_tail()
        );
    }
    drop(browser);

    // Where the native ?at= player started: the segments of its session
    // (analytics `listen` events), less a probe of the playlist's first
    // segment, begin with the one playing at the requested time.
    let events = std::fs::read_to_string(&analytics).unwrap();
    let mut starts: Vec<i64> = events
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["type"] == "listen" && e["session"] == "nativeshift")
        .map(|e| streamer::output::start::parse_time(e["contentTime"].as_str().unwrap()).unwrap())
        .collect();
    starts.sort_unstable();
    let oldest = http_get(server.listen, "/music.m3u8", &[]).text();
    let oldest = hls_check::check_media(&oldest).unwrap().segments[0]
        .pdt_micros
        .unwrap();
    let first = starts
        .iter()
        .copied()
        .find(|&t| t > oldest + 1_000) // PROGRAM-DATE-TIME is to the ms
        .unwrap_or_else(|| panic!("no segment fetched by the ?at= player: {events}"));
    let cap = ((SEGMENT + 1.5) * 1e6) as i64;
    assert!(
        first <= at_micros && at_micros - first < cap,
        "the ?at= player started at {first}, asked {at_micros} (segments {starts:?})"
    );

    // VLC: 30 s each, still playing, no end of input, segments kept coming.
    let left = Duration::from_secs(30).saturating_sub(vlc_started.elapsed());
    std::thread::sleep(left);
    for (name, child, log) in &mut vlcs {
        let ended = child.try_wait().unwrap();
        let _ = child.kill();
        let _ = child.wait();
        let text = std::fs::read_to_string(&*log).unwrap_or_default();
        let eof: Vec<&str> = text.lines().filter(|l| l.contains("EOF reached")).collect();
        let fetched = text
            .lines()
            .filter(|l| l.starts_with("GET ") && l.contains("/seg/"))
            .count();
        let tail: Vec<&str> = text.lines().rev().take(40).collect();
        assert!(
            ended.is_none() && eof.is_empty() && fetched >= 10,
            "VLC {name}: exited {ended:?}, {eof:?}, {fetched} segments fetched in 30 s; log ends:\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }

    // ffmpeg: a title change while it reads, then the rest of its minute.
    let wait = Duration::from_secs(20).saturating_sub(ffmpeg_started.elapsed());
    std::thread::sleep(wait);
    set_title(&server, "Second Title");
    let out = ffmpeg.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && err.trim().is_empty(),
        "ffmpeg, a minute of the live playlist: {err}"
    );
    assert!(
        ffmpeg_started.elapsed() >= Duration::from_secs(50),
        "ffmpeg read a minute of live audio"
    );
    let tags = std::fs::read(&id3).unwrap();
    assert!(
        find(&tags, b"Second Title").is_some(),
        "the title change in ffmpeg's timed ID3 stream"
    );
    let _ = encoder.kill();
    let _ = encoder.wait();
}
