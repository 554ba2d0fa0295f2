//! A proxy (relay) source against a real Icecast 2 server (Debian's
//! `icecast2`): audio and titles come through, the upstream's burst is not
//! taken for real-time audio, and a lost upstream is reconnected.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use streammachine_tests::icecast::Icecast;
use streammachine_tests::*;

const EXE: &str = env!("CARGO_BIN_EXE_streammachine-under-test");

/// Reads an ICY listener until `title` shows up (or `timeout`).
fn hears_title(listen: SocketAddr, stream: &str, title: &str, timeout: Duration) -> bool {
    let (mut s, metaint, mut wire) = icy_listener(listen, &format!("/{stream}"));
    let want = format!("StreamTitle='{title}'");
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        wire = read_n(
            &mut s,
            wire.clone(),
            wire.len() + 4096,
            Duration::from_secs(2),
        );
        let (_, metas) = strip_icy(&wire, metaint);
        if metas.iter().any(|(_, t)| t.contains(&want)) {
            return true;
        }
    }
    false
}

#[test]
fn a_relay_of_a_real_icecast_carries_audio_and_titles_and_reconnects() {
    require("ffmpeg");
    require("icecast2");
    let dir = scratch_dir("icecast");
    let port = free_port();
    let mut icecast = Icecast::start(&dir, port);
    let mut ff = icecast.source();
    icecast.set_title("Relay test");
    let server = ServerProcess::start(
        EXE,
        &format!(
            "admin: {{ token: t }}\nsourceMounts:\n  - key: relay\n    password: pw\n    fallback: {{ url: \"http://127.0.0.1:{port}/live\" }}\nstreams:\n  - key: relayed\n    sourceMount: relay\n"
        ),
    );
    let connected = Instant::now();
    assert!(server.wait_metric_at_least(
        "streammachine_buffer_seconds{stream=\"relayed\"}",
        3.0,
        Duration::from_secs(10)
    ));
    // Icecast's 64 KiB burst (4 s) arrives at once; its chunks must not be
    // stamped ahead of the clock: the newest audio never ends in the future.
    let lag = server
        .metric("streammachine_source_lag_seconds{stream=\"relayed\"}")
        .unwrap();
    assert!(lag >= -0.05, "newest chunk ends {lag} s in the future");
    let held = server
        .metric("streammachine_buffer_seconds{stream=\"relayed\"}")
        .unwrap();
    assert!(
        held <= connected.elapsed().as_secs_f64() + 4.5,
        "{held} s held after {:?}: the burst plus real time, no more",
        connected.elapsed()
    );
    assert!(
        hears_title(
            server.listen,
            "relayed",
            "Relay test",
            Duration::from_secs(10)
        ),
        "the upstream's title is relayed"
    );
    let audio = http_get(server.listen, "/relayed?pump=3", &[]).body;
    let tone = audio_of(
        &fixture("mp3/tone1kHz-44100-128-m.mp3"),
        streamer::format::Codec::Mp3,
    );
    let twice = [tone.as_slice(), tone.as_slice()].concat();
    assert!(
        audio.len() > 4096 && find(&twice, &audio[audio.len() - 4096..]).is_some(),
        "the relayed bytes are the upstream's frames"
    );

    // The upstream goes away; the relay reconnects when it is back.
    let _ = ff.kill();
    let _ = ff.wait();
    icecast.stop();
    assert!(server
        .wait_log("cannot pull the stream", Duration::from_secs(15))
        .is_some());
    let icecast = Icecast::start(&dir, port);
    let mut ff = icecast.source();
    icecast.set_title("Second show");
    assert!(
        hears_title(
            server.listen,
            "relayed",
            "Second show",
            Duration::from_secs(30)
        ),
        "after the reconnect, audio and titles flow again"
    );
    let _ = ff.kill();
    let _ = ff.wait();
}

/// A private CA and a certificate for 127.0.0.1 it signed: the CA
/// certificate (what our relay is told to trust), and the server's
/// certificate + key in one file (what Icecast reads).
fn private_ca(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let ca = streammachine_tests::tls::private_ca(dir, "IP:127.0.0.1");
    let both = dir.join("server-both.pem");
    let pem = [
        std::fs::read(&ca.cert).unwrap(),
        std::fs::read(&ca.key).unwrap(),
    ]
    .concat();
    std::fs::write(&both, pem).unwrap();
    // Icecast reads it after dropping root.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&both, std::fs::Permissions::from_mode(0o644)).unwrap();
    (ca.ca, both)
}

#[test]
fn a_relay_over_https_trusts_its_ca_file_and_refuses_an_unknown_certificate() {
    require("ffmpeg");
    require("icecast2");
    require("openssl");
    let dir = scratch_dir("icecast-tls");
    let (cert, both) = private_ca(&dir);
    let (port, tls_port) = (free_port(), free_port());
    let icecast = Icecast::start_with(&dir, port, Some((tls_port, &both)));
    let mut ff = icecast.source();
    icecast.set_title("Over TLS");
    let config = |ca: &str| {
        format!(
            "sourceMounts:\n  - key: relay\n    password: pw\n    fallback: {{ url: \"https://127.0.0.1:{tls_port}/live\"{ca} }}\nstreams:\n  - key: relayed\n    sourceMount: relay\n"
        )
    };
    let trusted = ServerProcess::start(EXE, &config(&format!(", caFile: {}", cert.display())));
    let untrusted = ServerProcess::start(EXE, &config(""));
    assert!(
        trusted.wait_metric_at_least(
            "streammachine_buffer_seconds{stream=\"relayed\"}",
            2.0,
            Duration::from_secs(10)
        ),
        "nothing relayed over TLS: {:?}",
        trusted.logs()
    );
    assert!(
        hears_title(
            trusted.listen,
            "relayed",
            "Over TLS",
            Duration::from_secs(10)
        ),
        "the title comes through TLS too"
    );
    let refused = untrusted
        .wait_log("cannot pull the stream", Duration::from_secs(10))
        .expect("the untrusted upstream is refused");
    assert!(refused.contains("invalid peer certificate"), "{refused}");
    assert_eq!(
        untrusted.metric("streammachine_buffer_seconds{stream=\"relayed\"}"),
        Some(0.0)
    );
    let _ = ff.kill();
    let _ = ff.wait();
}
