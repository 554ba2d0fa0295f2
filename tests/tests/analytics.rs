//! Listener analytics against the real server: JSON-line events for a
//! connected listener and an HLS session, and the Prometheus counters.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::time::Duration;

use serde_json::Value;
use streamer::format::Codec;
use streammachine_tests::*;

const EXE: &str = env!("CARGO_BIN_EXE_streammachine-under-test");

fn events(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

#[test]
fn listens_and_sessions_are_reported() {
    let dir = scratch_dir("analytics");
    let file = dir.join("events.jsonl");
    let server = ServerProcess::start(
        EXE,
        &format!(
            "analytics: {{ file: {}, intervalSeconds: 1, sessionIdleSeconds: 2 }}\nstreams:\n  - key: live\n    password: pw\n    burstSeconds: 1\n    hls: {{ segmentSeconds: 1 }}\n",
            file.display()
        ),
    );
    let data = fixture("mp3/mp3-44100-128-s.mp3");
    let frames = frames_of(&data, Codec::Mp3);
    let addr = server.source;
    let d = data.clone();
    let feeder = std::thread::spawn(move || {
        let mut src = Source::connect(addr, "live", "pw", SourceMethod::Ice, &[]).unwrap();
        src.send_realtime(&d, &frames[..frames.len() / 5], 44_100)
            .unwrap();
    });
    std::thread::sleep(Duration::from_millis(1500));
    // A raw listener for ~3 s.
    let (mut l, st, _, rest) = request(
        server.listen,
        "GET",
        "/live",
        &[("User-Agent", "TestPlayer/1.0")],
    );
    assert_eq!(st, 200);
    l.set_read_timeout(Some(Duration::from_millis(3200)))
        .unwrap();
    let got = read_n(&mut l, rest, usize::MAX, Duration::from_millis(3200));
    drop(l);
    // An HLS session: playlist and two segments with the player's session header.
    let sid = "abc123session";
    let pl = http_get(
        server.listen,
        "/live.m3u8",
        &[("X-Playback-Session-Id", sid)],
    )
    .text();
    let uris: Vec<&str> = pl
        .lines()
        .filter(|x| !x.starts_with('#') && !x.is_empty())
        .collect();
    assert!(uris.len() >= 2, "{pl}");
    assert!(
        uris[0].contains(&format!("session={sid}")),
        "the session travels in the URIs: {pl}"
    );
    let mut hls_bytes = 0;
    for u in &uris[..2] {
        let seg = http_get(server.listen, &format!("/{u}"), &[]);
        assert_eq!(seg.status, 200);
        hls_bytes += seg.body.len() as u64;
    }
    // A player that sends no session id and reloads the playlist by its
    // original URL (hls.js, ExoPlayer, ffmpeg) stays one session.
    let ua = [("User-Agent", "PlainHls/2.0")];
    let first = http_get(server.listen, "/live.m3u8", &ua).text();
    let again = http_get(server.listen, "/live.m3u8", &ua).text();
    let session_of = |pl: &str| {
        pl.lines()
            .find(|l| l.starts_with("live/seg/"))
            .and_then(|l| l.split_once("session="))
            .map(|(_, s)| s.to_string())
            .unwrap_or_else(|| panic!("no session in the URIs: {pl}"))
    };
    let plain = session_of(&first);
    assert_eq!(plain, session_of(&again), "the same session across reloads");
    assert_ne!(plain, sid);
    for pl in [&first, &again] {
        let u = pl.lines().find(|l| l.starts_with("live/seg/")).unwrap();
        assert_eq!(http_get(server.listen, &format!("/{u}"), &ua).status, 200);
    }
    // Two HLS players are listening now.
    assert_eq!(
        server.metric("streammachine_listeners{output=\"hls\",stream=\"live\"}"),
        Some(2.0)
    );
    feeder.join().unwrap();
    std::thread::sleep(Duration::from_secs(4)); // HLS idle roll-up (2 s, swept every 5 s)
    let mut ev = events(&file);
    for _ in 0..40 {
        if ev
            .iter()
            .any(|e| e["type"] == "session" && e["output"] == "hls")
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
        ev = events(&file);
    }
    let raw: Vec<&Value> = ev.iter().filter(|e| e["output"] == "raw").collect();
    let start = raw
        .iter()
        .find(|e| e["type"] == "session_start")
        .expect("raw session_start");
    assert_eq!(start["stream"], "live");
    assert_eq!(start["client"]["ua"], "TestPlayer/1.0");
    assert_eq!(start["client"]["ip"], "127.0.0.1");
    let sid_raw = start["session"].as_str().unwrap();
    let listens: Vec<&&Value> = raw
        .iter()
        .filter(|e| e["type"] == "listen" && e["session"] == sid_raw)
        .collect();
    assert!(listens.len() >= 2, "periodic listens: {listens:?}");
    assert!(listens
        .iter()
        .all(|e| e["behindLiveSeconds"].as_f64().unwrap() >= 0.0 && e["contentTime"].is_string()));
    let session = raw
        .iter()
        .find(|e| e["type"] == "session")
        .expect("raw session roll-up");
    let listened: u64 = listens.iter().map(|e| e["bytes"].as_u64().unwrap()).sum();
    assert_eq!(
        session["bytes"].as_u64().unwrap(),
        listened,
        "the roll-up adds up its listens"
    );
    assert!(session["bytes"].as_u64().unwrap() >= got.len() as u64);
    assert!(
        (2.5..6.0).contains(&session["durationSeconds"].as_f64().unwrap()),
        "{session}"
    );
    let hls: Vec<&Value> = ev.iter().filter(|e| e["session"] == sid).collect();
    assert_eq!(
        hls.iter().filter(|e| e["type"] == "session_start").count(),
        1
    );
    assert_eq!(hls.iter().filter(|e| e["type"] == "listen").count(), 2);
    let roll = hls
        .iter()
        .find(|e| e["type"] == "session")
        .expect("HLS roll-up after idle");
    assert_eq!(roll["listens"], 2);
    assert_eq!(roll["bytes"].as_u64().unwrap(), hls_bytes);
    assert_eq!(roll["endReason"], "idle");
    let plain: Vec<&Value> = ev
        .iter()
        .filter(|e| e["session"] == plain.as_str())
        .collect();
    assert_eq!(
        plain
            .iter()
            .filter(|e| e["type"] == "session_start")
            .count(),
        1,
        "{plain:?}"
    );
    assert_eq!(plain.iter().filter(|e| e["type"] == "listen").count(), 2);
    assert_eq!(plain[0]["client"]["ua"], "PlainHls/2.0");
    assert_eq!(
        server.metric("streammachine_sessions_total{output=\"raw\",stream=\"live\"}"),
        Some(1.0)
    );
    assert_eq!(
        server.metric("streammachine_sessions_total{output=\"hls\",stream=\"live\"}"),
        Some(2.0)
    );
    assert!(
        server
            .metric("streammachine_listening_seconds_total{output=\"raw\",stream=\"live\"}")
            .unwrap()
            > 2.0
    );
    assert!(
        server
            .metric("streammachine_listening_seconds_total{output=\"hls\",stream=\"live\"}")
            .unwrap()
            > 1.0
    );
}

/// Issue 13: analytics into Elasticsearch with the `_bulk` API, against a
/// strict stand-in (tests/src/bulk.rs; no Elasticsearch can run here):
/// NDJSON into the day's index, batched, the first two requests answered
/// 503 and retried (nothing lost), a stream's documents refused per item
/// and dropped (counted), no protocol violation.
#[test]
fn events_reach_elasticsearch_in_bulk_retried_and_refusals_counted() {
    let es = streammachine_tests::bulk::Bulk::start(2, |doc| doc["stream"] == "bad");
    let server = ServerProcess::start(
        EXE,
        &format!(
            "analytics: {{ intervalSeconds: 1, elasticsearch: {{ url: \"http://{}\", indexPrefix: radio-events, batchSize: 5, flushSeconds: 0.5 }} }}\nstreams:\n  - key: live\n    password: pw\n    burstSeconds: 1\n  - key: bad\n    password: pw\n    burstSeconds: 1\n",
            es.addr
        ),
    );
    let data = fixture("mp3/mp3-44100-128-s.mp3");
    server.send_source("live", "pw", &data[..300_000]);
    server.send_source("bad", "pw", &data[..300_000]);
    // Six listeners come and go: 6 session_start and 6 session events on
    // `live`, and one listener on `bad`.
    for i in 0..6 {
        let ua = format!("Player/{i}");
        let (mut l, st, _, rest) = request(server.listen, "GET", "/live", &[("User-Agent", &ua)]);
        assert_eq!(st, 200);
        let _ = read_n(&mut l, rest, 4096, Duration::from_secs(5));
    }
    let (mut l, st, _, rest) = request(server.listen, "GET", "/bad", &[]);
    assert_eq!(st, 200);
    let _ = read_n(&mut l, rest, 4096, Duration::from_secs(5));
    drop(l);
    let day = {
        let out = std::process::Command::new("date")
            .args(["-u", "+%Y.%m.%d"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let index = format!("radio-events-{day}");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let done = {
            let seen = es.seen.lock().unwrap();
            let docs = seen.indices.get(&index).cloned().unwrap_or_default();
            let sessions = docs
                .iter()
                .filter(|d| d["type"] == "session" && d["stream"] == "live")
                .count();
            sessions == 6 && !seen.refused.is_empty()
        };
        if done {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{:#?}",
            es.seen.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let seen = es.seen.lock().unwrap();
    assert!(seen.violations.is_empty(), "{:?}", seen.violations);
    assert_eq!(
        seen.indices.len(),
        1,
        "one daily index: {:?}",
        seen.indices.keys()
    );
    let docs = &seen.indices[&index];
    let starts = docs
        .iter()
        .filter(|d| d["type"] == "session_start" && d["stream"] == "live")
        .count();
    assert_eq!(starts, 6, "nothing lost across the 503s");
    assert!(docs.iter().all(|d| d["stream"] != "bad"));
    assert!(
        seen.requests >= 3,
        "two refused, then taken: {}",
        seen.requests
    );
    let refused = seen.refused.len() as f64;
    drop(seen);
    assert!(server.wait_metric(
        "streammachine_analytics_dropped_total{reason=\"refused\"}",
        refused,
        Duration::from_secs(5)
    ));
    assert!(server
        .wait_log("Elasticsearch refused events", Duration::from_secs(5))
        .is_some());
}
