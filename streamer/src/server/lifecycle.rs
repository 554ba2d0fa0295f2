//! Where the process is in its life: ready, draining, shutting down, and a
//! handoff's states (waiting for a predecessor, collecting connections into
//! the parking lot, handed off), with the listening sockets a handoff passes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::handoff::Parked;
use crate::sync::MutexExt;

/// The process's states; each changes through one method.
#[derive(Debug)]
pub(super) struct Lifecycle {
    shutdown: watch::Sender<bool>,
    ready: AtomicBool,
    draining: AtomicBool,
    accepting: watch::Sender<bool>,
    /// A successor waiting for its predecessor's handoff: its listener and
    /// source ports do not accept yet (connections wait in the kernel's queue),
    /// so nobody lands on buffers the handoff is about to replace.
    awaiting_handoff: AtomicBool,
    parking: watch::Sender<bool>,
    parked: Mutex<Parked>,
    listening: Mutex<Vec<(&'static str, Arc<TcpListener>)>>,
    handed_off: watch::Sender<bool>,
    /// The handoff socket this server offers (`--handoff-from`), by device
    /// and inode once bound: a handoff to it would be to itself.
    handoff_offer: Mutex<Option<(u64, u64)>>,
    reuse_port: AtomicBool,
}

impl Default for Lifecycle {
    fn default() -> Lifecycle {
        Lifecycle {
            shutdown: watch::channel(false).0,
            ready: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            accepting: watch::channel(true).0,
            awaiting_handoff: AtomicBool::new(false),
            parking: watch::channel(false).0,
            parked: Mutex::new(Parked::default()),
            listening: Mutex::new(Vec::new()),
            handed_off: watch::channel(false).0,
            handoff_offer: Mutex::new(None),
            reuse_port: AtomicBool::new(false),
        }
    }
}

impl Lifecycle {
    /// Serving: the ports are bound and their loops run.
    pub(super) fn set_ready(&self) {
        self.ready.store(true, Ordering::Relaxed);
    }

    /// Serving, and neither draining nor shutting down.
    pub(super) fn is_serving(&self) -> bool {
        self.ready.load(Ordering::Relaxed) && !self.is_draining() && !*self.shutdown.borrow()
    }

    /// A receiver that turns true when the server shuts down.
    pub(super) fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Starts shutting down: accept loops stop, connections end.
    pub(super) fn shut_down(&self) {
        self.shutdown.send_replace(true);
    }

    /// Draining (`streammachine handoff --drain`): no new listeners.
    pub(super) fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Starts draining.
    pub(super) fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Whether the ports accept (false while a handoff runs).
    pub(super) fn accepting(&self) -> watch::Receiver<bool> {
        self.accepting.subscribe()
    }

    /// Pauses or resumes accepting new connections on every port.
    pub(super) fn set_accepting(&self, on: bool) {
        self.accepting.send_replace(on);
    }

    /// A successor holds its listener and source ports until
    /// [`Lifecycle::handoff_settled`].
    pub(super) fn await_handoff(&self) {
        self.awaiting_handoff.store(true, Ordering::Release);
    }

    /// The handoff is done (or is not coming): accept on every port.
    pub(super) fn handoff_settled(&self) {
        if self.awaiting_handoff.swap(false, Ordering::AcqRel) {
            self.accepting.send_modify(|_| {});
        }
    }

    /// Whether the listener and source ports wait for a handoff.
    pub(super) fn is_awaiting_handoff(&self) -> bool {
        self.awaiting_handoff.load(Ordering::Acquire)
    }

    /// True while a handoff collects connections.
    pub(super) fn is_parking(&self) -> bool {
        *self.parking.borrow()
    }

    /// Turns true when a handoff starts collecting connections.
    pub(super) fn parking_signal(&self) -> watch::Receiver<bool> {
        self.parking.subscribe()
    }

    /// Starts (true) or stops collecting connections.
    pub(super) fn set_parking(&self, on: bool) {
        self.parking.send_replace(on);
    }

    fn lock_parked(&self) -> std::sync::MutexGuard<'_, Parked> {
        self.parked.locked()
    }

    /// A listener stopped for the handoff.
    pub(super) fn park_listener(&self, p: crate::output::listener::ParkedListener) {
        self.lock_parked().listeners.push(p);
    }

    /// A source stopped for the handoff.
    pub(super) fn park_source(&self, p: crate::source::icecast::ParkedSource) {
        self.lock_parked().sources.push(p);
    }

    /// (listeners, sources) stopped so far.
    pub(super) fn parked_counts(&self) -> (usize, usize) {
        let p = self.lock_parked();
        (p.listeners.len(), p.sources.len())
    }

    /// Everything stopped so far.
    pub(super) fn take_parked(&self) -> Parked {
        std::mem::take(&mut *self.lock_parked())
    }

    /// The listening sockets, by port name.
    pub(super) fn listening_sockets(&self) -> Vec<(&'static str, Arc<TcpListener>)> {
        self.listening.locked().clone()
    }

    /// Keeps a listening socket for a handoff.
    pub(super) fn remember_listening(&self, kind: &'static str, l: Arc<TcpListener>) {
        self.listening.locked().push((kind, l));
    }

    /// After a successful handoff: the process should exit now.
    pub(super) fn mark_handed_off(&self) {
        self.handed_off.send_replace(true);
    }

    /// Turns true after a successful handoff.
    pub(super) fn handed_off_signal(&self) -> watch::Receiver<bool> {
        self.handed_off.subscribe()
    }

    /// Records the handoff socket this server listens on (`None`: none).
    pub(super) fn set_handoff_offer(&self, id: Option<(u64, u64)>) {
        *self.handoff_offer.locked() = id;
    }

    /// The handoff socket this server listens on, by device and inode.
    pub(super) fn handoff_offer(&self) -> Option<(u64, u64)> {
        *self.handoff_offer.locked()
    }

    /// Lets a successor bind the same ports (`SO_REUSEPORT`).
    pub(super) fn set_reuse_port(&self, on: bool) {
        self.reuse_port.store(on, Ordering::Relaxed);
    }

    /// Whether ports are bound with `SO_REUSEPORT`.
    pub(super) fn reuse_port(&self) -> bool {
        self.reuse_port.load(Ordering::Relaxed)
    }
}
