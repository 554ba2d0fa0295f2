//! HLS in the common web player: hls.js in headless Chromium plays the real
//! server's live playlists from `<audio>` elements: MP3 in MPEG-TS (the
//! default container), ADTS AAC as packed audio (`?container=packed`), and
//! the multivariant playlist of both. (Chromium's native player, VLC and
//! ffmpeg: tests/hls_players.rs.)
//!
//! The page and a local copy of hls.js (`tests/web/node_modules`, installed
//! by test.sh from `tests/web/package-lock.json`) come from a small HTTP
//! server inside this test; the page fetches the playlists and segments
//! cross-origin from the streamer and POSTs a JSON summary of what hls.js and
//! the media elements did back to the test every 250 ms.
//!
//! `SM_CHROMIUM` names another Chromium executable; `SM_BROWSER_LOG=1` prints
//! the page's last report and Chromium's log even when the test passes.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use streamer::format::Codec;
use streammachine_tests::browser::{chromium, serve_page, Browser, Reports};
use streammachine_tests::*;

const EXE: &str = env!("CARGO_BIN_EXE_streammachine-under-test");

/// The streams played, as (mount, source password, fixture, codec).
const STREAMS: [(&str, &str, &str, Codec); 2] = [
    ("music", "pw", "mp3/mp3-44100-128-s.mp3", Codec::Mp3),
    ("music-aac", "pw2", "aac-256.aac", Codec::Aac),
];

/// The players on the page, as (name, playlist path, variants, ID3 title
/// cues one of which must show): each stream's media playlist, and the
/// multivariant playlist of the group holding both, where hls.js has to keep
/// both variants (it picks the AAC one, the higher bandwidth within its
/// default estimate, but either may play).
const PLAYERS: [(&str, &str, usize, &[&str]); 3] = [
    ("music", "/music.m3u8", 1, &["metadata:TIT2=Station"]),
    (
        "music-aac",
        "/music-aac.m3u8?container=packed",
        1,
        &["metadata:TIT2=Station AAC"],
    ),
    (
        "group",
        "/sg/main.m3u8",
        2,
        &["metadata:TIT2=Station", "metadata:TIT2=Station AAC"],
    ),
];

/// Seconds of audio fed to each stream, in real time.
const FEED_SECS: f64 = 10.0;

/// Seconds of media each `<audio>` element has to play.
const MIN_ADVANCE: f64 = 2.0;

fn config() -> String {
    "streams:\n  - key: music\n    password: pw\n    title: Station\n    hls: { segmentSeconds: 2, group: main }\n  - key: music-aac\n    format: aac\n    password: pw2\n    title: Station AAC\n    hls: { segmentSeconds: 2, group: main }\n".to_string()
}

/// Segments listed in a stream's media playlist (0 while it has none).
fn segments_listed(server: &ServerProcess, mount: &str) -> usize {
    let r = http_get(server.listen, &format!("/{mount}.m3u8"), &[]);
    if r.status != 200 {
        return 0;
    }
    r.text()
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .count()
}

/// The local copy of hls.js; panics with the install command when missing.
fn hls_js() -> Vec<u8> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("web/node_modules/hls.js/dist/hls.min.js");
    std::fs::read(&p).unwrap_or_else(|e| {
        panic!(
            "hls.js is required for this test and is missing at {} ({e}): \
             run `npm ci --prefix tests/web` (test.sh does)",
            p.display()
        )
    })
}

/// The Chromium executable; panics with the install command when missing.
/// The test page: one `<audio>` element and one hls.js instance per player.
fn page(streamer: SocketAddr) -> String {
    let players: Vec<String> = PLAYERS
        .iter()
        .map(|(name, path, ..)| format!("[\"{name}\", \"http://{streamer}{path}\"]"))
        .collect();
    PAGE.replace("PLAYERS", &players.join(", "))
}

