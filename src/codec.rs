//! Owns the on-disk record encoding: the only module that names `bincode` (pinned `=2.0.1`,
//! unmaintained upstream: RUSTSEC-2025-0141), so that the codec can be swapped in one place.
//!
//! Every decoder takes bytes that may come from a damaged disk: it never panics, caps what it
//! allocates, and reports what was wrong as a string for `Error::Corrupt`.

use bincode::{Decode, Encode};

use crate::kv::{KeyValue, LeaseId};
use crate::revision::Revision;

/// Largest allocation a decoder may make for one record; a corrupt length prefix beyond it is an
/// error instead of an out-of-memory abort.
const DECODE_LIMIT: usize = 256 << 20;

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<DECODE_LIMIT>()
}

/// What a revision row holds: the key's new state, and a pointer to the key's previous row.
///
/// Field order matters: [`decode_row_header`] decodes a prefix of these fields and skips the
/// value, which is what makes rebuilding the index on open cheap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// The key's state after the change. For a tombstone only `key` is meaningful.
    pub kv: KeyValue,
    /// The revision of the key's previous row (the state at `mod_revision - 1`), if the key
    /// existed before this change. Lets the catch-up path find `prev_kv` without the index.
    pub prev: Option<Revision>,
}

/// The fields of a row without its value (see [`decode_row_header`]).
#[derive(Debug, Clone, PartialEq, Eq, Decode)]
pub struct RowHeader {
    /// The key.
    pub key: Vec<u8>,
    /// As in [`KeyValue`].
    pub create_revision: i64,
    /// As in [`KeyValue`].
    pub mod_revision: i64,
    /// As in [`KeyValue`].
    pub version: i64,
    /// As in [`KeyValue`].
    pub lease: LeaseId,
}

#[derive(Encode)]
struct RowOut<'a> {
    key: &'a [u8],
    create_revision: i64,
    mod_revision: i64,
    version: i64,
    lease: LeaseId,
    prev: Option<(i64, i64)>,
    value: &'a [u8],
}

#[derive(Decode)]
struct RowIn {
    key: Vec<u8>,
    create_revision: i64,
    mod_revision: i64,
    version: i64,
    lease: LeaseId,
    prev: Option<(i64, i64)>,
    value: Vec<u8>,
}

/// Encodes a revision row.
#[must_use]
pub fn encode_row(kv: &KeyValue, prev: Option<Revision>) -> Vec<u8> {
    let out = RowOut {
        key: &kv.key,
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        lease: kv.lease,
        prev: prev.map(|r| (r.main, r.sub)),
        value: &kv.value,
    };
    // Encoding into a Vec cannot fail for these field types.
    bincode::encode_to_vec(out, config()).unwrap_or_default()
}

/// Decodes a revision row.
///
/// # Errors
/// Returns a description of the damage if the bytes are not a complete row.
pub fn decode_row(bytes: &[u8]) -> Result<Row, String> {
    let (row, used): (RowIn, usize) = bincode::decode_from_slice(bytes, config()).map_err(|e| e.to_string())?;
    if used != bytes.len() {
        return Err(format!("{} trailing bytes", bytes.len() - used));
    }
    Ok(Row {
        kv: KeyValue {
            key: row.key,
            create_revision: row.create_revision,
            mod_revision: row.mod_revision,
            version: row.version,
            value: row.value,
            lease: row.lease,
        },
        prev: row.prev.map(|(main, sub)| Revision::new(main, sub)),
    })
}

/// Returns a row's key, read in place: no other field is decoded and nothing is allocated, so a
/// scan can skip the rows no watcher wants for the cost of one length prefix.
///
/// # Errors
/// Returns a description of the damage if the bytes do not start with a key.
pub fn row_key(bytes: &[u8]) -> Result<&[u8], String> {
    bincode::borrow_decode_from_slice::<&[u8], _>(bytes, config()).map(|(key, _)| key).map_err(|e| e.to_string())
}

/// Decodes only the key and revision fields of a row, skipping its value.
///
/// # Errors
/// Returns a description of the damage if the bytes do not start with a row header.
pub fn decode_row_header(bytes: &[u8]) -> Result<RowHeader, String> {
    bincode::decode_from_slice(bytes, config()).map(|(h, _)| h).map_err(|e| e.to_string())
}

/// A persisted lease: its id and granted TTL in seconds (etcd persists the same two fields).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub struct LeaseRecord {
    /// The lease id.
    pub id: LeaseId,
    /// The granted TTL in seconds.
    pub ttl: i64,
}

/// Encodes a lease record.
#[must_use]
pub fn encode_lease(lease: &LeaseRecord) -> Vec<u8> {
    bincode::encode_to_vec(lease, config()).unwrap_or_default()
}

