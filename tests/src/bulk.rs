//! A stand-in for Elasticsearch's `_bulk` API (no Elasticsearch or
//! OpenSearch server can run on these machines): a real HTTP server on
//! 127.0.0.1 that checks the protocol strictly — `POST /_bulk`,
//! `Content-Type: application/x-ndjson`, a body of whole lines each ending in
//! `\n`, an action line (`{"index"|"create": {"_index": <valid name>}}`)
//! before each JSON-object document — and answers as Elasticsearch does:
//! `{"took", "errors", "items": [{"index": {"_index", "status", …}}]}`,
//! with per-item errors for documents a test marks, or a 503 for the first
//! requests it is told to refuse. Every violation is recorded for the test.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

/// What the stand-in saw.
#[derive(Debug, Default)]
pub struct Seen {
    /// Requests received (refused ones too).
    pub requests: usize,
    /// Documents stored, by index.
    pub indices: BTreeMap<String, Vec<Value>>,
    /// Documents refused per item (their `_index` and body).
    pub refused: Vec<Value>,
    /// Protocol violations (each a 400 to the client).
    pub violations: Vec<String>,
}

/// The running stand-in.
#[derive(Debug)]
pub struct Bulk {
    /// Its address.
    pub addr: SocketAddr,
    /// What it saw.
    pub seen: Arc<Mutex<Seen>>,
}

impl Bulk {
    /// Starts one that answers 503 to the first `refuse_first` requests and
    /// refuses (per item, 400 `mapper_parsing_exception`) documents for
    /// which `bad` is true.
    pub fn start(refuse_first: usize, bad: fn(&Value) -> bool) -> Bulk {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let s = Arc::clone(&seen);
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let s = Arc::clone(&s);
                std::thread::spawn(move || {
                    let mut out = conn.try_clone().unwrap();
                    let mut r = BufReader::new(conn);
                    while let Some((status, body)) = one(&mut r, &s, refuse_first, bad) {
                        let head = format!(
                            "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                            body.len()
                        );
                        if out
                            .write_all(head.as_bytes())
                            .and_then(|()| out.write_all(body.as_bytes()))
                            .is_err()
                        {
                            return;
                        }
                    }
                });
            }
        });
        Bulk { addr, seen }
    }
}

/// Reads and answers one request; `None` when the connection ends.
fn one(
    r: &mut BufReader<std::net::TcpStream>,
    seen: &Mutex<Seen>,
    refuse_first: usize,
    bad: fn(&Value) -> bool,
) -> Option<(u16, String)> {
    let mut line = String::new();
    if r.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next()?.to_string(), parts.next()?.to_string());
    let (mut len, mut ctype) = (0usize, String::new());
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).ok()? == 0 {
            return None;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((n, v)) = h.split_once(':') {
            match n.trim().to_ascii_lowercase().as_str() {
                "content-length" => len = v.trim().parse().unwrap_or(0),
                "content-type" => ctype = v.trim().to_string(),
                _ => {}
            }
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    let mut s = seen.lock().unwrap();
    s.requests += 1;
    let violation = |s: &mut Seen, what: String| {
        s.violations.push(what.clone());
        Some((
            400,
            json!({"error": {"type": "illegal_argument_exception", "reason": what}}).to_string(),
        ))
    };
    if method != "POST" || path != "/_bulk" {
        return violation(&mut s, format!("{method} {path}: expected POST /_bulk"));
    }
    if ctype != "application/x-ndjson" {
        return violation(
            &mut s,
            format!("Content-Type {ctype:?}: expected application/x-ndjson"),
        );
    }
    if s.requests <= refuse_first {
        return Some((503, json!({"error": "unavailable"}).to_string()));
    }
    let Ok(text) = String::from_utf8(body) else {
        return violation(&mut s, "the body is not UTF-8".into());
    };
    if !text.ends_with('\n') {
        return violation(&mut s, "the body does not end with a newline".into());
    }
    let lines: Vec<&str> = text.split_terminator('\n').collect();
    if lines.is_empty() || !lines.len().is_multiple_of(2) {
        return violation(
            &mut s,
            format!("{} lines: expected action/document pairs", lines.len()),
        );
    }
    let mut items = Vec::new();
    let mut errors = false;
    for pair in lines.chunks(2) {
        let action: Value = match serde_json::from_str(pair[0]) {
            Ok(v) => v,
            Err(e) => return violation(&mut s, format!("action line {:?}: {e}", pair[0])),
        };
        let Some((kind, meta)) = action
            .as_object()
            .filter(|o| o.len() == 1)
            .and_then(|o| o.iter().next())
        else {
            return violation(
                &mut s,
                format!("action line {:?}: one key expected", pair[0]),
            );
        };
        if kind != "index" && kind != "create" {
            return violation(&mut s, format!("action {kind:?}: expected index or create"));
        }
        let index = meta["_index"].as_str().unwrap_or("").to_string();
        let valid = !index.is_empty()
            && index
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
            && !index.starts_with(['-', '_', '.']);
        if !valid {
            return violation(&mut s, format!("index name {index:?}"));
        }
        let doc: Value = match serde_json::from_str(pair[1]) {
            Ok(v @ Value::Object(_)) => v,
            _ => return violation(&mut s, format!("document {:?}: not a JSON object", pair[1])),
        };
        if bad(&doc) {
            errors = true;
            s.refused.push(doc);
            items.push(json!({kind.clone(): {"_index": index, "status": 400, "error": {"type": "mapper_parsing_exception", "reason": "failed to parse"}}}));
        } else {
            s.indices.entry(index.clone()).or_default().push(doc);
            items.push(json!({kind.clone(): {"_index": index, "_id": format!("{}", items.len()), "status": 201, "result": "created"}}));
        }
    }
    Some((
        200,
        json!({"took": 1, "errors": errors, "items": items}).to_string(),
    ))
}
