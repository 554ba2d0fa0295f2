//! The source side against the real server: ffmpeg as the encoder, the
//! Icecast handshake variants, bad input, stalls, failover, title updates.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use streamer::format::Codec;
use streammachine_tests::*;

const EXE: &str = env!("CARGO_BIN_EXE_streammachine-under-test");

fn basic(password: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("source:{password}"))
    )
}

/// Reads a listener for `secs` and writes what it got to a file.
fn capture(
    server: &ServerProcess,
    path: &str,
    headers: &[(&str, &str)],
    bytes: usize,
) -> (Vec<(String, String)>, Vec<u8>) {
    let (mut s, status, headers, rest) = request(server.listen, "GET", path, headers);
    assert_eq!(status, 200, "{path}");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let body = read_n(&mut s, rest, bytes, Duration::from_secs(20));
    assert!(
        body.len() >= bytes.min(1),
        "{path}: got {} bytes",
        body.len()
    );
    (headers, body)
}

/// Decodes a capture with ffmpeg, which must report no error. A capture ends
/// wherever the test stopped reading, so the partial frame at its end is cut
/// off first (nothing else is touched).
fn decode_clean(tag: &str, body: &[u8], codec: Codec) -> f64 {
    let frames = frames_of(body, codec);
    let &(o, l, _) = frames.last().expect("no frame in the capture");
    let body = &body[..o + l];
    let dir = scratch_dir(tag);
    let f = dir.join(format!("{tag}.bin"));
    std::fs::write(&f, body).unwrap();
    let errors = ffmpeg_decode_errors(&f);
    assert_eq!(errors, "", "{tag}: ffmpeg could not decode what we served");
    ffprobe_duration(&f)
}

fn ffmpeg_roundtrip(
    format_name: &str,
    fixture_name: &str,
    ffmpeg_args: &[&str],
    bytes_per_sec: usize,
) {
    require("ffmpeg");
    let codec = if format_name == "aac" {
        Codec::Aac
    } else {
        Codec::Mp3
    };
    let server = ServerProcess::start(
        EXE,
        &format!("streams:\n  - key: live\n    format: {format_name}\n    password: pw\n    burstSeconds: 1\n    icyMetaInterval: 8000\n"),
    );
    let url = format!("icecast://source:pw@{}/live", server.source);
    let mut ff = ffmpeg_source(&fixture_path(fixture_name), ffmpeg_args, &url);
    assert!(
        server.wait_metric_at_least(
            "streammachine_buffer_seconds{stream=\"live\"}",
            4.0,
            Duration::from_secs(20)
        ),
        "ffmpeg did not get audio in: {:?}",
        server.logs()
    );
    // Raw, ICY (metadata stripped), offset, at and pump: each must decode cleanly.
    let (_, raw) = capture(&server, "/live", &[], 3 * bytes_per_sec);
    let d = decode_clean(&format!("{format_name}-raw"), &raw, codec);
    assert!(d > 2.0, "raw: {d} s");
    let (h, wire) = capture(
        &server,
        "/live",
        &[("Icy-MetaData", "1")],
        3 * bytes_per_sec,
    );
    assert!(h.iter().any(|(n, v)| n == "icy-metaint" && v == "8000"));
    let (icy_audio, _) = strip_icy(&wire, 8000);
    decode_clean(&format!("{format_name}-icy"), &icy_audio, codec);
    let (_, off) = capture(&server, "/live?offset=3", &[], 2 * bytes_per_sec);
    decode_clean(&format!("{format_name}-offset"), &off, codec);
    let at = (now_micros() as f64 / 1e6) - 3.0;
    let (_, at_body) = capture(&server, &format!("/live?at={at}"), &[], 2 * bytes_per_sec);
    decode_clean(&format!("{format_name}-at"), &at_body, codec);
    let pump = http_get(server.listen, "/live?pump=2&offset=3", &[]);
    assert_eq!(pump.status, 200);
    assert_eq!(
        pump.header("content-length")
            .unwrap()
            .parse::<usize>()
            .unwrap(),
        pump.body.len()
    );
    let d = decode_clean(&format!("{format_name}-pump"), &pump.body, codec);
    assert!((1.9..2.2).contains(&d), "pump of 2 s decoded to {d} s");
    let _ = ff.kill();
    let mut err = String::new();
    if let Some(mut e) = ff.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    let _ = ff.wait();
    assert!(
        server.log_lines("source dropped").is_empty(),
        "ffmpeg's source was dropped: {:?}",
        server.log_lines("source dropped")
    );
    assert!(!err.contains("Error"), "ffmpeg: {err}");
}

#[test]
fn ffmpeg_mp3_source_to_every_output() {
    ffmpeg_roundtrip(
        "mp3",
        "mp3/mp3-44100-128-s.mp3",
        &["-c:a", "copy", "-f", "mp3", "-content_type", "audio/mpeg"],
        16_000,
    );
}

