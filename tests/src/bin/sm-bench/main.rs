//! `sm-bench`: StreamMachine's load and benchmark tool.
//!
//! It starts the release `streammachine` binary next to it, feeds it a
//! 128 kbit/s MP3 source in real time, and measures what issue #2 asks:
//! time to first byte on an idle server, a connection storm (every listener
//! connecting at once: time to first audio byte, p50/p99), server CPU per 1000
//! listeners at steady state, user-space memory per listener, and the rewind
//! buffer's memory for 8 hours of audio against the raw audio bytes.
//!
//! Run it with `./bench.sh` (which builds in release mode first), or
//! `target/release/sm-bench [--listeners 1000,5000] [--seconds 20] [--skip-buffer]`.
//! Loopback only; every loop is bounded in count and time.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark tool: a panic is a failed run

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use streamer::buffer::{Chunker, RewindBuffer, Title};
use streamer::format::{Codec, Framer};
use streammachine_tests::{fixture, frames_of, ServerProcess};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

mod operator;
mod transcode;

struct Args {
    listeners: Vec<usize>,
    seconds: u64,
    buffer: bool,
    server: bool,
    hls: bool,
    link: bool,
    transcode: bool,
    operator: bool,
    handoff: Vec<usize>,
}

/// `--only-<part>`: every part of the run off but `part`.
fn only(a: &mut Args, part: &str) {
    a.buffer = false;
    a.server = false;
    a.hls = part == "hls";
    a.link = part == "link";
    a.transcode = part == "transcode";
    a.operator = part == "operator";
    if part != "handoff" {
        a.handoff.clear();
    }
}

fn parse_args() -> Args {
    let mut a = Args {
        listeners: vec![1000, 5000],
        seconds: 20,
        buffer: true,
        server: true,
        hls: true,
        link: true,
        transcode: true,
        operator: true,
        handoff: vec![1000, 5000],
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--listeners" => {
                a.listeners = it
                    .next()
                    .expect("--listeners N[,N…]")
                    .split(',')
                    .map(|n| n.parse().expect("a number of listeners"))
                    .collect()
            }
            "--seconds" => a.seconds = it.next().expect("--seconds N").parse().expect("seconds"),
            "--skip-buffer" => a.buffer = false,
            "--skip-server" => a.server = false,
            "--skip-hls" => a.hls = false,
            "--skip-link" => a.link = false,
            "--skip-transcode" => a.transcode = false,
            "--skip-operator" => a.operator = false,
            "--only-hls" | "--only-link" | "--only-transcode" | "--only-operator"
            | "--only-handoff" => only(&mut a, &arg["--only-".len()..]),
            "--handoff" => {
                a.handoff = it
                    .next()
                    .expect("--handoff N[,N…] (0: skip)")
                    .split(',')
                    .map(|n| n.parse().expect("a number of listeners"))
                    .filter(|n| *n > 0)
                    .collect()
            }
            other => {
                eprintln!("sm-bench: unknown argument {other:?}\nusage: sm-bench [--listeners 1000,5000] [--seconds 20] [--skip-buffer] [--skip-server] [--skip-hls|--only-hls] [--skip-link|--only-link] [--skip-transcode|--only-transcode] [--skip-operator|--only-operator] [--handoff N,M|--only-handoff]");
                std::process::exit(2);
            }
        }
    }
    a
}

/// Resident set size of a process, in bytes.
fn rss(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

/// CPU time (user + system) of a process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = s.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / clock_ticks()
}

fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

