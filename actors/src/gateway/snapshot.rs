//! Owns `POST /v3/maintenance/snapshot`: etcd's grpc-gateway streams `Maintenance.Snapshot` as
//! one `{"result":{...}}` line per message (`remaining_bytes` as a string, `blob` in base64),
//! the sha256 of the body last; an error after the start ends the stream with one
//! `{"error":{...}}` line. The chunks come from [`crate::snapshot_stream`], as over gRPC.

use actix_web::{web, HttpResponse};
use bytes::Bytes;
use futures_util::StreamExt;

use super::{encode, error_response, read_body, Gateway};
use crate::api::ApiError;
use crate::snapshot_stream;

/// Takes a snapshot and streams it. `SnapshotRequest` has no fields: the body is read only for
/// its size.
pub async fn snapshot(gw: web::Data<Gateway>, http: actix_web::HttpRequest, payload: web::Payload) -> HttpResponse {
    let started = async {
        gw.handle.auth().check_admin(&super::caller(&gw, &http)?)?;
        read_body(payload, gw.max_json_bytes()).await?;
        let snapshot = gw.handle.snapshot().await?;
        Ok::<_, ApiError>(snapshot_stream::spawn(snapshot, gw.handle.storage_releases())?)
    }
    .await;
    let (at, chunks) = match started {
        Ok(started) => started,
        Err(e) => return error_response(&e),
    };
    let header = gw.header;
    let lines = chunks.map(move |chunk| {
        let mut line = String::new();
        match chunk {
            Ok(c) => encode::write_snapshot_line(&mut line, header, at.revision, c.remaining_bytes, &c.blob),
            Err(e) => {
                line.push_str("{\"error\":");
                encode::write_error(&mut line, &ApiError::from(e));
                line.push('}');
            }
        }
        line.push('\n');
        Ok::<_, actix_web::Error>(Bytes::from(line))
    });
    super::json_stream_response(&http, lines)
}
