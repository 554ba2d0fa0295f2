//! The server: its streams and mounts, its three ports, and their accept loops.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use streammachine_crds::config::{Config, Mode, Secret};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;

use crate::metrics::{Metrics, MetricsError};
use crate::source::{Mount, SourceInfo};
use crate::stream::Stream;

/// Errors starting a server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The configuration asks for something this build cannot do.
    #[error("{path}: {message}")]
    Unsupported {
        /// Config path.
        path: String,
        /// What is missing.
        message: String,
    },
    /// A password file could not be read.
    #[error("{path}: cannot read password file {file}: {error}")]
    PasswordFile {
        /// Config path.
        path: String,
        /// The file.
        file: String,
        /// The I/O error.
        error: std::io::Error,
    },
    /// A mount has no password.
    #[error("{path}: a source password is required (password or passwordFile)")]
    NoPassword {
        /// Config path.
        path: String,
    },
    /// A port could not be bound.
    #[error("cannot listen on {what} {addr}: {error}")]
    Bind {
        /// Which port.
        what: &'static str,
        /// The address.
        addr: String,
        /// The I/O error.
        error: std::io::Error,
    },
    /// Metrics registry.
    #[error(transparent)]
    Metrics(#[from] MetricsError),
}

/// The running server's shared state.
#[derive(Debug)]
pub struct Server {
    config: Config,
    streams: BTreeMap<String, Arc<Stream>>,
    mounts: BTreeMap<String, Arc<Mount>>,
    metrics: Metrics,
    started_at: SystemTime,
    shutdown: watch::Sender<bool>,
    ready: AtomicBool,
    listener_port: std::sync::atomic::AtomicU16,
}

/// The three bound ports.
#[derive(Debug)]
pub struct Bound {
    /// Listener port.
    pub listeners: TcpListener,
    /// Source port.
    pub sources: TcpListener,
    /// Admin port.
    pub admin: TcpListener,
}

impl Bound {
    /// The actual addresses (ports chosen by the OS when 0 was asked for).
    pub fn addrs(&self) -> (Option<SocketAddr>, Option<SocketAddr>, Option<SocketAddr>) {
        (
            self.listeners.local_addr().ok(),
            self.sources.local_addr().ok(),
            self.admin.local_addr().ok(),
        )
    }
}

fn read_password(path: &str, file: &Path) -> Result<Secret, ServerError> {
    let text = std::fs::read_to_string(file).map_err(|error| ServerError::PasswordFile {
        path: path.to_string(),
        file: file.display().to_string(),
        error,
    })?;
    Ok(Secret(text.trim_end_matches(['\r', '\n']).to_string()))
}

