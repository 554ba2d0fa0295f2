//! Rewind dumps: written at shutdown, restored at start, exported and imported
//! through the API; a corrupt dump is reported and skipped.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::time::Duration;

use streamer::format::Codec;
use streammachine_tests::*;

const EXE: &str = env!("CARGO_BIN_EXE_streammachine-under-test");

fn config(dir: &std::path::Path) -> String {
    format!(
        "admin: {{ token: tok }}\ndumps: {{ dir: {} }}\nstreams:\n  - key: keep\n    password: pw\n  - key: other\n    password: pw\n",
        dir.display()
    )
}

fn status(server: &ServerProcess, key: &str) -> serde_json::Value {
    let r = http_get(
        server.admin,
        &format!("/api/streams/{key}"),
        &[("Authorization", "Bearer tok")],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    serde_json::from_slice(&r.body).unwrap()
}

#[test]
fn a_restart_keeps_the_buffer_and_the_numbering() {
    let dumps = scratch_dir("dumps");
    let data = fixture("mp3/mp3-44100-128-s.mp3");
    let audio = audio_of(&data, Codec::Mp3);
    let mut first = ServerProcess::start(EXE, &config(&dumps));
    first.send_source("keep", "pw", &data);
    let before = http_get(first.listen, "/keep?pump=9999&offset=9999", &[]).body;
    assert!(before == audio);
    let st = status(&first, "keep");
    let next_seq = st["buffer"]["nextSeq"].as_u64().unwrap();
    let playlist_before = http_get(first.listen, "/keep.m3u8", &[]).text();
    assert_eq!(first.terminate(), Some(0), "a clean exit");
    assert!(first
        .logs()
        .iter()
        .any(|l| l.contains("rewind buffer dumped") && l.contains("\"stream\":\"keep\"")));
    assert!(dumps.join("keep.dump").exists());
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dumps.join("keep.dump"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "a dump is the server user's alone");
    }

    let second = ServerProcess::start(EXE, &config(&dumps));
    assert!(second
        .log_lines("rewind buffer restored from its dump")
        .iter()
        .any(|l| l.contains("\"stream\":\"keep\"")));
    let after = http_get(second.listen, "/keep?pump=9999&offset=9999", &[]).body;
    assert!(after == before, "the same audio after the restart");
    assert_eq!(
        status(&second, "keep")["buffer"]["nextSeq"].as_u64(),
        Some(next_seq),
        "numbering continues"
    );
    assert_eq!(
        http_get(second.listen, "/keep.m3u8", &[]).text(),
        playlist_before,
        "the same HLS segments"
    );
    // Sent in one burst: compressed dates, so no PDT continuity to check.
    let checked_before = hls_check::parse_media(&playlist_before).unwrap();
    // New audio continues the numbering.
    second.send_source("keep", "pw", &data[..100_000]);
    assert!(
        status(&second, "keep")["buffer"]["nextSeq"]
            .as_u64()
            .unwrap()
            > next_seq
    );
    // The playlist after the restart and new audio follows on from the one
    // before it under RFC 8216's rules (issue 16).
    let after_restart = http_get(second.listen, "/keep.m3u8", &[]).text();
    let after_restart =
        hls_check::parse_media(&after_restart).unwrap_or_else(|e| panic!("{e}\n{after_restart}"));
    hls_check::check_successive(&checked_before, &after_restart).unwrap();

    // Export from one stream, import into another that has served audio of
    // its own: the import is numbered after what it served.
    second.send_source("other", "pw", &data[..200_000]);
    let other_next = status(&second, "other")["buffer"]["nextSeq"]
        .as_u64()
        .unwrap();
    let media_sequence = |pl: &str| -> u64 {
        pl.lines()
            .find_map(|l| l.strip_prefix("#EXT-X-MEDIA-SEQUENCE:"))
            .unwrap()
            .parse()
            .unwrap()
    };
    let other_playlist = http_get(second.listen, "/other.m3u8", &[]).text();
    let other_last_segment =
        media_sequence(&other_playlist) + other_playlist.matches("#EXTINF").count() as u64;
    let export = http_get(
        second.admin,
        "/api/streams/keep/rewind",
        &[("Authorization", "Bearer tok")],
    );
    assert_eq!(export.status, 200);
    assert_eq!(
        export.header("content-type"),
        Some("application/octet-stream")
    );
    let import = |dump: &[u8]| {
        http_send(
            second.admin,
            "PUT",
            "/api/streams/other/rewind",
            &[("Authorization", "Bearer tok")],
            dump,
        )
    };
    let r = import(&export.body);
    assert_eq!(r.status, 204, "{}", r.text());
    let a = http_get(second.listen, "/keep?pump=9999&offset=9999", &[]).body;
    let b = http_get(second.listen, "/other?pump=9999&offset=9999", &[]).body;
    assert!(a == b && !a.is_empty());
    assert!(
        status(&second, "other")["buffer"]["firstSeq"]
            .as_u64()
            .unwrap()
            >= other_next,
        "no sequence number served before is used again"
    );
    let imported = http_get(second.listen, "/other.m3u8", &[]).text();
    assert!(
        media_sequence(&imported) >= other_last_segment,
        "no HLS segment name served before is used again:\n{other_playlist}\n{imported}"
    );
    let mut garbage = export.body.clone();
    let mid = garbage.len() / 2;
    garbage[mid] ^= 0x55;
    let r = import(&garbage);
    assert_eq!(r.status, 400);
    assert!(r.text().contains("not a valid dump"), "{}", r.text());
    // Imports are read as they arrive (issue 11): one cut short changes
    // nothing, the buffer stays what the last good import made it.
    let r = import(&export.body[..export.body.len() / 2]);
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("truncated"), "{}", r.text());
    assert_eq!(
        http_get(second.listen, "/other?pump=9999&offset=9999", &[]).body,
        b
    );
    // The export is streamed but announces its exact length.
    let len = export.body.len().to_string();
    assert_eq!(export.header("content-length"), Some(len.as_str()));
    // A stream with listeners cannot be overwritten under them.
    let (_l, _, _, _) = request(second.listen, "GET", "/other", &[]);
    assert!(second.wait_metric(
        "streammachine_listeners{output=\"raw\",stream=\"other\"}",
        1.0,
        Duration::from_secs(5)
    ));
    let r = import(&export.body);
    assert_eq!(r.status, 409);
}

