//! The operator console: static HTML, CSS and JavaScript modules (in
//! `fleet-server/console/`) compiled into the binary and served at `/console/`.
//!
//! The page talks only to the REST API under `/api/v1` with the operator's bearer token,
//! so every action it offers goes through the same authorisation as any other client.
//! Page addresses (`/console/cabinets/cab-17`) all answer with `index.html`; the script
//! routes on the path. Every answer carries a strict Content-Security-Policy (scripts,
//! styles and connections from this origin only, no inline code, no framing), an ETag,
//! and `Cache-Control: no-cache`, so a browser revalidates and an upgraded server is
//! picked up at the next load.

use std::sync::LazyLock;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use sha2::{Digest, Sha256};

/// One embedded file.
struct Asset {
    /// Its path under `/console/`.
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

macro_rules! asset {
    ($path:literal, $type:expr) => {
        Asset {
            path: $path,
            content_type: $type,
            body: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/console/", $path)),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";

/// Every file of the console; a test checks this list against the folder.
const ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("console.css", "text/css; charset=utf-8"),
    asset!("favicon.svg", "image/svg+xml"),
    asset!("js/app.js", JS),
    asset!("js/api.js", JS),
    asset!("js/ui.js", JS),
    asset!("js/live.js", JS),
    asset!("js/pages/login.js", JS),
    asset!("js/pages/overview.js", JS),
    asset!("js/pages/cabinets.js", JS),
    asset!("js/pages/cabinet.js", JS),
    asset!("js/pages/parcels.js", JS),
    asset!("js/pages/couriers.js", JS),
    asset!("js/pages/rollouts.js", JS),
    asset!("js/pages/alarms.js", JS),
];

/// The first path segments that are pages of the console (answered with `index.html`).
const PAGES: &[&str] = &["", "login", "overview", "cabinets", "parcels", "couriers", "tasks", "rollouts", "alarms"];

/// Scripts, styles, images and API calls from this origin only; nothing inline, no
/// plugins, no framing, forms post nowhere else.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
     connect-src 'self'; font-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// ETags, one per asset, computed once.
static ETAGS: LazyLock<Vec<String>> =
    LazyLock::new(|| ASSETS.iter().map(|a| format!("\"{}\"", &hex::encode(Sha256::digest(a.body))[..20])).collect());

/// Mounts `/console` and `/console/…`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route(
        "/console",
        web::get()
            .to(|| async { HttpResponse::PermanentRedirect().insert_header((header::LOCATION, "/console/")).finish() }),
    )
    .route("/console/{tail:.*}", web::get().to(serve));
}

/// Which asset answers `tail` (the path after `/console/`), if any.
fn lookup(tail: &str) -> Option<usize> {
    if let Some(i) = ASSETS.iter().position(|a| a.path == tail) {
        return Some(i);
    }
    let first = tail.split('/').next().unwrap_or_default();
    PAGES.contains(&first).then_some(0)
}

async fn serve(req: HttpRequest, tail: web::Path<String>) -> HttpResponse {
    let Some(i) = lookup(&tail) else {
        return with_security(&mut HttpResponse::NotFound())
            .content_type("text/plain; charset=utf-8")
            .body("not found\n");
    };
    let asset = &ASSETS[i];
    let etag = &ETAGS[i];
    let fresh = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let mut builder = if fresh { HttpResponse::NotModified() } else { HttpResponse::Ok() };
    let res = with_security(&mut builder)
        .insert_header((header::ETAG, etag.as_str()))
        .insert_header((header::CACHE_CONTROL, "no-cache"));
    if fresh { res.finish() } else { res.content_type(asset.content_type).body(asset.body) }
}

fn with_security(res: &mut actix_web::HttpResponseBuilder) -> &mut actix_web::HttpResponseBuilder {
    res.insert_header((header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every file in `fleet-server/console/` is embedded, and nothing embedded is missing.
    #[test]
    fn every_console_file_is_embedded() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("console");
        let mut on_disk = Vec::new();
        let mut dirs = vec![root.clone()];
        while let Some(d) = dirs.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    dirs.push(p);
                } else {
                    on_disk.push(p.strip_prefix(&root).unwrap().to_string_lossy().into_owned());
                }
            }
        }
        on_disk.sort();
        let mut embedded: Vec<String> = ASSETS.iter().map(|a| a.path.to_owned()).collect();
        embedded.sort();
        assert_eq!(on_disk, embedded);
    }

    #[test]
    fn pages_get_the_shell_and_unknown_paths_nothing() {
        assert_eq!(lookup(""), Some(0));
        assert_eq!(lookup("cabinets/cab.17"), Some(0));
        assert_eq!(lookup("js/app.js").map(|i| ASSETS[i].path), Some("js/app.js"));
        assert_eq!(lookup("js/missing.js"), None);
        assert_eq!(lookup("../Cargo.toml"), None);
    }

    /// The markup keeps to the policy: no inline script or style anywhere.
    #[test]
    fn no_inline_code_in_the_markup() {
        for a in ASSETS.iter().filter(|a| a.path.ends_with(".html")) {
            let html = std::str::from_utf8(a.body).unwrap();
            assert!(!html.contains("style="), "{} has an inline style", a.path);
            assert!(!html.contains("<style"), "{} has a style element", a.path);
            for (i, _) in html.match_indices("<script") {
                let tag = &html[i..html[i..].find('>').map_or(html.len(), |e| i + e)];
                assert!(tag.contains("src="), "{} has an inline script", a.path);
            }
        }
    }
}
