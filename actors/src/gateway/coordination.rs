//! Owns the gateway's Lock and Election routes (`/v3/lock/*`, `/v3/election/*`, as etcd's
//! grpc-gateway mounts them), served by the API layer's [`Coordination`] as gRPC's calls are.
//! `/v3/election/observe` streams one `{"result":{...}}` line per proclamation, each in its own
//! chunk, as `/v3/watch` does. A client that goes away ends its call: a waiting lock or
//! campaign then deletes its key.

use actix_web::{web, HttpResponse};
use bytes::Bytes;
use futures_util::StreamExt;

use super::{caller, encode, error_response, message, reply, Gateway};
use crate::api::election::check_proclaim;
use crate::api::pb::{v3electionpb, v3lockpb};
use crate::api::{ApiError, Coordination};

/// The calls over the gateway's store; on a mirror, forwarding to upstream.
fn coordination(gw: &Gateway) -> Coordination {
    Coordination::new(gw.handle.clone(), None).with_upstream(gw.upstream.clone())
}

/// `POST /v3/lock/lock`.
pub async fn lock(gw: web::Data<Gateway>, http: actix_web::HttpRequest, payload: web::Payload) -> HttpResponse {
    reply(
        async {
            let req: v3lockpb::LockRequest = message(payload, &gw).await?;
            let caller = caller(&gw, &http).map_err(ApiError::into_relayed)?;
            let coordination = coordination(&gw);
            coordination.check_acquire(&caller, &req.name, req.lease).await.map_err(ApiError::into_relayed)?;
            let locked = coordination.lock(req).await?;
            let mut out = String::new();
            encode::write_lock(&mut out, gw.header, locked.revision, &locked.key);
            Ok(out)
        }
        .await,
    )
}

/// `POST /v3/lock/unlock`.
pub async fn unlock(gw: web::Data<Gateway>, http: actix_web::HttpRequest, payload: web::Payload) -> HttpResponse {
    reply(
        async {
            let req: v3lockpb::UnlockRequest = message(payload, &gw).await?;
            let key = watchkv::KeyRange::single(req.key.clone());
            let caller = caller(&gw, &http).map_err(ApiError::into_relayed)?;
            gw.handle.auth().check_delete(&caller, &key, false).map_err(ApiError::into_relayed)?;
            let rev = coordination(&gw).unlock(req).await?;
            let mut out = String::new();
            encode::write_header_only(&mut out, gw.header, rev);
            Ok(out)
        }
        .await,
    )
}

/// `POST /v3/election/campaign`.
pub async fn campaign(gw: web::Data<Gateway>, http: actix_web::HttpRequest, payload: web::Payload) -> HttpResponse {
    reply(
        async {
            let req: v3electionpb::CampaignRequest = message(payload, &gw).await?;
            let caller = caller(&gw, &http).map_err(ApiError::into_relayed)?;
            let coordination = coordination(&gw);
            coordination.check_acquire(&caller, &req.name, req.lease).await.map_err(ApiError::into_relayed)?;
            let elected = coordination.campaign(req).await?;
            let mut out = String::new();
            encode::write_campaign(&mut out, gw.header, elected.revision, &elected.leader);
            Ok(out)
        }
        .await,
    )
}

/// `POST /v3/election/proclaim`.
pub async fn proclaim(gw: web::Data<Gateway>, http: actix_web::HttpRequest, payload: web::Payload) -> HttpResponse {
    reply(
        async {
            let req: v3electionpb::ProclaimRequest = message(payload, &gw).await?;
            if let Some(leader) = &req.leader {
                let caller = caller(&gw, &http).map_err(ApiError::into_relayed)?;
                check_proclaim(&gw.handle, gw.upstream.as_ref(), &caller, leader)
                    .await
                    .map_err(ApiError::into_relayed)?;
            }
            let rev = coordination(&gw).proclaim(req).await?;
            let mut out = String::new();
            encode::write_header_only(&mut out, gw.header, rev);
            Ok(out)
        }
        .await,
    )
}

/// `POST /v3/election/leader`.
pub async fn leader(gw: web::Data<Gateway>, http: actix_web::HttpRequest, payload: web::Payload) -> HttpResponse {
    reply(
        async {
            let req: v3electionpb::LeaderRequest = message(payload, &gw).await?;
            let caller = caller(&gw, &http).map_err(ApiError::into_relayed)?;
            gw.handle.auth().check_coordination(&caller, &req.name, false).map_err(ApiError::into_relayed)?;
            let leader = coordination(&gw).leader(req).await?;
            let mut out = String::new();
            encode::write_leader(&mut out, gw.header, &leader);
            Ok(out)
        }
        .await,
    )
}

/// `POST /v3/election/resign`.
pub async fn resign(gw: web::Data<Gateway>, http: actix_web::HttpRequest, payload: web::Payload) -> HttpResponse {
    reply(
        async {
            let req: v3electionpb::ResignRequest = message(payload, &gw).await?;
            if let Some(leader) = &req.leader {
                let caller = caller(&gw, &http).map_err(ApiError::into_relayed)?;
                gw.handle.auth().check_leader_key(&caller, &leader.key).map_err(ApiError::into_relayed)?;
            }
            let rev = coordination(&gw).resign(req).await?;
            let mut out = String::new();
            encode::write_header_only(&mut out, gw.header, rev);
            Ok(out)
        }
        .await,
    )
}

/// `POST /v3/election/observe`: the body is one `LeaderRequest`; the response streams until
/// the observation ends or the client goes away (dropping the body ends its watches).
pub async fn observe(gw: web::Data<Gateway>, http: actix_web::HttpRequest, payload: web::Payload) -> HttpResponse {
    let req: v3electionpb::LeaderRequest = match message(payload, &gw).await {
        Ok(req) => req,
        Err(e) => return error_response(&e),
    };
    let allowed = caller(&gw, &http)
        .and_then(|c| gw.handle.auth().check_coordination(&c, &req.name, false))
        .map_err(ApiError::into_relayed);
    if let Err(e) = allowed {
        return error_response(&e);
    }
    let header = gw.header;
    let lines = coordination(&gw).observe(req).map(move |p| {
        let mut line = String::from("{\"result\":");
        encode::write_leader(&mut line, header, &p);
        line.push_str("}\n");
        Ok::<_, actix_web::Error>(Bytes::from(line))
    });
    super::json_stream_response(&http, lines)
}
