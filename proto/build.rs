//! Compiles `tandem/v1/*.proto` without a system `protoc`: `protox` parses the
//! files in pure Rust and `tonic-prost-build` generates code from the
//! resulting descriptor set, which is also kept for gRPC server reflection.

use std::path::PathBuf;

use prost::Message;

const PROTOS: &[&str] = &[
    "tandem/v1/search.proto",
    "tandem/v1/index.proto",
    "tandem/v1/model.proto",
    "tandem/v1/faults.proto",
    "tandem/v1/admin.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=tandem");
    let fds = protox::compile(PROTOS, ["."])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out_dir.join("tandem_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        // JSON for the router's console and the CLI's `--json`: every
        // message serialises with its proto field names.
        .type_attribute(".tandem.v1", "#[derive(serde::Serialize)]")
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
