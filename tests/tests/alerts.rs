//! Alerts against a real server and a local HTTP receiver standing in for the
//! webhook and PagerDuty: trigger after the delay, no flapping, resolve, retry.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use streamer::format::Codec;
use streammachine_tests::*;

const EXE: &str = env!("CARGO_BIN_EXE_streammachine-under-test");

/// What the receiver got: (path, JSON body) per request.
type Received = Arc<Mutex<Vec<(String, Value)>>>;

/// Receives POSTs; answers 500 to the first request on `/pd` (to prove retries), then 202.
fn receiver() -> (u16, Received) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = Arc::clone(&got);
    std::thread::spawn(move || {
        let mut pd_seen = 0;
        for conn in l.incoming() {
            let Ok(mut c) = conn else { continue };
            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut buf = Vec::new();
            let mut tmp = [0u8; 4096];
            let (head_end, len) = loop {
                let n = c.read(&mut tmp).unwrap_or(0);
                if n == 0 {
                    break (0, 0);
                }
                buf.extend_from_slice(&tmp[..n]);
                if let Some(e) = find(&buf, b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buf[..e]).to_ascii_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .map_or(0, |v| v.trim().parse().unwrap());
                    break (e + 4, len);
                }
            };
            while buf.len() < head_end + len {
                let n = c.read(&mut tmp).unwrap_or(0);
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&tmp[..n]);
            }
            let path = String::from_utf8_lossy(&buf)
                .split(' ')
                .nth(1)
                .unwrap_or("")
                .to_string();
            let body: Value = serde_json::from_slice(&buf[head_end..]).unwrap_or(Value::Null);
            let status = if path == "/pd" && pd_seen == 0 {
                "500 Internal Server Error"
            } else {
                "202 Accepted"
            };
            if path == "/pd" {
                pd_seen += 1;
            }
            if status.starts_with("202") {
                g.lock().unwrap().push((path, body));
            }
            let _ = c.write_all(
                format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            );
        }
    });
    (port, got)
}

fn wait_for(
    got: &Arc<Mutex<Vec<(String, Value)>>>,
    pred: impl Fn(&[(String, Value)]) -> bool,
    secs: u64,
) -> bool {
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        if pred(&got.lock().unwrap()) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[test]
fn a_monitored_mount_without_a_source_triggers_once_and_resolves() {
    let (port, got) = receiver();
    let server = ServerProcess::start(
        EXE,
        &format!(
            "alerts:\n  raiseSeconds: 1.5\n  clearSeconds: 1.5\n  webhook: {{ url: \"http://127.0.0.1:{port}/hook\" }}\n  pagerduty: {{ routingKey: rk-123, url: \"http://127.0.0.1:{port}/pd\" }}\nsourceMounts:\n  - key: studio\n    password: pw\n    monitored: true\nstreams:\n  - key: live\n    sourceMount: studio\n"
        ),
    );
    // A source that comes and goes within the delay: nothing is raised.
    let data = fixture("mp3/mp3-44100-128-s.mp3");
    let frames = frames_of(&data, Codec::Mp3);
    let mut src = Source::connect(server.source, "studio", "pw", SourceMethod::Ice, &[]).unwrap();
    src.send(&data[..frames[40].0]).unwrap();
    std::thread::sleep(Duration::from_millis(700));
    drop(src);
    let mut src = Source::connect(server.source, "studio", "pw", SourceMethod::Ice, &[]).unwrap();
    src.send(&data[..frames[40].0]).unwrap();
    std::thread::sleep(Duration::from_millis(700));
    drop(src);
    // Now it stays away: raised after 1.5 s.
    assert!(
        wait_for(
            &got,
            |g| g.iter().any(|(p, b)| p == "/hook" && b["active"] == true),
            6
        ),
        "no trigger"
    );
    assert!(
        wait_for(&got, |g| g.iter().any(|(p, _)| p == "/pd"), 8),
        "PagerDuty not reached after a retry"
    );
    let g = got.lock().unwrap().clone();
    let hook: Vec<&Value> = g
        .iter()
        .filter(|(p, _)| p == "/hook")
        .map(|(_, b)| b)
        .collect();
    assert_eq!(hook.len(), 1, "raised once, no flapping: {hook:?}");
    assert_eq!(hook[0]["alert"], "source_lost");
    assert_eq!(hook[0]["subject"], "studio");
    let pd = &g.iter().find(|(p, _)| p == "/pd").unwrap().1;
    assert_eq!(pd["routing_key"], "rk-123");
    assert_eq!(pd["event_action"], "trigger");
    assert_eq!(pd["dedup_key"], "streammachine/source_lost/studio");
    assert_eq!(pd["payload"]["severity"], "critical");
    assert_eq!(
        server.metric("streammachine_alert_active{alert=\"source_lost\",subject=\"studio\"}"),
        Some(1.0)
    );
    assert_eq!(server.log_lines("ALERT raised").len(), 1);
    // The source returns and stays: resolved after 1.5 s, with the same dedup key.
    let addr = server.source;
    let feeder = std::thread::spawn(move || {
        let mut src = Source::connect(addr, "studio", "pw", SourceMethod::Ice, &[]).unwrap();
        src.send_realtime(&data, &frames[..(4.0 * 44_100.0 / 1152.0) as usize], 44_100)
            .unwrap();
    });
    assert!(
        wait_for(
            &got,
            |g| g.iter().any(|(p, b)| p == "/pd"
                && b["event_action"] == "resolve"
                && b["dedup_key"] == "streammachine/source_lost/studio"),
            8
        ),
        "no resolve"
    );
    assert!(wait_for(
        &got,
        |g| g.iter().any(|(p, b)| p == "/hook" && b["active"] == false),
        3
    ));
    assert_eq!(
        server.metric("streammachine_alert_active{alert=\"source_lost\",subject=\"studio\"}"),
        Some(0.0)
    );
    feeder.join().unwrap();
}
