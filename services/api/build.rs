//! Compiles `proto/` with the pure-Rust `protox` compiler (no `protoc` needed)
//! and writes the descriptor set that server reflection serves.

use prost::Message;
use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "touchstone/common/v1/common.proto",
    "touchstone/register/v1/register.proto",
    "touchstone/complaints/v1/complaints.proto",
    "touchstone/feedback/v1/feedback.proto",
    "touchstone/kpi/v1/kpi.proto",
    "touchstone/gateway/v1/gateway.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    println!("cargo:rerun-if-changed={}", root.display());
    // Worktrees of this repository may share one target directory, where
    // this crate's build directory is the same for all of them; the
    // directory a build runs from tells them apart, so that each gets the
    // code of its own protos rather than of whichever ran last.
    println!("cargo:rerun-if-env-changed=PWD");
    let fds = protox::compile(PROTOS, [&root])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("touchstone_descriptor.bin"), fds.encode_to_vec())?;
    let mut config = tonic_prost_build::Config::new();
    config.enable_type_names();
    tonic_prost_build::configure()
        // tonic-prost's codec plus the request checks every service shares (src/codec.rs).
        .codec_path("crate::codec::Codec")
        .build_client(true)
        .build_server(true)
        .compile_fds_with_config(fds, config)?;
    Ok(())
}
