//! The slave's side of the link: connect to the master's admin port, say what
//! it holds, take the configuration and the chunks, report back; reconnect
//! with backoff when the link breaks. Listeners keep playing from the
//! slave's own buffer while the master is away.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::frame::{self, Frame, Hello};
use super::LinkError;

/// No frame from the master for this long: the link is dead.
const MASTER_TIMEOUT: Duration = Duration::from_secs(20);
/// Stats to the master this often.
const STATS_EVERY: Duration = Duration::from_secs(5);

/// `host:port` of an `http://host:port[/…]` URL.
pub fn authority(url: &str) -> Result<String, LinkError> {
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        LinkError::Protocol(format!("master.url {url:?}: expected http://host:port"))
    })?;
    let host = rest.split('/').next().unwrap_or("");
    if host.is_empty() {
        return Err(LinkError::Protocol(format!("master.url {url:?}: no host")));
    }
    Ok(if host.contains(':') {
        host.to_string()
    } else {
        format!("{host}:80")
    })
}

/// What a slave's side of the link needs from the server, and no more: the
/// streams, the replica (the master's config and its catch-up), the link
/// secret, the shutdown signal. The server implements it; nothing here names
/// the server.
pub trait SlaveHost: Send + Sync + 'static {
    /// The secret the master expects.
    fn link_secret(&self) -> Option<&streammachine_config::Secret>;
    /// The stream in service under `key`.
    fn stream(&self, key: &str) -> Option<Arc<crate::stream::Stream>>;
    /// Every stream in service.
    fn streams(&self) -> Vec<Arc<crate::stream::Stream>>;
    /// Makes the master's streams the ones served here.
    fn apply_replica(&self, config: super::frame::LinkConfig);
    /// Something arrived from the master (for the catch-up).
    fn replica_activity(&self);
    /// Turns true when the server shuts down.
    fn shutdown_signal(&self) -> tokio::sync::watch::Receiver<bool>;
    /// The server's metrics.
    fn metrics(&self) -> &crate::metrics::Metrics;
}

/// Keeps the link to the master up until shutdown.
pub async fn run(server: Arc<dyn SlaveHost>, url: String, id: String) {
    let mut shutdown = server.shutdown_signal();
    let mut backoff =
        crate::retry::Backoff::new(Duration::from_millis(500), Duration::from_secs(5));
    let mut failing = false;
    loop {
        let (was_connected, error) = tokio::select! {
            r = session(&server, &url, &id) => r,
            _ = shutdown.changed() => return,
        };
        server.metrics().link_connected.set(0);
        if was_connected {
            tracing::warn!(master = %url, error = %error, "link to the master lost; reconnecting (listeners keep playing from the buffer)");
            failing = false;
            backoff.reset();
        } else if !failing {
            tracing::warn!(master = %url, error = %error, "cannot connect to the master; retrying (logged once until it works)");
            failing = true;
        }
        tokio::select! {
            () = tokio::time::sleep(backoff.next_delay()) => {}
            _ = shutdown.changed() => return,
        }
    }
}

async fn connect(server: &dyn SlaveHost, url: &str) -> Result<(TcpStream, BytesMut), LinkError> {
    let addr = authority(url)?;
    let secret = server
        .link_secret()
        .ok_or_else(|| LinkError::Protocol("no link secret configured".into()))?;
    let mut sock = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(&addr))
        .await
        .map_err(|_| LinkError::Timeout(5))??;
    let _ = sock.set_nodelay(true);
    let req = format!(
        "GET /link HTTP/1.1\r\nHost: {addr}\r\nUpgrade: streammachine-link/1\r\nConnection: Upgrade\r\nAuthorization: Bearer {}\r\n\r\n",
        secret.0
    );
    sock.write_all(req.as_bytes()).await?;
    // The response head, bounded.
    let mut buf = BytesMut::with_capacity(1024);
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 16 * 1024 {
            return Err(LinkError::Protocol("response head too large".into()));
        }
        let n = tokio::time::timeout(Duration::from_secs(10), sock.read_buf(&mut buf))
            .await
            .map_err(|_| LinkError::Timeout(10))??;
        if n == 0 {
            return Err(LinkError::Closed);
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    if !head.starts_with("HTTP/1.1 101") {
        let mut rest = buf[head_end..].to_vec();
        let _ = tokio::time::timeout(Duration::from_secs(2), sock.read_to_end(&mut rest)).await;
        let status = head.lines().next().unwrap_or("").to_string();
        return Err(LinkError::Refused(format!(
            "{status}: {}",
            String::from_utf8_lossy(&rest).trim()
        )));
    }
    let _ = buf.split_to(head_end);
    Ok((sock, buf))
}

