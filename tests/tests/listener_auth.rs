//! Icecast's URL listener authentication (issue 12): a stream's
//! `listenerAuth` webhooks, against a small real HTTP server started here
//! (tests/src/webhook.rs) that answers as Icecast auth scripts do: allow
//! (`icecast-auth-user: 1`), deny (with `icecast-auth-message`), slow (past
//! the timeout), down (nothing listens); on raw, ICY, pump and HLS, across a
//! handoff and on a slave.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::time::{Duration, Instant};

use streammachine_tests::webhook::{Call, Reply, Webhook};
use streammachine_tests::*;

const EXE: &str = env!("CARGO_BIN_EXE_streammachine-under-test");

/// The auth script: `good` and `timed` (2 s) may listen, `slow` answers
/// after 3 s, everyone else is refused with a message.
fn script() -> Webhook {
    Webhook::start(|c: &Call| {
        let user = c.form.get("user").cloned().unwrap_or_default();
        let yes = ("icecast-auth-user".to_string(), "1".to_string());
        match (c.form.get("action").map(String::as_str), user.as_str()) {
            (Some("listener_add"), "good") => Reply {
                headers: vec![yes],
                ..Reply::default()
            },
            (Some("listener_add"), "timed") => Reply {
                headers: vec![yes, ("icecast-auth-timelimit".into(), "2".into())],
                ..Reply::default()
            },
            (Some("listener_add"), "slow") => Reply {
                headers: vec![yes],
                delay: Duration::from_secs(3),
                ..Reply::default()
            },
            (Some("listener_add"), _) => Reply {
                headers: vec![(
                    "icecast-auth-message".into(),
                    format!("no ticket for {user:?}"),
                )],
                ..Reply::default()
            },
            _ => Reply::default(),
        }
    })
}

fn basic(user: &str, pass: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
    )
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    free_port()
}

fn auth_yaml(hook: &Webhook, extra: &str) -> String {
    format!(
        "listenerAuth: {{ listenerAdd: \"http://{0}/add\", listenerRemove: \"http://{0}/remove\", timeoutSeconds: 1, headers: [Referer]{extra} }}",
        hook.addr
    )
}

