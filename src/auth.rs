//! Owns the auth store's state and rules (etcd: server/auth/store.go, range_perm_cache.go): users,
//! roles and their key permissions, whether auth is enabled, the auth revision every change
//! bumps, etcd's management rules and error texts, and the permission checks. Keeping it on
//! disk is the store's (`KvStore::apply_auth`, records in the `meta` keyspace); hashing
//! passwords and tokens are the runtime's, so nothing slow runs where writes are applied.

use std::collections::BTreeMap;

/// The name of etcd's root user and root role.
pub const ROOT: &str = "root";

/// A permission's kind, with etcd's wire numbers (`authpb.Permission.Type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PermType {
    /// Read.
    Read,
    /// Write.
    Write,
    /// Both.
    ReadWrite,
}

impl PermType {
    /// The kind for an `authpb.Permission.Type` number.
    #[must_use]
    pub fn from_wire(n: i32) -> Option<Self> {
        match n {
            0 => Some(Self::Read),
            1 => Some(Self::Write),
            2 => Some(Self::ReadWrite),
            _ => None,
        }
    }

    /// The kind's `authpb.Permission.Type` number.
    #[must_use]
    pub fn wire(self) -> i32 {
        match self {
            Self::Read => 0,
            Self::Write => 1,
            Self::ReadWrite => 2,
        }
    }

    fn allows(self, wanted: PermType) -> bool {
        self == PermType::ReadWrite || self == wanted
    }
}

/// A permission on a key (`range_end` empty), a range, a prefix or everything from a key
/// (`range_end` `"\0"`), as etcd stores it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Permission {
    /// What it allows.
    pub perm_type: PermType,
    /// The first key.
    pub key: Vec<u8>,
    /// The end of the range (exclusive); empty for one key, `"\0"` for everything from `key`.
    pub range_end: Vec<u8>,
}

/// A user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// The name.
    pub name: String,
    /// The bcrypt hash of the password; `None` for a user created with `no_password` (it can
    /// only authenticate with a client certificate).
    pub password_hash: Option<String>,
    /// Granted roles, sorted.
    pub roles: Vec<String>,
}

impl User {
    fn has_root_role(&self) -> bool {
        self.roles.binary_search_by(|r| r.as_str().cmp(ROOT)).is_ok()
    }
}

/// A role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Role {
    /// The name.
    pub name: String,
    /// Granted permissions, sorted by key.
    pub perms: Vec<Permission>,
}

/// An auth error, with etcd's text (etcd: api/v3rpc/rpctypes/error.go, the `ErrGRPC*` forms).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// `AuthEnable` without a root user.
    #[error("etcdserver: root user does not exist")]
    RootUserNotExist,
    /// `AuthEnable` while the root user lacks the root role.
    #[error("etcdserver: root user does not have root role")]
    RootRoleNotExist,
    /// `UserAdd` of an existing user.
    #[error("etcdserver: user name already exists")]
    UserAlreadyExist,
    /// An empty user name, or a request without credentials while auth is enabled.
    #[error("etcdserver: user name is empty")]
    UserEmpty,
    /// An unknown user.
    #[error("etcdserver: user name not found")]
    UserNotFound,
    /// `RoleAdd` of an existing role.
    #[error("etcdserver: role name already exists")]
    RoleAlreadyExist,
    /// An unknown role.
    #[error("etcdserver: role name not found")]
    RoleNotFound,
    /// An empty role name.
    #[error("etcdserver: role name is empty")]
    RoleEmpty,
    /// A wrong user or password.
    #[error("etcdserver: authentication failed, invalid user ID or password")]
    AuthFailed,
    /// `RoleGrantPermission` without a permission.
    #[error("etcdserver: permission not given")]
    PermissionNotGiven,
    /// The caller may not do this.
    #[error("etcdserver: permission denied")]
    PermissionDenied,
    /// `UserRevokeRole` of a role the user does not have.
    #[error("etcdserver: role is not granted to the user")]
    RoleNotGranted,
    /// `RoleRevokePermission` of a permission the role does not have.
    #[error("etcdserver: permission is not granted to the role")]
    PermissionNotGranted,
    /// `Authenticate` while auth is disabled.
    #[error("etcdserver: authentication is not enabled")]
    AuthNotEnabled,
    /// A token that is unknown or has expired.
    #[error("etcdserver: invalid auth token")]
    InvalidAuthToken,
    /// Deleting the root user or role, or revoking root's root role, while auth is enabled.
    #[error("etcdserver: invalid auth management")]
    InvalidAuthMgmt,
    /// A request whose permissions were checked against an auth store that changed before it
    /// was applied (etcd `ErrAuthOldRevision`); the client retries it.
    #[error("etcdserver: revision of auth store is old")]
    AuthOldRevision,
}