/// The rewind buffer holding 8 h of 128 kbit/s audio, built in this process
/// exactly as the server builds it (framer → chunker → buffer).
fn bench_buffer() -> Vec<(String, String)> {
    let frames = music_frames();
    let hours = 8u32;
    let seconds = hours * 3600;
    let pid = std::process::id();
    let before = rss(pid);
    let started = Instant::now();
    let mut buffer = RewindBuffer::new(seconds, 0);
    let mut chunker = Chunker::new();
    let title = Title::new("Benchmark");
    let mut now = 1_700_000_000_000_000i64;
    let mut appended_audio: u64 = 0;
    let mut audio_micros: u64 = 0;
    'fill: loop {
        for f in &frames {
            if let Some(draft) = chunker.push(f) {
                let d = draft.duration_micros();
                now += d as i64;
                appended_audio += draft.data.len() as u64;
                buffer.append(draft, Arc::clone(&title), now, true);
                audio_micros += d;
                if audio_micros >= u64::from(seconds) * 1_000_000 {
                    break 'fill;
                }
            }
        }
    }
    let elapsed = started.elapsed();
    let after = rss(pid);
    let raw = buffer.bytes() as u64;
    let nominal = u64::from(seconds) * 16_000;
    let grown = after.saturating_sub(before);
    vec![
        (
            "buffer: audio held".into(),
            format!(
                "{:.1} h, {} chunks",
                buffer.duration_micros() as f64 / 3.6e9,
                buffer.len()
            ),
        ),
        (
            "buffer: raw audio bytes (128 kbit/s × 8 h = 460.8 MB)".into(),
            format!("{:.1} MB", raw as f64 / 1e6),
        ),
        (
            "buffer: bookkeeping bytes (chunk structs, frame tables)".into(),
            format!(
                "{:.2} MB ({:.2} %)",
                buffer.overhead_bytes() as f64 / 1e6,
                buffer.overhead_bytes() as f64 * 100.0 / raw as f64
            ),
        ),
        (
            "buffer: process RSS growth while filling".into(),
            format!("{:.1} MB", grown as f64 / 1e6),
        ),
        (
            "buffer: RSS growth / raw audio bytes (target <= 1.03)".into(),
            format!("{:.4}", grown as f64 / raw as f64),
        ),
        (
            "buffer: RSS growth / nominal 460.8 MB".into(),
            format!("{:.4}", grown as f64 / nominal as f64),
        ),
        (
            "buffer: fill speed (chunker + buffer append)".into(),
            format!(
                "{:.0} MB/s",
                appended_audio as f64 / 1e6 / elapsed.as_secs_f64()
            ),
        ),
    ]
}

/// Feeds the server a 128 kbit/s MP3 in real time (after a fast pre-fill),
/// forever; the task is aborted at the end.
async fn source(addr: std::net::SocketAddr, prefill_secs: u64) {
    let data = fixture("mp3/mp3-44100-128-s.mp3");
    let frames = frames_of(&data, Codec::Mp3);
    let mut s = TcpStream::connect(addr).await.unwrap();
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode("source:bench");
    s.write_all(format!("SOURCE /bench ICE/1.0\r\nAuthorization: Basic {auth}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut reply = [0u8; 19];
    s.read_exact(&mut reply).await.unwrap();
    assert_eq!(&reply, b"HTTP/1.0 200 OK\r\n\r\n", "source refused");
    let frame_us = 1152.0 * 1e6 / 44100.0;
    let prefill = (prefill_secs as f64 * 1e6 / frame_us) as usize;
    let start = Instant::now();
    let mut sent = 0usize;
    loop {
        for &(o, l, _) in &frames {
            if sent >= prefill {
                let due = Duration::from_micros(((sent - prefill) as f64 * frame_us) as u64);
                if let Some(w) = due.checked_sub(start.elapsed()) {
                    tokio::time::sleep(w).await;
                }
            }
            if s.write_all(&data[o..o + l]).await.is_err() {
                return;
            }
            sent += 1;
        }
    }
}

/// One listener: connects, measures the time to its first audio byte, then
/// reads (and drops) until told to stop.
async fn listener(
    addr: std::net::SocketAddr,
    bytes: Arc<AtomicU64>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<Duration, String> {
    let t = Instant::now();
    let mut s = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    s.write_all(b"GET /bench HTTP/1.1\r\nHost: bench\r\n\r\n")
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut buf = vec![0u8; 8192];
    let mut head = Vec::new();
    let ttfb = loop {
        let n = s.read(&mut buf).await.map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("closed before audio".into());
        }
        head.extend_from_slice(&buf[..n]);
        if let Some(i) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            if head.len() > i + 4 {
                break t.elapsed();
            }
        }
    };
    drop(head);
    let mut stop = stop;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                r = s.read(&mut buf) => match r {
                    Ok(0) | Err(_) => return,
                    Ok(n) => { bytes.fetch_add(n as u64, Ordering::Relaxed); }
                },
                _ = stop.changed() => return,
            }
        }
    });
    Ok(ttfb)
}

