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

/// A 200 with a pre-built credentials body, marked so no cache keeps it, the body as it is
/// (unboxed).
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
