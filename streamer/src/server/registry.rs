//! The streams and mounts in service, and the configuration they came from:
//! applied live from the file, the API, a handoff or (on a slave) the master.
//! Every change bumps the config epoch, which a master's link sends on.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard};

use streammachine_config::{Config, Secret, SourceMountConfig, StreamConfig};

use crate::error::ServerError;
use crate::metrics::Metrics;
use crate::source::mount::Input;
use crate::source::{Mount, SourceInfo};
use crate::store::Applied;
use crate::stream::Stream;
use crate::sync::RwLockExt;
use crate::transcode::Transcoder;

/// The streams and mounts in service.
#[derive(Debug)]
pub(super) struct Registry {
    entries: RwLock<Entries>,
    metrics: Metrics,
    epoch: AtomicU64,
    changed: tokio::sync::Notify,
}

#[derive(Debug, Default)]
struct Entries {
    streams: BTreeMap<String, Arc<Stream>>,
    mounts: BTreeMap<String, Arc<Mount>>,
    stream_configs: Vec<StreamConfig>,
    mount_configs: Vec<SourceMountConfig>,
}

/// Reads a password (or token, or secret) file, without its line end.
pub(super) fn read_password(path: &str, file: &Path) -> Result<Secret, ServerError> {
    let text = std::fs::read_to_string(file).map_err(|error| ServerError::PasswordFile {
        path: path.to_string(),
        file: file.display().to_string(),
        error,
    })?;
    Ok(Secret(text.trim_end_matches(['\r', '\n']).to_string()))
}

impl Registry {
    /// An empty registry whose streams and mounts report to `metrics`.
    pub(super) fn new(metrics: Metrics) -> Registry {
        Registry {
            entries: RwLock::new(Entries::default()),
            metrics,
            epoch: AtomicU64::new(0),
            changed: tokio::sync::Notify::new(),
        }
    }