fn main() {
    let args = parse_args();
    let mut rows: Vec<(String, String)> = Vec::new();
    if args.buffer {
        eprintln!("sm-bench: filling an 8 h rewind buffer in-process…");
        rows.extend(bench_buffer());
    }
    if args.hls {
        eprintln!("sm-bench: HLS playlist/segments and dumps over an 8 h buffer…");
        rows.extend(bench_hls_and_dumps());
    }
    if args.link {
        eprintln!("sm-bench: master/slave sync of a 4 h buffer, master CPU per slave…");
        rows.extend(bench_link());
    }
    if args.operator {
        eprintln!("sm-bench: the operator at rest…");
        rows.extend(operator::bench());
    }
    if args.transcode {
        eprintln!("sm-bench: transcoding speed and server cost…");
        rows.extend(transcode::bench());
    }
    for &n in &args.handoff {
        eprintln!("sm-bench: handoff with {n} listeners…");
        rows.extend(bench_handoff(n));
    }
    if args.server {
        rows.extend(bench_server(&args));
    }
    println!("\n| measurement | value |\n|---|---|");
    for (k, v) in rows {
        println!("| {k} | {v} |");
    }
}

/// The frames of the 128 kbit/s stereo music fixture.
fn music_frames() -> Vec<streamer::format::Frame> {
    let data = fixture("mp3/mp3-44100-128-s.mp3");
    let mut framer = Framer::new(Codec::Mp3);
    framer.push(&data);
    let mut frames = Vec::new();
    while let Some(f) = framer.next_frame().unwrap() {
        frames.push(f);
    }
    while let Some(f) = framer.finish().unwrap() {
        frames.push(f);
    }
    frames
}

/// An 8 h, 128 kbit/s stream with real-time timestamps (so 10 s HLS
/// segments: 2880 of them) and a title change every 4 minutes.
fn eight_hours() -> Vec<streamer::buffer::Chunk> {
    hours_of_audio(8)
}

/// `hours` of 128 kbit/s audio as chunks (see [`eight_hours`]).
fn hours_of_audio(hours: u64) -> Vec<streamer::buffer::Chunk> {
    audio_with_titles(hours, Some(4))
}

