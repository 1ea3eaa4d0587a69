//! Owns the gRPC `v3lockpb.Lock` service: Lock, Unlock, served by the API layer's
//! [`Coordination`](crate::api::Coordination) as the gateway's routes are.

use tonic::{Request, Response, Status};

use super::GrpcApi;
use crate::api::pb::v3lockpb as pb;
use crate::api::ApiError;

#[tonic::async_trait]
impl pb::lock_server::Lock for GrpcApi {
    /// Blocks until the lock is held; the client going away ends the call and deletes its key.
    async fn lock(&self, request: Request<pb::LockRequest>) -> Result<Response<pb::LockResponse>, Status> {
        let caller = self.coordination_caller(&request)?;
        let coordination = self.coordination();
        let req = request.into_inner();
        coordination.check_acquire(&caller, &req.name, req.lease).await.map_err(ApiError::into_relayed)?;
        let locked = coordination.lock(req).await?;
        Ok(Response::new(pb::LockResponse { header: Some(self.header(locked.revision)), key: locked.key }))
    }

    async fn unlock(&self, request: Request<pb::UnlockRequest>) -> Result<Response<pb::UnlockResponse>, Status> {
        let caller = self.coordination_caller(&request)?;
        let key = watchkv::KeyRange::single(request.get_ref().key.clone());
        self.handle().auth().check_delete(&caller, &key, false).map_err(ApiError::into_relayed)?;
        let rev = self.coordination().unlock(request.into_inner()).await?;
        Ok(Response::new(pb::UnlockResponse { header: Some(self.header(rev)) }))
    }
}
