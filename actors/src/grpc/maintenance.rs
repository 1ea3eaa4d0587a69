//! Owns the gRPC `Maintenance.Status` and `Cluster.MemberList` answers: one member, which is
//! its own leader, with the store revision standing in for raft's index. `Snapshot` is
//! `snapshot.rs`'s.

use tonic::{Request, Response, Status};

use super::{status, GrpcApi};
use crate::api::pb::etcdserverpb as pb;
use crate::api::{MEMBER_NAME, REPORTED_ETCD_VERSION};

#[tonic::async_trait]
impl pb::maintenance_server::Maintenance for GrpcApi {
    /// Reports an etcd 3.5 version so clients' feature gates turn on (Xline #867); `leader` is
    /// our own member id, and the revision stands in for raft's index and applied index.
    async fn status(&self, _request: Request<pb::StatusRequest>) -> Result<Response<pb::StatusResponse>, Status> {
        let rev = self.handle().current_revision();
        let db_size = self.handle().db_size().await.map_err(status)?;
        let db_size = i64::try_from(db_size).unwrap_or(i64::MAX);
        let h = self.inner.header;
        let index = u64::try_from(rev).unwrap_or(0);
        Ok(Response::new(pb::StatusResponse {
            header: Some(self.header(rev)),
            version: REPORTED_ETCD_VERSION.to_string(),
            db_size,
            leader: h.member_id,
            raft_index: index,
            raft_term: h.raft_term,
            raft_applied_index: index,
            errors: Vec::new(),
            db_size_in_use: db_size,
            is_learner: false,
            ..Default::default()
        }))
    }

    /// etcd `Maintenance.Snapshot`: the whole store at one revision, then its sha256.
    async fn snapshot(
        &self,
        _request: Request<pb::SnapshotRequest>,
    ) -> Result<Response<super::snapshot::SnapshotStream>, Status> {
        super::snapshot::snapshot(self).await
    }
}

#[tonic::async_trait]
impl pb::cluster_server::Cluster for GrpcApi {
    async fn member_list(
        &self,
        _request: Request<pb::MemberListRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        let h = self.inner.header;
        Ok(Response::new(pb::MemberListResponse {
            header: Some(self.header(self.handle().current_revision())),
            members: vec![pb::Member {
                id: h.member_id,
                name: MEMBER_NAME.to_string(),
                peer_ur_ls: Vec::new(),
                client_ur_ls: self.inner.client_urls.clone(),
                is_learner: false,
            }],
        }))
    }
}
