//! The binary's configuration handling: clear errors, exit codes, defaults.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::process::Command;

use streammachine_tests::*;

const EXE: &str = env!("CARGO_BIN_EXE_streammachine-under-test");

fn fails_with(config: &str, needle: &str) {
    let err = match ServerProcess::try_start(EXE, config, &[]) {
        Ok(_) => panic!("server started with {config:?}"),
        Err(log) => log,
    };
    assert!(err.contains(needle), "expected {needle:?} in:\n{err}");
}

#[test]
fn invalid_configs_are_refused_with_the_keys_path() {
    fails_with(
        "streams:\n  - key: a\n    password: p\n    rewindSecs: 5\n",
        "streams[0].rewindSecs: unknown field `rewindSecs`",
    );
    fails_with(
        "streams:\n  - key: a\n    sourceMount: studio\n",
        "streams[0].sourceMount: no source mount named \\\"studio\\\"",
    );
    fails_with("streams:\n  - key: a\n", "a source password is required");
    fails_with(
        "mode: master\nstreams: [{key: a, password: p}]\n",
        "master mode needs the link secret",
    );
    fails_with(
        "sourceMounts: [{key: m, password: p}]\nstreams: [{key: a, sourceMount: m, transcode: {format: mp3, bitrate: 65}}]\n",
        "streams[0].transcode.bitrate: 65 is not an MP3 bitrate",
    );
    fails_with(
        "sourceMounts: [{key: m, password: p}]\nstreams: [{key: a, sourceMount: m, transcode: {format: aac, bitrate: 64, profile: heV2, channels: 1}}]\n",
        "streams[0].transcode.channels: HE-AAC v2 (parametric stereo) needs stereo output",
    );
    fails_with(
        "sourceMounts: [{key: m, password: p}]\nstreams: [{key: a, sourceMount: m, transcode: {format: mp3, bitrate: 64, sampleRate: 96000}}]\n",
        "streams[0].transcode.sampleRate: MP3 goes up to 48000 Hz",
    );
    fails_with(
        "streams: [{key: a, passwordFile: /nonexistent/pw}]\n",
        "cannot read password file /nonexistent/pw",
    );
    fails_with(
        "mode: master\nlink: {secret: s, resyncGraceSeconds: 301}\nstreams: [{key: a, password: p}]\n",
        "link.resyncGraceSeconds: at most 300",
    );
}

#[test]
fn a_backlog_the_kernel_cuts_is_reported() {
    let cap: u32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let want = cap + 1;
    let s = ServerProcess::start(
        EXE,
        &format!("listeners: {{ backlog: {want} }}\nstreams: [{{key: a, password: p}}]\n"),
    );
    let line = s
        .wait_log(
            "the kernel caps the listen backlog",
            std::time::Duration::from_secs(5),
        )
        .expect("a warning naming net.core.somaxconn");
    assert!(line.contains(&format!("\"somaxconn\":{cap}")), "{line}");
    assert_eq!(
        http_get(s.listen, "/healthz", &[]).status,
        200,
        "and it serves"
    );
}