#[test]
fn ffmpeg_aac_source_to_every_output() {
    ffmpeg_roundtrip(
        "aac",
        "aac-256.aac",
        &["-c:a", "copy", "-f", "adts", "-content_type", "audio/aac"],
        32_000,
    );
}

#[test]
fn handshake_variants_are_all_accepted() {
    let server = ServerProcess::start(EXE, "streams:\n  - key: test\n    password: pw\n");
    let data = fixture("mp3/mp3-44100-64-s.mp3");
    for (i, method) in [
        SourceMethod::Ice,
        SourceMethod::SourceHttp,
        SourceMethod::PutExpect,
    ]
    .into_iter()
    .enumerate()
    {
        let mut src = Source::connect(
            server.source,
            "test",
            "pw",
            method,
            &[("ice-name", "Studio A"), ("Content-Type", "audio/mpeg")],
        )
        .unwrap_or_else(|e| panic!("{method:?} refused: {e}"));
        src.send(&data[..40_000]).unwrap();
        assert!(server.wait_metric(
            "streammachine_sources{mount=\"test\"}",
            1.0,
            Duration::from_secs(5)
        ));
        drop(src);
        assert!(server.wait_metric(
            "streammachine_sources{mount=\"test\"}",
            0.0,
            Duration::from_secs(5)
        ));
        assert!(server.wait_metric(
            "streammachine_source_connections_total{mount=\"test\"}",
            (i + 1) as f64,
            Duration::from_secs(5)
        ));
    }
    // Bytes sent together with the head are audio, not lost (the original dropped them).
    let mut s = TcpStream::connect(server.source).unwrap();
    let mut msg = format!(
        "SOURCE /test ICE/1.0\r\nAuthorization: {}\r\n\r\n",
        basic("pw")
    )
    .into_bytes();
    msg.extend_from_slice(&data);
    s.write_all(&msg).unwrap();
    // Like a real encoder, read the go-ahead before hanging up (closing with the
    // reply unread would make the kernel reset the connection and drop our data).
    let mut reply = [0u8; 19];
    s.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"HTTP/1.0 200 OK\r\n\r\n");
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let _ = s.read_to_end(&mut Vec::new());
    assert!(server
        .wait_log("\"format\":\"mp3-44100-64-s\"", Duration::from_secs(5))
        .is_some());
    let frames = frames_of(&data, Codec::Mp3);
    let audio = audio_of(&data, Codec::Mp3);
    assert!(server.wait_metric(
        "streammachine_sources{mount=\"test\"}",
        0.0,
        Duration::from_secs(5)
    ));
    let all = http_get(server.listen, "/test?pump=9999&offset=9999", &[]);
    assert!(
        all.body.len() > audio.len(),
        "{} {}",
        all.body.len(),
        audio.len()
    );
    let tail = &all.body[all.body.len() - audio.len()..];
    let diff = tail.iter().zip(&audio).position(|(a, b)| a != b);
    assert!(
        tail == audio,
        "the whole file, including the bytes after the head; first difference at {diff:?}"
    );
    assert_eq!(frames.len(), 1150);
}

