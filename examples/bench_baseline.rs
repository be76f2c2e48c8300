//! The benchmark's baseline, the physical limit the daemon is measured against: a bare hyper
//! HTTP/1 server (no router, no middleware, no authentication, no logging) answering every
//! request with fixed bytes shaped like the daemon's credentials body. `make bench` runs it
//! side by side with assume-roled, so the ratio shows what the daemon's own work costs. Prints
//! its address, then serves.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

/// A body shaped like the daemon's: six keys, a session token of realistic length.
fn body() -> Bytes {
    let token = "T".repeat(780);
    Bytes::from(format!(
        r#"{{"AccessKeyId":"ASIAEXAMPLEEXAMPLE00","SecretAccessKey":"{}","Token":"{token}","Expiration":"2026-11-28T05:00:00Z","RoleArn":"arn:aws:iam::444455556666:role/piyo-role","AccountId":"444455556666"}}"#,
        "S".repeat(40)
    ))
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let body = body();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("{}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        let body = body.clone();
        tokio::spawn(async move {
            let answer = service_fn(move |_: Request<Incoming>| {
                let mut response = Response::new(Full::new(body.clone()));
                let json = HeaderValue::from_static("application/json");
                response.headers_mut().insert(CONTENT_TYPE, json);
                async move { Ok::<_, Infallible>(response) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), answer)
                .await;
        });
    }
}
