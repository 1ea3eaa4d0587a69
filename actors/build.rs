//! Generates etcd's API messages and gRPC services (`api::pb`) from etcd's protos in `proto/`
//! with a pure-Rust protobuf compiler (protox), so a fresh machine needs no `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/etcd/api/etcdserverpb/rpc.proto"];
    println!("cargo:rerun-if-changed=proto");
    let descriptors = protox::compile(protos, ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // Methods we do not serve answer `Unimplemented` at once.
        .generate_default_stubs(true)
        .compile_fds(descriptors)?;
    Ok(())
}
