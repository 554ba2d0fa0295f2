//! Listener outputs against the real server: offset, at, pump, burst, ICY,
//! playlists, status, metrics, slow and stuck listeners, a connection storm.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::io::Read;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use streamer::format::Codec;
use streammachine_tests::*;

const EXE: &str = env!("CARGO_BIN_EXE_streammachine-under-test");

/// One frame of MPEG-1 Layer III at 44.1 kHz, in µs.
const FRAME_US: f64 = 1152.0 / 44100.0 * 1e6;

fn config(extra: &str) -> String {
    format!(
        "streams:\n  - key: test\n    password: pw\n    rewindSeconds: 3600\n    burstSeconds: 2\n    title: Station\n{extra}"
    )
}

/// Sends a whole fixture as fast as possible and disconnects; waits until the
/// buffer holds all of it.
fn fill(server: &ServerProcess, data: &[u8]) {
    let mut src = Source::connect(server.source, "test", "pw", SourceMethod::Ice, &[]).unwrap();
    src.send(data).unwrap();
    drop(src);
    assert!(
        server.wait_metric(
            "streammachine_source_connected{mount=\"test\"}",
            0.0,
            Duration::from_secs(10)
        ),
        "source did not finish"
    );
}

/// Frames needed to cover `secs` seconds.
fn frames_for(secs: f64) -> usize {
    (secs * 1e6 / FRAME_US).ceil() as usize
}

#[test]
fn offset_serves_exactly_the_frames_received_that_long_ago() {
    let server = ServerProcess::start(EXE, &config(""));
    let data = fixture("mp3/mp3-44100-128-s.mp3");
    let frames = frames_of(&data, Codec::Mp3);
    fill(&server, &data);
    for offset in [10.0, 2.5, 29.0] {
        let (mut s, status, headers, rest) =
            request(server.listen, "GET", &format!("/test?offset={offset}"), &[]);
        assert_eq!(status, 200);
        assert!(headers
            .iter()
            .any(|(n, v)| n == "x-start-time" && v.ends_with('Z')));
        s.set_read_timeout(Some(Duration::from_millis(700)))
            .unwrap();
        let got = read_n(&mut s, rest, usize::MAX, Duration::from_secs(3));
        let k = frames_for(offset);
        let (start, _, _) = frames[frames.len() - k];
        let expected: Vec<u8> = frames[frames.len() - k..]
            .iter()
            .flat_map(|&(o, l, _)| data[o..o + l].iter().copied())
            .collect();
        assert_eq!(
            got.len(),
            expected.len(),
            "offset {offset}: {k} frames from byte {start}"
        );
        assert!(got == expected, "offset {offset}: bytes differ");
    }
    // Far beyond the buffer: starts at the oldest audio (the whole file).
    let (mut s, _, _, rest) = request(server.listen, "GET", "/test?offset=99999", &[]);
    s.set_read_timeout(Some(Duration::from_millis(700)))
        .unwrap();
    let got = read_n(&mut s, rest, usize::MAX, Duration::from_secs(3));
    assert!(
        got == audio_of(&data, Codec::Mp3),
        "the whole file from the oldest audio"
    );
}

#[test]
fn pump_returns_exactly_the_requested_span_and_ends() {
    require("ffprobe");
    let server = ServerProcess::start(EXE, &config(""));
    let data = fixture("mp3/mp3-44100-128-s.mp3");
    let frames = frames_of(&data, Codec::Mp3);
    fill(&server, &data);
    let started = Instant::now();
    let resp = http_get(server.listen, "/test?pump=5&offset=20", &[]);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "a pump is not paced"
    );
    assert_eq!(resp.status, 200);
    let first = frames.len() - frames_for(20.0);
    let span = &frames[first..first + frames_for(5.0)];
    let expected: Vec<u8> = span
        .iter()
        .flat_map(|&(o, l, _)| data[o..o + l].iter().copied())
        .collect();
    assert_eq!(
        resp.header("content-length"),
        Some(expected.len().to_string().as_str())
    );
    assert_eq!(resp.body.len(), expected.len());
    assert!(resp.body == expected);
    // The original's `from` works too, and pump alone is the last N seconds.
    let resp = http_get(server.listen, "/test?pump=3", &[]);
    let tail = &frames[frames.len() - frames_for(3.0)..];
    let expected: Vec<u8> = tail
        .iter()
        .flat_map(|&(o, l, _)| data[o..o + l].iter().copied())
        .collect();
    assert!(resp.body == expected);
    // ffprobe agrees on the duration.
    let dir = scratch_dir("pump");
    let f = dir.join("pump.mp3");
    std::fs::write(&f, &resp.body).unwrap();
    let d = ffprobe_duration(&f);
    assert!(
        (3.0..3.0 + 2.0 * FRAME_US / 1e6).contains(&d),
        "ffprobe says {d} s"
    );
    assert_eq!(ffmpeg_decode_errors(&f), "");
}

