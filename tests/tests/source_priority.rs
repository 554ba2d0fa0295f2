//! Source priority (issue 12): a mount's `inputs` with a priority. An
//! ffmpeg "automation" plays a 440 Hz tone on the mount's own path; an
//! ffmpeg "studio" on the `studio` input (priority 10) takes over at once,
//! and the automation goes back on air when the studio leaves. A listener
//! connected throughout hears 440, 880, 440 Hz with no silence and no stall,
//! the titles of the source on air only, and HLS marks each change as a
//! discontinuity.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use streammachine_tests::*;

const EXE: &str = env!("CARGO_BIN_EXE_streammachine-under-test");

const MP3: [&str; 8] = [
    "-c:a",
    "libmp3lame",
    "-b:a",
    "128k",
    "-content_type",
    "audio/mpeg",
    "-f",
    "mp3",
];

const METAINT: usize = 8000;

fn wait_until(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Decodes MP3 to mono 16-bit PCM at 44.1 kHz with ffmpeg; (pcm, ffmpeg's errors).
fn decode(mp3: &[u8]) -> (Vec<i16>, String) {
    let mut child = Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-nostdin",
            "-v",
            "error",
            "-f",
            "mp3",
            "-i",
            "-",
        ])
        .args(["-ac", "1", "-ar", "44100", "-f", "s16le", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let data = mp3.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(&data);
    });
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    let pcm = out
        .stdout
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect();
    (pcm, String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Frequency of a window from its rising zero crossings, and its RMS.
fn pitch_and_level(w: &[i16]) -> (f64, f64) {
    let rising = w.windows(2).filter(|p| p[0] < 0 && p[1] >= 0).count();
    let rms = (w.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>() / w.len() as f64).sqrt();
    (rising as f64 * 44_100.0 / w.len() as f64, rms)
}

#[test]
fn the_studio_overrides_the_automation_and_hands_back_seamlessly() {
    require("ffmpeg");
    let server = ServerProcess::start(
        EXE,
        &format!(
            "admin: {{ token: t }}\nsourceMounts:\n  - key: main\n    password: auto\n    inputs: [{{ key: studio, password: studio, priority: 10 }}]\nstreams:\n  - key: radio\n    sourceMount: main\n    burstSeconds: 2\n    icyMetaInterval: {METAINT}\n    title: Station\n    hls: {{ segmentSeconds: 1 }}\n"
        ),
    );
    let sources = || -> Vec<serde_json::Value> {
        let r = http_get(
            server.admin,
            "/api/source-mounts/main",
            &[("Authorization", "Bearer t")],
        );
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        v["sources"].as_array().cloned().unwrap_or_default()
    };
    let on_air_priority = || {
        sources()
            .into_iter()
            .find(|s| s["active"] == true)
            .and_then(|s| s["priority"].as_i64())
    };
    let title = || -> String {
        let v: serde_json::Value =
            serde_json::from_slice(&http_get(server.listen, "/status-json.xsl", &[]).body).unwrap();
        v["icestats"]["source"]["title"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let set_title = |mount: &str, password: &str, song: &str| {
        use base64::Engine as _;
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("source:{password}"));
        let r = http_get(
            server.source,
            &format!("/admin/metadata?mount=/{mount}&mode=updinfo&song={song}"),
            &[("Authorization", &format!("Basic {auth}"))],
        );
        assert_eq!(r.status, 200, "{}", r.text());
    };
    let buffered = || {
        server
            .metric("streammachine_buffer_seconds{stream=\"radio\"}")
            .unwrap_or(0.0)
    };

    // The automation, on the mount's own path.
    let mut automation = ffmpeg_tone_source(
        &format!("icecast://source:auto@{}/main", server.source),
        440,
        120,
        "1",
        &MP3,
    );
    wait_until("the automation's audio", Duration::from_secs(15), || {
        buffered() >= 2.5
    });
    set_title("main", "auto", "Automation");
    assert_eq!(title(), "Automation");

    // A listener (ICY) from here to the end, noting its longest stall.
    let (mut s, st, _, rest) = request(server.listen, "GET", "/radio", &[("Icy-MetaData", "1")]);
    assert_eq!(st, 200);
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = Arc::clone(&stop);
    let listener = std::thread::spawn(move || {
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut wire = rest;
        let mut buf = vec![0u8; 16384];
        let mut last = Instant::now();
        let mut longest = Duration::ZERO;
        while !stopped.load(Ordering::Relaxed) {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    wire.extend_from_slice(&buf[..n]);
                    longest = longest.max(last.elapsed());
                    last = Instant::now();
                }
                Err(_) => {}
            }
        }
        (wire, longest)
    });
    let mark = buffered();
    wait_until("3 s of automation", Duration::from_secs(15), || {
        buffered() >= mark + 3.0
    });

    // The studio, on its input: first in line at once, on air at its first
    // chunk; its title replaces the automation's.
    let mut studio = ffmpeg_tone_source(
        &format!("icecast://source:studio@{}/studio", server.source),
        880,
        120,
        "1",
        &MP3,
    );
    wait_until("the studio on air", Duration::from_secs(10), || {
        on_air_priority() == Some(10) && sources().len() == 2
    });
    wait_until(
        "the automation's title off air",
        Duration::from_secs(10),
        || title() != "Automation",
    );
    set_title("studio", "studio", "Studio%20Live");
    assert_eq!(title(), "Studio Live");
    let mark = buffered();
    wait_until("5 s of studio", Duration::from_secs(15), || {
        buffered() >= mark + 5.0
    });

    // The studio leaves: the automation is back, with its own title.
    studio.kill().unwrap();
    studio.wait().unwrap();
    wait_until(
        "the automation back on air",
        Duration::from_secs(10),
        || on_air_priority() == Some(0) && sources().len() == 1,
    );
    wait_until(
        "the automation's title back",
        Duration::from_secs(10),
        || title() == "Automation",
    );
    let mark = buffered();
    wait_until("4 s of automation again", Duration::from_secs(15), || {
        buffered() >= mark + 4.0
    });
    stop.store(true, Ordering::Relaxed);
    let (wire, longest) = listener.join().unwrap();

    // HLS: each change of source is a discontinuity, the playlist is valid.
    let playlist = http_get(server.listen, "/radio.m3u8", &[]).text();
    hls_check::check_media(&playlist).unwrap_or_else(|e| panic!("{e}\n{playlist}"));
    let discontinuities = playlist
        .lines()
        .filter(|l| *l == "#EXT-X-DISCONTINUITY")
        .count();
    assert!(discontinuities >= 2, "{playlist}");
    automation.kill().unwrap();
    automation.wait().unwrap();

    // Titles, in order, as the listener got them.
    let (audio, titles) = strip_icy(&wire, METAINT);
    let mut seen: Vec<String> = Vec::new();
    for (_, t) in &titles {
        if seen.last() != Some(t) {
            seen.push(t.clone());
        }
    }
    let order: Vec<&str> = seen
        .iter()
        .map(String::as_str)
        .filter(|t| t.contains("Automation") || t.contains("Studio Live"))
        .collect();
    let expected = ["Automation", "Studio Live", "Automation"];
    assert!(
        order.len() == 3 && order.iter().zip(expected).all(|(t, e)| t.contains(e)),
        "titles {seen:?}"
    );

    // The audio: 440, then 880, then 440 Hz; never silent; never stalled.
    let (pcm, errors) = decode(&audio);
    assert!(errors.trim().is_empty(), "ffmpeg: {errors}");
    let window = 44_100 / 4;
    let mut runs: Vec<(u32, usize)> = Vec::new();
    let mut silent = 0;
    for w in pcm.chunks_exact(window) {
        let (hz, rms) = pitch_and_level(w);
        if rms < 500.0 {
            silent += 1;
            continue;
        }
        let tone = if (hz - 440.0).abs() < 30.0 {
            440
        } else if (hz - 880.0).abs() < 60.0 {
            880
        } else {
            0 // a window across a change of source
        };
        match runs.last_mut() {
            Some((t, n)) if *t == tone => *n += 1,
            _ => runs.push((tone, 1)),
        }
    }
    // Windows across a change are at most one each side of it.
    let tones: Vec<(u32, usize)> = runs.iter().copied().filter(|(t, _)| *t != 0).collect();
    let mixed: usize = runs.iter().filter(|(t, _)| *t == 0).map(|(_, n)| n).sum();
    assert_eq!(
        tones.iter().map(|(t, _)| *t).collect::<Vec<_>>(),
        [440, 880, 440],
        "{runs:?}"
    );
    assert!(
        tones[1].1 >= 16,
        "at least 4 s of studio (in 0.25 s windows): {runs:?}"
    );
    assert!(mixed <= 4, "{runs:?}");
    assert_eq!(silent, 0, "no silence: {runs:?}");
    assert!(
        longest < Duration::from_millis(2500),
        "the listener waited {longest:?} for audio at most"
    );
}
