//! The `streammachine` command line: configuration, telemetry, signals.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use streammachine_config::{AudioFormat, Config, Mode, Secret, StreamConfig};

use crate::server::Server;

/// How long a successor (standalone or master) holds its listener and source
/// ports for a predecessor's handoff before serving on its own.
const HANDOFF_WAIT: Duration = Duration::from_secs(30);

/// Development password of the built-in default stream.
pub const DEV_SOURCE_PASSWORD: &str = "hackme";

pub use crate::telemetry::LogFormat;

/// StreamMachine: a streaming audio server for radio stations.
///
/// Without --config it starts a standalone server with one MP3 stream, `test`:
/// point an encoder at icecast://source:hackme@HOST:8001/test and a player at
/// http://HOST:8000/test.
#[derive(Debug, Parser)]
#[command(name = "streammachine", version)]
pub struct Args {
    /// Configuration file (YAML or JSON).
    #[arg(long, short = 'c', env = "STREAMMACHINE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Overrides `mode`.
    #[arg(long, env = "STREAMMACHINE_MODE", value_parser = parse_mode)]
    pub mode: Option<Mode>,
    /// Overrides the address of all three ports.
    #[arg(long, env = "STREAMMACHINE_BIND")]
    pub bind: Option<String>,
    /// Overrides `listeners.port`.
    #[arg(long, env = "STREAMMACHINE_LISTENERS_PORT")]
    pub listen_port: Option<u16>,
    /// Overrides `sources.port`.
    #[arg(long, env = "STREAMMACHINE_SOURCES_PORT")]
    pub source_port: Option<u16>,
    /// Overrides `admin.port`.
    #[arg(long, env = "STREAMMACHINE_ADMIN_PORT")]
    pub admin_port: Option<u16>,
    /// Log format.
    #[arg(
        long,
        env = "STREAMMACHINE_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,
    /// Checks the configuration, prints it as the server reads it, and exits.
    #[arg(long)]
    pub check_config: bool,
    /// Take over from a predecessor: listen on this Unix socket for its
    /// handoff (while serving). Ports are bound with SO_REUSEPORT.
    #[arg(long, env = "STREAMMACHINE_HANDOFF_FROM")]
    pub handoff_from: Option<PathBuf>,
    /// Control socket: `streammachine handoff` (a preStop hook) and
    /// `streammachine run` talk to the server here. Ports are bound with
    /// SO_REUSEPORT so a successor can bind them too.
    #[arg(long, env = "STREAMMACHINE_CONTROL_SOCKET")]
    pub control_socket: Option<PathBuf>,
    /// What to do (default: serve).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Commands besides serving.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Runs the server under a small supervisor that, on SIGHUP (or a touch
    /// of `--trigger-file`), starts a new process from the binary on disk (an
    /// upgrade) and hands every listener and source to it without dropping a
    /// byte.
    Run {
        /// Hand off also when this file's modification time changes (a deploy
        /// tool touches it), checked twice a second.
        #[arg(long, value_name = "PATH")]
        trigger_file: Option<PathBuf>,
    },
    /// Tells the server behind `--control-socket` to hand everything to the
    /// successor listening at `--to`, or (`--drain`) to stop taking listeners
    /// and wait until they are gone. For Kubernetes preStop hooks.
    Handoff {
        /// The successor's handoff socket (its `--handoff-from`).
        #[arg(long, conflicts_with = "drain")]
        to: Option<PathBuf>,
        /// Drain instead: report not ready, stop accepting listeners, wait.
        #[arg(long)]
        drain: bool,
        /// Longest drain, in seconds.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// With `--to`: wait up to this many seconds for a successor to listen
        /// there (a new pod may still be starting).
        #[arg(long, default_value_t = 0, requires = "to")]
        wait: u64,
        /// With `--to`: when no successor came within `--wait`, drain for
        /// this many seconds instead (0: fail).
        #[arg(long, default_value_t = 0, requires = "to")]
        fallback_drain: u64,
    },
    /// Asks the server behind `--control-socket` whether it can take
    /// listeners (exit 0) or not (exit 1, with the reason): ready, a slave
    /// caught up with its master, and listening for its predecessor's handoff
    /// when started with `--handoff-from`. For exec readiness probes on the
    /// host network, where an HTTP probe could reach another process.
    Ready,
}

fn parse_mode(s: &str) -> Result<Mode, String> {
    match s {
        "standalone" => Ok(Mode::Standalone),
        "master" => Ok(Mode::Master),
        "slave" => Ok(Mode::Slave),
        _ => Err(format!("{s:?}: expected standalone, master or slave")),
    }
}

