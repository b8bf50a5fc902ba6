//! What both services serve over HTTP: `/create` and the browser client
//! (the router's, and polysocketd's in standalone mode), and the operator's
//! endpoints. Both services depend on this crate; neither depends on the other.
//!
//! - [`create`]: validates and authorizes a create, reserves a daemon through
//!   the fleet and waits for it to open the upstream socket;
//! - [`client`]: `/polysocket.js` and `/demo`, the browser side;
//! - [`ops`]: `/healthz`, `/readyz` and `/metrics`;
//! - [`metrics`]: what `/create` measures.
#![forbid(unsafe_code)]

pub mod client;
pub mod create;
pub mod metrics;
pub mod ops;