#[test]
fn bad_source_input_gets_clear_errors_and_listeners_keep_going() {
    let server = ServerProcess::start(
        EXE,
        "sources: { headerTimeoutSeconds: 0.5 }\nstreams:\n  - key: test\n    password: pw\n    burstSeconds: 1\n",
    );
    let data = fixture("mp3/mp3-44100-128-s.mp3");
    let frames = frames_of(&data, Codec::Mp3);
    let audio = audio_of(&data, Codec::Mp3);
    let feed: Vec<_> = frames[..frames.len() / 4].to_vec(); // ~7.5 s in real time
    let src_addr = server.source;
    let d2 = data.clone();
    let feeder = std::thread::spawn(move || {
        let mut src = Source::connect(src_addr, "test", "pw", SourceMethod::Ice, &[]).unwrap();
        src.send_realtime(&d2, &feed, 44_100).unwrap();
    });
    std::thread::sleep(Duration::from_millis(1500));
    let (mut listener, status, _, rest) = request(server.listen, "GET", "/test", &[]);
    assert_eq!(status, 200);

    let expect = |raw: &[u8], status: &str, needle: &str| {
        let mut s = TcpStream::connect(server.source).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let t = Instant::now();
        let _ = s.write_all(raw);
        let mut reply = Vec::new();
        let _ = s.read_to_end(&mut reply);
        let reply = String::from_utf8_lossy(&reply).into_owned();
        assert!(
            reply.starts_with(status),
            "sent {:?}: got {reply:?}",
            String::from_utf8_lossy(&raw[..raw.len().min(40)])
        );
        assert!(reply.contains(needle), "{reply:?} lacks {needle:?}");
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "closed within the header timeout"
        );
    };
    expect(
        b"\x16\x03\x01\x02\x00junk\r\n\r\n",
        "HTTP/1.0 400",
        "not an Icecast source request",
    );
    expect(
        format!(
            "SOURCE /test ICE/1.0\r\nAuthorization: {}\r\n\r\n",
            basic("wrong")
        )
        .as_bytes(),
        "HTTP/1.0 401",
        "wrong password for mount \"/test\"",
    );
    expect(
        b"SOURCE /test ICE/1.0\r\n\r\n",
        "HTTP/1.0 401",
        "credentials required",
    );
    expect(
        format!(
            "SOURCE /nope ICE/1.0\r\nAuthorization: {}\r\n\r\n",
            basic("pw")
        )
        .as_bytes(),
        "HTTP/1.0 404",
        "no mount \"/nope\"",
    );
    expect(
        format!(
            "SOURCE /testing ICE/1.0\r\nAuthorization: {}\r\n\r\n",
            basic("pw")
        )
        .as_bytes(),
        "HTTP/1.0 404",
        "no mount",
    );
    let mut big = b"SOURCE /test ICE/1.0\r\nX-Big: ".to_vec();
    big.extend(std::iter::repeat_n(b'a', 20_000));
    expect(&big, "HTTP/1.0 431", "larger than");
    expect(b"SOURCE /test ICE/1.0\r\n", "HTTP/1.0 408", "timed out");
    expect(b"", "HTTP/1.0 408", "timed out");
    expect(
        b"GET /test HTTP/1.0\r\n\r\n",
        "HTTP/1.0 405",
        "SOURCE or PUT",
    );
    expect(
        format!(
            "PUT /test HTTP/1.1\r\nAuthorization: {}\r\nContent-Type: application/ogg\r\n\r\n",
            basic("pw")
        )
        .as_bytes(),
        "HTTP/1.0 415",
        "application/ogg is not supported",
    );
    expect(
        format!(
            "PUT /test HTTP/1.1\r\nAuthorization: {}\r\nContent-Type: audio/aac\r\n\r\n",
            basic("pw")
        )
        .as_bytes(),
        "HTTP/1.0 415",
        "takes mp3",
    );
    // Each refusal is logged once.
    assert_eq!(server.log_lines("wrong password").len(), 1);
    assert_eq!(
        server.metric("streammachine_source_rejections_total{reason=\"bad_password\"}"),
        Some(1.0)
    );
    assert_eq!(
        server.metric("streammachine_source_rejections_total{reason=\"timeout\"}"),
        Some(2.0)
    );

    feeder.join().unwrap();
    listener
        .set_read_timeout(Some(Duration::from_millis(800)))
        .unwrap();
    let got = read_n(&mut listener, rest, usize::MAX, Duration::from_secs(10));
    let at = find(&audio, &got[..2048]).unwrap();
    assert!(
        audio[at..].starts_with(&got),
        "the listener's stream stayed contiguous"
    );
    assert!(
        got.len() > 6 * 16_000,
        "and kept flowing: {} bytes",
        got.len()
    );
}