/// A change to the auth store, as the runtime hands it to the store (passwords already hashed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthOp {
    /// `AuthEnable`.
    Enable,
    /// `AuthDisable`.
    Disable,
    /// `UserAdd`; `password_hash` is `None` for a user without a password.
    UserAdd {
        /// The name.
        name: String,
        /// The bcrypt hash.
        password_hash: Option<String>,
    },
    /// `UserDelete`.
    UserDelete(String),
    /// `UserChangePassword`.
    UserChangePassword {
        /// The user.
        name: String,
        /// The new bcrypt hash.
        password_hash: String,
    },
    /// `UserGrantRole`.
    UserGrantRole {
        /// The user.
        user: String,
        /// The role.
        role: String,
    },
    /// `UserRevokeRole`.
    UserRevokeRole {
        /// The user.
        user: String,
        /// The role.
        role: String,
    },
    /// `RoleAdd`.
    RoleAdd(String),
    /// `RoleDelete`.
    RoleDelete(String),
    /// `RoleGrantPermission`; `None` when the request carried no permission.
    RoleGrantPermission {
        /// The role.
        role: String,
        /// The permission.
        perm: Option<Permission>,
    },
    /// `RoleRevokePermission`.
    RoleRevokePermission {
        /// The role.
        role: String,
        /// The permission's key.
        key: Vec<u8>,
        /// The permission's range end.
        range_end: Vec<u8>,
    },
}

/// A record an [`AuthOp`] changed, for the store to write (`None`: deleted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthRecord {
    /// A user.
    User(String, Option<User>),
    /// A role.
    Role(String, Option<Role>),
    /// The enabled flag.
    Enabled(bool),
    /// The auth revision.
    Revision(u64),
}

/// The auth store's state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthState {
    enabled: bool,
    revision: u64,
    users: BTreeMap<String, User>,
    roles: BTreeMap<String, Role>,
}

/// Whether a permission names keys: a key, and an end that is none (the key alone), `"\0"`
/// (every key from it) or after the key. etcd 3.4.23 stored an empty key or an inverted range
/// and matched nothing with it; 3.4.25 and 3.5.8 refuse them (etcd: auth/store.go
/// `isValidPermissionRange`), as here, rather than keep a grant that reads as more than it
/// gives (`etcdctl role grant-permission r read --prefix ""` sends key `"\0"`, not `""`).
fn is_valid_permission_range(key: &[u8], range_end: &[u8]) -> bool {
    !key.is_empty() && (range_end.is_empty() || range_end == b"\0" || key < range_end)
}

impl AuthState {
    /// Rebuilds the state from the records an earlier run wrote.
    #[must_use]
    pub fn from_records(records: impl IntoIterator<Item = AuthRecord>) -> Self {
        let mut state = Self::default();
        for record in records {
            state.set(record);
        }
        state
    }

    fn set(&mut self, record: AuthRecord) {
        match record {
            AuthRecord::User(name, Some(u)) => {
                self.users.insert(name, u);
            }
            AuthRecord::User(name, None) => {
                self.users.remove(&name);
            }
            AuthRecord::Role(name, Some(r)) => {
                self.roles.insert(name, r);
            }
            AuthRecord::Role(name, None) => {
                self.roles.remove(&name);
            }
            AuthRecord::Enabled(on) => self.enabled = on,
            AuthRecord::Revision(rev) => self.revision = rev,
        }
    }

    /// Whether auth is enabled.
    #[must_use]
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// The auth revision: bumped by every change (etcd `authStore.Revision`).
    #[must_use]
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// A user by name.
    #[must_use]
    pub fn user(&self, name: &str) -> Option<&User> {
        self.users.get(name)
    }

    /// Every user name, sorted.
    #[must_use]
    pub fn user_names(&self) -> Vec<String> {
        self.users.keys().cloned().collect()
    }

    /// A role by name.
    #[must_use]
    pub fn role(&self, name: &str) -> Option<&Role> {
        self.roles.get(name)
    }

    /// Every role name, sorted.
    #[must_use]
    pub fn role_names(&self) -> Vec<String> {
        self.roles.keys().cloned().collect()
    }

