//! Owns the snapshot file format: a versioned header, keyspace-tagged records, an end record,
//! zero padding to a multiple of 512 bytes and a sha256 of everything before it as the last
//! 32 bytes (etcd's snapshot stream ends with the same digest: etcd
//! server/etcdserver/api/v3rpc/maintenance.go `Snapshot`; etcdctl's save checks the file size
//! is `512 * n + 32`, client/v3/snapshot/v3_snapshot.go `hasChecksum`). The layout is in
//! docs/etcd-semantics.md, "Snapshots".
//!
//! Synchronous and free of storage: [`SnapshotWriter`] encodes records into any `Write`,
//! [`read_file`] checks a file (magic, version, length, checksum) before it hands out a single
//! record. What goes into a snapshot and how one is restored is `kv_store::snapshot`'s.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// The first eight bytes of every snapshot file.
pub const MAGIC: [u8; 8] = *b"WKVSNAP\0";
/// The layout version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Bytes of the header: magic, version, flags, revision, compact revision.
pub const HEADER_LEN: u64 = 32;
/// Bytes of the sha256 trailer.
pub const CHECKSUM_LEN: usize = 32;
/// The body (everything before the trailer) is padded to a multiple of this, as a bbolt file
/// is, so that etcdctl's size check (`size % 512 == 32`) accepts what it saves.
pub const BODY_ALIGN: u64 = 512;
/// Bytes of a record's framing: tag, key length, value length.
const RECORD_OVERHEAD: u64 = 1 + 4 + 4;
/// Bytes of the end record: tag 0 and the record count.
const END_LEN: u64 = 1 + 8;
/// The end record's tag.
const END_TAG: u8 = 0;

/// A keyspace a snapshot record belongs to. New keyspaces (an auth store) get new tags; a
/// reader refuses a tag it does not know rather than drop its records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum SnapshotKeyspace {
    /// Revision rows (`kv`), keyed by revision.
    Kv,
    /// Compaction markers (`meta`).
    Meta,
    /// Granted leases (`lease`).
    Lease,
}

impl SnapshotKeyspace {
    /// Every keyspace, in the order a snapshot holds them.
    pub const ALL: [Self; 3] = [Self::Kv, Self::Meta, Self::Lease];

    /// The record tag.
    #[must_use]
    pub fn tag(self) -> u8 {
        match self {
            Self::Kv => 1,
            Self::Meta => 2,
            Self::Lease => 3,
        }
    }

    /// The keyspace of a record tag.
    #[must_use]
    pub fn from_tag(tag: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.tag() == tag)
    }

    /// The keyspace's name (the storage engine's, and what `snapshot status` prints).
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Kv => "kv",
            Self::Meta => "meta",
            Self::Lease => "lease",
        }
    }

    fn index(self) -> usize {
        match self {
            Self::Kv => 0,
            Self::Meta => 1,
            Self::Lease => 2,
        }
    }
}

/// What a snapshot's header says about the store it was taken from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotHeader {
    /// The store's revision at the snapshot.
    pub revision: i64,
    /// The store's compact revision at the snapshot (-1 = never compacted).
    pub compact_revision: i64,
}

impl SnapshotHeader {
    fn encode(&self) -> [u8; HEADER_LEN as usize] {
        let mut out = [0u8; HEADER_LEN as usize];
        out[..8].copy_from_slice(&MAGIC);
        out[8..12].copy_from_slice(&FORMAT_VERSION.to_be_bytes());
        // 12..16: flags, none defined.
        out[16..24].copy_from_slice(&self.revision.to_be_bytes());
        out[24..32].copy_from_slice(&self.compact_revision.to_be_bytes());
        out
    }

    /// Checks magic and version, then reads the fields (flags must be 0).
    fn decode(bytes: &[u8; HEADER_LEN as usize]) -> Result<Self> {
        check_magic_and_version(bytes)?;
        let flags = u32::from_be_bytes(field(bytes, 12));
        if flags != 0 {
            return Err(invalid(format!("unknown header flags {flags:#x}")));
        }
        Ok(Self {
            revision: i64::from_be_bytes(field(bytes, 16)),
            compact_revision: i64::from_be_bytes(field(bytes, 24)),
        })
    }
}

fn field<const N: usize>(bytes: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&bytes[at..at + N]);
    out
}

