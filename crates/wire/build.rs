//! Generates the Protobuf structs of `src/protobuf.rs` from `proto/kefu.proto` (paths in this crate).
//!
//! protox parses the .proto file (no `protoc` needed) and prost-build writes the structs to
//! `OUT_DIR/kefu.v1.rs`. Each struct and frame oneof also derives serde with the JSON shape of
//! docs/protocol.md, so converting between the encodings is serde on one side and prost on the
//! other: a field left out of the JSON takes its Protobuf default, and an unset optional field is
//! left out of the JSON, as `src/protocol.rs` does.

use protox::prost_reflect::DescriptorPool;

const PROTO_FILE: &str = "proto/kefu.proto";

/// Optional fields that the JSON frames carry as `null` when unset instead of leaving them out.
const NULL_WHEN_UNSET: &[&str] = &["kefu.v1.Conversation.assigned_agent"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed={PROTO_FILE}");
    let descriptors = protox::compile([PROTO_FILE], ["proto"])?;
    let pool = DescriptorPool::from_file_descriptor_set(descriptors.clone())?;

    let mut config = prost_build::Config::new();
    config.message_attribute(".", "#[derive(serde::Serialize, serde::Deserialize)] #[serde(default)]");
    for frame in ["ClientFrame", "ServerFrame"] {
        config.enum_attribute(
            format!(".kefu.v1.{frame}.frame"),
            r#"#[derive(serde::Serialize, serde::Deserialize)] #[serde(tag = "type", rename_all = "snake_case")]"#,
        );
    }
    // A read's reader is a sender without a name.
    config.field_attribute(".kefu.v1.Sender.name", r#"#[serde(skip_serializing_if = "String::is_empty")]"#);
    for message in pool.all_messages() {
        for field in message.fields() {
            let in_frame_oneof = field.containing_oneof().is_some_and(|oneof| !oneof.is_synthetic());
            let optional = field.supports_presence() && !field.is_list() && !in_frame_oneof;
            if optional && !NULL_WHEN_UNSET.contains(&field.full_name()) {
                config.field_attribute(
                    format!(".{}", field.full_name()),
                    r#"#[serde(skip_serializing_if = "Option::is_none")]"#,
                );
            }
        }
    }
    config.compile_fds(descriptors)?;
    Ok(())
}
