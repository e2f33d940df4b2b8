//! `?autoload=true|false` on an inference request, as llama-server's router
//! takes it: whether the request's model is loaded for it when it is not
//! (false: refused instead), overriding `--models-autoload` for that request.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use super::error::ApiError;

/// The request's `autoload`; `None` when it names none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Autoload(pub Option<bool>);

impl Autoload {
    /// Reads `autoload` from a query string; a value other than
    /// true/false/1/0 is a 400.
    pub fn parse(query: Option<&str>) -> Result<Self, ApiError> {
        let value = query
            .unwrap_or_default()
            .split('&')
            .find_map(|pair| pair.strip_prefix("autoload="));
        match value {
            None => Ok(Autoload(None)),
            Some("true" | "1") => Ok(Autoload(Some(true))),
            Some("false" | "0") => Ok(Autoload(Some(false))),
            Some(other) => Err(ApiError::bad_request(format!(
                "autoload={other:?}: use true or false"
            ))),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Autoload {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Autoload::parse(parts.uri.query())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn autoload_is_read_from_the_query() {
        let parse = |q| Autoload::parse(q).map(|a| a.0);
        assert_eq!(parse(None), Ok(None));
        assert_eq!(parse(Some("model=a")), Ok(None));
        assert_eq!(parse(Some("model=a&autoload=false")), Ok(Some(false)));
        assert_eq!(parse(Some("autoload=1")), Ok(Some(true)));
        assert!(
            parse(Some("autoload=maybe"))
                .unwrap_err()
                .message
                .contains("maybe")
        );
    }
}
