//! Generates etcd's API messages and gRPC services (`api::pb`, with the lock and election
//! services) from etcd's protos in `proto/` with a pure-Rust protobuf compiler (protox), so a
//! fresh machine needs no `protoc`, and the Watch service a second time with watchkv's own
//! response codec.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/etcd/api/etcdserverpb/rpc.proto",
        "proto/etcd/server/etcdserver/api/v3lock/v3lockpb/v3lock.proto",
        "proto/etcd/server/etcdserver/api/v3election/v3electionpb/v3election.proto",
    ];
    println!("cargo:rerun-if-changed=proto");
    let descriptors = protox::compile(protos, ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // Methods we do not serve answer `Unimplemented` at once.
        .generate_default_stubs(true)
        .compile_fds(descriptors)?;
    // The Watch service once more, under its own name, with a codec that writes responses
    // framed around each event's shared, pre-encoded bytes (src/grpc/wire.rs); the generated
    // `watch_server` above is not served.
    let watch = tonic_build::manual::Service::builder()
        .name("Watch")
        .package("etcdserverpb")
        .method(
            tonic_build::manual::Method::builder()
                .name("watch")
                .route_name("Watch")
                .input_type("crate::api::pb::etcdserverpb::WatchRequest")
                .output_type("crate::grpc::wire::OutgoingWatchResponse")
                .codec_path("crate::grpc::wire::WatchCodec")
                .client_streaming()
                .server_streaming()
                .build(),
        )
        .build();
    tonic_build::manual::Builder::new().build_client(false).compile(&[watch]);
    Ok(())
}