#[test]
fn stalled_garbage_wrong_codec_and_silent_sources_are_dropped_with_a_reason() {
    let server = ServerProcess::start(
        EXE,
        "sources: { dataTimeoutSeconds: 1, firstFrameTimeoutSeconds: 1 }\nstreams:\n  - key: test\n    password: pw\n  - key: other\n    password: pw\n",
    );
    let data = fixture("mp3/mp3-44100-128-s.mp3");
    let frames = frames_of(&data, Codec::Mp3);
    // Meanwhile another stream plays to its listener, undisturbed.
    let feed: Vec<_> = frames[..(12.0 * 44_100.0 / 1152.0) as usize].to_vec();
    let other_audio: Vec<u8> = feed
        .iter()
        .flat_map(|&(o, l, _)| data[o..o + l].iter().copied())
        .collect();
    let (addr, d) = (server.source, data.clone());
    let other_feeder = std::thread::spawn(move || {
        let mut src = Source::connect(addr, "other", "pw", SourceMethod::Ice, &[]).unwrap();
        src.send_realtime(&d, &feed, 44_100).unwrap();
    });
    assert!(server.wait_metric_at_least(
        "streammachine_buffer_bytes{stream=\"other\"}",
        1.0,
        Duration::from_secs(5)
    ));
    let (ol, st, _, rest) = request(server.listen, "GET", "/other", &[]);
    assert_eq!(st, 200);
    let other_listener = read_in_background(ol, rest, Duration::from_secs(3));
    // Stalls after 100 frames.
    let mut src = Source::connect(server.source, "test", "pw", SourceMethod::Ice, &[]).unwrap();
    src.send(&data[..frames[100].0]).unwrap();
    let t = Instant::now();
    let line = server
        .wait_log("no audio frame for 1 s", Duration::from_secs(5))
        .expect("stall detected");
    assert!(
        t.elapsed() < Duration::from_secs(4),
        "stall noticed after {:?}",
        t.elapsed()
    );
    assert!(line.contains("source dropped"));
    let mut buf = [0u8; 16];
    src.sock
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    assert!(
        matches!(src.sock.read(&mut buf), Ok(0) | Err(_)),
        "the server closed the stalled source"
    );
    // Connects and says nothing.
    let _silent = Source::connect(server.source, "test", "pw", SourceMethod::Ice, &[]).unwrap();
    assert!(server
        .wait_log("no valid mp3 frame within 1 s", Duration::from_secs(5))
        .is_some());
    // Pure garbage.
    let mut g = Source::connect(server.source, "test", "pw", SourceMethod::Ice, &[]).unwrap();
    let noise: Vec<u8> = (0..200_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let _ = g.send(&noise);
    let line = server.wait_log("no mp3 audio frame found", Duration::from_secs(5));
    assert!(
        line.is_some(),
        "garbage: {:?}",
        server.log_lines("source dropped")
    );
    // Audio, then garbage at full speed: not a stall, and the log says so.
    let mut h = Source::connect(server.source, "test", "pw", SourceMethod::Ice, &[]).unwrap();
    let audio = fixture("mp3/mp3-44100-128-s.mp3");
    h.send(&audio[..100_000]).unwrap();
    let until = Instant::now() + Duration::from_millis(2500);
    while Instant::now() < until && h.send(&noise[..20_000]).is_ok() {
        std::thread::sleep(Duration::from_millis(20));
    }
    let line = server.wait_log("is not mp3 audio any more", Duration::from_secs(5));
    assert!(line.is_some(), "{:?}", server.log_lines("source"));
    // AAC on an MP3 mount, declared as nothing.
    let aac = fixture("aac-256.aac");
    let mut a = Source::connect(server.source, "test", "pw", SourceMethod::Ice, &[]).unwrap();
    let _ = a.send(&aac[..50_000]);
    assert!(server
        .wait_log(
            "the source sends aac audio, but this mount expects mp3",
            Duration::from_secs(5)
        )
        .is_some());
    assert_eq!(
        server.log_lines("source dropped").len(),
        5,
        "each logged once: {:?}",
        server.log_lines("source dropped")
    );
    assert!(server.wait_metric(
        "streammachine_sources{mount=\"test\"}",
        0.0,
        Duration::from_secs(3)
    ));
    other_feeder.join().unwrap();
    let heard = other_listener.join().unwrap();
    let at = find(&other_audio, &heard[..2048]).expect("the other stream's audio");
    assert!(
        other_audio[at..] == heard[..],
        "the other listener heard its stream to the end, contiguous, through all of it"
    );
}

#[test]
fn a_truncated_frame_is_dropped_and_nothing_else() {
    let server = ServerProcess::start(EXE, "streams:\n  - key: test\n    password: pw\n");
    let data = fixture("mp3/mp3-44100-128-s.mp3");
    let frames = frames_of(&data, Codec::Mp3);
    let k = 500;
    let (o, l, _) = frames[k];
    let mut cut = data[..o + l / 2].to_vec();
    cut.extend_from_slice(&data[o + l..]);
    let mut src = Source::connect(server.source, "test", "pw", SourceMethod::Ice, &[]).unwrap();
    src.send(&cut).unwrap();
    drop(src);
    assert!(server.wait_metric(
        "streammachine_source_connected{mount=\"test\"}",
        0.0,
        Duration::from_secs(5)
    ));
    let all = http_get(server.listen, "/test?pump=9999&offset=9999", &[]);
    let expected: Vec<u8> = frames
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != k)
        .flat_map(|(_, &(o, l, _))| data[o..o + l].iter().copied())
        .collect();
    assert_eq!(all.body.len(), expected.len());
    assert!(
        all.body == expected,
        "every frame but the truncated one, in order"
    );
    assert_eq!(
        server.metric("streammachine_source_discarded_bytes_total{mount=\"test\"}"),
        Some((l / 2) as f64)
    );
}

