//! polysocketd: holds upstream WebSockets and bridges them to plain HTTP.
//!
//! - [`app`]: the HTTP server and background tasks (`Application`);
//! - [`config`]: command-line and environment configuration;
//! - [`daemon`]: shared state, fleet registration, opening handed-over sockets;
//! - [`bridge`]: one owner task per socket and the handle to reach it;
//! - [`fragments`]: reassembling messages that arrive in pieces;
//! - [`metrics`]: what the daemon measures;
//! - [`routes`]: `/s` (send) and `/j` (long-poll receive);
//! - [`guard`]: per-client bounds (socket-id guessing, open polls);
//! - [`upstream`]: the upstream WebSocket handshake;
//! - [`netguard`]: refusing non-public upstream addresses.
#![forbid(unsafe_code)]

pub mod app;
pub mod bridge;
pub mod config;
pub mod daemon;
pub mod fragments;
pub mod guard;
pub mod metrics;
pub mod netguard;
pub mod routes;
pub mod upstream;
