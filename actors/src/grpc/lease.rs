//! Owns the gRPC `Lease` service: Grant, Revoke, the KeepAlive stream, TimeToLive, Leases.

use futures::StreamExt;
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status, Streaming};

use super::{status, GrpcApi};
use crate::api::pb::etcdserverpb as pb;

#[tonic::async_trait]
impl pb::lease_server::Lease for GrpcApi {
    async fn lease_grant(
        &self,
        request: Request<pb::LeaseGrantRequest>,
    ) -> Result<Response<pb::LeaseGrantResponse>, Status> {
        // A user, as etcd since the fix for CVE-2026-33413 (v3_server.go `LeaseGrant`).
        self.handle().auth().require_user(&self.caller(&request)?)?;
        let req = request.into_inner();
        if let Some(upstream) = self.upstream() {
            return upstream.lease_grant(req).await;
        }
        let (id, ttl, rev) = self.handle().lease_grant(req.id, req.ttl).await.map_err(status)?;
        Ok(Response::new(pb::LeaseGrantResponse { header: Some(self.header(rev)), id, ttl, error: String::new() }))
    }

    async fn lease_revoke(
        &self,
        request: Request<pb::LeaseRevokeRequest>,
    ) -> Result<Response<pb::LeaseRevokeResponse>, Status> {
        let caller = self.caller(&request)?;
        let req = request.into_inner();
        let id = req.id;
        crate::api::auth::check_lease_revoke(self.handle(), self.upstream(), &caller, id).await?;
        if let Some(upstream) = self.upstream() {
            return upstream.lease_revoke(req).await;
        }
        let rev = self.handle().lease_revoke(id).await.map_err(status)?;
        Ok(Response::new(pb::LeaseRevokeResponse { header: Some(self.header(rev)) }))
    }

    /// One response per request, in order; an unknown lease answers TTL 0 rather than ending
    /// the stream, as etcd's `LeaseKeepAlive` does. The stream ends when the client's does.
    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<pb::LeaseKeepAliveRequest>>,
    ) -> Result<Response<BoxStream<pb::LeaseKeepAliveResponse>>, Status> {
        let caller = self.caller(&request)?;
        self.handle().auth().require_user(&caller)?;
        if let Some(upstream) = self.upstream() {
            // Upstream renews; its keys are not checked per renewal here (a user is).
            return upstream.lease_keep_alive(request.into_inner()).await;
        }
        let api = self.clone();
        let caller = std::sync::Arc::new(caller);
        let responses = request.into_inner().then(move |item| {
            let (api, caller) = (api.clone(), std::sync::Arc::clone(&caller));
            async move {
                let id = item?.id;
                crate::api::auth::check_lease_keep_alive(api.handle(), None, &caller, id).await?;
                let (ttl, rev) = api.handle().lease_keep_alive_answer(id).await.map_err(status)?;
                Ok(pb::LeaseKeepAliveResponse { header: Some(api.header(rev)), id, ttl })
            }
        });
        Ok(Response::new(Box::pin(responses)))
    }

    /// An unknown lease answers TTL -1, not an error (etcd; `etcdctl` prints "already expired").
    async fn lease_time_to_live(
        &self,
        request: Request<pb::LeaseTimeToLiveRequest>,
    ) -> Result<Response<pb::LeaseTimeToLiveResponse>, Status> {
        let caller = self.caller(&request)?;
        let req = request.into_inner();
        let asked_keys = req.keys;
        if let Some(upstream) = self.upstream() {
            let resp = upstream.lease_time_to_live(req).await?;
            self.handle().auth().check_lease_time_to_live(&caller, asked_keys, &resp.get_ref().keys)?;
            return Ok(resp);
        }
        let (s, rev) = self.handle().lease_time_to_live_answer(req.id, req.keys).await.map_err(status)?;
        self.handle().auth().check_lease_time_to_live(&caller, asked_keys, &s.keys)?;
        let resp = pb::LeaseTimeToLiveResponse {
            header: Some(self.header(rev)),
            id: s.id,
            ttl: s.ttl,
            granted_ttl: s.granted_ttl,
            keys: s.keys,
        };
        Ok(Response::new(resp))
    }

    async fn lease_leases(
        &self,
        request: Request<pb::LeaseLeasesRequest>,
    ) -> Result<Response<pb::LeaseLeasesResponse>, Status> {
        let caller = self.caller(&request)?;
        self.handle().auth().require_user(&caller)?;
        if let Some(upstream) = self.upstream() {
            let resp = upstream.lease_leases(request.into_inner()).await?;
            let ids: Vec<i64> = resp.get_ref().leases.iter().map(|l| l.id).collect();
            crate::api::auth::check_lease_leases(self.handle(), Some(upstream), &caller, &ids).await?;
            return Ok(resp);
        }
        let (ids, rev) = self.handle().leases().await.map_err(status)?;
        crate::api::auth::check_lease_leases(self.handle(), None, &caller, &ids).await?;
        Ok(Response::new(pb::LeaseLeasesResponse {
            header: Some(self.header(rev)),
            leases: ids.into_iter().map(|id| pb::LeaseStatus { id }).collect(),
        }))
    }
}
