//! Raw HTTP over a real socket: requests, heads, bodies, ICY listeners.

use crate::*;

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

/// Reads everything until the peer closes.
pub fn read_to_close(s: &mut TcpStream, mut have: Vec<u8>) -> Vec<u8> {
    s.read_to_end(&mut have).unwrap();
    have
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
