//! What keeps other web pages off the API when it has no key (the default):
//! - **DNS rebinding**: with no API key, a request's `Host` must be an IP
//!   literal, `localhost` (or a `.localhost` name), the configured
//!   `http_host`, this machine's host name, or one of `http_allowed_hosts`;
//!   a page on `evil.example` that rebinds its name to 127.0.0.1 sends
//!   `Host: evil.example` and is refused (403 `forbidden_host`). With a key
//!   the check is off: such a page does not have it.
//! - **Cross-site requests**: a request that changes state (any method but
//!   GET and HEAD, and `GET /models?reload=...`) from a browser must come
//!   from this server's own pages: `Sec-Fetch-Site` must be `same-origin`
//!   (or `none`, typed by the user), or without it `Origin` must name the
//!   `Host` it was sent to (403 `cross_site_request`). Clients that are not
//!   browsers (curl, the OpenAI and Anthropic SDKs) send neither header and
//!   pass.
//! - **JSON only**: the console's actions (`/models/load|unload|pin`) need
//!   `Content-Type: application/json` (415 otherwise), which no plain form
//!   or `text/plain` fetch of another site can send without asking first.

use std::net::Ipv4Addr;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::HttpState;
use super::error::ApiError;

/// The host names (besides IP literals and `localhost`) requests may name
/// in `Host` when the API has no key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostPolicy {
    names: Vec<String>,
}

/// A host name as compared: lower case, no trailing dot.
fn normal(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

impl HostPolicy {
    /// Names allowed besides IP literals and `localhost`: the configured
    /// `http_host`, this machine's host name, `http_allowed_hosts`. Empty
    /// names are left out.
    pub fn new<'a>(names: impl IntoIterator<Item = &'a str>) -> Self {
        let mut names: Vec<String> = names
            .into_iter()
            .map(normal)
            .filter(|n| !n.is_empty())
            .collect();
        names.sort();
        names.dedup();
        HostPolicy { names }
    }

    /// Whether a `Host` header value names this server.
    pub fn allows(&self, host: &str) -> bool {
        let Some(name) = host_name(host) else {
            return false;
        };
        if name.starts_with('[') || name.parse::<Ipv4Addr>().is_ok() {
            return true; // an IP literal cannot be rebound
        }
        let name = normal(name);
        name == "localhost" || name.ends_with(".localhost") || self.names.contains(&name)
    }
}

/// The host of a `Host` value without its port (`[::1]` keeps its brackets);
/// `None` when it is not one.
fn host_name(host: &str) -> Option<&str> {
    let host = host.trim();
    if host.is_empty() {
        return None;
    }
    if host.starts_with('[') {
        let end = host.find(']')?;
        let rest = host.get(end + 1..)?;
        if !(rest.is_empty() || port(rest.strip_prefix(':')?)) {
            return None;
        }
        // Only a valid IPv6 address between the brackets.
        host.get(1..end)?.parse::<std::net::Ipv6Addr>().ok()?;
        return host.get(..=end);
    }
    match host.rsplit_once(':') {
        Some((name, p)) if port(p) && !name.contains(':') => Some(name),
        Some(_) => None,
        None => Some(host),
    }
}

fn port(p: &str) -> bool {
    !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit())
}

fn header<'a>(headers: &'a HeaderMap, name: &header::HeaderName) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Why a browser request from another site is refused; `None` when it is
/// not one (same origin, typed by the user, or not a browser).
pub fn cross_site(headers: &HeaderMap) -> Option<String> {
    if let Some(site) = headers.get("sec-fetch-site") {
        let site = site.to_str().unwrap_or("?");
        return match site {
            "same-origin" | "none" => None,
            other => Some(format!(
                "refused a {other} browser request: only this server's own pages may change its state"
            )),
        };
    }
    let origin = header(headers, &header::ORIGIN)?;
    let host = header(headers, &header::HOST).unwrap_or_default();
    let authority = origin
        .split_once("://")
        .map(|(_, rest)| rest.trim_end_matches('/'));
    match authority {
        Some(a) if !host.is_empty() && a.eq_ignore_ascii_case(host) => None,
        _ => Some(format!(
            "refused a request from origin {origin:?}: only this server's own pages may change its state"
        )),
    }
}