    /// A role's permissions as `RoleGet` answers them: the root role has every permission.
    ///
    /// # Errors
    /// `RoleNotFound`.
    pub fn role_perms(&self, name: &str) -> Result<Vec<Permission>, AuthError> {
        let role = self.roles.get(name).ok_or(AuthError::RoleNotFound)?;
        if role.name == ROOT {
            return Ok(vec![Permission { perm_type: PermType::ReadWrite, key: Vec::new(), range_end: vec![0] }]);
        }
        Ok(role.perms.clone())
    }

    /// Applies `op` with etcd's rules; returns the records it changed, the revision bump
    /// included (empty when it changed nothing, as a repeated enable or a duplicate grant).
    ///
    /// # Errors
    /// etcd's error for the request.
    pub fn apply(&mut self, op: AuthOp) -> Result<Vec<AuthRecord>, AuthError> {
        let mut changed = match op {
            AuthOp::Enable => {
                if self.enabled {
                    return Ok(Vec::new());
                }
                let root = self.users.get(ROOT).ok_or(AuthError::RootUserNotExist)?;
                if !root.has_root_role() {
                    return Err(AuthError::RootRoleNotExist);
                }
                // etcd does not bump the revision on enable.
                self.enabled = true;
                return Ok(vec![AuthRecord::Enabled(true)]);
            }
            AuthOp::Disable => {
                if !self.enabled {
                    return Ok(Vec::new());
                }
                self.enabled = false;
                vec![AuthRecord::Enabled(false)]
            }
            AuthOp::UserAdd { name, password_hash } => {
                if name.is_empty() {
                    return Err(AuthError::UserEmpty);
                }
                if self.users.contains_key(&name) {
                    return Err(AuthError::UserAlreadyExist);
                }
                let user = User { name: name.clone(), password_hash, roles: Vec::new() };
                vec![AuthRecord::User(name, Some(user))]
            }
            AuthOp::UserDelete(name) => {
                if self.enabled && name == ROOT {
                    return Err(AuthError::InvalidAuthMgmt);
                }
                if !self.users.contains_key(&name) {
                    return Err(AuthError::UserNotFound);
                }
                vec![AuthRecord::User(name, None)]
            }
            AuthOp::UserChangePassword { name, password_hash } => {
                let user = self.users.get(&name).ok_or(AuthError::UserNotFound)?;
                let mut user = user.clone();
                // A user without a password keeps none (etcd ignores the new one).
                if user.password_hash.is_some() {
                    user.password_hash = Some(password_hash);
                }
                vec![AuthRecord::User(name, Some(user))]
            }
            AuthOp::UserGrantRole { user, role } => {
                let mut u = self.users.get(&user).ok_or(AuthError::UserNotFound)?.clone();
                if role != ROOT && !self.roles.contains_key(&role) {
                    return Err(AuthError::RoleNotFound);
                }
                match u.roles.binary_search(&role) {
                    // etcd ignores a duplicate grant, without a revision bump.
                    Ok(_) => return Ok(Vec::new()),
                    Err(at) => u.roles.insert(at, role),
                }
                vec![AuthRecord::User(user, Some(u))]
            }
            AuthOp::UserRevokeRole { user, role } => {
                if self.enabled && user == ROOT && role == ROOT {
                    return Err(AuthError::InvalidAuthMgmt);
                }
                let mut u = self.users.get(&user).ok_or(AuthError::UserNotFound)?.clone();
                let before = u.roles.len();
                u.roles.retain(|r| *r != role);
                if u.roles.len() == before {
                    return Err(AuthError::RoleNotGranted);
                }
                vec![AuthRecord::User(user, Some(u))]
            }
            AuthOp::RoleAdd(name) => {
                if name.is_empty() {
                    return Err(AuthError::RoleEmpty);
                }
                if self.roles.contains_key(&name) {
                    return Err(AuthError::RoleAlreadyExist);
                }
                vec![AuthRecord::Role(name.clone(), Some(Role { name, perms: Vec::new() }))]
            }
            AuthOp::RoleDelete(name) => {
                if self.enabled && name == ROOT {
                    return Err(AuthError::InvalidAuthMgmt);
                }
                if !self.roles.contains_key(&name) {
                    return Err(AuthError::RoleNotFound);
                }
                let mut records = vec![AuthRecord::Role(name.clone(), None)];
                for u in self.users.values().filter(|u| u.roles.contains(&name)) {
                    let mut u = u.clone();
                    u.roles.retain(|r| *r != name);
                    records.push(AuthRecord::User(u.name.clone(), Some(u)));
                }
                records
            }
            AuthOp::RoleGrantPermission { role, perm } => {
                let perm = perm.ok_or(AuthError::PermissionNotGiven)?;
                if !is_valid_permission_range(&perm.key, &perm.range_end) {
                    return Err(AuthError::InvalidAuthMgmt);
                }
                let mut r = self.roles.get(&role).ok_or(AuthError::RoleNotFound)?.clone();
                match r.perms.iter_mut().find(|p| p.key == perm.key && p.range_end == perm.range_end) {
                    Some(existing) => existing.perm_type = perm.perm_type,
                    None => {
                        r.perms.push(perm);
                        r.perms.sort_by(|a, b| a.key.cmp(&b.key));
                    }
                }
                vec![AuthRecord::Role(role, Some(r))]
            }
            AuthOp::RoleRevokePermission { role, key, range_end } => {
                let mut r = self.roles.get(&role).ok_or(AuthError::RoleNotFound)?.clone();
                let before = r.perms.len();
                r.perms.retain(|p| p.key != key || p.range_end != range_end);
                if r.perms.len() == before {
                    return Err(AuthError::PermissionNotGranted);
                }
                vec![AuthRecord::Role(role, Some(r))]
            }
        };
        self.revision += 1;
        changed.push(AuthRecord::Revision(self.revision));
        for record in &changed {
            self.set(record.clone());
        }
        Ok(changed)
    }

