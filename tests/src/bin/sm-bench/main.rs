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

mod auth;
mod big;
mod buffer;
mod hls;
mod link;
mod moving;
mod operator;
mod server;
mod transcode;

use buffer::*;
use link::*;
use server::*;

struct Args {
    listeners: Vec<usize>,
    seconds: u64,
    buffer: bool,
    server: bool,
    hls: bool,
    link: bool,
    transcode: bool,
    operator: bool,
    big: bool,
    auth: bool,
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
    a.big = part == "big";
    a.auth = part == "auth";
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
        big: true,
        auth: true,
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
            "--skip-big" => a.big = false,
            "--skip-auth" => a.auth = false,
            "--only-hls" | "--only-link" | "--only-transcode" | "--only-operator"
            | "--only-handoff" | "--only-big" | "--only-auth" => {
                only(&mut a, &arg["--only-".len()..])
            }
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
                eprintln!("sm-bench: unknown argument {other:?}\nusage: sm-bench [--listeners 1000,5000] [--seconds 20] [--skip-buffer] [--skip-server] [--skip-hls|--only-hls] [--skip-link|--only-link] [--skip-transcode|--only-transcode] [--skip-operator|--only-operator] [--skip-big|--only-big] [--skip-auth|--only-auth] [--handoff N,M|--only-handoff]");
                std::process::exit(2);
            }
        }
    }
    a
}

/// Resident set size of a process, in bytes.
/// The `streammachine` binary next to this one (`./bench.sh` builds both).
pub(crate) fn server_binary() -> std::path::PathBuf {
    let exe = std::env::current_exe()
        .unwrap()
        .with_file_name("streammachine");
    assert!(
        exe.exists(),
        "{} not found: build it first (cargo build --release --workspace, or ./bench.sh)",
        exe.display()
    );
    exe
}

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
        eprintln!("sm-bench: 1000 HLS players on a live stream, HLS latency…");
        rows.extend(hls::bench_hls_listeners(1000, args.seconds));
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
    if args.big {
        rows.extend(big::bench_big());
        eprintln!("sm-bench: 4 streams × 8 h: export, import and handoff…");
        rows.extend(moving::bench_moving());
    }
    if args.auth {
        eprintln!("sm-bench: listener URL auth: CPU per 1000 listeners, connects/s…");
        rows.extend(auth::bench_auth(args.seconds));
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

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}
