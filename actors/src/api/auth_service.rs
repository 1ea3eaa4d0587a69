//! Owns etcd's `Auth` service as both transports serve it (etcd: v3_server.go `AuthEnable` …
//! `RoleRevokePermission`, apply_auth.go `needAdminPermission`, `UserGet`, `RoleGet`): each
//! request checked for the caller (administration needs the root role; a user may read
//! itself and its roles), passwords hashed off the store's thread, the change sent to the
//! store, and etcd's answer. Answers carry no header here; the transport adds it.

use watchkv::auth::{AuthError, AuthOp, PermType, Permission};

use super::auth::Caller;
use super::pb::{authpb, etcdserverpb as pb};
use super::ApiError;
use crate::Handle;

/// The `Auth` service for one caller.
pub struct AuthService<'a> {
    handle: &'a Handle,
    caller: &'a Caller,
}

impl<'a> AuthService<'a> {
    /// The service as `caller` sees it.
    #[must_use]
    pub fn new(handle: &'a Handle, caller: &'a Caller) -> Self {
        Self { handle, caller }
    }

    fn admin(&self) -> Result<(), ApiError> {
        self.handle.auth().check_admin(self.caller)
    }

    async fn change(&self, op: AuthOp) -> Result<(), ApiError> {
        self.admin()?;
        Ok(self.handle.auth_change(op).await?)
    }

    /// `AuthEnable`.
    pub async fn enable(&self) -> Result<(), ApiError> {
        self.change(AuthOp::Enable).await
    }

    /// `AuthDisable`.
    pub async fn disable(&self) -> Result<(), ApiError> {
        self.change(AuthOp::Disable).await
    }

    /// `AuthStatus`: enabled and the auth revision.
    pub fn status(&self) -> Result<pb::AuthStatusResponse, ApiError> {
        self.admin()?;
        let state = self.handle.auth().state();
        Ok(pb::AuthStatusResponse { header: None, enabled: state.is_enabled(), auth_revision: state.revision() })
    }

    /// `Authenticate`: a token for the user.
    pub async fn authenticate(&self, r: pb::AuthenticateRequest) -> Result<pb::AuthenticateResponse, ApiError> {
        let token = self.handle.auth().authenticate(&r.name, &r.password).await?;
        Ok(pb::AuthenticateResponse { header: None, token })
    }

    /// `UserAdd`.
    pub async fn user_add(&self, r: pb::AuthUserAddRequest) -> Result<(), ApiError> {
        self.admin()?;
        let no_password = r.options.is_some_and(|o| o.no_password);
        let password_hash = if no_password {
            None
        } else {
            Some(self.handle.auth().hash_password(&r.password, &r.hashed_password).await?)
        };
        self.change(AuthOp::UserAdd { name: r.name, password_hash }).await
    }

    /// `UserGet`: a user's roles. A user may read itself without the root role.
    pub fn user_get(&self, r: &pb::AuthUserGetRequest) -> Result<pb::AuthUserGetResponse, ApiError> {
        if let Err(e) = self.admin() {
            if self.caller.user() != Some(r.name.as_str()) {
                return Err(e);
            }
        }
        let state = self.handle.auth().state();
        let user = state.user(&r.name).ok_or(ApiError::Store(watchkv::Error::Auth(AuthError::UserNotFound)))?;
        Ok(pb::AuthUserGetResponse { header: None, roles: user.roles.clone() })
    }

    /// `UserList`.
    pub fn user_list(&self) -> Result<pb::AuthUserListResponse, ApiError> {
        self.admin()?;
        Ok(pb::AuthUserListResponse { header: None, users: self.handle.auth().state().user_names() })
    }

    /// `UserDelete`.
    pub async fn user_delete(&self, r: pb::AuthUserDeleteRequest) -> Result<(), ApiError> {
        self.change(AuthOp::UserDelete(r.name)).await
    }

    /// `UserChangePassword`.
    pub async fn user_change_password(&self, r: pb::AuthUserChangePasswordRequest) -> Result<(), ApiError> {
        self.admin()?;
        let password_hash = self.handle.auth().hash_password(&r.password, &r.hashed_password).await?;
        self.change(AuthOp::UserChangePassword { name: r.name, password_hash }).await
    }

    /// `UserGrantRole`.
    pub async fn user_grant_role(&self, r: pb::AuthUserGrantRoleRequest) -> Result<(), ApiError> {
        self.change(AuthOp::UserGrantRole { user: r.user, role: r.role }).await
    }

    /// `UserRevokeRole`.
    pub async fn user_revoke_role(&self, r: pb::AuthUserRevokeRoleRequest) -> Result<(), ApiError> {
        self.change(AuthOp::UserRevokeRole { user: r.name, role: r.role }).await
    }

    /// `RoleAdd`.
    pub async fn role_add(&self, r: pb::AuthRoleAddRequest) -> Result<(), ApiError> {
        self.change(AuthOp::RoleAdd(r.name)).await
    }

    /// `RoleGet`: a role's permissions. A user may read its own roles without the root role.
    pub fn role_get(&self, r: &pb::AuthRoleGetRequest) -> Result<pb::AuthRoleGetResponse, ApiError> {
        let state = self.handle.auth().state();
        if let Err(e) = self.admin() {
            if !self.caller.user().is_some_and(|u| state.has_role(u, &r.role)) {
                return Err(e);
            }
        }
        let perms = state.role_perms(&r.role).map_err(|e| ApiError::Store(watchkv::Error::Auth(e)))?;
        let perm = perms
            .into_iter()
            .map(|p| authpb::Permission { perm_type: p.perm_type.wire(), key: p.key, range_end: p.range_end })
            .collect();
        Ok(pb::AuthRoleGetResponse { header: None, perm })
    }

    /// `RoleList`.
    pub fn role_list(&self) -> Result<pb::AuthRoleListResponse, ApiError> {
        self.admin()?;
        Ok(pb::AuthRoleListResponse { header: None, roles: self.handle.auth().state().role_names() })
    }

    /// `RoleDelete`.
    pub async fn role_delete(&self, r: pb::AuthRoleDeleteRequest) -> Result<(), ApiError> {
        self.change(AuthOp::RoleDelete(r.role)).await
    }

    /// `RoleGrantPermission`.
    pub async fn role_grant_permission(&self, r: pb::AuthRoleGrantPermissionRequest) -> Result<(), ApiError> {
        let perm = match r.perm {
            Some(p) => Some(Permission {
                perm_type: PermType::from_wire(p.perm_type)
                    .ok_or_else(|| ApiError::Malformed(format!("unknown permission type {}", p.perm_type)))?,
                key: p.key,
                range_end: p.range_end,
            }),
            None => None,
        };
        self.change(AuthOp::RoleGrantPermission { role: r.name, perm }).await
    }

    /// `RoleRevokePermission`.
    pub async fn role_revoke_permission(&self, r: pb::AuthRoleRevokePermissionRequest) -> Result<(), ApiError> {
        self.change(AuthOp::RoleRevokePermission { role: r.role, key: r.key, range_end: r.range_end }).await
    }
}
