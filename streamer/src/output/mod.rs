//! The listener side: raw, ICY and pump audio responses, playlists.

pub mod icy;
pub mod listener;
pub mod live;
pub mod playlist;
pub mod start;
