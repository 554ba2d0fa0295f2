//! `/<stream>/titles.json`: what was on over the rewind buffer — each title
//! with when it started (wall clock) and how far behind live that is — for
//! players that let a listener go back to "the start of this programme" or
//! scrub through the last hours (start there with `?at=`).

use serde_json::{json, Value};

use crate::http::Response;
use crate::stream::{format_time, Stream};

/// The title history of `stream`, oldest first.
pub fn history(stream: &Stream) -> Value {
    let b = stream.read_buffer();
    let live_audio = b
        .iter()
        .last()
        .map_or(0, |c| c.audio_start_micros + c.duration_micros());
    let mut titles: Vec<Value> = Vec::new();
    let mut last: Option<&str> = None;
    for c in b.iter() {
        let t = c.title.text();
        if last != Some(t) {
            titles.push(json!({
                "title": t,
                "start": format_time(c.ts_micros),
                "behindLiveSeconds": live_audio.saturating_sub(c.audio_start_micros) as f64 / 1e6,
            }));
            last = Some(t);
        }
    }
    json!({
        "stream": stream.key(),
        "oldest": b.first().map(|c| format_time(c.ts_micros)),
        "live": b.last_end_ts().map(format_time),
        "bufferSeconds": b.duration_micros() as f64 / 1e6,
        "titles": titles,
    })
}

/// The JSON response of [`history`].
pub fn reply(stream: &Stream) -> Response {
    Response::new(200, "OK")
        .header("Content-Type", "application/json")
        .header("Cache-Control", "no-cache")
        .body(history(stream).to_string().into_bytes())
}
