//! The metadata endpoint's routes: the session token (`PUT /latest/api/token`) and the reads a
//! connection does not answer directly. Every read has passed the connection's session check
//! before it gets here, and is answered from the table snapshot it was checked against; a
//! credentials read takes the one answer path of both endpoints.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Extension, Router};

use super::{AppState, Checked};
use crate::access::{self, Via};
use crate::http::text_response;
use crate::imds::{self, Imds, Route};
use crate::peer::Peer;

/// The metadata endpoint: the role it serves (`[imds] role`) and its own parts.
pub struct Metadata {
    /// The `[[roles]]` name of the served role.
    role: String,
    imds: Imds,
}

impl Metadata {
    /// Serves role `role` (a `[[roles]]` name) with `imds`'s tokens and upstream.
    pub fn new(role: &str, imds: Imds) -> Self {
        Self {
            role: role.to_owned(),
            imds,
        }
    }

    /// The `[[roles]]` name of the served role.
    pub fn role(&self) -> &str {
        &self.role
    }

    /// The endpoint's tokens and upstream.
    pub fn imds(&self) -> &Imds {
        &self.imds
    }
}

/// Handed to a metadata read by the connection once its session token was checked: a read
/// that arrives without it (a path the connection did not take for a metadata read) fails
/// closed, with a 500.
#[derive(Debug, Clone, Copy)]
pub struct SessionChecked;

/// What the metadata routes are handed: the server's state and the endpoint it serves.
#[derive(Clone)]
struct MetadataState {
    app: AppState,
    metadata: Arc<Metadata>,
}

/// The metadata routes of `app`, which serves `metadata`.
pub fn routes(app: AppState, metadata: Arc<Metadata>) -> Router {
    Router::new()
        .route("/latest/api/token", put(issue_token))
        .route("/latest/{*path}", get(read))
        .with_state(MetadataState { app, metadata })
}

async fn issue_token(State(state): State<MetadataState>, headers: HeaderMap) -> Response {
    let Some(ttl) = imds::requested_ttl(&headers) else {
        return imds::bad_ttl();
    };
    let now = crate::clock::Clock::now(state.app.inner.clock.as_ref());
    imds::token_response(state.metadata.imds.mint(now, ttl), ttl)
}

async fn read(
    State(state): State<MetadataState>,
    Path(path): Path<String>,
    Extension(peer): Extension<Arc<Peer>>,
    Extension(checked): Extension<Checked>,
    Extension(SessionChecked): Extension<SessionChecked>,
) -> Response {
    let MetadataState { app, metadata } = state;
    let table = &checked.table;
    let route = imds::route(&path);
    if let Route::Credentials(iam_name) | Route::ExtendedCredentials(iam_name) = &route {
        let extended = matches!(route, Route::ExtendedCredentials(_));
        let via = Via::Metadata { iam_name, extended };
        let now = crate::clock::Clock::now(app.inner.clock.as_ref());
        let Ok(answer) = app
            .credentials(table, &metadata.role, via, &peer, (now, None))
            .await;
        return answer.into_response();
    }
    // Everything else the endpoint knows is for the users the role admits: to anyone else it
    // is an instance with no role and nothing to read (the identity document would let them
    // authenticate as the instance elsewhere).
    let Some(entry) = access::admitting(table, &metadata.role, &peer) else {
        return imds::not_found();
    };
    if let Route::Upstream(full_path) = &route {
        return metadata.imds.passthrough(full_path).await;
    }
    let arn = &entry.config.arn;
    match route {
        Route::IamListing => text_response("info\nsecurity-credentials/".to_owned()),
        Route::RoleList => text_response(arn.role_name().to_owned()),
        Route::Info => {
            let status = entry.shared_status();
            let obtained = (status.as_ref()).and_then(|s| Some(s.current.as_ref()?.obtained));
            let now = crate::clock::Clock::now(app.inner.clock.as_ref());
            imds::iam_info(&metadata.role, arn.as_str(), obtained, now)
        }
        _ => imds::not_found(),
    }
}
