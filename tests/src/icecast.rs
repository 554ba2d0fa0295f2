//! A real Icecast 2.4 server for side-by-side and relay tests.

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{ffmpeg_source, fixture_path, http_get};

/// A real Icecast 2.4 (Debian's `icecast2`) on a loopback port, source
/// password `pw`, admin `admin:adminpw`.
#[derive(Debug)]
pub struct Icecast {
    child: Child,
    /// Its listener (and source and admin) address.
    pub addr: SocketAddr,
}

impl Icecast {
    pub fn start(dir: &Path, port: u16) -> Icecast {
        Self::start_with(dir, port, None)
    }

    /// With `tls = Some((port, pem))`, also an HTTPS listener on `port`
    /// with the certificate and key in `pem`.
    pub fn start_with(dir: &Path, port: u16, tls: Option<(u16, &Path)>) -> Icecast {
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
        let (tls_socket, tls_cert) = match tls {
            Some((p, pem)) => (
                format!("<listen-socket><port>{p}</port><bind-address>127.0.0.1</bind-address><ssl>1</ssl></listen-socket>"),
                format!("<ssl-certificate>{}</ssl-certificate>", pem.display()),
            ),
            None => (String::new(), String::new()),
        };
        let config = dir.join("icecast.xml");
        std::fs::write(
            &config,
            format!(
                "<icecast><location>test</location><admin>test@localhost</admin>\
                 <limits><clients>20</clients><sources>2</sources><burst-size>65536</burst-size><source-timeout>10</source-timeout></limits>\
                 <authentication><source-password>pw</source-password><admin-user>admin</admin-user><admin-password>adminpw</admin-password></authentication>\
                 <hostname>127.0.0.1</hostname><listen-socket><port>{port}</port><bind-address>127.0.0.1</bind-address></listen-socket>{tls_socket}\
                 <paths><basedir>/usr/share/icecast2</basedir><logdir>{}</logdir><webroot>/usr/share/icecast2/web</webroot><adminroot>/usr/share/icecast2/admin</adminroot>{tls_cert}</paths>\
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

    /// ffmpeg sending a fixture to `/live`, in real time, looped; returns
    /// once Icecast has the mount (so a title can be set on it).
    pub fn source(&self) -> Child {
        let ff = ffmpeg_source(
            &fixture_path("mp3/tone1kHz-44100-128-m.mp3"),
            &["-c", "copy", "-f", "mp3", "-content_type", "audio/mpeg"],
            &format!("icecast://source:pw@{}/live", self.addr),
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.has_source() {
            assert!(Instant::now() < deadline, "icecast2 never got the source");
            std::thread::sleep(Duration::from_millis(100));
        }
        ff
    }

    /// Sets the title the way encoders do (Icecast's metadata endpoint).
    pub fn set_title(&self, title: &str) {
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
    pub fn has_source(&self) -> bool {
        http_get(self.addr, "/status-json.xsl", &[])
            .text()
            .contains("/live\"")
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Icecast {
    fn drop(&mut self) {
        self.stop();
    }
}