/// One connection: returns whether it got connected, and why it ended.
async fn session(server: &Arc<dyn SlaveHost>, url: &str, id: &str) -> (bool, LinkError) {
    let (sock, buf) = match connect(&**server, url).await {
        Ok(c) => c,
        Err(e) => return (false, e),
    };
    match connected(server, url, id, sock, buf).await {
        Ok(()) => (true, LinkError::Closed),
        Err(e) => (true, e),
    }
}

async fn connected(
    server: &Arc<dyn SlaveHost>,
    url: &str,
    id: &str,
    sock: TcpStream,
    buf: BytesMut,
) -> Result<(), LinkError> {
    let next_seq: BTreeMap<String, u64> = server
        .streams()
        .iter()
        .filter_map(|s| {
            let b = s.read_buffer();
            (!b.is_empty()).then(|| (s.key().to_string(), b.next_seq()))
        })
        .collect();
    let last: BTreeMap<String, frame::ChunkId> = server
        .streams()
        .iter()
        .filter_map(|s| {
            let b = s.read_buffer();
            b.last()
                .map(|c| (s.key().to_string(), frame::ChunkId::of(c)))
        })
        .collect();
    let (rd, mut wr) = sock.into_split();
    let mut frames = frame::reader(rd, buf);
    wr.write_all(&frame::hello(&Hello {
        version: frame::VERSION,
        id: id.to_string(),
        last,
        next_seq,
    }))
    .await?;
    tracing::info!(master = %url, "connected to the master");
    server.metrics().link_connected.set(1);
    let received = server.metrics().link_received_chunks.clone();
    let mut stats_timer = tokio::time::interval(STATS_EVERY);
    loop {
        tokio::select! {
            f = tokio::time::timeout(MASTER_TIMEOUT, frame::next(&mut frames)) => {
                let f = f.map_err(|_| LinkError::Timeout(MASTER_TIMEOUT.as_secs()))??;
                match f {
                    Frame::Config(c) => {
                        server.replica_activity();
                        let n = c.streams.len();
                        // New streams restore their dumps and the config is
                        // written to disk: file I/O, off the runtime's workers.
                        let host = Arc::clone(server);
                        if let Err(e) = tokio::task::spawn_blocking(move || host.apply_replica(c)).await {
                            tracing::error!(error = %e, "applying the master's configuration failed");
                        } else {
                            tracing::info!(streams = n, "configuration from the master applied");
                        }
                    }
                    Frame::Chunk(key, record) => {
                        server.replica_activity();
                        if let Some(s) = server.stream(&key) {
                            let chunk = crate::persist::rewind::from_records(vec![record]);
                            for c in chunk {
                                s.push_replica(c);
                            }
                            received.inc();
                        }
                    }
                    Frame::Reset(r) => {
                        if let Some(s) = server.stream(&r.stream) {
                            tracing::info!(stream = %r.stream, next_seq = r.next_seq, "master reset the stream: re-syncing");
                            s.reset_to(r.next_seq);
                        }
                    }
                    Frame::Heartbeat => {}
                    Frame::Want(w) => send_back(&**server, &mut wr, &w).await?,
                    other => return Err(LinkError::Protocol(format!("unexpected frame from the master: {other:?}"))),
                }
            }
            _ = stats_timer.tick() => {
                let mut s = frame::Stats::default();
                for st in server.streams() {
                    s.listeners.insert(st.key().to_string(), st.listener_count() as u64);
                    s.next_seq.insert(st.key().to_string(), st.read_buffer().next_seq());
                }
                wr.write_all(&frame::stats(&s)).await?;
            }
        }
    }
}

