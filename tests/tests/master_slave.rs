//! Master and slaves as real processes: exact replicas, live fan-out, a late
//! slave, a master killed and restarted, a wrong secret.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::time::{Duration, Instant};

use streamer::format::Codec;
use streammachine_tests::*;

const EXE: &str = env!("CARGO_BIN_EXE_streammachine-under-test");
const SECRET: &str = "link-s3cret";

fn master_config(extra: &str) -> String {
    format!("mode: master\nlink: {{ secret: {SECRET} }}\nadmin: {{ token: tok }}\n{extra}streams:\n  - key: live\n    password: pw\n    burstSeconds: 1\n    hls: {{ segmentSeconds: 2 }}\n")
}

fn slave(master: &ServerProcess, secret: &str) -> ServerProcess {
    ServerProcess::start(
        EXE,
        &format!(
            "mode: slave\nlink: {{ secret: {secret} }}\nmaster: {{ url: \"http://{}\" }}\n",
            master.admin
        ),
    )
}

fn buffered(server: &ServerProcess) -> f64 {
    server
        .metric("streammachine_buffer_bytes{stream=\"live\"}")
        .unwrap_or(-1.0)
}

/// Waits until `a` and `b` hold the same number of audio bytes (and some).
fn wait_same(a: &ServerProcess, b: &ServerProcess, timeout: Duration) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        let (x, y) = (buffered(a), buffered(b));
        if x > 0.0 && x == y {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Sends `data` to `mount` at once and waits until the source has left (the
/// master holds all of it).
fn send_all(master: &ServerProcess, mount: &str, data: &[u8]) {
    master.send_source(mount, "pw", data);
}

fn everything(server: &ServerProcess) -> Vec<u8> {
    http_get(server.listen, "/live?pump=99999&offset=99999", &[]).body
}

#[test]
fn slaves_hold_exact_replicas_and_serve_every_output() {
    let master = ServerProcess::start(EXE, &master_config(""));
    let s1 = slave(&master, SECRET);
    // The second slave reads its secret from a file (a mounted Secret).
    let secret_dir = scratch_dir("link-secret");
    let secret_file = secret_dir.join("link");
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    let s2 = ServerProcess::start(
        EXE,
        &format!(
            "mode: slave\nlink: {{ secretFile: {} }}\nmaster: {{ url: \"http://{}\" }}\n",
            secret_file.display(),
            master.admin
        ),
    );
    let data = fixture("mp3/mp3-44100-128-s.mp3");
    let audio = audio_of(&data, Codec::Mp3);
    // All of it at the master first (equal counts on the way could be a coincidence).
    send_all(&master, "live", &data);
    assert!(
        wait_same(&master, &s1, Duration::from_secs(10))
            && wait_same(&master, &s2, Duration::from_secs(10))
    );
    assert!(
        everything(&s1) == audio,
        "slave 1 holds exactly the source's audio"
    );
    assert!(everything(&s2) == audio, "slave 2 too");
    // Same HLS segments (numbers and bytes) on both slaves.
    let p1 = http_get(s1.listen, "/live.m3u8", &[]).text();
    assert_eq!(p1, http_get(s2.listen, "/live.m3u8", &[]).text());
    let seg = p1.lines().find(|l| l.starts_with("live/seg/")).unwrap();
    assert!(
        http_get(s1.listen, &format!("/{seg}"), &[]).body
            == http_get(s2.listen, &format!("/{seg}"), &[]).body
    );
    // The master takes no listeners.
    assert_eq!(master.listen.port(), 0);
    // Live through a slave: a real-time source, a listener on slave 1.
    let frames = frames_of(&data, Codec::Mp3);
    let feed: Vec<_> = frames[..frames_for_secs(8.0)].to_vec();
    let sent: Vec<u8> = feed
        .iter()
        .flat_map(|&(o, l, _)| data[o..o + l].iter().copied())
        .collect();
    let (mut l, st, _, rest) = request(s1.listen, "GET", "/live", &[("Icy-MetaData", "1")]);
    assert_eq!(st, 200);
    // A title set on the master travels with the audio to the slave's listener.
    let r = http_send(
        master.admin,
        "POST",
        "/api/streams/live/metadata",
        &[("Authorization", "Bearer tok")],
        br#"{"title": "Through the link"}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let addr = master.source;
    let d = data.clone();
    std::thread::spawn(move || {
        let mut src = Source::connect(addr, "live", "pw", SourceMethod::Ice, &[]).unwrap();
        src.send_realtime(&d, &feed, 44_100).unwrap();
    })
    .join()
    .unwrap();
    // While the master's audio arrives, a slave lists the stream as on air
    // in Icecast's status and on its index page (issue 12).
    let stats: serde_json::Value =
        serde_json::from_str(&http_get(s1.listen, "/status-json.xsl", &[]).text()).unwrap();
    let listed = &stats["icestats"]["source"];
    assert!(
        listed["listenurl"]
            .as_str()
            .is_some_and(|u| u.ends_with("/live"))
            && listed["title"] == "Through the link",
        "{stats}"
    );
    let index = http_get(s1.listen, "/", &[]).text();
    assert!(index.contains("source connected"), "{index}");
    l.set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    let wire = read_n(&mut l, rest, usize::MAX, Duration::from_secs(10));
    // The slaves' playlists of the real-time audio pass the RFC 8216 check,
    // the same on both (issue 16). (Audio sent in one burst, as above, has
    // compressed timestamps by design: its PROGRAM-DATE-TIMEs follow arrival.)
    let p1 = http_get(s1.listen, "/live.m3u8?window=3", &[]).text();
    assert_eq!(p1, http_get(s2.listen, "/live.m3u8?window=3", &[]).text());
    hls_check::check_media(&p1).unwrap_or_else(|e| panic!("slave playlist: {e}\n{p1}"));
    let (got, metas) = strip_icy(&wire, 16_000);
    assert!(
        metas
            .iter()
            .any(|(_, t)| t == "StreamTitle='Through the link';"),
        "{metas:?}"
    );
    let whole = [audio.clone(), sent.clone()].concat();
    let at = find(&whole, &got[..1024]).unwrap();
    assert!(
        whole[at..].starts_with(&got) && at + got.len() == whole.len(),
        "the slave's live listener got every byte, in order"
    );
    // The master knows its slaves, once their next reports are in (they
    // report every few seconds): wait for that, with a deadline.
    let slaves = || -> serde_json::Value {
        let r = http_get(
            master.admin,
            "/api/slaves",
            &[("Authorization", "Bearer tok")],
        );
        serde_json::from_slice(&r.body).unwrap()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let v = loop {
        let v = slaves();
        let list = v.as_array().cloned().unwrap_or_default();
        let reported = list.len() == 2
            && list.iter().any(|s| s["listeners"]["live"] == 1)
            && list.iter().all(|s| s["chunksBehind"]["live"] == 0);
        if reported || std::time::Instant::now() > deadline {
            break v;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(v.as_array().unwrap().len(), 2, "{v}");
    assert_eq!(master.metric("streammachine_slaves"), Some(2.0));
    assert!(
        v.as_array()
            .unwrap()
            .iter()
            .any(|s| s["listeners"]["live"] == 1),
        "{v}"
    );
    assert!(
        v.as_array()
            .unwrap()
            .iter()
            .all(|s| s["chunksBehind"]["live"] == 0),
        "{v}"
    );
    // The same per slave in the metrics.
    let mut listening = 0.0;
    for s in v.as_array().unwrap() {
        let id = s["id"].as_str().unwrap();
        let label = format!("{{slave=\"{id}\",stream=\"live\"}}");
        assert_eq!(
            master.metric(&format!("streammachine_slave_chunks_behind{label}")),
            Some(0.0)
        );
        listening += master
            .metric(&format!("streammachine_slave_listeners{label}"))
            .unwrap();
        assert!(master
            .metric(&format!(
                "streammachine_slave_last_seen_seconds{{slave=\"{id}\"}}"
            ))
            .is_some_and(|secs| secs < 10.0));
    }
    assert_eq!(listening, 1.0);
    // Config changes reach the slaves live.
    let body = br#"{"key":"news","format":"aac","password":"x"}"#;
    assert_eq!(
        http_send(
            master.admin,
            "POST",
            "/api/streams",
            &[("Authorization", "Bearer tok")],
            body
        )
        .status,
        201
    );
    let end = Instant::now() + Duration::from_secs(10);
    while http_call(s2.listen, "HEAD", "/news", &[]).status != 200 {
        assert!(
            Instant::now() < end,
            "the new stream never reached the slave"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        http_call(s2.listen, "HEAD", "/news", &[]).header("content-type"),
        Some("audio/aac")
    );
    // A change and a removal reach them too.
    let r = http_send(
        master.admin,
        "PUT",
        "/api/streams/news",
        &[("Authorization", "Bearer tok")],
        br#"{"key":"news","format":"aac","name":"News Desk"}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let end = Instant::now() + Duration::from_secs(10);
    while http_call(s1.listen, "HEAD", "/news", &[]).header("icy-name") != Some("News Desk") {
        assert!(Instant::now() < end, "the change never reached the slave");
        std::thread::sleep(Duration::from_millis(100));
    }
    let r = http_send(
        master.admin,
        "DELETE",
        "/api/streams/news",
        &[("Authorization", "Bearer tok")],
        b"",
    );
    assert_eq!(r.status, 204, "{}", r.text());
    let end = Instant::now() + Duration::from_secs(10);
    while http_call(s1.listen, "HEAD", "/news", &[]).status != 404
        || http_call(s2.listen, "HEAD", "/news", &[]).status != 404
    {
        assert!(Instant::now() < end, "the removal never reached the slaves");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(http_call(s1.listen, "HEAD", "/live", &[]).status, 200);

    // Clearing the master's rewind buffer clears the slaves'; an import
    // reaches them whole.
    let auth = [("Authorization", "Bearer tok")];
    let before = everything(&s1);
    let dump = http_get(master.admin, "/api/streams/live/rewind", &auth);
    assert_eq!(dump.status, 200);
    let r = http_send(
        master.admin,
        "DELETE",
        "/api/streams/live/rewind",
        &auth,
        b"",
    );
    assert_eq!(r.status, 204, "{}", r.text());
    let end = Instant::now() + Duration::from_secs(10);
    while buffered(&s1) != 0.0 || buffered(&s2) != 0.0 {
        assert!(
            Instant::now() < end,
            "the slaves kept audio the master cleared"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let r = http_send(
        master.admin,
        "PUT",
        "/api/streams/live/rewind",
        &auth,
        &dump.body,
    );
    assert_eq!(r.status, 204, "{}", r.text());
    assert!(
        wait_same(&master, &s1, Duration::from_secs(10))
            && wait_same(&master, &s2, Duration::from_secs(10))
    );
    assert!(everything(&s1) == before && everything(&s2) == before);
}

/// After a master restart, slaves that had different amounts of the old
/// audio: the first to link is pulled from, new audio follows its numbering,
/// and a slave that held more (chunks the master now numbers differently) is
/// reset to the master's buffer instead of keeping a different chunk under
/// the same number.
#[test]
fn a_slave_holding_chunks_the_restarted_master_numbered_differently_is_reset() {
    let grace = |c: String| {
        c.replace(
            &format!("link: {{ secret: {SECRET} }}"),
            &format!("link: {{ secret: {SECRET}, resyncGraceSeconds: 60 }}"),
        )
    };
    let master = ServerProcess::start(EXE, &grace(master_config("")));
    let ahead = slave(&master, SECRET);
    // The other slave keeps dumps, so it can be away and come back with less.
    let dumps = scratch_dir("slave-behind");
    let behind_config = format!(
        "mode: slave\nlink: {{ secret: {SECRET} }}\nmaster: {{ url: \"http://{}\" }}\ndumps: {{ dir: {} }}\n",
        master.admin,
        dumps.display()
    );
    let mut behind = ServerProcess::start(EXE, &behind_config);
    let data = fixture("mp3/mp3-44100-128-s.mp3");
    send_all(&master, "live", &data);
    assert!(wait_same(&master, &ahead, Duration::from_secs(10)));
    assert!(wait_same(&master, &behind, Duration::from_secs(10)));
    // One slave stops (dumping what it has); the master gets more; it dies.
    assert_eq!(behind.terminate(), Some(0));
    send_all(&master, "live", &data[300_000..480_000]);
    assert!(wait_same(&master, &ahead, Duration::from_secs(10)));
    let admin_port = master.admin.port();
    drop(master);
    signal(ahead.pid(), "STOP");
    // The restarted master gets new audio first (held); the slave with less
    // comes back first: it is pulled from and the new audio follows it.
    let master = ServerProcess::try_start(
        EXE,
        &grace(master_config("")),
        &["--admin-port", &admin_port.to_string()],
    )
    .unwrap();
    send_all(&master, "live", &data[..300_000]);
    let behind = ServerProcess::start(EXE, &behind_config);
    let end = Instant::now() + Duration::from_secs(30);
    while !(master.log_lines("resync hold released").len() == 1
        && buffered(&master) > 0.0
        && buffered(&master) == buffered(&behind))
    {
        assert!(Instant::now() < end, "the behind slave did not re-sync");
        std::thread::sleep(Duration::from_millis(100));
    }
    // The slave that was ahead links: its newest chunk is not the master's.
    signal(ahead.pid(), "CONT");
    assert!(master
        .wait_log("resetting it to our buffer", Duration::from_secs(20))
        .is_some());
    assert!(wait_same(&master, &ahead, Duration::from_secs(20)));
    let fresh = slave(&master, SECRET);
    assert!(wait_same(&master, &fresh, Duration::from_secs(10)));
    let truth = everything(&fresh);
    assert!(
        everything(&behind) == truth,
        "the behind slave holds the master's audio"
    );
    assert!(
        everything(&ahead) == truth,
        "the slave that was ahead too, not its own chunks"
    );
}

#[test]
fn a_stalled_slave_never_holds_up_the_master_or_the_other_slaves() {
    let master = ServerProcess::start(EXE, &master_config(""));
    let s1 = slave(&master, SECRET);
    let stalled = slave(&master, SECRET);
    assert!(master.wait_metric("streammachine_slaves", 2.0, Duration::from_secs(10)));
    // The stalled slave stops reading (its process is stopped): the master's
    // writes to it back up in the kernel, and nothing else may wait for it.
    signal(stalled.pid(), "STOP");
    let data = fixture("mp3/mp3-44100-128-s.mp3");
    let audio = audio_of(&data, Codec::Mp3);
    let mut sent = Vec::new();
    for _ in 0..24 {
        send_all(&master, "live", &data);
        sent.extend_from_slice(&audio);
        assert!(
            wait_same(&master, &s1, Duration::from_secs(5)),
            "the healthy slave keeps up while another is stalled"
        );
    }
    assert!(everything(&s1) == sent);
    // The master drops the silent slave and says so.
    assert!(
        master.wait_metric("streammachine_slaves", 1.0, Duration::from_secs(30)),
        "the stalled slave is dropped"
    );
    assert!(master
        .wait_log("slave link ended", Duration::from_secs(1))
        .is_some());
    // Woken, it reconnects and receives exactly what it lacks.
    signal(stalled.pid(), "CONT");
    assert!(wait_same(&master, &stalled, Duration::from_secs(20)));
    assert!(
        everything(&stalled) == sent,
        "nothing lost, nothing doubled"
    );
}

fn frames_for_secs(s: f64) -> usize {
    (s * 44_100.0 / 1152.0) as usize
}

#[test]
fn a_late_slave_catches_up_and_a_killed_master_resyncs_from_its_slaves() {
    let master = ServerProcess::start(EXE, &master_config(""));
    let data = fixture("mp3/mp3-44100-128-s.mp3");
    let audio = audio_of(&data, Codec::Mp3);
    send_all(&master, "live", &data);
    // A slave started after the audio gets all of it at once.
    let started = Instant::now();
    let s1 = slave(&master, SECRET);
    assert!(wait_same(&master, &s1, Duration::from_secs(10)));
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "not at real-time speed"
    );
    assert!(everything(&s1) == audio);
    let playlist = http_get(s1.listen, "/live.m3u8", &[]).text();

    // kill -9 the master: the slave's listeners keep playing from its buffer.
    let admin_port = master.admin.port();
    drop(master);
    let (mut l, st, _, rest) = request(s1.listen, "GET", "/live?offset=20", &[]);
    assert_eq!(st, 200);
    l.set_read_timeout(Some(Duration::from_millis(800)))
        .unwrap();
    let got = read_n(&mut l, rest, usize::MAX, Duration::from_secs(5));
    assert!(
        got.len() > 300_000 && audio.ends_with(&got),
        "{} bytes from the slave while the master is away",
        got.len()
    );
    assert!(everything(&s1) == audio);
    assert_eq!(
        http_get(s1.listen, "/readyz", &[]).status,
        200,
        "still ready without its master: it has the audio"
    );

    // The master comes back empty on the same port: it takes the audio back
    // from the slave, numbering and HLS included, and both go on together.
    let master = ServerProcess::try_start(
        EXE,
        &master_config(""),
        &["--admin-port", &admin_port.to_string()],
    )
    .unwrap();
    let end = Instant::now() + Duration::from_secs(20);
    while buffered(&master) != buffered(&s1) || buffered(&master) <= 0.0 {
        assert!(
            Instant::now() < end,
            "master did not re-sync from the slave: {} vs {}",
            buffered(&master),
            buffered(&s1)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let s2 = slave(&master, SECRET);
    assert!(wait_same(&master, &s2, Duration::from_secs(10)));
    assert!(
        everything(&s2) == audio,
        "a new slave gets the pre-crash audio from the restarted master"
    );
    assert_eq!(
        http_get(s2.listen, "/live.m3u8", &[]).text(),
        playlist,
        "same segments, same numbers"
    );
    // New audio: both slaves append it after the old, nothing lost or doubled.
    let mut src = Source::connect(master.source, "live", "pw", SourceMethod::Ice, &[]).unwrap();
    src.send(&data[..200_000]).unwrap();
    drop(src);
    assert!(master.wait_metric(
        "streammachine_source_connected{mount=\"live\"}",
        0.0,
        Duration::from_secs(5)
    ));
    assert!(
        wait_same(&master, &s1, Duration::from_secs(10))
            && wait_same(&master, &s2, Duration::from_secs(10))
    );
    let a = everything(&s1);
    assert!(a.starts_with(&audio) && a.len() > audio.len());
    assert!(a == everything(&s2));
}

#[test]
fn an_encoder_that_reaches_a_restarted_master_before_its_slaves_continues_their_numbering() {
    let master = ServerProcess::start(EXE, &master_config(""));
    let s1 = slave(&master, SECRET);
    let data = fixture("mp3/mp3-44100-128-s.mp3");
    let audio = audio_of(&data, Codec::Mp3);
    send_all(&master, "live", &data);
    assert!(wait_same(&master, &s1, Duration::from_secs(10)));
    // A listener on the slave, at the live edge, reading throughout.
    let (mut l, st, _, rest) = request(s1.listen, "GET", "/live", &[]);
    assert_eq!(st, 200);
    l.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let want = rest.len() + 150_000;
    let listener = std::thread::spawn(move || read_n(&mut l, rest, want, Duration::from_secs(60)));

    // The master dies; the slave is slow to notice (stopped), and the encoder
    // reconnects to the restarted master first.
    let admin_port = master.admin.port();
    drop(master);
    signal(s1.pid(), "STOP");
    let master = ServerProcess::try_start(
        EXE,
        &master_config("").replace(
            &format!("link: {{ secret: {SECRET} }}"),
            &format!("link: {{ secret: {SECRET}, resyncGraceSeconds: 60 }}"),
        ),
        &["--admin-port", &admin_port.to_string()],
    )
    .unwrap();
    let held = Instant::now();
    send_all(&master, "live", &data[..200_000]);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        buffered(&master) <= 0.0,
        "new audio is held until a slave has linked: {} bytes buffered",
        buffered(&master)
    );
    signal(s1.pid(), "CONT");

    // The slave links, the master takes its audio back and appends the held
    // audio after it: the slave keeps everything and its listener.
    let end = Instant::now() + Duration::from_secs(30);
    while !(buffered(&master) > audio.len() as f64 && buffered(&master) == buffered(&s1)) {
        assert!(
            Instant::now() < end,
            "no re-sync: master {} slave {}",
            buffered(&master),
            buffered(&s1)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        held.elapsed() < Duration::from_secs(30),
        "released by the slave's re-sync, not by the 60 s grace"
    );
    assert!(master
        .wait_log("resync hold released", Duration::from_secs(1))
        .is_some_and(|l| l.contains("pulled back")));
    let after = everything(&s1);
    assert!(
        after.starts_with(&audio) && after.len() > audio.len(),
        "the slave kept its buffer and appended the new audio"
    );
    // A new slave gets the same from the restarted master.
    let s2 = slave(&master, SECRET);
    assert!(wait_same(&master, &s2, Duration::from_secs(10)));
    assert!(after == everything(&s2), "master and slaves identical");
    let got = listener.join().unwrap();
    assert!(
        got.len() >= want,
        "the slave's listener was kept: {} of {want} bytes",
        got.len()
    );
    let at = find(&after, &got).expect("the listener heard the buffer's bytes, contiguous");
    assert!(
        at + got.len() > audio.len(),
        "and went on into the new audio"
    );
}

#[test]
fn a_wrong_secret_is_refused_and_logged_once() {
    let master = ServerProcess::start(EXE, &master_config(""));
    let bad = slave(&master, "wrong");
    assert_eq!(
        http_get(bad.listen, "/readyz", &[]).status,
        503,
        "a slave that never synced is not ready"
    );
    assert!(master
        .wait_log("wrong link secret", Duration::from_secs(5))
        .is_some());
    assert!(
        bad.wait_log("wrong link secret", Duration::from_secs(5))
            .is_some(),
        "the slave says why"
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        bad.log_lines("cannot connect to the master").len(),
        1,
        "logged once while it keeps failing"
    );
    assert_eq!(master.metric("streammachine_slaves"), Some(0.0));
    // Garbage on the link port is refused without harm.
    let auth = format!("Bearer {SECRET}");
    let r = http_get(master.admin, "/link", &[("Authorization", &auth)]);
    assert_eq!(r.status, 400, "a link request must ask for the upgrade");
    let r = http_get(
        master.admin,
        "/link",
        &[
            ("Authorization", &auth),
            ("Upgrade", "streammachine-link/1"),
            ("Connection", "Upgrade"),
        ],
    );
    assert_eq!(r.status, 101);
    let mut s = std::net::TcpStream::connect(master.admin).unwrap();
    use std::io::{Read, Write};
    s.write_all(format!("GET /link HTTP/1.1\r\nAuthorization: Bearer {SECRET}\r\nUpgrade: streammachine-link/1\r\nConnection: Upgrade\r\n\r\n").as_bytes())
        .unwrap();
    s.write_all(&[0xff, 0xff, 0xff, 0xff, 9, 9, 9]).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    assert!(master
        .wait_log("slave link: no hello", Duration::from_secs(5))
        .is_some());
    // A slave of another protocol version is refused with the reason.
    let mut s = std::net::TcpStream::connect(master.admin).unwrap();
    s.write_all(format!("GET /link HTTP/1.1\r\nAuthorization: Bearer {SECRET}\r\nUpgrade: streammachine-link/1\r\nConnection: Upgrade\r\n\r\n").as_bytes())
        .unwrap();
    s.write_all(&streamer::link::frame::hello(
        &streamer::link::frame::Hello {
            version: 99,
            id: "from-the-future".into(),
            next_seq: Default::default(),
            last: Default::default(),
        },
    ))
    .unwrap();
    let _ = s.read_to_end(&mut out);
    assert!(
        master
            .wait_log("another link protocol version", Duration::from_secs(5))
            .is_some_and(|l| l.contains("from-the-future")),
        "{:?}",
        master.log_lines("link")
    );
    assert_eq!(master.metric("streammachine_slaves"), Some(0.0));
    assert_eq!(http_get(master.admin, "/healthz", &[]).status, 200);
}

/// A transcoded stream is transcoded once, on the master; slaves replicate
/// its chunks like any other stream's: the same bytes on every slave.
#[test]
fn a_transcoded_stream_reaches_every_slave_byte_for_byte() {
    require("ffmpeg");
    let master = ServerProcess::start(
        EXE,
        &format!("mode: master\nlink: {{ secret: {SECRET} }}\nadmin: {{ token: tok }}\nsourceMounts:\n  - key: studio\n    password: pw\nstreams:\n  - key: plain\n    sourceMount: studio\n  - key: aac\n    sourceMount: studio\n    transcode: {{ format: aac, bitrate: 64 }}\n"),
    );
    let s1 = slave(&master, SECRET);
    let s2 = slave(&master, SECRET);
    let data = fixture("mp3/mp3-44100-128-s.mp3");
    send_all(&master, "studio", &data);
    // The source left, the transcoder flushed: wait until every replica
    // holds what the master holds.
    let bytes = |s: &ServerProcess| s.metric("streammachine_buffer_bytes{stream=\"aac\"}");
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let m = bytes(&master);
        std::thread::sleep(Duration::from_millis(300));
        if m.is_some_and(|m| m > 0.0) && m == bytes(&master) && m == bytes(&s1) && m == bytes(&s2) {
            break;
        }
        assert!(
            Instant::now() < end,
            "the replicas never matched the master"
        );
    }
    let r1 = http_get(s1.listen, "/aac?pump=99999&offset=99999", &[]);
    let r2 = http_get(s2.listen, "/aac?pump=99999&offset=99999", &[]);
    assert_eq!(r1.header("content-type"), Some("audio/aac"));
    assert!(
        !r1.body.is_empty() && r1.body == r2.body,
        "same bytes on both slaves"
    );
    assert_eq!(Some(r1.body.len() as f64), bytes(&master));
    let path = s1.dir.join("aac.aac");
    std::fs::write(&path, &r1.body).unwrap();
    let errors = ffmpeg_decode_errors(&path);
    assert!(errors.trim().is_empty(), "{errors}");
    // Slaves do not transcode: no transcoder metric there.
    assert_eq!(
        s1.metric("streammachine_transcoder_up{stream=\"aac\"}"),
        None
    );
    assert_eq!(
        master.metric("streammachine_transcoder_up{stream=\"aac\"}"),
        Some(1.0)
    );
}

/// A slave with dumps keeps its buffer and the master's config across its
/// own restart, and serves them while the master is away.
#[test]
fn a_slave_restarted_while_its_master_is_away_serves_from_its_dump() {
    let master = ServerProcess::start(EXE, &master_config(""));
    let dumps = scratch_dir("slave-dumps");
    let slave_config = format!(
        "mode: slave\nlink: {{ secret: {SECRET} }}\nmaster: {{ url: \"http://{}\" }}\ndumps: {{ dir: {} }}\n",
        master.admin,
        dumps.display()
    );
    let mut s1 = ServerProcess::start(EXE, &slave_config);
    let data = fixture("mp3/mp3-44100-128-s.mp3");
    let audio = audio_of(&data, Codec::Mp3);
    send_all(&master, "live", &data);
    assert!(wait_same(&master, &s1, Duration::from_secs(10)));
    let playlist = http_get(s1.listen, "/live.m3u8", &[]).text();
    // The master dies; the slave restarts (SIGTERM: it dumps) while it is away.
    drop(master);
    assert_eq!(s1.terminate(), Some(0));
    let s2 = ServerProcess::start(EXE, &slave_config);
    assert!(s2
        .wait_log(
            "serving the master's last config until it answers",
            Duration::from_secs(5)
        )
        .is_some());
    assert!(
        everything(&s2) == audio,
        "the restarted slave serves the same audio"
    );
    assert_eq!(http_get(s2.listen, "/live.m3u8", &[]).text(), playlist);
    assert_eq!(http_call(s2.listen, "GET", "/readyz", &[]).status, 200);
}
