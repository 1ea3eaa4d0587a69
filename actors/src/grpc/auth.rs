//! Owns the gRPC `Auth` service: each call's caller from its metadata, the service in
//! [`crate::api::auth_service`], and a header on each answer.

use tonic::{Request, Response, Status};

use super::GrpcApi;
use crate::api::auth_service::AuthService;
use crate::api::pb::etcdserverpb as pb;

/// Runs `$call` on the auth service as the request's caller and answers `$response` with a
/// header at the current revision.
macro_rules! header_only {
    ($self:ident, $request:ident, $method:ident, $response:ident) => {{
        let caller = $self.caller(&$request)?;
        AuthService::new($self.handle(), &caller).$method($request.into_inner()).await?;
        Ok(Response::new(pb::$response { header: Some($self.header($self.handle().current_revision())) }))
    }};
}

#[tonic::async_trait]
impl pb::auth_server::Auth for GrpcApi {
    async fn auth_enable(
        &self,
        request: Request<pb::AuthEnableRequest>,
    ) -> Result<Response<pb::AuthEnableResponse>, Status> {
        let caller = self.caller(&request)?;
        AuthService::new(self.handle(), &caller).enable().await?;
        Ok(Response::new(pb::AuthEnableResponse { header: Some(self.header(self.handle().current_revision())) }))
    }

    async fn auth_disable(
        &self,
        request: Request<pb::AuthDisableRequest>,
    ) -> Result<Response<pb::AuthDisableResponse>, Status> {
        let caller = self.caller(&request)?;
        AuthService::new(self.handle(), &caller).disable().await?;
        Ok(Response::new(pb::AuthDisableResponse { header: Some(self.header(self.handle().current_revision())) }))
    }

    async fn auth_status(
        &self,
        request: Request<pb::AuthStatusRequest>,
    ) -> Result<Response<pb::AuthStatusResponse>, Status> {
        let caller = self.caller(&request)?;
        let mut resp = AuthService::new(self.handle(), &caller).status()?;
        resp.header = Some(self.header(self.handle().current_revision()));
        Ok(Response::new(resp))
    }

    async fn authenticate(
        &self,
        request: Request<pb::AuthenticateRequest>,
    ) -> Result<Response<pb::AuthenticateResponse>, Status> {
        let caller = crate::api::auth::Caller::default();
        let mut resp = AuthService::new(self.handle(), &caller).authenticate(request.into_inner()).await?;
        resp.header = Some(self.header(self.handle().current_revision()));
        Ok(Response::new(resp))
    }

    async fn user_add(
        &self,
        request: Request<pb::AuthUserAddRequest>,
    ) -> Result<Response<pb::AuthUserAddResponse>, Status> {
        header_only!(self, request, user_add, AuthUserAddResponse)
    }

    async fn user_get(
        &self,
        request: Request<pb::AuthUserGetRequest>,
    ) -> Result<Response<pb::AuthUserGetResponse>, Status> {
        let caller = self.caller(&request)?;
        let mut resp = AuthService::new(self.handle(), &caller).user_get(request.get_ref())?;
        resp.header = Some(self.header(self.handle().current_revision()));
        Ok(Response::new(resp))
    }

    async fn user_list(
        &self,
        request: Request<pb::AuthUserListRequest>,
    ) -> Result<Response<pb::AuthUserListResponse>, Status> {
        let caller = self.caller(&request)?;
        let mut resp = AuthService::new(self.handle(), &caller).user_list()?;
        resp.header = Some(self.header(self.handle().current_revision()));
        Ok(Response::new(resp))
    }

    async fn user_delete(
        &self,
        request: Request<pb::AuthUserDeleteRequest>,
    ) -> Result<Response<pb::AuthUserDeleteResponse>, Status> {
        header_only!(self, request, user_delete, AuthUserDeleteResponse)
    }

    async fn user_change_password(
        &self,
        request: Request<pb::AuthUserChangePasswordRequest>,
    ) -> Result<Response<pb::AuthUserChangePasswordResponse>, Status> {
        header_only!(self, request, user_change_password, AuthUserChangePasswordResponse)
    }

    async fn user_grant_role(
        &self,
        request: Request<pb::AuthUserGrantRoleRequest>,
    ) -> Result<Response<pb::AuthUserGrantRoleResponse>, Status> {
        header_only!(self, request, user_grant_role, AuthUserGrantRoleResponse)
    }

    async fn user_revoke_role(
        &self,
        request: Request<pb::AuthUserRevokeRoleRequest>,
    ) -> Result<Response<pb::AuthUserRevokeRoleResponse>, Status> {
        header_only!(self, request, user_revoke_role, AuthUserRevokeRoleResponse)
    }

    async fn role_add(
        &self,
        request: Request<pb::AuthRoleAddRequest>,
    ) -> Result<Response<pb::AuthRoleAddResponse>, Status> {
        header_only!(self, request, role_add, AuthRoleAddResponse)
    }

    async fn role_get(
        &self,
        request: Request<pb::AuthRoleGetRequest>,
    ) -> Result<Response<pb::AuthRoleGetResponse>, Status> {
        let caller = self.caller(&request)?;
        let mut resp = AuthService::new(self.handle(), &caller).role_get(request.get_ref())?;
        resp.header = Some(self.header(self.handle().current_revision()));
        Ok(Response::new(resp))
    }

    async fn role_list(
        &self,
        request: Request<pb::AuthRoleListRequest>,
    ) -> Result<Response<pb::AuthRoleListResponse>, Status> {
        let caller = self.caller(&request)?;
        let mut resp = AuthService::new(self.handle(), &caller).role_list()?;
        resp.header = Some(self.header(self.handle().current_revision()));
        Ok(Response::new(resp))
    }

    async fn role_delete(
        &self,
        request: Request<pb::AuthRoleDeleteRequest>,
    ) -> Result<Response<pb::AuthRoleDeleteResponse>, Status> {
        header_only!(self, request, role_delete, AuthRoleDeleteResponse)
    }

    async fn role_grant_permission(
        &self,
        request: Request<pb::AuthRoleGrantPermissionRequest>,
    ) -> Result<Response<pb::AuthRoleGrantPermissionResponse>, Status> {
        header_only!(self, request, role_grant_permission, AuthRoleGrantPermissionResponse)
    }

    async fn role_revoke_permission(
        &self,
        request: Request<pb::AuthRoleRevokePermissionRequest>,
    ) -> Result<Response<pb::AuthRoleRevokePermissionResponse>, Status> {
        header_only!(self, request, role_revoke_permission, AuthRoleRevokePermissionResponse)
    }
}
