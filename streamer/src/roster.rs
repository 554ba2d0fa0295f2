//! Who is listening to a stream: each connected listener (raw, ICY, pump)
//! with an id, its address, User-Agent and connection time, for Icecast's
//! `/admin/listclients` and `/admin/killclient`. Joining and leaving take a
//! short lock; streaming never touches it.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use crate::sync::MutexExt;

/// Ids are unique across the process (Icecast's are per server).
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A new id, for a listener about to join (its auth call names it).
pub fn next_id() -> u64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

/// Who joins: [`Roster::join`]'s argument.
#[derive(Debug, Clone)]
pub struct Who {
    /// Its id, if it has one already (from [`next_id`] or a handoff).
    pub id: Option<u64>,
    /// The client's address.
    pub ip: IpAddr,
    /// Its `User-Agent`.
    pub user_agent: Option<String>,
    /// `raw`, `icy` or `pump`.
    pub output: &'static str,
    /// When it connected, if earlier than now (a handoff).
    pub connected_at: Option<SystemTime>,
}

impl Who {
    /// A listener connecting now, with no id yet.
    pub fn new(ip: IpAddr, user_agent: Option<String>, output: &'static str) -> Who {
        Who {
            id: None,
            ip,
            user_agent,
            output,
            connected_at: None,
        }
    }
}

/// A connected listener.
#[derive(Debug)]
pub struct ListenerInfo {
    /// Unique in this process.
    pub id: u64,
    /// The client's address.
    pub ip: IpAddr,
    /// Its `User-Agent` (unknown for a listener taken over in a handoff).
    pub user_agent: Option<String>,
    /// `raw`, `icy` or `pump`.
    pub output: &'static str,
    /// When it connected (kept across a handoff).
    pub connected_at: SystemTime,
    kicked: AtomicBool,
    /// The stream an admin asked it to move to (`/admin/moveclients`).
    moving: Mutex<Option<String>>,
    /// Whether `moving` holds a request: the streaming task checks this
    /// flag at each chunk boundary, and takes the lock only when it is set.
    move_pending: AtomicBool,
}

impl ListenerInfo {
    /// Whether an admin asked for it to be disconnected.
    pub fn is_kicked(&self) -> bool {
        self.kicked.load(Ordering::Acquire)
    }

    /// The key of the stream an admin asked it to move to, taken once.
    pub fn take_move(&self) -> Option<String> {
        if !self.move_pending.swap(false, Ordering::AcqRel) {
            return None;
        }
        self.moving.locked().take()
    }
}

/// The listeners of one stream.
#[derive(Debug, Default)]
pub struct Roster {
    entries: Mutex<BTreeMap<u64, Arc<ListenerInfo>>>,
}

impl Roster {
    /// Adds a listener; [`Roster::leave`] removes it.
    pub fn join(&self, who: Who) -> Arc<ListenerInfo> {
        let mut entries = self.entries.locked();
        // An id carried over a handoff keeps its number (the auth service
        // and admins know it), unless this process already gave it out.
        let id = match who.id {
            Some(id) if !entries.contains_key(&id) => {
                NEXT_ID.fetch_max(id + 1, Ordering::Relaxed);
                id
            }
            _ => next_id(),
        };
        let info = Arc::new(ListenerInfo {
            id,
            ip: who.ip,
            user_agent: who.user_agent,
            output: who.output,
            connected_at: who.connected_at.unwrap_or_else(SystemTime::now),
            kicked: AtomicBool::new(false),
            moving: Mutex::new(None),
            move_pending: AtomicBool::new(false),
        });
        entries.insert(info.id, Arc::clone(&info));
        info
    }

    /// Takes in a listener that moved here from another stream.
    pub fn insert(&self, info: Arc<ListenerInfo>) {
        self.entries.locked().insert(info.id, info);
    }

    /// Asks every listener here to move to stream `to`; how many were asked.
    pub fn move_all(&self, to: &str) -> usize {
        let entries = self.entries.locked();
        for info in entries.values() {
            *info.moving.locked() = Some(to.to_string());
            info.move_pending.store(true, Ordering::Release);
        }
        entries.len()
    }

    /// Removes a listener that left.
    pub fn leave(&self, id: u64) {
        self.entries.locked().remove(&id);
    }

    /// Every listener now, oldest first.
    pub fn list(&self) -> Vec<Arc<ListenerInfo>> {
        self.entries.locked().values().cloned().collect()
    }

    /// Marks listener `id` for disconnection; `false` if it is not here.
    /// The caller wakes the listeners so it notices at once.
    pub fn kick(&self, id: u64) -> bool {
        match self.entries.locked().get(&id) {
            Some(info) => {
                info.kicked.store(true, Ordering::Release);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listeners_join_leave_and_are_kicked_by_id() {
        let r = Roster::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let a = r.join(Who::new(ip, Some("VLC/3".into()), "raw"));
        let b = r.join(Who::new(ip, None, "icy"));
        assert!(b.id > a.id);
        assert_eq!(r.list().len(), 2);
        assert!(r.kick(a.id) && a.is_kicked() && !b.is_kicked());
        r.leave(a.id);
        assert!(!r.kick(a.id), "gone");
        assert_eq!(r.list()[0].id, b.id);
        // A handed-over id is kept, unless taken here.
        let carried = b.id + 1000;
        let c = r.join(Who {
            id: Some(carried),
            ..Who::new(ip, None, "raw")
        });
        assert_eq!(c.id, carried);
        let d = r.join(Who {
            id: Some(carried),
            ..Who::new(ip, None, "raw")
        });
        assert!(d.id > carried, "{}", d.id);
    }
}
