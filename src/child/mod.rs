//! The worker process (`llama-router worker`): one model's llama.cpp engine
//! out of the daemon's address space, so a crash costs one model, not the
//! router. `server` starts it and serves its private socket, `service` is
//! its gRPC services, `accept` lets only its daemon in. Its command line
//! (`worker::args`) is the contract with the daemon's side in `worker/`;
//! `capture` hands a crash to the daemon's capture server; `tools` offers a
//! chat's tools to the template and parses the calls out of the answer;
//! `infill` lays out a fill-in-the-middle prompt; `standby` is a spare
//! worker that initialised llama.cpp before its model was named.

pub mod accept;
pub mod capture;
pub mod infill;
pub mod server;
pub mod service;
pub mod standby;
pub mod tools;
