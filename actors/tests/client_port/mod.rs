//! Owns serving a store's client port inside the test's own process, both protocols as the
//! binary serves them, for tests that also drive the store through its `Handle`.
#![allow(dead_code)]

use std::sync::Arc;

use watchkv_actors::gateway::Gateway;
use watchkv_actors::grpc::GrpcApi;
use watchkv_actors::listener::{self, PortOptions};

/// Serves `gw`'s store (gRPC and the gateway) on a free loopback port with two workers and a
/// one-second shutdown timeout; returns the port and the server's handle. Call it inside an
/// actix system: the server runs on it.
pub fn serve_client_port(gw: Gateway) -> (u16, actix_server::ServerHandle) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let url = format!("http://127.0.0.1:{port}");
    let grpc = GrpcApi::new(gw.handle.clone(), gw.header, gw.max_request_bytes, vec![url]);
    let options = PortOptions { workers: 2, shutdown_timeout_secs: 1, ..PortOptions::default() };
    let server = listener::serve(listener, Arc::new(gw), grpc, options).expect("serve");
    let server_handle = server.handle();
    actix_rt::spawn(server);
    (port, server_handle)
}
