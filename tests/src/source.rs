//! Encoders: an Icecast source client of our own and ffmpeg.

use crate::*;

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
        Source::connect_from(None, addr, mount, password, method, extra)
    }

    /// [`Source::connect`] from a given local address (another encoder
    /// host: any of 127.0.0.0/8).
    pub fn connect_from(
        local: Option<std::net::IpAddr>,
        addr: SocketAddr,
        mount: &str,
        password: &str,
        method: SourceMethod,
        extra: &[(&str, &str)],
    ) -> Result<Source, String> {
        use base64::Engine as _;
        let mut s = connect_from(local, addr);
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

/// A TCP connection to `addr`, from `local` when given (port chosen by the OS).
pub fn connect_from(local: Option<std::net::IpAddr>, addr: SocketAddr) -> TcpStream {
    let Some(ip) = local else {
        return TcpStream::connect(addr).unwrap();
    };
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.bind(&SocketAddr::new(ip, 0).into()).unwrap();
    sock.connect(&addr.into()).unwrap();
    sock.into()
}