    fn entries(&self) -> RwLockReadGuard<'_, Entries> {
        self.entries.read_locked()
    }

    /// A stream by key.
    pub(super) fn stream(&self, key: &str) -> Option<Arc<Stream>> {
        self.entries().streams.get(key).cloned()
    }

    /// All streams, by key (a snapshot).
    pub(super) fn streams(&self) -> Vec<Arc<Stream>> {
        self.entries().streams.values().cloned().collect()
    }

    /// A mount by key.
    pub(super) fn mount(&self, key: &str) -> Option<Arc<Mount>> {
        self.entries().mounts.get(key).cloned()
    }

    /// The mount that has `key` as one of its inputs.
    pub(super) fn input_mount(&self, key: &str) -> Option<Arc<Mount>> {
        self.entries()
            .mounts
            .values()
            .find(|m| m.has_input(key))
            .cloned()
    }

    /// All mounts, by key (a snapshot).
    pub(super) fn mounts(&self) -> Vec<Arc<Mount>> {
        self.entries().mounts.values().cloned().collect()
    }

    /// `base` with the streams and mounts as they are now.
    pub(super) fn effective(&self, base: &Config) -> Config {
        let e = self.entries();
        Config {
            source_mounts: e.mount_configs.clone(),
            streams: e.stream_configs.clone(),
            ..base.clone()
        }
    }

    /// The headers of the source on air for a stream.
    pub(super) fn source_info(&self, stream: &Stream) -> Option<SourceInfo> {
        let mount = self.mount(stream.config().mount_key())?;
        mount.sources().first().map(|s| s.info.clone())
    }

    /// The title a stream carries now: its mount's (set by the encoder or the
    /// API), else the stream's configured one.
    pub(super) fn current_title(&self, stream: &Stream) -> String {
        self.mount(stream.config().mount_key())
            .and_then(|m| m.title())
            .unwrap_or_else(|| stream.default_title_text())
    }

    /// Changes whenever the streams or mounts change.
    pub(super) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Notified at every epoch bump.
    pub(super) fn changed(&self) -> &tokio::sync::Notify {
        &self.changed
    }

    /// Announces a change (after whatever must precede it, e.g. restored dumps).
    pub(super) fn bump_epoch(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.changed.notify_waiters();
    }

    /// Makes the given mounts and streams the ones in service, live: new ones
    /// are created, changed ones updated in place (listeners stay), removed
    /// ones closed (their sources and listeners disconnected). A stream whose
    /// mount changes format is recreated (its buffer holds the old format).
    /// Nothing changes if the new set (with `base`'s settings) is invalid.
    pub(super) fn apply(
        &self,
        base: &Config,
        mounts: Vec<SourceMountConfig>,
        streams: Vec<StreamConfig>,
    ) -> Result<Applied, ServerError> {
        let (candidate, wanted) = prepare(base, mounts, streams)?;
        let mut reg = self.entries.write_locked();
        let mut applied = Applied::default();
        // Mounts.
        let gone = unwanted(&reg.mounts, wanted.iter().map(|(m, _, _)| m.key.as_str()));
        for key in gone {
            if let Some(m) = reg.mounts.remove(&key) {
                m.close();
                self.forget_mount_series(&key);
                tracing::info!(mount = %key, "source mount removed");
            }
        }
        for (m, password, inputs) in &wanted {
            match reg.mounts.get(&m.key) {
                Some(existing) if existing.format() == m.format => {
                    existing.set_inputs(inputs.clone());
                    existing.set_password(password.clone());
                    existing.set_monitored(m.monitored);
                    existing.set_fallback(m.fallback.clone());
                }
                existing => {
                    if let Some(old) = existing {
                        old.close();
                    }
                    let mount =
                        Mount::new(m.key.clone(), m.format, password.clone(), &self.metrics);
                    mount.set_monitored(m.monitored);
                    mount.set_fallback(m.fallback.clone());
                    mount.set_inputs(inputs.clone());
                    reg.mounts.insert(m.key.clone(), mount);
                }
            }
        }
        // Streams.
        let gone = unwanted(
            &reg.streams,
            candidate.streams.iter().map(|s| s.key.as_str()),
        );
        for key in gone {
            if let Some(s) = reg.streams.remove(&key) {
                if let Some(m) = reg.mounts.get(s.config().mount_key()) {
                    m.detach_stream(&key);
                }
                s.close();
                self.forget_transcoder_series(&key);
                applied.removed.push(key);
            }
        }
        for sc in &candidate.streams {
            let Some(mount) = reg.mounts.get(sc.mount_key()).cloned() else {
                continue;
            };
            let format = sc.transcode.as_ref().map_or(mount.format(), |t| t.format);
            match reg.streams.get(&sc.key).cloned() {
                // Same output: keep the stream (and its listeners). A changed
                // transcode of the same format restarts the transcoder only.
                Some(stream) if stream.format() == format => {
                    let old_mount = stream.config().mount_key().to_string();
                    if old_mount != sc.mount_key() {
                        if let Some(m) = reg.mounts.get(&old_mount) {
                            m.detach_stream(&sc.key);
                        }
                    }
                    let changed = *stream.config() != *sc;
                    if stream.config().transcode != sc.transcode {
                        self.start_transcoder(&stream, sc);
                    }
                    stream.set_config(sc.clone());
                    if !mount.streams().iter().any(|s| s.key() == sc.key) {
                        mount.attach_stream(Arc::clone(&stream));
                    }
                    if changed {
                        applied.updated.push(sc.key.clone());
                    }
                }
                existing => {
                    if let Some(old) = existing {
                        if let Some(m) = reg.mounts.get(old.config().mount_key()) {
                            m.detach_stream(&sc.key);
                        }
                        mount.detach_stream(&sc.key);
                        old.close();
                    }
                    let stream = Stream::new(sc.clone(), format, &self.metrics);
                    self.start_transcoder(&stream, sc);
                    mount.attach_stream(Arc::clone(&stream));
                    reg.streams.insert(sc.key.clone(), stream);
                    applied.created.push(sc.key.clone());
                }
            }
        }
        reg.stream_configs = candidate.streams;
        reg.mount_configs = candidate.source_mounts;
        drop(reg);
        self.bump_epoch();
        Ok(applied)
    }

    /// A removed mount's series go with it: a stale `source_connected` at 0
    /// would raise `StreamMachineSourceDisconnected` for nothing, forever.
    fn forget_mount_series(&self, key: &str) {
        let _ = self.metrics.source_connected.remove_label_values(&[key]);
        let _ = self.metrics.sources.remove_label_values(&[key]);
    }

    /// A stream's transcoder series, when it no longer has a transcoder.
    fn forget_transcoder_series(&self, key: &str) {
        let m = &self.metrics;
        for vec in [
            &m.transcoder_restarts,
            &m.transcoder_dropped_chunks,
            &m.transcoder_decode_errors,
        ] {
            let _ = vec.remove_label_values(&[key]);
        }
        let _ = m.transcoder_up.remove_label_values(&[key]);
    }

    /// Gives `stream` the transcoder its config asks for (or none).
    fn start_transcoder(&self, stream: &Arc<Stream>, sc: &StreamConfig) {
        // The old one stops first: stopping sets its `up` series to 0, which
        // must not land after the new one set it.
        stream.set_transcoder(None);
        if sc.transcode.is_none() {
            self.forget_transcoder_series(&sc.key);
        }
        let transcoder = sc.transcode.as_ref().and_then(|t| {
            Transcoder::start(stream, t.clone(), &self.metrics)
                .map_err(
                    |e| tracing::error!(stream = %sc.key, error = %e, "transcoder not started"),
                )
                .ok()
                .map(|t| Box::new(t) as Box<dyn crate::stream::Transform>)
        });
        stream.set_transcoder(transcoder);
        // A new encoder starts a new timeline piece (an HLS discontinuity).
        stream.continue_source(0);
    }

    /// Slave: makes the master's streams the ones served here (no mounts: a
    /// slave has no sources). Returns the streams it created; the caller
    /// restores their dumps, then bumps the epoch.
    pub(super) fn apply_replica(
        &self,
        config: &crate::link::frame::LinkConfig,
    ) -> Vec<Arc<Stream>> {
        let mut reg = self.entries.write_locked();
        let gone = unwanted(&reg.streams, config.streams.iter().map(|s| s.key.as_str()));
        for key in gone {
            if let Some(s) = reg.streams.remove(&key) {
                s.close();
                tracing::info!(stream = %key, "stream removed by the master");
            }
        }
        let mut created = Vec::new();
        for sc in &config.streams {
            let format = config.formats.get(&sc.key).copied().unwrap_or_default();
            match reg.streams.get(&sc.key) {
                Some(s) if s.format() == format => s.set_config(sc.clone()),
                existing => {
                    if let Some(old) = existing {
                        old.close();
                    }
                    let stream = Stream::new(sc.clone(), format, &self.metrics);
                    reg.streams.insert(sc.key.clone(), Arc::clone(&stream));
                    created.push(stream);
                }
            }
        }
        reg.stream_configs = config.streams.clone();
        created
    }
}

