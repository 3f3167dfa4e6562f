//! Compiles `proto/` with the pure-Rust protobuf compiler, so no `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files = [
        root.join("sluice/v1/sluice.proto"),
        root.join("sluice/peer/v1/peer.proto"),
        root.join("sluice/peer/v1/shard.proto"),
    ];
    println!("cargo:rerun-if-changed={}", root.display());
    let descriptors = protox::compile(&files, [&root])?;
    // `bytes` fields as `bytes::Bytes`, so record data is never copied.
    tonic_prost_build::configure()
        .bytes(".")
        .compile_fds(descriptors)?;
    Ok(())
}