#[test]
fn at_starts_at_a_wall_clock_time() {
    let server = ServerProcess::start(EXE, &config(""));
    let data = fixture("mp3/tone440Hz-44100-128-m.mp3");
    let frames = frames_of(&data, Codec::Mp3);
    let mut src = Source::connect(server.source, "test", "pw", SourceMethod::Ice, &[]).unwrap();
    let sent_at = src.send_realtime(&data, &frames, 44_100).unwrap();
    drop(src);
    assert!(server.wait_metric(
        "streammachine_source_connected{mount=\"test\"}",
        0.0,
        Duration::from_secs(10)
    ));
    let audio = audio_of(&data, Codec::Mp3);
    for k in [40usize, 100, 150] {
        let at = sent_at[k] as f64 / 1e6;
        let (mut s, status, headers, rest) =
            request(server.listen, "GET", &format!("/test?at={at:.6}"), &[]);
        assert_eq!(status, 200);
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let got = read_n(&mut s, rest, usize::MAX, Duration::from_secs(2));
        // Locate the start among the frames.
        let start = audio.len() - got.len();
        assert_eq!(
            &audio[start..],
            &got[..],
            "a run of whole frames up to the end"
        );
        let mut acc = 0;
        let idx = frames.iter().position(|&(_, l, _)| {
            let here = acc == start;
            acc += l;
            here
        });
        let idx = idx.expect("starts on a frame boundary");
        assert!(
            idx.abs_diff(k) <= 10, // 10 frames = 0.26 s: the server stamps chunks as they complete, and a loaded machine delays that
            "at frame {k}'s send time the stream started at frame {idx}"
        );
        let t = headers
            .iter()
            .find(|(n, _)| n == "x-start-time")
            .map(|(_, v)| v.clone());
        assert!(t.is_some_and(|t| t.starts_with("20")));
    }
    // RFC 3339 works; a time before the buffer starts at the oldest audio.
    let resp = http_get(server.listen, "/test?pump=1&at=2000-01-01T00:00:00Z", &[]);
    assert_eq!(resp.status, 200);
    assert!(audio.starts_with(&resp.body));
    // Times in the future and garbage are refused with a reason.
    let resp = http_get(server.listen, "/test?at=2999-01-01T00:00:00Z", &[]);
    assert_eq!(resp.status, 400);
    assert!(resp.text().contains("in the future"));
    let resp = http_get(server.listen, "/test?at=noon", &[]);
    assert_eq!(resp.status, 400);
    assert!(resp.text().contains("RFC 3339"));
}

/// Sends `frames` of `data` in real time in a background thread.
fn realtime_source(
    server: &ServerProcess,
    data: Vec<u8>,
    frames: Vec<(usize, usize, u32)>,
) -> std::thread::JoinHandle<()> {
    let addr = server.source;
    std::thread::spawn(move || {
        let mut src = Source::connect(addr, "test", "pw", SourceMethod::Ice, &[]).unwrap();
        src.send_realtime(&data, &frames, 44_100).unwrap();
    })
}