/// The keys of `map` that are not among `wanted`: what an apply removes.
fn unwanted<'a, V>(
    map: &BTreeMap<String, V>,
    wanted: impl Iterator<Item = &'a str>,
) -> Vec<String> {
    let wanted: std::collections::BTreeSet<&str> = wanted.collect();
    map.keys()
        .filter(|k| !wanted.contains(k.as_str()))
        .cloned()
        .collect()
}

/// The config `mounts` and `streams` make, validated, with every mount's
/// password resolved: what [`Registry::apply`] needs before it touches
/// anything.
#[allow(clippy::type_complexity)]
pub(super) fn prepare(
    base: &Config,
    mounts: Vec<SourceMountConfig>,
    streams: Vec<StreamConfig>,
) -> Result<(Config, Vec<(SourceMountConfig, Secret, Vec<Input>)>), ServerError> {
    let candidate = Config {
        source_mounts: mounts,
        streams,
        ..base.clone()
    };
    candidate.validate().map_err(ServerError::Config)?;
    let mut wanted = Vec::new();
    for (i, m) in candidate.effective_mounts().into_iter().enumerate() {
        let path = match candidate.source_mounts.get(i) {
            Some(_) => format!("sourceMounts[{i}]"),
            None => format!("streams[key={}]", m.key),
        };
        let password = match (&m.password, &m.password_file) {
            (Some(p), _) => p.clone(),
            (None, Some(f)) => read_password(&format!("{path}.passwordFile"), f)?,
            (None, None) => return Err(ServerError::NoPassword { path }),
        };
        let mut inputs = Vec::new();
        for (j, input) in m.inputs.iter().enumerate() {
            let password = match (&input.password, &input.password_file) {
                (Some(p), _) => p.clone(),
                (None, Some(f)) => read_password(&format!("{path}.inputs[{j}].passwordFile"), f)?,
                (None, None) => password.clone(),
            };
            inputs.push(Input {
                key: input.key.clone(),
                password,
                priority: input.priority,
            });
        }
        wanted.push((m, password, inputs));
    }
    Ok((candidate, wanted))
}
