//! Helpers for StreamMachine's cross-component tests and the bench tool:
//! spawning the real server binary, Icecast source clients, listeners, ffmpeg.
//!
//! Everything here talks to real processes over real sockets on 127.0.0.1.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use streamer::format::{Codec, Framer};

pub mod browser;
pub mod bulk;
pub mod hls_check;
mod http;
pub mod icecast;
mod redis;
mod server;
mod source;
pub mod tls;
pub mod webhook;

pub use http::*;
pub use redis::*;
pub use server::*;
pub use source::*;

/// The repository's test audio (from the original StreamMachine, MIT).
pub fn fixture(path: &str) -> Vec<u8> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../streamer/fixtures")
        .join(path);
    std::fs::read(&p).unwrap_or_else(|e| panic!("fixture {}: {e}", p.display()))
}

/// The audio frames of `data` as (offset, length, samples) — ID3 and the
/// encoder's Info frame left out, exactly as the server frames them.
pub fn frames_of(data: &[u8], codec: Codec) -> Vec<(usize, usize, u32)> {
    let mut f = Framer::new(codec);
    f.push(data);
    let mut frames = Vec::new();
    let mut collect =
        |fr: streamer::format::Frame| frames.push((fr.data.clone(), fr.header.samples));
    while let Some(fr) = f.next_frame().unwrap() {
        collect(fr);
    }
    while let Some(fr) = f.finish().unwrap() {
        collect(fr);
    }
    // Locate each frame in the input (frames are contiguous after the tags).
    let mut out = Vec::with_capacity(frames.len());
    let mut pos = 0;
    for (bytes, samples) in frames {
        let at = find(&data[pos..], &bytes).expect("frame not found in input") + pos;
        out.push((at, bytes.len(), samples));
        pos = at + bytes.len();
    }
    out
}

/// Concatenated audio frames of a fixture (what the server stores of it).
pub fn audio_of(data: &[u8], codec: Codec) -> Vec<u8> {
    frames_of(data, codec)
        .iter()
        .flat_map(|&(o, l, _)| data[o..o + l].iter().copied())
        .collect()
}

/// First index of `needle` in `hay`.
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || needle.len() > hay.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Is a command on PATH? Tests that need it fail (never skip) without it.
pub fn require(cmd: &str) {
    let ok = Command::new(cmd)
        .arg("-version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    assert!(
        ok,
        "{cmd} is required for this test (apt-get install ffmpeg; .ci/run installs it)"
    );
}

/// µs since the epoch.
pub fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

/// Path of a fixture file.
pub fn fixture_path(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../streamer/fixtures")
        .join(path)
}
