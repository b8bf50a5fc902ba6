//! The polysocket router: a stateless service answering JSONP `/create`
//! (from `polysocket-http`, which standalone polysocketd mounts too).
//!
//! - [`admin`]: `router token ...`, token records managed at runtime;
//! - [`app`]: the HTTP server (`Application::build` binds, `run_until_stopped` serves);
//! - [`config`]: command-line and environment configuration.
#![forbid(unsafe_code)]

pub mod admin;
pub mod app;
pub mod config;
