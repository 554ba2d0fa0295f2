//! `streammachine-operator`: runs the SourceMount and Stream controllers.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use streammachine_operator::build::Settings;
use streammachine_operator::http::Health;
use streammachine_operator::leader::Election;
use streammachine_operator::lifecycle::{self, Options};
use streammachine_operator::metrics::Metrics;
use streammachine_operator::status::HttpMasterStatus;

/// Log output format.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log pipelines.
    Json,
}

/// The StreamMachine operator: SourceMount and Stream resources become
/// masters, slaves and their Services.
#[derive(Debug, Parser)]
#[command(name = "streammachine-operator", version)]
struct Args {
    /// Streamer image for SourceMounts that name none.
    #[arg(long, env = "STREAMMACHINE_DEFAULT_IMAGE", default_value = concat!("streammachine:", env!("CARGO_PKG_VERSION")))]
    default_image: String,
    /// Watch only this namespace (default: all).
    #[arg(long, env = "WATCH_NAMESPACE")]
    namespace: Option<String>,
    /// Log format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Address of `/metrics`, `/healthz` and `/readyz`.
    #[arg(long, default_value = "0.0.0.0:8080")]
    http_address: SocketAddr,
    /// Seconds between status polls of each master.
    #[arg(long, default_value_t = 30)]
    poll_interval_seconds: u64,
    /// Run the controllers only while holding a Lease (for more than one replica).
    #[arg(long)]
    leader_election: bool,
    /// Namespace of the Lease (the operator's own).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// Name of the Lease (one per installation: the chart sets it from the release).
    #[arg(long, env = "LEASE_NAME", default_value = "streammachine-operator")]
    lease_name: String,
    /// This replica's identity in the Lease (default: the pod name or host name).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
}

fn init_tracing(format: LogFormat) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour only on a terminal: a log file or collector gets plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        if let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            tokio::select! {
                _ = ctrl_c => {},
                _ = term.recv() => {},
            }
            return;
        }
    }
    let _ = ctrl_c.await;
}

async fn run(args: Args) -> Result<(), String> {
    let identity = args
        .identity
        .clone()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| format!("streammachine-operator-{}", std::process::id()));
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        namespace = args.namespace.as_deref().unwrap_or("(all)"),
        leader_election = args.leader_election,
        lease = %format!("{}/{}", args.lease_namespace, args.lease_name),
        %identity,
        http = %args.http_address,
        "streammachine-operator starting"
    );
    let metrics = Arc::new(Metrics::new().map_err(|e| format!("metrics: {e}"))?);
    let health = Health::default();
    let listener = tokio::net::TcpListener::bind(args.http_address)
        .await
        .map_err(|e| format!("{}: {e}", args.http_address))?;
    tokio::spawn(streammachine_operator::http::serve(
        listener,
        metrics.clone(),
        health.clone(),
    ));
    let client = kube::Client::try_default()
        .await
        .map_err(|e| format!("kubernetes client: {e}"))?;
    let election = args.leader_election.then(|| {
        Election::new(
            client.clone(),
            &args.lease_namespace,
            &args.lease_name,
            &identity,
            Duration::from_secs(15),
        )
    });
    let options = Options {
        namespace: args.namespace.clone(),
        settings: Settings {
            default_image: args.default_image.clone(),
        },
        poll_interval: Duration::from_secs(args.poll_interval_seconds.max(5)),
        election,
        master_status: Arc::new(HttpMasterStatus::new(Duration::from_secs(5))),
    };
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let operator = tokio::spawn(lifecycle::run(client, options, metrics, health, stop_rx));
    shutdown_signal().await;
    tracing::info!("shutting down");
    let _ = stop.send(true);
    operator.await.map_err(|e| format!("operator task: {e}"))
}

fn main() -> ExitCode {
    let args = Args::parse();
    init_tracing(args.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}
