//! The station's public pages (issue 13) in real Chromium, driven by
//! puppeteer-core (tests/web/pages.mjs; installed by test.sh with npm, using
//! the system `chromium`): the status page shows the stream and a title
//! change within 2 s; the rewind player plays live, plays from a minute back
//! (moved there with its position slider) with the title of then, and goes
//! back to live; both pass axe-core with no serious or critical violation,
//! weigh under 100 KB and make no request elsewhere. Screenshots are kept in
//! `target/screenshots/` (linked from the README).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::time::Duration;

use streamer::format::Codec;
use streammachine_tests::browser::chromium;
use streammachine_tests::*;

const EXE: &str = env!("CARGO_BIN_EXE_streammachine-under-test");

fn set_title(server: &ServerProcess, song: &str) {
    let r = http_get(
        server.source,
        &format!("/admin/metadata?mount=/live&mode=updinfo&song={song}"),
        &[("Authorization", "Basic c291cmNlOnB3")],
    );
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn the_status_page_and_the_rewind_player_work_in_chromium() {
    let exe = chromium();
    require("node");
    // puppeteer wants a path.
    let exe = if exe.contains('/') {
        exe
    } else {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {exe}"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let server = ServerProcess::start(
        EXE,
        "streams:\n  - key: live\n    password: pw\n    burstSeconds: 2\n",
    );
    // 90 s of audio at once (two programmes), then real time.
    // The 30 s fixture's frames six times over: three minutes.
    let one = fixture("mp3/mp3-44100-128-s.mp3");
    let once: Vec<u8> = frames_of(&one, Codec::Mp3)
        .iter()
        .flat_map(|&(o, l, _)| one[o..o + l].to_vec())
        .collect();
    let data = once.repeat(6);
    let frames = frames_of(&data, Codec::Mp3);
    let per_s = 44_100.0 / 1152.0;
    let cut = |s: f64| (s * per_s) as usize;
    let mut src = Source::connect(server.source, "live", "pw", SourceMethod::Ice, &[]).unwrap();
    let bytes = |a: usize, b: usize| data[frames[a].0..frames[b].0].to_vec();
    set_title(&server, "Early%20Programme");
    src.send(&bytes(0, cut(45.0))).unwrap();
    assert!(server.wait_metric_at_least(
        "streammachine_buffer_seconds{stream=\"live\"}",
        44.0,
        Duration::from_secs(10)
    ));
    set_title(&server, "Later%20Programme");
    src.send(&bytes(cut(45.0), cut(90.0))).unwrap();
    let rest: Vec<_> = frames[cut(90.0)..].to_vec();
    let d = data.clone();
    let feeder = std::thread::spawn(move || {
        let _ = src.send_realtime(&d, &rest, 44_100);
    });
    assert!(server.wait_metric_at_least(
        "streammachine_buffer_seconds{stream=\"live\"}",
        89.0,
        Duration::from_secs(10)
    ));

    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/screenshots");
    std::fs::create_dir_all(&out).unwrap();
    let cfg = serde_json::json!({
        "chromium": exe,
        "base": format!("http://{}", server.listen),
        "source": format!("http://{}", server.source),
        "auth": "Basic c291cmNlOnB3",
        "stream": "live",
        "out": out,
    });
    let run = std::process::Command::new("node")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/web/pages.mjs"))
        .arg(cfg.to_string())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&run.stdout);
    let r: serde_json::Value = serde_json::from_str(text.trim())
        .unwrap_or_else(|e| panic!("{e}: {text}\n{}", String::from_utf8_lossy(&run.stderr)));
    assert!(r["error"].is_null(), "{r:#}");
    // The status page.
    assert!(r["statusShown"].is_u64(), "{r:#}");
    assert_eq!(r["titleSet"], 200);
    let change = r["titleChangeMs"].as_u64().expect("the title change shown");
    assert!(change <= 2000, "title change shown after {change} ms");
    assert!(
        r["statusText"].as_str().unwrap().contains("listener"),
        "{r:#}"
    );
    // The player: live, a minute back (the title of then), live again.
    assert_eq!(r["liveAdvanced"], true, "{r:#}");
    assert_eq!(r["backAdvanced"], true, "{r:#}");
    let behind = r["backState"]["behind"].as_f64().unwrap();
    assert!((behind - 60.0).abs() < 1.0, "{r:#}");
    assert!(
        r["backState"]["src"]
            .as_str()
            .unwrap()
            .contains("/live?offset="),
        "{r:#}"
    );
    assert_eq!(r["backState"]["title"], "Early Programme", "{r:#}");
    assert_eq!(r["liveAgain"]["behind"], 0.0);
    assert!(r["liveAgain"]["src"].as_str().unwrap().ends_with("/live"));
    // Accessible, small, self-contained.
    for page in ["status", "player"] {
        assert_eq!(
            r[format!("{page}Violations")],
            serde_json::json!([]),
            "{page}: {r:#}"
        );
        let kb = r[format!("{page}Bytes")].as_u64().unwrap() / 1024;
        assert!(kb < 100, "{page}: {kb} KB");
        assert_eq!(
            r[format!("{page}External")],
            serde_json::json!([]),
            "{page}"
        );
    }
    assert!(out.join("status-page.png").exists() && out.join("player.png").exists());
    drop(server);
    let _ = feeder.join();
}
