//! A small real HTTP/1.1 server on 127.0.0.1 for webhook tests (listener
//! auth): it keeps connections alive, records every form-encoded POST and
//! answers with what a test's function decides (headers, a delay).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One request received: its path and form fields.
#[derive(Debug, Clone)]
pub struct Call {
    /// The request path.
    pub path: String,
    /// The form fields, decoded.
    pub form: HashMap<String, String>,
    /// When it arrived.
    pub at: Instant,
}

/// What to answer.
#[derive(Debug, Clone, Default)]
pub struct Reply {
    /// Status code (200 if 0).
    pub status: u16,
    /// Response headers.
    pub headers: Vec<(String, String)>,
    /// Wait this long before answering.
    pub delay: Duration,
}

type Decide = dyn Fn(&Call) -> Reply + Send + Sync;

/// The running server; it stops with the test process.
#[derive(Debug)]
pub struct Webhook {
    /// Its address.
    pub addr: SocketAddr,
    calls: Arc<Mutex<Vec<Call>>>,
}

impl Webhook {
    /// Starts a server answering with `decide`.
    pub fn start(decide: impl Fn(&Call) -> Reply + Send + Sync + 'static) -> Webhook {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let calls = Arc::new(Mutex::new(Vec::new()));
        let decide: Arc<Decide> = Arc::new(decide);
        let c = Arc::clone(&calls);
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (c, d) = (Arc::clone(&c), Arc::clone(&decide));
                std::thread::spawn(move || serve(conn, &c, &*d));
            }
        });
        Webhook { addr, calls }
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    /// Calls whose `action` field is `action`.
    pub fn actions(&self, action: &str) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.form.get("action").map(String::as_str) == Some(action))
            .collect()
    }

    /// Waits (up to `timeout`) for a call matching `pred`.
    pub fn wait_for(&self, timeout: Duration, pred: impl Fn(&Call) -> bool) -> Option<Call> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(c) = self.calls().into_iter().find(|c| pred(c)) {
                return Some(c);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn serve(conn: TcpStream, calls: &Mutex<Vec<Call>>, decide: &Decide) {
    let mut out = conn.try_clone().unwrap();
    let mut r = BufReader::new(conn);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line.split(' ').nth(1).unwrap_or("").to_string();
        let mut len = 0usize;
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((n, v)) = h.split_once(':') {
                if n.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0; len];
        if r.read_exact(&mut body).is_err() {
            return;
        }
        let call = Call {
            path,
            form: form_urlencoded::parse(&body).into_owned().collect(),
            at: Instant::now(),
        };
        calls.lock().unwrap().push(call.clone());
        let reply = decide(&call);
        std::thread::sleep(reply.delay);
        let status = if reply.status == 0 { 200 } else { reply.status };
        let mut head = format!("HTTP/1.1 {status} X\r\nContent-Length: 2\r\n");
        for (n, v) in &reply.headers {
            head.push_str(&format!("{n}: {v}\r\n"));
        }
        head.push_str("\r\nok");
        if out.write_all(head.as_bytes()).is_err() {
            return;
        }
    }
}
