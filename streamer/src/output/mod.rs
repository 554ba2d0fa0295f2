//! The listener side: raw, ICY and pump audio responses, HLS, playlists.

pub mod hls;
pub mod icy;
pub mod listener;
pub mod live;
pub mod playlist;
pub mod start;
