//! The ports: binding them (with the socket options listeners need) and the
//! accept loop every port runs, paused during a handoff.

use super::*;

/// The three bound ports.
#[derive(Debug)]
pub struct Bound {
    /// Listener port (not on a master).
    pub listeners: Option<TcpListener>,
    /// Source port (not on a slave).
    pub sources: Option<TcpListener>,
    /// Admin port.
    pub admin: TcpListener,
}

impl Bound {
    /// The actual addresses (ports chosen by the OS when 0 was asked for).
    pub fn addrs(&self) -> (Option<SocketAddr>, Option<SocketAddr>, Option<SocketAddr>) {
        (
            self.listeners.as_ref().and_then(|l| l.local_addr().ok()),
            self.sources.as_ref().and_then(|l| l.local_addr().ok()),
            self.admin.local_addr().ok(),
        )
    }
}

/// Binds a listening socket. Accepted connections inherit its `SO_SNDBUF`.
pub(super) fn bind(
    what: &'static str,
    address: &str,
    port: u16,
    backlog: u32,
    send_buffer: u32,
    reuse_port: bool,
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
    if reuse_port {
        socket.set_reuseport(true).map_err(err)?;
    }
    if send_buffer > 0 {
        socket.set_send_buffer_size(send_buffer).map_err(err)?;
    }
    socket.bind(addr).map_err(err)?;
    if let Some(cap) = kernel_backlog_cap().filter(|&cap| cap < backlog) {
        // The kernel silently cuts the backlog: a reconnect storm would then
        // meet a short queue without anyone knowing why.
        tracing::warn!(port = what, backlog, somaxconn = cap, "the kernel caps the listen backlog at net.core.somaxconn; raise it (sysctl -w net.core.somaxconn={backlog}) for reconnect storms");
    }
    socket.listen(backlog).map_err(err)
}

/// `net.core.somaxconn`, the kernel's cap on a listen backlog (Linux).
pub(super) fn kernel_backlog_cap() -> Option<u32> {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Accepts on `listener` until shutdown, paused while a handoff runs; each
/// connection takes a ticket from the port's budget (`outside`: connections
/// that outlive their handler, the audio listeners) or is refused at once.
pub(super) async fn accept_loop<F, Fut>(
    server: Arc<Server>,
    listener: Arc<TcpListener>,
    what: &'static str,
    handler: F,
) where
    F: Fn(Arc<Server>, TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let budget = match what {
        "listener" => server.budgets.listeners.clone(),
        "source" => server.budgets.sources.clone(),
        _ => server.budgets.admin.clone(),
    };
    let refused = server
        .metrics
        .connections_refused
        .with_label_values(&[what]);
    let mut shutdown = server.shutdown_signal();
    let mut accepting = server.lifecycle.accepting();
    let mut last_error_log = None::<tokio::time::Instant>;
    loop {
        // Paused during a handoff: connections wait in the kernel's queue,
        // which the successor inherits.
        let open = *accepting.borrow_and_update()
            && !(what != "admin" && server.lifecycle.is_awaiting_handoff());
        if !open {
            tokio::select! {
                _ = accepting.changed() => continue,
                _ = shutdown.changed() => return,
                () = tokio::time::sleep(Duration::from_millis(500)) => continue,
            }
        }
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.changed() => return,
            _ = accepting.changed() => continue,
        };
        match accepted {
            Ok((sock, peer)) => {
                let _ = sock.set_nodelay(true);
                let outside = if what == "listener" {
                    server
                        .registry
                        .streams()
                        .iter()
                        .map(|s| s.listener_count())
                        .sum()
                } else {
                    0
                };
                match budget.take(outside) {
                    Ok(ticket) => {
                        let conn = handler(Arc::clone(&server), sock, peer);
                        tokio::spawn(async move {
                            conn.await;
                            drop(ticket);
                        });
                    }
                    Err(n) => {
                        refused.inc();
                        if n.is_power_of_two() {
                            tracing::warn!(
                                port = what,
                                cap = budget.cap(),
                                refused = n,
                                "connection refused: the port is at its limit"
                            );
                        }
                        tokio::spawn(refuse(sock, what, budget.cap()));
                    }
                }
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

/// Answers a connection beyond its port's budget: `503` with the reason,
/// without waiting on the client for more than a second. What the client
/// sent first is read (and dropped), so closing does not reset the
/// connection before the client has read the answer.
async fn refuse(mut sock: TcpStream, what: &'static str, cap: usize) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut head = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_millis(200), sock.read(&mut head)).await;
    let body = format!("the {what} port is at its limit of {cap} connections: retry shortly\n");
    let reply = format!(
        "HTTP/1.0 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\nRetry-After: 5\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        sock.write_all(reply.as_bytes()).await?;
        sock.shutdown().await
    })
    .await;
}