/// Sends the master the chunks it asks for (it restarted with less than we hold).
async fn send_back(
    server: &dyn SlaveHost,
    wr: &mut tokio::net::tcp::OwnedWriteHalf,
    w: &frame::Want,
) -> Result<(), LinkError> {
    let Some(stream) = server.stream(&w.stream) else {
        return Ok(());
    };
    let chunks: Vec<_> = {
        let b = stream.read_buffer();
        let from = w.from_seq.max(b.first_seq());
        b.range(from..b.next_seq()).cloned().collect()
    };
    tracing::info!(stream = %w.stream, chunks = chunks.len(), "sending the master back its missing chunks");
    let mut scratch = Vec::with_capacity(256);
    for c in chunks {
        super::write_chunk(wr, &w.stream, &c, &mut scratch).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// A slave whose disk is slow: applying a config takes a second.
    struct SlowDisk {
        secret: streammachine_config::Secret,
        applied: AtomicBool,
        shutdown: tokio::sync::watch::Sender<bool>,
        metrics: crate::metrics::Metrics,
    }

    impl SlaveHost for SlowDisk {
        fn link_secret(&self) -> Option<&streammachine_config::Secret> {
            Some(&self.secret)
        }
        fn stream(&self, _: &str) -> Option<Arc<crate::stream::Stream>> {
            None
        }
        fn streams(&self) -> Vec<Arc<crate::stream::Stream>> {
            Vec::new()
        }
        fn apply_replica(&self, _: super::super::frame::LinkConfig) {
            std::thread::sleep(Duration::from_secs(1));
            self.applied.store(true, Ordering::SeqCst);
        }
        fn replica_activity(&self) {}
        fn shutdown_signal(&self) -> tokio::sync::watch::Receiver<bool> {
            self.shutdown.subscribe()
        }
        fn metrics(&self) -> &crate::metrics::Metrics {
            &self.metrics
        }
    }

    /// Issue 10: the link task restored dumps and wrote the replica config
    /// with blocking file I/O on a runtime worker, stalling the other tasks
    /// there (here the only worker, so it shows every time).
    #[tokio::test(flavor = "current_thread")]
    async fn applying_the_masters_config_does_not_block_the_runtime() {
        let master = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", master.local_addr().unwrap());
        let host = Arc::new(SlowDisk {
            secret: streammachine_config::Secret("s".into()),
            applied: AtomicBool::new(false),
            shutdown: tokio::sync::watch::channel(false).0,
            metrics: crate::metrics::Metrics::new().unwrap(),
        });
        tokio::spawn(async move {
            let (mut sock, _) = master.accept().await.unwrap();
            let mut head = Vec::new();
            while !head.ends_with(b"\r\n\r\n") {
                let mut b = [0u8; 1];
                sock.read_exact(&mut b).await.unwrap();
                head.push(b[0]);
            }
            sock.write_all(b"HTTP/1.1 101 Switching Protocols\r\n\r\n")
                .await
                .unwrap();
            let config = frame::LinkConfig {
                streams: Vec::new(),
                formats: Default::default(),
            };
            sock.write_all(&frame::config(&config)).await.unwrap();
            // Hold the connection until the test ends.
            let mut rest = Vec::new();
            let _ = sock.read_to_end(&mut rest).await;
        });
        let link = tokio::spawn(run(
            Arc::clone(&host) as Arc<dyn SlaveHost>,
            url,
            "slave".into(),
        ));
        // A task beside the link: the longest it waited for its turn.
        let mut worst = Duration::ZERO;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !host.applied.load(Ordering::SeqCst) {
            assert!(tokio::time::Instant::now() < deadline, "never applied");
            let asked = tokio::time::Instant::now();
            tokio::time::sleep(Duration::from_millis(10)).await;
            worst = worst.max(asked.elapsed());
        }
        assert!(
            worst < Duration::from_millis(500),
            "another task waited {worst:?} while the config was applied"
        );
        host.shutdown.send_replace(true);
        link.await.unwrap();
    }

    #[test]
    fn master_urls() {
        assert_eq!(authority("http://master:8002").unwrap(), "master:8002");
        assert_eq!(authority("http://10.0.0.1:8002/").unwrap(), "10.0.0.1:8002");
        assert_eq!(authority("http://master").unwrap(), "master:80");
        assert!(authority("ws://master").is_err());
        assert!(authority("http://").is_err());
    }
}
