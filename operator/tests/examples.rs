//! The example resources in `manifests/examples/` fit the CRD types: they
//! parse, and every field they set is a field of the type (the API server
//! would prune an unknown one silently, so a typo would go unnoticed); and
//! they render into a master config the streamer accepts, with what the
//! examples promise (an MP3 stream and an AAC transcode in one HLS group).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use serde_json::Value;
use streammachine_crds::v1alpha1::{SourceMount, Stream};

/// Paths of `set` that are missing from `known`.
fn unknown_fields(set: &Value, known: &Value, path: &str, out: &mut Vec<String>) {
    match (set, known) {
        (Value::Object(s), Value::Object(k)) => {
            for (key, v) in s {
                let p = format!("{path}.{key}");
                match k.get(key) {
                    Some(kv) => unknown_fields(v, kv, &p, out),
                    None => out.push(p),
                }
            }
        }
        (Value::Array(s), Value::Array(k)) => {
            for (i, (a, b)) in s.iter().zip(k).enumerate() {
                unknown_fields(a, b, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

#[test]
fn examples_fit_the_types() {
    let mut seen = (0, 0);
    let docs = streammachine_operator::testdata::example_documents().unwrap();
    assert!(!docs.is_empty(), "manifests/examples/ has documents");
    for (file, v) in docs {
        let back = match v["kind"].as_str() {
            Some("SourceMount") => {
                seen.0 += 1;
                serde_json::to_value(serde_json::from_value::<SourceMount>(v.clone()).unwrap())
            }
            Some("Stream") => {
                seen.1 += 1;
                serde_json::to_value(serde_json::from_value::<Stream>(v.clone()).unwrap())
            }
            _ => continue,
        }
        .unwrap();
        let mut unknown = Vec::new();
        unknown_fields(&v["spec"], &back["spec"], "spec", &mut unknown);
        assert!(
            unknown.is_empty(),
            "{}: unknown fields {unknown:?}",
            file.display()
        );
    }
    assert!(seen.0 >= 1 && seen.1 >= 1, "{seen:?}");
}

#[test]
fn examples_render_an_mp3_and_an_aac_transcode_in_one_hls_group() {
    let (mut mounts, mut streams) = (Vec::new(), Vec::new());
    for (_, v) in streammachine_operator::testdata::example_documents().unwrap() {
        match v["kind"].as_str() {
            Some("SourceMount") => mounts.push(serde_json::from_value::<SourceMount>(v).unwrap()),
            Some("Stream") => streams.push(serde_json::from_value::<Stream>(v).unwrap()),
            _ => {}
        }
    }
    let mount = &mounts[0];
    let configs: Vec<_> = streams
        .iter()
        .map(|s| streammachine_operator::validate::stream_config(s, Some(mount)).unwrap())
        .collect();
    let config = streammachine_operator::build::master_config(mount, &configs).unwrap();
    let aac = config
        .streams
        .iter()
        .find(|s| s.transcode.is_some())
        .expect("an AAC transcode");
    let t = aac.transcode.as_ref().unwrap();
    assert_eq!((t.format.to_string(), t.bitrate), ("aac".to_string(), 64));
    let plain = config
        .streams
        .iter()
        .find(|s| s.transcode.is_none())
        .expect("a plain MP3 stream");
    let group =
        |s: &streammachine_crds::config::StreamConfig| s.hls.as_ref().and_then(|h| h.group.clone());
    assert!(group(aac).is_some());
    assert_eq!(group(aac), group(plain), "one HLS group");
}
