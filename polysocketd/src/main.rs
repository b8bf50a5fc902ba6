use polysocket_common::cli::{init_logging, parse_or_exit, started_or_exit};
use polysocket_common::shutdown;
use polysocketd::app::Application;
use polysocketd::config::DaemonConfig;

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    init_logging();
    let config: DaemonConfig = parse_or_exit();
    started_or_exit(Application::build(&config).await).run_until_stopped(shutdown::signal()).await
}
