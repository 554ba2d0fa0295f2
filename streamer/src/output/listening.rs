//! A listener streaming: the task that lives for hours after the request
//! (output/listener.rs), its exact state when parked for a handoff, and
//! resuming or adopting one.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

use super::live::{Ended, Sender};
use super::OutputHost;

/// A listener streaming: the task that lives for hours, written as a plain
/// struct future so its size is exactly its fields (an `async fn` would keep
/// its arguments twice).
pub struct Listening {
    server: Arc<dyn OutputHost>,
    peer: SocketAddr,
    output: &'static str,
    gauge: prometheus::IntGauge,
    /// Taken out when the listener is parked for a handoff.
    conn: Option<Conn>,
}

/// What a listener hands over when parked: the connection and its exact state.
#[derive(Debug)]
pub struct Conn {
    /// The client's connection.
    pub sock: TcpStream,
    /// Its send state (position, ICY phase, lag allowance).
    pub sender: Sender,
    _count: crate::stream::ListenerCount,
    session: Option<Box<crate::analytics::Session>>,
    /// Its `listenerAuth` ticket (for `listener_remove`) and the timer of
    /// its time limit, if it has one (wakes it even while no audio comes).
    pub auth: Option<Box<super::auth::Admitted>>,
    /// Up to when its time is in `streammachine_listening_seconds_total`.
    counted_to: Instant,
}

/// How often a listener's time is added to the listening-seconds counter.
const COUNT_EVERY: Duration = Duration::from_secs(10);

impl Conn {
    /// Its roster entry.
    pub fn info(&self) -> &Arc<crate::roster::ListenerInfo> {
        self._count.info()
    }

    /// Its analytics session's state, to hand over.
    pub fn session_state(&self) -> Option<crate::analytics::SessionState> {
        self.session.as_ref().map(|s| s.state())
    }

    /// Adds the time since the last count to the listening-seconds counter
    /// (always, with or without analytics events); `force` at the end.
    fn count_listening(&mut self, server: &dyn OutputHost, output: &str, force: bool) {
        let elapsed = self.counted_to.elapsed();
        if !force && elapsed < COUNT_EVERY {
            return;
        }
        self.counted_to = Instant::now();
        server
            .metrics()
            .listening_seconds
            .with_label_values(&[self.sender.stream().key(), output])
            .inc_by(elapsed.as_secs_f64());
    }
}

/// A listener paused for a handoff.
#[derive(Debug)]
pub struct ParkedListener {
    /// Its address.
    pub peer: SocketAddr,
    /// `raw`, `icy` or `pump`.
    pub output: &'static str,
    /// The connection and state.
    pub conn: Conn,
}

impl Listening {
    /// Attaches its analytics session and its `listenerAuth` ticket.
    pub(super) fn attach(
        &mut self,
        session: Option<Box<crate::analytics::Session>>,
        auth: Option<Box<super::auth::Admitted>>,
    ) {
        if let Some(c) = self.conn.as_mut() {
            c.session = session;
            c.auth = auth;
        }
    }
}

impl std::fmt::Debug for Listening {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Listening({})", self.peer)
    }
}

impl std::future::Future for Listening {
    type Output = ();

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        let this = self.get_mut();
        let Some(conn) = this.conn.as_mut() else {
            return std::task::Poll::Ready(());
        };
        if this.server.is_parking() {
            // A handoff is collecting every listener: stop at this exact byte.
            if let Some(mut conn) = this.conn.take() {
                conn.count_listening(&*this.server, this.output, true);
                this.gauge.dec();
                this.server.park_listener(ParkedListener {
                    peer: this.peer,
                    output: this.output,
                    conn,
                });
            }
            return std::task::Poll::Ready(());
        }
        // A move (`/admin/moveclients`) happens between chunks, so the
        // client never gets part of a frame; pumps keep their span.
        if conn.sender.end.is_none() && conn.sender.pos.offset == 0 {
            let to = conn._count.info().take_move();
            let to = to.and_then(|key| this.server.stream(&key));
            let moved = to.and_then(|to| {
                super::control::move_to(
                    &*this.server,
                    &mut conn.sender,
                    &mut conn._count,
                    this.output,
                    to,
                )
            });
            if let Some(gauge) = moved {
                this.gauge.dec();
                this.gauge = gauge;
            }
        }
        let poll = if conn._count.is_kicked() {
            std::task::Poll::Ready(Ended::Kicked)
        } else if conn.auth.as_mut().is_some_and(|a| a.poll_limit(cx)) {
            std::task::Poll::Ready(Ended::TimeLimit)
        } else {
            conn.sender.poll_run(&mut conn.sock, cx)
        };
        let ended = match poll {
            std::task::Poll::Ready(e) => e,
            std::task::Poll::Pending => {
                // Woken at least once a chunk while audio flows: time enough
                // for the periodic count and listen event, without a timer
                // per listener.
                conn.count_listening(&*this.server, this.output, false);
                if let Some(s) = conn.session.as_mut() {
                    let (bytes, audio) = (conn.sender.bytes, conn.sender.audio_micros);
                    this.server
                        .analytics()
                        .listen(s, bytes, audio, conn.sender.position(), false);
                }
                return std::task::Poll::Pending;
            }
        };
        if matches!(ended, Ended::Shutdown) && this.server.is_parking() {
            // Woken for the handoff while waiting: park on the next poll.
            cx.waker().wake_by_ref();
            return std::task::Poll::Pending;
        }
        this.gauge.dec();
        conn.count_listening(&*this.server, this.output, true);
        if let Some(a) = conn.auth.take() {
            this.server.listener_auth().remove(a.ticket);
        }
        if let Some(s) = conn.session.take() {
            let (bytes, audio) = (conn.sender.bytes, conn.sender.audio_micros);
            this.server
                .analytics()
                .end(s, bytes, audio, conn.sender.position(), ended.reason());
        }
        let stream = conn.sender.stream();
        this.server
            .metrics()
            .listener_disconnections
            .with_label_values(&[stream.key(), ended.reason()])
            .inc();
        let (peer, output) = (this.peer, this.output);
        match &ended {
            Ended::FellBehind | Ended::TooSlow { .. } | Ended::Kicked | Ended::TimeLimit => {
                tracing::info!(%peer, stream = %stream.key(), output, reason = %ended, "listener disconnected")
            }
            _ => {
                tracing::debug!(%peer, stream = %stream.key(), output, reason = %ended, "listener left")
            }
        }
        // Dropping the task drops the socket, which closes it (FIN after the
        // last byte of a pump).
        std::task::Poll::Ready(())
    }
}