/// `hours` of 128 kbit/s audio as chunks, the title changing every
/// `title_minutes` (each change cuts an HLS segment short) or never.
fn audio_with_titles(hours: u64, title_minutes: Option<u64>) -> Vec<streamer::buffer::Chunk> {
    let every = title_minutes.map_or(u64::MAX, |m| m * 60_000_000);
    let frames = music_frames();
    let seconds = hours * 3600;
    let mut rb = RewindBuffer::new(u32::try_from(seconds).unwrap() + 60, 1_000_000);
    let mut chunker = Chunker::new();
    let mut now = 1_795_000_000_000_000i64;
    let mut micros = 0u64;
    let mut title = Title::new("Show 0");
    'fill: loop {
        for f in &frames {
            if let Some(draft) = chunker.push(f) {
                let d = draft.duration_micros();
                now += i64::try_from(d).unwrap();
                if micros / every != (micros + d) / every {
                    title = Title::new(format!("Show {}", (micros + d) / every));
                }
                rb.append(draft, Arc::clone(&title), now, true);
                micros += d;
                if micros >= seconds * 1_000_000 {
                    break 'fill;
                }
            }
        }
    }
    let arcs: Vec<Arc<streamer::buffer::Chunk>> = rb.iter().cloned().collect();
    drop(rb);
    arcs.into_iter()
        .filter_map(|a| Arc::try_unwrap(a).ok())
        .collect()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn bench_hls_and_dumps() -> Vec<(String, String)> {
    use streamer::stream::Stream;
    use streammachine_crds::config::{AudioFormat, StreamConfig};
    let mut rows = Vec::new();
    let metrics = streamer::metrics::Metrics::new().unwrap();
    let mut cfg = StreamConfig::new("bench");
    cfg.rewind_seconds = 8 * 3600 + 60;
    cfg.password = Some(streammachine_crds::config::Secret("bench".into()));
    let stream = Stream::new(cfg.clone(), AudioFormat::Mp3, &metrics);
    stream.restore(eight_hours(), Some("mp3-44100-128-s"));
    let raw = stream.read_buffer().bytes() as f64;
    // Playlist generation in-process: group the 28,800 chunks into segments
    // and render; with no title change (exactly 2880 segments of 10 s) and
    // with one every 4 minutes (each cuts a segment short).
    let plain = Stream::new(cfg.clone(), AudioFormat::Mp3, &metrics);
    plain.restore(audio_with_titles(8, None), Some("mp3-44100-128-s"));
    for (what, s) in [
        ("no title change", &plain),
        ("a title change every 4 min", &stream),
    ] {
        let mut times = Vec::new();
        let mut body = String::new();
        let mut segs = 0;
        for _ in 0..31 {
            let t = Instant::now();
            let list = {
                let b = s.read_buffer();
                streamer::hls::segments(b.iter().map(|c| c.hls_view()))
            };
            let opts = streamer::hls::MediaOptions::new("bench", streamer::hls::Codec::Mp3, 11);
            body = streamer::hls::render_media(&list, &opts);
            times.push(t.elapsed());
            segs = list.iter().filter(|s| s.complete).count();
        }
        rows.push((
            format!("HLS: 8 h media playlist, {what}, in-process (segment + render), median of 31"),
            format!(
                "{} for {segs} segments, {} bytes",
                ms(median(times)),
                body.len()
            ),
        ));
    }
    drop(plain);
    // Dump and restore.
    let dir = streammachine_tests::scratch_dir("bench-dumps");
    let t = Instant::now();
    let stats = streamer::persist::rewind::save_stream(&stream, &dir).unwrap();
    let save = t.elapsed();
    rows.push((
        "dump: 8 h at 128 kbit/s, save (write, fsync, rename)".into(),
        format!(
            "{:.2} s, {:.0} MB/s of audio",
            save.as_secs_f64(),
            raw / 1e6 / save.as_secs_f64()
        ),
    ));
    rows.push((
        "dump: size / raw audio bytes".into(),
        format!(
            "{:.1} MB / {:.1} MB = {:.4}",
            stats.dump_bytes as f64 / 1e6,
            raw / 1e6,
            stats.dump_bytes as f64 / raw
        ),
    ));
    let fresh = Stream::new(cfg, AudioFormat::Mp3, &metrics);
    let t = Instant::now();
    let n = streamer::persist::rewind::restore_stream(&fresh, &dir)
        .unwrap()
        .unwrap_or(0);
    let load = t.elapsed();
    rows.push((
        "dump: restore (read, verify, rebuild chunks)".into(),
        format!(
            "{:.2} s, {:.0} MB/s of audio ({n} chunks)",
            load.as_secs_f64(),
            raw / 1e6 / load.as_secs_f64()
        ),
    ));
    drop(fresh);
    drop(stream);
    // Over HTTP: a real server restores the dump and serves the playlist and segments.
    let exe = std::env::current_exe()
        .unwrap()
        .with_file_name("streammachine");
    if !exe.exists() {
        rows.push((
            "HLS over HTTP".into(),
            "skipped: build the streammachine binary (./bench.sh)".into(),
        ));
        return rows;
    }
    let server = ServerProcess::try_start(
        exe.to_str().unwrap(),
        &format!("dumps: {{ dir: {} }}\nstreams:\n  - key: bench\n    password: bench\n    rewindSeconds: {}\n", dir.display(), 8 * 3600 + 60),
        &[],
    )
    .unwrap_or_else(|log| panic!("server did not start:\n{log}"));
    let restored = server.log_lines("restored from its dump");
    if let Some(l) = restored.first() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        rows.push((
            "server start: 8 h dump restored in".into(),
            format!("{} ms", v["took_ms"]),
        ));
    }
    let mut times = Vec::new();
    let mut uris = Vec::new();
    for _ in 0..31 {
        let t = Instant::now();
        let r = streammachine_tests::http_get(server.listen, "/bench.m3u8", &[]);
        times.push(t.elapsed());
        assert_eq!(r.status, 200);
        uris = r
            .text()
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .map(|l| format!("/{l}"))
            .collect();
    }
    rows.push((
        "HLS: 8 h media playlist over HTTP, one request (median of 31)".into(),
        format!("{} ({} entries)", ms(median(times)), uris.len()),
    ));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let (reqs, bytes, secs) = rt.block_on(segment_load(
        server.listen,
        Arc::new(uris),
        8,
        Duration::from_secs(5),
    ));
    rows.push((
        "HLS: segment serving, 8 keep-alive clients on loopback, 5 s".into(),
        format!(
            "{:.0} requests/s, {:.0} MB/s",
            reqs as f64 / secs,
            bytes as f64 / 1e6 / secs
        ),
    ));
    rows
}

