//! Generates the gRPC services of `src/net/grpc/` from `crates/wire/proto/kefu/api/v1/api.proto`.
//!
//! protox parses the .proto files (no `protoc` needed) and tonic-prost-build writes the messages
//! and service traits to `OUT_DIR/kefu.api.v1.rs`. The chat frames' messages it imports
//! (`kefu.v1`, proto/kefu.proto) are not generated again: they are kefu-wire's own structs, so a
//! conversation or a message has one Rust type on every transport. The encoded descriptors are
//! written next to them for gRPC server reflection.

use std::path::PathBuf;

const PROTO_DIR: &str = "crates/wire/proto";
const API_PROTO: &str = "crates/wire/proto/kefu/api/v1/api.proto";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed={API_PROTO}");
    println!("cargo:rerun-if-changed={PROTO_DIR}/kefu.proto");
    let descriptors = protox::compile([API_PROTO], [PROTO_DIR])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out_dir.join("kefu_api_descriptor.bin"), prost::Message::encode_to_vec(&descriptors))?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_transport(false)
        .extern_path(".kefu.v1", "::kefu_wire::protobuf::messages")
        .compile_fds(descriptors)?;
    Ok(())
}