#[test]
fn burst_and_live_join_without_gap_or_duplicate_and_icy_blocks_are_exact() {
    let server = ServerProcess::start(EXE, &config("    icyMetaInterval: 1000\n"));
    let data = fixture("mp3/mp3-44100-128-s.mp3");
    let all = frames_of(&data, Codec::Mp3);
    let frames: Vec<_> = all[..frames_for(7.0)].to_vec();
    let audio: Vec<u8> = frames
        .iter()
        .flat_map(|&(o, l, _)| data[o..o + l].iter().copied())
        .collect();
    let feeder = realtime_source(&server, data.clone(), frames.clone());
    std::thread::sleep(Duration::from_secs(3));
    let (mut raw, status, _, raw_rest) = request(server.listen, "GET", "/test", &[]);
    assert_eq!(status, 200);
    let (mut icy, status, headers, icy_rest) =
        request(server.listen, "GET", "/test", &[("Icy-MetaData", "1")]);
    assert_eq!(status, 200);
    assert!(headers
        .iter()
        .any(|(n, v)| n == "icy-metaint" && v == "1000"));
    std::thread::sleep(Duration::from_millis(1500));
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode("source:pw");
    let resp = http_get(
        server.source,
        "/admin/metadata?mount=/test&mode=updinfo&song=Don%27t+Stop+%E2%80%94+Caf%C3%A9",
        &[("Authorization", &format!("Basic {auth}"))],
    );
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert!(resp.text().contains("<return>1</return>"));
    feeder.join().unwrap();
    for s in [&mut raw, &mut icy] {
        s.set_read_timeout(Some(Duration::from_millis(600)))
            .unwrap();
    }
    let got = read_n(&mut raw, raw_rest, usize::MAX, Duration::from_secs(4));
    let wire = read_n(&mut icy, icy_rest, usize::MAX, Duration::from_secs(4));
    // Raw: one contiguous run of the source's frames: the burst (>= 2 s back from
    // the join) and then every live byte, no chunk skipped, nothing twice.
    let at = find(&audio, &got[..4096]).expect("listener bytes come from the source");
    assert!(got.len() > 100_000, "got {} bytes", got.len());
    assert!(
        audio[at..].starts_with(&got),
        "raw listener: gap or duplicate"
    );
    // The source's last complete chunk is the end (the partial one was flushed when it left).
    assert_eq!(at + got.len(), audio.len());
    // ICY: strip_icy checks every block sits exactly 1000 audio bytes after the last.
    let (icy_audio, metas) = strip_icy(&wire, 1000);
    let at = find(&audio, &icy_audio[..4096]).expect("icy audio comes from the source");
    assert!(
        audio[at..].starts_with(&icy_audio),
        "icy listener: gap or duplicate"
    );
    assert_eq!(at + icy_audio.len(), audio.len());
    assert_eq!(
        metas[0],
        (1000, "StreamTitle='Station';".to_string()),
        "first block: the current title"
    );
    let new: Vec<_> = metas.iter().filter(|(_, t)| t.contains("Caf")).collect();
    assert_eq!(
        new.len(),
        1,
        "a title is sent once, when it changes: {metas:?}"
    );
    assert_eq!(new[0].1, "StreamTitle='Don't Stop — Café';");
    assert_eq!(metas.len(), 2, "{metas:?}");
}

