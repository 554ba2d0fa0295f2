//! Building short HTTP responses.

use std::fmt::Write as _;

/// A complete short response (status line, headers, body) as bytes.
#[derive(Debug)]
pub struct Response {
    status: u16,
    reason: &'static str,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

impl Response {
    /// A response with a status and no body yet.
    pub fn new(status: u16, reason: &'static str) -> Self {
        Response {
            status,
            reason,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// A `text/plain` response whose body ends with a newline.
    pub fn text(status: u16, reason: &'static str, body: impl Into<String>) -> Self {
        let mut body = body.into();
        if !body.ends_with('\n') {
            body.push('\n');
        }
        Response::new(status, reason)
            .header("Content-Type", "text/plain; charset=utf-8")
            .body(body.into_bytes())
    }

    /// A JSON response.
    pub fn json(value: &serde_json::Value) -> Self {
        Response::new(200, "OK")
            .header("Content-Type", "application/json")
            .body(value.to_string().into_bytes())
    }

    /// Adds a header.
    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: Vec<u8>) -> Self {
        self.body = body;
        self
    }

    /// The status code.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// Its status, headers and body (for an HTTP server that writes them).
    pub fn into_parts(self) -> (u16, Vec<(&'static str, String)>, Vec<u8>) {
        (self.status, self.headers, self.body)
    }

    /// Serialises the response. `head_only` leaves out the body (HEAD requests)
    /// but keeps its Content-Length.
    pub fn to_bytes(&self, keep_alive: bool, head_only: bool) -> Vec<u8> {
        let mut head = String::with_capacity(256);
        let _ = write!(head, "HTTP/1.1 {} {}\r\n", self.status, self.reason);
        for (n, v) in &self.headers {
            let _ = write!(head, "{n}: {v}\r\n");
        }
        let _ = write!(head, "Content-Length: {}\r\n", self.body.len());
        head.push_str(if keep_alive {
            "Connection: keep-alive\r\n\r\n"
        } else {
            "Connection: close\r\n\r\n"
        });
        let mut out = head.into_bytes();
        if !head_only {
            out.extend_from_slice(&self.body);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialises_with_length_and_connection() {
        let r = Response::text(404, "Not Found", "no such stream");
        let s = String::from_utf8(r.to_bytes(false, false)).unwrap();
        assert!(s.starts_with("HTTP/1.1 404 Not Found\r\n"));
        assert!(s.contains("Content-Length: 15\r\n"));
        assert!(s.ends_with("Connection: close\r\n\r\nno such stream\n"));
        let h = String::from_utf8(r.to_bytes(true, true)).unwrap();
        assert!(h.ends_with("Connection: keep-alive\r\n\r\n"));
    }
}
