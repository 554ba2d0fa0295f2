//! Side by side with a real Icecast 2.4 (Debian's `icecast2`), issue 12: the
//! same encoder (ffmpeg, same ice-* headers) and the same listener on both,
//! then `/status-json.xsl`, `/admin/stats`, `/admin/listmounts` and
//! `/admin/listclients` compared field by field, Icecast's Basic auth,
//! `/admin/killclient` and `/admin/killsource`.
//!
//! Values that must differ are listed where they are skipped: server id,
//! start times, host/port in URLs, and the fields we add because we read
//! them from the audio itself (`bitrate`, `channels`, `samplerate`), which
//! Icecast reports only when an encoder sends `ice-audio-info`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::io::Read as _;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::Value;
use streammachine_tests::icecast::Icecast;
use streammachine_tests::*;

const EXE: &str = env!("CARGO_BIN_EXE_streammachine-under-test");

/// Fields we report that Icecast reports only from `ice-audio-info`.
const OURS_ONLY: [&str; 3] = ["bitrate", "channels", "samplerate"];

fn basic(user: &str, pass: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
    )
}

/// The same encoder for both: the looped fixture in real time, ice headers.
fn encoder(url: &str) -> std::process::Child {
    ffmpeg_source(
        &fixture_path("mp3/mp3-44100-128-s.mp3"),
        &[
            "-c",
            "copy",
            "-content_type",
            "audio/mpeg",
            "-ice_name",
            "Side by Side",
            "-ice_genre",
            "Jazz",
            "-f",
            "mp3",
        ],
        url,
    )
}

/// A listener that stays connected (reading in the background).
fn listener(addr: SocketAddr) -> TcpStream {
    let (s, status, _, _) = request(addr, "GET", "/live", &[("User-Agent", "SideBySide/1.0")]);
    assert_eq!(status, 200);
    let mut r = s.try_clone().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 16384];
        while matches!(r.read(&mut buf), Ok(n) if n > 0) {}
    });
    s
}

/// The names of the elements directly inside `<icestats>` (before the first
/// source) and inside the first `<source>`.
fn element_names(xml: &str) -> (Vec<String>, Vec<String>) {
    let names = |part: &str| -> Vec<String> {
        part.split('<')
            .skip(1)
            .filter(|t| !t.starts_with('/') && !t.starts_with('?'))
            .map(|t| t.split(['>', ' ']).next().unwrap().to_string())
            .filter(|n| n != "icestats" && n != "source")
            .collect()
    };
    let (top, rest) = xml.split_once("<source ").unwrap_or((xml, ""));
    let first = rest.split("</source>").next().unwrap_or("");
    (names(top), names(first))
}

/// The text of `<name>…</name>` in the first source.
fn value<'a>(xml: &'a str, name: &str) -> Option<&'a str> {
    find_value(xml.split_once("<source ").map_or("", |(_, r)| r), name)
}

/// The text of `<name>…</name>` directly in `<icestats>`.
fn top_value<'a>(xml: &'a str, name: &str) -> Option<&'a str> {
    find_value(xml.split_once("<source ").map_or(xml, |(t, _)| t), name)
}

fn find_value<'a>(part: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name}>");
    let start = part.find(&open)? + open.len();
    let end = part[start..].find(&format!("</{name}>"))? + start;
    Some(&part[start..end])
}

fn admin(addr: SocketAddr, path: &str, auth: &str) -> HttpResponse {
    http_get(addr, path, &[("Authorization", auth)])
}

