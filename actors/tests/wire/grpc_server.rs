//! A server process with a gRPC channel to it and its own member id, for tests that run the
//! same gRPC steps on etcd and watchkv and name members the same way on both.

use tonic::transport::Channel;
use watchkv_actors::grpc::pb::etcdserverpb as pb;

use super::{Proc, DEADLINE};

/// One server under test: its process, a gRPC channel to it, and its own member id.
pub struct GrpcServer {
    pub proc: Proc,
    pub channel: Channel,
    pub member: u64,
}

impl GrpcServer {
    /// Connects to `proc` over gRPC and asks `Status` for its member id.
    ///
    /// # Panics
    /// If the server cannot be reached or gives no header.
    pub fn connect(proc: Proc, rt: &tokio::runtime::Runtime) -> Self {
        let channel = rt.block_on(async {
            Channel::from_shared(format!("http://127.0.0.1:{}", proc.port))
                .expect("endpoint")
                .connect_timeout(DEADLINE)
                .timeout(DEADLINE)
                .connect()
                .await
                .unwrap_or_else(|e| panic!("{}: gRPC connect: {e}", proc.name))
        });
        let status = rt
            .block_on(pb::maintenance_client::MaintenanceClient::new(channel.clone()).status(pb::StatusRequest {}))
            .unwrap_or_else(|e| panic!("{}: Status: {e}", proc.name))
            .into_inner();
        let member = status.header.map(|h| h.member_id).expect("Status has a header");
        Self { proc, channel, member }
    }

    /// Names a member id the same way on both servers: `self` for the server's own.
    pub fn member_name(&self, id: u64) -> String {
        if id == self.member {
            "self".to_string()
        } else {
            id.to_string()
        }
    }

    /// The member id `name` stands for: `self`, or a number.
    ///
    /// # Panics
    /// If `name` is neither.
    pub fn member_id(&self, name: &str) -> u64 {
        if name == "self" {
            self.member
        } else {
            name.parse().expect("a member id")
        }
    }
}
