//! The Developer page (API.md `GET /`, the guide's "Developer tab"): static HTML, CSS and JS modules
//! compiled into the binary with `include_str!`, so `make run` needs no Node build step. The page keeps
//! the token the user types in `sessionStorage` and talks to the public API with it; it holds no state
//! here and gets no privileges from being served by the same process.

use actix_web::http::header::{self, HeaderValue};
use actix_web::{web, HttpResponse, ResponseError};

/// Only this origin's scripts, styles, images and API; no inline code, no framing.
pub const CONTENT_SECURITY_POLICY: &str =
    "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self'; connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static str,
}

const INDEX: &str = include_str!("../assets/index.html");

/// Everything under `/assets/`, by file name. The page imports nothing else.
/// One embedded file: its name under `/assets/` is its file name in `crates/api/assets/`.
macro_rules! asset {
    ($name:literal, $content_type:literal) => {
        Asset {
            name: $name,
            content_type: $content_type,
            body: include_str!(concat!("../assets/", $name)),
        }
    };
}

const ASSETS: &[Asset] = &[
    asset!("app.css", "text/css; charset=utf-8"),
    asset!("app.js", "text/javascript; charset=utf-8"),
    asset!("api.js", "text/javascript; charset=utf-8"),
    asset!("dom.js", "text/javascript; charset=utf-8"),
    asset!("form.js", "text/javascript; charset=utf-8"),
    asset!("detail.js", "text/javascript; charset=utf-8"),
    asset!("deliveries.js", "text/javascript; charset=utf-8"),
    asset!("chart.js", "text/javascript; charset=utf-8"),
    asset!("eventtypes.js", "text/javascript; charset=utf-8"),
    asset!("cluster.js", "text/javascript; charset=utf-8"),
    asset!("icon.svg", "image/svg+xml"),
];

/// Registers `GET /` and `GET /assets/{name}`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(index))
        .route("/assets/{name}", web::get().to(asset));
}

async fn index() -> HttpResponse {
    respond("text/html; charset=utf-8", INDEX)
}

async fn asset(name: web::Path<String>) -> HttpResponse {
    match ASSETS.iter().find(|a| a.name == name.as_str()) {
        Some(a) => respond(a.content_type, a.body),
        None => crate::ApiError::not_found("asset").error_response(),
    }
}

fn respond(content_type: &'static str, body: &'static str) -> HttpResponse {
    let mut res = HttpResponse::Ok().body(body);
    let headers = res.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // Assets change with the binary; a new build must not be hidden behind a stale cache.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    res
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::{call_service, init_service, TestRequest};
    use actix_web::App;

    fn header(res: &actix_web::dev::ServiceResponse, name: header::HeaderName) -> &str {
        res.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    #[actix_web::test]
    async fn serves_the_page_and_its_assets_with_types_and_csp() {
        let app = init_service(App::new().configure(configure)).await;
        let res = call_service(&app, TestRequest::get().uri("/").to_request()).await;
        assert_eq!(res.status(), 200);
        assert_eq!(
            header(&res, header::CONTENT_TYPE),
            "text/html; charset=utf-8"
        );
        assert_eq!(
            header(&res, header::CONTENT_SECURITY_POLICY),
            CONTENT_SECURITY_POLICY
        );
        for a in ASSETS {
            let uri = format!("/assets/{}", a.name);
            let res = call_service(&app, TestRequest::get().uri(&uri).to_request()).await;
            assert_eq!(res.status(), 200, "{uri}");
            assert_eq!(header(&res, header::CONTENT_TYPE), a.content_type, "{uri}");
            assert_eq!(header(&res, header::X_CONTENT_TYPE_OPTIONS), "nosniff");
        }
        let res = call_service(&app, TestRequest::get().uri("/assets/nope.js").to_request()).await;
        assert_eq!(res.status(), 404);
    }

    /// Every `/assets/…` the page or a module refers to is one this module serves, and every served
    /// module is used: a renamed file fails here, not in a customer's browser.
    #[test]
    fn every_referenced_asset_is_served() {
        let sources = std::iter::once(INDEX).chain(ASSETS.iter().map(|a| a.body));
        let mut referenced = std::collections::BTreeSet::new();
        for src in sources {
            for part in src.split("/assets/").skip(1) {
                let name: String = part
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '.' || *c == '-')
                    .collect();
                referenced.insert(name);
            }
            for part in src.split("from \"./").skip(1) {
                let name: String = part.chars().take_while(|c| *c != '"').collect();
                referenced.insert(name);
            }
        }
        for name in &referenced {
            assert!(
                ASSETS.iter().any(|a| a.name == name.as_str()),
                "{name} is not served"
            );
        }
        for a in ASSETS {
            assert!(
                referenced.contains(a.name),
                "{} is never referenced",
                a.name
            );
        }
    }

    /// The page renders API data as text only.
    #[test]
    fn no_html_injection_sinks() {
        for a in ASSETS.iter().filter(|a| a.name.ends_with(".js")) {
            for sink in [
                "innerHTML",
                "outerHTML",
                "insertAdjacentHTML",
                "document.write",
                "eval(",
            ] {
                assert!(!a.body.contains(sink), "{} uses {sink}", a.name);
            }
            assert!(
                !a.body.contains("localStorage"),
                "{} uses localStorage",
                a.name
            );
            assert!(
                !a.body.contains("document.cookie"),
                "{} uses cookies",
                a.name
            );
        }
    }
}
