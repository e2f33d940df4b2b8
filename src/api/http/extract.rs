//! Extractors whose rejections are errors in OpenAI's shape: axum's own
//! answer a hostile query string or path with a plain-text 400.
//! - [`Params`]: the query string as name → value (the last of a repeated
//!   name wins); a value is parsed by the handler, which says which one is
//!   wrong ([`Params::number`]);
//! - [`ModelPath`]: the one path segment a route captures, percent-decoded.

use std::collections::HashMap;

use axum::extract::{FromRequestParts, Path, Query};
use axum::http::request::Parts;

use super::error::ApiError;

/// The query string, name → value.
#[derive(Debug, Clone, Default)]
pub struct Params(pub HashMap<String, String>);

impl Params {
    /// The value of `name`, if given.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// `name` as a non-negative number, if given; anything else is a 400.
    pub fn number(&self, name: &str) -> Result<Option<usize>, ApiError> {
        self.get(name)
            .map(|v| {
                v.trim().parse::<usize>().map_err(|_| {
                    ApiError::bad_request(format!(
                        "query parameter `{name}` must be a non-negative integer, not {v:?}"
                    ))
                })
            })
            .transpose()
    }

    /// `name` as a flag: given and not `0`/`false`/empty.
    pub fn flag(&self, name: &str) -> bool {
        self.get(name)
            .is_some_and(|v| !matches!(v.trim(), "" | "0" | "false"))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Query::<HashMap<String, String>>::try_from_uri(&parts.uri)
            .map(|Query(q)| Params(q))
            .map_err(|e| ApiError::bad_request(format!("invalid query string: {}", e.body_text())))
    }
}

/// The path segment a route captures (`/models/{model}/logs`).
#[derive(Debug, Clone)]
pub struct ModelPath(pub String);

impl<S: Send + Sync> FromRequestParts<S> for ModelPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<String>::from_request_parts(parts, state)
            .await
            .map(|Path(p)| ModelPath(p))
            .map_err(|e| ApiError::bad_request(format!("invalid path: {}", e.body_text())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Request;

    async fn params(uri: &str) -> Result<Params, ApiError> {
        let (mut parts, ()) = Request::get(uri).body(()).unwrap().into_parts();
        Params::from_request_parts(&mut parts, &()).await
    }

    #[tokio::test]
    async fn hostile_query_strings_are_400s_in_openai_shape() {
        let p = params("/models/m/logs?lines=abc").await.unwrap();
        let e = p.number("lines").unwrap_err();
        assert_eq!((e.status.as_u16(), e.code), (400, "invalid_request"));
        assert!(e.message.contains("`lines`"), "{}", e.message);
        for bad in ["-1", "1e3", "99999999999999999999999999"] {
            let p = params(&format!("/x?lines={bad}")).await.unwrap();
            assert!(p.number("lines").is_err(), "{bad}");
        }
        let p = params("/x?lines=%20%2012&reload=1&x=%FF").await.unwrap();
        assert_eq!(p.number("lines").unwrap(), Some(12));
        assert!(p.flag("reload"));
        assert!(!params("/x?reload=0").await.unwrap().flag("reload"));
        assert_eq!(params("/x").await.unwrap().number("lines").unwrap(), None);
    }
}
