//! The benchmark's baseline, the physical limit the daemon is measured against: a bare hyper
//! HTTP/1 server (no router, no middleware, no authentication, no logging) answering every
//! request with fixed bytes: the bodies the daemon itself served for the two paths, read from
//! the files given as arguments, with the daemon's headers. `make bench` runs it side by side
//! with assume-roled, so the ratio shows what the daemon's own work costs. Prints its address,
//! then serves.
//!
//! `bench_baseline ECS_BODY_FILE METADATA_BODY_FILE`: paths under `/latest/` get the second.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

fn body_from(argument: Option<String>) -> std::io::Result<Bytes> {
    let path = argument.ok_or_else(|| {
        std::io::Error::other("usage: bench_baseline ECS_BODY_FILE METADATA_BODY_FILE")
    })?;
    Ok(Bytes::from(std::fs::read(path)?))
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut arguments = std::env::args().skip(1);
    let ecs = body_from(arguments.next())?;
    let metadata = body_from(arguments.next())?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("{}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        let (ecs, metadata) = (ecs.clone(), metadata.clone());
        tokio::spawn(async move {
            let answer = service_fn(move |request: Request<Incoming>| {
                let body = if request.uri().path().starts_with("/latest/") {
                    metadata.clone()
                } else {
                    ecs.clone()
                };
                let mut response = Response::new(Full::new(body));
                let headers = response.headers_mut();
                headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
                async move { Ok::<_, Infallible>(response) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), answer)
                .await;
        });
    }
}