#[test]
fn the_webhook_lets_in_refuses_and_hears_leaves_on_every_output() {
    let hook = script();
    let down = closed_port();
    let config = format!(
        "admin: {{ token: t }}\nanalytics: {{ sessionIdleSeconds: 2 }}\nstreams:\n  - key: live\n    password: pw\n    hls: {{ segmentSeconds: 1 }}\n    {}\n  - key: open\n    password: pw\n    listenerAuth: {{ listenerAdd: \"http://127.0.0.1:{down}/add\", whenUnreachable: allow }}\n  - key: shut\n    password: pw\n    listenerAuth: {{ listenerAdd: \"http://127.0.0.1:{down}/add\" }}\n",
        auth_yaml(&hook, "")
    );
    let server = ServerProcess::start(EXE, &config);
    let data = fixture("mp3/mp3-44100-128-s.mp3");
    for key in ["live", "open", "shut"] {
        server.send_source(key, "pw", &data[..200_000]);
    }
    let good = basic("good", "s3cret");

    // Raw: let in, with Icecast's form fields; the id is the listener's.
    let (s, st, _, _) = request(
        server.listen,
        "GET",
        "/live?token=abc",
        &[
            ("Authorization", &good),
            ("User-Agent", "TestPlayer/1.0"),
            ("Referer", "https://station.example/player"),
        ],
    );
    assert_eq!(st, 200);
    let add = hook.actions("listener_add").pop().expect("a listener_add");
    let f = &add.form;
    assert_eq!(add.path, "/add");
    for (k, v) in [
        ("server", "127.0.0.1"),
        ("port", &server.listen.port().to_string()),
        ("mount", "/live?token=abc"),
        ("user", "good"),
        ("pass", "s3cret"),
        ("ip", "127.0.0.1"),
        ("agent", "TestPlayer/1.0"),
        ("ClientHeader.Referer", "https://station.example/player"),
    ] {
        assert_eq!(f.get(k).map(String::as_str), Some(v), "{k} in {f:?}");
    }
    let client = f["client"].clone();
    let listed = http_get(
        server.admin,
        "/api/streams/live/listeners",
        &[("Authorization", "Bearer t")],
    );
    let listed: serde_json::Value = serde_json::from_slice(&listed.body).unwrap();
    assert_eq!(listed["listeners"][0]["id"].to_string(), client, "{listed}");
    // Leaving: listener_remove for the same client, with a duration.
    drop(s);
    let removed = hook
        .wait_for(Duration::from_secs(10), |c| {
            c.form.get("action").map(String::as_str) == Some("listener_remove")
                && c.form.get("client") == Some(&client)
        })
        .expect("listener_remove after the listener left");
    assert_eq!(removed.path, "/remove");
    assert_eq!(removed.form["mount"], "/live?token=abc");
    assert!(removed.form["duration"].parse::<u64>().is_ok());

    // ICY and pump are let in the same way.
    let (_icy, st, head, _) = request(
        server.listen,
        "GET",
        "/live",
        &[("Authorization", &good), ("Icy-MetaData", "1")],
    );
    assert_eq!(st, 200);
    assert!(head.iter().any(|(n, _)| n == "icy-metaint"), "{head:?}");
    let (_pump, st, _, _) = request(
        server.listen,
        "GET",
        "/live?pump=16000",
        &[("Authorization", &good)],
    );
    assert_eq!(st, 200);

    // Refused: 401 with the script's message, and no listener_remove.
    let adds = hook.actions("listener_add").len();
    for auth in [Some(basic("mallory", "x")), None] {
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("Authorization", a.as_str())).collect();
        let (mut s, st, head, rest) = request(server.listen, "GET", "/live", &headers);
        assert_eq!(st, 401);
        assert!(
            head.iter()
                .any(|(n, v)| n == "www-authenticate" && v.starts_with("Basic")),
            "{head:?}"
        );
        let body = String::from_utf8_lossy(&read_to_close(&mut s, rest)).into_owned();
        let who = if auth.is_some() { "mallory" } else { "" };
        assert!(body.contains(&format!("no ticket for {who:?}")), "{body}");
    }
    assert_eq!(hook.actions("listener_add").len(), adds + 2);
    assert!(
        server
            .metric("streammachine_listener_auth_total{result=\"denied\",stream=\"live\"}")
            .unwrap_or(0.0)
            >= 2.0
    );

    // Slow: no answer within timeoutSeconds is "unreachable": 503, at the timeout.
    let t0 = Instant::now();
    let (_, st, head, _) = request(
        server.listen,
        "GET",
        "/live",
        &[("Authorization", &basic("slow", "x"))],
    );
    let took = t0.elapsed();
    assert_eq!(st, 503);
    assert!(head.iter().any(|(n, _)| n == "retry-after"), "{head:?}");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(2500),
        "answered after {took:?} (timeout 1 s, the script 3 s)"
    );
    // Down: fail open lets in, fail closed turns away.
    assert_eq!(request(server.listen, "GET", "/open", &[]).1, 200);
    let (mut s, st, _, rest) = request(server.listen, "GET", "/shut", &[]);
    assert_eq!(st, 503);
    let body = String::from_utf8_lossy(&read_to_close(&mut s, rest)).into_owned();
    assert!(body.contains("unavailable"), "{body}");
    assert!(
        server
            .wait_log(
                "listener authentication call failed",
                Duration::from_secs(5)
            )
            .is_some(),
        "logged"
    );

    // A time limit (icecast-auth-timelimit: 2) ends the listener by itself,
    // even with no audio coming (the source sent all it had).
    let (mut s, st, _, rest) = request(
        server.listen,
        "GET",
        "/live",
        &[("Authorization", &basic("timed", "x"))],
    );
    assert_eq!(st, 200);
    let t0 = Instant::now();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = read_to_close(&mut s, rest);
    let lasted = t0.elapsed();
    assert!(
        lasted >= Duration::from_millis(1000) && lasted < Duration::from_secs(5),
        "the 2 s listener was let go after {lasted:?}"
    );
    assert!(server.wait_metric_at_least(
        "streammachine_listener_disconnections_total{reason=\"time_limit\",stream=\"live\"}",
        1.0,
        Duration::from_secs(5)
    ));

    // HLS: the session is let in once; its segments (which carry the
    // session) need no credentials and no new call.
    let adds = hook.actions("listener_add").len();
    let ua = ("User-Agent", "HlsPlayer/1");
    let pl = http_get(server.listen, "/live.m3u8", &[("Authorization", &good), ua]);
    assert_eq!(pl.status, 200, "{}", pl.text());
    let seg = pl
        .text()
        .lines()
        .find(|l| l.starts_with("live/seg/"))
        .expect("a segment")
        .to_string();
    let hls_add = hook.actions("listener_add").pop().unwrap();
    assert!(
        hls_add.form["mount"].starts_with("/live.m3u8"),
        "{:?}",
        hls_add.form
    );
    assert_eq!(
        http_get(server.listen, &format!("/{seg}"), &[ua]).status,
        200
    );
    assert_eq!(http_get(server.listen, "/live.m3u8", &[ua]).status, 200);
    assert_eq!(
        hook.actions("listener_add").len(),
        adds + 1,
        "one call per session"
    );
    // Another session (another player) without a ticket: refused, for the
    // playlist and for a segment alike.
    let other = ("User-Agent", "OtherPlayer/2");
    assert_eq!(http_get(server.listen, "/live.m3u8", &[other]).status, 401);
    let bare = seg.split('?').next().unwrap();
    assert_eq!(
        http_get(server.listen, &format!("/{bare}?session=forged"), &[other]).status,
        401
    );
    // The session stops fetching: after sessionIdleSeconds, listener_remove.
    let hls_client = hls_add.form["client"].clone();
    assert!(
        hook.wait_for(Duration::from_secs(15), |c| {
            c.form.get("action").map(String::as_str) == Some("listener_remove")
                && c.form.get("client") == Some(&hls_client)
        })
        .is_some(),
        "listener_remove for the idle HLS session"
    );
}

