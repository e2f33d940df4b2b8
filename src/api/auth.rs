//! Checking the optional API key (`--api-key`, see [`ApiKey`]) on gRPC calls,
//! and sending it from the CLI.

use std::fmt;

use tonic::metadata::MetadataMap;
use tonic::{Request, Status};

pub use crate::api_key::ApiKey;

/// The gRPC interceptor: UNAUTHENTICATED unless the call carries the key.
#[derive(Clone, Debug)]
pub struct GrpcAuth {
    key: Option<ApiKey>,
}

impl GrpcAuth {
    /// Checks calls against `key` (none: every call passes).
    pub fn new(key: Option<ApiKey>) -> Self {
        GrpcAuth { key }
    }

    fn check(&self, metadata: &MetadataMap) -> Result<(), Status> {
        match &self.key {
            None => Ok(()),
            Some(key) => {
                let header = metadata.get("authorization").map(|v| v.as_bytes());
                if key.accepts(header) {
                    Ok(())
                } else {
                    Err(Status::unauthenticated(
                        "missing or wrong API key: send `authorization: Bearer <key>` (the CLI reads LLAMA_ROUTER_API_KEY)",
                    ))
                }
            }
        }
    }
}

impl tonic::service::Interceptor for GrpcAuth {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        self.check(request.metadata())?;
        Ok(request)
    }
}

/// The client side: adds the key to every call.
#[derive(Clone, Default)]
pub struct BearerAuth {
    header: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
}

impl BearerAuth {
    /// Sends `key` with every call (none: sends nothing). A key that is not
    /// valid header text cannot be sent and is an error.
    pub fn new(key: Option<&ApiKey>) -> Result<Self, InvalidKey> {
        let header = key
            .map(|k| k.bearer().parse().map_err(|_| InvalidKey))
            .transpose()?;
        Ok(BearerAuth { header })
    }
}

impl fmt::Debug for BearerAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.header.is_some() {
            "BearerAuth(<redacted>)"
        } else {
            "BearerAuth(none)"
        })
    }
}

/// The key holds characters a header cannot carry.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the API key must be printable ASCII")]
pub struct InvalidKey;

impl tonic::service::Interceptor for BearerAuth {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(header) = &self.header {
            request
                .metadata_mut()
                .insert("authorization", header.clone());
        }
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use tonic::service::Interceptor;

    use super::*;

    #[test]
    fn the_key_never_shows_in_debug_output() {
        let key = ApiKey::new("s3cret").unwrap();
        assert!(!format!("{key:?}").contains("s3cret"));
        assert!(!format!("{:?}", GrpcAuth::new(Some(key))).contains("s3cret"));
    }

    #[test]
    fn the_client_interceptor_carries_what_the_server_wants() {
        let key = ApiKey::new("s3cret").unwrap();
        let mut client = BearerAuth::new(Some(&key)).unwrap();
        let mut server = GrpcAuth::new(Some(key));
        assert_eq!(
            server.call(Request::new(())).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        let sent = client.call(Request::new(())).unwrap();
        assert!(server.call(sent).is_ok());
        assert!(GrpcAuth::new(None).call(Request::new(())).is_ok());
        assert!(BearerAuth::new(ApiKey::new("bad\nkey").as_ref()).is_err());
    }
}
