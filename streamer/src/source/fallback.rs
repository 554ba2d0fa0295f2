//! A mount's fallback: a file looped in real time, on air only while no live
//! encoder is connected (a live source takes over at once; the fallback comes
//! back when the last one leaves).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use streammachine_config::AudioFormat;
use tokio::time::Instant;

use super::mount::{Mount, SourceInfo};
use crate::buffer::Chunker;
use crate::format::{Codec, Framer};

/// Plays `path` into `mount` until the mount is removed.
pub async fn play_file(mount: Arc<Mount>, path: PathBuf) {
    let data = match tokio::fs::read(&path).await {
        Ok(d) => d,
        Err(e) => {
            tracing::error!(mount = %mount.key(), file = %path.display(), error = %e, "fallback file cannot be read; no fallback");
            return;
        }
    };
    let codec = match mount.format() {
        AudioFormat::Mp3 => Codec::Mp3,
        AudioFormat::Aac => Codec::Aac,
    };
    let mut framer = Framer::new(codec);
    framer.push(&data);
    let mut frames = Vec::new();
    loop {
        match framer.next_frame() {
            Ok(Some(f)) => frames.push(f),
            Ok(None) => break,
            Err(e) => {
                tracing::error!(mount = %mount.key(), file = %path.display(), error = %e, "fallback file is not {codec}; no fallback");
                return;
            }
        }
    }
    while let Ok(Some(f)) = framer.finish() {
        frames.push(f);
    }
    let Some(first) = frames.first() else {
        tracing::error!(mount = %mount.key(), file = %path.display(), "fallback file has no audio frame; no fallback");
        return;
    };
    let key = first.header.format_key();
    let rate = u64::from(first.header.sample_rate.max(1));
    let info = SourceInfo {
        name: Some(format!("fallback {}", path.display())),
        ..SourceInfo::default()
    };
    let guard = mount.add_source_as(info, true);
    tracing::info!(mount = %mount.key(), file = %path.display(), frames = frames.len(), "fallback ready");
    let mut chunker = Chunker::new();
    let start = Instant::now();
    let mut samples = 0u64;
    loop {
        for f in &frames {
            if mount.is_closed() {
                return;
            }
            tokio::time::sleep_until(start + Duration::from_micros(samples * 1_000_000 / rate))
                .await;
            if let Some(draft) = chunker.push(f) {
                mount.push(guard.id(), draft, &key);
            }
            samples += u64::from(f.header.samples);
        }
    }
}