/// Whether the body is declared as JSON (`application/json`, any parameters).
pub fn require_json(headers: &HeaderMap) -> Result<(), ApiError> {
    let declared = header(headers, &header::CONTENT_TYPE).unwrap_or_default();
    let mime = declared.split(';').next().unwrap_or_default().trim();
    if mime.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else {
        Err(ApiError::unsupported_media_type(format!(
            "the body must be JSON: send `Content-Type: application/json` (got {:?})",
            if declared.is_empty() {
                "none"
            } else {
                declared
            }
        )))
    }
}

/// Whether the request changes state: any method but GET and HEAD, and
/// llama-server's `GET /models?reload=...`.
fn changes_state(request: &Request) -> bool {
    let method = request.method();
    if method != Method::GET && method != Method::HEAD {
        return true;
    }
    request.uri().path() == "/models"
        && request.uri().query().is_some_and(|q| {
            q.split('&')
                .any(|kv| kv.split('=').next() == Some("reload"))
        })
}

/// The middleware: the `Host` check (without a key), then the cross-site check.
pub async fn guard(State(state): State<HttpState>, request: Request, next: Next) -> Response {
    if state.api_key.is_none() {
        let host = header(request.headers(), &header::HOST)
            .map(str::to_owned)
            .or_else(|| request.uri().authority().map(|a| a.as_str().to_owned()))
            .unwrap_or_default();
        if !state.hosts.allows(&host) {
            return ApiError::forbidden(
                "forbidden_host",
                format!(
                    "this server does not answer to host {host:?}: add it to http_allowed_hosts, or set an API key"
                ),
            )
            .into_response();
        }
    }
    if changes_state(&request) {
        if let Some(why) = cross_site(request.headers()) {
            return ApiError::forbidden("cross_site_request", why).into_response();
        }
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn hosts_are_ip_literals_localhost_or_named() {
        let policy = HostPolicy::new(["127.0.0.1", "Box.Example.", ""]);
        for ok in [
            "127.0.0.1:8080",
            "10.1.2.3",
            "[::1]:8080",
            "[::1]",
            "localhost:8080",
            "LOCALHOST",
            "app.localhost:1",
            "box.example:8080",
            "box.example.",
        ] {
            assert!(policy.allows(ok), "{ok}");
        }
        for bad in [
            "evil.example:8080",
            "evil.example",
            "localhost.evil.example",
            "",
            "[::1",
            "[nonsense]:80",
            "::1",
            "127.0.0.1:80:80",
            "box.example:http",
        ] {
            assert!(!policy.allows(bad), "{bad}");
        }
    }

    #[test]
    fn only_same_origin_browser_requests_or_non_browsers_pass() {
        assert_eq!(
            cross_site(&headers(&[])),
            None,
            "curl and SDKs send neither"
        );
        assert_eq!(
            cross_site(&headers(&[("sec-fetch-site", "same-origin")])),
            None
        );
        assert_eq!(cross_site(&headers(&[("sec-fetch-site", "none")])), None);
        for site in ["cross-site", "same-site"] {
            let h = headers(&[("sec-fetch-site", site), ("host", "127.0.0.1:8080")]);
            assert!(cross_site(&h).is_some(), "{site}");
        }
        let same = headers(&[
            ("origin", "http://127.0.0.1:8080"),
            ("host", "127.0.0.1:8080"),
        ]);
        assert_eq!(cross_site(&same), None);
        for origin in ["http://evil.example", "null", "http://127.0.0.1:9999"] {
            let h = headers(&[("origin", origin), ("host", "127.0.0.1:8080")]);
            assert!(cross_site(&h).is_some(), "{origin}");
        }
    }

    #[test]
    fn actions_need_a_json_content_type() {
        assert!(require_json(&headers(&[("content-type", "application/json")])).is_ok());
        assert!(
            require_json(&headers(&[(
                "content-type",
                "Application/JSON; charset=utf-8"
            )]))
            .is_ok()
        );
        for bad in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data",
        ] {
            let e = require_json(&headers(&[("content-type", bad)])).unwrap_err();
            assert_eq!((e.status.as_u16(), e.code), (415, "unsupported_media_type"));
        }
        assert!(require_json(&headers(&[])).is_err());
    }
}
