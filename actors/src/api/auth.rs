//! Owns authentication and permission checks for both transports (etcd: v3_server.go
//! `AuthInfoFromCtx`, `Authenticate`, `doSerialize`; apply_auth.go; auth/simple_token.go): who a
//! request's caller is (a token from `Authenticate`, or the client certificate's common name),
//! the simple tokens with their TTL, the permission every request needs, and the published
//! view of the auth store that the checks read without a message to the store.
//!
//! The auth store itself belongs to the store actor (`watchkv::auth`, changed only by
//! `AuthChange` messages); after each change it publishes a new [`AuthView`] snapshot, so a
//! check costs a pointer clone and no hop. Tokens live here, in memory, as etcd's simple tokens
//! do: a restart, a password change, deleting the user or disabling auth ends them.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use watchkv::auth::{AuthError, AuthState, PermType};
use watchkv::{KeyRange, LeaseId, RequestOp, TxnRequest};

use super::ApiError;

/// etcd's default simple-token TTL (`--auth-token-ttl`): a token unused this long expires.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(300);
/// etcd's default bcrypt cost (`--bcrypt-cost`).
pub const DEFAULT_BCRYPT_COST: u32 = 10;

/// The auth store a request's permission check read ([`AuthView::stamp`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthStamp {
    revision: u64,
    enabled: bool,
}

/// The latest auth store state, published by the store actor after every change.
#[derive(Debug, Default)]
pub struct AuthView {
    current: RwLock<Arc<AuthState>>,
    /// `current.is_enabled()`, readable without the lock: with auth off (the default) every
    /// request's checks end at this one load.
    enabled: AtomicBool,
}

impl AuthView {
    /// A view starting at `state`.
    #[must_use]
    pub fn new(state: AuthState) -> Self {
        let enabled = AtomicBool::new(state.is_enabled());
        Self { current: RwLock::new(Arc::new(state)), enabled }
    }

    /// Whether auth is enabled.
    #[must_use]
    pub fn is_enabled(&self) -> bool {
        self.enabled.load(Ordering::Acquire)
    }

    /// The current state.
    #[must_use]
    pub fn get(&self) -> Arc<AuthState> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// What a permission check about to run reads: take it before the check, and hand it with
    /// the write, so that the store refuses the write if the auth store changed meanwhile
    /// ([`Self::admits`]).
    #[must_use]
    pub fn stamp(&self) -> AuthStamp {
        if !self.is_enabled() {
            // Off: one load, no lock (the write path's common case). A write checked while
            // auth is off is refused if it is on by then, whatever the revision.
            return AuthStamp { revision: 0, enabled: false };
        }
        let state = self.get();
        AuthStamp { revision: state.revision(), enabled: state.is_enabled() }
    }

    /// Whether a write checked at `stamp` may be applied now: auth is off, or it was on at the
    /// check and nothing has changed since (etcd refuses a request whose header carries an
    /// older auth revision, `ErrAuthOldRevision`: etcdserver/apply_auth.go and auth/store.go
    /// `isOpPermitted`). Enabling auth does not bump the revision, so a write checked while it
    /// was off is refused once it is on.
    #[must_use]
    pub fn admits(&self, stamp: AuthStamp) -> bool {
        if !self.is_enabled() {
            return true;
        }
        stamp.enabled && self.get().revision() == stamp.revision
    }

    /// Replaces the state (the store actor, after a change).
    pub fn publish(&self, state: AuthState) {
        let enabled = state.is_enabled();
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(state);
        self.enabled.store(enabled, Ordering::Release);
    }
}

/// Who is asking: the user a token or a client certificate names, if any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Caller {
    user: Option<String>,
}

impl Caller {
    /// The caller's user name.
    #[must_use]
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }
}

struct Token {
    user: String,
    expires: Instant,
}

/// Authentication and checks, shared by every transport of one store.
pub struct Auth {
    view: Arc<AuthView>,
    tokens: Mutex<HashMap<String, Token>>,
    token_ttl: Duration,
    bcrypt_cost: u32,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth").field("token_ttl", &self.token_ttl).finish_non_exhaustive()
    }
}

fn denied(e: AuthError) -> ApiError {
    ApiError::Store(watchkv::Error::Auth(e))
}

impl Auth {
    /// Checks against `view`; tokens expire after `token_ttl` unused; passwords are hashed at
    /// `bcrypt_cost`.
    #[must_use]
    pub fn new(view: Arc<AuthView>, token_ttl: Duration, bcrypt_cost: u32) -> Self {
        Self { view, tokens: Mutex::new(HashMap::new()), token_ttl, bcrypt_cost }
    }