fn invalid(reason: impl Into<String>) -> Error {
    Error::Snapshot(reason.into())
}

fn check_magic_and_version(bytes: &[u8]) -> Result<()> {
    if bytes.len() < 12 || bytes[..8] != MAGIC {
        return Err(invalid(
            "not a watchkv snapshot (wrong magic bytes; an etcd snapshot is a bbolt file, which watchkv does not read)",
        ));
    }
    let version = u32::from_be_bytes(field(bytes, 8));
    if version != FORMAT_VERSION {
        return Err(invalid(format!(
            "unsupported snapshot format version {version}; this watchkv reads version {FORMAT_VERSION}"
        )));
    }
    Ok(())
}

/// Bytes one record takes in a snapshot.
#[must_use]
pub fn record_len(key_len: usize, value_len: usize) -> u64 {
    RECORD_OVERHEAD + key_len as u64 + value_len as u64
}

/// Bytes of a snapshot's body (everything before the checksum) whose records take
/// `records_len` bytes: what a stream of it counts down from (etcd `remaining_bytes`).
#[must_use]
pub fn body_len(records_len: u64) -> u64 {
    (HEADER_LEN + records_len + END_LEN).div_ceil(BODY_ALIGN) * BODY_ALIGN
}

/// Encodes a snapshot into `out`, hashing as it goes.
pub struct SnapshotWriter<W: Write> {
    out: W,
    hasher: Sha256,
    written: u64,
    records: u64,
}

impl<W: Write> std::fmt::Debug for SnapshotWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotWriter").field("written", &self.written).field("records", &self.records).finish()
    }
}

impl<W: Write> SnapshotWriter<W> {
    /// Starts a snapshot with `header`.
    ///
    /// # Errors
    /// Whatever `out` fails with.
    pub fn new(out: W, header: &SnapshotHeader) -> Result<Self> {
        let mut w = Self { out, hasher: Sha256::new(), written: 0, records: 0 };
        w.put(&header.encode())?;
        Ok(w)
    }

    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        self.out.write_all(bytes)?;
        self.hasher.update(bytes);
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// Appends one record.
    ///
    /// # Errors
    /// A key or value of 4 GiB or more (the store never holds one), or whatever `out` fails
    /// with.
    pub fn record(&mut self, keyspace: SnapshotKeyspace, key: &[u8], value: &[u8]) -> Result<()> {
        let too_big = || Error::Internal(format!("a {} record of 4 GiB or more", keyspace.name()));
        let key_len = u32::try_from(key.len()).map_err(|_| too_big())?;
        let value_len = u32::try_from(value.len()).map_err(|_| too_big())?;
        let mut frame = [0u8; RECORD_OVERHEAD as usize];
        frame[0] = keyspace.tag();
        frame[1..5].copy_from_slice(&key_len.to_be_bytes());
        frame[5..9].copy_from_slice(&value_len.to_be_bytes());
        self.put(&frame)?;
        self.put(key)?;
        self.put(value)?;
        self.records += 1;
        Ok(())
    }

    /// Writes the end record and the padding; returns `out`, the body's length and its sha256,
    /// which a stream sends as its own last message and a file ends with.
    ///
    /// # Errors
    /// Whatever `out` fails with.
    pub fn finish_body(mut self) -> Result<(W, u64, [u8; CHECKSUM_LEN])> {
        let mut end = [0u8; END_LEN as usize];
        end[0] = END_TAG;
        end[1..].copy_from_slice(&self.records.to_be_bytes());
        self.put(&end)?;
        let padding = self.written.next_multiple_of(BODY_ALIGN) - self.written;
        let zeros = [0u8; BODY_ALIGN as usize];
        self.put(&zeros[..usize::try_from(padding).unwrap_or(0)])?;
        let digest: [u8; CHECKSUM_LEN] = self.hasher.finalize().into();
        Ok((self.out, self.written, digest))
    }

    /// Writes the end record, the padding and the checksum: a whole snapshot file.
    ///
    /// # Errors
    /// Whatever `out` fails with.
    pub fn finish(self) -> Result<W> {
        let (mut out, _, digest) = self.finish_body()?;
        out.write_all(&digest)?;
        out.flush()?;
        Ok(out)
    }
}

/// One record of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRecord {
    /// Where it belongs.
    pub keyspace: SnapshotKeyspace,
    /// The storage key.
    pub key: Vec<u8>,
    /// The storage value.
    pub value: Vec<u8>,
}