    /// Whether `user` (`None`: no credentials) may do `wanted` on `key` (`range_end` empty) or
    /// on the range `[key, range_end)` (`"\0"`: to the end), as etcd's `isOpPermitted`: always
    /// while auth is disabled; the root role may do anything; otherwise the user's roles'
    /// permissions of that kind must cover the whole range (for one key: contain it).
    ///
    /// # Errors
    /// `UserEmpty` without credentials, `PermissionDenied` otherwise.
    pub fn check(&self, user: Option<&str>, wanted: PermType, key: &[u8], range_end: &[u8]) -> Result<(), AuthError> {
        if !self.enabled {
            return Ok(());
        }
        let name = user.filter(|u| !u.is_empty()).ok_or(AuthError::UserEmpty)?;
        let u = self.users.get(name).ok_or(AuthError::PermissionDenied)?;
        if u.has_root_role() {
            return Ok(());
        }
        // Each granted interval as [start, end) with `None` for "to the end".
        let mut granted: Vec<(&[u8], Option<Vec<u8>>)> = Vec::new();
        for role in u.roles.iter().filter_map(|r| self.roles.get(r)) {
            for p in role.perms.iter().filter(|p| p.perm_type.allows(wanted)) {
                let end = match p.range_end.as_slice() {
                    [] => Some(point_end(&p.key)),
                    [0] => None,
                    end => Some(end.to_vec()),
                };
                granted.push((&p.key, end));
            }
        }
        let permitted = if range_end.is_empty() {
            granted.iter().any(|(start, end)| *start <= key && end.as_deref().is_none_or(|e| key < e))
        } else {
            covers(granted, key, (range_end != [0]).then_some(range_end))
        };
        if permitted {
            Ok(())
        } else {
            Err(AuthError::PermissionDenied)
        }
    }

    /// Whether `user` has the root role (etcd `IsAdminPermitted`); always while auth is
    /// disabled.
    ///
    /// # Errors
    /// `UserEmpty` without credentials, `UserNotFound`, `PermissionDenied`.
    pub fn check_admin(&self, user: Option<&str>) -> Result<(), AuthError> {
        if !self.enabled {
            return Ok(());
        }
        let name = user.filter(|u| !u.is_empty()).ok_or(AuthError::UserEmpty)?;
        let u = self.users.get(name).ok_or(AuthError::UserNotFound)?;
        if u.has_root_role() {
            Ok(())
        } else {
            Err(AuthError::PermissionDenied)
        }
    }

    /// Whether `user` has `role` (etcd `HasRole`).
    #[must_use]
    pub fn has_role(&self, user: &str, role: &str) -> bool {
        self.users.get(user).is_some_and(|u| u.roles.iter().any(|r| r == role))
    }
}

/// The end of the one-key interval `[key, key + "\0")`.
fn point_end(key: &[u8]) -> Vec<u8> {
    let mut end = key.to_vec();
    end.push(0);
    end
}

