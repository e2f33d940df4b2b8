//! The wire: code generated from `proto/` (the public v1 API, and the
//! private protocol between the daemon and its workers), and gRPC channels
//! over Unix sockets. Every layer that speaks gRPC uses it; it uses none of them.

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