#[test]
fn admin_stats_listmounts_and_status_json_match_icecast_field_by_field() {
    require("icecast2");
    require("ffmpeg");
    let dir = scratch_dir("icecast-admin");
    let port = free_port();
    let icecast = Icecast::start(&dir, port);
    let ours = ServerProcess::start(
        EXE,
        "admin: { token: tok }\nstreams:\n  - key: live\n    password: pw\n",
    );
    let mut e1 = encoder(&format!("icecast://source:pw@{}/live", icecast.addr));
    let mut e2 = encoder(&format!("icecast://source:pw@{}/live", ours.source));
    let deadline = Instant::now() + Duration::from_secs(15);
    while !(icecast.has_source()
        && ours.metric("streammachine_source_connected{mount=\"live\"}") == Some(1.0))
    {
        assert!(Instant::now() < deadline, "a source never arrived");
        std::thread::sleep(Duration::from_millis(100));
    }
    let _l1 = listener(icecast.addr);
    let _l2 = listener(ours.listen);
    std::thread::sleep(Duration::from_millis(500));
    let ice_auth = basic("admin", "adminpw");
    let our_auth = basic("admin", "tok");

    // /status-json.xsl: the same keys in the same order, the same values
    // but for the listed ones.
    let get_json = |addr: SocketAddr| -> Value {
        serde_json::from_str(&http_get(addr, "/status-json.xsl", &[]).text()).unwrap()
    };
    let (a, b) = (get_json(icecast.addr), get_json(ours.listen));
    let keys = |v: &Value| -> Vec<String> {
        v.as_object()
            .unwrap()
            .keys()
            .filter(|k| !OURS_ONLY.contains(&k.as_str()))
            .cloned()
            .collect()
    };
    let text = http_get(ours.listen, "/status-json.xsl", &[]).text();
    assert!(text.contains("\"dummy\":null}"), "dummy last: {text}");
    assert_eq!(keys(&a["icestats"]), keys(&b["icestats"]));
    let (sa, sb) = (&a["icestats"]["source"], &b["icestats"]["source"]);
    assert!(sa.is_object() && sb.is_object(), "{a}\n{b}");
    let mut ka = keys(sa);
    let mut kb = keys(sb);
    // serde_json's map sorts keys, so compare the sets here and the order
    // on the raw text above (dummy last).
    ka.sort();
    kb.sort();
    assert_eq!(
        ka, kb,
        "status-json source fields\nicecast: {sa}\nours: {sb}"
    );
    for field in [
        "genre",
        "listener_peak",
        "listeners",
        "server_description",
        "server_name",
        "server_type",
    ] {
        assert_eq!(
            sa[field], sb[field],
            "status-json {field}\nicecast: {sa}\nours: {sb}"
        );
    }
    assert!(sb["listenurl"]
        .as_str()
        .unwrap()
        .ends_with(&format!(":{}/live", ours.listen.port())));
    assert!(sb.get("title").is_none(), "no title, no title field: {sb}");
    // Asked on the admin port, listener URLs still name the listener port.
    let on_admin = get_json(ours.admin);
    let url = on_admin["icestats"]["source"]["listenurl"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        url.ends_with(&format!(":{}/live", ours.listen.port())),
        "{url}"
    );

    // /admin/stats: element names in order; values.
    let ice = admin(icecast.addr, "/admin/stats", &ice_auth);
    let mine = admin(ours.admin, "/admin/stats", &our_auth);
    assert_eq!((ice.status, mine.status), (200, 200), "{}", mine.text());
    assert_eq!(mine.header("content-type"), ice.header("content-type"));
    let (ice_text, our_text) = (ice.text(), mine.text());
    let (ice_top, ice_src) = element_names(&ice_text);
    let (our_top, our_src) = element_names(&our_text);
    assert_eq!(ice_top, our_top, "stats:\n{ice_text}\n{our_text}");
    let our_src: Vec<String> = our_src
        .into_iter()
        .filter(|n| !OURS_ONLY.contains(&n.as_str()))
        .collect();
    assert_eq!(ice_src, our_src, "stats source:\n{ice_text}\n{our_text}");
    for field in ["listeners", "sources", "listener_connections"] {
        assert_eq!(
            top_value(&ice_text, field),
            top_value(&our_text, field),
            "stats {field}:\n{ice_text}\n{our_text}"
        );
    }
    for field in [
        "listeners",
        "genre",
        "listener_peak",
        "max_listeners",
        "public",
        "server_name",
        "server_type",
        "slow_listeners",
        "source_ip",
    ] {
        assert_eq!(
            value(&ice_text, field),
            value(&our_text, field),
            "stats {field}:\n{ice_text}\n{our_text}"
        );
    }
    assert!(value(&our_text, "user_agent").unwrap().starts_with("Lavf/"));
    assert_eq!(
        value(&ice_text, "user_agent"),
        value(&our_text, "user_agent")
    );

    // /admin/listmounts: the same document but for the seconds connected.
    let ice = admin(icecast.addr, "/admin/listmounts", &ice_auth).text();
    let mine = admin(ours.admin, "/admin/listmounts", &our_auth).text();
    let strip = |s: &str| {
        let i = s.find("<Connected>").unwrap();
        let j = s.find("</Connected>").unwrap();
        format!("{}{}", &s[..i], &s[j..])
    };
    assert_eq!(strip(&ice).trim(), strip(&mine).trim());
    let secs = |s: &str| value(s, "Connected").unwrap().parse::<i64>().unwrap();
    assert!((secs(&ice) - secs(&mine)).abs() <= 3, "{ice}\n{mine}");

    // Icecast's Basic auth: wrong password or user, or none: 401 asking for Basic.
    for auth in [basic("admin", "nope"), basic("source", "tok")] {
        let r = admin(ours.admin, "/admin/stats", &auth);
        assert_eq!(r.status, 401);
        assert!(r.header("www-authenticate").unwrap().starts_with("Basic"));
    }
    assert_eq!(http_get(ours.admin, "/admin/listmounts", &[]).status, 401);
    // The bearer token works too, and unknown or unbuilt commands say so.
    assert_eq!(admin(ours.admin, "/admin/stats", "Bearer tok").status, 200);
    let r = admin(ours.admin, "/admin/nosuch", &our_auth);
    assert_eq!(r.status, 400);
    assert!(r.text().contains("Unrecognised command"), "{}", r.text());
    let r = admin(
        ours.admin,
        "/admin/fallbacks?mount=/live&fallback=/x",
        &our_auth,
    );
    assert_eq!(r.status, 501);
    assert!(r.text().contains("not implemented"), "{}", r.text());

    // listclients: the same elements, address and User-Agent; then
    // killclient by id: the same reply, and the listener is gone.
    let ice = admin(icecast.addr, "/admin/listclients?mount=/live", &ice_auth).text();
    let mine = admin(ours.admin, "/admin/listclients?mount=/live", &our_auth).text();
    let names = |x: &str| {
        x.split('<')
            .filter(|t| !t.starts_with('/') && !t.starts_with('?') && !t.is_empty())
            .map(|t| t.split(['>', ' ']).next().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&ice), names(&mine), "listclients:\n{ice}\n{mine}");
    for field in ["Listeners", "IP", "UserAgent"] {
        assert_eq!(
            value(&ice, field),
            value(&mine, field),
            "{field}:\n{ice}\n{mine}"
        );
    }
    assert_eq!(value(&mine, "UserAgent"), Some("SideBySide/1.0"));
    let (ice_id, our_id) = (value(&ice, "ID").unwrap(), value(&mine, "ID").unwrap());
    let ice_kill = admin(
        icecast.addr,
        &format!("/admin/killclient?mount=/live&id={ice_id}"),
        &ice_auth,
    )
    .text();
    let our_kill = admin(
        ours.admin,
        &format!("/admin/killclient?mount=/live&id={our_id}"),
        &our_auth,
    )
    .text();
    assert_eq!(
        ice_kill
            .replace(&format!("Client {ice_id} "), "Client N ")
            .trim(),
        our_kill
            .replace(&format!("Client {our_id} "), "Client N ")
            .trim()
    );
    assert!(our_kill.contains("<return>1</return>"), "{our_kill}");
    let again = admin(
        ours.admin,
        &format!("/admin/killclient?mount=/live&id={our_id}"),
        &our_auth,
    )
    .text();
    assert!(
        again.contains("not found") && again.contains("<return>0</return>"),
        "{again}"
    );
    assert!(ours.wait_metric(
        "streammachine_listener_disconnections_total{reason=\"kicked\",stream=\"live\"}",
        1.0,
        Duration::from_secs(5)
    ));
    let after = admin(ours.admin, "/admin/listclients?mount=/live", &our_auth).text();
    assert_eq!(value(&after, "Listeners"), Some("0"), "{after}");

    // The same through our JSON API: list, and disconnect by id.
    let _l3 = listener(ours.listen);
    let api_list = || -> Vec<Value> {
        let r = admin(ours.admin, "/api/streams/live/listeners", "Bearer tok");
        assert_eq!(r.status, 200, "{}", r.text());
        let v: Value = serde_json::from_str(&r.text()).unwrap();
        v["listeners"].as_array().unwrap().clone()
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    let listed = loop {
        let l = api_list();
        if !l.is_empty() || Instant::now() > deadline {
            break l;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["userAgent"], "SideBySide/1.0");
    assert_eq!(listed[0]["ip"], "127.0.0.1");
    let id = listed[0]["id"].as_u64().unwrap();
    let del = |id: u64| {
        http_send(
            ours.admin,
            "DELETE",
            &format!("/api/streams/live/listeners/{id}"),
            &[("Authorization", "Bearer tok")],
            b"",
        )
        .status
    };
    assert_eq!(del(id), 204);
    assert_eq!(del(id + 1000), 404);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !api_list().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the listener was not disconnected"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // killsource: the same reply; then neither lists the source.
    let missing_ice = admin(icecast.addr, "/admin/killsource?mount=/nope", &ice_auth);
    let missing_ours = admin(ours.admin, "/admin/killsource?mount=/nope", &our_auth);
    assert_eq!((missing_ice.status, missing_ours.status), (400, 400));
    assert_eq!(missing_ice.text().trim(), missing_ours.text().trim());
    let ice = admin(icecast.addr, "/admin/killsource?mount=/live", &ice_auth).text();
    let mine = admin(ours.admin, "/admin/killsource?mount=/live", &our_auth).text();
    assert_eq!(ice.trim(), mine.trim());
    let deadline = Instant::now() + Duration::from_secs(5);
    while get_json(ours.listen)["icestats"].get("source").is_some() {
        assert!(
            Instant::now() < deadline,
            "the killed source is still listed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = e1.kill();
    let _ = e2.kill();
    let _ = e1.wait();
    let _ = e2.wait();
}

/// `/admin/moveclients`: a listener of `/a` goes on in `/b` at the same
/// wall-clock position: what it receives is a's audio up to a frame
/// boundary, then b's audio contiguous from the frame playing at that time
/// in b (compared through each buffer's oldest timestamp and frame count).
#[test]
fn moveclients_continues_a_listener_in_the_other_stream_at_the_same_time() {
    let server = ServerProcess::start(
        EXE,
        "admin: { token: tok }\nstreams:\n  - key: a\n    password: pw\n  - key: b\n    password: pw\n",
    );
    let auth = basic("admin", "tok");
    let feed = |mount: &'static str, file: &str| {
        let data = fixture(file);
        let frames = frames_of(&data, streamer::format::Codec::Mp3);
        let addr = server.source;
        std::thread::spawn(move || {
            let mut src = Source::connect(addr, mount, "pw", SourceMethod::Ice, &[]).unwrap();
            let _ = src.send_realtime(&data, &frames, 44_100);
        })
    };
    let _fa = feed("a", "mp3/tone440Hz-44100-128-m.mp3");
    let _fb = feed("b", "mp3/tone1kHz-44100-128-m.mp3");
    for s in ["a", "b"] {
        assert!(server.wait_metric_at_least(
            &format!("streammachine_buffer_seconds{{stream=\"{s}\"}}"),
            2.0,
            Duration::from_secs(10)
        ));
    }
    // A listener of /a, read in the background.
    let (s, status, _, rest) = request(server.listen, "GET", "/a", &[]);
    assert_eq!(status, 200);
    let got = std::sync::Arc::new(std::sync::Mutex::new(rest));
    let sink = std::sync::Arc::clone(&got);
    let mut r = s.try_clone().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        while let Ok(n) = r.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    std::thread::sleep(Duration::from_millis(1500));
    let reply = admin(
        server.admin,
        "/admin/moveclients?mount=/a&destination=/b",
        &auth,
    )
    .text();
    assert_eq!(
        reply.trim(),
        "<?xml version=\"1.0\"?>\n<iceresponse><message>Clients moved from /a to /b</message><return>1</return></iceresponse>"
    );
    assert!(server.wait_metric(
        "streammachine_listeners{output=\"raw\",stream=\"b\"}",
        1.0,
        Duration::from_secs(5)
    ));
    assert_eq!(
        server.metric("streammachine_listeners{output=\"raw\",stream=\"a\"}"),
        Some(0.0)
    );
    std::thread::sleep(Duration::from_millis(2500));
    let received = got.lock().unwrap().clone();
    drop(s);
    let whole = |key: &str| {
        http_get(
            server.listen,
            &format!("/{key}?pump=99999&offset=99999"),
            &[],
        )
        .body
    };
    let (a_all, b_all) = (whole("a"), whole("b"));
    // a's part: a contiguous run of a's buffer, ending on a frame boundary.
    let at = find(&a_all, &received[..1024]).expect("starts in a");
    let k = received
        .iter()
        .zip(&a_all[at..])
        .take_while(|(x, y)| x == y)
        .count();
    // (b's first bytes may match a's next ones, a frame header alike: back
    // to the last frame boundary the common run reaches.)
    let a_frames = frames_of(&a_all, streamer::format::Codec::Mp3);
    let a_boundary = a_frames.iter().rposition(|&(o, _, _)| o <= at + k).unwrap();
    let a_end = a_frames[a_boundary].0;
    // b's part: contiguous in b's buffer, from a frame boundary, to the end.
    let rest = &received[a_end - at..];
    assert!(
        rest.len() > 20_000,
        "b's audio after the move: {} bytes",
        rest.len()
    );
    let bt = find(&b_all, &rest[..1024]).expect("goes on in b");
    assert!(b_all[bt..].starts_with(rest), "b's audio contiguous");
    let b_frames = frames_of(&b_all, streamer::format::Codec::Mp3);
    let b_boundary = b_frames
        .iter()
        .position(|&(o, _, _)| o == bt)
        .expect("b's audio starts on a frame");
    // The same wall-clock time on both sides of the switch.
    let oldest = |key: &str| {
        let v: Value = serde_json::from_str(
            &admin(server.admin, &format!("/api/streams/{key}"), "Bearer tok").text(),
        )
        .unwrap();
        streamer::output::start::parse_time(v["buffer"]["oldest"].as_str().unwrap()).unwrap()
    };
    let frame_us = 1152.0 * 1e6 / 44_100.0;
    let a_time = oldest("a") + (a_boundary as f64 * frame_us) as i64;
    let b_time = oldest("b") + (b_boundary as f64 * frame_us) as i64;
    assert!(
        (a_time - b_time).abs() < 150_000,
        "switched at {a_time} in a, {b_time} in b"
    );
}