#[test]
fn routes_headers_playlists_status_and_metrics() {
    let server = ServerProcess::start(
        EXE,
        "streams:\n  - key: test\n    password: pw\n    name: Test FM\n    genre: Jazz\n  - key: aacs\n    format: aac\n    password: pw2\n",
    );
    // No source yet: status lists nothing, Icecast-style.
    let st: serde_json::Value =
        serde_json::from_slice(&http_get(server.listen, "/status-json.xsl", &[]).body).unwrap();
    assert!(st["icestats"].get("source").is_none());
    let data = fixture("mp3/mp3-44100-64-s.mp3");
    let mut src = Source::connect(
        server.source,
        "test",
        "pw",
        SourceMethod::Ice,
        &[
            ("ice-name", "Ignored Name"),
            ("ice-description", "desc"),
            ("ice-genre", "Ignored Genre"),
            ("ice-url", "https://radio.example/"),
            ("ice-audio-info", "bitrate=64;channels=2;samplerate=44100"),
        ],
    )
    .unwrap();
    src.send(&data).unwrap();
    assert!(server.wait_metric_at_least(
        "streammachine_buffer_seconds{stream=\"test\"}",
        29.0,
        Duration::from_secs(5)
    ));

    let head = http_call(server.listen, "HEAD", "/test", &[]);
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-type"), Some("audio/mpeg"));
    assert_eq!(
        head.header("icy-name"),
        Some("Test FM"),
        "config wins over ice-name"
    );
    assert_eq!(head.header("icy-genre"), Some("Jazz"));
    assert_eq!(
        head.header("icy-description"),
        Some("desc"),
        "ice-* fills what config leaves open"
    );
    assert_eq!(head.header("icy-br"), Some("64"));
    assert_eq!(head.header("icy-url"), Some("https://radio.example/"));
    assert_eq!(head.header("access-control-allow-origin"), Some("*"));
    assert!(head.body.is_empty());
    assert_eq!(
        http_call(server.listen, "HEAD", "/aacs", &[]).header("content-type"),
        Some("audio/aac")
    );

    let pls = http_get(server.listen, "/test.pls", &[]);
    assert_eq!(pls.header("content-type"), Some("audio/x-scpls"));
    assert!(
        pls.text()
            .contains(&format!("File1=http://{}/test\n", server.listen)),
        "{}",
        pls.text()
    );
    let m3u = http_get(server.listen, "/test.m3u", &[]);
    assert_eq!(
        m3u.text(),
        format!(
            "#EXTM3U\n#EXTINF:-1,Test FM\nhttp://{}/test\n",
            server.listen
        )
    );

    let opt = http_call(
        server.listen,
        "OPTIONS",
        "/test",
        &[
            ("Origin", "https://player.example"),
            ("Access-Control-Request-Headers", "icy-metadata"),
        ],
    );
    assert_eq!(opt.status, 204);
    assert!(opt
        .header("access-control-allow-headers")
        .unwrap()
        .contains("Icy-MetaData"));

    let st: serde_json::Value =
        serde_json::from_slice(&http_get(server.listen, "/status-json.xsl", &[]).body).unwrap();
    let s = &st["icestats"]["source"];
    assert!(
        s.is_object(),
        "one source is an object, as in Icecast: {st}"
    );
    assert_eq!(s["server_name"], "Test FM");
    // What the source said, where the config leaves it open.
    assert_eq!(s["server_description"], "desc");
    assert_eq!(s["genre"], "Jazz", "config wins over ice-genre");
    assert_eq!(s["server_url"], "https://radio.example/");
    assert_eq!(s["audio_info"], "bitrate=64;channels=2;samplerate=44100");
    assert_eq!(s["bitrate"], 64);
    assert_eq!(s["samplerate"], 44100);
    assert_eq!(s["server_type"], "audio/mpeg");
    assert_eq!(s["listenurl"], format!("http://{}/test", server.listen));
    assert!(s.get("dummy").is_some());
    assert!(st["icestats"]["server_id"]
        .as_str()
        .unwrap()
        .starts_with("StreamMachine"));

    assert_eq!(http_get(server.listen, "/healthz", &[]).status, 200);
    assert_eq!(http_get(server.listen, "/readyz", &[]).status, 200);
    assert_eq!(http_get(server.admin, "/readyz", &[]).status, 200);
    let nf = http_get(server.listen, "/nope", &[]);
    assert_eq!(nf.status, 404);
    assert!(nf.text().contains("no stream named \"nope\""));
    let bad = http_get(server.listen, "/test?offset=abc", &[]);
    assert_eq!(bad.status, 400);
    assert!(bad.text().contains("offset=\"abc\""));
    let m3u8 = http_get(server.listen, "/test.m3u8", &[]);
    assert_eq!(m3u8.status, 200);
    assert_eq!(
        m3u8.header("content-type"),
        Some("application/vnd.apple.mpegurl")
    );
    assert_eq!(http_call(server.listen, "POST", "/test", &[]).status, 405);
    assert_eq!(http_get(server.admin, "/nothing", &[]).status, 404);
    // An empty stream answers a positioned request with 503 and a reason.
    let empty = http_get(server.listen, "/aacs?pump=5", &[]);
    assert_eq!(empty.status, 503);
    assert!(empty.text().contains("no audio"));

    // Keep-alive for short responses: two requests on one connection.
    {
        use std::io::Write;
        let mut c = TcpStream::connect(server.listen).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /test.m3u HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        let mut all = String::new();
        c.read_to_string(&mut all).unwrap();
        assert_eq!(all.matches("HTTP/1.1 200 OK").count(), 2, "{all}");
    }

    // `Icy-MetaData: 0` is a raw listener: no metaint, nothing but audio.
    let raw = http_get(server.listen, "/test?pump=3", &[("Icy-MetaData", "0")]);
    assert_eq!(raw.status, 200);
    assert_eq!(raw.header("icy-metaint"), None);
    assert!(raw.body.len() > 20_000, "{} bytes", raw.body.len());
    assert!(
        find(&audio_of(&data, Codec::Mp3), &raw.body).is_some(),
        "exactly the source's audio, no metadata blocks"
    );

    // Metrics: the exposition passes promtool and has what we just did.
    assert_eq!(http_get(server.listen, "/test?pump=1", &[]).status, 200);
    let metrics = http_get(server.admin, "/metrics", &[]).text();
    assert!(metrics.contains("streammachine_source_connected{mount=\"test\"} 1"));
    assert!(metrics.contains("streammachine_buffer_bytes{stream=\"test\"}"));
    assert!(metrics
        .contains("streammachine_listener_connections_total{output=\"pump\",stream=\"test\"} 2"));
    // Listening time is counted without any analytics configured.
    assert!(
        server
            .metric("streammachine_listening_seconds_total{output=\"pump\",stream=\"test\"}")
            .is_some_and(|v| v > 0.0),
        "{metrics}"
    );
    let dir = scratch_dir("metrics");
    let f = dir.join("metrics.txt");
    std::fs::write(&f, &metrics).unwrap();
    let out = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(&f).unwrap())
        .output()
        .expect("promtool is required (Debian package prometheus; .ci/run installs it)");
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "",
        "promtool lint findings"
    );
    drop(src);
}