    /// The published auth store state.
    #[must_use]
    pub fn state(&self) -> Arc<AuthState> {
        self.view.get()
    }

    /// [`AuthView::stamp`]: take it before a write's permission check, and submit the write
    /// with it.
    #[must_use]
    pub fn stamp(&self) -> AuthStamp {
        self.view.stamp()
    }

    /// The bytes etcd's raft entry for a write by `caller` adds to its request header while
    /// auth is on: the `username` and `auth_revision` fields (etcdserver/v3_server.go
    /// `processInternalRaftRequestOnce` sets them from the caller's auth info), for
    /// [`crate::api::request::write_fits`]. Nothing while auth is off.
    #[must_use]
    pub fn raft_header_bytes(&self, caller: &Caller) -> usize {
        use prost::encoding::encoded_len_varint;
        let stamp = self.stamp();
        if !stamp.enabled {
            return 0;
        }
        let user =
            caller.user().filter(|u| !u.is_empty()).map_or(0, |u| 1 + encoded_len_varint(u.len() as u64) + u.len());
        let revision = if stamp.revision == 0 { 0 } else { 1 + encoded_len_varint(stamp.revision) };
        user + revision
    }

    /// The caller of a request that carried `token` (gRPC metadata `token` or `authorization`,
    /// the gateway's `Authorization` header) and came over a connection whose client
    /// certificate named `cert_user`. While auth is disabled everyone is anonymous and tokens
    /// are ignored, as in etcd.
    ///
    /// # Errors
    /// `etcdserver: invalid auth token` for a token that is unknown or expired.
    pub fn caller(&self, token: Option<&str>, cert_user: Option<&str>) -> Result<Caller, ApiError> {
        if !self.view.is_enabled() {
            return Ok(Caller::default());
        }
        // A token that is present but empty is invalid, as in etcd (`AuthInfoFromCtx` looks up
        // whatever the metadata holds), not the same as none.
        if let Some(token) = token {
            let mut tokens = self.tokens.lock().unwrap_or_else(PoisonError::into_inner);
            let now = Instant::now();
            return match tokens.get_mut(token) {
                Some(t) if t.expires > now => {
                    t.expires = now + self.token_ttl;
                    Ok(Caller { user: Some(t.user.clone()) })
                }
                Some(_) => {
                    tokens.remove(token);
                    Err(denied(AuthError::InvalidAuthToken))
                }
                None => Err(denied(AuthError::InvalidAuthToken)),
            };
        }
        Ok(Caller { user: cert_user.map(str::to_string) })
    }

    /// Checks a user's password and hands out a token (etcd `Authenticate`). The bcrypt
    /// comparison runs on a blocking thread.
    ///
    /// # Errors
    /// `authentication is not enabled`, `authentication failed, invalid user ID or password`.
    ///
    /// The password is checked against the auth store as it was before the comparison, which
    /// takes tens of milliseconds; a change published meanwhile (the password changed, the user
    /// deleted, auth disabled) would end the tokens it affects before this one exists. So the
    /// token is handed out only if the store's revision is still the one checked, read under
    /// the token table's lock that the change's [`Self::invalidate`] takes after publishing;
    /// otherwise the check runs again against the new state (etcd: v3_server.go
    /// `Authenticate` loops until `checkedRevision == AuthStore().Revision()`).
    pub async fn authenticate(&self, name: &str, password: &str) -> Result<String, ApiError> {
        loop {
            let state = self.view.get();
            if !state.is_enabled() {
                return Err(denied(AuthError::AuthNotEnabled));
            }
            let Some(hash) = state.user(name).and_then(|u| u.password_hash.clone()) else {
                return Err(denied(AuthError::AuthFailed));
            };
            let password = password.to_string();
            let ok = actix_rt::task::spawn_blocking(move || bcrypt::verify(password, &hash).unwrap_or(false))
                .await
                .unwrap_or(false);
            if !ok {
                return Err(denied(AuthError::AuthFailed));
            }
            let mut tokens = self.tokens.lock().unwrap_or_else(PoisonError::into_inner);
            if self.view.get().revision() != state.revision() {
                continue;
            }
            let token = new_token();
            let now = Instant::now();
            tokens.retain(|_, t| t.expires > now);
            tokens.insert(token.clone(), Token { user: name.to_string(), expires: now + self.token_ttl });
            return Ok(token);
        }
    }