/// Whether the union of `granted` covers `[start, end)` (`end` `None`: to the end of the key
/// space), as etcd's interval tree's `Contains`.
fn covers(mut granted: Vec<(&[u8], Option<Vec<u8>>)>, start: &[u8], end: Option<&[u8]>) -> bool {
    granted.sort_by(|a, b| a.0.cmp(b.0));
    let mut reached = start.to_vec();
    for (s, e) in granted {
        if s > reached.as_slice() {
            break;
        }
        match e {
            None => return true,
            Some(e) if e > reached => reached = e,
            Some(_) => {}
        }
        if end.is_some_and(|end| reached.as_slice() >= end) {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn perm(t: PermType, key: &str, end: &[u8]) -> Permission {
        Permission { perm_type: t, key: key.as_bytes().to_vec(), range_end: end.to_vec() }
    }

    fn state_with_user(perms: Vec<Permission>) -> AuthState {
        let mut s = AuthState::default();
        let ops = [
            AuthOp::UserAdd { name: ROOT.into(), password_hash: Some("h".into()) },
            AuthOp::UserGrantRole { user: ROOT.into(), role: ROOT.into() },
            AuthOp::UserAdd { name: "u".into(), password_hash: Some("h".into()) },
            AuthOp::RoleAdd("r".into()),
            AuthOp::UserGrantRole { user: "u".into(), role: "r".into() },
        ];
        for op in ops {
            s.apply(op).expect("setup");
        }
        for p in perms {
            s.apply(AuthOp::RoleGrantPermission { role: "r".into(), perm: Some(p) }).expect("grant");
        }
        s.apply(AuthOp::Enable).expect("enable");
        s
    }

    #[test]
    fn enable_needs_a_root_user_with_the_root_role() {
        let mut s = AuthState::default();
        assert_eq!(s.apply(AuthOp::Enable), Err(AuthError::RootUserNotExist));
        s.apply(AuthOp::UserAdd { name: ROOT.into(), password_hash: None }).expect("add");
        assert_eq!(s.apply(AuthOp::Enable), Err(AuthError::RootRoleNotExist));
        s.apply(AuthOp::UserGrantRole { user: ROOT.into(), role: ROOT.into() })
            .expect("root role needs no role object");
        let rev = s.revision();
        assert_eq!(s.apply(AuthOp::Enable), Ok(vec![AuthRecord::Enabled(true)]));
        assert_eq!(s.revision(), rev, "enable does not bump the revision");
        assert_eq!(s.apply(AuthOp::Enable), Ok(Vec::new()), "enabling twice is a no-op");
        assert_eq!(s.apply(AuthOp::UserDelete(ROOT.into())), Err(AuthError::InvalidAuthMgmt));
        assert_eq!(
            s.apply(AuthOp::UserRevokeRole { user: ROOT.into(), role: ROOT.into() }),
            Err(AuthError::InvalidAuthMgmt)
        );
    }

    #[test]
    fn management_errors_are_etcds() {
        let mut s = AuthState::default();
        assert_eq!(s.apply(AuthOp::UserAdd { name: String::new(), password_hash: None }), Err(AuthError::UserEmpty));
        assert_eq!(s.apply(AuthOp::RoleAdd(String::new())), Err(AuthError::RoleEmpty));
        s.apply(AuthOp::UserAdd { name: "a".into(), password_hash: Some("h".into()) }).expect("add");
        assert_eq!(
            s.apply(AuthOp::UserAdd { name: "a".into(), password_hash: None }),
            Err(AuthError::UserAlreadyExist)
        );
        assert_eq!(
            s.apply(AuthOp::UserGrantRole { user: "a".into(), role: "nope".into() }),
            Err(AuthError::RoleNotFound)
        );
        assert_eq!(
            s.apply(AuthOp::UserGrantRole { user: "nope".into(), role: "r".into() }),
            Err(AuthError::UserNotFound)
        );
        s.apply(AuthOp::RoleAdd("r".into())).expect("role");
        assert_eq!(s.apply(AuthOp::RoleAdd("r".into())), Err(AuthError::RoleAlreadyExist));
        assert_eq!(
            s.apply(AuthOp::UserRevokeRole { user: "a".into(), role: "r".into() }),
            Err(AuthError::RoleNotGranted)
        );
        assert_eq!(
            s.apply(AuthOp::RoleRevokePermission { role: "r".into(), key: b"k".to_vec(), range_end: Vec::new() }),
            Err(AuthError::PermissionNotGranted)
        );
        assert_eq!(
            s.apply(AuthOp::RoleGrantPermission { role: "r".into(), perm: None }),
            Err(AuthError::PermissionNotGiven)
        );
        // etcd 3.5.8's `isValidPermissionRange`: an empty key, or an end not after the key.
        for (key, end) in [("", &b""[..]), ("", b"\0"), ("", b"z"), ("b", b"a"), ("b", b"b")] {
            let grant = AuthOp::RoleGrantPermission { role: "r".into(), perm: Some(perm(PermType::Read, key, end)) };
            assert_eq!(s.apply(grant), Err(AuthError::InvalidAuthMgmt), "{key:?}..{end:?}");
        }
        for (key, end) in [("\0", &b"\0"[..]), ("a", b""), ("a", b"\0"), ("a", b"b")] {
            let grant = AuthOp::RoleGrantPermission { role: "r".into(), perm: Some(perm(PermType::Read, key, end)) };
            s.apply(grant).unwrap_or_else(|e| panic!("{key:?}..{end:?}: {e}"));
        }
        s.apply(AuthOp::UserGrantRole { user: "a".into(), role: "r".into() }).expect("grant");
        let rev = s.revision();
        assert_eq!(s.apply(AuthOp::UserGrantRole { user: "a".into(), role: "r".into() }), Ok(Vec::new()));
        assert_eq!(s.revision(), rev, "a duplicate grant changes nothing");
        s.apply(AuthOp::RoleDelete("r".into())).expect("delete role");
        assert!(s.user("a").is_some_and(|u| u.roles.is_empty()), "deleting a role revokes it from every user");
    }

    #[test]
    fn permissions_cover_keys_ranges_prefixes_and_from_key() {
        let s = state_with_user(vec![
            perm(PermType::Read, "a", b""),
            perm(PermType::ReadWrite, "p/", b"p0"),
            perm(PermType::Write, "w", b"x"),
            perm(PermType::Read, "x", b"y"),
            perm(PermType::Read, "y", b"\0"),
        ]);
        let u = Some("u");
        assert_eq!(s.check(u, PermType::Read, b"a", b""), Ok(()));
        assert_eq!(s.check(u, PermType::Write, b"a", b""), Err(AuthError::PermissionDenied));
        assert_eq!(s.check(u, PermType::Read, b"a", b"a\0"), Ok(()), "the point as a range");
        assert_eq!(s.check(u, PermType::Read, b"a", b"b"), Err(AuthError::PermissionDenied));
        assert_eq!(s.check(u, PermType::Write, b"p/1", b""), Ok(()));
        assert_eq!(s.check(u, PermType::Read, b"p/", b"p0"), Ok(()), "the prefix itself");
        assert_eq!(s.check(u, PermType::Read, b"p", b"p0"), Err(AuthError::PermissionDenied));
        assert_eq!(s.check(u, PermType::Write, b"wa", b"wz"), Ok(()));
        // Two grants next to each other cover a range across both; from-key covers to the end.
        assert_eq!(s.check(u, PermType::Read, b"x", b"\0"), Ok(()));
        assert_eq!(s.check(u, PermType::Read, b"xa", b"z"), Ok(()));
        assert_eq!(s.check(u, PermType::Write, b"x", b""), Err(AuthError::PermissionDenied));
        assert_eq!(s.check(None, PermType::Read, b"a", b""), Err(AuthError::UserEmpty));
        assert_eq!(s.check(Some("nobody"), PermType::Read, b"a", b""), Err(AuthError::PermissionDenied));
        assert_eq!(s.check(Some(ROOT), PermType::Write, b"anything", b"\0"), Ok(()));
        assert_eq!(s.check_admin(u), Err(AuthError::PermissionDenied));
        assert_eq!(s.check_admin(Some(ROOT)), Ok(()));
    }

    #[test]
    fn records_rebuild_the_same_state() {
        let mut s = AuthState::default();
        let mut log = Vec::new();
        for op in [
            AuthOp::UserAdd { name: ROOT.into(), password_hash: Some("h".into()) },
            AuthOp::UserGrantRole { user: ROOT.into(), role: ROOT.into() },
            AuthOp::RoleAdd("r".into()),
            AuthOp::RoleGrantPermission { role: "r".into(), perm: Some(perm(PermType::Read, "k", b"")) },
            AuthOp::Enable,
            AuthOp::RoleDelete("r".into()),
        ] {
            log.extend(s.apply(op).expect("op"));
        }
        assert_eq!(AuthState::from_records(log), s);
    }
}
