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

struct Args {
    listeners: Vec<usize>,
    seconds: u64,
    buffer: bool,
    server: bool,
}

fn parse_args() -> Args {
    let mut a = Args {
        listeners: vec![1000, 5000],
        seconds: 20,
        buffer: true,
        server: true,
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
            other => {
                eprintln!("sm-bench: unknown argument {other:?}\nusage: sm-bench [--listeners 1000,5000] [--seconds 20] [--skip-buffer] [--skip-server]");
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
    if args.server {
        rows.extend(bench_server(&args));
    }
    println!("\n| measurement | value |\n|---|---|");
    for (k, v) in rows {
        println!("| {k} | {v} |");
    }
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
