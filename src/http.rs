//! Response helpers both endpoints share: JSON errors `{"code", "message"}`, JSON and text
//! bodies, and the credentials body (never cached by anything in between).

use axum::body::Body;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use http_body_util::Full;
use serde_json::json;

const JSON: HeaderValue = HeaderValue::from_static("application/json");
const TEXT: HeaderValue = HeaderValue::from_static("text/plain");
const NO_STORE: HeaderValue = HeaderValue::from_static("no-store");

/// A JSON error answer `{"code", "message"}`.
pub fn error_response(status: StatusCode, code: &str, message: &str) -> Response {
    json_response(status, json!({"code": code, "message": message}))
}

/// A JSON answer with `status`.
pub fn json_response(status: StatusCode, value: serde_json::Value) -> Response {
    with_type(status, Body::from(value.to_string()), JSON)
}

/// A 200 `text/plain` answer.
pub fn text_response(text: String) -> Response {
    with_type(StatusCode::OK, Body::from(text), TEXT)
}

/// A 200 answer of `content_type`.
pub fn typed_response(body: impl Into<Body>, content_type: &'static str) -> Response {
    with_type(
        StatusCode::OK,
        body.into(),
        HeaderValue::from_static(content_type),
    )
}

/// A 200 with a pre-built credentials body, marked so no cache keeps it.
pub fn credentials_response(body: Bytes) -> Response {
    credentials_unboxed(body).map(Body::new)
}

/// [`credentials_response`] with the body as it is, unboxed: what the hot paths send.
pub fn credentials_unboxed(body: Bytes) -> axum::http::Response<Full<Bytes>> {
    let mut response = axum::http::Response::new(Full::new(body));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, JSON);
    headers.insert(CACHE_CONTROL, NO_STORE);
    response
}

fn with_type(status: StatusCode, body: Body, content_type: HeaderValue) -> Response {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, content_type);
    response
}

/// 403 for a role served per user when who connects is unknown: no answer from the kernel,
/// or a uid without an account.
pub fn unknown_peer_response() -> Response {
    error_response(
        StatusCode::FORBIDDEN,
        "Forbidden",
        "this role is served per user, and the connecting user is unknown or has no account \
         on this host",
    )
}

/// 503 for a new user of a role that holds its `max_sessions`.
pub fn full_response(role: &str, full: crate::sessions::Full) -> Response {
    let message = format!(
        "role {role} already holds {} user sessions (its max_sessions); try again once one \
         is dropped",
        full.limit
    );
    error_response(StatusCode::SERVICE_UNAVAILABLE, "TooManySessions", &message)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body_of(response: Response) -> String {
        let bytes = axum::body::to_bytes(response.into_body(), 4096)
            .await
            .unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    /// What a client of a role served per user meets on the wire: 503 `TooManySessions` naming
    /// the limit, and 403 when it cannot be told who connects.
    #[tokio::test]
    async fn per_user_refusals_say_why() {
        let full = full_response("piyo", crate::sessions::Full { limit: 256 });
        assert_eq!(full.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = body_of(full).await;
        assert!(body.contains("\"code\":\"TooManySessions\""), "{body}");
        assert!(body.contains("256 user sessions"), "{body}");
        let unknown = unknown_peer_response();
        assert_eq!(unknown.status(), StatusCode::FORBIDDEN);
        assert!(body_of(unknown).await.contains("served per user"));
    }
}
