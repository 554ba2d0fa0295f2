//! The server: its streams and mounts, its three ports, and their accept loops.

mod hosts;

pub use crate::error::ServerError;
pub use crate::handoff::Parked;
use crate::store::ChangeSummary;
pub use crate::store::{Applied, Change};
use crate::sync::{MutexExt, RwLockExt};
mod ports;

pub use ports::Bound;
use ports::{accept_loop, bind};

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use streammachine_config::{Config, Mode, Secret, SourceMountConfig, StreamConfig};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;

use crate::metrics::Metrics;
use crate::source::{Mount, SourceInfo};
use crate::stream::Stream;
use crate::transcode::Transcoder;

/// The running server's shared state.
#[derive(Debug)]
pub struct Server {
    config: Config,
    registry: RwLock<Registry>,
    metrics: Metrics,
    started_at: SystemTime,
    shutdown: watch::Sender<bool>,
    ready: AtomicBool,
    listener_port: std::sync::atomic::AtomicU16,
    admin_token: Option<Secret>,
    overlay: std::sync::OnceLock<watch::Sender<crate::store::Overlay>>,
    analytics: crate::analytics::Analytics,
    link_secret: Option<Secret>,
    config_epoch: std::sync::atomic::AtomicU64,
    /// Slave: whether the replica has caught up with the master (readiness).
    catch_up: crate::link::catchup::CatchUp,
    /// The handoff socket this server offers (`--handoff-from`), by device
    /// and inode once bound: a handoff to it would be to itself.
    handoff_offer: std::sync::Mutex<Option<(u64, u64)>>,
    config_notify: tokio::sync::Notify,
    slaves: std::sync::Mutex<BTreeMap<u64, crate::link::master::SlaveInfo>>,
    next_slave: std::sync::atomic::AtomicU64,
    parking: watch::Sender<bool>,
    parked: std::sync::Mutex<Parked>,
    accepting: watch::Sender<bool>,
    /// A successor waiting for its predecessor's handoff: its listener and
    /// source ports do not accept yet (connections wait in the kernel's queue),
    /// so nobody lands on buffers the handoff is about to replace.
    awaiting_handoff: AtomicBool,
    draining: AtomicBool,
    listening: std::sync::Mutex<Vec<(&'static str, Arc<TcpListener>)>>,
    handed_off: watch::Sender<bool>,
    /// A restarted master holding new audio until a slave has re-synced it.
    resync_hold: AtomicBool,
    reuse_port: AtomicBool,
    analytics_writer: std::sync::Mutex<
        Option<(
            tokio::sync::mpsc::Receiver<String>,
            crate::analytics::PathBufOrLog,
        )>,
    >,
}

/// The streams and mounts in service, and the configuration they came from.
#[derive(Debug, Default)]
struct Registry {
    streams: BTreeMap<String, Arc<Stream>>,
    mounts: BTreeMap<String, Arc<Mount>>,
    stream_configs: Vec<StreamConfig>,
    mount_configs: Vec<SourceMountConfig>,
}

fn read_password(path: &str, file: &Path) -> Result<Secret, ServerError> {
    let text = std::fs::read_to_string(file).map_err(|error| ServerError::PasswordFile {
        path: path.to_string(),
        file: file.display().to_string(),
        error,
    })?;
    Ok(Secret(text.trim_end_matches(['\r', '\n']).to_string()))
}

/// Slave: the master's last config, next to the dumps.
const REPLICA_CONFIG_FILE: &str = "replica-config.json";

impl Server {
    /// Builds streams and mounts from a validated configuration.
    pub fn new(config: Config) -> Result<Arc<Server>, ServerError> {
        let metrics = Metrics::new()?;
        let started_at = SystemTime::now();
        metrics.start_time.set(
            started_at
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| i64::try_from(d.as_secs()).unwrap_or(0))
                .unwrap_or(0),
        );
        let (shutdown, _) = watch::channel(false);
        let admin_token = match (&config.admin.token, &config.admin.token_file) {
            (Some(t), _) => Some(t.clone()),
            (None, Some(f)) => Some(read_password("admin.tokenFile", f)?),
            (None, None) => None,
        }
        .filter(|t| !t.0.is_empty());
        let link_secret = match (&config.link, config.mode) {
            (Some(l), _) if l.secret.is_some() => l.secret.clone(),
            (Some(l), _) if l.secret_file.is_some() => match &l.secret_file {
                Some(f) => Some(read_password("link.secretFile", f)?),
                None => None,
            },
            _ => None,
        }
        .filter(|s| !s.0.is_empty());
        if config.mode != Mode::Standalone && link_secret.is_none() {
            return Err(ServerError::Unsupported {
                path: "link.secretFile".into(),
                message: format!(
                    "{} mode needs the link secret shared by master and slaves (link.secretFile or STREAMMACHINE_LINK_SECRET)",
                    config.mode
                ),
            });
        }
        let (mounts, streams) = (config.source_mounts.clone(), config.streams.clone());
        let (analytics, analytics_writer) =
            crate::analytics::Analytics::new(config.analytics.as_ref(), &metrics);
        let server = Arc::new(Server {
            config,
            registry: RwLock::new(Registry::default()),
            metrics,
            started_at,
            shutdown,
            ready: AtomicBool::new(false),
            listener_port: std::sync::atomic::AtomicU16::new(0),
            admin_token,
            overlay: std::sync::OnceLock::new(),
            analytics,
            analytics_writer: std::sync::Mutex::new(analytics_writer),
            link_secret,
            config_epoch: std::sync::atomic::AtomicU64::new(0),
            catch_up: crate::link::catchup::CatchUp::default(),
            handoff_offer: std::sync::Mutex::new(None),
            config_notify: tokio::sync::Notify::new(),
            slaves: std::sync::Mutex::new(BTreeMap::new()),
            next_slave: std::sync::atomic::AtomicU64::new(1),
            parking: watch::channel(false).0,
            parked: std::sync::Mutex::new(Parked::default()),
            accepting: watch::channel(true).0,
            awaiting_handoff: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            listening: std::sync::Mutex::new(Vec::new()),
            handed_off: watch::channel(false).0,
            reuse_port: AtomicBool::new(false),
            resync_hold: AtomicBool::new(false),
        });
        if let Some(d) = &server.config.dumps {
            std::fs::create_dir_all(&d.dir).map_err(|error| ServerError::DumpDir {
                dir: d.dir.display().to_string(),
                error,
            })?;
        }
        if server.config.mode == Mode::Slave {
            // The master's last config, so that a slave restarted while its
            // master is away serves its streams from their dumps.
            if let Some(saved) = server.saved_replica_config() {
                server.apply_replica(saved);
            }
        } else {
            server.apply(mounts, streams)?;
            for stream in server.streams() {
                server.restore_dump(&stream);
            }
            if server.config.mode == Mode::Master && !server.resync_grace().is_zero() {
                // Slaves may hold audio this master lost: hold new audio until
                // one has linked (and been pulled from), so numbering goes on
                // from theirs instead of forking.
                server.resync_hold.store(true, Ordering::Release);
                for stream in server.streams() {
                    stream.hold();
                }
            }
        }
        Ok(server)
    }

