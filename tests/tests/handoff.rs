//! Handoff restarts between real processes: every listener (raw, ICY,
//! rewound) and the source continue at exactly the next byte; the old process
//! exits 0; a successor that dies mid-handoff leaves the old one serving.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::io::Read;
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::thread::JoinHandle;
use std::time::Duration;

use streamer::format::Codec;
use streammachine_tests::*;

const EXE: &str = env!("CARGO_BIN_EXE_streammachine-under-test");

fn config() -> &'static str {
    "streams:\n  - key: live\n    password: pw\n    burstSeconds: 1\n    icyMetaInterval: 1000\n"
}

/// Free listener, source and admin ports, as `start_on` takes them.
fn standalone_ports() -> [(&'static str, u16); 3] {
    [
        ("--listen-port", free_port()),
        ("--source-port", free_port()),
        ("--admin-port", free_port()),
    ]
}

/// A source sending the first `seconds` of the music fixture to `mount` at
/// real time, in a thread; returns the audio it sends (its frames) and the thread.
fn realtime_source(
    addr: std::net::SocketAddr,
    mount: &str,
    password: &str,
    seconds: f64,
) -> (Vec<u8>, JoinHandle<()>) {
    let data = fixture("mp3/mp3-44100-128-s.mp3");
    let frames = frames_of(&data, Codec::Mp3);
    let feed: Vec<_> = frames[..(seconds * 44_100.0 / 1152.0) as usize].to_vec();
    let audio = feed
        .iter()
        .flat_map(|&(o, l, _)| data[o..o + l].iter().copied())
        .collect();
    let (mount, password) = (mount.to_string(), password.to_string());
    let feeder = std::thread::spawn(move || {
        let mut src = Source::connect(addr, &mount, &password, SourceMethod::Ice, &[]).unwrap();
        src.send_realtime(&data, &feed, 44_100).unwrap();
    });
    (audio, feeder)
}

/// Waits (deadline 20 s) until `stream` holds `secs` of audio on `server`,
/// instead of sleeping and hoping the source got that far.
fn wait_buffered(server: &ServerProcess, stream: &str, secs: f64) {
    let series = format!("streammachine_buffer_seconds{{stream=\"{stream}\"}}");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while server.metric(&series).unwrap_or(0.0) < secs {
        assert!(
            std::time::Instant::now() < deadline,
            "{stream}: not {secs} s of audio buffered within 20 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Reads a listener until it goes quiet for 3 s; returns everything.
fn reader(s: TcpStream, rest: Vec<u8>) -> JoinHandle<Vec<u8>> {
    read_in_background(s, rest, Duration::from_secs(3))
}

/// A pump read slowly (1 KiB every 100 ms, through a small receive buffer) so
/// that it is still being sent when the handoff comes. Returns the body and
/// its announced Content-Length.
fn slow_pump(addr: std::net::SocketAddr, path: &str) -> JoinHandle<(Vec<u8>, usize)> {
    let path = path.to_string();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut s = rt.block_on(async {
            let sock = tokio::net::TcpSocket::new_v4().unwrap();
            sock.set_recv_buffer_size(4096).unwrap();
            sock.connect(addr).await.unwrap().into_std().unwrap()
        });
        s.set_nonblocking(false).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        use std::io::Write;
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .unwrap();
        let (status, headers, mut got) = read_head(&mut s);
        assert_eq!(status, 200);
        let len = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .expect("a pump has a Content-Length");
        let mut buf = [0u8; 1024];
        loop {
            std::thread::sleep(Duration::from_millis(100));
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        (got, len)
    })
}

fn handoff_cmd(control: &Path, to: &Path) -> (bool, String) {
    control_cmd(control, &["handoff", "--to", to.to_str().unwrap()])
}

/// A server on fixed ports (a successor binds the same ones, `SO_REUSEPORT`)
/// with its control socket `control` in `dir`; a `successor` also waits for a
/// handoff on `dir/h.sock`.
fn start_on(
    dir: &Path,
    ports: &[(&str, u16)],
    config: &str,
    control: &str,
    successor: bool,
) -> ServerProcess {
    let mut args: Vec<String> = ports
        .iter()
        .flat_map(|(flag, port)| [flag.to_string(), port.to_string()])
        .collect();
    args.extend([
        "--control-socket".into(),
        dir.join(control).display().to_string(),
    ]);
    if successor {
        args.extend([
            "--handoff-from".into(),
            dir.join("h.sock").display().to_string(),
        ]);
    }
    ServerProcess::try_start(
        EXE,
        config,
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .unwrap()
}

/// Runs `streammachine --control-socket <control> ARGS…`: (success, output).
fn control_cmd(control: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(EXE)
        .arg("--control-socket")
        .arg(control)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// A pod's preStop hook may run before its successor listens on the shared
/// handoff socket, while the file there is still this server's own (it was
/// started with `--handoff-from` the same path): it must wait for a real
/// successor and never hand its listeners to itself.
#[test]
fn a_server_never_hands_off_to_the_socket_it_offers_itself() {
    let dir = scratch_dir("handoff-self");
    let ports = standalone_ports();
    let mut server = start_on(&dir, &ports, config(), "a.sock", true);
    let control = dir.join("a.sock");
    // Ready (exit 0) once it listens for its own predecessor.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (ok, out) = control_cmd(&control, &["ready"]);
        if ok {
            assert!(out.contains("OK ready"), "{out}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never ready: {out}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let to = dir.join("h.sock");
    let (ok, out) = control_cmd(
        &control,
        &["handoff", "--to", to.to_str().unwrap(), "--wait", "1"],
    );
    assert!(!ok, "handed off to itself: {out}");
    assert!(out.contains("no successor listens"), "{out}");
    // Nothing was parked or lost: it still serves and is still ready.
    assert!(server.is_running());
    assert_eq!(http_get(server.admin, "/healthz", &[]).status, 200);
    assert!(control_cmd(&control, &["ready"]).0);
}

/// `handoff --drain` (the Drain preStop hook): connected listeners play on
/// until they leave or the time is up; a new audio request gets `503` with
/// `Retry-After` at once (never a connection left hanging in a paused accept
/// queue, where a lagging Service may still send clients); the server is not
/// ready but alive.
#[test]
fn a_draining_server_keeps_its_listeners_and_turns_new_ones_away_at_once() {
    let dir = scratch_dir("drain");
    let ports = standalone_ports();
    let server = start_on(&dir, &ports, config(), "a.sock", false);
    let (_, feeder) = realtime_source(server.source, "live", "pw", 12.0);
    wait_buffered(&server, "live", 2.0);
    let (s, st, _, rest) = request(server.listen, "GET", "/live", &[]);
    assert_eq!(st, 200);
    let listener = reader(s, rest);
    let control = dir.join("a.sock");
    let drain = std::thread::spawn(move || {
        control_cmd(&control, &["handoff", "--drain", "--seconds", "4"])
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while http_get(server.admin, "/readyz", &[]).status != 503 {
        assert!(
            std::time::Instant::now() < deadline,
            "still ready while draining"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (mut s, st, headers, _) = request(server.listen, "GET", "/live", &[]);
    assert_eq!(st, 503, "a new listener while draining");
    assert!(headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("retry-after") && v == "1"));
    let _ = read_to_close(&mut s, Vec::new());
    assert_eq!(http_get(server.admin, "/healthz", &[]).status, 200);
    let (ok, out) = drain.join().unwrap();
    assert!(ok && out.contains("1 listeners left"), "{out}");
    feeder.join().unwrap();
    // The connected listener got the audio all along (12 s fed, read to the end).
    let got = listener.join().unwrap();
    assert!(
        got.len() > 8 * 16_000,
        "the connected listener got {} bytes",
        got.len()
    );
}

#[test]
fn every_listener_and_the_source_continue_at_the_next_byte() {
    let dir = scratch_dir("handoff");
    let ports = standalone_ports();
    // Small socket buffers, so a pump is still in flight at the handoff.
    let cfg = format!("listeners: {{ sendBufferBytes: 4096 }}\n{}", config());
    let mut old = start_on(&dir, &ports, &cfg, "a.sock", false);
    let (audio, feeder) = realtime_source(old.source, "live", "pw", 9.0);
    wait_buffered(&old, "live", 3.0);
    let (raw, st, _, r1) = request(old.listen, "GET", "/live", &[]);
    assert_eq!(st, 200);
    let (icy, st, _, r2) = request(old.listen, "GET", "/live", &[("Icy-MetaData", "1")]);
    assert_eq!(st, 200);
    let (back, st, _, r3) = request(old.listen, "GET", "/live?offset=2", &[]);
    assert_eq!(st, 200);
    let (raw, icy, back) = (reader(raw, r1), reader(icy, r2), reader(back, r3));
    let pump = slow_pump(old.listen, "/live?pump=3&offset=3");
    std::thread::sleep(Duration::from_secs(1));

    // The successor: same ports (SO_REUSEPORT), waiting for the handoff.
    let new = start_on(&dir, &ports, &cfg, "b.sock", true);
    assert!(new
        .wait_log("waiting for a predecessor", Duration::from_secs(5))
        .is_some());
    // Only the server's user may take over or hand over its listeners.
    for sock in ["h.sock", "a.sock"] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join(sock))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{sock}");
    }
    let (ok, out) = handoff_cmd(&dir.join("a.sock"), &dir.join("h.sock"));
    assert!(ok, "handoff: {out}");
    assert!(out.contains("4 listeners, 1 sources, 1 buffers"), "{out}");
    assert_eq!(
        old.wait_exit(Duration::from_secs(10)),
        Some(0),
        "the old process exits 0"
    );
    assert!(new.log_lines("took over from the predecessor").len() == 1);

    feeder.join().unwrap(); // the source kept sending, to the new process
    let (raw, icy, back) = (
        raw.join().unwrap(),
        icy.join().unwrap(),
        back.join().unwrap(),
    );
    // Raw: one contiguous run of the source's audio up to its very end.
    let at = find(&audio, &raw[..2048]).unwrap();
    assert!(
        audio[at..].starts_with(&raw),
        "raw: a byte lost or doubled across the handoff"
    );
    assert_eq!(
        at + raw.len(),
        audio.len(),
        "raw: got every byte to the end"
    );
    // ICY: blocks exactly every 1000 audio bytes on both sides of the handoff.
    let (icy_audio, metas) = strip_icy(&icy, 1000);
    let at = find(&audio, &icy_audio[..2048]).unwrap();
    assert!(
        audio[at..].starts_with(&icy_audio) && at + icy_audio.len() == audio.len(),
        "icy: contiguous, phase kept"
    );
    assert_eq!(
        metas.len(),
        0,
        "no title: zero-length blocks only, never a re-sent head or block"
    );
    assert!(
        !icy[100..].windows(8).any(|w| w == b"HTTP/1.1"),
        "no headers re-sent"
    );
    // The pump, mid-flight at the handoff: exactly its span, then the end.
    let (pumped, len) = pump.join().unwrap();
    assert_eq!(pumped.len(), len, "the Content-Length, to the byte");
    assert!(len > 30_000, "seconds of audio: {len}");
    assert!(
        find(&audio, &pumped).is_some(),
        "one contiguous run of the audio"
    );
    // Rewound: contiguous too.
    let at = find(&audio, &back[..2048]).unwrap();
    assert!(
        audio[at..].starts_with(&back) && at + back.len() == audio.len(),
        "rewound listener contiguous"
    );
    // The buffer came along: the new process serves the whole of it.
    let all = http_get(new.listen, "/live?pump=999&offset=999", &[]).body;
    assert!(all == audio, "the buffer moved with the listeners");
    // Its memory was passed, not copied (issue 11).
    assert!(
        new.log_lines("buffer taken over in place")
            .iter()
            .any(|l| l.contains("\"stream\":\"live\"")),
        "the buffer's memory was passed"
    );
}

/// An authenticated admin API call.
fn api(addr: std::net::SocketAddr, method: &str, path: &str, body: &str) -> HttpResponse {
    http_send(
        addr,
        method,
        path,
        &[
            ("Authorization", "Bearer tok"),
            ("Content-Type", "application/json"),
        ],
        body.as_bytes(),
    )
}

#[test]
fn a_stream_created_through_the_api_and_its_titles_survive_a_handoff() {
    let dir = scratch_dir("handoff-api");
    let ports = standalone_ports();
    let events = dir.join("events.jsonl");
    let cfg = format!(
        "admin: {{ token: tok }}\nanalytics: {{ file: {}, intervalSeconds: 1 }}\n{}",
        events.display(),
        config()
    );
    let mut old = start_on(&dir, &ports, &cfg, "a.sock", false);
    // This stream exists only in the old process's memory (no Redis, not in the file).
    let r = api(
        old.admin,
        "POST",
        "/api/streams",
        r#"{"key": "extra", "password": "xp", "burstSeconds": 1, "icyMetaInterval": 1000}"#,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let (audio, feeder) = realtime_source(old.source, "extra", "xp", 9.0);
    wait_buffered(&old, "extra", 2.0);
    let r = api(
        old.admin,
        "POST",
        "/api/streams/extra/metadata",
        r#"{"title": "Before the handoff"}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let (icy, st, _, rest) = request(old.listen, "GET", "/extra", &[("Icy-MetaData", "1")]);
    assert_eq!(st, 200);
    let icy = reader(icy, rest);
    // Audio titled "Before the handoff" is in the buffer (so on its way to
    // the listener, here or from the successor) before the handoff starts:
    // under load a second of sleep was not always enough.
    let buffered = old
        .metric("streammachine_buffer_seconds{stream=\"extra\"}")
        .unwrap_or(0.0);
    wait_buffered(&old, "extra", buffered + 1.5);

    let new = start_on(&dir, &ports, &cfg, "b.sock", true);
    assert!(new
        .wait_log("waiting for a predecessor", Duration::from_secs(5))
        .is_some());
    let (ok, out) = handoff_cmd(&dir.join("a.sock"), &dir.join("h.sock"));
    assert!(ok, "handoff: {out}");
    assert!(out.contains("1 listeners, 1 sources, 2 buffers"), "{out}");
    assert_eq!(old.wait_exit(Duration::from_secs(10)), Some(0));
    // The listener's analytics session: started in the old process.
    let of_listener = |kind: &str| -> Vec<serde_json::Value> {
        std::fs::read_to_string(&events)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|e| e["stream"] == "extra" && e["output"] == "icy" && e["type"] == kind)
            .collect()
    };
    let starts = of_listener("session_start");
    assert_eq!(starts.len(), 1, "{starts:?}");
    let id = starts[0]["session"].clone();
    let before = of_listener("listen").len();
    assert!(new
        .wait_log("serving the predecessor's streams", Duration::from_secs(1))
        .is_some_and(|l| l.contains("extra")));
    // The successor has the stream, and titles go on through it.
    let r = api(
        new.admin,
        "POST",
        "/api/streams/extra/metadata",
        r#"{"title": "After the handoff"}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());

    feeder.join().unwrap();
    let icy = icy.join().unwrap();
    let (icy_audio, metas) = strip_icy(&icy, 1000);
    let at = find(&audio, &icy_audio[..2048]).unwrap();
    assert!(
        audio[at..].starts_with(&icy_audio) && at + icy_audio.len() == audio.len(),
        "icy: contiguous across the handoff, phase kept, to the end"
    );
    let titles: Vec<&str> = metas.iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(
        titles,
        [
            "StreamTitle='Before the handoff';",
            "StreamTitle='After the handoff';"
        ],
        "each title once, the new one from the successor"
    );
    // The session went on in the successor: more listens under the same id
    // (the old process is gone), and no second start.
    let listens = of_listener("listen");
    assert!(
        listens.len() > before,
        "{before} listens before, {listens:?}"
    );
    assert!(listens.iter().all(|e| e["session"] == id), "{listens:?}");
    assert_eq!(of_listener("session_start").len(), 1);
}

#[test]
fn a_successor_that_dies_mid_handoff_leaves_the_old_one_serving() {
    let dir = scratch_dir("handoff-crash");
    let control = dir.join("a.sock");
    let args = [
        "--control-socket".to_string(),
        control.display().to_string(),
    ];
    let old = ServerProcess::try_start(
        EXE,
        config(),
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .unwrap();
    let (audio, feeder) = realtime_source(old.source, "live", "pw", 9.0);
    wait_buffered(&old, "live", 2.0);
    let (s, st, _, rest) = request(old.listen, "GET", "/live", &[("Icy-MetaData", "1")]);
    assert_eq!(st, 200);
    let listener = reader(s, rest);
    // A "successor" that accepts the handoff connection, reads a little, and dies.
    let fake = dir.join("fake.sock");
    let ul = std::os::unix::net::UnixListener::bind(&fake).unwrap();
    let crasher = std::thread::spawn(move || {
        let (mut c, _) = ul.accept().unwrap();
        let mut buf = [0u8; 64];
        let _ = c.read(&mut buf);
        drop(c);
    });
    std::thread::sleep(Duration::from_millis(500));
    let (ok, out) = handoff_cmd(&control, &fake);
    crasher.join().unwrap();
    assert!(!ok, "the handoff must report failure: {out}");
    assert!(out.starts_with("ERR"), "{out}");
    assert!(old
        .wait_log("resuming here, nothing lost", Duration::from_secs(5))
        .is_some());
    // A real successor that cannot take over (another mode) refuses after
    // reading everything; the old one resumes again.
    let refuser = ServerProcess::try_start(
        EXE,
        &format!("mode: master\nlink: {{ secret: s }}\n{}", config()),
        &["--handoff-from", dir.join("h2.sock").to_str().unwrap()],
    )
    .unwrap();
    assert!(refuser
        .wait_log("waiting for a predecessor", Duration::from_secs(5))
        .is_some());
    let (ok, out) = handoff_cmd(&control, &dir.join("h2.sock"));
    assert!(
        !ok && out.contains("the predecessor is a standalone server, this one is master"),
        "{out}"
    );
    assert!(refuser
        .log_lines("took over from the predecessor")
        .is_empty());
    feeder.join().unwrap();
    let wire = listener.join().unwrap();
    let (got, _) = strip_icy(&wire, 1000);
    let at = find(&audio, &got[..2048]).unwrap();
    assert!(
        audio[at..].starts_with(&got) && at + got.len() == audio.len(),
        "the old process kept serving every byte"
    );
    assert_eq!(http_get(old.listen, "/healthz", &[]).status, 200);
}

#[test]
fn run_hands_off_to_a_new_process_on_sighup() {
    let (lp, sp, ap) = (free_port(), free_port(), free_port());
    let args = [
        "--listen-port".to_string(),
        lp.to_string(),
        "--source-port".into(),
        sp.to_string(),
        "--admin-port".into(),
        ap.to_string(),
        "run".into(),
    ];
    // Started through a `current` link, as releases are deployed; the upgrade
    // flips the link to a new file.
    let dir = scratch_dir("run-upgrade");
    let (v1, v2, current) = (dir.join("v1"), dir.join("v2"), dir.join("current"));
    std::fs::copy(EXE, &v1).unwrap();
    std::os::unix::fs::symlink(&v1, &current).unwrap();
    let mut sup = ServerProcess::try_start(
        current.to_str().unwrap(),
        config(),
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .unwrap();
    let (audio, feeder) = realtime_source(sup.source, "live", "pw", 7.0);
    wait_buffered(&sup, "live", 2.0);
    let (s, st, _, rest) = request(sup.listen, "GET", "/live", &[]);
    assert_eq!(st, 200);
    let listener = reader(s, rest);
    std::thread::sleep(Duration::from_secs(1));
    std::fs::copy(EXE, &v2).unwrap();
    let flip = dir.join("current.new");
    std::os::unix::fs::symlink(&v2, &flip).unwrap();
    std::fs::rename(&flip, &current).unwrap();
    signal(sup.pid(), "HUP");
    let line = sup
        .wait_log(
            "supervisor: handed off to the new server",
            Duration::from_secs(15),
        )
        .unwrap_or_else(|| panic!("{:#?}", sup.logs()));
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    let pid = v["pid"].as_u64().expect("the new server's pid");
    assert_eq!(
        std::fs::read_link(format!("/proc/{pid}/exe")).unwrap(),
        v2,
        "the new server runs the new release"
    );
    feeder.join().unwrap();
    let got = listener.join().unwrap();
    let at = find(&audio, &got[..2048]).unwrap();
    assert!(
        audio[at..].starts_with(&got) && at + got.len() == audio.len(),
        "the listener did not notice the upgrade"
    );
    assert!(sup.is_running(), "the supervisor stays");
    assert_eq!(
        http_get(sup.listen, "/healthz", &[]).status,
        200,
        "the new process serves"
    );
    assert_eq!(sup.terminate(), Some(0));
}

/// Issue 13: `run --trigger-file` hands off when a deploy tool touches the
/// file: exactly once per touch, the listener byte-exact across both.
#[test]
fn run_hands_off_once_per_touch_of_its_trigger_file() {
    let dir = scratch_dir("run-trigger");
    let trigger = dir.join("deploy.trigger");
    std::fs::write(&trigger, b"").unwrap();
    let mut args: Vec<String> = standalone_ports()
        .iter()
        .flat_map(|(flag, port)| [flag.to_string(), port.to_string()])
        .collect();
    args.extend([
        "run".into(),
        "--trigger-file".into(),
        trigger.display().to_string(),
    ]);
    let mut sup = ServerProcess::try_start(
        EXE,
        config(),
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .unwrap();
    let (audio, feeder) = realtime_source(sup.source, "live", "pw", 9.0);
    wait_buffered(&sup, "live", 2.0);
    let (s, st, _, rest) = request(sup.listen, "GET", "/live", &[]);
    assert_eq!(st, 200);
    let listener = reader(s, rest);
    let touch = || {
        std::fs::File::options()
            .write(true)
            .open(&trigger)
            .unwrap()
            .set_modified(std::time::SystemTime::now())
            .unwrap();
    };
    let handoffs = |sup: &ServerProcess| {
        sup.log_lines("supervisor: handed off to the new server")
            .len()
    };
    for n in 1..=2 {
        touch();
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while handoffs(&sup) < n {
            assert!(std::time::Instant::now() < deadline, "{:#?}", sup.logs());
            std::thread::sleep(Duration::from_millis(100));
        }
        // No second handoff for the same touch (four checks of the file).
        let until = std::time::Instant::now() + Duration::from_secs(2);
        while std::time::Instant::now() < until {
            assert_eq!(handoffs(&sup), n, "one handoff per touch");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    feeder.join().unwrap();
    let got = listener.join().unwrap();
    let at = find(&audio, &got[..2048]).unwrap();
    assert!(
        audio[at..].starts_with(&got) && at + got.len() == audio.len(),
        "the listener did not notice either handoff"
    );
    assert_eq!(sup.terminate(), Some(0));
}

#[test]
fn a_slave_hands_its_listeners_to_a_synced_successor() {
    let dir = scratch_dir("handoff-slave");
    let master = ServerProcess::start(
        EXE,
        &format!("mode: master\nlink: {{ secret: s }}\n{}", config()),
    );
    let (lp, ap) = (free_port(), free_port());
    let slave_cfg = format!(
        "mode: slave\nlink: {{ secret: s }}\nmaster: {{ url: \"http://{}\" }}\n",
        master.admin
    );
    let ports = [("--listen-port", lp), ("--admin-port", ap)];
    let mut old = start_on(&dir, &ports, &slave_cfg, "a.sock", false);
    let (audio, feeder) = realtime_source(master.source, "live", "pw", 8.0);
    wait_buffered(&old, "live", 1.5);
    let (s, st, _, rest) = request(old.listen, "GET", "/live", &[("Icy-MetaData", "1")]);
    assert_eq!(st, 200);
    let listener = reader(s, rest);
    // The successor syncs from the master on its own, then takes the listeners.
    let new = start_on(&dir, &ports, &slave_cfg, "b.sock", true);
    assert!(new
        .wait_log(
            "configuration from the master applied",
            Duration::from_secs(10)
        )
        .is_some());
    // Caught up, it offers to take over (the two share the admin port, so
    // its metrics cannot be asked apart from the old one's: its log says).
    assert!(new
        .wait_log(
            "waiting for a predecessor's handoff",
            Duration::from_secs(10)
        )
        .is_some());
    let (ok, out) = handoff_cmd(&dir.join("a.sock"), &dir.join("h.sock"));
    assert!(ok, "{out}");
    assert!(
        out.contains("1 listeners, 0 sources, 0 buffers"),
        "a slave sends no buffer: {out}"
    );
    assert_eq!(old.wait_exit(Duration::from_secs(10)), Some(0));
    feeder.join().unwrap();
    let wire = listener.join().unwrap();
    let (got, _) = strip_icy(&wire, 1000);
    let at = find(&audio, &got[..2048]).unwrap();
    assert!(
        audio[at..].starts_with(&got) && at + got.len() == audio.len(),
        "the slave's listener continued exactly"
    );
}

/// A slave successor that has its master's config (saved next to its dumps)
/// but no audio yet (the master is unreachable) takes the listeners over:
/// they wait at their exact position instead of being dropped, and go on
/// once the successor's replica arrives.
#[test]
fn listeners_handed_to_a_slave_without_audio_yet_wait_and_go_on() {
    let dir = scratch_dir("handoff-slave-empty");
    let master = ServerProcess::start(
        EXE,
        &format!("mode: master\nlink: {{ secret: s }}\n{}", config()),
    );
    let (lp, ap) = (free_port(), free_port());
    let (d1, d2) = (dir.join("d1"), dir.join("d2"));
    std::fs::create_dir_all(&d2).unwrap();
    let slave_cfg = |dumps: &Path| {
        format!(
            "mode: slave\nlink: {{ secret: s }}\nmaster: {{ url: \"http://{}\" }}\ndumps: {{ dir: {} }}\n",
            master.admin,
            dumps.display()
        )
    };
    let ports = [("--listen-port", lp), ("--admin-port", ap)];
    let mut old = start_on(&dir, &ports, &slave_cfg(&d1), "a.sock", false);
    let (audio, feeder) = realtime_source(master.source, "live", "pw", 10.0);
    wait_buffered(&old, "live", 1.5);
    let (l, st, _, rest) = request(old.listen, "GET", "/live", &[("Icy-MetaData", "1")]);
    assert_eq!(st, 200);
    let listener = read_in_background(l, rest, Duration::from_secs(10));
    // The successor knows the master's streams (its last config) but the
    // master does not answer it: no audio in its buffers.
    std::fs::copy(
        d1.join("replica-config.json"),
        d2.join("replica-config.json"),
    )
    .unwrap();
    signal(master.pid(), "STOP");
    let new = start_on(&dir, &ports, &slave_cfg(&d2), "b.sock", true);
    assert!(new
        .wait_log("waiting for a predecessor", Duration::from_secs(10))
        .is_some());
    let (ok, out) = handoff_cmd(&dir.join("a.sock"), &dir.join("h.sock"));
    assert!(ok && out.contains("1 listeners"), "{out}");
    assert_eq!(old.wait_exit(Duration::from_secs(10)), Some(0));
    std::thread::sleep(Duration::from_secs(1));
    signal(master.pid(), "CONT");
    feeder.join().unwrap();
    let wire = listener.join().unwrap();
    let (got, _) = strip_icy(&wire, 1000);
    let at = find(&audio, &got[..2048]).unwrap();
    assert!(
        audio[at..].starts_with(&got) && at + got.len() == audio.len(),
        "the listener waited and went on exactly: {} of {} bytes from {at}",
        got.len(),
        audio.len() - at
    );
    assert!(new.log_lines("listener disconnected").is_empty());
}

/// A transcoded stream across a handoff: its buffer moves, its listener goes
/// on reading one contiguous run of it, and the successor's own transcoder
/// continues it after a discontinuity (encoder state is not handed over).
#[test]
fn a_transcoded_stream_goes_on_after_a_handoff() {
    let dir = scratch_dir("handoff-transcode");
    let (lp, sp, ap) = (free_port(), free_port(), free_port());
    let config = "sourceMounts:\n  - key: studio\n    password: pw\nstreams:\n  - key: live\n    sourceMount: studio\n  - key: aac\n    sourceMount: studio\n    burstSeconds: 1\n    transcode: { format: aac, bitrate: 64 }\n";
    let ports = [
        ("--listen-port", lp),
        ("--source-port", sp),
        ("--admin-port", ap),
    ];
    let mut old = start_on(&dir, &ports, config, "a.sock", false);
    let data = fixture("mp3/mp3-44100-128-s.mp3");
    let frames = frames_of(&data, Codec::Mp3);
    let feed: Vec<_> = frames[..(9.0 * 44_100.0 / 1152.0) as usize].to_vec();
    let src_addr = old.source;
    let feeder = std::thread::spawn(move || {
        let mut src = Source::connect(src_addr, "studio", "pw", SourceMethod::Ice, &[]).unwrap();
        src.send_realtime(&data, &feed, 44_100).unwrap();
    });
    wait_buffered(&old, "aac", 2.0);
    let (l, st, _, rest) = request(old.listen, "GET", "/aac", &[]);
    assert_eq!(st, 200);
    let listener = reader(l, rest);
    std::thread::sleep(Duration::from_secs(1));
    let new = start_on(&dir, &ports, config, "b.sock", true);
    assert!(new
        .wait_log("waiting for a predecessor", Duration::from_secs(5))
        .is_some());
    let (ok, out) = handoff_cmd(&dir.join("a.sock"), &dir.join("h.sock"));
    assert!(ok, "handoff: {out}");
    assert!(out.contains("1 listeners, 1 sources, 2 buffers"), "{out}");
    assert_eq!(old.wait_exit(Duration::from_secs(10)), Some(0));
    feeder.join().unwrap();
    let got = listener.join().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let all = http_get(new.listen, "/aac?pump=999&offset=999", &[]).body;
    let at = find(&all, &got[..2048]).expect("the listener's bytes are the buffer's");
    assert!(
        all[at..].starts_with(&got) && at + got.len() == all.len(),
        "the listener read one contiguous run of the buffer, to its end"
    );
    let secs = new
        .metric("streammachine_buffer_seconds{stream=\"aac\"}")
        .unwrap();
    assert!(secs >= 7.0, "the successor went on transcoding: {secs} s");
    assert_eq!(
        new.metric("streammachine_transcoder_up{stream=\"aac\"}"),
        Some(1.0)
    );
    // The successor's encoder starts a new timeline piece in the playlist.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let playlist = loop {
        let p = http_get(new.listen, "/aac.m3u8", &[]).text();
        if p.contains("#EXT-X-DISCONTINUITY\n") || std::time::Instant::now() > deadline {
            break p;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        playlist.contains("#EXT-X-DISCONTINUITY\n"),
        "a new encoder is a new timeline piece:\n{playlist}"
    );
    // The successor's playlist passes the RFC 8216 check, and follows on
    // from a later fetch without going back (issue 16).
    let checked = hls_check::check_media(&playlist).unwrap_or_else(|e| panic!("{e}\n{playlist}"));
    let later = http_get(new.listen, "/aac.m3u8", &[]).text();
    let later = hls_check::check_media(&later).unwrap_or_else(|e| panic!("{e}\n{later}"));
    hls_check::check_successive(&checked, &later).unwrap();
    let path = dir.join("aac.aac");
    std::fs::write(&path, &all).unwrap();
    let errors = ffmpeg_decode_errors(&path);
    assert!(errors.trim().is_empty(), "{errors}");
}

/// Issue 10 (2): a successor that cannot listen for the handoff (its socket's
/// directory is a file here) exits at once with the reason, before it binds
/// a port: the predecessor stays the only server.
#[test]
fn a_successor_that_cannot_take_over_exits_before_serving() {
    let dir = scratch_dir("handoff-cannot");
    let ports = standalone_ports();
    let old = start_on(&dir, &ports, config(), "a.sock", false);
    let file = dir.join("a-file");
    std::fs::write(&file, b"").unwrap();
    let mut args: Vec<String> = ports
        .iter()
        .flat_map(|(flag, port)| [flag.to_string(), port.to_string()])
        .collect();
    args.extend([
        "--handoff-from".to_string(),
        file.join("h.sock").display().to_string(),
    ]);
    let started = std::time::Instant::now();
    let Err(logs) = ServerProcess::try_start(
        EXE,
        config(),
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    ) else {
        panic!("a successor that cannot take over must not serve");
    };
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(logs.contains("cannot listen for a handoff"), "{logs}");
    assert!(!logs.contains("\"listening\""), "{logs}");
    for _ in 0..10 {
        assert_eq!(http_get(old.admin, "/readyz", &[]).status, 200);
    }
}
