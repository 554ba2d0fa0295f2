//! A proxy (relay) source against a real Icecast 2 server (Debian's
//! `icecast2`): audio and titles come through, the upstream's burst is not
//! taken for real-time audio, and a lost upstream is reconnected.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use streammachine_tests::*;

const EXE: &str = env!("CARGO_BIN_EXE_streammachine-under-test");

/// A real Icecast 2.4 on a free loopback port, source password `pw`.
struct Icecast {
    child: Child,
    addr: SocketAddr,
}

impl Icecast {
    fn start(dir: &Path, port: u16) -> Icecast {
        let log = dir.join("icecast-log");
        std::fs::create_dir_all(&log).unwrap();
        // Icecast refuses to run as root unless it drops to its own user.
        let root = Command::new("id").arg("-u").output().unwrap().stdout == b"0\n";
        let security = if root {
            Command::new("chown")
                .args(["-R", "icecast2"])
                .arg(&log)
                .status()
                .unwrap();
            "<security><chroot>0</chroot><changeowner><user>icecast2</user><group>icecast</group></changeowner></security>"
        } else {
            ""
        };
        let config = dir.join("icecast.xml");
        std::fs::write(
            &config,
            format!(
                "<icecast><location>test</location><admin>test@localhost</admin>\
                 <limits><clients>20</clients><sources>2</sources><burst-size>65536</burst-size><source-timeout>10</source-timeout></limits>\
                 <authentication><source-password>pw</source-password><admin-user>admin</admin-user><admin-password>adminpw</admin-password></authentication>\
                 <hostname>127.0.0.1</hostname><listen-socket><port>{port}</port><bind-address>127.0.0.1</bind-address></listen-socket>\
                 <paths><basedir>/usr/share/icecast2</basedir><logdir>{}</logdir><webroot>/usr/share/icecast2/web</webroot><adminroot>/usr/share/icecast2/admin</adminroot></paths>\
                 <logging><errorlog>error.log</errorlog><loglevel>2</loglevel></logging>{security}</icecast>",
                log.display()
            ),
        )
        .unwrap();
        let child = Command::new("icecast2")
            .arg("-c")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn icecast2");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "icecast2 did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Icecast { child, addr }
    }

    /// ffmpeg sending a fixture to `/live`, in real time, looped.
    fn source(&self) -> Child {
        ffmpeg_source(
            &fixture_path("mp3/tone1kHz-44100-128-m.mp3"),
            &["-c", "copy", "-f", "mp3", "-content_type", "audio/mpeg"],
            &format!("icecast://source:pw@{}/live", self.addr),
        )
    }

    /// Sets the title the way encoders do (Icecast's metadata endpoint).
    fn set_title(&self, title: &str) {
        let r = http_get(
            self.addr,
            &format!(
                "/admin/metadata?mount=/live&mode=updinfo&song={}",
                title.replace(' ', "%20")
            ),
            &[("Authorization", "Basic c291cmNlOnB3")],
        );
        assert_eq!(r.status, 200, "icecast metadata: {}", r.text());
    }

    /// Whether a source is on `/live` (from Icecast's own status JSON).
    fn has_source(&self) -> bool {
        http_get(self.addr, "/status-json.xsl", &[])
            .text()
            .contains("/live\"")
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Icecast {
    fn drop(&mut self) {
        self.stop();
    }
}

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
    // Wait until Icecast has the mount before we set its title.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !icecast.has_source() {
        assert!(Instant::now() < deadline, "icecast2 never got the source");
        std::thread::sleep(Duration::from_millis(100));
    }
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
    let deadline = Instant::now() + Duration::from_secs(10);
    while !icecast.has_source() {
        assert!(
            Instant::now() < deadline,
            "icecast2 never got the source again"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
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