/// Errors before the server runs.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The config file could not be read.
    #[error("cannot read {file}: {error}")]
    Read {
        /// The file.
        file: String,
        /// The I/O error.
        error: std::io::Error,
    },
    /// The config is invalid.
    #[error("{file}: {error}")]
    Config {
        /// The file.
        file: String,
        /// What is wrong.
        error: streammachine_config::ConfigError,
    },
    /// The server could not start.
    #[error(transparent)]
    Server(#[from] crate::server::ServerError),
    /// The Redis config store could not be read.
    #[error("cannot load the configuration from redis: {0}")]
    Store(crate::store::StoreError),
    /// The async runtime could not start.
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
    /// `--handoff-from` names a socket this process cannot listen on: it
    /// could never take over, so it does not serve beside its predecessor.
    #[error("cannot listen for a handoff at {path}: {error}; not serving (a successor that cannot take over would run beside its predecessor)")]
    Handoff {
        /// The `--handoff-from` path.
        path: String,
        /// Why.
        error: std::io::Error,
    },
}

/// The configuration used when no file is given: one standalone MP3 stream.
pub fn default_config() -> Config {
    let password = std::env::var("STREAMMACHINE_SOURCE_PASSWORD")
        .ok()
        .filter(|p| !p.is_empty());
    let mut stream = StreamConfig::new("test");
    stream.format = Some(AudioFormat::Mp3);
    stream.password = Some(Secret(
        password.unwrap_or_else(|| DEV_SOURCE_PASSWORD.to_string()),
    ));
    // No name: the encoder's `ice-name` names the stream (icy-name, the
    // status pages), as on Icecast.
    Config {
        streams: vec![stream],
        ..Config::default()
    }
}

/// Loads the file (or the default), then applies flags and environment.
pub fn load_config(args: &Args) -> Result<Config, CliError> {
    let (mut config, file) = match &args.config {
        Some(path) => {
            let file = path.display().to_string();
            let text = std::fs::read_to_string(path).map_err(|error| CliError::Read {
                file: file.clone(),
                error,
            })?;
            let config = Config::from_yaml_str(&text).map_err(|error| CliError::Config {
                file: file.clone(),
                error,
            })?;
            (config, file)
        }
        None => (default_config(), "(built-in default)".to_string()),
    };
    if let Some(t) = std::env::var("STREAMMACHINE_ADMIN_TOKEN")
        .ok()
        .filter(|t| !t.is_empty())
    {
        config.admin.token = Some(Secret(t));
        config.admin.token_file = None;
    }
    if let Some(t) = std::env::var("STREAMMACHINE_URL_SECRET")
        .ok()
        .filter(|t| !t.is_empty())
    {
        config.listeners.url_secret = Some(Secret(t));
        config.listeners.url_secret_file = None;
    }
    if let Some(t) = std::env::var("STREAMMACHINE_LINK_SECRET")
        .ok()
        .filter(|t| !t.is_empty())
    {
        let link = config.link.get_or_insert_with(Default::default);
        link.secret = Some(Secret(t));
        link.secret_file = None;
    }
    if let Ok(url) = std::env::var("STREAMMACHINE_MASTER_URL") {
        if !url.is_empty() {
            config.master = Some(streammachine_config::MasterConfig { url });
        }
    }
    if let Some(m) = args.mode {
        config.mode = m;
    }
    if let Some(addr) = &args.bind {
        config.listeners.address.clone_from(addr);
        config.sources.address.clone_from(addr);
        config.admin.address.clone_from(addr);
    }
    if let Some(p) = args.listen_port {
        config.listeners.port = p;
    }
    if let Some(p) = args.source_port {
        config.sources.port = p;
    }
    if let Some(p) = args.admin_port {
        config.admin.port = p;
    }
    config
        .validate()
        .map_err(|error| CliError::Config { file, error })?;
    Ok(config)
}

/// Runs the command line; the `streammachine` binary's whole `main`.
pub fn main() -> ExitCode {
    let args = Args::parse();
    crate::telemetry::init(args.log_format);
    match &args.command {
        Some(Command::Run { trigger_file }) => return crate::supervisor::run(trigger_file.clone()),
        Some(c @ (Command::Handoff { .. } | Command::Ready)) => return control_request(&args, c),
        None => {}
    }
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::from(2)
        }
    }
}

