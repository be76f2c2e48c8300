//! The benchmark's baseline: the same HTTP stack as assume-roled (axum on tokio), answering
//! `GET /roles/{name}` and the IMDS credentials path with fixed bytes of the same size, with no
//! authentication and no logic. `make bench` measures assume-roled against it side by side, so
//! the ratio shows what the daemon's own work costs. Prints its address, then serves.

use axum::Router;
use axum::body::Body;
use axum::http::HeaderValue;
use axum::http::header::CONTENT_TYPE;
use axum::response::Response;
use axum::routing::get;
use bytes::Bytes;

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
    let answer = move || {
        let body = body.clone();
        async move {
            let mut response = Response::new(Body::from(body));
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            response
        }
    };
    let app = Router::new()
        .route("/roles/{name}", get(answer.clone()))
        .route(
            "/latest/meta-data/iam/security-credentials/{name}",
            get(answer),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("{}", listener.local_addr()?);
    axum::serve(listener, app).await
}
