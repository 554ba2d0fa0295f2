//! The Redis config store against a real redis-server: API changes survive a
//! restart, merged with the file with the documented precedence.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use serde_json::{json, Value};
use streammachine_tests::*;

const EXE: &str = env!("CARGO_BIN_EXE_streammachine-under-test");

fn config(redis: &str, extra_stream: &str) -> String {
    format!(
        "admin: {{ token: tok }}\nredis: {{ url: \"{redis}\", prefix: smtest }}\nstreams:\n  - key: from-file\n    password: pw\n  - key: removed-later\n    password: pw\n{extra_stream}"
    )
}

fn api(server: &ServerProcess, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let r = http_send(
        server.admin,
        method,
        path,
        &[("Authorization", "Bearer tok")],
        body.as_bytes(),
    );
    let v = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    (r.status, v)
}

fn keys(server: &ServerProcess) -> Vec<String> {
    let (_, v) = api(server, "GET", "/api/streams", None);
    let mut k: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["key"].as_str().unwrap().to_string())
        .collect();
    k.sort();
    k
}

#[test]
fn api_changes_survive_a_restart_and_merge_with_the_file() {
    let redis = RedisProcess::start();
    let url = redis.url(3);
    // Redis empty: the file's streams are served (the original ignored them).
    let mut first = ServerProcess::start(EXE, &config(&url, ""));
    assert_eq!(keys(&first), ["from-file", "removed-later"]);
    assert_eq!(
        api(
            &first,
            "POST",
            "/api/source-mounts",
            Some(json!({"key": "studio", "password": "sp"}))
        )
        .0,
        201
    );
    assert_eq!(
        api(
            &first,
            "POST",
            "/api/streams",
            Some(json!({"key": "made-by-api", "sourceMount": "studio", "rewindSeconds": 120}))
        )
        .0,
        201
    );
    assert_eq!(
        api(
            &first,
            "PUT",
            "/api/streams/from-file",
            Some(json!({"key": "from-file", "rewindSeconds": 600}))
        )
        .0,
        200
    );
    assert_eq!(
        api(&first, "DELETE", "/api/streams/removed-later", None).0,
        204
    );
    // Saved in the selected database under the prefix.
    let mut stored = String::new();
    for _ in 0..50 {
        stored = redis.cli(&["-n", "3", "GET", "smtest:config"]);
        if stored.contains("made-by-api") && stored.contains("removed-later") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let doc: Value =
        serde_json::from_str(stored.trim()).unwrap_or_else(|e| panic!("{e}: {stored:?}"));
    assert_eq!(doc["deletedStreams"], json!(["removed-later"]));
    assert_eq!(doc["streams"]["from-file"]["rewindSeconds"], 600);
    assert_eq!(first.terminate(), Some(0));

    // Restart with the same file plus a new file stream: the API's changes win
    // for what they touched, the file for the rest.
    let second = ServerProcess::start(
        EXE,
        &config(&url, "  - key: new-in-file\n    password: pw\n"),
    );
    assert_eq!(keys(&second), ["from-file", "made-by-api", "new-in-file"]);
    let (_, v) = api(&second, "GET", "/api/streams/from-file", None);
    assert_eq!(v["config"]["rewindSeconds"], 600);
    let (_, v) = api(&second, "GET", "/api/streams/made-by-api", None);
    assert_eq!(v["sourceMount"], "studio");
    // The stored password works: a source can connect to the API-made mount.
    assert!(Source::connect(second.source, "studio", "sp", SourceMethod::Ice, &[]).is_ok());
    // The file's own password was kept through the API update.
    assert!(Source::connect(second.source, "from-file", "pw", SourceMethod::Ice, &[]).is_ok());
}

fn stored(redis: &RedisProcess, db: &str) -> Value {
    let text = redis.cli(&["-n", db, "GET", "smtest:config"]);
    serde_json::from_str(text.trim()).unwrap_or(Value::Null)
}

/// Issue 10, item 6: with Redis paused a created stream was answered 201 and
/// was gone after a kill -9 and a restart.
#[test]
fn an_api_change_is_acknowledged_only_once_redis_has_it() {
    let redis = RedisProcess::start();
    let url = redis.url(4);
    let first = ServerProcess::start(EXE, &config(&url, ""));
    // Redis paused: the change cannot be stored, so it is refused and not made.
    signal(redis.pid(), "STOP");
    let asked = std::time::Instant::now();
    let (status, v) = api(
        &first,
        "POST",
        "/api/streams",
        Some(json!({"key": "while-paused", "password": "pw"})),
    );
    let took = asked.elapsed();
    signal(redis.pid(), "CONT");
    assert_eq!(status, 503, "{v}");
    let error = v["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("not made") && error.contains("redis"),
        "{error}"
    );
    assert!(took < std::time::Duration::from_secs(10), "{took:?}");
    assert_eq!(api(&first, "GET", "/api/streams/while-paused", None).0, 404);
    assert!(first.wait_metric_at_least(
        "streammachine_config_store_failures_total",
        1.0,
        std::time::Duration::from_secs(5)
    ));
    // Redis back: a change is answered once it is stored, so it is in Redis
    // when the answer comes; the refused one is not.
    let (status, v) = api(
        &first,
        "POST",
        "/api/streams",
        Some(json!({"key": "after", "password": "pw"})),
    );
    assert_eq!(status, 201, "{v}");
    let doc = stored(&redis, "4");
    assert!(doc["streams"]["after"].is_object(), "{doc}");
    assert!(!doc.to_string().contains("while-paused"), "{doc}");
    // Killed without a chance to save anything more: the acknowledged change
    // is there after the restart, the refused one is not.
    signal(first.pid(), "KILL");
    drop(first);
    let second = ServerProcess::start(EXE, &config(&url, ""));
    assert_eq!(keys(&second), ["after", "from-file", "removed-later"]);
    // A newer revision in Redis than this server's (another server on the
    // same prefix, or a late write): never overwritten, the change refused.
    let mut doc = stored(&redis, "4");
    let newer = doc["revision"].as_u64().unwrap() + 100;
    doc["revision"] = json!(newer);
    redis.cli(&["-n", "4", "SET", "smtest:config", &doc.to_string()]);
    let (status, v) = api(&second, "DELETE", "/api/streams/after", None);
    assert_eq!(status, 503, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap_or_default()
            .contains("another server"),
        "{v}"
    );
    assert_eq!(stored(&redis, "4")["revision"], json!(newer));
    assert_eq!(api(&second, "GET", "/api/streams/after", None).0, 200);
}

#[test]
fn an_unreachable_redis_at_start_is_a_clear_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("redis://127.0.0.1:{port}/0");
    let err = ServerProcess::try_start(EXE, &config(&url, ""), &[]).expect_err("must not start");
    assert!(
        err.contains("cannot load the configuration from redis"),
        "{err}"
    );
}
