//! Owns the gRPC `v3electionpb.Election` service: Campaign, Proclaim, Leader, the Observe
//! stream and Resign, served by the API layer's [`Coordination`](crate::api::Coordination) as
//! the gateway's routes are.

use futures::StreamExt;
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status};

use super::{convert, GrpcApi};
use crate::api::election::{check_proclaim, Proclamation};
use crate::api::pb::v3electionpb as pb;
use crate::api::ApiError;

impl GrpcApi {
    fn leader_response(&self, p: Proclamation) -> pb::LeaderResponse {
        pb::LeaderResponse { header: Some(self.header(p.revision)), kv: Some(convert::into_key_value(p.kv)) }
    }
}

#[tonic::async_trait]
impl pb::election_server::Election for GrpcApi {
    /// Blocks until elected; the client going away ends the call and resigns.
    async fn campaign(&self, request: Request<pb::CampaignRequest>) -> Result<Response<pb::CampaignResponse>, Status> {
        let caller = self.coordination_caller(&request)?;
        let coordination = self.coordination();
        let req = request.into_inner();
        coordination.check_acquire(&caller, &req.name, req.lease).await.map_err(ApiError::into_relayed)?;
        let elected = coordination.campaign(req).await?;
        Ok(Response::new(pb::CampaignResponse {
            header: Some(self.header(elected.revision)),
            leader: Some(elected.leader.into()),
        }))
    }

    async fn proclaim(&self, request: Request<pb::ProclaimRequest>) -> Result<Response<pb::ProclaimResponse>, Status> {
        let caller = self.coordination_caller(&request)?;
        if let Some(leader) = &request.get_ref().leader {
            check_proclaim(self.handle(), self.upstream(), &caller, leader).await.map_err(ApiError::into_relayed)?;
        }
        let rev = self.coordination().proclaim(request.into_inner()).await?;
        Ok(Response::new(pb::ProclaimResponse { header: Some(self.header(rev)) }))
    }

    async fn leader(&self, request: Request<pb::LeaderRequest>) -> Result<Response<pb::LeaderResponse>, Status> {
        let caller = self.coordination_caller(&request)?;
        self.handle()
            .auth()
            .check_coordination(&caller, &request.get_ref().name, false)
            .map_err(ApiError::into_relayed)?;
        let leader = self.coordination().leader(request.into_inner()).await?;
        Ok(Response::new(self.leader_response(leader)))
    }

    /// One response per proclamation; the stream ends (with status OK) when its watch does,
    /// and its watches end when the client goes away.
    async fn observe(
        &self,
        request: Request<pb::LeaderRequest>,
    ) -> Result<Response<BoxStream<pb::LeaderResponse>>, Status> {
        let caller = self.coordination_caller(&request)?;
        self.handle()
            .auth()
            .check_coordination(&caller, &request.get_ref().name, false)
            .map_err(ApiError::into_relayed)?;
        let api = self.clone();
        let stream = self.coordination().observe(request.into_inner()).map(move |p| Ok(api.leader_response(p)));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn resign(&self, request: Request<pb::ResignRequest>) -> Result<Response<pb::ResignResponse>, Status> {
        let caller = self.coordination_caller(&request)?;
        if let Some(leader) = &request.get_ref().leader {
            self.handle().auth().check_leader_key(&caller, &leader.key).map_err(ApiError::into_relayed)?;
        }
        let rev = self.coordination().resign(request.into_inner()).await?;
        Ok(Response::new(pb::ResignResponse { header: Some(self.header(rev)) }))
    }
}
