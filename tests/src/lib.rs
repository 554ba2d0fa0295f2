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

/// A running `streammachine` process.
#[derive(Debug)]
pub struct ServerProcess {
    child: Child,
    /// Listener port.
    pub listen: SocketAddr,
    /// Source port.
    pub source: SocketAddr,
    /// Admin port.
    pub admin: SocketAddr,
    logs: Arc<Mutex<Vec<String>>>,
    /// Scratch directory of this server.
    pub dir: PathBuf,
}

/// A fresh scratch directory.
pub fn scratch_dir(tag: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("sm-test-{}-{tag}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

impl ServerProcess {
    /// Starts `exe` with `config` (YAML; ports are forced to 0 on 127.0.0.1)
    /// and waits until it listens.
    pub fn start(exe: &str, config: &str) -> ServerProcess {
        Self::try_start(exe, config, &[]).unwrap_or_else(|e| panic!("server did not start: {e}"))
    }

    /// Like [`start`](Self::start), returning the log on failure.
    pub fn try_start(
        exe: &str,
        config: &str,
        extra_args: &[&str],
    ) -> Result<ServerProcess, String> {
        let dir = scratch_dir("server");
        let cfg = dir.join("config.yaml");
        std::fs::write(&cfg, config).unwrap();
        let mut child = Command::new(exe)
            .arg("--config")
            .arg(&cfg)
            .args(["--bind", "127.0.0.1", "--log-format", "json"])
            // Ports chosen by the OS, unless the caller names one.
            .args(
                ["--listen-port", "--source-port", "--admin-port"]
                    .into_iter()
                    .filter(|flag| !extra_args.contains(flag))
                    .flat_map(|flag| [flag, "0"]),
            )
            .args(extra_args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("spawn {exe}: {e}"))?;
        let stderr = child.stderr.take().unwrap();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        {
            let logs = Arc::clone(&logs);
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    if line.contains("\"message\":\"listening\"") {
                        let _ = tx.send(line.clone());
                    }
                    logs.lock().unwrap().push(line);
                }
            });
        }
        let line = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(l) => l,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(logs.lock().unwrap().join("\n"));
            }
        };
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        // A master has no listener port, a slave no source port: 0.0.0.0:0 then.
        let addr = |k: &str| {
            v[k].as_str()
                .and_then(|a| a.parse::<SocketAddr>().ok())
                .unwrap_or_else(|| "0.0.0.0:0".parse().unwrap())
        };
        Ok(ServerProcess {
            listen: addr("listeners"),
            source: addr("sources"),
            admin: addr("admin"),
            child,
            logs,
            dir,
        })
    }

    /// Every log line so far (JSON).
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    /// Log lines containing `needle`.
    pub fn log_lines(&self, needle: &str) -> Vec<String> {
        self.logs()
            .into_iter()
            .filter(|l| l.contains(needle))
            .collect()
    }

    /// Waits until a log line contains `needle`.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> Option<String> {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if let Some(l) = self.log_lines(needle).into_iter().next() {
                return Some(l);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// A metric's value from `/metrics` on the admin port; `series` is the
    /// name with labels exactly as exposed, e.g. `streammachine_sources{mount="test"}`.
    pub fn metric(&self, series: &str) -> Option<f64> {
        let body = String::from_utf8(http_get(self.admin, "/metrics", &[]).body).unwrap();
        body.lines()
            .find_map(|l| {
                l.strip_prefix(series)
                    .and_then(|rest| rest.strip_prefix(' '))
            })
            .and_then(|v| v.trim().parse().ok())
    }

    /// An Icecast source on `mount` sends `data` and leaves; returns once the
    /// server has taken all of it (the source is counted out).
    pub fn send_source(&self, mount: &str, password: &str, data: &[u8]) {
        let mut src = Source::connect(self.source, mount, password, SourceMethod::Ice, &[])
            .unwrap_or_else(|e| panic!("source on {mount}: {e}"));
        src.send(data).unwrap();
        drop(src);
        assert!(
            self.wait_metric(
                &format!("streammachine_source_connected{{mount=\"{mount}\"}}"),
                0.0,
                Duration::from_secs(5)
            ),
            "the source on {mount} did not end"
        );
    }

    /// Waits until a metric has `value`.
    pub fn wait_metric(&self, series: &str, value: f64, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if self.metric(series) == Some(value) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        false
    }

    /// Waits until a metric is at least `value`.
    pub fn wait_metric_at_least(&self, series: &str, value: f64, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if self.metric(series).is_some_and(|v| v >= value) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        false
    }

    /// Sends SIGTERM and waits for the process to exit; returns its exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let end = Instant::now() + Duration::from_secs(20);
        while Instant::now() < end {
            if let Ok(Some(st)) = self.child.try_wait() {
                // Let the log reader thread catch up with the last lines.
                std::thread::sleep(Duration::from_millis(200));
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Waits for the process to exit by itself; returns its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if let Ok(Some(st)) = self.child.try_wait() {
                std::thread::sleep(Duration::from_millis(200));
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// PID of the process.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Is it still running?
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A free TCP port on 127.0.0.1 (bound and released; good enough for tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A complete short HTTP response.
#[derive(Debug)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends a request and reads the response head; returns the socket positioned
/// at the body.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (TcpStream, u16, Vec<(String, String)>, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let (status, headers, rest) = read_head(&mut s);
    (s, status, headers, rest)
}

/// Reads a response head; returns status, headers and bytes read past it.
pub fn read_head(s: &mut TcpStream) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    let end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i;
        }
        let n = s.read(&mut tmp).unwrap();
        assert!(
            n > 0,
            "connection closed before a response head: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&tmp[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status = status_line.split(' ').nth(1).unwrap().parse().unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers, buf[end + 4..].to_vec())
}

/// GET a short response (reads to the end).
pub fn http_get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
    http_call(addr, "GET", path, headers)
}

/// Any method, short response read to close.
pub fn http_call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> HttpResponse {
    let (mut s, status, headers, mut body) = request(addr, method, path, headers);
    if method != "HEAD" {
        s.read_to_end(&mut body).unwrap();
    }
    HttpResponse {
        status,
        headers,
        body,
    }
}

/// A request with a body (Content-Length), response read to close.
pub fn http_send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let mut all = req.into_bytes();
    all.extend_from_slice(body);
    s.write_all(&all).unwrap();
    let (status, headers, mut rest) = read_head(&mut s);
    s.read_to_end(&mut rest).unwrap();
    HttpResponse {
        status,
        headers,
        body: rest,
    }
}