    fn resync_grace(&self) -> Duration {
        self.config.link.as_ref().map_or_else(
            || streammachine_config::LinkConfig::default().resync_grace(),
            streammachine_config::LinkConfig::resync_grace,
        )
    }

    /// Whether new audio is held for a re-sync with the slaves.
    pub fn is_holding_for_resync(&self) -> bool {
        self.resync_hold.load(Ordering::Acquire)
    }

    /// Ends the hold of a restarted master: the held audio is appended (with
    /// the times it arrived) and new audio flows again. Idempotent.
    pub fn release_resync_hold(&self, why: &str) {
        if !self.resync_hold.swap(false, Ordering::AcqRel) {
            return;
        }
        let held: usize = self.streams().iter().map(|s| s.release()).sum();
        tracing::info!(held_chunks = held, "resync hold released: {why}");
    }

    /// Restores a stream's dump, if dumps are configured. A missing dump is
    /// normal (a new stream); a bad one is reported and skipped.
    fn restore_dump(&self, stream: &Stream) {
        let Some(d) = &self.config.dumps else {
            return;
        };
        let started = std::time::Instant::now();
        match crate::persist::rewind::restore_stream(stream, &d.dir) {
            Ok(None) => tracing::info!(stream = %stream.key(), "no dump to restore"),
            Ok(Some(n)) => {
                let secs = stream.read_buffer().duration_micros() as f64 / 1e6;
                tracing::info!(stream = %stream.key(), chunks = n, seconds = secs, took_ms = started.elapsed().as_millis() as u64, "rewind buffer restored from its dump");
            }
            Err(e) => {
                tracing::error!(stream = %stream.key(), error = %e, "dump not restored; starting with an empty buffer")
            }
        }
    }

