//! Owns the gRPC `KV` service: Range, Put, DeleteRange, Txn, Compact.

use tonic::{Request, Response, Status};

use super::{convert, status, GrpcApi};
use crate::api::pb::etcdserverpb as pb;
use crate::api::{auth, request};

#[tonic::async_trait]
impl pb::kv_server::Kv for GrpcApi {
    async fn range(&self, request: Request<pb::RangeRequest>) -> Result<Response<pb::RangeResponse>, Status> {
        let caller = self.caller(&request)?;
        let req = request.into_inner();
        let linearizable = !req.serializable;
        let req = request::range_request(req)?;
        self.handle().auth().check_range(&caller, &req.range)?;
        if let (Some(upstream), true) = (self.upstream(), linearizable) {
            upstream.linearize().await?;
        }
        let resp = self.handle().range(req).await.map_err(status)?;
        Ok(Response::new(convert::range_response(Some(self.inner.header), resp)))
    }

    async fn put(&self, request: Request<pb::PutRequest>) -> Result<Response<pb::PutResponse>, Status> {
        let caller = self.caller(&request)?;
        let req = request.into_inner();
        self.check_size(&req, &caller)?;
        // What the checks below read: the store refuses the put if it changes before it
        // applies it (`Handle::put_checked`).
        let stamp = self.handle().auth().stamp();
        let lease_keys = auth::lease_keys(self.handle(), self.upstream(), req.lease).await?;
        self.handle().auth().check_put(&caller, &req.key, req.prev_kv, &lease_keys)?;
        if let Some(upstream) = self.upstream() {
            return upstream.put(req).await;
        }
        let resp = self.handle().put_checked(request::put_request(req), stamp).await.map_err(status)?;
        Ok(Response::new(convert::put_response(Some(self.inner.header), resp)))
    }

    async fn delete_range(
        &self,
        request: Request<pb::DeleteRangeRequest>,
    ) -> Result<Response<pb::DeleteRangeResponse>, Status> {
        let caller = self.caller(&request)?;
        let req = request.into_inner();
        self.check_size(&req, &caller)?;
        let forwarded = self.upstream().map(|_| req.clone());
        let req = request::delete_request(req);
        let stamp = self.handle().auth().stamp();
        self.handle().auth().check_delete(&caller, &req.range, req.prev_kv)?;
        if let (Some(upstream), Some(forwarded)) = (self.upstream(), forwarded) {
            return upstream.delete_range(forwarded).await;
        }
        let resp = self.handle().delete_range_checked(req, stamp).await.map_err(status)?;
        Ok(Response::new(convert::delete_response(Some(self.inner.header), resp)))
    }

    async fn txn(&self, request: Request<pb::TxnRequest>) -> Result<Response<pb::TxnResponse>, Status> {
        let caller = self.caller(&request)?;
        let req = request.into_inner();
        if request::txn_is_proposed(&req) {
            self.check_size(&req, &caller)?;
        }
        let forwarded = self.upstream().map(|_| req.clone());
        let req = request::txn_request(req)?;
        let stamp = self.handle().auth().stamp();
        auth::check_txn(self.handle(), self.upstream(), &caller, &req).await?;
        if let (Some(upstream), Some(forwarded)) = (self.upstream(), forwarded) {
            if crate::forward::txn_writes(&forwarded) {
                return upstream.txn(forwarded).await;
            }
            // A read-only txn is a read, answered locally; etcd's txns are linearizable.
            upstream.linearize().await?;
        }
        let resp = self.handle().txn_checked(req, stamp).await.map_err(status)?;
        Ok(Response::new(convert::txn_response(Some(self.inner.header), resp)))
    }

    async fn compact(
        &self,
        request: Request<pb::CompactionRequest>,
    ) -> Result<Response<pb::CompactionResponse>, Status> {
        // The root role, as etcd since the fix for CVE-2026-33413 (v3rpc key.go `Compact`).
        self.handle().auth().check_admin(&self.caller(&request)?)?;
        let req = request.into_inner();
        if let Some(upstream) = self.upstream() {
            return upstream.compact(req).await;
        }
        let rev = self.handle().compact(req.revision, req.physical).await.map_err(status)?;
        Ok(Response::new(pb::CompactionResponse { header: Some(self.header(rev)) }))
    }
}
