//! Router configuration: every flag also reads the environment variable shown
//! in `router --help`.

use clap::Parser;
use polysocket_common::cli::ServiceArgs;
use std::net::SocketAddr;

#[derive(Debug, Clone, Parser)]
#[command(name = "router", version, about = "polysocket router: answers JSONP /create")]
pub struct RouterConfig {
    /// Address to serve /create on.
    #[arg(long, env = "POLYSOCKET_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,

    #[command(flatten)]
    pub service: ServiceArgs,
}