    /// Hashes a new password (on a blocking thread: bcrypt is slow by design), or takes
    /// etcd 3.5's `hashedPassword` (base64 of a bcrypt hash) as given.
    ///
    /// # Errors
    /// A `hashedPassword` that is not base64 of a bcrypt hash.
    pub async fn hash_password(&self, password: &str, hashed: &str) -> Result<String, ApiError> {
        use base64::Engine as _;
        if !hashed.is_empty() {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(hashed)
                .map_err(|e| ApiError::Malformed(format!("hashedPassword: {e}")))?;
            let hash = String::from_utf8(bytes).map_err(|e| ApiError::Malformed(format!("hashedPassword: {e}")))?;
            hash.parse::<bcrypt::HashParts>()
                .map_err(|e| ApiError::Malformed(format!("hashedPassword is not a bcrypt hash: {e}")))?;
            return Ok(hash);
        }
        let (password, cost) = (password.to_string(), self.bcrypt_cost);
        actix_rt::task::spawn_blocking(move || bcrypt::hash(password, cost))
            .await
            .map_err(|_| ApiError::Store(watchkv::Error::Stopped))?
            .map_err(|e| ApiError::Store(watchkv::Error::Internal(format!("hashing a password: {e}"))))
    }

    /// Ends every token of `user` (its password changed or it was deleted), or every token
    /// (`None`: auth was disabled).
    pub fn invalidate(&self, user: Option<&str>) {
        let mut tokens = self.tokens.lock().unwrap_or_else(PoisonError::into_inner);
        match user {
            Some(user) => tokens.retain(|_, t| t.user != user),
            None => tokens.clear(),
        }
    }

    fn check(&self, caller: &Caller, wanted: PermType, range: &KeyRange) -> Result<(), ApiError> {
        if !self.view.is_enabled() {
            return Ok(());
        }
        let (key, end) = range.to_wire();
        self.view.get().check(caller.user(), wanted, &key, &end).map_err(denied)
    }

    /// A range read needs read permission on the range (etcd `IsRangePermitted`).
    ///
    /// # Errors
    /// `permission denied`, `user name is empty`.
    pub fn check_read(&self, caller: &Caller, range: &KeyRange) -> Result<(), ApiError> {
        self.check(caller, PermType::Read, range)
    }

    /// A KV range read: as [`Self::check_read`], except that a range with an empty key is left
    /// to the store, which refuses it with `key is not provided` (etcd validates a request,
    /// `checkRangeRequest` and friends, before its permissions). A watch's empty key is valid
    /// (from the first key on), so watches use [`Self::check_read`].
    ///
    /// # Errors
    /// `permission denied`, `user name is empty`.
    pub fn check_range(&self, caller: &Caller, range: &KeyRange) -> Result<(), ApiError> {
        if range.start().is_empty() {
            return Ok(());
        }
        self.check_read(caller, range)
    }

    /// A put needs write permission on its key, read permission too with `prev_kv`, and write
    /// permission on every key already attached to its lease (etcd `authApplierV3.Put`,
    /// `checkLeasePuts`). An empty key is the store's to refuse.
    ///
    /// # Errors
    /// `permission denied`, `user name is empty`.
    pub fn check_put(
        &self,
        caller: &Caller,
        key: &[u8],
        prev_kv: bool,
        lease_keys: &[Vec<u8>],
    ) -> Result<(), ApiError> {
        if key.is_empty() {
            return Ok(());
        }
        let range = KeyRange::single(key.to_vec());
        self.check(caller, PermType::Write, &range)?;
        if prev_kv {
            self.check(caller, PermType::Read, &range)?;
        }
        self.check_lease_keys(caller, lease_keys)
    }

    /// A delete needs write permission on the range, read permission too with `prev_kv`. An
    /// empty key is the store's to refuse.
    ///
    /// # Errors
    /// `permission denied`, `user name is empty`.
    pub fn check_delete(&self, caller: &Caller, range: &KeyRange, prev_kv: bool) -> Result<(), ApiError> {
        if range.start().is_empty() {
            return Ok(());
        }
        if prev_kv {
            self.check(caller, PermType::Read, range)?;
        }
        self.check(caller, PermType::Write, range)
    }