/// What a checked snapshot file holds (`watchkv snapshot status`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotStatus {
    /// The header.
    pub header: SnapshotHeader,
    /// Records in each keyspace, in [`SnapshotKeyspace::ALL`] order.
    pub records: [u64; 3],
    /// The file's size in bytes.
    pub total_size: u64,
    /// The sha256 the file ends with (and its contents hash to).
    pub sha256: [u8; CHECKSUM_LEN],
}

impl SnapshotStatus {
    /// Records in `keyspace`.
    #[must_use]
    pub fn records_in(&self, keyspace: SnapshotKeyspace) -> u64 {
        self.records[keyspace.index()]
    }

    /// Every record (etcd's `snapshot status` counts every bbolt key as its "total keys").
    #[must_use]
    pub fn total_records(&self) -> u64 {
        self.records.iter().sum()
    }

    /// The checksum in lower-case hex.
    #[must_use]
    pub fn sha256_hex(&self) -> String {
        hex(&self.sha256)
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Checks the snapshot file at `path` whole, then visits its records in order. Nothing is
/// visited unless the magic, the version, the length and the sha256 are right, so a restore
/// from a damaged file writes nothing.
///
/// # Errors
/// `Error::Snapshot` naming what is wrong with the file, an I/O error, or the first error
/// `visit` returns.
pub fn read_file(path: &Path, visit: impl FnMut(SnapshotRecord) -> Result<()>) -> Result<SnapshotStatus> {
    read(File::open(path)?, visit)
}

/// [`read_file`] over any seekable reader.
///
/// # Errors
/// As [`read_file`].
pub fn read<R: Read + Seek>(
    mut file: R,
    mut visit: impl FnMut(SnapshotRecord) -> Result<()>,
) -> Result<SnapshotStatus> {
    let total_size = file.seek(SeekFrom::End(0))?;
    file.seek(SeekFrom::Start(0))?;
    let mut file = BufReader::with_capacity(64 * 1024, file);

    // Magic and version first: a bbolt file or a newer format gets its own message, not a
    // checksum mismatch.
    let mut head = [0u8; HEADER_LEN as usize];
    let got = read_up_to(&mut file, &mut head)?;
    check_magic_and_version(&head[..got])?;
    let min_len = body_len(0) + CHECKSUM_LEN as u64;
    if total_size < min_len || !(total_size - CHECKSUM_LEN as u64).is_multiple_of(BODY_ALIGN) {
        return Err(invalid(format!(
            "truncated or padded: {total_size} bytes is not a whole snapshot (a body of a multiple of \
             {BODY_ALIGN} bytes, then a {CHECKSUM_LEN}-byte sha256)"
        )));
    }

    // The checksum over the whole body.
    let body = total_size - CHECKSUM_LEN as u64;
    file.seek(SeekFrom::Start(0))?;
    let mut hasher = Sha256::new();
    let copied = io::copy(&mut (&mut file).take(body), &mut HashWriter(&mut hasher))?;
    let mut trailer = [0u8; CHECKSUM_LEN];
    file.read_exact(&mut trailer)?;
    let digest: [u8; CHECKSUM_LEN] = hasher.finalize().into();
    if copied != body || digest != trailer {
        return Err(invalid(format!(
            "sha256 checksum mismatch: the file ends with {}, its contents hash to {}; the file is damaged or cut short",
            hex(&trailer),
            hex(&digest)
        )));
    }

    // The records.
    file.seek(SeekFrom::Start(0))?;
    let mut file = (&mut file).take(body);
    file.read_exact(&mut head)?;
    let header = SnapshotHeader::decode(&head)?;
    let mut at = HEADER_LEN;
    let mut records = [0u64; 3];
    loop {
        let mut tag = [0u8; 1];
        read_field(&mut file, &mut tag, at)?;
        if tag[0] == END_TAG {
            let mut count = [0u8; 8];
            read_field(&mut file, &mut count, at)?;
            let count = u64::from_be_bytes(count);
            let seen: u64 = records.iter().sum();
            if count != seen {
                return Err(invalid(format!("the end record counts {count} records, the file holds {seen}")));
            }
            at += END_LEN;
            break;
        }
        let keyspace = SnapshotKeyspace::from_tag(tag[0]).ok_or_else(|| {
            invalid(format!("unknown keyspace tag {} at byte {at} (written by a newer watchkv?)", tag[0]))
        })?;
        let mut lens = [0u8; 8];
        read_field(&mut file, &mut lens, at)?;
        let key_len = u64::from(u32::from_be_bytes(field(&lens, 0)));
        let value_len = u64::from(u32::from_be_bytes(field(&lens, 4)));
        if at + RECORD_OVERHEAD + key_len + value_len > body {
            return Err(invalid(format!("the record at byte {at} runs past the end of the body")));
        }
        let key = read_vec(&mut file, key_len, at)?;
        let value = read_vec(&mut file, value_len, at)?;
        at += RECORD_OVERHEAD + key_len + value_len;
        records[keyspace.index()] += 1;
        visit(SnapshotRecord { keyspace, key, value })?;
    }
    // The padding.
    let mut rest = Vec::new();
    file.read_to_end(&mut rest)?;
    if at + rest.len() as u64 != body || rest.len() as u64 >= BODY_ALIGN || rest.iter().any(|&b| b != 0) {
        return Err(invalid(format!("{} bytes after the end record are not the zero padding", rest.len())));
    }
    Ok(SnapshotStatus { header, records, total_size, sha256: trailer })
}

/// Reads as much of `buf` as there is.
fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(got)
}

fn read_field(r: &mut impl Read, buf: &mut [u8], at: u64) -> Result<()> {
    r.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => invalid(format!("the record at byte {at} is cut off")),
        _ => e.into(),
    })
}

