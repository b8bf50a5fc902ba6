use polysocket_common::cli::{parse_or_exit, started_or_exit};
use polysocket_common::logging;
use polysocket_common::shutdown;
use router::app::Application;
use router::config::{RouterCommand, RouterConfig};

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let config: RouterConfig = parse_or_exit();
    logging::init(&config.service.log);
    match config.command {
        None => started_or_exit(Application::build(&config).await).run_until_stopped(shutdown::signal()).await,
        Some(RouterCommand::Token(command)) => {
            let fleet = started_or_exit(config.service.redis.connect().await);
            if let Err(e) = router::admin::run(fleet.as_ref(), command, &mut std::io::stdout()).await {
                eprintln!("{e}");
                std::process::exit(e.exit_code());
            }
            Ok(())
        }
    }
}
