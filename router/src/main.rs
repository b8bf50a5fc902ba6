use polysocket_common::cli::{init_logging, parse_or_exit, started_or_exit};
use router::app::Application;
use router::config::RouterConfig;

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    init_logging();
    let config: RouterConfig = parse_or_exit();
    started_or_exit(Application::build(&config).await).run_until_stopped().await
}
