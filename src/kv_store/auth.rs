//! Owns keeping the auth store on disk (etcd: server/auth/store.go `commitRevision`,
//! schema/auth*.go): applying an [`AuthOp`] to the state and writing the records it changed
//! under `auth/` in the `meta` keyspace in one synced batch, and reading them back on open.

use super::KvStore;
use crate::auth::{AuthOp, AuthRecord, AuthState};
use crate::codec;
use crate::error::{Error, Result};

/// Meta keys of the auth store: this prefix, then `user/<name>`, `role/<name>`, `enabled` or
/// `revision`.
pub(super) const META_AUTH_PREFIX: &[u8] = b"auth/";

fn record_key(record: &AuthRecord) -> Vec<u8> {
    let mut key = META_AUTH_PREFIX.to_vec();
    match record {
        AuthRecord::User(name, _) => {
            key.extend_from_slice(b"user/");
            key.extend_from_slice(name.as_bytes());
        }
        AuthRecord::Role(name, _) => {
            key.extend_from_slice(b"role/");
            key.extend_from_slice(name.as_bytes());
        }
        AuthRecord::Enabled(_) => key.extend_from_slice(b"enabled"),
        AuthRecord::Revision(_) => key.extend_from_slice(b"revision"),
    }
    key
}

impl KvStore {
    /// Reads the auth store an earlier run wrote (on open).
    pub(super) fn restore_auth(&mut self) -> Result<()> {
        let mut records = Vec::new();
        for (key, value) in self.backend.meta_bytes_with_prefix(META_AUTH_PREFIX)? {
            let record = codec::decode_auth_record(&value)
                .map_err(|reason| Error::Corrupt { revision: String::from_utf8_lossy(&key).into_owned(), reason })?;
            records.push(record);
        }
        if !records.iter().any(|r| matches!(r, AuthRecord::Revision(_))) {
            // etcd's `NewAuthStore` starts a fresh auth store at revision 1.
            let first = AuthRecord::Revision(1);
            let mut batch = self.backend.batch();
            if let Some(value) = codec::encode_auth_record(&first) {
                batch.put_meta_bytes(&record_key(&first), value);
            }
            batch.commit()?;
            records.push(first);
        }
        self.auth = AuthState::from_records(records);
        Ok(())
    }

    /// The auth store's state.
    #[must_use]
    pub fn auth(&self) -> &AuthState {
        &self.auth
    }

    /// Applies a change to the auth store and makes it durable before returning (etcd applies
    /// auth requests through raft and force-commits the backend).
    ///
    /// # Errors
    /// etcd's auth error for the request (`Error::Auth`), or a storage error (the change is
    /// then not applied).
    pub fn apply_auth(&mut self, op: AuthOp) -> Result<()> {
        self.check_writable()?;
        let mut next = self.auth.clone();
        let records = next.apply(op).map_err(Error::Auth)?;
        if records.is_empty() {
            return Ok(());
        }
        let mut batch = self.backend.batch();
        for record in &records {
            let key = record_key(record);
            match codec::encode_auth_record(record) {
                Some(value) => batch.put_meta_bytes(&key, value),
                None => batch.delete_meta(&key),
            }
        }
        batch.commit()?;
        self.backend.sync()?;
        self.auth = next;
        Ok(())
    }
}
