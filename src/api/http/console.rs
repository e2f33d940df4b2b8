//! The web console's static shell: `GET /` (the page), `GET
//! /console/app.js`, `/console/playground.js` and `/console/app.css`,
//! embedded in the binary.
//! The shell is open even with an API key set: it holds no data. The page
//! asks for the key and sends it on every call to the data endpoints
//! (`/events`, `/models*`, `/status`, `/v1/*`), which all require it.

use axum::http::header;
use axum::response::{IntoResponse, Response};

const INDEX: &str = include_str!("console/index.html");
const SCRIPT: &str = include_str!("console/app.js");
const PLAYGROUND: &str = include_str!("console/playground.js");
const STYLE: &str = include_str!("console/app.css");

/// Only our own scripts and styles, and calls back to this server.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CONTENT_SECURITY_POLICY, POLICY),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        body,
    )
        .into_response()
}

/// `GET /`.
pub async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX)
}

/// `GET /console/app.js`.
pub async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

/// `GET /console/playground.js`.
pub async fn playground() -> Response {
    asset("text/javascript; charset=utf-8", PLAYGROUND)
}

/// `GET /console/app.css`.
pub async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}
