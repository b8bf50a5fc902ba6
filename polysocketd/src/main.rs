use polysocket_common::cli::{parse_or_exit, started_or_exit};
use polysocket_common::logging;
use polysocket_common::shutdown;
use polysocketd::app::Application;
use polysocketd::config::DaemonConfig;

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let config: DaemonConfig = parse_or_exit();
    logging::init(&config.service.log);
    started_or_exit(Application::build(&config).await).run_until_stopped(shutdown::signal()).await
}
