//! A local upstream WebSocket server for trying polysocket by hand (the
//! README's curl walk-through). It serves the scripted paths the tests use;
//! `/echo` echoes every message back.
//!
//! `cargo run -p polysocket-tests --bin echo-upstream [PORT]` (default 9001)

use polysocket_tests::upstream::UpstreamServer;

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let port: u16 = match std::env::args().nth(1).as_deref() {
        Some("-h" | "--help") => {
            println!("usage: echo-upstream [PORT]   (default 9001; serves ws://127.0.0.1:PORT/echo)");
            return Ok(());
        }
        Some(port) => port.parse().map_err(|_| std::io::Error::other(format!("invalid port {port:?}")))?,
        None => 9001,
    };
    let server = UpstreamServer::start_on(port)?;
    println!("upstream WebSocket server: {}", server.url("/echo"));
    tokio::signal::ctrl_c().await
}