const PAGE: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>hls.js</title>
<script src="/hls.js"></script></head>
<body><script>
"use strict";
const pageErrors = [];
window.addEventListener("error", (e) => pageErrors.push(String(e.message)));
window.addEventListener("unhandledrejection", (e) => pageErrors.push(String(e.reason)));
const players = {};
const elements = {};
function describe(d) {
  return {
    type: d.type, details: d.details, fatal: !!d.fatal,
    reason: d.reason || (d.error && String(d.error)) || null,
    url: d.url || (d.frag && d.frag.url) || (d.context && d.context.url) || null,
    response: d.response ? { code: d.response.code, text: d.response.text } : null,
  };
}
function cueText(cue) {
  const v = cue.value || {};
  if (typeof v.data === "string") return v.key + "=" + v.data;
  return (v.key || "?") + (v.info ? "(" + v.info + ")" : "");
}
for (const [mount, url] of [PLAYERS]) {
  const s = players[mount] = {
    url, warnings: [],
    manifestParsed: false, levels: [], fragsLoaded: 0, fragSns: [],
    fragsBuffered: 0, metadataSamples: 0, id3Cues: [], errors: [], fatal: null,
    playCalled: false, playError: null, playingEvents: 0, startTime: null,
    playingSince: null, currentTime: 0, maxTime: 0, advanced: 0, wallPlaying: 0,
    paused: true, readyState: 0, mediaError: null, buffered: [], level: null,
  };
  const audio = document.createElement("audio");
  audio.muted = true;
  audio.autoplay = true;
  document.body.appendChild(audio);
  elements[mount] = audio;
  if (!Hls.isSupported()) { s.fatal = { details: "Hls.isSupported() is false" }; continue; }
  // hls.js's own warnings and errors (its console logging is off by default).
  const keep = (level) => (...args) => {
    if (s.warnings.length < 30) s.warnings.push(level + ": " + args.map(String).join(" "));
  };
  const noop = () => {};
  const logger = { trace: noop, debug: noop, log: noop, info: noop, warn: keep("warn"), error: keep("error") };
  const hls = new Hls({ debug: logger });
  hls.on(Hls.Events.MANIFEST_PARSED, (e, d) => {
    s.manifestParsed = true;
    s.levels = d.levels.map((l) => ({ codecs: l.codecSet, audioCodec: l.audioCodec || null, bitrate: l.bitrate }));
    s.playCalled = true;
    audio.play().catch((err) => { s.playError = String(err); });
  });
  hls.on(Hls.Events.LEVEL_SWITCHED, (e, d) => { s.level = d.level; });
  hls.on(Hls.Events.FRAG_LOADED, (e, d) => { s.fragsLoaded++; s.fragSns.push(d.frag.sn); });
  hls.on(Hls.Events.FRAG_BUFFERED, () => { s.fragsBuffered++; });
  hls.on(Hls.Events.FRAG_PARSING_METADATA, (e, d) => { s.metadataSamples += d.samples.length; });
  hls.on(Hls.Events.ERROR, (e, d) => {
    const m = describe(d);
    if (s.errors.length < 50) s.errors.push(m);
    if (d.fatal && !s.fatal) s.fatal = m;
  });
  audio.addEventListener("playing", () => {
    s.playingEvents++;
    if (s.startTime === null) { s.startTime = audio.currentTime; s.playingSince = performance.now(); }
  });
  audio.addEventListener("error", () => {
    s.mediaError = audio.error ? audio.error.code + ": " + audio.error.message : "error";
  });
  hls.loadSource(url);
  hls.attachMedia(audio);
}
function snapshot() {
  for (const [mount, s] of Object.entries(players)) {
    const audio = elements[mount];
    s.currentTime = audio.currentTime;
    s.paused = audio.paused;
    s.readyState = audio.readyState;
    s.buffered = [];
    for (let i = 0; i < audio.buffered.length; i++) s.buffered.push([audio.buffered.start(i), audio.buffered.end(i)]);
    if (s.startTime !== null) {
      s.maxTime = Math.max(s.maxTime, audio.currentTime);
      s.advanced = s.maxTime - s.startTime;
      s.wallPlaying = (performance.now() - s.playingSince) / 1000;
    }
    s.id3Cues = [];
    for (const track of audio.textTracks) {
      for (const cue of track.cues || []) {
        if (s.id3Cues.length < 20) s.id3Cues.push(track.kind + ":" + cueText(cue));
      }
    }
  }
  const body = JSON.stringify({
    hlsVersion: Hls.version, userAgent: navigator.userAgent, pageErrors, players,
  });
  fetch("/report", { method: "POST", body }).catch(() => {});
}
setInterval(snapshot, 250);
</script></body></html>
"#;

/// Has this player reached what the test asks, or failed for good?
fn settled(p: &Value) -> bool {
    !p["fatal"].is_null()
        || (p["manifestParsed"] == true
            && p["fragsLoaded"].as_u64().unwrap_or(0) >= 2
            && p["advanced"].as_f64().unwrap_or(0.0) >= MIN_ADVANCE + 0.5
            && p["metadataSamples"].as_u64().unwrap_or(0) >= 1
            && p["id3Cues"].as_array().is_some_and(|c| !c.is_empty()))
}

