//! The browser side: `/polysocket.js` (the client, embedded in the binary)
//! and `/demo` (a page to try it).

use actix_web::http::header::{CACHE_CONTROL, CONTENT_TYPE, X_CONTENT_TYPE_OPTIONS};
use actix_web::{HttpResponse, web};

const CLIENT: &str = include_str!("../../client/polysocket.js");
const DEMO: &str = include_str!("../../client/demo.html");

/// Mounts the client and the demo page, for the router and standalone polysocketd.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/polysocket.js", web::get().to(client)).route("/demo", web::get().to(demo));
}

async fn client() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, "application/javascript; charset=utf-8"))
        .insert_header((CACHE_CONTROL, "public, max-age=300"))
        .insert_header((X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .body(CLIENT)
}

async fn demo() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, "text/html; charset=utf-8"))
        .insert_header((X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .body(DEMO)
}
