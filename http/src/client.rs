//! The browser side: `/polysocket.js` (the client, embedded in the binary),
//! `/polysocket-<version>.js` (the same file under a name that never
//! changes, for pages that pin it) and `/demo` (a page to try it).
//!
//! The client is gzipped once, at first use, and served gzipped to every
//! browser that takes it, with an `ETag`: a page that comes back revalidates
//! in one round trip with nothing in the body.

use actix_web::http::StatusCode;
use actix_web::http::header::{
    CACHE_CONTROL, CONTENT_ENCODING, CONTENT_TYPE, ETAG, HeaderValue, IF_NONE_MATCH, VARY, X_CONTENT_TYPE_OPTIONS,
};
use actix_web::{HttpRequest, HttpResponse, HttpResponseBuilder, guard, web};
use polysocket_common::compression;
use std::sync::LazyLock;

const CLIENT: &str = include_str!("../../client/polysocket.js");
const DEMO: &str = include_str!("../../client/demo.html");
/// The client's version: its npm package's, and the protocol's.
pub const CLIENT_VERSION: &str = "0.1.0";

/// `/polysocket.js` may change with a new build: browsers check back after
/// five minutes (a 304 when nothing changed).
const CACHE_LATEST: &str = "public, max-age=300";
/// `/polysocket-<version>.js` never changes.
const CACHE_PINNED: &str = "public, max-age=31536000, immutable";
/// Resource Timing's header (not among the http crate's names).
const TIMING_ALLOW_ORIGIN: &str = "timing-allow-origin";

/// The client as sent, in each encoding, with its entity tag.
struct Encoded {
    body: Vec<u8>,
    etag: HeaderValue,
}

/// The tag names the content: a checksum of the file, so a rebuilt router
/// with the same file keeps browsers' copies valid.
fn etag(suffix: &str) -> HeaderValue {
    use sha1::Digest;
    let digest = sha1::Sha1::digest(CLIENT.as_bytes());
    let checksum: String = digest[..8].iter().map(|byte| format!("{byte:02x}")).collect();
    HeaderValue::from_str(&format!("\"{CLIENT_VERSION}-{checksum}{suffix}\"")).expect("a valid header")
}

static PLAIN: LazyLock<Encoded> = LazyLock::new(|| Encoded { body: CLIENT.as_bytes().to_vec(), etag: etag("") });
static GZIPPED: LazyLock<Encoded> =
    LazyLock::new(|| Encoded { body: compression::gzip(CLIENT.as_bytes()), etag: etag("-gzip") });

/// Mounts the client and the demo page, for the router and standalone polysocketd.
pub fn configure(cfg: &mut web::ServiceConfig) {
    // HEAD too: `curl -I` and caches that revalidate with it.
    let get_or_head = || web::route().guard(guard::Any(guard::Get()).or(guard::Head()));
    cfg.route("/polysocket.js", get_or_head().to(|req: HttpRequest| async move { client(&req, CACHE_LATEST) }))
        .route(
            &format!("/polysocket-{CLIENT_VERSION}.js"),
            get_or_head().to(|req: HttpRequest| async move { client(&req, CACHE_PINNED) }),
        )
        .route("/demo", web::get().to(demo));
}

fn client(req: &HttpRequest, cache_control: &'static str) -> HttpResponse {
    let gzip = compression::accepts_gzip(req.headers());
    let encoded: &Encoded = if gzip { &GZIPPED } else { &PLAIN };
    let cached = req
        .headers()
        .get_all(IF_NONE_MATCH)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|tag| tag.trim() == "*" || tag.trim().trim_start_matches("W/") == encoded.etag);
    let mut response = HttpResponseBuilder::new(if cached { StatusCode::NOT_MODIFIED } else { StatusCode::OK });
    response
        .insert_header((ETAG, encoded.etag.clone()))
        .insert_header((CACHE_CONTROL, cache_control))
        .insert_header((VARY, "Accept-Encoding"))
        .insert_header((X_CONTENT_TYPE_OPTIONS, "nosniff"))
        // The page's copy reads this fetch's round trip from Resource
        // Timing, to wait as long as a far link needs before it gives up on
        // a native WebSocket.
        .insert_header((TIMING_ALLOW_ORIGIN, "*"));
    if cached {
        return response.finish();
    }
    if gzip {
        response.insert_header((CONTENT_ENCODING, "gzip"));
    }
    response.insert_header((CONTENT_TYPE, "application/javascript; charset=utf-8")).body(encoded.body.as_slice())
}

