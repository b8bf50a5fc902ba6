//! The operator's endpoints: `/healthz` (the process answers), `/readyz`
//! (the service's own rule) and `/metrics` (Prometheus). Served on the
//! public listener, or only on `--admin-listen` when it is set, so that an
//! ingress in front of the public port never exposes them.

use actix_web::dev::Server;
use actix_web::{FromRequest, Handler, HttpResponse, Responder, web};
use polysocket_common::cli::{self, HttpArgs, StartError};
use polysocket_common::metrics;
use prometheus::Registry;

/// Mounts the three endpoints, with `ready` answering `/readyz` from `state`
/// (whatever the service's readiness looks at), wherever they are mounted.
pub fn endpoints<S, F, Args>(
    registry: Registry,
    state: web::Data<S>,
    ready: F,
) -> impl Fn(&mut web::ServiceConfig) + Send + Clone + 'static
where
    S: ?Sized + Send + Sync + 'static,
    F: Handler<Args> + Send + Sync,
    Args: FromRequest + 'static,
    F::Output: Responder + 'static,
{
    let registry = web::Data::new(registry);
    move |cfg: &mut web::ServiceConfig| {
        cfg.app_data(registry.clone())
            .app_data(state.clone())
            .route("/healthz", web::get().to(HttpResponse::Ok))
            .route("/readyz", web::get().to(ready.clone()))
            .route("/metrics", web::get().to(render_metrics));
    }
}

/// Where the endpoints go: their own server when `--admin-listen` is set
/// (returned, to be run and stopped with the service), otherwise `None`,
/// and the service mounts them on its public listener.
pub fn admin_server(
    http: &HttpArgs,
    endpoints: impl Fn(&mut web::ServiceConfig) + Send + Clone + 'static,
) -> Result<Option<Server>, StartError> {
    http.admin_listen.map(|addr| cli::run_admin_server(cli::bind(addr)?, endpoints)).transpose()
}

async fn render_metrics(registry: web::Data<Registry>) -> HttpResponse {
    HttpResponse::Ok().content_type(metrics::CONTENT_TYPE).body(metrics::encode(&registry))
}