    /// Slave: the master's config saved with the dumps, if any and readable.
    fn saved_replica_config(&self) -> Option<crate::link::frame::LinkConfig> {
        let path = self.config.dumps.as_ref()?.dir.join(REPLICA_CONFIG_FILE);
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::error!(file = %path.display(), error = %e, "saved master config not readable; waiting for the master");
                return None;
            }
        };
        match serde_json::from_slice(&text) {
            Ok(c) => {
                tracing::info!(file = %path.display(), "serving the master's last config until it answers");
                Some(c)
            }
            Err(e) => {
                tracing::error!(file = %path.display(), error = %e, "saved master config is corrupt; waiting for the master");
                None
            }
        }
    }

    /// Slave: keeps the master's config with the dumps (write, then rename).
    fn save_replica_config(&self, config: &crate::link::frame::LinkConfig) {
        let Some(d) = &self.config.dumps else {
            return;
        };
        let path = d.dir.join(REPLICA_CONFIG_FILE);
        let tmp = d.dir.join(format!(".{REPLICA_CONFIG_FILE}.tmp"));
        let written = serde_json::to_vec(config)
            .map_err(std::io::Error::other)
            .and_then(|bytes| std::fs::write(&tmp, bytes))
            .and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = written {
            tracing::warn!(file = %path.display(), error = %e, "cannot save the master's config");
        }
    }

    /// Writes every stream's dump now (periodically and at shutdown).
    pub async fn dump_all(&self) {
        let Some(d) = &self.config.dumps else {
            return;
        };
        for stream in self.streams() {
            let dir = d.dir.clone();
            let s = Arc::clone(&stream);
            let started = std::time::Instant::now();
            let r =
                tokio::task::spawn_blocking(move || crate::persist::rewind::save_stream(&s, &dir))
                    .await;
            match r {
                Ok(Ok(stats)) => {
                    tracing::info!(stream = %stream.key(), chunks = stats.chunks, bytes = stats.dump_bytes, took_ms = started.elapsed().as_millis() as u64, "rewind buffer dumped")
                }
                Ok(Err(e)) => {
                    tracing::error!(stream = %stream.key(), error = %e, "rewind dump failed")
                }
                Err(e) => {
                    tracing::error!(stream = %stream.key(), error = %e, "rewind dump task failed")
                }
            }
        }
    }

    fn registry(&self) -> std::sync::RwLockReadGuard<'_, Registry> {
        self.registry.read_locked()
    }

    /// Makes the given mounts and streams the ones in service, live: new ones
    /// are created, changed ones updated in place (listeners stay), removed
    /// ones closed (their sources and listeners disconnected). A stream whose
    /// mount changes format is recreated (its buffer holds the old format).
    /// Nothing changes if the new set is invalid.
    pub fn apply(
        &self,
        mounts: Vec<SourceMountConfig>,
        streams: Vec<StreamConfig>,
    ) -> Result<Applied, ServerError> {
        let candidate = Config {
            source_mounts: mounts,
            streams,
            ..self.config.clone()
        };
        candidate.validate().map_err(ServerError::Config)?;
        // Resolve every password before touching anything.
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
            wanted.push((m, password));
        }
        let mut reg = self.registry.write_locked();
        let mut applied = Applied::default();
        // Mounts.
        let gone = unwanted(&reg.mounts, wanted.iter().map(|(m, _)| m.key.as_str()));
        for key in gone {
            if let Some(m) = reg.mounts.remove(&key) {
                m.close();
                tracing::info!(mount = %key, "source mount removed");
            }
        }
        for (m, password) in &wanted {
            match reg.mounts.get(&m.key) {
                Some(existing) if existing.format() == m.format => {
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
        self.bump_config_epoch();
        Ok(applied)
    }

    /// Gives `stream` the transcoder its config asks for (or none).
    fn start_transcoder(&self, stream: &Arc<Stream>, sc: &StreamConfig) {
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

    fn bump_config_epoch(&self) {
        self.config_epoch.fetch_add(1, Ordering::AcqRel);
        self.config_notify.notify_waiters();
    }

    /// Changes whenever the streams or mounts change (slaves are sent the new set).
    pub fn config_epoch(&self) -> u64 {
        self.config_epoch.load(Ordering::Acquire)
    }

    /// Slave: makes the master's streams the ones served here (no mounts: a
    /// slave has no sources). New streams start from their dump, if any, and
    /// fill from the link; the config is kept with the dumps.
    pub fn apply_replica(&self, config: crate::link::frame::LinkConfig) {
        let mut reg = self.registry.write_locked();
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
        drop(reg);
        // A new stream starts from its dump when there is one (of its format):
        // the link then asks the master only for what came after.
        for stream in &created {
            self.restore_dump(stream);
        }
        self.save_replica_config(&config);
        self.bump_config_epoch();
    }

    /// Lets a successor bind the same ports during a handoff (`SO_REUSEPORT`).
    /// Set before [`Server::bind`] when handoffs are in use.
    pub fn set_reuse_port(&self, on: bool) {
        self.reuse_port.store(on, Ordering::Relaxed);
    }

    /// True while a handoff collects connections.
    pub fn is_parking(&self) -> bool {
        *self.parking.borrow()
    }

    /// Turns true when a handoff starts collecting connections.
    pub fn parking_signal(&self) -> watch::Receiver<bool> {
        self.parking.subscribe()
    }

    /// Starts collecting: sources and listeners stop at their next poll.
    pub fn begin_parking(&self) {
        self.parking.send_replace(true);
        for s in self.streams() {
            s.wake_all();
        }
    }

    /// Stops collecting.
    pub fn end_parking(&self) {
        self.parking.send_replace(false);
    }

    fn lock_parked(&self) -> std::sync::MutexGuard<'_, Parked> {
        self.parked.locked()
    }

    /// A listener stopped for the handoff.
    pub fn park_listener(&self, p: crate::output::listener::ParkedListener) {
        self.lock_parked().listeners.push(p);
    }

    /// A source stopped for the handoff.
    pub fn park_source(&self, p: crate::source::icecast::ParkedSource) {
        self.lock_parked().sources.push(p);
    }

    /// (listeners, sources) that must stop before a handoff can proceed.
    pub fn expected_parked(&self) -> (usize, usize) {
        let listeners = self.streams().iter().map(|s| s.listener_count()).sum();
        let sources = self.mounts().iter().map(|m| m.sources().len()).sum();
        (listeners, sources)
    }

    /// (listeners, sources) stopped so far.
    pub fn parked_counts(&self) -> (usize, usize) {
        let p = self.lock_parked();
        (p.listeners.len(), p.sources.len())
    }

    /// Everything stopped so far.
    pub fn take_parked(&self) -> Parked {
        std::mem::take(&mut *self.lock_parked())
    }

    /// Restarts stopped connections here (the handoff failed).
    pub fn resume_parked(self: &Arc<Self>, parked: Parked) {
        self.end_parking();
        for l in parked.listeners {
            crate::output::listener::resume(&self.as_output(), l);
        }
        for s in parked.sources {
            s.resume(&self.as_source());
        }
    }

    /// A successor (standalone or master) holds its listener and source ports
    /// until [`Server::handoff_settled`].
    pub fn await_handoff(&self) {
        self.awaiting_handoff.store(true, Ordering::Release);
    }

    /// The handoff is done (or is not coming): accept on every port.
    pub fn handoff_settled(&self) {
        if self.awaiting_handoff.swap(false, Ordering::AcqRel) {
            self.accepting.send_modify(|_| {});
        }
    }

    /// Whether the listener and source ports wait for a handoff.
    pub fn is_awaiting_handoff(&self) -> bool {
        self.awaiting_handoff.load(Ordering::Acquire)
    }

    /// Pauses or resumes accepting new connections on every port.
    pub fn set_accepting(&self, on: bool) {
        self.accepting.send_replace(on);
    }

    /// The listening sockets, by port name.
    pub fn listening_sockets(&self) -> Vec<(&'static str, Arc<TcpListener>)> {
        self.listening.locked().clone()
    }

    /// Serves a listening socket received from a predecessor.
    pub fn adopt_listening(self: &Arc<Self>, kind: &str, l: TcpListener) {
        let l = Arc::new(l);
        let server = Arc::clone(self);
        match kind {
            "listener" => {
                self.remember_listening("listener", Arc::clone(&l));
                tokio::spawn(accept_loop(
                    server,
                    l,
                    "listener",
                    hosts::listener_connection,
                ));
            }
            "source" => {
                self.remember_listening("source", Arc::clone(&l));
                tokio::spawn(accept_loop(server, l, "source", hosts::source_connection));
            }
            _ => {
                self.remember_listening("admin", Arc::clone(&l));
                tokio::spawn(accept_loop(server, l, "admin", hosts::admin_connection));
            }
        }
    }

    fn remember_listening(&self, kind: &'static str, l: Arc<TcpListener>) {
        self.listening.locked().push((kind, l));
    }

    /// After a successful handoff: the process should exit now.
    pub fn mark_handed_off(&self) {
        self.handed_off.send_replace(true);
    }

    /// Turns true after a successful handoff.
    pub fn handed_off_signal(&self) -> watch::Receiver<bool> {
        self.handed_off.subscribe()
    }

    /// Stops taking listeners, reports not ready, and waits until no
    /// listener is left or `max` passed; returns the listeners left.
    ///
    /// The ports stay open: a new audio request gets `503` with
    /// `Retry-After` (players retry, and the Service, which no longer lists a
    /// pod that is not ready, sends them elsewhere), HLS requests are answered
    /// once more and their connections closed, and the admin port answers
    /// probes (not ready, but alive). A paused accept queue would hold
    /// clients that a lagging Service still sends here until they time out.
    pub async fn drain(&self, max: std::time::Duration) -> usize {
        self.draining.store(true, Ordering::Relaxed);
        let end = tokio::time::Instant::now() + max;
        loop {
            let left: usize = self.streams().iter().map(|s| s.listener_count()).sum();
            if left == 0 || tokio::time::Instant::now() >= end {
                return left;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }

    /// The shared secret of the master↔slave link.
    pub fn link_secret(&self) -> Option<&Secret> {
        self.link_secret.as_ref()
    }

    /// Master: a slave connected; returns its slot.
    pub fn slave_connected(&self, info: crate::link::master::SlaveInfo) -> u64 {
        let slot = self.next_slave.fetch_add(1, Ordering::Relaxed);
        let mut slaves = self.slaves.locked();
        slaves.insert(slot, info);
        self.metrics
            .slaves
            .set(i64::try_from(slaves.len()).unwrap_or(0));
        slot
    }

    /// Master: a slave reported (or just said it is alive).
    pub fn slave_stats(&self, slot: u64, stats: Option<crate::link::frame::Stats>) {
        let mut slaves = self.slaves.locked();
        if let Some(s) = slaves.get_mut(&slot) {
            s.last_seen = std::time::Instant::now();
            if let Some(st) = stats {
                s.stats = st;
            }
        }
    }

    /// Master: a slave left.
    pub fn slave_disconnected(&self, slot: u64) {
        let mut slaves = self.slaves.locked();
        slaves.remove(&slot);
        self.metrics
            .slaves
            .set(i64::try_from(slaves.len()).unwrap_or(0));
    }

    /// Master: the connected slaves.
    pub fn slaves(&self) -> Vec<crate::link::master::SlaveInfo> {
        self.slaves.locked().values().cloned().collect()
    }

    /// The analytics sink.
    pub fn analytics(&self) -> &crate::analytics::Analytics {
        &self.analytics
    }

    /// The admin API's bearer token, if one is configured.
    pub fn admin_token(&self) -> Option<&Secret> {
        self.admin_token.as_ref()
    }

    /// Keeps the API's changes in `store` from now on (`overlay` is what it
    /// held at start). Call from within the runtime.
    pub fn use_store(&self, store: crate::store::Store, overlay: crate::store::Overlay) {
        let (tx, rx) = watch::channel(overlay);
        if self.overlay.set(tx).is_ok() {
            tokio::spawn(store.run_writer(rx));
        }
    }

    /// The API's changes held in Redis (empty without Redis).
    pub fn overlay(&self) -> crate::store::Overlay {
        self.overlay
            .get()
            .map(|tx| tx.borrow().clone())
            .unwrap_or_default()
    }

    /// Records a change made through the API (saved to Redis when configured).
    pub fn record(&self, change: Change) {
        tracing::info!(change = ?ChangeSummary(&change), "configuration changed through the API");
        if let Some(tx) = self.overlay.get() {
            tx.send_modify(|o| match change {
                Change::UpsertStream(s) => o.upsert_stream(s),
                Change::DeleteStream(k) => o.delete_stream(&k),
                Change::UpsertMount(m) => o.upsert_mount(m),
                Change::DeleteMount(k) => o.delete_mount(&k),
            });
        }
    }

    /// The configuration in force: the file's ports and settings with the
    /// streams and mounts as they are now (after API changes).
    pub fn effective_config(&self) -> Config {
        let reg = self.registry();
        Config {
            source_mounts: reg.mount_configs.clone(),
            streams: reg.stream_configs.clone(),
            ..self.config.clone()
        }
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// A stream by key.
    pub fn stream(&self, key: &str) -> Option<Arc<Stream>> {
        self.registry().streams.get(key).cloned()
    }

    /// All streams, by key (a snapshot).
    pub fn streams(&self) -> Vec<Arc<Stream>> {
        self.registry().streams.values().cloned().collect()
    }

    /// A mount by key.
    pub fn mount(&self, key: &str) -> Option<Arc<Mount>> {
        self.registry().mounts.get(key).cloned()
    }

    /// All mounts, by key (a snapshot).
    pub fn mounts(&self) -> Vec<Arc<Mount>> {
        self.registry().mounts.values().cloned().collect()
    }

    /// The headers of the source on air for a stream.
    pub fn source_info(&self, stream: &Stream) -> Option<SourceInfo> {
        let mount = self.mount(stream.config().mount_key())?;
        mount.sources().first().map(|s| s.info.clone())
    }

    /// The title a stream carries now: its mount's (set by the encoder or the
    /// API), else the stream's configured one.
    pub fn current_title(&self, stream: &Stream) -> String {
        self.mount(stream.config().mount_key())
            .and_then(|m| m.title())
            .unwrap_or_else(|| stream.default_title_text())
    }

    /// When the server started.
    pub fn started_at(&self) -> SystemTime {
        self.started_at
    }

    /// The bound listener port.
    pub fn listener_port(&self) -> u16 {
        self.listener_port.load(Ordering::Relaxed)
    }

    /// True once the ports are bound and serving.
    pub fn is_ready(&self) -> bool {
        // A slave is ready once it has had the master's streams (and keeps
        // serving its buffer if the master goes away later).
        let synced = self.config.mode != Mode::Slave
            || (self.config_epoch() > 0 && self.replica_caught_up());
        synced
            && self.ready.load(Ordering::Relaxed)
            && !self.draining.load(Ordering::Relaxed)
            && !*self.shutdown.borrow()
    }

    /// Slave: the master sent a config or a chunk.
    pub fn replica_activity(&self) {
        self.catch_up.touch();
    }

    /// Slave: the replica holds what the master had when it linked (see
    /// [`crate::link::catchup`]); latched.
    pub fn replica_caught_up(&self) -> bool {
        if self.catch_up.is_caught_up() {
            return true;
        }
        let newest: Vec<Option<i64>> = self
            .streams()
            .iter()
            .map(|s| s.read_buffer().last_end_ts())
            .collect();
        self.catch_up.check(newest, crate::stream::now_micros())
    }

    /// Records the handoff socket this server listens on (`None`: none).
    pub fn set_handoff_offer(&self, id: Option<(u64, u64)>) {
        *self.handoff_offer.locked() = id;
    }

    /// The handoff socket this server listens on, by device and inode.
    pub fn handoff_offer(&self) -> Option<(u64, u64)> {
        *self.handoff_offer.locked()
    }

    /// Draining (`streammachine handoff --drain`): no new listeners.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// A receiver that turns true when the server shuts down.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Starts shutting down: accept loops stop, connections end.
    pub fn shutdown(&self) {
        self.shutdown.send_replace(true);
        for s in self.streams() {
            s.close();
        }
    }

    /// Binds the three ports.
    pub async fn bind(&self) -> Result<Bound, ServerError> {
        let c = &self.config;
        let reuse = self.reuse_port.load(Ordering::Relaxed);
        // A master takes no listeners, a slave no sources (DESIGN.md §3).
        let listeners = match c.mode {
            Mode::Master => None,
            _ => Some(bind(
                "listener port",
                &c.listeners.address,
                c.listeners.port,
                c.listeners.backlog,
                c.listeners.send_buffer_bytes,
                reuse,
            )?),
        };
        let sources = match c.mode {
            Mode::Slave => None,
            _ => Some(bind(
                "source port",
                &c.sources.address,
                c.sources.port,
                1024,
                0,
                reuse,
            )?),
        };
        let admin = bind("admin port", &c.admin.address, c.admin.port, 1024, 0, reuse)?;
        if let Some(a) = listeners.as_ref().and_then(|l| l.local_addr().ok()) {
            self.listener_port.store(a.port(), Ordering::Relaxed);
        }
        Ok(Bound {
            listeners,
            sources,
            admin,
        })
    }

    /// Serves on the bound ports until [`Server::shutdown`].
    pub async fn serve(self: Arc<Self>, bound: Bound) {
        let l = bound.listeners.map(|l| {
            let l = Arc::new(l);
            self.remember_listening("listener", Arc::clone(&l));
            tokio::spawn(accept_loop(
                Arc::clone(&self),
                l,
                "listener",
                hosts::listener_connection,
            ))
        });
        let s = bound.sources.map(|l| {
            let l = Arc::new(l);
            self.remember_listening("source", Arc::clone(&l));
            tokio::spawn(accept_loop(
                Arc::clone(&self),
                l,
                "source",
                hosts::source_connection,
            ))
        });
        if self.config.mode == Mode::Slave {
            let url = self
                .config
                .master
                .as_ref()
                .map(|m| m.url.clone())
                .unwrap_or_default();
            // In Kubernetes the pod's name (a host-network pod's HOSTNAME is
            // the node's, the same for the old and the new pod of a rollout).
            let id = std::env::var("STREAMMACHINE_SLAVE_NAME")
                .or_else(|_| std::env::var("HOSTNAME"))
                .unwrap_or_else(|_| format!("slave-{}", std::process::id()));
            tokio::spawn(crate::link::slave::run(Arc::clone(&self) as _, url, id));
        }
        let admin = Arc::new(bound.admin);
        self.remember_listening("admin", Arc::clone(&admin));
        let a = tokio::spawn(accept_loop(
            Arc::clone(&self),
            admin,
            "admin",
            hosts::admin_connection,
        ));
        let writer = self.analytics_writer.locked().take();
        if let Some((rx, sink)) = writer {
            tokio::spawn(crate::analytics::run_writer(rx, sink));
        }
        if self.is_holding_for_resync() {
            let server = Arc::clone(&self);
            tokio::spawn(async move {
                tokio::time::sleep(server.resync_grace()).await;
                server.release_resync_hold("no slave re-synced within link.resyncGraceSeconds");
            });
        }
        // HLS sessions are tracked (for the sessions counter) even without
        // events, so idle ones are always swept.
        let server = Arc::clone(&self);
        tokio::spawn(async move {
            let mut shutdown = server.shutdown_signal();
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(5)) => server.analytics.sweep(),
                    _ = shutdown.changed() => return,
                }
            }
        });
        if let Some(d) = &self.config.dumps {
            let server = Arc::clone(&self);
            let every = Duration::from_secs(u64::from(d.interval_seconds));
            tokio::spawn(async move {
                let mut shutdown = server.shutdown_signal();
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(every) => server.dump_all().await,
                        _ = shutdown.changed() => return,
                    }
                }
            });
        }
        let alerts: Arc<dyn crate::alerts::AlertsHost> = Arc::clone(&self) as _;
        tokio::spawn(crate::alerts::run(
            alerts,
            self.config.alerts.clone().unwrap_or_default(),
        ));
        self.ready.store(true, Ordering::Relaxed);
        let _ = a.await;
        for t in [l, s].into_iter().flatten() {
            let _ = t.await;
        }
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