fn argv(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn handoff_ports() -> Vec<String> {
    ["--listen-port", "--source-port", "--admin-port"]
        .iter()
        .flat_map(|f| [f.to_string(), free_port().to_string()])
        .collect()
}

/// A listener let in keeps its ticket (and its id) across a handoff: the
/// successor says listener_remove when it leaves.
#[test]
fn a_ticket_goes_across_a_handoff_and_the_successor_says_remove() {
    let hook = script();
    let dir = scratch_dir("auth-handoff");
    let config = format!(
        "admin: {{ token: t }}\nstreams:\n  - key: live\n    password: pw\n    {}\n",
        auth_yaml(&hook, "")
    );
    let ports = handoff_ports();
    let mut args: Vec<String> = ports.clone();
    args.extend([
        "--control-socket".into(),
        dir.join("a.sock").display().to_string(),
    ]);
    let mut old = ServerProcess::try_start(EXE, &config, &argv(&args)).unwrap();
    let data = fixture("mp3/mp3-44100-128-s.mp3");
    old.send_source("live", "pw", &data[..200_000]);
    let (s, st, _, _) = request(
        old.listen,
        "GET",
        "/live",
        &[
            ("Authorization", &basic("good", "pw")),
            ("User-Agent", "Kept/1"),
        ],
    );
    assert_eq!(st, 200);
    let client = hook.actions("listener_add").pop().unwrap().form["client"].clone();
    let mut args: Vec<String> = ports.clone();
    args.extend([
        "--control-socket".into(),
        dir.join("b.sock").display().to_string(),
        "--handoff-from".into(),
        dir.join("h.sock").display().to_string(),
    ]);
    let new = ServerProcess::try_start(EXE, &config, &argv(&args)).unwrap();
    assert!(new
        .wait_log(
            "waiting for a predecessor's handoff",
            Duration::from_secs(10)
        )
        .is_some());
    let out = std::process::Command::new(EXE)
        .arg("--control-socket")
        .arg(dir.join("a.sock"))
        .args(["handoff", "--to"])
        .arg(dir.join("h.sock"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(old.wait_exit(Duration::from_secs(10)), Some(0));
    // The successor lists it under the same id, with its User-Agent.
    let listed = http_get(
        new.admin,
        "/api/streams/live/listeners",
        &[("Authorization", "Bearer t")],
    );
    let listed: serde_json::Value = serde_json::from_slice(&listed.body).unwrap();
    assert_eq!(listed["listeners"][0]["id"].to_string(), client, "{listed}");
    assert_eq!(listed["listeners"][0]["userAgent"], "Kept/1", "{listed}");
    assert!(hook.actions("listener_remove").is_empty());
    drop(s);
    assert!(
        hook.wait_for(Duration::from_secs(10), |c| {
            c.form.get("action").map(String::as_str) == Some("listener_remove")
                && c.form.get("client") == Some(&client)
        })
        .is_some(),
        "the successor said listener_remove"
    );
    assert_eq!(
        hook.actions("listener_add").len(),
        1,
        "no second listener_add"
    );
}

/// On a slave, the stream's listenerAuth (from the master's config) guards
/// the slave's listeners; the slave calls the webhook itself.
#[test]
fn a_slave_asks_the_webhook_for_its_listeners() {
    let hook = script();
    let master = ServerProcess::start(
        EXE,
        &format!(
            "mode: master\nlink: {{ secret: s }}\nstreams:\n  - key: live\n    password: pw\n    {}\n",
            auth_yaml(&hook, "")
        ),
    );
    let slave = ServerProcess::start(
        EXE,
        &format!(
            "mode: slave\nlink: {{ secret: s }}\nmaster: {{ url: \"http://{}\" }}\n",
            master.admin
        ),
    );
    let data = fixture("mp3/mp3-44100-128-s.mp3");
    master.send_source("live", "pw", &data[..200_000]);
    assert!(slave.wait_metric_at_least(
        "streammachine_buffer_seconds{stream=\"live\"}",
        1.0,
        Duration::from_secs(15)
    ));
    assert_eq!(
        request(
            slave.listen,
            "GET",
            "/live",
            &[("Authorization", &basic("eve", "x"))]
        )
        .1,
        401
    );
    assert_eq!(
        request(
            slave.listen,
            "GET",
            "/live",
            &[("Authorization", &basic("good", "x"))]
        )
        .1,
        200
    );
    let add = hook.actions("listener_add").pop().unwrap();
    assert_eq!(add.form["port"], slave.listen.port().to_string());
    assert_eq!(add.form["user"], "good");
}
