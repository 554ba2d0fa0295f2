//! Headless Chromium for the browser tests: the executable, a small page
//! server the page reports back to, and the browser process (its own process
//! group, a fresh profile, killed on drop).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::{find, scratch_dir};

/// The Chromium to drive: `SM_CHROMIUM`, else `chromium` (test.sh installs it).
pub fn chromium() -> String {
    let exe = std::env::var("SM_CHROMIUM").unwrap_or_else(|_| "chromium".to_string());
    let ok = Command::new(&exe)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "{exe} is required for this test and did not run: apt-get install chromium \
         (test.sh installs it; SM_CHROMIUM names another executable)"
    );
    exe
}

/// What the page last reported (JSON), shared with the page server.
pub type Reports = Arc<Mutex<Option<String>>>;

/// Serves `files` (path, content type, body) and takes the page's reports
/// (`POST /report`) on 127.0.0.1, one thread per connection; returns its
/// address.
pub fn serve_page(
    files: Vec<(&'static str, &'static str, Vec<u8>)>,
    reports: Reports,
) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let files = Arc::new(files);
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let (files, reports) = (Arc::clone(&files), Arc::clone(&reports));
            std::thread::spawn(move || {
                let _ = handle(conn, &files, &reports);
            });
        }
    });
    addr
}

/// One request (the response closes the connection).
fn handle(
    mut conn: TcpStream,
    files: &[(&'static str, &'static str, Vec<u8>)],
    reports: &Reports,
) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut buf = Vec::new();
    let mut tmp = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i + 4;
        }
        let n = conn.read(&mut tmp)?;
        if n == 0 {
            return Ok(()); // a speculative connection that sent nothing
        }
        buf.extend_from_slice(&tmp[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut words = head.split_whitespace();
    let method = words.next().unwrap_or_default().to_string();
    let path = words.next().unwrap_or_default().to_string();
    let length: usize = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(n, _)| n.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < length {
        let n = conn.read(&mut tmp)?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&tmp[..n]);
    }
    let file = files.iter().find(|f| f.0 == path);
    let (status, ctype, content): (&str, &str, &[u8]) = match (method.as_str(), file) {
        ("GET", Some((_, ctype, body))) => ("200 OK", ctype, body),
        ("POST", _) if path == "/report" => {
            *reports.lock().unwrap() = Some(String::from_utf8_lossy(&body).into_owned());
            ("204 No Content", "text/plain", b"")
        }
        _ => ("404 Not Found", "text/plain", b"not found"),
    };
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        content.len()
    )
    .into_bytes();
    out.extend_from_slice(content);
    conn.write_all(&out)
}

/// Headless Chromium on one URL, in its own process group, with a fresh
/// profile; killed (the whole group) on drop.
#[derive(Debug)]
pub struct Browser {
    child: Child,
    dir: PathBuf,
    log: PathBuf,
}

impl Browser {
    pub fn open(exe: &str, url: &str) -> Browser {
        let dir = scratch_dir("chromium");
        let log = dir.join("stderr.log");
        let child = Command::new(exe)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--autoplay-policy=no-user-gesture-required",
                "--enable-logging=stderr",
                "--v=0",
            ])
            .arg(format!("--user-data-dir={}", dir.join("profile").display()))
            .arg(url)
            .env("HOME", &dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {exe}: {e}"));
        Browser { child, dir, log }
    }

    /// The last lines Chromium wrote (console messages and its own errors),
    /// less its complaints about the desktop services a container lacks.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let noise = ["dbus", "bluez", "idle_linux", "vaapi", "sandbox_linux"];
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| !noise.iter().any(|n| l.contains(n)))
            .collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// hls.js's console warnings and errors (its transmuxing worker logs to
    /// the console, not to the page's logger).
    pub fn console_warnings(&self) -> Vec<String> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines()
            .filter(|l| {
                l.contains(":CONSOLE") && (l.contains("\"[warn]") || l.contains("\"[error]"))
            })
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The group id is the child's pid, not reusable before the wait below.
        let group = format!("-{}", self.child.id());
        let signal = |sig: &str| {
            Command::new("kill")
                .args(["-s", sig, "--", &group])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        signal("KILL");
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Its renderer and helper processes go with it; wait for them briefly.
        let end = Instant::now() + Duration::from_secs(2);
        while signal("0") && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