    /// Revoking a lease (or attaching a key to it) needs write permission on every key it
    /// holds.
    ///
    /// # Errors
    /// `permission denied`, `user name is empty`.
    pub fn check_lease_keys(&self, caller: &Caller, keys: &[Vec<u8>]) -> Result<(), ApiError> {
        keys.iter().try_for_each(|k| self.check(caller, PermType::Write, &KeyRange::single(k.clone())))
    }

    /// A call that needs no permission but a user while auth is on: `Status`, listing alarms,
    /// `MemberList` and the lease calls (etcd: v3_server.go and v3rpc `requireAuthInfo`, since
    /// the fix for CVE-2026-33413 in 3.4.42, 3.5.28 and 3.6.9; before it anyone could call
    /// them).
    ///
    /// # Errors
    /// `user name is empty`.
    pub fn require_user(&self, caller: &Caller) -> Result<(), ApiError> {
        if self.view.is_enabled() && caller.user().is_none() {
            return Err(denied(AuthError::UserEmpty));
        }
        Ok(())
    }

    /// `LeaseTimeToLive`: a user, and asked with `keys`, read permission on every key it lists,
    /// so that a lease does not name keys the caller may not see (etcd: v3_server.go
    /// `LeaseTimeToLive` and `checkLeaseTimeToLive`).
    ///
    /// # Errors
    /// `permission denied`, `user name is empty`.
    pub fn check_lease_time_to_live(
        &self,
        caller: &Caller,
        asked_keys: bool,
        keys: &[Vec<u8>],
    ) -> Result<(), ApiError> {
        self.require_user(caller)?;
        if !asked_keys {
            return Ok(());
        }
        self.check_keys_readable(caller, keys)
    }

    /// Read permission on each of `keys`.
    ///
    /// # Errors
    /// `permission denied`, `user name is empty`.
    pub fn check_keys_readable(&self, caller: &Caller, keys: &[Vec<u8>]) -> Result<(), ApiError> {
        keys.iter().try_for_each(|k| self.check_read(caller, &KeyRange::single(k.clone())))
    }

    /// A txn needs read permission on every compare's range and the permissions of every op
    /// of both branches, nested txns included (etcd `checkTxnAuth`): a put's as a plain put
    /// needs them, `prev_kv` and its lease's keys (`lease_keys`, by lease id) included.
    ///
    /// # Errors
    /// `permission denied`, `user name is empty`.
    pub fn check_txn(
        &self,
        caller: &Caller,
        txn: &TxnRequest,
        lease_keys: &HashMap<LeaseId, Vec<Vec<u8>>>,
    ) -> Result<(), ApiError> {
        if !self.view.is_enabled() {
            return Ok(());
        }
        for c in &txn.compare {
            if !c.range.start().is_empty() {
                self.check(caller, PermType::Read, &c.range)?;
            }
        }
        for op in txn.success.iter().chain(&txn.failure) {
            match op {
                RequestOp::Range(r) => self.check_range(caller, &r.range)?,
                RequestOp::Put(p) => {
                    let keys = lease_keys.get(&p.lease).map_or(&[][..], Vec::as_slice);
                    self.check_put(caller, &p.key, p.prev_kv, keys)?;
                }
                RequestOp::DeleteRange(d) => self.check_delete(caller, &d.range, d.prev_kv)?,
                RequestOp::Txn(t) => self.check_txn(caller, t, lease_keys)?,
                RequestOp::Empty => {}
            }
        }
        Ok(())
    }

    /// A lock or election call on `name`: read permission on the `name/` prefix its recipe
    /// reads, and write permission on it too when the call writes (lock, campaign). etcd checks
    /// the same permissions inside its recipe's KV calls.
    ///
    /// # Errors
    /// `permission denied`, `user name is empty`.
    pub fn check_coordination(&self, caller: &Caller, name: &[u8], writes: bool) -> Result<(), ApiError> {
        if !self.view.is_enabled() {
            return Ok(());
        }
        let mut prefix = name.to_vec();
        prefix.push(b'/');
        let range = KeyRange::prefix(prefix);
        self.check(caller, PermType::Read, &range)?;
        if writes {
            self.check(caller, PermType::Write, &range)?;
        }
        Ok(())
    }

    /// `Proclaim` or `Resign` on a leader key: etcd's recipe runs one txn that compares the
    /// key's create revision, then puts or deletes that key (election.go `Proclaim`, `Resign`),
    /// so the call needs read and write permission on the key itself. The client sends the key,
    /// and nothing makes it lie under the election's `name/`, so the name grants nothing here.
    ///
    /// # Errors
    /// `permission denied`, `user name is empty`.
    pub fn check_leader_key(&self, caller: &Caller, key: &[u8]) -> Result<(), ApiError> {
        if key.is_empty() {
            // The recipe's txn refuses it: `key is not provided`.
            return Ok(());
        }
        let range = KeyRange::single(key.to_vec());
        self.check(caller, PermType::Read, &range)?;
        self.check(caller, PermType::Write, &range)
    }

