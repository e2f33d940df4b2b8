//! The optional API key (`--api-key`): a bearer token that gRPC and HTTP
//! requests must carry. It is compared in constant time and never printed.
//! A leaf: the configuration holds one, the API layers check it.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use subtle::ConstantTimeEq;

/// A secret bearer token; `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// A key; `None` for an empty string (no key).
    pub fn new(key: impl Into<String>) -> Option<Self> {
        let key = key.into();
        (!key.is_empty()).then_some(ApiKey(key))
    }

    /// The `authorization` header value that carries it.
    pub fn bearer(&self) -> String {
        format!("Bearer {}", self.0)
    }

    /// Whether an `authorization` header value carries this key.
    pub fn accepts(&self, authorization: Option<&[u8]>) -> bool {
        let Some(token) = authorization.and_then(|h| h.strip_prefix(b"Bearer ")) else {
            return false;
        };
        self.is(Some(token))
    }

    /// Whether a header that carries the key alone (Anthropic's `x-api-key`) holds this key.
    pub fn is(&self, token: Option<&[u8]>) -> bool {
        token.is_some_and(|t| bool::from(t.ct_eq(self.0.as_bytes())))
    }
}

impl std::str::FromStr for ApiKey {
    type Err = &'static str;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ApiKey::new(s).ok_or("the API key is empty")
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

impl Serialize for ApiKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ApiKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let key = String::deserialize(d)?;
        ApiKey::new(key).ok_or_else(|| serde::de::Error::custom("api_key is empty"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_bearer_token_passes() {
        let key = ApiKey::new("s3cret").unwrap();
        assert!(key.accepts(Some(b"Bearer s3cret")));
        for bad in [
            &b"Bearer s3cre"[..],
            b"Bearer s3cret2",
            b"bearer s3cret",
            b"s3cret",
            b"",
        ] {
            assert!(!key.accepts(Some(bad)), "{bad:?}");
        }
        assert!(!key.accepts(None));
        assert!(key.is(Some(b"s3cret")));
        for bad in [&b"s3cre"[..], b"s3cret2", b"Bearer s3cret", b""] {
            assert!(!key.is(Some(bad)), "{bad:?}");
        }
        assert!(!key.is(None));
        assert!(ApiKey::new("").is_none());
    }
}