#[test]
fn a_second_source_waits_and_takes_over_when_the_first_leaves() {
    let server = ServerProcess::start(EXE, "streams:\n  - key: test\n    password: pw\n");
    let a_data = fixture("mp3/tone440Hz-44100-128-m.mp3");
    let b_data = fixture("mp3/tone1kHz-44100-128-m.mp3");
    let a_frames = frames_of(&a_data, Codec::Mp3);
    let b_frames = frames_of(&b_data, Codec::Mp3);
    let mut a = Source::connect(server.source, "test", "pw", SourceMethod::Ice, &[]).unwrap();
    a.send(&a_data[..a_frames[100].0]).unwrap();
    // A listener plays through the takeover.
    assert!(server.wait_metric_at_least(
        "streammachine_buffer_bytes{stream=\"test\"}",
        1.0,
        Duration::from_secs(5)
    ));
    let (l, st, _, rest) = request(server.listen, "GET", "/test", &[]);
    assert_eq!(st, 200);
    let listener = read_in_background(l, rest, Duration::from_secs(3));
    let mut b = Source::connect(server.source, "test", "pw", SourceMethod::PutExpect, &[]).unwrap();
    assert!(server.wait_metric(
        "streammachine_sources{mount=\"test\"}",
        2.0,
        Duration::from_secs(5)
    ));
    // B's audio while it waits is not used.
    b.send(&b_data[..b_frames[80].0]).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    drop(a);
    assert!(server.wait_metric(
        "streammachine_sources{mount=\"test\"}",
        1.0,
        Duration::from_secs(5)
    ));
    assert!(server
        .wait_log("next source takes over", Duration::from_secs(2))
        .is_some());
    b.send(&b_data[b_frames[80].0..]).unwrap();
    drop(b);
    assert!(server.wait_metric(
        "streammachine_source_connected{mount=\"test\"}",
        0.0,
        Duration::from_secs(5)
    ));
    let all = http_get(server.listen, "/test?pump=9999&offset=9999", &[]).body;
    let a_audio: Vec<u8> = a_frames[..100]
        .iter()
        .flat_map(|&(o, l, _)| a_data[o..o + l].iter().copied())
        .collect();
    let b_audio = audio_of(&b_data, Codec::Mp3);
    assert!(all.starts_with(&a_audio), "A's audio first, all of it");
    let rest = &all[a_audio.len()..];
    assert!(rest.len() > b_audio.len() / 2, "then B's");
    assert!(
        b_audio.ends_with(rest),
        "B's audio from where it took over to its end, contiguous"
    );
    let heard = listener.join().unwrap();
    let at = find(&all, &heard[..1024]).expect("the listener heard the buffer");
    assert!(
        all[at..] == heard[..],
        "the listener heard A, then B, contiguous to the end ({} bytes)",
        heard.len()
    );
    assert!(at < a_audio.len(), "and was there before the takeover");
}

