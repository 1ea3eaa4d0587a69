//! A gRPC client that speaks grpc-gateway JSON at its edges, so the differential scenarios
//! written as `/v3/...` JSON requests drive watchkv's gRPC API unchanged: a JSON body is parsed
//! into the request message with etcd's own descriptors (protobuf's JSON mapping, via
//! prost-reflect), sent over gRPC, and the response is rendered back the way etcd's gateway
//! renders it (original field names, int64 as strings, enum names, defaults omitted).
#![allow(dead_code)]

use std::sync::mpsc;

use prost::Message as _;
use prost_reflect::{DescriptorPool, DeserializeOptions, DynamicMessage, SerializeOptions};
use serde_json::{json, Value};
use tokio::runtime::Runtime;
use tokio::sync::mpsc as tmpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::transport::Channel;
use watchkv_actors::api::http_status;
use watchkv_actors::grpc::pb::etcdserverpb as pb;

use crate::wire::{Reply, RequestSink, WatchStream, DEADLINE};

/// A connection to one server's gRPC port.
pub struct GrpcClient {
    rt: Runtime,
    channel: Channel,
    pool: DescriptorPool,
}

impl GrpcClient {
    /// Connects to `127.0.0.1:port` (waiting up to the deadline).
    #[must_use]
    pub fn connect(port: u16) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
        let channel = rt
            .block_on(async {
                Channel::from_shared(format!("http://127.0.0.1:{port}"))
                    .expect("endpoint")
                    .connect_timeout(DEADLINE)
                    .timeout(DEADLINE)
                    .connect()
                    .await
            })
            .unwrap_or_else(|e| panic!("gRPC connect to port {port}: {e}"));
        let proto = concat!(env!("CARGO_MANIFEST_DIR"), "/proto");
        let fds = protox::compile(["etcd/api/etcdserverpb/rpc.proto"], [proto]).expect("compile etcd's protos");
        let pool = DescriptorPool::from_file_descriptor_set(fds).expect("descriptor pool");
        Self { rt, channel, pool }
    }

    /// Parses grpc-gateway JSON into the message `name`, as bytes.
    fn encode(&self, name: &str, body: &[u8]) -> Result<Vec<u8>, String> {
        let desc = self.pool.get_message_by_name(name).unwrap_or_else(|| panic!("no message {name}"));
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Vec::new());
        }
        let mut de = serde_json::Deserializer::from_slice(body);
        // etcd 3.4's gateway ignores unknown fields, as watchkv's does.
        let msg = DynamicMessage::deserialize_with_options(
            desc,
            &mut de,
            &DeserializeOptions::new().deny_unknown_fields(false),
        )
        .map_err(|e| e.to_string())?;
        Ok(msg.encode_to_vec())
    }

    /// Renders the encoded message `name` as etcd's gateway does.
    fn render(&self, name: &str, bytes: &[u8]) -> Value {
        let desc = self.pool.get_message_by_name(name).unwrap_or_else(|| panic!("no message {name}"));
        let msg = DynamicMessage::decode(desc, bytes).expect("decode response");
        msg.serialize_with_options(serde_json::value::Serializer, &SerializeOptions::new().use_proto_field_name(true))
            .expect("render response")
    }

    /// A unary call named by its gateway path, answered as the gateway would answer it.
    #[must_use]
    pub fn post(&self, path: &str, body: &[u8]) -> Reply {
        let (req_name, resp_name) = messages(path);
        let bytes = match self.encode(req_name, body) {
            Ok(b) => b,
            Err(e) => return error_reply(tonic::Code::InvalidArgument, &e),
        };
        let channel = self.channel.clone();
        let result = self.rt.block_on(call(channel, path, bytes));
        match result {
            Ok(bytes) => Reply {
                status: 200,
                headers: Vec::new(),
                body: self.render(resp_name, &bytes).to_string().into_bytes(),
            },
            Err(status) => error_reply(status.code(), status.message()),
        }
    }

    /// `LeaseKeepAlive` with every request object of `body`, one `{"result":...}` line each.
    #[must_use]
    pub fn keep_alive_lines(&self, body: &str) -> Reply {
        let mut requests = Vec::new();
        for item in serde_json::Deserializer::from_str(body).into_iter::<Value>() {
            let v = item.expect("keepalive request JSON");
            let bytes = self.encode("etcdserverpb.LeaseKeepAliveRequest", v.to_string().as_bytes()).expect("encode");
            requests.push(pb::LeaseKeepAliveRequest::decode(bytes.as_slice()).expect("decode"));
        }
        let n = requests.len();
        let channel = self.channel.clone();
        let out: Vec<Result<Vec<u8>, tonic::Status>> = self.rt.block_on(async move {
            let mut client = pb::lease_client::LeaseClient::new(channel);
            let mut lines = Vec::new();
            match client.lease_keep_alive(tokio_stream::iter(requests)).await {
                Ok(resp) => {
                    let mut stream = resp.into_inner();
                    while lines.len() < n {
                        match stream.message().await {
                            Ok(Some(m)) => lines.push(Ok(m.encode_to_vec())),
                            Ok(None) => break,
                            Err(e) => {
                                lines.push(Err(e));
                                break;
                            }
                        }
                    }
                }
                Err(e) => lines.push(Err(e)),
            }
            lines
        });
        let mut body = String::new();
        for line in out {
            let v = match line {
                Ok(bytes) => json!({"result": self.render("etcdserverpb.LeaseKeepAliveResponse", &bytes)}),
                Err(s) => json!({"error": {"code": s.code() as i32, "message": s.message()}}),
            };
            body.push_str(&v.to_string());
            body.push('\n');
        }
        Reply { status: 200, headers: Vec::new(), body: body.into_bytes() }
    }

    /// Opens a `Watch` stream driven by JSON requests and read as `{"result":...}` lines.
    #[must_use]
    pub fn watch(&self) -> WatchStream {
        let (req_tx, req_rx) = tmpsc::unbounded_channel::<pb::WatchRequest>();
        let (line_tx, lines) = mpsc::channel::<Value>();
        let channel = self.channel.clone();
        let pool = self.pool.clone();
        let task = self.rt.spawn(async move {
            let mut client = pb::watch_client::WatchClient::new(channel);
            let mut stream = match client.watch(UnboundedReceiverStream::new(req_rx)).await {
                Ok(r) => r.into_inner(),
                Err(s) => {
                    let _ = line_tx.send(json!({"error": {"code": s.code() as i32, "message": s.message()}}));
                    return;
                }
            };
            let desc = pool.get_message_by_name("etcdserverpb.WatchResponse").expect("WatchResponse");
            let opts = SerializeOptions::new().use_proto_field_name(true);
            loop {
                match stream.message().await {
                    Ok(Some(m)) => {
                        let msg = DynamicMessage::decode(desc.clone(), m.encode_to_vec().as_slice()).expect("decode");
                        let v = msg.serialize_with_options(serde_json::value::Serializer, &opts).expect("render");
                        if line_tx.send(json!({ "result": v })).is_err() {
                            return;
                        }
                    }
                    Ok(None) => return,
                    Err(s) => {
                        let _ = line_tx.send(json!({"error": {"code": s.code() as i32, "message": s.message()}}));
                        return;
                    }
                }
            }
        });
        let desc = self.pool.get_message_by_name("etcdserverpb.WatchRequest").expect("WatchRequest");
        WatchStream::from_parts(Box::new(GrpcRequests { tx: Some(req_tx), desc, task }), lines)
    }
}