#[test]
fn a_corrupt_dump_is_reported_and_skipped() {
    let dumps = scratch_dir("dumps-bad");
    let data = fixture("mp3/mp3-44100-64-s.mp3");
    let mut first = ServerProcess::start(EXE, &config(&dumps));
    first.send_source("keep", "pw", &data);
    assert_eq!(first.terminate(), Some(0));
    let path = dumps.join("keep.dump");
    let mut bytes = std::fs::read(&path).unwrap();
    let n = bytes.len();
    bytes[n / 3] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    std::fs::write(dumps.join("other.dump"), &bytes[..n / 2]).unwrap();
    let second = ServerProcess::start(EXE, &config(&dumps));
    let errors = second.log_lines("dump not restored");
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(
        errors
            .iter()
            .any(|l| l.contains("checksum") || l.contains("Checksum") || l.contains("CRC")),
        "{errors:?}"
    );
    assert_eq!(
        status(&second, "keep")["buffer"]["chunks"],
        0,
        "nothing loaded from a corrupt dump"
    );
    assert_eq!(http_get(second.listen, "/healthz", &[]).status, 200);
    // Both were set aside, intact, and counted: the shutdown dump that
    // follows cannot overwrite the only copy of that audio.
    assert_eq!(
        second.metric("streammachine_dumps_set_aside_total{stream=\"keep\"}"),
        Some(1.0)
    );
    let mut second = second;
    assert_eq!(second.terminate(), Some(0));
    let kept = |stream: &str| -> Vec<Vec<u8>> {
        std::fs::read_dir(&dumps)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with(&format!("{stream}.dump.corrupt-"))
            })
            .map(|p| std::fs::read(p).unwrap())
            .collect()
    };
    assert_eq!(
        kept("keep"),
        [bytes.clone()],
        "the damaged dump, byte for byte"
    );
    assert_eq!(kept("other"), [bytes[..n / 2].to_vec()]);
}

