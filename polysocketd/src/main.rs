use clap::Parser;
use polysocket_common::cli::EXIT_BAD_CONFIG;
use polysocketd::app::Application;
use polysocketd::config::DaemonConfig;

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let config = DaemonConfig::parse();
    let app = match Application::build(&config).await {
        Ok(app) => app,
        Err(e) => {
            log::error!("{e}");
            std::process::exit(EXIT_BAD_CONFIG);
        }
    };
    app.run_until_stopped().await
}