/// The request side of a gRPC watch; dropping it ends the RPC (the reader task is aborted,
/// which resets the HTTP/2 stream, as a client that goes away does).
struct GrpcRequests {
    tx: Option<tmpsc::UnboundedSender<pb::WatchRequest>>,
    desc: prost_reflect::MessageDescriptor,
    task: tokio::task::JoinHandle<()>,
}

impl RequestSink for GrpcRequests {
    fn send(&mut self, req: &Value) {
        // `null` is the empty message to protojson (grpc-gateway's decoder); on gRPC, an empty
        // `WatchRequest`.
        let text = if req.is_null() { "{}".to_owned() } else { req.to_string() };
        let mut de = serde_json::Deserializer::from_str(&text);
        let msg = DynamicMessage::deserialize(self.desc.clone(), &mut de)
            .unwrap_or_else(|e| panic!("watch request {req} is not a WatchRequest: {e}"));
        let req = pb::WatchRequest::decode(msg.encode_to_vec().as_slice()).expect("decode WatchRequest");
        if let Some(tx) = &self.tx {
            let _ = tx.send(req);
        }
    }

    fn end(&mut self) {
        self.tx = None;
    }
}

impl Drop for GrpcRequests {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A gRPC status as the gateway answers it: the HTTP status of its code from the API layer's
/// table, and `{"code":N,"message":"..."}` written by the gateway's encoder.
fn error_reply(code: tonic::Code, message: &str) -> Reply {
    let mut body = String::new();
    watchkv_actors::gateway::encode::write_status(&mut body, code, message);
    Reply { status: http_status(code), headers: Vec::new(), body: body.into_bytes() }
}

/// The request and response message of a gateway path.
fn messages(path: &str) -> (&'static str, &'static str) {
    match path {
        "/v3/kv/range" => ("etcdserverpb.RangeRequest", "etcdserverpb.RangeResponse"),
        "/v3/kv/put" => ("etcdserverpb.PutRequest", "etcdserverpb.PutResponse"),
        "/v3/kv/deleterange" => ("etcdserverpb.DeleteRangeRequest", "etcdserverpb.DeleteRangeResponse"),
        "/v3/kv/txn" => ("etcdserverpb.TxnRequest", "etcdserverpb.TxnResponse"),
        "/v3/kv/compaction" => ("etcdserverpb.CompactionRequest", "etcdserverpb.CompactionResponse"),
        "/v3/lease/grant" => ("etcdserverpb.LeaseGrantRequest", "etcdserverpb.LeaseGrantResponse"),
        "/v3/lease/revoke" | "/v3/kv/lease/revoke" => {
            ("etcdserverpb.LeaseRevokeRequest", "etcdserverpb.LeaseRevokeResponse")
        }
        "/v3/lease/timetolive" | "/v3/kv/lease/timetolive" => {
            ("etcdserverpb.LeaseTimeToLiveRequest", "etcdserverpb.LeaseTimeToLiveResponse")
        }
        "/v3/lease/leases" | "/v3/kv/lease/leases" => {
            ("etcdserverpb.LeaseLeasesRequest", "etcdserverpb.LeaseLeasesResponse")
        }
        "/v3/maintenance/status" => ("etcdserverpb.StatusRequest", "etcdserverpb.StatusResponse"),
        other => panic!("no gRPC method for gateway path {other}"),
    }
}

/// Calls the method of `path` with an encoded request; returns the encoded response.
async fn call(channel: Channel, path: &str, bytes: Vec<u8>) -> Result<Vec<u8>, tonic::Status> {
    macro_rules! unary {
        ($client:ident, $method:ident, $req:ty) => {{
            let req = <$req>::decode(bytes.as_slice()).map_err(|e| tonic::Status::internal(e.to_string()))?;
            $client::new(channel).$method(req).await.map(|r| r.into_inner().encode_to_vec())
        }};
    }
    use pb::kv_client::KvClient;
    use pb::lease_client::LeaseClient;
    use pb::maintenance_client::MaintenanceClient;
    match path {
        "/v3/kv/range" => unary!(KvClient, range, pb::RangeRequest),
        "/v3/kv/put" => unary!(KvClient, put, pb::PutRequest),
        "/v3/kv/deleterange" => unary!(KvClient, delete_range, pb::DeleteRangeRequest),
        "/v3/kv/txn" => unary!(KvClient, txn, pb::TxnRequest),
        "/v3/kv/compaction" => unary!(KvClient, compact, pb::CompactionRequest),
        "/v3/lease/grant" => unary!(LeaseClient, lease_grant, pb::LeaseGrantRequest),
        "/v3/lease/revoke" | "/v3/kv/lease/revoke" => unary!(LeaseClient, lease_revoke, pb::LeaseRevokeRequest),
        "/v3/lease/timetolive" | "/v3/kv/lease/timetolive" => {
            unary!(LeaseClient, lease_time_to_live, pb::LeaseTimeToLiveRequest)
        }
        "/v3/lease/leases" | "/v3/kv/lease/leases" => unary!(LeaseClient, lease_leases, pb::LeaseLeasesRequest),
        "/v3/maintenance/status" => unary!(MaintenanceClient, status, pb::StatusRequest),
        other => panic!("no gRPC method for gateway path {other}"),
    }
}
