//! The control socket: commands (`handoff`, `drain`, `ready`, …) from
//! `streammachine` subcommands and the preStop hook.

use super::*;

/// The control socket, one command a connection:
/// * `HANDOFF <path>` pushes everything to the successor listening at `path`;
/// * `HANDOFF-WAIT <wait s> <drain s> <path>` the same, waiting up to `wait`
///   for a successor to listen there, and draining for `drain` seconds when
///   none does (0: fail);
/// * `DRAIN <seconds>` stops accepting listeners, reports not ready, and
///   waits until the listeners are gone (or the time is up);
/// * `READY` answers `OK` when this server can take listeners: ready (a
///   slave: caught up with its master) and, when it expects a predecessor
///   (`offers_handoff`), listening for its handoff. A Kubernetes exec probe
///   asks this where an HTTP probe on a shared host port could be answered
///   by another process.
pub async fn control_loop(server: Arc<dyn HandoffHost>, path: PathBuf, offers_handoff: bool) {
    let Some(listener) = bind(&path, "cannot open the control socket") else {
        return;
    };
    let mut shutdown = server.shutdown_signal();
    loop {
        let conn = tokio::select! {
            c = listener.accept() => c,
            _ = shutdown.changed() => return,
        };
        let Ok((conn, _)) = conn else { continue };
        let server = Arc::clone(&server);
        tokio::spawn(async move {
            let (rd, mut wr) = conn.into_split();
            let mut line = String::new();
            let mut rd = BufReader::new(rd).take(4096);
            if rd.read_line(&mut line).await.is_err() {
                return;
            }
            let reply = command(&server, line.trim(), offers_handoff).await;
            let _ = wr.write_all(reply.as_bytes()).await;
            let _ = wr.shutdown().await;
        });
    }
}

/// Carries out one control command and gives the reply line.
pub(super) async fn command(
    server: &Arc<dyn HandoffHost>,
    line: &str,
    offers_handoff: bool,
) -> String {
    let (verb, rest) = line.split_once(' ').unwrap_or((line, ""));
    match verb {
        "HANDOFF" => handoff_reply(server, Path::new(rest.trim()), Duration::ZERO, 0).await,
        "HANDOFF-WAIT" => {
            let mut parts = rest.splitn(3, ' ');
            let wait = parts.next().and_then(|w| w.parse().ok());
            let drain = parts.next().and_then(|d| d.parse().ok());
            match (wait, drain, parts.next()) {
                (Some(w), Some(d), Some(p)) => {
                    handoff_reply(server, Path::new(p.trim()), Duration::from_secs(w), d).await
                }
                _ => "ERR usage: HANDOFF-WAIT <wait seconds> <drain seconds> <path>\n".to_string(),
            }
        }
        "DRAIN" => {
            let secs: u64 = rest.trim().parse().unwrap_or(30);
            let left = server.drain(Duration::from_secs(secs)).await;
            format!("OK drained ({left} listeners left)\n")
        }
        "READY" => {
            if !server.is_ready() {
                "ERR not ready (starting, syncing with the master, draining or stopping)\n".into()
            } else if offers_handoff && server.handoff_offer().is_none() {
                "ERR not listening for a handoff yet\n".into()
            } else {
                "OK ready\n".into()
            }
        }
        _ => "ERR unknown command (HANDOFF <path> | HANDOFF-WAIT <wait> <drain> <path> | DRAIN <seconds> | READY)\n"
            .to_string(),
    }
}

pub(super) async fn handoff_reply(
    server: &Arc<dyn HandoffHost>,
    target: &Path,
    wait: Duration,
    drain: u64,
) -> String {
    match hand_off(server, target, wait).await {
        Ok(s) => format!("OK handed off {s}\n"),
        Err(e @ HandoffError::NoSuccessor { .. }) if drain > 0 => {
            tracing::warn!(error = %e, seconds = drain, "no successor: draining instead");
            let left = server.drain(Duration::from_secs(drain)).await;
            format!("OK {e}; drained instead ({left} listeners left)\n")
        }
        Err(e) => format!("ERR {e}\n"),
    }
}