#[test]
fn a_listener_that_never_reads_is_cut_off_and_others_keep_going() {
    let server = ServerProcess::start(EXE, &config("    maxBufferBytes: 65536\n"));
    let data = fixture("mp3/mp3-44100-128-s.mp3");
    let frames = frames_of(&data, Codec::Mp3);
    // What the source sends: 200 frames, then the rest of the file three times.
    let mut sent: Vec<(usize, usize, u32)> = frames[..200].to_vec();
    for _ in 0..3 {
        sent.extend_from_slice(&frames[200..]);
    }
    let expected: Vec<u8> = sent
        .iter()
        .flat_map(|&(o, l, _)| data[o..o + l].iter().copied())
        .collect();
    let mut src = Source::connect(server.source, "test", "pw", SourceMethod::Ice, &[]).unwrap();
    src.send(&data[..frames[200].0]).unwrap();
    // The stuck one: a tiny receive window, and it never reads.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let stuck = rt.block_on(async {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.set_recv_buffer_size(4096).unwrap();
        let mut s = sock.connect(server.listen).await.unwrap();
        use tokio::io::AsyncWriteExt;
        s.write_all(b"GET /test HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        s
    });
    // The good one reads everything, concurrently.
    let listen = server.listen;
    let reader = std::thread::spawn(move || {
        let (mut s, status, _, rest) = request(listen, "GET", "/test", &[]);
        assert_eq!(status, 200);
        s.set_read_timeout(Some(Duration::from_millis(1500)))
            .unwrap();
        read_n(&mut s, rest, usize::MAX, Duration::from_secs(60))
    });
    std::thread::sleep(Duration::from_millis(300));
    // Feed the rest at 40x real time, frame by frame.
    let start = Instant::now();
    let mut samples = 0u64;
    for &(o, l, s) in &sent[200..] {
        let due = Duration::from_micros(samples * 1_000_000 / 44_100 / 40);
        if let Some(w) = due.checked_sub(start.elapsed()) {
            std::thread::sleep(w);
        }
        src.send(&data[o..o + l]).unwrap();
        samples += u64::from(s);
    }
    drop(src);
    let got = reader.join().unwrap();
    let at = find(&expected, &got[..4096]).unwrap();
    assert!(
        expected[at..].starts_with(&got),
        "the reading listener got a contiguous stream"
    );
    assert_eq!(at + got.len(), expected.len(), "and all of it");
    assert!(
        server.wait_metric(
            "streammachine_listener_disconnections_total{reason=\"too_slow\",stream=\"test\"}",
            1.0,
            Duration::from_secs(10)
        ),
        "the stuck listener was not cut off"
    );
    let lines = server.log_lines("too slow");
    assert_eq!(lines.len(), 1, "logged once: {lines:?}");
    drop(stuck);
}

