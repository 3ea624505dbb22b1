//! `GET /exports/audit/{token}`: the download behind `exportAuditEvents`. The signed token is
//! the only credential (a browser link); the body streams chunk by chunk, never held whole.

use std::net::SocketAddr;

use axum::{
    body::Body,
    extract::{ConnectInfo, Path, State},
    http::{HeaderMap, HeaderValue, header},
    response::{IntoResponse, Response},
};

use futures_util::TryStreamExt;

use super::AppState;
use crate::services::audit_trail::Downloader;

/// The longest token accepted (a filter with every field set stays far below).
const MAX_TOKEN: usize = 2_048;

/// The request's id when the client sent a plausible one (visible ASCII, at most 64 bytes).
fn request_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 64 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned)
}

/// Streams an audit export: 404 for an unknown, altered, expired or used link.
pub async fn audit(
    State(state): State<AppState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    Path(token): Path<String>,
    headers: HeaderMap,
) -> Response {
    if token.len() > MAX_TOKEN {
        return crate::error::AppError::NotFound("export").into_response();
    }
    let trail = &state.services.audit_trail;
    let who = Downloader {
        client_ip: Some(client.ip()),
        request_id: request_id(&headers),
    };
    let grant = match trail.open_download(&token, who).await {
        Ok(grant) => grant,
        Err(e) => return e.into_response(),
    };
    let filename = format!(
        "attachment; filename=\"audit-{}.{}\"",
        grant.org_id,
        grant.format.extension()
    );
    let content_type = grant.format.content_type();
    // The status line is sent by then: a failure mid-way is logged and ends the body in error.
    let body = trail.download(grant).map_err(|e| {
        e.log_cause();
        std::io::Error::other("the audit export failed")
    });
    let mut response = Body::from_stream(body).into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(v) = HeaderValue::from_str(&filename) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    response
}
