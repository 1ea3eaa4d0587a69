//! Owns the gRPC `Maintenance.Snapshot` stream (etcd server/etcdserver/api/v3rpc/maintenance.go
//! `Snapshot`): the store actor takes the point-in-time view between two write groups, a
//! thread of its own encodes it ([`crate::snapshot_stream`]), and this stream forwards its
//! chunks, each with the snapshot's revision in its header, then the sha256 of the body as the
//! last message. `version` stays empty, as etcd before 3.6 sends it; the file is watchkv's own
//! format (docs/etcd-semantics.md, "Snapshots"), not a bbolt database.

use futures::StreamExt;
use tonic::{Response, Status};

use super::{status, GrpcApi};
use crate::api::pb::etcdserverpb as pb;
use crate::snapshot_stream;

/// The stream of snapshot messages.
pub(super) type SnapshotStream = tonic::codegen::BoxStream<pb::SnapshotResponse>;

/// Takes a snapshot and streams it.
pub(super) async fn snapshot(api: &GrpcApi) -> Result<Response<SnapshotStream>, Status> {
    let snapshot = api.handle().snapshot().await.map_err(status)?;
    let (at, chunks) = snapshot_stream::spawn(snapshot, api.handle().storage_releases()).map_err(status)?;
    let header = api.header(at.revision);
    let responses = chunks.map(move |chunk| {
        chunk.map_err(status).map(|c| pb::SnapshotResponse {
            header: Some(header),
            remaining_bytes: c.remaining_bytes,
            blob: c.blob,
            version: String::new(),
        })
    });
    Ok(Response::new(Box::pin(responses)))
}