/// Reads from `s` until `n` bytes are collected, the peer closes, the
/// overall `timeout` passes, or nothing arrives for the socket's read timeout
/// (so "read until the stream goes quiet" is `n = usize::MAX`).
pub fn read_n(s: &mut TcpStream, mut have: Vec<u8>, n: usize, timeout: Duration) -> Vec<u8> {
    let end = Instant::now() + timeout;
    let mut tmp = vec![0u8; 64 * 1024];
    while have.len() < n && Instant::now() < end {
        match s.read(&mut tmp) {
            Ok(0) => break,
            Ok(k) => have.extend_from_slice(&tmp[..k]),
            Err(_) => break,
        }
    }
    have
}

/// Reads a listener in a thread until the stream goes quiet for `quiet` (or
/// closes); returns `rest` and everything after it.
pub fn read_in_background(
    mut s: TcpStream,
    rest: Vec<u8>,
    quiet: Duration,
) -> std::thread::JoinHandle<Vec<u8>> {
    s.set_read_timeout(Some(quiet)).unwrap();
    std::thread::spawn(move || read_n(&mut s, rest, usize::MAX, Duration::from_secs(300)))
}

/// Sends a signal to a process (`STOP`, `CONT`, `HUP`…).
pub fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig} {pid}");
}

/// Reads everything until the peer closes.
pub fn read_to_close(s: &mut TcpStream, mut have: Vec<u8>) -> Vec<u8> {
    s.read_to_end(&mut have).unwrap();
    have
}

/// An Icecast source client speaking the protocol by hand.
#[derive(Debug)]
pub struct Source {
    /// The connection, after the server's go-ahead.
    pub sock: TcpStream,
}

/// How the source client connects.
#[derive(Debug, Clone, Copy)]
pub enum SourceMethod {
    /// `SOURCE /m ICE/1.0`.
    Ice,
    /// `SOURCE /m HTTP/1.0`.
    SourceHttp,
    /// `PUT /m HTTP/1.1` with `Expect: 100-continue`.
    PutExpect,
}

