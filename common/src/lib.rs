//! Shared pieces of polysocket's two services, with no HTTP handlers in it.
//!
//! - [`jsonp`]: callback validation and the one place answers are encoded;
//! - [`wire`]: JSON types clients see and the router/daemon hand-off;
//! - [`target`]: upstream URL validation and normalization;
//! - [`pattern`]: token target and origin patterns, matched part by part;
//! - [`token`]: token records and the origin/target authorization rules;
//! - [`fleet`]: the [`fleet::Fleet`] both services coordinate through, with
//!   Redis and in-memory backends;
//! - [`limits`]: client addresses behind proxies, and rate limits;
//! - [`metrics`]: Prometheus encoding, and the metrics every process has;
//! - [`logging`]: text or JSON log lines, client faults counted not logged;
//! - [`compression`]: gzip for answers a client accepts it for, and for streams;
//! - [`cli`]: command-line arguments both services share;
//! - [`shutdown`]: the SIGTERM/SIGINT future.
#![forbid(unsafe_code)]

pub mod cli;
pub mod compression;
pub mod fleet;
pub mod jsonp;
pub mod limits;
pub mod logging;
pub mod metrics;
pub mod pattern;
pub mod shutdown;
pub mod target;
pub mod token;
pub mod wire;
