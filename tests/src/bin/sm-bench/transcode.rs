//! Transcoding (issue 6): speed per core as a real-time factor, in-process,
//! and what one transcoded stream costs the server at real time.

use std::time::Duration;

use streamer::buffer::{ChunkDraft, Chunker};
use streamer::transcode::Pipeline;
use streammachine_config::{AacProfile, AudioFormat, TranscodeConfig};
use streammachine_tests::ServerProcess;

use crate::{cpu_seconds, music_frames, source};

/// Seconds of music transcoded per measurement.
const AUDIO_SECONDS: u64 = 600;

fn outputs() -> Vec<(&'static str, TranscodeConfig)> {
    let mut he = TranscodeConfig::new(AudioFormat::Aac, 48);
    he.profile = Some(AacProfile::He);
    vec![
        ("AAC-LC 64k", TranscodeConfig::new(AudioFormat::Aac, 64)),
        ("MP3 64k", TranscodeConfig::new(AudioFormat::Mp3, 64)),
        ("HE-AAC 48k", he),
    ]
}

/// The 128 kbit/s stereo music fixture as source chunks, looped to `seconds`.
fn music(seconds: u64) -> Vec<ChunkDraft> {
    let frames = music_frames();
    let mut chunker = Chunker::new();
    let mut out = Vec::new();
    let mut micros = 0;
    while micros < seconds * 1_000_000 {
        for f in &frames {
            if let Some(d) = chunker.push(f) {
                micros += d.duration_micros();
                out.push(d);
            }
        }
    }
    out
}

pub fn bench() -> Vec<(String, String)> {
    let mut rows = Vec::new();
    let input = music(AUDIO_SECONDS);
    let pid = std::process::id();
    for (label, config) in outputs() {
        let mut p = Pipeline::new(config);
        let c0 = cpu_seconds(pid);
        let mut bytes = 0;
        for d in &input {
            for o in p.feed(1, d, None, 0).unwrap() {
                bytes += o.draft.data.len();
            }
        }
        let cpu = cpu_seconds(pid) - c0;
        assert!(bytes > 0);
        rows.push((
            format!("transcode MP3 128k stereo → {label}: speed on one core"),
            format!(
                "{:.0}× real time ({AUDIO_SECONDS} s of music in {cpu:.2} CPU s)",
                AUDIO_SECONDS as f64 / cpu
            ),
        ));
    }
    rows.extend(server_cost());
    rows
}

/// Server CPU at real time: a mount with one plain stream, then with a
/// transcoded stream added; the difference is the transcode's cost.
fn server_cost() -> Vec<(String, String)> {
    let exe = std::env::current_exe()
        .unwrap()
        .with_file_name("streammachine");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let base = "sourceMounts:\n  - key: bench\n    password: bench\nstreams:\n  - key: plain\n    sourceMount: bench\n";
    let mut runs = vec![("none", base.to_string())];
    for (label, config) in outputs() {
        let profile = config.profile.map_or(String::new(), |p| {
            format!(
                ", profile: {}",
                serde_json::to_value(p).unwrap().as_str().unwrap()
            )
        });
        runs.push((
            label,
            format!(
                "{base}  - key: transcoded\n    sourceMount: bench\n    transcode: {{ format: {}, bitrate: {}{profile} }}\n",
                config.format, config.bitrate
            ),
        ));
    }
    let mut rows = Vec::new();
    let mut baseline = 0.0;
    for (label, config) in runs {
        let server = ServerProcess::try_start(exe.to_str().unwrap(), &config, &[])
            .unwrap_or_else(|log| panic!("server did not start:\n{log}"));
        let pid = server.pid();
        let cpu = rt.block_on(async {
            let src = tokio::spawn(source(server.source, 0));
            tokio::time::sleep(Duration::from_secs(3)).await;
            let c0 = cpu_seconds(pid);
            let t0 = std::time::Instant::now();
            tokio::time::sleep(Duration::from_secs(20)).await;
            let cpu = (cpu_seconds(pid) - c0) / t0.elapsed().as_secs_f64();
            src.abort();
            cpu
        });
        if label == "none" {
            baseline = cpu;
            rows.push((
                "server CPU, one 128k source and one plain stream, real time".into(),
                format!("{:.2} % of a core", cpu * 100.0),
            ));
        } else {
            let secs = server
                .metric("streammachine_buffer_seconds{stream=\"transcoded\"}")
                .unwrap_or(0.0);
            rows.push((
                format!("one transcoded stream → {label} at real time: server CPU added"),
                format!(
                    "{:.2} % of a core ({secs:.0} s transcoded)",
                    (cpu - baseline) * 100.0
                ),
            ));
        }
    }
    rows
}