impl Server {
    /// Builds streams and mounts from a validated configuration.
    pub fn new(config: Config) -> Result<Arc<Server>, ServerError> {
        if config.mode != Mode::Standalone {
            return Err(ServerError::Unsupported {
                path: "mode".into(),
                message: format!(
                    "{} mode is not implemented in this build yet; only standalone is",
                    config.mode
                ),
            });
        }
        for (i, s) in config.streams.iter().enumerate() {
            if s.transcode.is_some() {
                return Err(ServerError::Unsupported {
                    path: format!("streams[{i}].transcode"),
                    message: "transcoding is not implemented in this build yet".into(),
                });
            }
        }
        let metrics = Metrics::new()?;
        let mut mounts = BTreeMap::new();
        for (i, m) in config.effective_mounts().into_iter().enumerate() {
            let path = match config.source_mounts.get(i) {
                Some(_) => format!("sourceMounts[{i}]"),
                None => format!("streams[key={}]", m.key),
            };
            let password = match (&m.password, &m.password_file) {
                (Some(p), _) => p.clone(),
                (None, Some(f)) => read_password(&format!("{path}.passwordFile"), f)?,
                (None, None) => return Err(ServerError::NoPassword { path }),
            };
            let mount = Mount::new(m.key.clone(), m.format, password, &metrics);
            mounts.insert(m.key, mount);
        }
        let mut streams = BTreeMap::new();
        for s in &config.streams {
            let Some(mount) = mounts.get(s.mount_key()) else {
                continue;
            };
            let stream = Stream::new(s.clone(), mount.format(), &metrics);
            if s.hls.is_some() {
                tracing::warn!(stream = %s.key, "hls is configured but not implemented in this build yet: /{}.m3u8 answers 501", s.key);
            }
            mount.attach_stream(Arc::clone(&stream));
            streams.insert(s.key.clone(), stream);
        }
        let started_at = SystemTime::now();
        metrics.start_time.set(
            started_at
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| i64::try_from(d.as_secs()).unwrap_or(0))
                .unwrap_or(0),
        );
        let (shutdown, _) = watch::channel(false);
        Ok(Arc::new(Server {
            config,
            streams,
            mounts,
            metrics,
            started_at,
            shutdown,
            ready: AtomicBool::new(false),
            listener_port: std::sync::atomic::AtomicU16::new(0),
        }))
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
        self.streams.get(key).cloned()
    }

    /// All streams, by key.
    pub fn streams(&self) -> impl Iterator<Item = &Arc<Stream>> {
        self.streams.values()
    }

    /// A mount by key.
    pub fn mount(&self, key: &str) -> Option<Arc<Mount>> {
        self.mounts.get(key).cloned()
    }

    /// The headers of the source on air for a stream.
    pub fn source_info(&self, stream: &Stream) -> Option<SourceInfo> {
        let mount = self.mounts.get(stream.config().mount_key())?;
        mount.sources().first().map(|s| s.info.clone())
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
        self.ready.load(Ordering::Relaxed) && !*self.shutdown.borrow()
    }

    /// A receiver that turns true when the server shuts down.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Starts shutting down: accept loops stop, connections end.
    pub fn shutdown(&self) {
        self.shutdown.send_replace(true);
        for s in self.streams.values() {
            s.close();
        }
    }

    /// Binds the three ports.
    pub async fn bind(&self) -> Result<Bound, ServerError> {
        let c = &self.config;
        let listeners = bind(
            "listener port",
            &c.listeners.address,
            c.listeners.port,
            c.listeners.backlog,
            c.listeners.send_buffer_bytes,
        )?;
        let sources = bind("source port", &c.sources.address, c.sources.port, 1024, 0)?;
        let admin = bind("admin port", &c.admin.address, c.admin.port, 1024, 0)?;
        if let Ok(a) = listeners.local_addr() {
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
        let l = tokio::spawn(accept_loop(
            Arc::clone(&self),
            bound.listeners,
            "listener",
            crate::output::listener::handle_connection,
        ));
        let s = tokio::spawn(accept_loop(
            Arc::clone(&self),
            bound.sources,
            "source",
            crate::source::icecast::handle_connection,
        ));
        let a = tokio::spawn(accept_loop(
            Arc::clone(&self),
            bound.admin,
            "admin",
            crate::admin::handle_connection,
        ));
        self.ready.store(true, Ordering::Relaxed);
        let _ = tokio::join!(l, s, a);
    }
}

/// Binds a listening socket. Accepted connections inherit its `SO_SNDBUF`.
fn bind(
    what: &'static str,
    address: &str,
    port: u16,
    backlog: u32,
    send_buffer: u32,
) -> Result<TcpListener, ServerError> {
    let text = if address.contains(':') && !address.starts_with('[') {
        format!("[{address}]:{port}")
    } else {
        format!("{address}:{port}")
    };
    let err = |error| ServerError::Bind {
        what,
        addr: text.clone(),
        error,
    };
    let addr: SocketAddr = text.parse().map_err(|_| {
        err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not an IP address and port",
        ))
    })?;
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(err)?;
    socket.set_reuseaddr(true).map_err(err)?;
    if send_buffer > 0 {
        socket.set_send_buffer_size(send_buffer).map_err(err)?;
    }
    socket.bind(addr).map_err(err)?;
    socket.listen(backlog).map_err(err)
}

async fn accept_loop<F, Fut>(
    server: Arc<Server>,
    listener: TcpListener,
    what: &'static str,
    handler: F,
) where
    F: Fn(Arc<Server>, TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut shutdown = server.shutdown_signal();
    let mut last_error_log = None::<tokio::time::Instant>;
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.changed() => return,
        };
        match accepted {
            Ok((sock, peer)) => {
                let _ = sock.set_nodelay(true);
                tokio::spawn(handler(Arc::clone(&server), sock, peer));
            }
            Err(e) => {
                // Out of file descriptors and the like: log once a second, back off.
                let now = tokio::time::Instant::now();
                if last_error_log.is_none_or(|t| now - t > Duration::from_secs(1)) {
                    tracing::error!(port = what, error = %e, "accept failed");
                    last_error_log = Some(now);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}