/// Decodes a lease record.
///
/// # Errors
/// Returns a description of the damage if the bytes are not a lease record.
pub fn decode_lease(bytes: &[u8]) -> Result<LeaseRecord, String> {
    bincode::decode_from_slice(bytes, config()).map(|(l, _)| l).map_err(|e| e.to_string())
}

/// What an auth record holds on disk (see [`crate::auth::AuthRecord`]).
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
enum AuthRecordOut {
    User { name: String, password_hash: Option<String>, roles: Vec<String> },
    Role { name: String, perms: Vec<(i32, Vec<u8>, Vec<u8>)> },
    Enabled(bool),
    Revision(u64),
}

/// Encodes an auth record that is present (a deleted user or role is a deleted key).
#[must_use]
pub fn encode_auth_record(record: &crate::auth::AuthRecord) -> Option<Vec<u8>> {
    use crate::auth::AuthRecord;
    let out = match record {
        AuthRecord::User(_, Some(u)) => {
            AuthRecordOut::User { name: u.name.clone(), password_hash: u.password_hash.clone(), roles: u.roles.clone() }
        }
        AuthRecord::Role(_, Some(r)) => AuthRecordOut::Role {
            name: r.name.clone(),
            perms: r.perms.iter().map(|p| (p.perm_type.wire(), p.key.clone(), p.range_end.clone())).collect(),
        },
        AuthRecord::User(_, None) | AuthRecord::Role(_, None) => return None,
        AuthRecord::Enabled(on) => AuthRecordOut::Enabled(*on),
        AuthRecord::Revision(rev) => AuthRecordOut::Revision(*rev),
    };
    Some(bincode::encode_to_vec(out, config()).unwrap_or_default())
}

/// Decodes an auth record.
///
/// # Errors
/// Returns a description of the damage if the bytes are not an auth record.
pub fn decode_auth_record(bytes: &[u8]) -> Result<crate::auth::AuthRecord, String> {
    use crate::auth::{AuthRecord, PermType, Permission, Role, User};
    let (record, _): (AuthRecordOut, usize) = bincode::decode_from_slice(bytes, config()).map_err(|e| e.to_string())?;
    Ok(match record {
        AuthRecordOut::User { name, password_hash, roles } => {
            AuthRecord::User(name.clone(), Some(User { name, password_hash, roles }))
        }
        AuthRecordOut::Role { name, perms } => {
            let perms = perms
                .into_iter()
                .map(|(t, key, range_end)| {
                    let perm_type = PermType::from_wire(t).ok_or_else(|| format!("unknown permission type {t}"))?;
                    Ok(Permission { perm_type, key, range_end })
                })
                .collect::<Result<Vec<_>, String>>()?;
            AuthRecord::Role(name.clone(), Some(Role { name, perms }))
        }
        AuthRecordOut::Enabled(on) => AuthRecord::Enabled(on),
        AuthRecordOut::Revision(rev) => AuthRecord::Revision(rev),
    })
}

/// Encodes a meta value (a revision marker).
#[must_use]
pub fn encode_i64(v: i64) -> Vec<u8> {
    bincode::encode_to_vec(v, config()).unwrap_or_default()
}

/// Decodes a meta value (a revision marker).
///
/// # Errors
/// Returns a description of the damage if the bytes are not one integer.
pub fn decode_i64(bytes: &[u8]) -> Result<i64, String> {
    bincode::decode_from_slice(bytes, config()).map(|(v, _)| v).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv() -> KeyValue {
        KeyValue {
            key: b"foo".to_vec(),
            create_revision: 2,
            mod_revision: 5,
            version: 3,
            value: vec![7; 300],
            lease: 42,
        }
    }

    #[test]
    fn row_round_trips_and_header_skips_value() {
        let bytes = encode_row(&kv(), Some(Revision::new(4, 1)));
        let row = decode_row(&bytes).expect("decodes");
        assert_eq!(row, Row { kv: kv(), prev: Some(Revision::new(4, 1)) });
        let header = decode_row_header(&bytes).expect("header decodes");
        assert_eq!(header.key, b"foo");
        assert_eq!((header.create_revision, header.mod_revision, header.version, header.lease), (2, 5, 3, 42));
        assert_eq!(row_key(&bytes).expect("key reads in place"), b"foo");
    }

    #[test]
    fn damaged_rows_are_errors_not_panics() {
        let bytes = encode_row(&kv(), None);
        for cut in 0..bytes.len() {
            assert!(decode_row(&bytes[..cut]).is_err(), "truncated at {cut}");
        }
        // A huge length prefix must not allocate.
        assert!(decode_row(&[0xfd, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]).is_err());
        // The key alone: a length prefix longer than the bytes is an error, and so is nothing.
        assert!(row_key(&[0xfd, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]).is_err());
        assert!(row_key(&[5, b'a']).is_err());
        assert!(row_key(&[]).is_err());
        assert!(decode_lease(&[1]).is_err());
        assert!(decode_i64(&[]).is_err());
    }
}
