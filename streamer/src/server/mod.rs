//! The server: its streams and mounts, its three ports, and their accept loops.

mod budget;
mod dumps;
mod hosts;
mod lifecycle;
mod ports;
mod registry;
mod slaves;

pub use crate::error::ServerError;
pub use crate::handoff::Parked;
use crate::journal::Journal;
pub use crate::store::{Applied, Change};
use crate::sync::MutexExt;
use dumps::Dumps;
use lifecycle::Lifecycle;
use registry::{read_password, Registry};
use slaves::Slaves;

pub use ports::Bound;
use ports::{accept_loop, bind};

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use streammachine_config::{Config, Mode, Secret, SourceMountConfig, StreamConfig};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;

use crate::metrics::Metrics;
use crate::stream::Stream;

/// The running server: its components, each holding one part of the state,
/// wired to the parts through the host traits (`hosts.rs`).
#[derive(Debug)]
pub struct Server {
    config: Config,
    registry: Registry,
    metrics: Metrics,
    started_at: SystemTime,
    lifecycle: Lifecycle,
    listener_port: std::sync::atomic::AtomicU16,
    admin_token: Option<Secret>,
    link_secret: Option<Secret>,
    url_secret: Option<Secret>,
    journal: Journal,
    analytics: crate::analytics::Analytics,
    analytics_writer: std::sync::Mutex<
        Option<(
            tokio::sync::mpsc::Receiver<String>,
            crate::analytics::PathBufOrLog,
        )>,
    >,
    /// Slave: whether the replica has caught up with the master (readiness).
    catch_up: crate::link::catchup::CatchUp,
    slaves: Slaves,
    dumps: Dumps,
    /// A restarted master holding new audio until a slave has re-synced it.
    resync_hold: AtomicBool,
    /// Failed logins per address, on the source and the admin port.
    source_lockout: crate::lockout::Lockout,
    admin_lockout: crate::lockout::Lockout,
    /// Connections each port may hold.
    budgets: budget::Budgets,
    /// Listener auth webhooks.
    listener_auth: Arc<crate::output::auth::Authenticator>,
}

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
        let admin_token = match (&config.admin.token, &config.admin.token_file) {
            (Some(t), _) => Some(t.clone()),
            (None, Some(f)) => Some(read_password("admin.tokenFile", f)?),
            (None, None) => None,
        }
        .filter(|t| !t.0.is_empty());
        let url_secret = match (
            &config.listeners.url_secret,
            &config.listeners.url_secret_file,
        ) {
            (Some(t), _) => Some(t.clone()),
            (None, Some(f)) => Some(read_password("listeners.urlSecretFile", f)?),
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
        let dumps = Dumps::new(
            config.dumps.as_ref().map(|d| d.dir.clone()),
            metrics.dumps_set_aside.clone(),
        )?;
        let listener_auth = crate::output::auth::Authenticator::new(&metrics)
            .map(Arc::new)
            .map_err(|e| ServerError::Unsupported {
                path: "streams[].listenerAuth".into(),
                message: e.to_string(),
            })?;
        let budgets = budget::Budgets::new(&config, budget::nofile());
        tracing::info!(
            listeners = budgets.listeners.cap(),
            sources = budgets.sources.cap(),
            admin = budgets.admin.cap(),
            "connection budgets"
        );
        let server = Arc::new(Server {
            budgets,
            listener_auth,
            config,
            registry: Registry::new(metrics.clone()),
            slaves: Slaves::new(metrics.slaves.clone()),
            metrics,
            started_at,
            lifecycle: Lifecycle::default(),
            listener_port: std::sync::atomic::AtomicU16::new(0),
            admin_token,
            link_secret,
            url_secret,
            journal: Journal::default(),
            analytics,
            analytics_writer: std::sync::Mutex::new(analytics_writer),
            catch_up: crate::link::catchup::CatchUp::default(),
            dumps,
            resync_hold: AtomicBool::new(false),
            source_lockout: crate::lockout::Lockout::default(),
            admin_lockout: crate::lockout::Lockout::default(),
        });
        if server.config.mode == Mode::Slave {
            // The master's last config, so that a slave restarted while its
            // master is away serves its streams from their dumps.
            if let Some(saved) = server.dumps.replica_config() {
                server.apply_replica(saved);
            }
        } else {
            server.apply(mounts, streams)?;
            for stream in server.streams() {
                server.dumps.restore(&stream);
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

    /// Writes every stream's dump now (periodically and at shutdown).
    pub async fn dump_all(&self) {
        self.dumps.save_all(self.streams()).await;
    }

    /// Makes the given mounts and streams the ones in service, live (see
    /// [`Registry::apply`]); nothing changes if the new set is invalid.
    pub fn apply(
        &self,
        mounts: Vec<SourceMountConfig>,
        streams: Vec<StreamConfig>,
    ) -> Result<Applied, ServerError> {
        self.registry.apply(&self.config, mounts, streams)
    }

    /// Whether [`Server::apply`] would take `mounts` and `streams` (it
    /// validates and reads password files; nothing changes).
    pub fn check(
        &self,
        mounts: Vec<SourceMountConfig>,
        streams: Vec<StreamConfig>,
    ) -> Result<(), ServerError> {
        registry::prepare(&self.config, mounts, streams).map(|_| ())
    }

    /// Slave: makes the master's streams the ones served here (no mounts: a
    /// slave has no sources). New streams start from their dump, if any, and
    /// fill from the link; the config is kept with the dumps.
    pub fn apply_replica(&self, config: crate::link::frame::LinkConfig) {
        let created = self.registry.apply_replica(&config);
        // A new stream starts from its dump when there is one (of its format):
        // the link then asks the master only for what came after.
        for stream in &created {
            self.dumps.restore(stream);
        }
        self.dumps.save_replica_config(&config);
        self.registry.bump_epoch();
    }

    /// Lets a successor bind the same ports during a handoff (`SO_REUSEPORT`).
    /// Set before [`Server::bind`] when handoffs are in use.
    pub fn set_reuse_port(&self, on: bool) {
        self.lifecycle.set_reuse_port(on);
    }

    /// Starts collecting: sources and listeners stop at their next poll.
    pub fn begin_parking(&self) {
        self.lifecycle.set_parking(true);
        for s in self.streams() {
            s.wake_all();
        }
    }

    /// (listeners, sources) that must stop before a handoff can proceed.
    pub fn expected_parked(&self) -> (usize, usize) {
        let listeners = self.streams().iter().map(|s| s.listener_count()).sum();
        let sources = self
            .registry
            .mounts()
            .iter()
            .map(|m| m.sources().len())
            .sum();
        (listeners, sources)
    }

    /// Restarts stopped connections here (the handoff failed).
    pub fn resume_parked(self: &Arc<Self>, parked: Parked) {
        self.lifecycle.set_parking(false);
        for l in parked.listeners {
            crate::output::listener::resume(&self.as_output(), l);
        }
        for s in parked.sources {
            s.resume(&self.as_source());
        }
    }

    /// A successor (standalone or master) holds its listener and source ports
    /// until the handoff settles, or `wait` passed without one.
    pub fn await_handoff(self: &Arc<Self>, wait: Duration) {
        self.lifecycle.await_handoff();
        let server = Arc::clone(self);
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            if server.lifecycle.is_awaiting_handoff() {
                tracing::warn!(
                    seconds = wait.as_secs(),
                    "no predecessor handed off; accepting listeners and sources on our own"
                );
                server.lifecycle.handoff_settled();
            }
        });
    }

    /// Serves a listening socket received from a predecessor.
    pub fn adopt_listening(self: &Arc<Self>, kind: &str, l: TcpListener) {
        let l = Arc::new(l);
        let server = Arc::clone(self);
        match kind {
            "listener" => {
                self.lifecycle
                    .remember_listening("listener", Arc::clone(&l));
                tokio::spawn(accept_loop(
                    server,
                    l,
                    "listener",
                    hosts::listener_connection,
                ));
            }
            "source" => {
                self.lifecycle.remember_listening("source", Arc::clone(&l));
                tokio::spawn(accept_loop(server, l, "source", hosts::source_connection));
            }
            _ => {
                self.lifecycle.remember_listening("admin", Arc::clone(&l));
                hosts::serve_admin(self, l);
            }
        }
    }

    /// Turns true after a successful handoff.
    pub fn handed_off_signal(&self) -> watch::Receiver<bool> {
        self.lifecycle.handed_off_signal()
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
        self.lifecycle.start_draining();
        let end = tokio::time::Instant::now() + max;
        loop {
            let left: usize = self.streams().iter().map(|s| s.listener_count()).sum();
            if left == 0 || tokio::time::Instant::now() >= end {
                return left;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }

    /// Keeps the API's changes in `store` from now on (`overlay` is what it
    /// held at start). Call from within the runtime.
    pub fn use_store(&self, store: crate::store::Store, overlay: crate::store::Overlay) {
        self.journal
            .use_store(store, overlay, self.metrics.config_store_failures.clone());
    }

    /// The API's changes, one at a time (see [`Journal::begin`]).
    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// The configuration in force: the file's ports and settings with the
    /// streams and mounts as they are now (after API changes).
    pub fn effective_config(&self) -> Config {
        self.registry.effective(&self.config)
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// All streams, by key (a snapshot).
    pub fn streams(&self) -> Vec<Arc<Stream>> {
        self.registry.streams()
    }

    /// True once the ports are bound and serving.
    pub fn is_ready(&self) -> bool {
        // A slave is ready once it has had the master's streams (and keeps
        // serving its buffer if the master goes away later).
        let synced = self.config.mode != Mode::Slave
            || (self.registry.epoch() > 0 && self.replica_caught_up());
        synced && self.lifecycle.is_serving()
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

    /// A receiver that turns true when the server shuts down.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.lifecycle.shutdown_signal()
    }

    /// Starts shutting down: accept loops stop, connections end.
    pub fn shutdown(&self) {
        self.lifecycle.shut_down();
        for s in self.streams() {
            s.close();
        }
    }

    /// Binds the three ports.
    pub async fn bind(&self) -> Result<Bound, ServerError> {
        let c = &self.config;
        let reuse = self.lifecycle.reuse_port();
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
            self.lifecycle
                .remember_listening("listener", Arc::clone(&l));
            tokio::spawn(accept_loop(
                Arc::clone(&self),
                l,
                "listener",
                hosts::listener_connection,
            ))
        });
        let s = bound.sources.map(|l| {
            let l = Arc::new(l);
            self.lifecycle.remember_listening("source", Arc::clone(&l));
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
        self.lifecycle
            .remember_listening("admin", Arc::clone(&admin));
        let a = hosts::serve_admin(&self, admin);
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
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {
                        server.analytics.sweep();
                        server.listener_auth.sweep(server.analytics.session_idle());
                    }
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
        self.lifecycle.set_ready();
        let _ = a.await;
        for t in [l, s].into_iter().flatten() {
            let _ = t.await;
        }
    }
}