#[test]
fn a_storm_of_1000_listeners_all_get_audio() {
    let server = ServerProcess::start(EXE, &config(""));
    let data = fixture("mp3/mp3-44100-64-s.mp3");
    let mut src = Source::connect(server.source, "test", "pw", SourceMethod::Ice, &[]).unwrap();
    src.send(&data).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let addr = server.listen;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let socks = rt.block_on(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let tasks: Vec<_> = (0..1000)
            .map(|_| {
                tokio::spawn(async move {
                    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
                    s.write_all(b"GET /test HTTP/1.1\r\nHost: x\r\n\r\n")
                        .await
                        .unwrap();
                    let mut buf = vec![0u8; 16 * 1024];
                    let mut got = Vec::new();
                    while find(&got, b"\r\n\r\n").is_none_or(|i| got.len() < i + 4 + 1000) {
                        let n = s.read(&mut buf).await.unwrap();
                        assert!(n > 0, "closed early");
                        got.extend_from_slice(&buf[..n]);
                    }
                    assert!(got.starts_with(b"HTTP/1.1 200 OK\r\n"));
                    s
                })
            })
            .collect();
        let mut socks = Vec::new();
        for t in tasks {
            socks.push(
                tokio::time::timeout(Duration::from_secs(60), t)
                    .await
                    .expect("listener timed out")
                    .unwrap(),
            );
        }
        socks
    });
    assert_eq!(socks.len(), 1000);
    assert!(server.wait_metric(
        "streammachine_listeners{output=\"raw\",stream=\"test\"}",
        1000.0,
        Duration::from_secs(5)
    ));
    drop(socks);
    assert!(server.wait_metric(
        "streammachine_listeners{output=\"raw\",stream=\"test\"}",
        0.0,
        Duration::from_secs(15)
    ));
    drop(src);
}

#[test]
fn a_listener_that_comes_before_any_audio_waits_and_then_plays() {
    let server = ServerProcess::start(EXE, &config(""));
    let (mut s, status, headers, rest) = request(server.listen, "GET", "/test", &[]);
    assert_eq!(status, 200);
    assert!(headers
        .iter()
        .any(|(n, v)| n == "content-type" && v == "audio/mpeg"));
    assert!(rest.is_empty(), "no audio yet");
    let data = fixture("mp3/tone250Hz-44100-128-m.mp3");
    let mut src = Source::connect(server.source, "test", "pw", SourceMethod::Ice, &[]).unwrap();
    src.send(&data).unwrap();
    drop(src);
    s.set_read_timeout(Some(Duration::from_millis(800)))
        .unwrap();
    let got = read_n(&mut s, rest, usize::MAX, Duration::from_secs(5));
    assert_eq!(
        got,
        audio_of(&data, Codec::Mp3),
        "everything, from the first frame"
    );
    // A listener that leaves while there is no audio is noticed at once.
    let (s2, _, _, _) = request(server.listen, "GET", "/test", &[]);
    assert!(server.wait_metric(
        "streammachine_listeners{output=\"raw\",stream=\"test\"}",
        2.0,
        Duration::from_secs(5)
    ));
    drop(s2);
    assert!(server.wait_metric(
        "streammachine_listeners{output=\"raw\",stream=\"test\"}",
        1.0,
        Duration::from_secs(5)
    ));
}