fn bench_link() -> Vec<(String, String)> {
    use streamer::stream::Stream;
    use streammachine_crds::config::{AudioFormat, StreamConfig};
    let mut rows = Vec::new();
    let exe = std::env::current_exe()
        .unwrap()
        .with_file_name("streammachine");
    assert!(
        exe.exists(),
        "build the streammachine binary first (./bench.sh)"
    );
    // A master that starts with 4 h in its buffer (from a dump).
    let dir = streammachine_tests::scratch_dir("bench-link");
    let metrics = streamer::metrics::Metrics::new().unwrap();
    let mut cfg = StreamConfig::new("bench");
    cfg.rewind_seconds = 4 * 3600 + 60;
    let stream = Stream::new(cfg, AudioFormat::Mp3, &metrics);
    stream.restore(hours_of_audio(4), Some("mp3-44100-128-s"));
    let raw = stream.read_buffer().bytes();
    streamer::persist::rewind::save_stream(&stream, &dir).unwrap();
    drop(stream);
    let master = ServerProcess::try_start(
        exe.to_str().unwrap(),
        &format!("mode: master\nlink: {{ secret: bench }}\ndumps: {{ dir: {} }}\nstreams:\n  - key: bench\n    password: bench\n    rewindSeconds: {}\n", dir.display(), 4 * 3600 + 60),
        &[],
    )
    .unwrap_or_else(|log| panic!("master did not start:\n{log}"));
    let slave_cfg = format!(
        "mode: slave\nlink: {{ secret: bench }}\nmaster: {{ url: \"http://{}\" }}\n",
        master.admin
    );
    let bytes = |s: &ServerProcess| {
        s.metric("streammachine_buffer_bytes{stream=\"bench\"}")
            .unwrap_or(0.0) as usize
    };
    let t = Instant::now();
    let slave = ServerProcess::try_start(exe.to_str().unwrap(), &slave_cfg, &[]).unwrap();
    while bytes(&slave) < raw {
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "slave sync too slow"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = t.elapsed();
    rows.push((
        "link: new slave receives a 4 h 128 kbit/s buffer (incl. process start)".into(),
        format!(
            "{:.2} s ({:.0} MB, {:.0} MB/s)",
            took.as_secs_f64(),
            raw as f64 / 1e6,
            raw as f64 / 1e6 / took.as_secs_f64()
        ),
    ));
    // Steady state: master CPU with 0 and with 8 slaves, a real-time source.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let pid = master.pid();
    let cpu_over = |secs: u64| {
        let c0 = cpu_seconds(pid);
        let t0 = Instant::now();
        std::thread::sleep(Duration::from_secs(secs));
        (cpu_seconds(pid) - c0) / t0.elapsed().as_secs_f64()
    };
    drop(slave);
    let src = rt.spawn(source(master.source, 0));
    std::thread::sleep(Duration::from_secs(3));
    let base = cpu_over(15);
    let mut slaves = Vec::new();
    for _ in 0..8 {
        slaves.push(ServerProcess::try_start(exe.to_str().unwrap(), &slave_cfg, &[]).unwrap());
    }
    for s in &slaves {
        while bytes(s) < raw {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    std::thread::sleep(Duration::from_secs(3));
    let with = cpu_over(15);
    rows.push((
        "link: master CPU, real-time source, no slaves".into(),
        format!("{:.2} % of a core", base * 100.0),
    ));
    rows.push((
        "link: master CPU per slave at steady state (8 slaves)".into(),
        format!("{:.3} % of a core", (with - base) * 100.0 / 8.0),
    ));
    src.abort();
    rows
}

/// One listener that checks every byte: after finding where it starts in the
/// (looped) source audio, each read must continue it exactly.
async fn checking_listener(
    addr: std::net::SocketAddr,
    audio: Arc<Vec<u8>>,
    stop: tokio::sync::watch::Receiver<bool>,
    window: Arc<std::sync::Mutex<Option<(Instant, Instant)>>>,
) -> (u64, u64, Duration, Duration, bool) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /bench HTTP/1.1\r\nHost: b\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 32 * 1024];
    let mut pending = Vec::new();
    // Skip the head; locate the first 4 KiB of audio.
    let mut pos: Option<usize> = None;
    let (mut bytes, mut bad) = (0u64, 0u64);
    let mut last = Instant::now();
    // Gaps between reads once audio flows: (from, to).
    let mut gaps: Vec<(Instant, Instant)> = Vec::new();
    let mut stop = stop;
    let mut dropped = false;
    loop {
        let n = tokio::select! {
            r = s.read(&mut buf) => match r { Ok(0) | Err(_) => { dropped = true; break }, Ok(n) => n },
            _ = stop.changed() => break,
        };
        let now = Instant::now();
        if pos.is_some() && now - last > Duration::from_millis(100) {
            gaps.push((last, now));
        }
        last = now;
        match pos {
            None => {
                pending.extend_from_slice(&buf[..n]);
                let Some(h) = pending.windows(4).position(|w| w == b"\r\n\r\n") else {
                    continue;
                };
                if pending.len() < h + 4 + 4096 {
                    continue;
                }
                let body = &pending[h + 4..];
                let start = audio
                    .windows(4096)
                    .position(|w| w == &body[..4096])
                    .expect("listener bytes not from the source");
                for (i, b) in body.iter().enumerate() {
                    if audio[(start + i) % audio.len()] != *b {
                        bad += 1;
                    }
                }
                bytes += body.len() as u64;
                pos = Some((start + body.len()) % audio.len());
                pending = Vec::new();
            }
            Some(p) => {
                let mut q = p;
                for b in &buf[..n] {
                    if audio[q] != *b {
                        bad += 1;
                    }
                    q = (q + 1) % audio.len();
                }
                bytes += n as u64;
                pos = Some(q);
            }
        }
    }
    // The longest gap overlapping the handoff, and the longest elsewhere
    // (the chunk rhythm: the baseline the handoff is compared with).
    let (a, b) = window.lock().unwrap().unwrap_or((last, last));
    let (mut across, mut elsewhere) = (Duration::ZERO, Duration::ZERO);
    for (from, to) in gaps {
        if to >= a && from <= b {
            across = across.max(to - from);
        } else {
            elsewhere = elsewhere.max(to - from);
        }
    }
    (bytes, bad, across, elsewhere, dropped)
}

fn bench_handoff(n: usize) -> Vec<(String, String)> {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let exe = std::env::current_exe()
        .unwrap()
        .with_file_name("streammachine");
    assert!(
        exe.exists(),
        "build the streammachine binary first (./bench.sh)"
    );
    let dir = streammachine_tests::scratch_dir("bench-handoff");
    let (lp, sp, ap) = (
        streammachine_tests::free_port(),
        streammachine_tests::free_port(),
        streammachine_tests::free_port(),
    );
    let ports = |extra: &[String]| -> Vec<String> {
        let mut v = vec![
            "--listen-port".to_string(),
            lp.to_string(),
            "--source-port".into(),
            sp.to_string(),
            "--admin-port".into(),
            ap.to_string(),
        ];
        v.extend_from_slice(extra);
        v
    };
    let cfg = "streams:\n  - key: bench\n    password: bench\n    rewindSeconds: 600\n    burstSeconds: 2\n";
    let a_args = ports(&[
        "--control-socket".into(),
        dir.join("a.sock").display().to_string(),
    ]);
    let mut old = ServerProcess::try_start(
        exe.to_str().unwrap(),
        cfg,
        &a_args.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .unwrap();
    let data = fixture("mp3/mp3-44100-128-s.mp3");
    let audio = Arc::new(streammachine_tests::audio_of(&data, Codec::Mp3));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut rows = Vec::new();
    rt.block_on(async {
        let src = tokio::spawn(source(old.source, 3));
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let window = Arc::new(std::sync::Mutex::new(None));
        let mut tasks = Vec::new();
        for batch in 0..n.div_ceil(250) {
            for _ in 0..250.min(n - batch * 250) {
                tasks.push(tokio::spawn(checking_listener(old.listen, Arc::clone(&audio), stop_rx.clone(), Arc::clone(&window))));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        let b_args = ports(&["--control-socket".into(), dir.join("b.sock").display().to_string(), "--handoff-from".into(), dir.join("h.sock").display().to_string()]);
        let new = ServerProcess::try_start(exe.to_str().unwrap(), cfg, &b_args.iter().map(String::as_str).collect::<Vec<_>>()).unwrap();
        assert!(new.wait_log("waiting for a predecessor", Duration::from_secs(10)).is_some());
        let t0 = Instant::now();
        let reply = {
            use tokio::io::AsyncBufReadExt;
            let s = tokio::net::UnixStream::connect(dir.join("a.sock")).await.unwrap();
            let (rd, mut wr) = s.into_split();
            wr.write_all(format!("HANDOFF {}\n", dir.join("h.sock").display()).as_bytes()).await.unwrap();
            let mut line = String::new();
            tokio::io::BufReader::new(rd).read_line(&mut line).await.unwrap();
            line
        };
        let took = t0.elapsed();
        *window.lock().unwrap() = Some((t0, Instant::now()));
        let exit = tokio::task::block_in_place(|| old.wait_exit(Duration::from_secs(10)));
        tokio::time::sleep(Duration::from_secs(5)).await;
        stop_tx.send_replace(true);
        let (mut bytes, mut bad, mut max_gap, mut baseline, mut ended, mut dropped) =
            (0u64, 0u64, Duration::ZERO, Duration::ZERO, 0usize, 0usize);
        for t in tasks {
            let (b, x, g, e, d) = t.await.unwrap();
            dropped += usize::from(d);
            bytes += b;
            bad += x;
            max_gap = max_gap.max(g);
            baseline = baseline.max(e);
            ended += 1;
        }
        let took_ms = new.log_lines("took over from the predecessor").first().and_then(|l| serde_json::from_str::<serde_json::Value>(l).ok()).map(|v| v["took_ms"].clone());
        rows.push((format!("handoff, {n} listeners: command to OK (park, send, successor adopts, ack)"), format!("{} ({})", ms(took), reply.trim())));
        rows.push((format!("handoff, {n} listeners: successor's adopt time"), format!("{} ms", took_ms.unwrap_or_default())));
        rows.push((format!("handoff, {n} listeners: longest gap between reads overlapping the handoff / elsewhere in the run (the ~1 s chunk rhythm)"), format!("{} / {} (the handoff adds {})", ms(max_gap), ms(baseline), ms(max_gap.saturating_sub(baseline)))));
        rows.push((format!("handoff, {n} listeners: bytes checked / lost or duplicated"), format!("{:.1} MB / {bad} wrong bytes over {ended} listeners, {dropped} disconnected; old process exit code {exit:?}", bytes as f64 / 1e6)));
        src.abort();
        drop(new);
    });
    rows
}

/// `clients` keep-alive connections fetching segments round-robin for `time`.
async fn segment_load(
    addr: std::net::SocketAddr,
    uris: Arc<Vec<String>>,
    clients: usize,
    time: Duration,
) -> (u64, u64, f64) {
    let start = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let uris = Arc::clone(&uris);
            tokio::spawn(async move {
                let mut s = TcpStream::connect(addr).await.unwrap();
                let (mut reqs, mut bytes) = (0u64, 0u64);
                let mut buf = vec![0u8; 256 * 1024];
                let mut i = c * 7;
                while start.elapsed() < time {
                    let uri = &uris[i % uris.len()];
                    i += 13;
                    s.write_all(format!("GET {uri} HTTP/1.1\r\nHost: b\r\n\r\n").as_bytes())
                        .await
                        .unwrap();
                    // Read the head, then Content-Length bytes.
                    let mut have = Vec::new();
                    let (head_end, len) = loop {
                        let n = s.read(&mut buf).await.unwrap();
                        assert!(n > 0);
                        have.extend_from_slice(&buf[..n]);
                        if let Some(e) = have.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&have[..e]).to_ascii_lowercase();
                            let len: usize = head
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length:"))
                                .unwrap()
                                .trim()
                                .parse()
                                .unwrap();
                            break (e + 4, len);
                        }
                    };
                    let mut got = have.len() - head_end;
                    while got < len {
                        let n = s.read(&mut buf).await.unwrap();
                        assert!(n > 0);
                        got += n;
                    }
                    reqs += 1;
                    bytes += len as u64;
                }
                (reqs, bytes)
            })
        })
        .collect();
    let (mut r, mut b) = (0, 0);
    for t in tasks {
        let (x, y) = t.await.unwrap();
        r += x;
        b += y;
    }
    (r, b, start.elapsed().as_secs_f64())
}