async fn demo() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, "text/html; charset=utf-8"))
        .insert_header((X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .body(DEMO)
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::App;
    use actix_web::test as http;

    #[test]
    fn the_version_is_the_one_the_client_and_its_package_carry() {
        assert!(CLIENT.contains(&format!("\"polysocket.js-{CLIENT_VERSION}\"")));
        let package = include_str!("../../client/package.json");
        assert!(package.contains(&format!("\"version\": \"{CLIENT_VERSION}\"")), "client/package.json");
    }

    #[actix_web::test]
    async fn the_client_is_gzipped_tagged_and_revalidated_in_a_304() {
        let app = http::init_service(App::new().configure(configure)).await;
        let get = |path: &str, headers: &[(&str, &str)]| {
            let mut req = http::TestRequest::get().uri(path);
            for &(name, value) in headers {
                req = req.insert_header((name, value));
            }
            req.to_request()
        };
        let gzipped = http::call_service(&app, get("/polysocket.js", &[("Accept-Encoding", "gzip, br")])).await;
        assert_eq!(gzipped.status(), 200);
        assert_eq!(gzipped.headers().get(CONTENT_ENCODING).unwrap(), "gzip");
        assert_eq!(gzipped.headers().get(CACHE_CONTROL).unwrap(), CACHE_LATEST);
        assert_eq!(gzipped.headers().get(TIMING_ALLOW_ORIGIN).unwrap(), "*", "the page may time this fetch");
        let tag = gzipped.headers().get(ETAG).unwrap().to_str().unwrap().to_owned();
        let body = http::read_body(gzipped).await;
        let mut unzipped = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&body[..]), &mut unzipped).unwrap();
        assert_eq!(unzipped, CLIENT);
        assert!(body.len() * 3 < CLIENT.len(), "{} bytes gzipped", body.len());

        let revisit =
            http::call_service(&app, get("/polysocket.js", &[("Accept-Encoding", "gzip"), ("If-None-Match", &tag)]))
                .await;
        assert_eq!(revisit.status(), 304);
        assert!(http::read_body(revisit).await.is_empty());

        // Without gzip: the file as it is, under a tag of its own.
        let plain = http::call_service(&app, get("/polysocket.js", &[("If-None-Match", &tag)])).await;
        assert_eq!(plain.status(), 200);
        assert!(plain.headers().get(CONTENT_ENCODING).is_none());
        assert_ne!(plain.headers().get(ETAG).unwrap(), tag.as_str());
        assert_eq!(http::read_body(plain).await, CLIENT.as_bytes());

        let pinned = http::call_service(&app, get(&format!("/polysocket-{CLIENT_VERSION}.js"), &[])).await;
        assert_eq!(pinned.status(), 200);
        assert_eq!(pinned.headers().get(CACHE_CONTROL).unwrap(), CACHE_PINNED);

        let head = http::TestRequest::default().method(actix_web::http::Method::HEAD).uri("/polysocket.js");
        let head = http::call_service(&app, head.insert_header(("Accept-Encoding", "gzip")).to_request()).await;
        assert_eq!(
            (head.status(), head.headers().get(ETAG).unwrap().to_str().unwrap()),
            (StatusCode::OK, tag.as_str())
        );
    }
}