/// Issue 10 (4): every port holds at most its budget and answers the next
/// connection at once with 503 and the reason; connected listeners go on, and
/// the admin port answers /healthz promptly while the listener port is full.
#[test]
fn each_port_refuses_cleanly_beyond_its_budget() {
    let server = ServerProcess::start(
        EXE,
        "listeners: { maxConnections: 20 }\nsources: { maxConnections: 2 }\nstreams:\n  - key: test\n    password: pw\n",
    );
    let data = fixture("mp3/mp3-44100-128-s.mp3");
    let mut src = Source::connect(server.source, "test", "pw", SourceMethod::Ice, &[]).unwrap();
    src.send(&data[..data.len() / 2]).unwrap();
    let held: Vec<_> = (0..20)
        .map(|_| {
            let (s, st, _, _) = request(server.listen, "GET", "/test", &[]);
            assert_eq!(st, 200);
            s
        })
        .collect();
    assert!(server.wait_metric(
        "streammachine_listeners{output=\"raw\",stream=\"test\"}",
        20.0,
        Duration::from_secs(5)
    ));
    let refused = http_get(server.listen, "/test", &[]);
    assert_eq!(refused.status, 503);
    assert!(refused.text().contains("limit of 20"), "{}", refused.text());
    assert_eq!(refused.header("retry-after"), Some("5"));
    let mut slowest = Duration::ZERO;
    for _ in 0..20 {
        let t = std::time::Instant::now();
        assert_eq!(http_get(server.admin, "/healthz", &[]).status, 200);
        slowest = slowest.max(t.elapsed());
    }
    println!("/healthz with the listener port at its cap: slowest of 20 in {slowest:?}");
    // The source port: one on air, one waiting, the third refused.
    let _waiting = Source::connect(server.source, "test", "pw", SourceMethod::Ice, &[]).unwrap();
    let third = Source::connect(server.source, "test", "pw", SourceMethod::Ice, &[]).unwrap_err();
    assert!(
        third.contains(" 503 ") && third.contains("limit of 2"),
        "{third}"
    );
    assert_eq!(
        server.metric("streammachine_connections_refused_total{port=\"listener\"}"),
        Some(1.0)
    );
    // A listener that leaves frees its place.
    drop(held);
    assert!(server.wait_metric(
        "streammachine_listeners{output=\"raw\",stream=\"test\"}",
        0.0,
        Duration::from_secs(5)
    ));
    assert_eq!(http_call(server.listen, "HEAD", "/test", &[]).status, 200);
}