impl Source {
    /// Connects, authenticates and returns once the server said go.
    /// `Err` carries the server's complete reply when it refused.
    pub fn connect(
        addr: SocketAddr,
        mount: &str,
        password: &str,
        method: SourceMethod,
        extra: &[(&str, &str)],
    ) -> Result<Source, String> {
        use base64::Engine as _;
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("source:{password}"));
        let line = match method {
            SourceMethod::Ice => format!("SOURCE /{mount} ICE/1.0\r\n"),
            SourceMethod::SourceHttp => format!("SOURCE /{mount} HTTP/1.0\r\n"),
            SourceMethod::PutExpect => {
                format!("PUT /{mount} HTTP/1.1\r\nHost: {addr}\r\nExpect: 100-continue\r\n")
            }
        };
        let mut req = format!("{line}Authorization: Basic {auth}\r\nUser-Agent: sm-test\r\n");
        for (n, v) in extra {
            req.push_str(&format!("{n}: {v}\r\n"));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes()).unwrap();
        let mut reply = Vec::new();
        let mut tmp = [0u8; 1024];
        loop {
            if find(&reply, b"\r\n\r\n").is_some() {
                break;
            }
            match s.read(&mut tmp) {
                Ok(0) | Err(_) => break,
                Ok(n) => reply.extend_from_slice(&tmp[..n]),
            }
        }
        let text = String::from_utf8_lossy(&reply).into_owned();
        if text.starts_with("HTTP/1.0 200") || text.starts_with("HTTP/1.1 100") {
            Ok(Source { sock: s })
        } else {
            let mut rest = Vec::new();
            let _ = s.read_to_end(&mut rest);
            Err(format!("{text}{}", String::from_utf8_lossy(&rest)))
        }
    }

    /// Sends bytes as fast as the server takes them.
    pub fn send(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.sock.write_all(data)
    }

    /// Sends `data` frame by frame at real-time pace; returns the wall-clock
    /// time (µs since the epoch) at which each frame was sent.
    pub fn send_realtime(
        &mut self,
        data: &[u8],
        frames: &[(usize, usize, u32)],
        sample_rate: u32,
    ) -> std::io::Result<Vec<i64>> {
        let start = Instant::now();
        let mut sent_at = Vec::with_capacity(frames.len());
        let mut samples = 0u64;
        for &(o, l, s) in frames {
            let due = Duration::from_micros(samples * 1_000_000 / u64::from(sample_rate));
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                std::thread::sleep(wait);
            }
            sent_at.push(now_micros());
            self.sock.write_all(&data[o..o + l])?;
            samples += u64::from(s);
        }
        Ok(sent_at)
    }
}

/// Plays `secs` of `data` (44.1 kHz) in real time into `mount` of `server`,
/// in a thread.
pub fn feed(
    server: &ServerProcess,
    mount: &'static str,
    pw: &'static str,
    data: Vec<u8>,
    codec: Codec,
    secs: f64,
) -> std::thread::JoinHandle<()> {
    let addr = server.source;
    std::thread::spawn(move || {
        let frames = frames_of(&data, codec);
        let per = f64::from(frames[0].2) / 44_100.0;
        let n = ((secs / per) as usize).min(frames.len());
        let mut src = Source::connect(addr, mount, pw, SourceMethod::Ice, &[]).unwrap();
        src.send_realtime(&data, &frames[..n], 44_100).unwrap();
    })
}

/// µs since the epoch.
pub fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64
}

/// Connects an ICY listener to `path` (`Icy-MetaData: 1`): the socket, the
/// `icy-metaint` the server announced, and the bytes read after the head.
pub fn icy_listener(addr: SocketAddr, path: &str) -> (TcpStream, usize, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\nIcy-MetaData: 1\r\n\r\n").as_bytes())
        .unwrap();
    let (code, headers, rest) = read_head(&mut s);
    assert_eq!(code, 200, "{path}");
    let metaint = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("icy-metaint"))
        .expect("an icy-metaint header")
        .1
        .parse()
        .unwrap();
    (s, metaint, rest)
}