fn run(args: Args) -> Result<(), CliError> {
    // Stamped before reading, so a change made while we start is seen later.
    let loaded_stamp = args.config.as_ref().map(stamp);
    let config = load_config(&args)?;
    if args.check_config {
        // Secrets are shown as *** (the file or the environment has them).
        let yaml = config
            .redacted()
            .to_yaml_string()
            .map_err(|error| CliError::Config {
                file: "(effective)".into(),
                error,
            })?;
        print!("{yaml}");
        return Ok(());
    }
    if args.config.is_none() && std::env::var_os("STREAMMACHINE_SOURCE_PASSWORD").is_none() {
        tracing::warn!(
            "no --config: serving stream \"test\" with the DEVELOPMENT source password {DEV_SOURCE_PASSWORD:?}; \
             set STREAMMACHINE_SOURCE_PASSWORD or use a config file before exposing this server"
        );
    }
    // Each listener is a socket: lift the soft descriptor limit to the hard one.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => tracing::debug!(limit = n, "open file limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open file limit"),
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(CliError::Runtime)?;
    // A slave's streams come from its master, not from the file.
    let watch = (config.mode != Mode::Slave)
        .then(|| args.config.clone())
        .flatten()
        .map(|p| (p, loaded_stamp.flatten()));
    runtime.block_on(serve(
        config,
        args.handoff_from.clone(),
        args.control_socket.clone(),
        watch,
    ))
}

/// Sends one command to a running server's control socket and prints its answer.
fn control_request(args: &Args, command: &Command) -> ExitCode {
    use std::io::{BufRead, Write};
    let Some(path) = &args.control_socket else {
        eprintln!("streammachine: --control-socket (or STREAMMACHINE_CONTROL_SOCKET) is required");
        return ExitCode::from(2);
    };
    let line = match command {
        Command::Handoff {
            to: Some(t),
            wait,
            fallback_drain,
            ..
        } => format!("HANDOFF-WAIT {wait} {fallback_drain} {}\n", t.display()),
        Command::Handoff {
            drain: true,
            seconds,
            ..
        } => format!("DRAIN {seconds}\n"),
        Command::Handoff { .. } => {
            eprintln!("streammachine handoff: give --to <socket> or --drain");
            return ExitCode::from(2);
        }
        Command::Ready => "READY\n".to_string(),
        Command::Run { .. } => return ExitCode::from(2),
    };
    let result = (|| -> std::io::Result<String> {
        let mut s = std::os::unix::net::UnixStream::connect(path)?;
        s.write_all(line.as_bytes())?;
        let mut reply = String::new();
        std::io::BufReader::new(s).read_line(&mut reply)?;
        Ok(reply)
    })();
    match result {
        Ok(reply) => {
            println!("{}", reply.trim());
            if reply.starts_with("OK") {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("streammachine handoff: {}: {e}", path.display());
            ExitCode::from(1)
        }
    }
}

/// Applies changes to the config file live (a Kubernetes ConfigMap is
/// updated in place): streams and mounts are created, changed and removed
/// like through the admin API; an invalid file is reported and ignored; a
/// change that needs a restart (ports, mode) is reported.
type FileStamp = Option<(Option<std::time::SystemTime>, u64)>;

fn stamp(p: &PathBuf) -> FileStamp {
    std::fs::metadata(p)
        .ok()
        .map(|m| (m.modified().ok(), m.len()))
}

/// `loaded` is the file's stamp when it was read at start, so a change made
/// right after the start is not missed.
async fn watch_config(server: std::sync::Arc<Server>, path: PathBuf, loaded: FileStamp) {
    let mut last = loaded;
    let mut shutdown = server.shutdown_signal();
    loop {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = shutdown.changed() => return,
        }
        let now = stamp(&path);
        if now == last {
            continue;
        }
        last = now;
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(file = %path.display(), error = %e, "config file changed but cannot be read; keeping the running configuration");
                continue;
            }
        };
        let new = match Config::from_yaml_str(&text).and_then(|c| c.validate().map(|()| c)) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(file = %path.display(), error = %e, "config file changed but is invalid; keeping the running configuration");
                continue;
            }
        };
        let running = server.effective_config();
        if new.listeners.port != running.listeners.port
            || new.sources.port != running.sources.port
            || new.admin.port != running.admin.port
            || new.mode != running.mode
        {
            tracing::warn!(file = %path.display(), "config file changes ports or mode: that takes a restart; applying the streams and mounts only");
        }
        // Not in the middle of an API change.
        let guard = server.journal().begin().await;
        let (mounts, streams) = guard.overlay().merge(new.source_mounts, new.streams);
        match server.apply(mounts, streams) {
            Ok(a) => {
                tracing::info!(file = %path.display(), created = ?a.created, updated = ?a.updated, removed = ?a.removed, "config file change applied")
            }
            Err(e) => {
                tracing::error!(file = %path.display(), error = %e, "config file change not applied; keeping the running configuration")
            }
        }
    }
}