/// Reads `len` bytes (checked against the body's length before, so a damaged length cannot ask
/// for more than the file holds).
fn read_vec(r: &mut impl Read, len: u64, at: u64) -> Result<Vec<u8>> {
    let mut out = vec![0u8; usize::try_from(len).map_err(|_| invalid(format!("record at byte {at} is too large")))?];
    read_field(r, &mut out, at)?;
    Ok(out)
}

/// Feeds what is written into a hasher.
struct HashWriter<'a>(&'a mut Sha256);

impl Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;

    const HEADER: SnapshotHeader = SnapshotHeader { revision: 42, compact_revision: 17 };

    fn records() -> Vec<SnapshotRecord> {
        let r =
            |keyspace, key: &[u8], value: &[u8]| SnapshotRecord { keyspace, key: key.to_vec(), value: value.to_vec() };
        vec![
            r(SnapshotKeyspace::Kv, b"rev-1", b"row one"),
            r(SnapshotKeyspace::Kv, b"rev-2", &[7u8; 1000]),
            r(SnapshotKeyspace::Kv, b"rev-3", b""),
            r(SnapshotKeyspace::Meta, b"finishedCompactRev", b"\x22"),
            r(SnapshotKeyspace::Lease, &5i64.to_be_bytes(), b"lease"),
        ]
    }

    fn encode(records: &[SnapshotRecord]) -> Vec<u8> {
        let mut w = SnapshotWriter::new(Vec::new(), &HEADER).expect("header");
        for r in records {
            w.record(r.keyspace, &r.key, &r.value).expect("record");
        }
        w.finish().expect("finish")
    }

    fn decode(bytes: &[u8]) -> Result<(SnapshotStatus, Vec<SnapshotRecord>)> {
        let mut out = Vec::new();
        let status = read(Cursor::new(bytes), |r| {
            out.push(r);
            Ok(())
        })?;
        Ok((status, out))
    }

    fn message(bytes: &[u8]) -> String {
        match decode(bytes) {
            Ok(_) => panic!("a damaged snapshot was accepted"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn round_trip_keeps_header_records_and_counts() {
        let bytes = encode(&records());
        let records_len: u64 = records().iter().map(|r| record_len(r.key.len(), r.value.len())).sum();
        assert_eq!(bytes.len() as u64, body_len(records_len) + CHECKSUM_LEN as u64, "predicted length");
        assert_eq!(bytes.len() % 512, 32, "etcdctl's hasChecksum: size % 512 == 32");
        let (status, out) = decode(&bytes).expect("decodes");
        assert_eq!(out, records());
        assert_eq!(status.header, HEADER);
        assert_eq!(status.records, [3, 1, 1]);
        assert_eq!(status.total_records(), 5);
        assert_eq!(status.total_size, bytes.len() as u64);
        let digest: [u8; 32] = Sha256::digest(&bytes[..bytes.len() - 32]).into();
        assert_eq!(status.sha256, digest, "the trailer is the sha256 of everything before it");
        assert_eq!(status.sha256_hex().len(), 64);
    }

    #[test]
    fn an_empty_store_and_a_body_of_exactly_512_bytes_round_trip() {
        let (status, out) = decode(&encode(&[])).expect("empty");
        assert_eq!((status.total_records(), out.len(), status.total_size), (0, 0, 512 + 32));
        // A record that fills the body to exactly 512 bytes: no padding at all.
        let value = vec![1u8; (512 - HEADER_LEN - END_LEN - RECORD_OVERHEAD - 1) as usize];
        let one = vec![SnapshotRecord { keyspace: SnapshotKeyspace::Kv, key: b"k".to_vec(), value }];
        let bytes = encode(&one);
        assert_eq!(bytes.len(), 512 + 32);
        assert_eq!(decode(&bytes).expect("exact").1, one);
    }

    #[test]
    fn finish_body_returns_the_length_and_digest_a_stream_sends() {
        let mut w = SnapshotWriter::new(Vec::new(), &HEADER).expect("header");
        w.record(SnapshotKeyspace::Kv, b"k", b"v").expect("record");
        let (body, len, digest) = w.finish_body().expect("body");
        assert_eq!(body.len() as u64, len);
        assert_eq!(len, body_len(record_len(1, 1)));
        let mut file = body.clone();
        file.extend_from_slice(&digest);
        assert_eq!(
            file,
            encode(&[SnapshotRecord { keyspace: SnapshotKeyspace::Kv, key: b"k".to_vec(), value: b"v".to_vec() }])
        );
    }

    #[test]
    fn every_truncation_is_refused() {
        let bytes = encode(&records());
        for cut in 0..bytes.len() {
            let msg = message(&bytes[..cut]);
            assert!(
                // A cut at a 512-byte boundary leaves a plausible length: the checksum catches it.
                msg.contains("truncated") || msg.contains("magic") || msg.contains("checksum mismatch"),
                "cut at {cut}: {msg}"
            );
        }
    }

    #[test]
    fn a_flipped_byte_is_a_checksum_error() {
        let bytes = encode(&records());
        // Past magic and version, which have their own messages; the trailer itself included.
        for at in 12..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x20;
            let msg = message(&damaged);
            assert!(msg.starts_with("snapshot: sha256 checksum mismatch: the file ends with "), "byte {at}: {msg}");
        }
    }

    #[test]
    fn wrong_magic_and_version_are_named() {
        let bytes = encode(&records());
        let mut bbolt = bytes.clone();
        bbolt[..8].copy_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]);
        assert!(message(&bbolt).contains("not a watchkv snapshot"), "{}", message(&bbolt));
        let mut newer = bytes.clone();
        newer[8..12].copy_from_slice(&2u32.to_be_bytes());
        assert_eq!(message(&newer), "snapshot: unsupported snapshot format version 2; this watchkv reads version 1");
        assert!(message(b"").contains("not a watchkv snapshot"));
    }

    #[test]
    fn a_well_checksummed_file_with_bad_records_is_refused() {
        // Rewrites the body and fixes up the checksum, as a buggy writer would.
        fn resealed(mut bytes: Vec<u8>, change: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
            bytes.truncate(bytes.len() - 32);
            change(&mut bytes);
            let digest = Sha256::digest(&bytes);
            bytes.extend_from_slice(&digest);
            bytes
        }
        let bytes = encode(&records());
        let first = HEADER_LEN as usize;
        let unknown = resealed(bytes.clone(), |b| b[first] = 9);
        assert!(message(&unknown).contains("unknown keyspace tag 9 at byte 32"), "{}", message(&unknown));
        let long = resealed(bytes.clone(), |b| b[first + 1..first + 5].copy_from_slice(&u32::MAX.to_be_bytes()));
        assert!(message(&long).contains("runs past the end"), "{}", message(&long));
        let flags = resealed(bytes.clone(), |b| b[12] = 1);
        assert!(message(&flags).contains("unknown header flags"), "{}", message(&flags));
        let dirty = resealed(bytes, |b| {
            let last = b.len() - 1;
            b[last] = 1;
        });
        assert!(message(&dirty).contains("zero padding"), "{}", message(&dirty));
    }
}
