//! Router configuration: every flag also reads the environment variable shown
//! in `router --help`.

use clap::{Parser, Subcommand};
use polysocket_common::cli::ServiceArgs;
use polysocket_common::pattern::{OriginPattern, TargetPattern};
use std::net::SocketAddr;

#[derive(Debug, Clone, Parser)]
#[command(name = "router", version, about = "polysocket router: answers JSONP /create")]
pub struct RouterConfig {
    /// Address to serve /create on.
    #[arg(long, env = "POLYSOCKET_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,

    #[command(flatten)]
    pub service: ServiceArgs,

    /// Without a command, the router serves /create.
    #[command(subcommand)]
    pub command: Option<RouterCommand>,
}

#[derive(Debug, Clone, Subcommand)]
pub enum RouterCommand {
    /// Manages token records in Redis while the fleet runs: changes take
    /// effect at the next create, on every router.
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(Debug, Clone, Subcommand)]
pub enum TokenCommand {
    /// Adds a token (fails if it exists).
    Add(TokenFields),
    /// Replaces an existing token's record (fails if it does not exist).
    Update(TokenFields),
    /// Prints every token record as JSON, one per line.
    List,
    /// Removes a token: creates with it fail from now on.
    Revoke {
        token: String,
        /// Also close the sockets the token holds open (close code 1008).
        #[arg(long)]
        close_sockets: bool,
    },
}

/// A token record on the command line.
#[derive(Debug, Clone, clap::Args)]
pub struct TokenFields {
    pub token: String,
    /// Comma-separated target patterns, e.g. `wss://*.example.com/*`.
    #[arg(long, value_delimiter = ',', required = true, value_parser = parse_target)]
    pub targets: Vec<TargetPattern>,
    /// Comma-separated page origins, or `*` for any.
    #[arg(long, value_delimiter = ',', required = true, value_parser = parse_origin)]
    pub origins: Vec<OriginPattern>,
    /// Sockets the token may hold open at once, fleet-wide.
    #[arg(long)]
    pub max_connections: u32,
    /// Comma-separated non-public networks (CIDR) the target may reach on
    /// purpose (with exactly one --targets pattern).
    #[arg(long, value_delimiter = ',')]
    pub allow_private: Vec<ipnet::IpNet>,
    /// How the token is named in metrics (default: a hash of it).
    #[arg(long)]
    pub label: Option<String>,
    /// A header added to the upstream handshake, as `Name: value`
    /// (repeatable), e.g. an API key the page must never see; sent only to
    /// the targets of the one --targets pattern.
    #[arg(long = "upstream-header", value_name = "NAME: VALUE", value_parser = parse_header)]
    pub upstream_headers: Vec<(String, String)>,
    /// Let clients pass a bearer credential to /create (`bearer=` or
    /// `Authorization: Bearer`) for the upstream handshake.
    #[arg(long)]
    pub forward_bearer: bool,
}

fn parse_target(raw: &str) -> Result<TargetPattern, String> {
    TargetPattern::parse(raw.trim()).map_err(|e| e.to_string())
}

fn parse_origin(raw: &str) -> Result<OriginPattern, String> {
    OriginPattern::parse(raw.trim()).map_err(|e| e.to_string())
}

fn parse_header(raw: &str) -> Result<(String, String), String> {
    let (name, value) = raw.split_once(':').ok_or("expected `Name: value`")?;
    Ok((name.trim().to_owned(), value.trim().to_owned()))
}

#[cfg(test)]
mod tests {
    /// Clap checks a command's definition only when it is built.
    #[test]
    fn every_flag_is_defined_once() {
        <super::RouterConfig as clap::CommandFactory>::command().debug_assert();
    }
}