/// Splits an ICY stream into audio and (audio offset, metadata text) blocks;
/// panics unless every block sits exactly `metaint` audio bytes after the previous.
pub fn strip_icy(wire: &[u8], metaint: usize) -> (Vec<u8>, Vec<(usize, String)>) {
    let mut audio = Vec::with_capacity(wire.len());
    let mut metas = Vec::new();
    let mut i = 0;
    loop {
        let n = metaint.min(wire.len() - i);
        audio.extend_from_slice(&wire[i..i + n]);
        i += n;
        if i >= wire.len() {
            break;
        }
        let len = wire[i] as usize * 16;
        if i + 1 + len > wire.len() {
            break; // cut inside a block at the end of the capture
        }
        let text = String::from_utf8_lossy(&wire[i + 1..i + 1 + len])
            .trim_end_matches('\0')
            .to_string();
        if len > 0 {
            metas.push((audio.len(), text));
        }
        i += 1 + len;
    }
    (audio, metas)
}

/// Decodes a file with ffmpeg; returns its error output (empty when clean).
pub fn ffmpeg_decode_errors(path: &Path) -> String {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-v", "error", "-i"])
        .arg(path)
        .args(["-f", "null", "-"])
        .output()
        .expect("run ffmpeg");
    let mut text = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        text.push_str(&format!("\nffmpeg exited with {}", out.status));
    }
    text
}

/// Duration of a media file according to ffprobe, in seconds.
pub fn ffprobe_duration(path: &Path) -> f64 {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "format=duration",
            "-of",
            "csv=p=0",
        ])
        .arg(path)
        .output()
        .expect("run ffprobe");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(-1.0)
}

/// Starts ffmpeg as an Icecast source client playing `input` in real time,
/// looped, with `args` before the output URL (codec and container options).
pub fn ffmpeg_source(input: &Path, args: &[&str], url: &str) -> Child {
    let mut cmd = Command::new("ffmpeg");
    cmd.args([
        "-hide_banner",
        "-nostdin",
        "-v",
        "error",
        "-re",
        "-stream_loop",
        "-1",
        "-i",
    ])
    .arg(input);
    spawn_source(cmd, args, url)
}

/// Starts ffmpeg as an Icecast source client sending a sine of `hz` for
/// `seconds`, at `rate` times real time, encoded with `args` (codec and
/// container options).
pub fn ffmpeg_tone_source(url: &str, hz: u32, seconds: u32, rate: &str, args: &[&str]) -> Child {
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-nostdin", "-v", "error", "-readrate", rate])
        .args(["-f", "lavfi", "-i"])
        .arg(format!(
            "sine=frequency={hz}:sample_rate=44100:duration={seconds}"
        ));
    spawn_source(cmd, args, url)
}

fn spawn_source(mut cmd: Command, args: &[&str], url: &str) -> Child {
    cmd.args(args)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ffmpeg")
}

/// Path of a fixture file.
pub fn fixture_path(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../streamer/fixtures")
        .join(path)
}

/// A real `redis-server` on a free loopback port, for the config-store tests.
#[derive(Debug)]
pub struct RedisProcess {
    child: Child,
    /// Its port.
    pub port: u16,
}

impl RedisProcess {
    /// Starts one (no persistence) and waits until it accepts connections.
    pub fn start() -> RedisProcess {
        require_redis();
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let mut child = Command::new("redis-server")
                .args([
                    "--port",
                    &port.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ])
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn redis-server");
            let out = child.stdout.take().unwrap();
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines() {
                    let Ok(line) = line else { break };
                    if line.contains("Ready to accept connections") {
                        let _ = tx.send(());
                    }
                }
            });
            if rx.recv_timeout(Duration::from_secs(10)).is_ok() {
                return RedisProcess { child, port };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("redis-server did not start");
    }

    /// `redis://127.0.0.1:<port>/<db>`.
    pub fn url(&self, db: u32) -> String {
        format!("redis://127.0.0.1:{}/{db}", self.port)
    }

    /// Runs a command with redis-cli and returns its output.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Stops it.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RedisProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

fn require_redis() {
    let ok = Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok();
    assert!(ok, "redis-server is required for this test (apt-get install redis-server; test.sh installs it)");
}
