//! Reading one request head, incrementally and within a size bound.
//!
//! Both the listener port and the Icecast source port speak HTTP/1.x; sources
//! may also say `ICE/1.0`. Whatever follows the head in the same read stays in
//! the caller's buffer: for a source those are the first audio bytes (the
//! original dropped them), for a listener a pipelined request.

use std::borrow::Cow;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

/// At most this many header lines.
const MAX_HEADERS: usize = 48;

/// Why no request could be read.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// The peer closed the connection before a complete head (or before any byte).
    #[error("connection closed before a complete request")]
    Closed,
    /// The head exceeded the size bound.
    #[error("request head larger than {0} bytes")]
    TooLarge(usize),
    /// Not an HTTP (or ICE) request.
    #[error("malformed request: {0}")]
    Malformed(String),
    /// A socket error.
    #[error("read error: {0}")]
    Io(#[from] std::io::Error),
}

/// A parsed request head.
#[derive(Debug, Clone)]
pub struct Request {
    /// e.g. `GET`, `SOURCE`, `PUT`.
    pub method: String,
    /// The path, without the query string, as sent.
    pub path: String,
    /// The raw query string (after `?`), possibly empty.
    pub query: String,
    /// Minor version: 0 for HTTP/1.0 and ICE/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    /// True when the request line said `ICE/1.x`.
    pub ice: bool,
    /// Header names in lower case, values as sent.
    pub headers: Vec<(String, String)>,
}

impl Request {
    /// The first header with this (lower-case) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Decoded query parameters.
    pub fn query_pairs(&self) -> impl Iterator<Item = (Cow<'_, str>, Cow<'_, str>)> {
        form_urlencoded::parse(self.query.as_bytes())
    }

    /// The first query parameter with this name.
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }

    /// Whether the client wants the connection kept open after a short response.
    pub fn keep_alive(&self) -> bool {
        let conn = self.header("connection").map(str::to_ascii_lowercase);
        match self.minor_version {
            0 => conn.is_some_and(|c| c.contains("keep-alive")),
            _ => !conn.is_some_and(|c| c.contains("close")),
        }
    }
}

/// Reads until `buf` holds a complete head, parses it and removes it from `buf`.
/// `Ok(None)` means the peer closed cleanly before sending anything.
pub async fn read_request<R: AsyncRead + Unpin>(
    io: &mut R,
    buf: &mut BytesMut,
    max_head: usize,
) -> Result<Option<Request>, RequestError> {
    loop {
        if let Some((req, used)) = parse(buf, max_head)? {
            buf.advance(used);
            return Ok(Some(req));
        }
        if buf.len() >= max_head {
            return Err(RequestError::TooLarge(max_head));
        }
        buf.reserve(512.min(max_head - buf.len()).max(128));
        let n = io.read_buf(buf).await?;
        if n == 0 {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err(RequestError::Closed)
            };
        }
    }
}

/// Parses a head from the front of `data`, if it is complete.
pub fn parse(data: &[u8], max_head: usize) -> Result<Option<(Request, usize)>, RequestError> {
    let window = &data[..data.len().min(max_head)];
    // ICE/1.0 is HTTP/1.0 by another name: parse a copy with the name changed.
    let line_end = window.iter().position(|&b| b == b'\n');
    if let Some(end) = line_end {
        let line = window[..end].strip_suffix(b"\r").unwrap_or(&window[..end]);
        if line.ends_with(b" ICE/1.0") || line.ends_with(b" ICE/1.1") {
            let cut = line.len() - "ICE/1.0".len();
            let mut copy = Vec::with_capacity(window.len() + 1);
            copy.extend_from_slice(&window[..cut]);
            copy.extend_from_slice(b"HTTP/1.0");
            copy.extend_from_slice(&window[line.len()..]);
            return Ok(parse_http(&copy)?.map(|(mut r, used)| {
                r.ice = true;
                r.minor_version = 0;
                (r, used - 1)
            }));
        }
    } else if window.len() >= max_head {
        return Err(RequestError::TooLarge(max_head));
    } else if ends_in_ice_version_prefix(window) {
        // `SOURCE /live IC` with the rest still in flight: not yet an error.
        return Ok(None);
    }
    parse_http(window)
}