#[test]
fn title_updates_need_the_source_password_and_reach_icy_listeners() {
    let server = ServerProcess::start(EXE, "streams:\n  - key: test\n    password: pw\n    icyMetaInterval: 2000\n    burstSeconds: 1\n");
    let unauth = http_get(
        server.source,
        "/admin/metadata?mount=/test&mode=updinfo&song=x",
        &[],
    );
    assert_eq!(unauth.status, 401);
    let wrong = http_get(
        server.source,
        "/admin/metadata?mount=/test&mode=updinfo&song=x",
        &[("Authorization", &basic("nope"))],
    );
    assert_eq!(wrong.status, 401);
    let nomount = http_get(
        server.source,
        "/admin/metadata?mode=updinfo&song=x",
        &[("Authorization", &basic("pw"))],
    );
    assert_eq!(nomount.status, 400);
    let badmode = http_get(
        server.source,
        "/admin/metadata?mount=/test&mode=fly&song=x",
        &[("Authorization", &basic("pw"))],
    );
    assert_eq!(badmode.status, 400);
    assert!(badmode.text().contains("updinfo"));
    // artist + title, Latin-1 as old encoders send it.
    let ok = http_get(
        server.source,
        "/admin/metadata?mount=/test&mode=updinfo&artist=Bj%F6rk&title=Army+of+Me&charset=ISO-8859-1",
        &[("Authorization", &basic("pw"))],
    );
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(ok.header("content-type"), Some("text/xml"));
    let data = fixture("mp3/mp3-44100-128-s.mp3");
    let frames = frames_of(&data, Codec::Mp3);
    let cut = |n: usize| frames.iter().map(|f| f.0).find(|&o| o >= n).unwrap();
    let (mid, end) = (cut(200_000), cut(400_000));
    let mut src = Source::connect(server.source, "test", "pw", SourceMethod::Ice, &[]).unwrap();
    src.send(&data[..mid]).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let (mut s, _, _, rest) = request(
        server.listen,
        "GET",
        "/test?offset=5",
        &[("Icy-MetaData", "1")],
    );
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let wire = read_n(&mut s, rest, usize::MAX, Duration::from_secs(3));
    let (_, metas) = strip_icy(&wire, 2000);
    assert_eq!(
        metas.first().map(|m| m.1.as_str()),
        Some("StreamTitle='Björk - Army of Me';")
    );
    let st: serde_json::Value =
        serde_json::from_slice(&http_get(server.listen, "/status-json.xsl", &[]).body).unwrap();
    assert_eq!(st["icestats"]["source"]["title"], "Björk - Army of Me");
    // A new title, more audio: a listener rewound to before the change hears
    // the old title first and the new one where its audio begins.
    drop(src);
    let first_part = audio_of(&data[..mid], Codec::Mp3).len();
    let ok = http_get(
        server.source,
        "/admin/metadata?mount=/test&mode=updinfo&song=Second+Song",
        &[("Authorization", &basic("pw"))],
    );
    assert_eq!(ok.status, 200);
    // (The first source went quiet and left; the next one carries on.)
    let mut src = Source::connect(server.source, "test", "pw", SourceMethod::Ice, &[]).unwrap();
    src.send(&data[mid..end]).unwrap();
    drop(src);
    let expect = audio_of(&data[..end], Codec::Mp3);
    assert!(server.wait_metric_at_least(
        "streammachine_buffer_bytes{stream=\"test\"}",
        expect.len() as f64,
        Duration::from_secs(5)
    ));
    let (mut s, st, _, rest) = request(
        server.listen,
        "GET",
        "/test?offset=9999",
        &[("Icy-MetaData", "1")],
    );
    assert_eq!(st, 200);
    s.set_read_timeout(Some(Duration::from_millis(800)))
        .unwrap();
    let wire = read_n(&mut s, rest, usize::MAX, Duration::from_secs(10));
    let (audio, metas) = strip_icy(&wire, 2000);
    assert!(
        audio == expect,
        "the whole buffer: {} vs {} bytes, a prefix: {}, found at {:?}",
        audio.len(),
        expect.len(),
        expect.starts_with(&audio),
        find(&expect, &audio[..1000])
    );
    assert_eq!(metas.len(), 2, "{metas:?}");
    assert_eq!(
        metas[0],
        (2000, "StreamTitle='Björk - Army of Me';".to_string()),
        "the title of then, in the first block"
    );
    assert_eq!(metas[1].1, "StreamTitle='Second Song';");
    // Titles change at chunk boundaries (~1 s): the new one comes with the
    // first chunk completed after the change.
    let at = metas[1].0;
    assert!(
        at <= first_part + 2000 && at + 20_000 >= first_part,
        "the new title at audio byte {at}, its audio from {first_part}"
    );
    // Issue 13: the title history over the buffer, for players; starting
    // its `behindLiveSeconds` back is "the start of this programme".
    let h: serde_json::Value =
        serde_json::from_slice(&http_get(server.listen, "/test/titles.json", &[]).body).unwrap();
    let titles = h["titles"].as_array().unwrap();
    let names: Vec<&str> = titles
        .iter()
        .map(|t| t["title"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Björk - Army of Me", "Second Song"], "{h}");
    let (b0, b1) = (
        titles[0]["behindLiveSeconds"].as_f64().unwrap(),
        titles[1]["behindLiveSeconds"].as_f64().unwrap(),
    );
    let total = h["bufferSeconds"].as_f64().unwrap();
    assert!((b0 - total).abs() < 0.001 && 0.0 < b1 && b1 < b0, "{h}");
    assert!(titles[0]["start"].as_str().unwrap() <= titles[1]["start"].as_str().unwrap());
    let (mut s, st, _, rest) = request(
        server.listen,
        "GET",
        &format!("/test?offset={b1}"),
        &[("Icy-MetaData", "1")],
    );
    assert_eq!(st, 200);
    s.set_read_timeout(Some(Duration::from_millis(800)))
        .unwrap();
    let wire = read_n(&mut s, rest, 4000, Duration::from_secs(10));
    let (_, metas) = strip_icy(&wire, 2000);
    assert_eq!(
        metas.first().map(|m| m.1.as_str()),
        Some("StreamTitle='Second Song';"),
        "starts at the programme's start"
    );
}

/// Issue 10 (7): however a source ends (it stalls, or the API drops it), the
/// audio of its last, partial chunk reaches the buffer like an EOF's does.
#[test]
fn a_source_that_stalls_or_is_dropped_keeps_its_last_partial_chunk() {
    let server = ServerProcess::start(
        EXE,
        "admin: { token: tok }\nsources: { dataTimeoutSeconds: 1 }\nstreams:\n  - key: test\n    password: pw\n",
    );
    let data = fixture("mp3/mp3-44100-128-s.mp3");
    let frames = frames_of(&data, Codec::Mp3);
    // 150 frames: 3.9 s, so ~0.9 s sit in an unfinished chunk when it ends.
    let audio = |range: std::ops::Range<usize>| -> Vec<u8> {
        frames[range]
            .iter()
            .flat_map(|&(o, l, _)| data[o..o + l].iter().copied())
            .collect()
    };
    let buffered = || http_get(server.listen, "/test?pump=9999&offset=9999", &[]).body;
    let connected = |v: f64| {
        server.wait_metric(
            "streammachine_source_connected{mount=\"test\"}",
            v,
            Duration::from_secs(10),
        )
    };
    // Stalled: the socket stays open, nothing more comes.
    let mut src = Source::connect(server.source, "test", "pw", SourceMethod::Ice, &[]).unwrap();
    src.send(&data[frames[0].0..frames[150].0]).unwrap();
    assert!(connected(1.0));
    assert!(server
        .wait_log("stalled encoder", Duration::from_secs(10))
        .is_some());
    assert!(connected(0.0));
    let (got, want) = (buffered(), audio(0..150));
    assert_eq!(got.len(), want.len(), "every frame, the last second too");
    assert!(got == want, "every frame, in order");
    drop(src);
    // Dropped through the API.
    let mut src = Source::connect(server.source, "test", "pw", SourceMethod::Ice, &[]).unwrap();
    src.send(&data[frames[150].0..frames[300].0]).unwrap();
    let want = [audio(0..150), audio(150..300)].concat();
    let deadline = Instant::now() + Duration::from_secs(10);
    // The source is on air once 3 of its chunks are in.
    while buffered().len() < audio(0..150).len() + audio(150..270).len() / 2 {
        assert!(
            Instant::now() < deadline,
            "the second source's audio never came"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let sources = http_get(
        server.admin,
        "/api/source-mounts/test/sources",
        &[("Authorization", "Bearer tok")],
    );
    let list: serde_json::Value = serde_json::from_slice(&sources.body).unwrap();
    let id = list[0]["id"].as_u64().expect("a source id");
    let r = http_call(
        server.admin,
        "DELETE",
        &format!("/api/source-mounts/test/sources/{id}"),
        &[("Authorization", "Bearer tok")],
    );
    assert_eq!(r.status, 204);
    assert!(connected(0.0));
    let got = buffered();
    assert_eq!(
        got.len(),
        want.len(),
        "the dropped source's last second is kept"
    );
    assert!(got == want);
}

/// Issue 10 (1): a server paused longer than the stall timeout (SIGSTOP: a
/// starved CPU, a VM migration) keeps its encoder: the audio waiting in the
/// socket shows the encoder did not stall.
#[test]
fn a_paused_server_keeps_its_live_encoder() {
    let server = ServerProcess::start(
        EXE,
        "sources: { dataTimeoutSeconds: 2 }\nstreams:\n  - key: test\n    password: pw\n",
    );
    let data = fixture("mp3/mp3-44100-128-s.mp3");
    let frames = frames_of(&data, Codec::Mp3);
    let part = frames[..(8.0 * 44_100.0 / 1152.0) as usize].to_vec();
    let addr = server.source;
    let feeder = std::thread::spawn(move || {
        let mut src = Source::connect(addr, "test", "pw", SourceMethod::Ice, &[]).unwrap();
        let sent = src.send_realtime(&data, &part, 44_100).map(|_| ());
        (src, sent)
    });
    assert!(server.wait_metric_at_least(
        "streammachine_buffer_seconds{stream=\"test\"}",
        1.0,
        Duration::from_secs(10)
    ));
    signal(server.pid(), "STOP");
    std::thread::sleep(Duration::from_secs(4));
    signal(server.pid(), "CONT");
    let (_src, sent) = feeder.join().unwrap();
    assert!(sent.is_ok(), "the encoder was cut off: {sent:?}");
    assert_eq!(
        server.metric("streammachine_source_connected{mount=\"test\"}"),
        Some(1.0),
        "the encoder is still on air"
    );
    assert!(
        server.log_lines("stalled").is_empty(),
        "{:?}",
        server.log_lines("stalled")
    );
}

/// Issue 10 (8): titles belong to the source that sent them. A waiting
/// encoder's titles (sent from its own host) stay off air until it takes
/// over, and then its title, not the previous source's, is on air at once.
#[test]
fn a_waiting_sources_titles_wait_with_it() {
    let server = ServerProcess::start(EXE, "streams:\n  - key: test\n    password: pw\n");
    let (studio, automation): (std::net::IpAddr, std::net::IpAddr) =
        ("127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap());
    let title_from = |ip, song: &str| {
        let mut s = connect_from(Some(ip), server.source);
        write!(
            s,
            "GET /admin/metadata?mount=/test&mode=updinfo&song={song} HTTP/1.0\r\nAuthorization: {}\r\n\r\n",
            basic("pw")
        )
        .unwrap();
        let mut reply = String::new();
        s.read_to_string(&mut reply).unwrap();
        assert!(
            reply.starts_with("HTTP/1.0 200") || reply.starts_with("HTTP/1.1 200"),
            "{reply}"
        );
    };
    let on_air = || -> String {
        let v: serde_json::Value =
            serde_json::from_slice(&http_get(server.listen, "/status-json.xsl", &[]).body).unwrap();
        let source = &v["icestats"]["source"];
        let source = if source.is_array() {
            &source[0]
        } else {
            source
        };
        source["title"].as_str().unwrap_or_default().to_string()
    };
    let data = fixture("mp3/mp3-44100-128-s.mp3");
    let frames = frames_of(&data, Codec::Mp3);
    let mut a = Source::connect_from(
        Some(studio),
        server.source,
        "test",
        "pw",
        SourceMethod::Ice,
        &[],
    )
    .unwrap();
    a.send(&data[..frames[100].0]).unwrap();
    title_from(studio, "Studio+song");
    assert_eq!(on_air(), "Studio song");
    let b = Source::connect_from(
        Some(automation),
        server.source,
        "test",
        "pw",
        SourceMethod::Ice,
        &[],
    )
    .unwrap();
    assert!(server.wait_metric(
        "streammachine_sources{mount=\"test\"}",
        2.0,
        Duration::from_secs(5)
    ));
    title_from(automation, "Automation+song");
    assert_eq!(
        on_air(),
        "Studio song",
        "the waiting encoder's title is not on air"
    );
    drop(a);
    assert!(server.wait_metric(
        "streammachine_sources{mount=\"test\"}",
        1.0,
        Duration::from_secs(5)
    ));
    assert_eq!(
        on_air(),
        "Automation song",
        "on air with its encoder, at once"
    );
    drop(b);
}

/// Issue 10 (9): password guessing on the source port is slowed per address
/// (refused unchecked with 429 and Retry-After once it failed too often),
/// counted, and logged thinly; an encoder elsewhere connects as ever.
#[test]
fn source_password_guessing_is_slowed_per_address() {
    let server = ServerProcess::start(EXE, "streams:\n  - key: test\n    password: pw\n");
    let guesser: std::net::IpAddr = "127.0.0.3".parse().unwrap();
    let started = Instant::now();
    let replies: Vec<String> = (0..200)
        .map(|i| {
            Source::connect_from(
                Some(guesser),
                server.source,
                "test",
                &format!("guess{i}"),
                SourceMethod::Ice,
                &[],
            )
            .err()
            .unwrap_or_default()
        })
        .collect();
    let elapsed = started.elapsed();
    let checked = replies.iter().filter(|r| r.contains(" 401 ")).count();
    let refused: Vec<&String> = replies.iter().filter(|r| r.contains(" 429 ")).collect();
    println!(
        "source: 200 guesses in {elapsed:?}: {checked} checked, {} refused unchecked",
        refused.len()
    );
    assert_eq!(checked + refused.len(), 200);
    assert!(checked <= 12, "{checked} passwords checked");
    assert!(refused[0].contains("Retry-After: "), "{}", refused[0]);
    // The right password from the guessing address waits too…
    let err = Source::connect_from(
        Some(guesser),
        server.source,
        "test",
        "pw",
        SourceMethod::Ice,
        &[],
    )
    .unwrap_err();
    assert!(err.contains(" 429 "), "{err}");
    // …an encoder elsewhere is untouched.
    let _ok = Source::connect(server.source, "test", "pw", SourceMethod::Ice, &[]).unwrap();
    let metric = |reason: &str| {
        server
            .metric(&format!(
                "streammachine_auth_failures_total{{port=\"source\",reason=\"{reason}\"}}"
            ))
            .unwrap_or(0.0)
    };
    assert_eq!(metric("bad_password"), checked as f64);
    assert!(metric("locked") >= refused.len() as f64);
    let logged = server.log_lines("source port").len();
    assert!(logged <= 12, "{logged} log lines for 201 failures");
}

/// Issue 10 (smaller defects): a source that changed its sample rate and
/// channels mid-stream was passed on silently (HLS segments mixed both
/// formats with no discontinuity), and its transcoded stream fell silent
/// (every later frame a decode error).
#[test]
fn a_format_change_mid_stream_is_logged_marked_and_transcoded() {
    let server = ServerProcess::start(
        EXE,
        "admin: { token: tok }\nsourceMounts: [{key: studio, password: pw}]\nstreams:\n  - key: raw\n    sourceMount: studio\n    hls: { segmentSeconds: 1 }\n  - key: aac\n    sourceMount: studio\n    hls: { segmentSeconds: 1 }\n    transcode: { format: aac, bitrate: 64 }\n",
    );
    let stereo = fixture("mp3/mp3-44100-128-s.mp3");
    let low = fixture("mp3/mp3-22050-64-s.mp3");
    let (a, b) = (frames_of(&stereo, Codec::Mp3), frames_of(&low, Codec::Mp3));
    let mut src = Source::connect(server.source, "studio", "pw", SourceMethod::Ice, &[]).unwrap();
    // 3 s at 44.1 kHz, then 3 s at 22.05 kHz, in real time.
    src.send_realtime(&stereo, &a[..115], 44_100).unwrap();
    src.send_realtime(&low, &b[..115], 22_050).unwrap();
    let line = server
        .wait_log("source format changed mid-stream", Duration::from_secs(10))
        .expect("the change is logged");
    assert!(
        line.contains("mp3-44100-128-s") && line.contains("mp3-22050-64-s"),
        "{line}"
    );
    // HLS: the new format starts a new timeline piece.
    let deadline = Instant::now() + Duration::from_secs(15);
    let playlist = loop {
        let p = http_get(server.listen, "/raw.m3u8", &[]).text();
        if p.contains("#EXT-X-DISCONTINUITY\n") || Instant::now() > deadline {
            break p;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(playlist.contains("#EXT-X-DISCONTINUITY\n"), "{playlist}");
    assert_eq!(
        server.metric("streammachine_source_connected{mount=\"studio\"}"),
        Some(1.0),
        "marked at the change, not when the source ended"
    );
    // The transcoded stream goes on: once the source ends (and everything
    // is flushed) its buffer holds both parts.
    drop(src);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let secs = server
            .metric("streammachine_buffer_seconds{stream=\"aac\"}")
            .unwrap_or(0.0);
        if secs >= 5.8 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the transcoded stream stopped at {secs} s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let errors = server
        .metric("streammachine_transcoder_decode_errors_total{stream=\"aac\"}")
        .unwrap_or(0.0);
    assert!(errors < 3.0, "{errors} frames not decoded");
}
