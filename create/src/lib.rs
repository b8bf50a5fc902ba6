//! `/create` and the browser client: what the router serves, and what
//! polysocketd serves too in standalone mode. Both services depend on this
//! crate; neither depends on the other.
//!
//! - [`create`]: validates and authorizes a create, reserves a daemon through
//!   the fleet and waits for it to open the upstream socket;
//! - [`client`]: `/polysocket.js` and `/demo`, the browser side;
//! - [`metrics`]: what `/create` measures.
#![forbid(unsafe_code)]

pub mod client;
pub mod create;
pub mod metrics;
