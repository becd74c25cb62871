//! Compiles `proto/llmgw/v1/*.proto` into Rust with protox (a protobuf
//! compiler written in Rust) feeding tonic-prost-build: no `protoc` binary is
//! needed on the build machine, and every machine generates the same code.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "llmgw/v1/errors.proto",
    "llmgw/v1/raft.proto",
    "llmgw/v1/admin.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("proto");
    for file in PROTOS {
        println!("cargo:rerun-if-changed={}", root.join(file).display());
    }
    // protox reports errors with the file, line and column at fault.
    let fds = protox::compile(PROTOS, [&root])?;
    tonic_prost_build::configure()
        // The paths above are already declared; tonic-prost-build would
        // otherwise name them relative to a protoc include path.
        .emit_rerun_if_changed(false)
        .compile_fds(fds)?;
    Ok(())
}
