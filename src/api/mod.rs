//! The daemon's interfaces: gRPC (control plane, health, reflection) and
//! HTTP. Handlers only talk to actor handles; the wire types are in `proto`.

pub mod auth;
pub mod convert;
pub mod crashes;
pub mod grpc;
pub mod http;
pub mod inference;
pub mod listen;
