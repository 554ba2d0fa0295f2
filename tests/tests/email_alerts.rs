//! Email alerts (issue 13) through a real SMTP server: aiosmtpd (from PyPI,
//! installed by test.sh; tests/tools/smtp_server.py) requiring STARTTLS
//! with a private CA's certificate and AUTH. One message per raise and per
//! clear; wrong credentials and an unreachable server are retried and
//! logged, and audio goes on meanwhile.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use streammachine_tests::tls::private_ca;
use streammachine_tests::*;

const EXE: &str = env!("CARGO_BIN_EXE_streammachine-under-test");
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tools/smtp_server.py");

/// The SMTP server, killed when dropped.
struct Smtp {
    child: Child,
    port: u16,
    out: PathBuf,
    ca: PathBuf,
}

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Smtp {
    fn start(dir: &Path) -> Smtp {
        require("openssl");
        require("python3");
        let ca = private_ca(dir, "DNS:localhost,IP:127.0.0.1");
        let port = free_port();
        let out = dir.join("mail.jsonl");
        let mut child = Command::new("python3")
            .arg(SCRIPT)
            .arg(port.to_string())
            .arg(&ca.cert)
            .arg(&ca.key)
            .args(["alerts", "s3cret"])
            .arg(&out)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(
            line.trim(),
            "ready",
            "the SMTP server did not start (is aiosmtpd installed?)"
        );
        Smtp {
            child,
            port,
            out,
            ca: ca.ca,
        }
    }

    fn messages(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn wait_messages(&self, n: usize, timeout: Duration) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let m = self.messages();
            if m.len() >= n {
                return m;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {n} messages: {m:?}",
                m.len()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn config(port: u16, password: &str, ca: &Path) -> String {
    format!(
        "alerts:\n  raiseSeconds: 1\n  clearSeconds: 1\n  email: {{ server: localhost, port: {port}, username: alerts, password: {password}, from: \"StreamMachine <sm@radio.test>\", to: [ops@radio.test, oncall@radio.test], caFile: {} }}\nsourceMounts:\n  - {{ key: main, password: pw, monitored: true }}\nstreams:\n  - {{ key: radio, sourceMount: main }}\n",
        ca.display()
    )
}

#[test]
fn one_message_per_raise_and_per_clear_over_starttls_with_auth() {
    let dir = scratch_dir("smtp");
    let smtp = Smtp::start(&dir);
    let server = ServerProcess::start(EXE, &config(smtp.port, "s3cret", &smtp.ca));
    // No encoder: source_lost is raised after 1 s, one message.
    let m = smtp.wait_messages(1, Duration::from_secs(20));
    let data = m[0]["data"].as_str().unwrap();
    assert!(
        data.contains("Subject: [StreamMachine] ALERT source_lost: main"),
        "{data}"
    );
    assert_eq!(m[0]["from"], "sm@radio.test");
    assert_eq!(
        m[0]["to"],
        serde_json::json!(["ops@radio.test", "oncall@radio.test"])
    );
    assert!(
        data.contains("state:   raised") && data.contains("time:    20"),
        "{data}"
    );
    // An encoder connects: cleared, one more message.
    let data_mp3 = fixture("mp3/mp3-44100-128-s.mp3");
    let mut src = Source::connect(server.source, "main", "pw", SourceMethod::Ice, &[]).unwrap();
    src.send(&data_mp3[..100_000]).unwrap();
    let m = smtp.wait_messages(2, Duration::from_secs(20));
    let data = m[1]["data"].as_str().unwrap();
    assert!(
        data.contains("Subject: [StreamMachine] cleared source_lost: main"),
        "{data}"
    );
    // And no more (the state does not change again): watched for 3 s.
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        assert_eq!(smtp.messages().len(), 2, "{:?}", smtp.messages());
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(src);
}

#[test]
fn wrong_credentials_and_an_unreachable_server_are_retried_logged_and_never_hold_audio() {
    let dir = scratch_dir("smtp-bad");
    let smtp = Smtp::start(&dir);
    let wrong = ServerProcess::start(EXE, &config(smtp.port, "guess", &smtp.ca));
    let down = ServerProcess::start(EXE, &config(free_port(), "s3cret", &smtp.ca));
    for (server, why) in [(&wrong, "credentials"), (&down, "unreachable")] {
        for attempt in ["\"attempt\":1", "\"attempt\":2"] {
            let deadline = Instant::now() + Duration::from_secs(20);
            while !server
                .log_lines("email alert failed")
                .iter()
                .any(|l| l.contains(attempt))
            {
                assert!(
                    Instant::now() < deadline,
                    "{why}: {attempt} not logged: {:?}",
                    server.logs()
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        // Audio meanwhile: an encoder and a listener.
        let data = fixture("mp3/mp3-44100-128-s.mp3");
        server.send_source("main", "pw", &data[..200_000]);
        let (mut s, status, _, rest) = request(server.listen, "GET", "/radio", &[]);
        let audio = read_n(&mut s, rest, 16_000, Duration::from_secs(10));
        assert_eq!((status, audio.len() >= 16_000), (200, true), "{why}");
    }
    assert!(smtp.messages().is_empty(), "nothing delivered");
}
