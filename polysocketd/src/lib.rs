//! polysocketd: holds upstream WebSockets and bridges them to plain HTTP.
//!
//! The modules form a one-way stack, each using only those below it:
//!
//! - [`app`]: the HTTP server and background tasks (`Application`);
//! - [`routes`]: `/s` (send) and `/j` (long-poll receive), with
//!   [`stream`] (streaming `/j`: NDJSON, SSE) and [`cors`] beside them;
//! - [`daemon`]: shared state, fleet registration, opening handed-over sockets;
//! - [`client_limits`]: per-client bounds (socket-id guessing, open polls);
//! - [`error`]: why a `/s` or `/j` request failed, and its status;
//! - [`socket`]: one owner task per socket and the handle to reach it;
//! - [`upstream`]: the upstream WebSocket handshake;
//! - [`connection`]: the upstream connection's framing, lean while idle;
//! - [`address_policy`]: refusing non-public upstream addresses;
//! - [`config`], [`metrics`]: configuration, and what the daemon measures.
#![forbid(unsafe_code)]

pub mod address_policy;
pub mod answers;
pub mod app;
pub mod client_limits;
pub mod config;
pub mod connection;
pub mod cors;
pub mod daemon;
pub mod error;
pub mod metrics;
pub mod routes;
pub mod socket;
pub mod stream;
pub mod upstream;
