//! The polysocket router: a stateless service answering JSONP `/create`.
//!
//! - [`create`]: validates and authorizes a create, reserves a daemon through
//!   the fleet and waits for it to open the upstream socket; also mounted by
//!   polysocketd in standalone mode;
//! - [`admin`]: `router token ...`, token records managed at runtime;
//! - [`client`]: `/polysocket.js` and `/demo`, the browser side;
//! - [`app`]: the HTTP server (`Application::build` binds, `run` serves);
//! - [`config`]: command-line and environment configuration;
//! - [`metrics`]: what the router measures.
#![forbid(unsafe_code)]

pub mod admin;
pub mod app;
pub mod client;
pub mod config;
pub mod create;
pub mod metrics;
