//! Owns gRPC's health service, `grpc.health.v1.Health`, which etcd serves beside its own
//! (etcd: v3rpc/grpc.go `Server` registers grpc-go's health server with the whole server, `""`,
//! serving) and which gRPC probes call: Kubernetes' `grpc` probes, `grpc_health_probe`, load
//! balancers.
//!
//! The whole server, `""`, is `SERVING` until the store starts shutting down, then
//! `NOT_SERVING`, at the moment its connections get GOAWAY: a balancer watching it stops
//! routing new calls to the member even on connections it opens afterwards, and its `Watch`
//! stream ends there (every health `Watch` does, so none holds a connection through the
//! graceful shutdown).
//! etcd 3.4 stays `SERVING` to the end. No other name is known: `Check` answers `NotFound`,
//! `unknown service`, and `Watch` sends `SERVICE_UNKNOWN`, as grpc-go's health server does
//! (google.golang.org/grpc/health `Server`). An alarm does not make the server `NOT_SERVING`:
//! a probe that restarts what is not serving would restart a member that still serves reads
//! (`/health` reports alarms).

use std::pin::Pin;

use futures::{Stream, StreamExt};
use tokio::sync::watch;
use tokio_stream::wrappers::WatchStream;
use tonic::{Request, Response, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_server::Health;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

/// The name of the whole server in the health protocol.
const WHOLE_SERVER: &str = "";

/// The health service over one store's shutdown signal.
#[derive(Debug, Clone)]
pub struct HealthService {
    shutting_down: watch::Receiver<bool>,
}

impl HealthService {
    /// Reports the server behind `shutting_down` ([`crate::Handle::shutting_down`]).
    #[must_use]
    pub fn new(shutting_down: watch::Receiver<bool>) -> Self {
        Self { shutting_down }
    }
}

/// The status the whole server has while `shutting_down` is as given.
fn whole_server_status(shutting_down: bool) -> HealthCheckResponse {
    let status = if shutting_down { ServingStatus::NotServing } else { ServingStatus::Serving };
    HealthCheckResponse { status: status.into() }
}

#[tonic::async_trait]
impl Health for HealthService {
    async fn check(&self, request: Request<HealthCheckRequest>) -> Result<Response<HealthCheckResponse>, Status> {
        if request.get_ref().service != WHOLE_SERVER {
            return Err(Status::not_found("unknown service"));
        }
        Ok(Response::new(whole_server_status(*self.shutting_down.borrow())))
    }

    type WatchStream = Pin<Box<dyn Stream<Item = Result<HealthCheckResponse, Status>> + Send + 'static>>;

    async fn watch(&self, request: Request<HealthCheckRequest>) -> Result<Response<Self::WatchStream>, Status> {
        if request.get_ref().service != WHOLE_SERVER {
            // grpc-go's server answers an unknown name with this status and keeps the stream
            // open, so a watcher hears of the service once it is registered (never, here).
            // It ends when the server starts shutting down, not to hold its connection open.
            let unknown = HealthCheckResponse { status: ServingStatus::ServiceUnknown.into() };
            let mut shutting_down = self.shutting_down.clone();
            let stream = futures::stream::once(async move { Ok(unknown) })
                .chain(futures::stream::pending())
                .take_until(async move {
                    let _ = shutting_down.wait_for(|down| *down).await;
                });
            return Ok(Response::new(Box::pin(stream)));
        }
        // The current status first, then each change; a status repeated is not sent again. The
        // stream ends once it has said `NOT_SERVING`: the server is going away, and a stream
        // left open would hold its connection through the graceful shutdown.
        let changes = WatchStream::new(self.shutting_down.clone());
        let statuses = futures::stream::unfold((changes, false), |(mut changes, said_not_serving)| async move {
            if said_not_serving {
                return None;
            }
            let shutting_down = changes.next().await?;
            Some((Ok(whole_server_status(shutting_down)), (changes, shutting_down)))
        });
        Ok(Response::new(Box::pin(statuses)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(service: &str) -> Request<HealthCheckRequest> {
        Request::new(HealthCheckRequest { service: service.to_string() })
    }

    #[tokio::test]
    async fn the_whole_server_serves_until_it_shuts_down_and_no_other_name_is_known() {
        let (shutdown, shutting_down) = watch::channel(false);
        let health = HealthService::new(shutting_down);
        let status = |r: Response<HealthCheckResponse>| ServingStatus::try_from(r.into_inner().status);
        assert_eq!(status(health.check(request("")).await.expect("check")), Ok(ServingStatus::Serving));
        let unknown = health.check(request("etcdserverpb.KV")).await.expect_err("an unknown name");
        assert_eq!((unknown.code(), unknown.message()), (tonic::Code::NotFound, "unknown service"));

        let mut whole = health.watch(request("")).await.expect("watch").into_inner();
        let mut other = health.watch(request("foo")).await.expect("watch").into_inner();
        let next = |r: Option<Result<HealthCheckResponse, Status>>| {
            ServingStatus::try_from(r.expect("a status").expect("not an error").status)
        };
        assert_eq!(next(whole.next().await), Ok(ServingStatus::Serving));
        assert_eq!(next(other.next().await), Ok(ServingStatus::ServiceUnknown));
        shutdown.send_replace(true);
        assert_eq!(next(whole.next().await), Ok(ServingStatus::NotServing));
        assert!(whole.next().await.is_none(), "the stream ends with the server");
        assert!(other.next().await.is_none(), "an unknown name's stream ends too");
        assert_eq!(status(health.check(request("")).await.expect("check")), Ok(ServingStatus::NotServing));
    }
}
