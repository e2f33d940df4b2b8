//! Compiles the gRPC contracts with protox (no system protoc) and keeps the
//! file descriptor set for server reflection; compiles the engine's C++ shim
//! over llama.cpp's metadata dump and wraps llama.cpp's calls into it.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // `llama-router --version` names the backends this build can use.
    let mut backends = vec!["cpu"];
    for (feature, name) in [
        ("CARGO_FEATURE_VULKAN", "vulkan"),
        ("CARGO_FEATURE_ROCM", "rocm"),
        ("CARGO_FEATURE_CUDA", "cuda"),
    ] {
        if std::env::var_os(feature).is_some() {
            backends.push(name);
        }
    }
    println!(
        "cargo:rustc-env=ROUTER_BUILD_BACKENDS={}",
        backends.join(", ")
    );
    // The llama.cpp this build carries: the one llama-cpp-sys-2 vendors.
    println!("cargo:rerun-if-changed=Cargo.lock");
    let lock = std::fs::read_to_string("Cargo.lock").unwrap_or_default();
    let sys = lock
        .split("[[package]]")
        .find(|p| p.contains("name = \"llama-cpp-sys-2\""))
        .and_then(|p| p.lines().find_map(|l| l.strip_prefix("version = ")))
        .map_or_else(|| "unknown".to_owned(), |v| v.trim_matches('"').to_owned());
    println!("cargo:rustc-env=ROUTER_LLAMA_CPP=llama.cpp from llama-cpp-sys-2 {sys}");

    metadata_dump();

    let protos = [
        "llama_router/v1/models.proto",
        "llama_router/v1/inference.proto",
        "llama_router/worker/v1/worker.proto",
    ];
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(protos, ["proto"])?;
    // Reflection shows the public contract only, not the private worker protocol.
    let mut public = fds.clone();
    public
        .file
        .retain(|f| f.name().starts_with("llama_router/v1/"));
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("llama_router_descriptor.bin"),
        prost::Message::encode_to_vec(&public),
    )?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}

/// `src/engine/metadata_dump.cpp`: every target of this crate links it whole
/// and the linker sends llama.cpp's calls to `gguf_kv_to_str` (by its mangled
/// name) to its `__wrap_` version.
fn metadata_dump() {
    let source = "src/engine/metadata_dump.cpp";
    println!("cargo:rerun-if-changed={source}");
    cc::Build::new()
        .cpp(true)
        .std("c++17")
        .file(source)
        .warnings(true)
        .extra_warnings(true)
        .warnings_into_errors(true)
        .link_lib_modifier("+whole-archive")
        .compile("llama_router_metadata_dump");
    println!("cargo:rustc-link-arg=-Wl,--wrap=_Z14gguf_kv_to_strB5cxx11PK12gguf_contexti");
}