/// Whether an unfinished request line ends in what may become ` ICE/1.x`.
fn ends_in_ice_version_prefix(line: &[u8]) -> bool {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let spaces = line.iter().filter(|&&b| b == b' ').count();
    let last = line.rsplit(|&b| b == b' ').next().unwrap_or_default();
    spaces == 2 && !last.is_empty() && [b"ICE/1.0", b"ICE/1.1"].iter().any(|v| v.starts_with(last))
}

fn parse_http(data: &[u8]) -> Result<Option<(Request, usize)>, RequestError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let used = match req.parse(data) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(RequestError::Malformed(format!(
                "more than {MAX_HEADERS} header lines"
            )))
        }
        Err(e) => return Err(RequestError::Malformed(e.to_string())),
    };
    let method = req.method.unwrap_or_default().to_string();
    let target = req.path.unwrap_or_default();
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (target.to_string(), String::new()),
    };
    let headers = req
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_ascii_lowercase(),
                String::from_utf8_lossy(h.value).trim().to_string(),
            )
        })
        .collect();
    Ok(Some((
        Request {
            method,
            path,
            query,
            minor_version: req.version.unwrap_or(0),
            ice: false,
            headers,
        },
        used,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_listener_request() {
        let raw = b"GET /test?offset=30&at=2026-01-01T09%3A00%3A00Z HTTP/1.1\r\nHost: x\r\nIcy-MetaData: 1\r\n\r\nEXTRA";
        let (r, used) = parse(raw, 8192).unwrap().unwrap();
        assert_eq!(r.method, "GET");
        assert_eq!(r.path, "/test");
        assert_eq!(r.query_param("offset").as_deref(), Some("30"));
        assert_eq!(r.query_param("at").as_deref(), Some("2026-01-01T09:00:00Z"));
        assert_eq!(r.header("icy-metadata"), Some("1"));
        assert_eq!(&raw[used..], b"EXTRA");
        assert!(r.keep_alive());
    }

    #[test]
    fn an_ice_request_line_in_pieces_waits_for_the_rest() {
        let raw = b"SOURCE /live ICE/1.0\r\nAuthorization: Basic c291cmNlOmhhY2ttZQ==\r\n\r\n";
        for cut in 1..raw.len() {
            assert!(
                matches!(parse(&raw[..cut], 16 * 1024), Ok(None)),
                "{:?}",
                String::from_utf8_lossy(&raw[..cut])
            );
        }
        let (req, used) = parse(raw, 16 * 1024).unwrap().unwrap();
        assert!(req.ice && used == raw.len());
    }

    #[test]
    fn parses_ice_and_keeps_following_bytes() {
        let raw = b"SOURCE /live ICE/1.0\r\nAuthorization: Basic c291cmNlOmhhY2ttZQ==\r\nice-name: Radio\r\n\r\n\xff\xfb\x90";
        let (r, used) = parse(raw, 8192).unwrap().unwrap();
        assert!(r.ice);
        assert_eq!(r.method, "SOURCE");
        assert_eq!(r.path, "/live");
        assert_eq!(r.minor_version, 0);
        assert_eq!(r.header("ice-name"), Some("Radio"));
        assert_eq!(&raw[used..], b"\xff\xfb\x90");
    }

    #[test]
    fn partial_heads_wait_and_junk_is_rejected() {
        assert!(parse(b"GET / HTTP/1.1\r\nHost:", 8192).unwrap().is_none());
        assert!(matches!(
            parse(b"\x16\x03\x01 garbage\r\n\r\n", 8192),
            Err(RequestError::Malformed(_))
        ));
        assert!(matches!(
            parse(&[b'A'; 9000], 8192),
            Err(RequestError::TooLarge(8192))
        ));
    }

    #[tokio::test]
    async fn reads_across_pieces_and_bounds_the_head() {
        let (mut a, mut b) = tokio::io::duplex(64);
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            for piece in [&b"GET /a HT"[..], b"TP/1.0\r\n", b"\r\n"] {
                a.write_all(piece).await.unwrap();
            }
            let big = vec![b'x'; 5000];
            a.write_all(b"GET /b HTTP/1.0\r\nX: ").await.unwrap();
            let _ = a.write_all(&big).await;
        });
        let mut buf = BytesMut::new();
        let r = read_request(&mut b, &mut buf, 4096).await.unwrap().unwrap();
        assert_eq!(r.path, "/a");
        assert!(!r.keep_alive());
        let e = read_request(&mut b, &mut buf, 4096).await.unwrap_err();
        assert!(matches!(e, RequestError::TooLarge(4096)));
        drop(b);
        let _ = writer.await;
    }
}
