//! Owns the gRPC `Maintenance` answers (`Status`, `Alarm`, `Defragment`, `Hash`, `HashKV`,
//! `MoveLeader`; `Snapshot` is `snapshot.rs`'s) and the `Cluster` service: one member, which is
//! its own leader, with the store revision standing in for raft's index, and whose membership
//! changes are refused ([`crate::api::membership`]).

use tonic::{Request, Response, Status};

use super::{status, GrpcApi};
use crate::api::membership::{self, MemberChange};
use crate::api::pb::etcdserverpb as pb;
use crate::api::{MEMBER_NAME, REPORTED_ETCD_VERSION};
use crate::protocol::Alarm;

#[tonic::async_trait]
impl pb::maintenance_server::Maintenance for GrpcApi {
    /// Reports an etcd 3.5 version so clients' feature gates turn on (Xline #867); `leader` is
    /// our own member id, and the revision stands in for raft's index and applied index.
    async fn status(&self, request: Request<pb::StatusRequest>) -> Result<Response<pb::StatusResponse>, Status> {
        // A user, as etcd since the fix for CVE-2026-33413 (v3rpc maintenance.go `Status`).
        self.handle().auth().require_user(&self.caller(&request)?)?;
        let rev = self.handle().current_revision();
        let db_size = self.handle().db_size().await.map_err(status)?;
        let alarms = self.handle().alarm(Alarm::Get(None)).await.map_err(status)?;
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
            errors: alarms.iter().map(crate::api::alarm::status_error).chain(self.handle().upstream_error()).collect(),
            db_size_in_use: db_size,
            is_learner: false,
            ..Default::default()
        }))
    }

    /// Lists, raises or clears alarms (etcd: v3_server.go `Alarm`).
    async fn alarm(&self, request: Request<pb::AlarmRequest>) -> Result<Response<pb::AlarmResponse>, Status> {
        let caller = self.caller(&request)?;
        let request = crate::api::alarm::alarm_request(request.into_inner())?;
        let alarms = match request {
            Some(request) => {
                crate::api::alarm::check_alarm(self.handle().auth(), &caller, &request)?;
                self.handle().alarm(request).await.map_err(status)?
            }
            None => Vec::new(),
        };
        // etcd's alarm and defragment answers carry no header.
        Ok(Response::new(pb::AlarmResponse {
            header: None,
            alarms: alarms.iter().map(crate::api::alarm::alarm_member).collect(),
        }))
    }

    /// Flushes and compacts the store's tables off the store's thread (see `Handle::defragment`).
    async fn defragment(
        &self,
        request: Request<pb::DefragmentRequest>,
    ) -> Result<Response<pb::DefragmentResponse>, Status> {
        self.handle().auth().check_admin(&self.caller(&request)?)?;
        self.handle().defragment().await.map_err(status)?;
        Ok(Response::new(pb::DefragmentResponse { header: None }))
    }

    /// etcd's `HashKV` (etcd: mvcc/hash.go): the same operations give the same hash on etcd and
    /// here. The scan runs off the store's thread.
    async fn hash_kv(&self, request: Request<pb::HashKvRequest>) -> Result<Response<pb::HashKvResponse>, Status> {
        self.handle().auth().check_admin(&self.caller(&request)?)?;
        let h = self.handle().hash_kv(request.into_inner().revision).await.map_err(status)?;
        Ok(Response::new(pb::HashKvResponse {
            header: Some(self.header(h.current_revision)),
            hash: h.hash,
            compact_revision: h.compact_revision,
            hash_revision: h.hash_revision,
        }))
    }

    /// A CRC-32C of everything the store holds (etcd hashes its bbolt file; see
    /// docs/etcd-semantics.md, "Integrity").
    async fn hash(&self, request: Request<pb::HashRequest>) -> Result<Response<pb::HashResponse>, Status> {
        self.handle().auth().check_admin(&self.caller(&request)?)?;
        let (hash, rev) = self.handle().hash().await.map_err(status)?;
        Ok(Response::new(pb::HashResponse { header: Some(self.header(rev)), hash }))
    }

    /// etcd `Maintenance.MoveLeader`, admin only: done at once to this member, which leads;
    /// any other target is no member. etcd's answer has no header.
    async fn move_leader(
        &self,
        request: Request<pb::MoveLeaderRequest>,
    ) -> Result<Response<pb::MoveLeaderResponse>, Status> {
        self.handle().auth().check_admin(&self.caller(&request)?)?;
        membership::move_leader(self.inner.header.member_id, request.get_ref().target_id)?;
        Ok(Response::new(pb::MoveLeaderResponse { header: None }))
    }

    /// etcd `Maintenance.Snapshot`: the whole store at one revision, then its sha256.
    async fn snapshot(
        &self,
        request: Request<pb::SnapshotRequest>,
    ) -> Result<Response<super::snapshot::SnapshotStream>, Status> {
        self.handle().auth().check_admin(&self.caller(&request)?)?;
        super::snapshot::snapshot(self).await
    }
}

#[tonic::async_trait]
impl pb::cluster_server::Cluster for GrpcApi {
    async fn member_list(
        &self,
        request: Request<pb::MemberListRequest>,
    ) -> Result<Response<pb::MemberListResponse>, Status> {
        // A user, as etcd since the fix for CVE-2026-33413 (server.go `MemberList`).
        self.handle().auth().require_user(&self.caller(&request)?)?;
        let h = self.inner.header;
        Ok(Response::new(pb::MemberListResponse {
            // etcd's cluster service header carries no revision (etcdserver/api/v3rpc/member.go
            // `ClusterServer.header`).
            header: Some(self.header(0)),
            members: vec![pb::Member {
                id: h.member_id,
                name: MEMBER_NAME.to_string(),
                peer_ur_ls: Vec::new(),
                client_ur_ls: self.inner.client_urls.clone(),
                is_learner: false,
            }],
        }))
    }

    async fn member_add(
        &self,
        request: Request<pb::MemberAddRequest>,
    ) -> Result<Response<pb::MemberAddResponse>, Status> {
        self.handle().auth().check_admin(&self.caller(&request)?)?;
        Err(self.member_change(MemberChange::Add))
    }

    async fn member_remove(
        &self,
        request: Request<pb::MemberRemoveRequest>,
    ) -> Result<Response<pb::MemberRemoveResponse>, Status> {
        self.handle().auth().check_admin(&self.caller(&request)?)?;
        Err(self.member_change(MemberChange::Remove(request.get_ref().id)))
    }

    async fn member_update(
        &self,
        request: Request<pb::MemberUpdateRequest>,
    ) -> Result<Response<pb::MemberUpdateResponse>, Status> {
        self.handle().auth().check_admin(&self.caller(&request)?)?;
        Err(self.member_change(MemberChange::Update(request.get_ref().id)))
    }

    async fn member_promote(
        &self,
        request: Request<pb::MemberPromoteRequest>,
    ) -> Result<Response<pb::MemberPromoteResponse>, Status> {
        self.handle().auth().check_admin(&self.caller(&request)?)?;
        Err(self.member_change(MemberChange::Promote(request.get_ref().id)))
    }
}

impl GrpcApi {
    /// The refusal of `change` ([`membership::member_change`]).
    fn member_change(&self, change: MemberChange) -> Status {
        membership::member_change(self.inner.header.member_id, self.upstream().is_some(), change).into()
    }
}