/// The streaming task of a listener that starts now.
pub(super) fn listen(
    server: Arc<dyn OutputHost>,
    sock: TcpStream,
    peer: SocketAddr,
    sender: Sender,
    output: &'static str,
    gauge: prometheus::IntGauge,
    count: crate::stream::ListenerCount,
) -> Listening {
    Listening {
        server,
        peer,
        output,
        gauge,
        conn: Some(Conn {
            sock,
            sender,
            _count: count,
            session: None,
            auth: None,
            counted_to: Instant::now(),
        }),
    }
}

/// Starts (again) a listener from a parked one: after a failed handoff in the
/// old process, or adopted in the successor. Counts it in.
pub fn resume(server: &Arc<dyn OutputHost>, parked: ParkedListener) {
    let stream = parked.conn.sender.stream();
    let gauge = server
        .metrics()
        .listeners
        .with_label_values(&[stream.key(), parked.output]);
    gauge.inc();
    tokio::spawn(Listening {
        server: Arc::clone(server),
        peer: parked.peer,
        output: parked.output,
        gauge,
        conn: Some(parked.conn),
    });
}

/// What a predecessor knew about a listener besides its send state.
#[derive(Debug)]
pub struct Carried {
    /// Its roster entry (id, User-Agent, connection time).
    pub who: crate::roster::Who,
    /// Its analytics session.
    pub session: Option<Box<crate::analytics::Session>>,
    /// Its `listenerAuth` ticket.
    pub auth: Option<super::auth::Ticket>,
}

/// Builds a parked listener from state received from a predecessor.
pub fn adopted(
    sock: TcpStream,
    peer: SocketAddr,
    sender: Sender,
    carried: Carried,
) -> ParkedListener {
    let output = carried.who.output;
    let count = sender.stream().listener_joined(carried.who);
    ParkedListener {
        peer,
        output,
        conn: Conn {
            sock,
            sender,
            _count: count,
            session: carried.session,
            auth: carried
                .auth
                .map(|t| Box::new(super::auth::Admitted::new(t))),
            counted_to: Instant::now(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::icy::IcyWriter;
    use crate::server::Server;

    /// A streaming listener's whole task state is the `Listening` struct: keep
    /// it small, it is most of the memory a listener costs (sm-bench measures
    /// the total per listener).
    #[tokio::test]
    async fn a_listening_task_stays_small() {
        let cfg = streammachine_config::Config::from_yaml_str("streams: [{key: a, password: p}]")
            .unwrap();
        let server = Server::new(cfg).unwrap();
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = l.local_addr().unwrap();
        let c = TcpStream::connect(a).await.unwrap();
        let host = server.as_output();
        let stream = host.stream("a").unwrap();
        let m = host.metrics();
        let sent = m.listener_sent_bytes.with_label_values(&["a", "raw"]);
        let icy = Some(IcyWriter::new(16000));
        let sender = Sender::new(Arc::clone(&stream), Default::default(), None, icy, 0, sent);
        let gauge = m.listeners.with_label_values(&["a", "raw"]);
        let task = listen(
            Arc::clone(&server) as Arc<dyn OutputHost>,
            c,
            a,
            sender,
            "raw",
            gauge,
            stream.listener_joined(crate::roster::Who::new(a.ip(), None, "raw")),
        );
        let size = std::mem::size_of_val(&task);
        // 328 since the listenerAuth ticket's pointer (issue 12).
        assert!(size <= 328, "a listener's task state grew to {size} bytes");
    }
}
