//! A mount's fallback file plays while no encoder is connected, yields to a
//! live source at once, and comes back when it leaves.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::time::Duration;

use streamer::format::Codec;
use streammachine_tests::*;

const EXE: &str = env!("CARGO_BIN_EXE_streammachine-under-test");

/// The last `secs` of the stream's buffer.
fn recent(server: &ServerProcess, secs: u32) -> Vec<u8> {
    http_get(server.listen, &format!("/live?pump={secs}"), &[]).body
}

/// Is `got` a run of `audio` (looped)?
fn from(audio: &[u8], got: &[u8]) -> bool {
    let twice = [audio, audio].concat();
    got.len() > 2048 && find(&twice, &got[got.len() - 2048..]).is_some()
}

#[test]
fn the_fallback_plays_yields_to_a_live_source_and_comes_back() {
    let fallback = fixture_path("mp3/tone440Hz-44100-128-m.mp3");
    let server = ServerProcess::start(
        EXE,
        &format!(
            "admin: {{ token: t }}\nsourceMounts:\n  - key: studio\n    password: pw\n    monitored: true\n    fallback: {{ file: {} }}\nstreams:\n  - key: live\n    sourceMount: studio\n",
            fallback.display()
        ),
    );
    let tone440 = audio_of(&fixture("mp3/tone440Hz-44100-128-m.mp3"), Codec::Mp3);
    let tone1k_data = fixture("mp3/tone1kHz-44100-128-m.mp3");
    let tone1k = audio_of(&tone1k_data, Codec::Mp3);
    // Nobody connected: the fallback is on air, in real time.
    assert!(server.wait_metric_at_least(
        "streammachine_buffer_seconds{stream=\"live\"}",
        2.0,
        Duration::from_secs(8)
    ));
    let got = recent(&server, 1);
    assert!(from(&tone440, &got), "the fallback file is what plays");
    // A live encoder takes over at once and stays on air while connected.
    let addr = server.source;
    let d = tone1k_data.clone();
    let live = std::thread::spawn(move || {
        let frames = frames_of(&d, Codec::Mp3);
        let mut src = Source::connect(
            addr,
            "studio",
            "pw",
            SourceMethod::Ice,
            &[("ice-name", "Live")],
        )
        .unwrap();
        src.send_realtime(&d, &frames[..(3.5 * 44_100.0 / 1152.0) as usize], 44_100)
            .unwrap();
    });
    assert!(server
        .wait_log(
            "a live source takes over from the fallback",
            Duration::from_secs(5)
        )
        .is_some());
    std::thread::sleep(Duration::from_millis(2500));
    assert!(
        from(&tone1k, &recent(&server, 1)),
        "the live source is what plays"
    );
    let r = http_get(
        server.admin,
        "/api/source-mounts/studio/sources",
        &[("Authorization", "Bearer t")],
    );
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v[0]["name"], "Live", "{v}");
    assert!(
        v[1]["name"].as_str().unwrap().starts_with("fallback "),
        "{v}"
    );
    live.join().unwrap();
    // It left: the fallback is back.
    std::thread::sleep(Duration::from_millis(2500));
    assert!(
        from(&tone440, &recent(&server, 1)),
        "the fallback came back"
    );
    // A fallback is not a live source: the monitored mount's alert condition holds
    // (raised after alerts.raiseSeconds, 30 s by default, so not checked here).
    assert_eq!(
        server.metric("streammachine_sources{mount=\"studio\"}"),
        Some(1.0)
    );
    // A new fallback file through the API takes over live: no restart, the
    // stream (and its listeners) stay.
    let other = fixture_path("mp3/tone250Hz-44100-128-m.mp3");
    let r = http_send(
        server.admin,
        "PUT",
        "/api/source-mounts/studio",
        &[
            ("Authorization", "Bearer t"),
            ("Content-Type", "application/json"),
        ],
        format!(
            "{{\"key\": \"studio\", \"monitored\": true, \"fallback\": {{\"file\": \"{}\"}}}}",
            other.display()
        )
        .as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let tone250 = audio_of(&fixture("mp3/tone250Hz-44100-128-m.mp3"), Codec::Mp3);
    std::thread::sleep(Duration::from_millis(2500));
    assert!(
        from(&tone250, &recent(&server, 1)),
        "the new fallback file plays"
    );
    assert!(server
        .wait_log("fallback changed", Duration::from_secs(1))
        .is_some());
    assert_eq!(
        server.metric("streammachine_sources{mount=\"studio\"}"),
        Some(1.0),
        "the old fallback left the mount"
    );
}

#[test]
fn a_pulled_stream_relays_audio_and_titles() {
    // Upstream: another server with a live source and a title (ICY upstream).
    let up = ServerProcess::start(
        EXE,
        "streams:\n  - key: up\n    password: pw\n    burstSeconds: 2\n",
    );
    let data = fixture("mp3/mp3-44100-128-s.mp3");
    let audio = audio_of(&data, Codec::Mp3);
    let addr = up.source;
    let d = data.clone();
    let feeder = std::thread::spawn(move || {
        let frames = frames_of(&d, Codec::Mp3);
        let mut src = Source::connect(addr, "up", "pw", SourceMethod::Ice, &[]).unwrap();
        src.send_realtime(&d, &frames[..(7.0 * 44_100.0 / 1152.0) as usize], 44_100)
            .unwrap();
    });
    std::thread::sleep(Duration::from_secs(1));
    use base64::Engine as _;
    let auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("source:pw")
    );
    assert_eq!(
        http_get(
            up.source,
            "/admin/metadata?mount=/up&mode=updinfo&song=Relayed+Title",
            &[("Authorization", &auth)]
        )
        .status,
        200
    );
    // The relay: a mount with no encoder, pulling the upstream.
    let relay = ServerProcess::start(
        EXE,
        &format!("sourceMounts:\n  - key: studio\n    password: pw\n    fallback: {{ url: \"http://{}/up\" }}\nstreams:\n  - key: live\n    sourceMount: studio\n", up.listen),
    );
    assert!(relay.wait_metric_at_least(
        "streammachine_buffer_seconds{stream=\"live\"}",
        4.0,
        Duration::from_secs(10)
    ));
    let got = http_get(relay.listen, "/live?pump=3", &[]).body;
    assert!(from(&audio, &got), "the relay holds the upstream's audio");
    let st: serde_json::Value =
        serde_json::from_slice(&http_get(relay.listen, "/status-json.xsl", &[]).body).unwrap();
    assert_eq!(
        st["icestats"]["source"]["title"], "Relayed Title",
        "titles come along: {st}"
    );
    feeder.join().unwrap();
    // Bad URLs are refused with the field's path.
    let err = ServerProcess::try_start(
        EXE,
        "sourceMounts:\n  - key: m\n    password: pw\n    fallback: { url: \"ftp://x/y\" }\n",
        &[],
    )
    .expect_err("ftp is refused");
    assert!(
        err.contains("sourceMounts[0].fallback.url: only http:// and https:// URLs can be pulled"),
        "{err}"
    );
    let err = ServerProcess::try_start(
        EXE,
        "sourceMounts:\n  - key: m\n    password: pw\n    fallback: { url: \"http://x/y\", caFile: /ca.pem }\n",
        &[],
    )
    .expect_err("a CA file for plain HTTP is refused");
    assert!(
        err.contains("sourceMounts[0].fallback.caFile: only for an https:// url"),
        "{err}"
    );
}