fn bench_server(args: &Args) -> Vec<(String, String)> {
    // Each listener is a socket in this process too.
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let exe = std::env::current_exe()
        .unwrap()
        .with_file_name("streammachine");
    assert!(
        exe.exists(),
        "{} not found: build it first (cargo build --release --workspace, or ./bench.sh)",
        exe.display()
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut rows = Vec::new();
    for (i, &n) in args.listeners.iter().enumerate() {
        // A fresh server per size, so memory the allocator kept from an
        // earlier run does not flatter the next.
        let server = ServerProcess::try_start(
            exe.to_str().unwrap(),
            "streams:\n  - key: bench\n    password: bench\n    rewindSeconds: 3600\n    burstSeconds: 10\n",
            &[],
        )
        .unwrap_or_else(|log| panic!("server did not start:\n{log}"));
        let pid = server.pid();
        rt.block_on(async {
            let src = tokio::spawn(source(server.source, 15));
            tokio::time::sleep(Duration::from_secs(2)).await;
            let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
            let bytes = Arc::new(AtomicU64::new(0));
            if i == 0 {
                // Time to first byte, one listener at a time, idle server.
                let mut single = Vec::new();
                for _ in 0..21 {
                    let (tx, rx) = tokio::sync::watch::channel(false);
                    single.push(listener(server.listen, Arc::clone(&bytes), rx).await.unwrap());
                    tx.send_replace(true);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                single.sort();
                rows.push(("time to first audio byte, one listener, idle server (median of 21)".into(), ms(percentile(&single, 0.5))));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            let t0 = Instant::now();
            let c0 = cpu_seconds(pid);
            tokio::time::sleep(Duration::from_secs(5)).await;
            let idle_cpu = (cpu_seconds(pid) - c0) / t0.elapsed().as_secs_f64();
            if i == 0 {
                rows.push(("server CPU, source only, no listeners".into(), format!("{:.2} % of a core", idle_cpu * 100.0)));
                rows.push(("server RSS, idle with 15+ s of audio".into(), format!("{:.1} MB", rss(pid) as f64 / 1e6)));
            }
            // Steady state: connect n listeners in batches (no storm peak), then measure.
            let rss_before = rss(pid);
            let buf_before = buffer_bytes(&server);
            let mut connected = 0usize;
            for batch in 0..n.div_ceil(250) {
                let k = 250.min(n - batch * 250);
                let tasks: Vec<_> = (0..k).map(|_| tokio::spawn(listener(server.listen, Arc::clone(&bytes), stop_rx.clone()))).collect();
                for t in tasks {
                    if matches!(t.await, Ok(Ok(_))) {
                        connected += 1;
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            tokio::time::sleep(Duration::from_secs(3)).await;
            let b0 = bytes.load(Ordering::Relaxed);
            let c0 = cpu_seconds(pid);
            let t0 = Instant::now();
            tokio::time::sleep(Duration::from_secs(args.seconds)).await;
            let secs = t0.elapsed().as_secs_f64();
            let cpu = (cpu_seconds(pid) - c0) / secs;
            let rate = (bytes.load(Ordering::Relaxed) - b0) as f64 / secs / connected.max(1) as f64;
            let per_listener = (rss(pid) as f64 - rss_before as f64 - (buffer_bytes(&server) - buf_before)) / connected.max(1) as f64;
            let per_1000 = (cpu - idle_cpu) * 100.0 * 1000.0 / connected.max(1) as f64;
            rows.push((format!("{n} listeners ({connected} connected): server CPU, whole process"), format!("{:.1} % of a core over {secs:.0} s", cpu * 100.0)));
            rows.push((format!("{n} listeners: server CPU per 1000 listeners (minus source-only)"), format!("{per_1000:.2} % of a core")));
            rows.push((format!("{n} listeners: delivered rate per listener"), format!("{rate:.0} B/s (128 kbit/s = 16000 B/s)")));
            rows.push((format!("{n} listeners: server RSS growth per listener (minus buffer growth)"), format!("{per_listener:.0} B")));
            stop_tx.send_replace(true);
            tokio::time::sleep(Duration::from_secs(3)).await;
            // The storm: every listener at once.
            let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
            let rss_before = rss(pid);
            let started = Instant::now();
            let tasks: Vec<_> = (0..n).map(|_| tokio::spawn(listener(server.listen, Arc::clone(&bytes), stop_rx.clone()))).collect();
            let mut ttfb = Vec::with_capacity(n);
            let mut failed = 0;
            for t in tasks {
                match tokio::time::timeout(Duration::from_secs(60), t).await {
                    Ok(Ok(Ok(d))) => ttfb.push(d),
                    _ => failed += 1,
                }
            }
            let storm = started.elapsed();
            ttfb.sort();
            rows.push((format!("storm of {n}: listeners that got audio"), format!("{} of {n} ({failed} failed), all within {}", ttfb.len(), ms(storm))));
            rows.push((format!("storm of {n}: time to first audio byte p50 / p99 / max"), format!("{} / {} / {}", ms(percentile(&ttfb, 0.5)), ms(percentile(&ttfb, 0.99)), ms(percentile(&ttfb, 1.0)))));
            tokio::time::sleep(Duration::from_secs(2)).await;
            rows.push((format!("storm of {n}: RSS growth per listener after the storm (incl. its transient peak)"), format!("{:.0} B", (rss(pid) as f64 - rss_before as f64) / n as f64)));
            stop_tx.send_replace(true);
            src.abort();
        });
    }
    rows
}

fn buffer_bytes(server: &ServerProcess) -> f64 {
    server
        .metric("streammachine_buffer_bytes{stream=\"bench\"}")
        .unwrap_or(0.0)
}
