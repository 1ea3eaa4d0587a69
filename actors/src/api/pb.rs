//! Owns etcd's API messages and service traits, generated from etcd's protos (`actors/proto/`)
//! by `build.rs`: field numbers and names are etcd's, so etcd's own clients read them unchanged.
//! They are the schema both transports speak: gRPC carries them as protobuf, the gateway as
//! grpc-gateway JSON decoded into the same messages (`gateway::decode`).
#![allow(missing_docs, clippy::all, clippy::pedantic)]

/// `mvccpb`: `KeyValue` and `Event`.
pub mod mvccpb {
    tonic::include_proto!("mvccpb");
}

/// `authpb`: users and roles (only referenced by messages; the Auth service is not served).
pub mod authpb {
    tonic::include_proto!("authpb");
}

/// `etcdserverpb`: the KV, Watch, Lease, Cluster, Maintenance and Auth services.
pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
}

/// `v3lockpb`: the Lock service (etcd: server/etcdserver/api/v3lock).
pub mod v3lockpb {
    tonic::include_proto!("v3lockpb");
}

/// `v3electionpb`: the Election service (etcd: server/etcdserver/api/v3election).
pub mod v3electionpb {
    tonic::include_proto!("v3electionpb");
}
