//! The backups page: one HTML page, its script and its style sheet, from `ui/` in the repo,
//! embedded in the binary (no build step, nothing fetched at run time). Served at `/_/`
//! (PocketBase's dashboard path) and `/`. The page talks only to the public API, as the
//! SDK does.
//!
//! Every answer carries a strict Content-Security-Policy (scripts, styles and requests from
//! this origin only; no inline code, no frames, no plugins), `Referrer-Policy: no-referrer`
//! (the download's file token never leaves in a `Referer`) and `Cache-Control: no-cache`
//! with an `ETag`, so that a new binary's page is never served stale.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

const INDEX: &str = include_str!("../../ui/index.html");
const SCRIPT: &str = include_str!("../../ui/app.js");
const STYLE: &str = include_str!("../../ui/app.css");

/// What the page may load and do.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; \
     base-uri 'none'";

/// `GET /_/` and `GET /`.
pub async fn index(headers: HeaderMap) -> Response {
    asset(&headers, INDEX, "text/html; charset=utf-8")
}

/// `GET /_/app.js`.
pub async fn script(headers: HeaderMap) -> Response {
    asset(&headers, SCRIPT, "text/javascript; charset=utf-8")
}

/// `GET /_/app.css`.
pub async fn style(headers: HeaderMap) -> Response {
    asset(&headers, STYLE, "text/css; charset=utf-8")
}

fn asset(headers: &HeaderMap, body: &'static str, content_type: &'static str) -> Response {
    let etag = format!("\"{:08x}\"", crc32fast::hash(body.as_bytes()));
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let mut res = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, content_type)], body).into_response()
    };
    let h = res.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    res
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_page_loads_only_its_own_files_and_has_no_inline_code() {
        let page = super::INDEX;
        assert!(page.contains(r#"<script src="/_/app.js" defer></script>"#));
        assert!(page.contains(r#"<link rel="stylesheet" href="/_/app.css">"#));
        // A strict CSP refuses inline scripts, styles and handlers: the page has none.
        assert_eq!(page.matches("<script").count(), 1);
        assert!(
            !page.contains("<style") && !page.contains(" style=") && !page.contains(" onclick=")
        );
    }
}