    /// Administration (auth management, defragment, snapshot, hashes) needs the root role
    /// (etcd `IsAdminPermitted`).
    ///
    /// # Errors
    /// `permission denied`, `user name is empty`, `user name not found`.
    pub fn check_admin(&self, caller: &Caller) -> Result<(), ApiError> {
        if !self.view.is_enabled() {
            return Ok(());
        }
        self.view.get().check_admin(caller.user()).map_err(denied)
    }

    /// Whether auth is enabled.
    #[must_use]
    pub fn is_enabled(&self) -> bool {
        self.view.is_enabled()
    }
}

/// A txn's permissions ([`Auth::check_txn`]) with the keys of every lease its puts attach to,
/// read first ([`lease_keys`]).
///
/// # Errors
/// `permission denied`, `user name is empty`; on a mirror, upstream's error.
pub async fn check_txn(
    handle: &crate::Handle,
    upstream: Option<&crate::forward::Upstream>,
    caller: &Caller,
    txn: &TxnRequest,
) -> Result<(), ApiError> {
    let auth = handle.auth();
    if !auth.is_enabled() {
        return Ok(());
    }
    let mut leases = HashSet::new();
    collect_put_leases(txn, &mut leases);
    let mut lease_keys = HashMap::new();
    for id in leases {
        lease_keys.insert(id, self::lease_keys(handle, upstream, id).await?);
    }
    auth.check_txn(caller, txn, &lease_keys)
}

fn collect_put_leases(txn: &TxnRequest, into: &mut HashSet<LeaseId>) {
    for op in txn.success.iter().chain(&txn.failure) {
        match op {
            RequestOp::Put(p) if p.lease != 0 => {
                into.insert(p.lease);
            }
            RequestOp::Txn(t) => collect_put_leases(t, into),
            _ => {}
        }
    }
}

/// `LeaseRevoke` of lease `id`: a user, and write permission on every key the lease holds
/// (etcd apply_auth.go `LeaseRevoke`), on a mirror as upstream lists them ([`lease_keys`]).
///
/// # Errors
/// `permission denied`, `user name is empty`; on a mirror, upstream's error.
pub async fn check_lease_revoke(
    handle: &crate::Handle,
    upstream: Option<&crate::forward::Upstream>,
    caller: &Caller,
    id: watchkv::LeaseId,
) -> Result<(), ApiError> {
    handle.auth().require_user(caller)?;
    check_lease_attach(handle, upstream, caller, id).await
}

/// A keep-alive of lease `id`: a user, and unless it has the root role, write permission on
/// every key the lease holds, as a put to them would need (etcd: v3_server.go
/// `checkLeaseRenew`, since 3.5.28).
///
/// # Errors
/// `permission denied`, `user name is empty`; on a mirror, upstream's error.
pub async fn check_lease_keep_alive(
    handle: &crate::Handle,
    upstream: Option<&crate::forward::Upstream>,
    caller: &Caller,
    id: watchkv::LeaseId,
) -> Result<(), ApiError> {
    let auth = handle.auth();
    if !lease_keys_to_check(auth, caller)? {
        return Ok(());
    }
    let keys = lease_keys(handle, upstream, id).await?;
    auth.check_lease_keys(caller, &keys)
}

/// Whether a keep-alive or a lease listing by `caller` must check the leases' keys: auth is
/// on and the caller, who must be a user, lacks the root role.
fn lease_keys_to_check(auth: &Auth, caller: &Caller) -> Result<bool, ApiError> {
    if !auth.is_enabled() {
        return Ok(false);
    }
    auth.require_user(caller)?;
    Ok(auth.check_admin(caller).is_err())
}

/// `LeaseLeases` answering `ids`: a user, and unless it has the root role, read permission on
/// every key of every lease listed (etcd: v3_server.go `checkLeaseLeases`, since 3.5.28).
///
/// # Errors
/// `permission denied`, `user name is empty`; on a mirror, upstream's error.
pub async fn check_lease_leases(
    handle: &crate::Handle,
    upstream: Option<&crate::forward::Upstream>,
    caller: &Caller,
    ids: &[watchkv::LeaseId],
) -> Result<(), ApiError> {
    let auth = handle.auth();
    if !lease_keys_to_check(auth, caller)? {
        return Ok(());
    }
    for &id in ids {
        auth.check_keys_readable(caller, &lease_keys(handle, upstream, id).await?)?;
    }
    Ok(())
}

