//! Signed, expiring listener URLs (issue 12): a `signedUrls` stream takes
//! raw, ICY, pump and HLS (playlists and segments) listeners only with a
//! valid `?expires=…&sig=…` (HMAC-SHA256 of "<stream>:<expires>"), signed
//! here by `openssl dgst -hmac`, another implementation than the server's.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::process::Command;

use streammachine_tests::*;

const EXE: &str = env!("CARGO_BIN_EXE_streammachine-under-test");

const SECRET: &str = "paywall-key";

/// `expires=…&sig=…` for `name`, signed with openssl.
fn signed(name: &str, expires: u64, secret: &str) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "printf '%s' '{name}:{expires}' | openssl dgst -sha256 -hmac '{secret}'"
        ))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let sig = text.rsplit(' ').next().unwrap().trim().to_string();
    assert_eq!(sig.len(), 64, "{text}");
    format!("expires={expires}&sig={sig}")
}

fn status(server: &ServerProcess, path: &str) -> (u16, String) {
    let (mut s, status, _, rest) = request(server.listen, "GET", path, &[]);
    if status == 200 && !path.contains(".m3u8") && !path.contains("/seg/") {
        return (status, String::new());
    }
    (
        status,
        String::from_utf8_lossy(&read_to_close(&mut s, rest)).into_owned(),
    )
}

#[test]
fn signed_streams_take_only_valid_unexpired_signatures_on_every_output() {
    require("openssl");
    let server = ServerProcess::start(
        EXE,
        &format!(
            "listeners: {{ urlSecret: {SECRET} }}\nstreams:\n  - key: paid\n    password: pw\n    signedUrls: true\n    hls: {{ segmentSeconds: 1, group: g }}\n  - key: free\n    password: pw\n"
        ),
    );
    let data = fixture("mp3/mp3-44100-128-s.mp3");
    server.send_source("paid", "pw", &data[..300_000]);
    server.send_source("free", "pw", &data[..100_000]);
    let now = now_micros() as u64 / 1_000_000;
    let good = signed("paid", now + 600, SECRET);
    // Valid: raw, ICY (same URL), pump.
    assert_eq!(status(&server, &format!("/paid?{good}")).0, 200);
    assert_eq!(status(&server, &format!("/paid?pump=1&{good}")).0, 200);
    // Expired, tampered, another stream's, another key's, missing.
    let expired = signed("paid", now - 1, SECRET);
    let tampered = good.replace(
        &format!("expires={}", now + 600),
        &format!("expires={}", now + 6000),
    );
    for (q, why) in [
        (expired.as_str(), "expired"),
        (tampered.as_str(), "not valid"),
        (&signed("free", now + 600, SECRET), "not valid"),
        (&signed("paid", now + 600, "guess"), "not valid"),
        ("", "needs a signed URL"),
    ] {
        let (st, body) = status(&server, &format!("/paid?{q}"));
        assert_eq!(st, 403, "{q}");
        assert!(body.contains(why), "{q}: {body}");
    }
    // An unsigned stream stays open.
    assert_eq!(status(&server, "/free").0, 200);
    // HLS: the playlist needs it, and its segment URIs carry it.
    assert_eq!(status(&server, "/paid.m3u8").0, 403);
    let (st, playlist) = status(&server, &format!("/paid.m3u8?{good}"));
    assert_eq!(st, 200, "{playlist}");
    let seg = playlist
        .lines()
        .find(|l| l.starts_with("paid/seg/"))
        .expect("a segment");
    assert!(seg.contains(&good), "{seg}");
    assert_eq!(status(&server, &format!("/{seg}")).0, 200);
    let bare = seg.split('?').next().unwrap();
    assert_eq!(status(&server, &format!("/{bare}")).0, 403);
    // The group's multivariant playlist: signed for "sg/g", its variant
    // signed for the stream by the server, with the same expiry.
    assert_eq!(status(&server, "/sg/g.m3u8").0, 403);
    let (st, mv) = status(
        &server,
        &format!("/sg/g.m3u8?{}", signed("sg/g", now + 600, SECRET)),
    );
    assert_eq!(st, 200, "{mv}");
    let variant = mv.lines().find(|l| l.starts_with("../paid.m3u8")).unwrap();
    assert!(variant.contains(&good), "{variant}");
    assert_eq!(status(&server, &format!("/{}", &variant[3..])).0, 200);
    assert!(
        server
            .metric("streammachine_auth_failures_total{port=\"listener\",reason=\"expired\"}")
            .unwrap_or(0.0)
            >= 1.0
    );
}