async fn serve(
    mut config: Config,
    handoff_from: Option<PathBuf>,
    control: Option<PathBuf>,
    config_file: Option<(PathBuf, FileStamp)>,
) -> Result<(), CliError> {
    let store = match &config.redis {
        Some(r) => {
            let store = crate::store::Store::new(&r.url, &r.prefix);
            let overlay = load_overlay(&store).await?;
            let (mounts, streams) = overlay.merge(
                std::mem::take(&mut config.source_mounts),
                std::mem::take(&mut config.streams),
            );
            config.source_mounts = mounts;
            config.streams = streams;
            Some((store, overlay))
        }
        None => None,
    };
    // Before anything is served: a successor that cannot take over exits.
    let offer = match &handoff_from {
        Some(path) => Some(
            crate::handoff::offer(path).map_err(|error| CliError::Handoff {
                path: path.display().to_string(),
                error,
            })?,
        ),
        None => None,
    };
    let server = Server::new(config)?;
    if let Some((store, overlay)) = store {
        server.use_store(store, overlay);
    }
    server.set_reuse_port(handoff_from.is_some() || control.is_some());
    if handoff_from.is_some() && server.config().mode != Mode::Slave {
        // Until the predecessor's buffers are here, our own are not the
        // stream: hold new listeners and sources in the kernel's queue.
        server.await_handoff(HANDOFF_WAIT);
    }
    let bound = server.bind().await?;
    let (l, s, a) = bound.addrs();
    let fmt = |a: Option<std::net::SocketAddr>| a.map(|a| a.to_string()).unwrap_or_default();
    tracing::info!(
        listeners = %fmt(l),
        sources = %fmt(s),
        admin = %fmt(a),
        streams = server.streams().len(),
        "listening"
    );
    let task = tokio::spawn(std::sync::Arc::clone(&server).serve(bound));
    if let Some((path, loaded)) = config_file {
        tokio::spawn(watch_config(std::sync::Arc::clone(&server), path, loaded));
    }
    if let Some(path) = control {
        tokio::spawn(crate::handoff::control_loop(
            std::sync::Arc::clone(&server) as _,
            path,
            handoff_from.is_some(),
        ));
    }
    if let Some(offer) = offer {
        tokio::spawn(crate::handoff::receive_loop(
            std::sync::Arc::clone(&server) as _,
            offer,
        ));
    }
    let mut handed_off = server.handed_off_signal();
    tokio::select! {
        () = wait_for_signal() => {}
        _ = handed_off.wait_for(|h| *h) => {
            // Everything is the successor's now (buffers included): no dump.
            tracing::info!("handed off; exiting");
            return Ok(());
        }
    }
    tracing::info!("shutting down");
    server.shutdown();
    server.dump_all().await;
    let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    Ok(())
}

/// Reads the API's stored changes, retrying for a while: in a cluster Redis
/// may start after us. Starting without them would serve a wrong config.
async fn load_overlay(store: &crate::store::Store) -> Result<crate::store::Overlay, CliError> {
    let mut attempt = 0;
    loop {
        match store.load().await {
            Ok(o) => {
                tracing::info!(
                    streams = o.streams.len(),
                    mounts = o.source_mounts.len(),
                    removed = o.deleted_streams.len() + o.deleted_source_mounts.len(),
                    "configuration changes loaded from redis"
                );
                return Ok(o);
            }
            Err(e) if attempt < 9 => {
                if attempt == 0 {
                    tracing::warn!(error = %e, "cannot load the configuration from redis yet; retrying for 10 s");
                }
                attempt += 1;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => return Err(CliError::Store(e)),
        }
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_valid_and_standalone() {
        let c = default_config();
        c.validate().unwrap();
        assert_eq!(c.mode, Mode::Standalone);
        assert_eq!(c.streams[0].key, "test");
        assert!(
            c.streams[0].name.is_none(),
            "a configured name would hide the encoder's ice-name"
        );
    }

    #[test]
    fn flags_override_the_file() {
        let dir = std::env::temp_dir().join(format!("sm-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("c.yaml");
        std::fs::write(
            &f,
            "listeners: {port: 9000}\nstreams: [{key: a, password: p}]\n",
        )
        .unwrap();
        let args = Args::parse_from([
            "streammachine",
            "--config",
            f.to_str().unwrap(),
            "--listen-port",
            "0",
            "--bind",
            "127.0.0.1",
        ]);
        let c = load_config(&args).unwrap();
        assert_eq!(c.listeners.port, 0);
        assert_eq!(c.admin.address, "127.0.0.1");
        std::fs::write(&f, "streams: [{key: a, rewindSecs: 1}]\n").unwrap();
        let err = load_config(&Args::parse_from([
            "streammachine",
            "-c",
            f.to_str().unwrap(),
        ]))
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("streams[0].rewindSecs: unknown field"),
            "{err}"
        );
    }
}
