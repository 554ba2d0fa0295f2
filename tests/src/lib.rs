//! Helpers for StreamMachine's cross-component tests and the bench tool:
//! spawning the real server binary, Icecast source clients, listeners.