/// Issue 12: a stream's `maxListeners` and the server's
/// `listeners.maxListeners` turn the next listener away with `503` and
/// `Retry-After`, leave the connected ones playing, and free up when one
/// leaves.
#[test]
fn listener_limits_turn_the_next_away_and_free_up_when_one_leaves() {
    let server = ServerProcess::start(
        EXE,
        "listeners: { maxListeners: 3 }\nstreams:\n  - key: test\n    password: pw\n    maxListeners: 2\n    hls: { segmentSeconds: 1 }\n  - key: other\n    password: pw\n",
    );
    let data = fixture("mp3/mp3-44100-128-s.mp3");
    server.send_source("other", "pw", &data[..200_000]);
    // A live source on `test`, so a listener that leaves is noticed at the
    // next write.
    let frames = frames_of(&data, Codec::Mp3);
    let _source = realtime_source(&server, data.clone(), frames[..frames_for(25.0)].to_vec());
    assert!(server.wait_metric_at_least(
        "streammachine_buffer_seconds{stream=\"test\"}",
        1.0,
        Duration::from_secs(10)
    ));
    let listen = |path: &str| request(server.listen, "GET", path, &[]);
    let (mut first, s1, _, _) = listen("/test");
    let (second, s2, _, _) = listen("/test");
    assert_eq!((s1, s2), (200, 200));
    assert!(server.wait_metric(
        "streammachine_listeners{output=\"raw\",stream=\"test\"}",
        2.0,
        Duration::from_secs(5)
    ));
    // The stream's limit.
    let (mut third, s3, headers, rest) = listen("/test");
    let body = read_to_close(&mut third, rest);
    assert_eq!(s3, 503);
    assert!(
        headers
            .iter()
            .any(|(k, v)| k.eq_ignore_ascii_case("retry-after") && v == "30"),
        "{headers:?}"
    );
    assert!(String::from_utf8_lossy(&body).contains("maxListeners"));
    // The server's: a third listener in all, then none.
    let (_other, s4, _, _) = listen("/other");
    assert_eq!(s4, 200);
    assert!(server.wait_metric(
        "streammachine_listeners{output=\"raw\",stream=\"other\"}",
        1.0,
        Duration::from_secs(5)
    ));
    let (mut fifth, s5, _, rest) = listen("/other");
    let body = read_to_close(&mut fifth, rest);
    assert_eq!(s5, 503);
    assert!(String::from_utf8_lossy(&body).contains("listeners.maxListeners"));
    // Those connected still get audio.
    first
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 4096];
    assert!(first.read(&mut buf).unwrap() > 0);
    assert_eq!(
        server.metric("streammachine_listeners_refused_total{limit=\"stream\",stream=\"test\"}"),
        Some(1.0)
    );
    assert_eq!(
        server.metric("streammachine_listeners_refused_total{limit=\"server\",stream=\"other\"}"),
        Some(1.0)
    );
    // One leaves: the next gets in.
    drop(second);
    assert!(server.wait_metric(
        "streammachine_listeners{output=\"raw\",stream=\"test\"}",
        1.0,
        Duration::from_secs(15)
    ));
    let (again, s6, _, _) = listen("/test");
    assert_eq!(s6, 200);
    // HLS sessions count too: a new one is turned away while the stream is
    // full…
    let player = |ua: &str| http_get(server.listen, "/test.m3u8", &[("User-Agent", ua)]);
    assert_eq!(player("Player A").status, 503);
    // …and takes a place once one is free; while it listens (fetches
    // segments) it holds that place and goes on.
    drop(again);
    assert!(server.wait_metric(
        "streammachine_listeners{output=\"raw\",stream=\"test\"}",
        1.0,
        Duration::from_secs(15)
    ));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let seg = loop {
        let a = player("Player A");
        assert_eq!(a.status, 200, "{}", a.text());
        if let Some(seg) = a.text().lines().find(|l| l.starts_with("test/seg/")) {
            break seg.to_string();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no segment in {}",
            a.text()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(
        http_get(
            server.listen,
            &format!("/{seg}"),
            &[("User-Agent", "Player A")]
        )
        .status,
        200
    );
    assert_eq!(
        player("Player A").status,
        200,
        "a listening session goes on"
    );
    assert_eq!(player("Player B").status, 503, "a new one: full");
    assert_eq!(listen("/test").1, 503, "a connection too");
}

/// Issue 12: `listeners.deny` (addresses and networks) gets a 403 on every
/// listener request, audio and HLS alike; other addresses are served.
#[test]
fn denied_addresses_get_403_on_every_listener_request() {
    let server = ServerProcess::start(
        EXE,
        &format!(
            "listeners: {{ deny: [127.0.0.2, 127.0.1.0/24] }}\n{}",
            config("")
        ),
    );
    let data = fixture("mp3/mp3-44100-128-s.mp3");
    fill(&server, &data[..200_000]);
    let get_from = |ip: &str, path: &str| -> (u16, String) {
        let mut s = connect_from(Some(ip.parse().unwrap()), server.listen);
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        std::io::Write::write_all(
            &mut s,
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .unwrap();
        let (status, _, rest) = read_head(&mut s);
        let body = if status == 200 {
            String::new()
        } else {
            String::from_utf8_lossy(&read_to_close(&mut s, rest)).into_owned()
        };
        (status, body)
    };
    for ip in ["127.0.0.2", "127.0.1.9"] {
        for path in ["/test", "/test.m3u8", "/status-json.xsl"] {
            let (status, body) = get_from(ip, path);
            assert_eq!(status, 403, "{ip} {path}");
            assert!(body.contains("may not listen"), "{body}");
        }
    }
    assert_eq!(get_from("127.0.0.1", "/test").0, 200);
    assert_eq!(get_from("127.0.0.3", "/test.m3u8").0, 200);
    assert_eq!(
        server.metric("streammachine_listeners_refused_total{limit=\"denied\",stream=\"test\"}"),
        Some(4.0)
    );
}