/// The keys attached to lease `id` when auth is enabled and the checks need them (an unknown
/// lease has none: the write itself then fails with etcd's lease error). On a mirror
/// (`upstream`) the lease and its keys live upstream, so they are upstream's answer to
/// `LeaseTimeToLive` with keys.
///
/// # Errors
/// On a mirror, upstream's error: the check then fails rather than pass unchecked.
pub async fn lease_keys(
    handle: &crate::Handle,
    upstream: Option<&crate::forward::Upstream>,
    id: watchkv::LeaseId,
) -> Result<Vec<Vec<u8>>, ApiError> {
    if id == 0 || !handle.auth().is_enabled() {
        return Ok(Vec::new());
    }
    if let Some(upstream) = upstream {
        let req = crate::api::pb::etcdserverpb::LeaseTimeToLiveRequest { id, keys: true };
        return Ok(upstream.lease_time_to_live(req).await?.into_inner().keys);
    }
    Ok(handle.lease_time_to_live(id, true).await.map(|(status, _)| status.keys).unwrap_or_default())
}

/// A put that attaches its key to `lease` needs write permission on every key the lease already
/// holds (etcd: apply_auth.go `checkLeasePuts`): the lock and election recipes' puts pass it.
///
/// # Errors
/// `permission denied`, `user name is empty`; on a mirror, upstream's error.
pub async fn check_lease_attach(
    handle: &crate::Handle,
    upstream: Option<&crate::forward::Upstream>,
    caller: &Caller,
    lease: watchkv::LeaseId,
) -> Result<(), ApiError> {
    let keys = lease_keys(handle, upstream, lease).await?;
    handle.auth().check_lease_keys(caller, &keys)
}

/// A simple token: 16 random letters, as etcd's `genTokenPrefix`, and a random suffix in place
/// of etcd's raft index.
fn new_token() -> String {
    const LETTERS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let prefix: String =
        (0..16).map(|_| char::from(LETTERS[usize::from(rand::random::<u8>()) % LETTERS.len()])).collect();
    format!("{prefix}.{}", rand::random::<u32>())
}

#[cfg(test)]
mod tests {
    use watchkv::auth::{AuthOp, ROOT};

    use super::*;

    fn hash(password: &str) -> String {
        bcrypt::hash(password, 4).expect("bcrypt")
    }

    /// An `Authenticate` whose password check started before a password change (and so
    /// before the change ended the user's tokens) gets no token out of the old password.
    #[actix_rt::test]
    async fn a_password_changed_while_authenticate_compares_gives_no_token_for_the_old_one() {
        let mut state = AuthState::default();
        for op in [
            AuthOp::UserAdd { name: ROOT.into(), password_hash: Some(hash("rootpw")) },
            AuthOp::RoleAdd(ROOT.into()),
            AuthOp::UserGrantRole { user: ROOT.into(), role: ROOT.into() },
            AuthOp::UserAdd { name: "alice".into(), password_hash: Some(hash("old")) },
            AuthOp::Enable,
        ] {
            state.apply(op).expect("set up the auth store");
        }
        let view = Arc::new(AuthView::new(state.clone()));
        let auth = Auth::new(Arc::clone(&view), DEFAULT_TOKEN_TTL, 4);

        let mut authenticate = Box::pin(auth.authenticate("alice", "old"));
        // The first poll reads the store and starts the comparison on a blocking thread.
        assert!(futures::poll!(&mut authenticate).is_pending());
        // The change, as the store actor and `Handle::auth_change` make it: publish, then end
        // the user's tokens.
        state
            .apply(AuthOp::UserChangePassword { name: "alice".into(), password_hash: hash("new") })
            .expect("change the password");
        view.publish(state);
        auth.invalidate(Some("alice"));

        match authenticate.await {
            Err(e) => assert_eq!(e.to_string(), denied(AuthError::AuthFailed).to_string()),
            Ok(token) => {
                let caller = auth.caller(Some(&token), None);
                panic!("a token from the old password, which now gives {caller:?}");
            }
        }
        let token = auth.authenticate("alice", "new").await.expect("the new password");
        assert!(auth.caller(Some(&token), None).is_ok());
    }
}
