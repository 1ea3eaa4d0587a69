//! Embedding watchkv in an actix-web service: the host keeps its own routes and mounts the
//! etcd gateway under `/kv`. Run with `cargo run -p watchkv-actors --example embed -- [ADDR] [DATA_DIR]`
//! (defaults `127.0.0.1:8080`, a `./embed.data` directory), then for example
//! `curl -X POST localhost:8080/kv/v3/kv/put -d '{"key":"Zm9v","value":"YmFy"}'`.

use actix_web::{web, App, HttpResponse};
// The core comes re-exported: an embedder depends on `watchkv-actors` alone.
use watchkv_actors::watchkv::{KeyRange, PutRequest, RangeRequest};
use watchkv_actors::{gateway, ActorsConfig, Handle};

/// A route of the host service that uses the store through the typed handle.
async fn hello(handle: web::Data<Handle>) -> HttpResponse {
    let visits = handle
        .range(RangeRequest::new(KeyRange::single("visits")))
        .await
        .ok()
        .and_then(|r| r.kvs.first().map(|kv| String::from_utf8_lossy(&kv.value).parse::<u64>().unwrap_or(0)))
        .unwrap_or(0)
        + 1;
    match handle.put(PutRequest::new("visits", visits.to_string())).await {
        Ok(put) => HttpResponse::Ok().body(format!("hello, visitor {visits} (revision {})\n", put.revision)),
        Err(e) => HttpResponse::ServiceUnavailable().body(e.to_string()),
    }
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:8080".into());
    let data_dir = args.next().unwrap_or_else(|| "./embed.data".into());
    let handle = watchkv_actors::start(ActorsConfig::new(data_dir)).await.map_err(std::io::Error::other)?;
    let store = handle.clone();
    // `gateway::http_server` is `HttpServer::new` with the setting the gateway needs: a client
    // that closes its socket after its watch request frees its watchers.
    let server = gateway::http_server(move || {
        App::new()
            .app_data(web::Data::new(store.clone()))
            .route("/hello", web::get().to(hello))
            .service(web::scope("/kv").configure(gateway::configure(store.clone())))
    })
    .workers(2)
    .bind(&addr)?;
    println!("listening on {addr}");
    server.run().await?;
    handle.shutdown().await.map_err(std::io::Error::other)
}
