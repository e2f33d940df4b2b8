//! The daemon's interfaces: gRPC (control plane, health, reflection).
//! Handlers only talk to actor handles.

pub mod auth;
pub mod convert;
pub mod grpc;
pub mod http;
pub mod inference;
pub mod limits;
pub mod listen;
pub mod transport;

/// Code generated from `proto/llama_router/v1/*.proto`.
#[allow(
    missing_docs,
    clippy::all,
    clippy::pedantic,
    clippy::unwrap_used,
    clippy::indexing_slicing
)]
pub mod pb {
    tonic::include_proto!("llama_router.v1");

    /// Descriptor set of our protos, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/llama_router_descriptor.bin"));
}

/// Code generated from `proto/llama_router/worker/v1/worker.proto` (private protocol).
#[allow(
    missing_docs,
    clippy::all,
    clippy::pedantic,
    clippy::unwrap_used,
    clippy::indexing_slicing
)]
pub mod worker_pb {
    tonic::include_proto!("llama_router.worker.v1");
}