#[test]
fn hls_js_in_headless_chromium_plays_mp3_and_aac_streams() {
    let started = Instant::now();
    let chromium = chromium();
    let hls = hls_js();
    let server = ServerProcess::start(EXE, &config());
    let feeds: Vec<_> = STREAMS
        .iter()
        .map(|&(mount, pw, file, codec)| feed(&server, mount, pw, fixture(file), codec, FEED_SECS))
        .collect();

    // A live playlist with two segments, as a player joining a running stream finds it.
    let end = Instant::now() + Duration::from_secs(10);
    while STREAMS.iter().any(|s| segments_listed(&server, s.0) < 2) {
        assert!(
            Instant::now() < end,
            "no two HLS segments after 10 s: {:#?}",
            server.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let reports: Reports = Arc::default();
    let site = serve_page(
        vec![
            (
                "/",
                "text/html; charset=utf-8",
                page(server.listen).into_bytes(),
            ),
            ("/hls.js", "text/javascript", hls),
        ],
        Arc::clone(&reports),
    );
    let browser = Browser::open(&chromium, &format!("http://{site}/"));

    let deadline = Instant::now() + Duration::from_secs(25);
    let report = loop {
        let last = reports.lock().unwrap().clone();
        let value: Option<Value> = last.as_deref().map(|j| serde_json::from_str(j).unwrap());
        let done = value
            .as_ref()
            .is_some_and(|v| PLAYERS.iter().all(|p| settled(&v["players"][p.0])));
        if done || Instant::now() > deadline {
            break value;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    let Some(report) = report else {
        panic!(
            "the page never reported (hls.js did not load or run?); Chromium's log:\n{}",
            browser.log_tail()
        )
    };
    let context = || {
        format!(
            "page report:\n{}\nChromium's log:\n{}",
            serde_json::to_string_pretty(&report).unwrap(),
            browser.log_tail()
        )
    };
    if std::env::var_os("SM_BROWSER_LOG").is_some() {
        eprintln!("{}", context());
    }
    eprintln!("hls.js {} in {}", report["hlsVersion"], report["userAgent"]);
    assert_eq!(report["pageErrors"], serde_json::json!([]), "{}", context());
    for (mount, _, variants, titles) in PLAYERS {
        let p = &report["players"][mount];
        eprintln!(
            "{mount}: levels {} (playing {}), {} fragments loaded (sn {}), {} buffered, {} ID3 samples, cues {}, \
             played {:.2} s of media in {:.2} s from {:.2}, buffered {}, errors {}, hls.js warnings {}",
            p["levels"],
            p["level"],
            p["fragsLoaded"],
            p["fragSns"],
            p["fragsBuffered"],
            p["metadataSamples"],
            p["id3Cues"],
            p["advanced"].as_f64().unwrap_or(0.0),
            p["wallPlaying"].as_f64().unwrap_or(0.0),
            p["startTime"].as_f64().unwrap_or(f64::NAN),
            p["buffered"],
            p["errors"],
            p["warnings"],
        );
        assert!(
            p["fatal"].is_null(),
            "{mount}: hls.js fatal error\n{}",
            context()
        );
        assert!(
            p["mediaError"].is_null(),
            "{mount}: media element error\n{}",
            context()
        );
        assert_eq!(
            p["manifestParsed"],
            true,
            "{mount}: no MANIFEST_PARSED\n{}",
            context()
        );
        assert_eq!(
            p["levels"].as_array().map_or(0, Vec::len),
            variants,
            "{mount}: hls.js kept another number of variants\n{}",
            context()
        );
        assert!(
            p["fragsLoaded"].as_u64().unwrap_or(0) >= 2,
            "{mount}: fewer than 2 FRAG_LOADED\n{}",
            context()
        );
        assert!(
            p["playError"].is_null(),
            "{mount}: play() was refused\n{}",
            context()
        );
        assert!(
            p["advanced"].as_f64().unwrap_or(0.0) >= MIN_ADVANCE,
            "{mount}: currentTime did not advance {MIN_ADVANCE} s while playing\n{}",
            context()
        );
        assert!(
            p["metadataSamples"].as_u64().unwrap_or(0) >= 1,
            "{mount}: no ID3 samples (FRAG_PARSING_METADATA) from the segments\n{}",
            context()
        );
        let cues: Vec<&str> = p["id3Cues"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert!(
            cues.iter().any(|c| titles.contains(c)),
            "{mount}: no ID3 title cue {titles:?} among {cues:?}\n{}",
            context()
        );
    }
    let warnings = browser.console_warnings();
    eprintln!("hls.js console warnings: {warnings:#?}");
    drop(browser);
    for f in feeds {
        f.join().unwrap();
    }
    eprintln!("took {:.1} s", started.elapsed().as_secs_f64());
}