#[test]
fn periodic_dumps_survive_a_kill_and_a_master_restores_them() {
    let dumps = scratch_dir("dumps-periodic");
    let cfg = format!(
        "mode: master\nlink: {{ secret: s }}\nadmin: {{ token: tok }}\ndumps: {{ dir: {}, intervalSeconds: 10 }}\nstreams:\n  - key: keep\n    password: pw\n",
        dumps.display()
    );
    let data = fixture("mp3/mp3-44100-128-s.mp3");
    let first = ServerProcess::start(EXE, &cfg);
    first.send_source("keep", "pw", &data);
    // (A master holds new audio until a slave links or its grace ends.)
    assert!(first.wait_metric_at_least(
        "streammachine_buffer_bytes{stream=\"keep\"}",
        1.0,
        Duration::from_secs(15)
    ));
    // All of the source's audio is in (under load the snapshot could come
    // while its last chunks were still being appended).
    assert!(first.wait_metric(
        "streammachine_source_connected{mount=\"keep\"}",
        0.0,
        Duration::from_secs(15)
    ));
    // Written by the timer, not at shutdown: the process is killed after it.
    // The dump must hold what the status shows: a dump taken while held
    // audio was still being released (its line can come after any snapshot
    // of ours) holds fewer chunks, so wait for one whose count matches a
    // status read on both sides of it.
    let dumped_chunks = || -> Vec<u64> {
        first
            .log_lines("rewind buffer dumped")
            .iter()
            .filter(|l| l.contains("\"stream\":\"keep\""))
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|v| v["fields"]["chunks"].as_u64().or(v["chunks"].as_u64()))
            .collect()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    let before = loop {
        let seen = status(&first, "keep")["buffer"].clone();
        let chunks = seen["chunks"].as_u64().expect("chunks");
        if dumped_chunks().contains(&chunks) && status(&first, "keep")["buffer"] == seen {
            break seen;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no timer dump of {chunks} chunks"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    drop(first); // SIGKILL: no dump at exit
    let second = ServerProcess::start(EXE, &cfg);
    assert!(second
        .log_lines("rewind buffer restored from its dump")
        .iter()
        .any(|l| l.contains("\"stream\":\"keep\"")));
    let after = status(&second, "keep")["buffer"].clone();
    for field in ["bytes", "chunks", "firstSeq", "nextSeq", "oldest", "newest"] {
        assert_eq!(after[field], before[field], "{field}");
    }
}

/// Issue 10 (2): two processes never write one dump: only the holder of the
/// dump directory's lock writes (a second server there says so, once).
#[test]
fn only_one_process_writes_a_dump_directory() {
    let dumps = scratch_dir("dump-lock");
    let cfg = config(&dumps);
    let mut first = ServerProcess::start(EXE, &cfg);
    let mut second = ServerProcess::start(EXE, &cfg);
    assert!(second
        .wait_log(
            "another process holds the dump directory",
            Duration::from_secs(5)
        )
        .is_some());
    first.send_source("keep", "pw", &fixture("mp3/mp3-44100-64-s.mp3"));
    assert_eq!(second.terminate(), Some(0));
    assert!(
        second.log_lines("rewind buffer dumped").is_empty(),
        "the second process wrote a dump"
    );
    assert_eq!(first.terminate(), Some(0));
    assert!(!first.log_lines("rewind buffer dumped").is_empty());
    assert!(dumps.join("keep.dump").exists());
}
