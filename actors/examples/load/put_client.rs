//! Scenario 1's put client, over the JSON gateway or over etcd's gRPC KV service.

use std::rc::Rc;
use std::time::Duration;

use anyhow::bail;
use watchkv_actors::grpc::pb::etcdserverpb::kv_client::KvClient;
use watchkv_actors::grpc::pb::etcdserverpb::PutRequest;

use crate::args::Args;
use crate::http::{http_client, post, put_body};

/// One put, over the protocol scenario 1 runs on.
#[derive(Clone)]
pub enum PutClient {
    Http(awc::Client, Rc<str>),
    Grpc(KvClient<tonic::transport::Channel>),
}

impl PutClient {
    /// `clients` clients of the server at `base`: over HTTP clones of one keep-alive client,
    /// over gRPC dealt round robin over `connections` connections.
    pub async fn connect_all(args: &Args, base: &str, clients: usize, connections: usize) -> anyhow::Result<Vec<Self>> {
        let clients = clients.max(1);
        match args.protocol.as_str() {
            "http" => {
                let client = Self::Http(http_client(clients + 8), format!("{base}/v3/kv/put").into());
                Ok(vec![client; clients])
            }
            "grpc" => {
                let mut channels = Vec::new();
                for _ in 0..connections.clamp(1, clients) {
                    let channel = tonic::transport::Channel::from_shared(base.to_owned())?
                        .connect_timeout(Duration::from_secs(10))
                        .connect()
                        .await?;
                    channels.push(KvClient::new(channel));
                }
                Ok((0..clients).map(|i| Self::Grpc(channels[i % channels.len()].clone())).collect())
            }
            other => bail!("--protocol must be http or grpc, not {other}"),
        }
    }

    pub async fn put(&self, key: Vec<u8>, value: &[u8]) -> Result<(), String> {
        match self {
            Self::Http(client, url) => post(client, url, put_body(&key, value)).await,
            Self::Grpc(kv) => {
                let req = PutRequest { key, value: value.to_vec(), ..Default::default() };
                kv.clone().put(req).await.map(|_| ()).map_err(|e| e.to_string())
            }
        }
    }
}