#[test]
fn exit_code_is_2_on_a_bad_config_and_check_config_prints_it() {
    let dir = scratch_dir("cfg");
    let bad = dir.join("bad.yaml");
    std::fs::write(&bad, "listeners: {port: x}\n").unwrap();
    let out = Command::new(EXE)
        .args(["--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("listeners.port: invalid type"));
    let pw = dir.join("pw");
    std::fs::write(&pw, "s3cret\n").unwrap();
    let good = dir.join("good.yaml");
    std::fs::write(
        &good,
        format!("streams: [{{key: a, passwordFile: {}}}]\n", pw.display()),
    )
    .unwrap();
    let out = Command::new(EXE)
        .args(["--check-config", "--config"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("rewindSeconds: 14400"), "{text}");
    assert!(!text.contains("s3cret"));
    // Secrets written into the file itself are not printed either.
    let inline = dir.join("inline.yaml");
    std::fs::write(
        &inline,
        "admin: {token: admintok}\nredis: {url: \"redis://:redispw@127.0.0.1:6379/0\"}\nstreams: [{key: a, password: streampw}]\n",
    )
    .unwrap();
    let out = Command::new(EXE)
        .args(["--check-config", "--config"])
        .arg(&inline)
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for secret in ["admintok", "redispw", "streampw"] {
        assert!(!text.contains(secret), "{secret} printed:\n{text}");
    }
    assert!(
        text.contains("token: '***'") || text.contains("token: \"***\""),
        "{text}"
    );
}

#[test]
fn no_config_serves_the_test_stream_with_a_logged_dev_password() {
    let dir = scratch_dir("default");
    let empty = dir.join("none.yaml");
    let _ = empty;
    // No --config at all: the built-in default, ports overridden by flags.
    let mut child = Command::new(EXE)
        .args([
            "--bind",
            "127.0.0.1",
            "--listen-port",
            "0",
            "--source-port",
            "0",
            "--admin-port",
            "0",
            "--log-format",
            "json",
        ])
        .env_remove("STREAMMACHINE_SOURCE_PASSWORD")
        .env_remove("STREAMMACHINE_CONFIG")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::BufRead;
    let stderr = child.stderr.take().unwrap();
    let mut lines = std::io::BufReader::new(stderr).lines();
    let mut seen = Vec::new();
    let mut source = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if line.contains("\"message\":\"listening\"") {
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            source = Some(v["sources"].as_str().unwrap().parse().unwrap());
            break;
        }
        seen.push(line);
    }
    assert!(
        seen.iter()
            .any(|l| l.contains("DEVELOPMENT source password") && l.contains("hackme")),
        "{seen:?}"
    );
    let source = source.expect("listening");
    let mut src = Source::connect(source, "test", "hackme", SourceMethod::Ice, &[]).unwrap();
    src.send(&fixture("mp3/tone1kHz-44100-128-m.mp3")).unwrap();
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn a_changed_config_file_is_applied_live_and_a_bad_one_ignored() {
    let first = "streams:\n  - key: keep\n    password: pw\n    rewindSeconds: 600\n  - key: drop-me\n    password: pw\n";
    let server = ServerProcess::start(EXE, first);
    let cfg = server.dir.join("config.yaml");
    // A listener on the stream that stays: it must not be disturbed.
    let (mut l, st, _, _) = request(server.listen, "GET", "/keep", &[]);
    assert_eq!(st, 200);
    std::fs::write(&cfg, "streams:\n  - key: keep\n    password: pw\n    rewindSeconds: 60\n  - key: added\n    format: aac\n    password: pw2\n").unwrap();
    let end = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while http_call(server.listen, "HEAD", "/added", &[]).status != 200 {
        assert!(
            std::time::Instant::now() < end,
            "the change was not applied: {:#?}",
            server.logs()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(
        http_call(server.listen, "HEAD", "/added", &[]).header("content-type"),
        Some("audio/aac")
    );
    assert_eq!(
        http_call(server.listen, "HEAD", "/drop-me", &[]).status,
        404
    );
    assert!(server
        .wait_log(
            "config file change applied",
            std::time::Duration::from_secs(2)
        )
        .is_some());
    // The listener of the kept stream is still connected (the server has not closed it).
    l.set_read_timeout(Some(std::time::Duration::from_millis(300)))
        .unwrap();
    let mut b = [0u8; 1];
    assert!(
        std::io::Read::read(&mut l, &mut b).is_err(),
        "still open, waiting for audio"
    );
    // An invalid file is reported and the running configuration kept.
    std::fs::write(&cfg, "streams:\n  - key: keep\n    rewindSecs: 1\n").unwrap();
    assert!(server
        .wait_log(
            "config file changed but is invalid",
            std::time::Duration::from_secs(6)
        )
        .is_some());
    assert_eq!(http_call(server.listen, "HEAD", "/added", &[]).status, 200);
}
