//! GraphQL over HTTP (GET and POST) per the GraphQL-over-HTTP spec, hardened:
//!
//! - `Accept` is honoured: `application/graphql-response+json` (request errors answer 4xx
//!   without `data`) or `application/json` (always 200); anything else is 406.
//! - POST needs `Content-Type: application/json` (415 otherwise, which also stops `text/plain`
//!   cross-site "simple requests"); batches (JSON arrays) are refused.
//! - GET never runs a mutation (405 with `Allow: POST`), persisted, trusted or not.
//! - Malformed JSON, a missing query and wrongly typed parameters are 400 with a GraphQL error
//!   body carrying `extensions.code`.

use std::net::SocketAddr;

use async_graphql::{
    Request as GqlRequest, Variables,
    parser::{
        parse_query,
        types::{DocumentOperations, OperationType},
    },
};
use axum::{
    body::Bytes,
    extract::{ConnectInfo, FromRequestParts, Request, State, ws::WebSocketUpgrade},
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::{Map, Value as Json};

use super::{AppState, ws};
use crate::{auth::Viewer, error::ErrorCode, graphql::persisted};

/// The response media types caregraph speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MediaType {
    /// `application/json`: every GraphQL result is 200.
    Json,
    /// `application/graphql-response+json`: request errors are 4xx without `data`.
    GraphqlResponse,
}

impl MediaType {
    fn content_type(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            Self::Json => "application/json; charset=utf-8",
            Self::GraphqlResponse => "application/graphql-response+json; charset=utf-8",
        })
    }
}

/// Picks the response type from `Accept`, in the client's order; `None` when neither is
/// acceptable.
fn negotiate(headers: &HeaderMap) -> Option<MediaType> {
    let accept = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(",");
    if accept.trim().is_empty() {
        return Some(MediaType::Json);
    }
    for item in accept.split(',') {
        let mut parts = item.split(';');
        let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let refused = parts.any(|p| {
            let p = p.trim().replace(' ', "");
            p == "q=0" || p == "q=0.0" || p == "q=0.00" || p == "q=0.000"
        });
        if refused {
            continue;
        }
        match media.as_str() {
            "application/graphql-response+json" => return Some(MediaType::GraphqlResponse),
            "application/json" | "application/*" | "*/*" => return Some(MediaType::Json),
            _ => {}
        }
    }
    None
}

/// A GraphQL error body with a code.
fn error_response(
    status: StatusCode,
    media: MediaType,
    code: ErrorCode,
    message: &str,
) -> Response {
    let body = serde_json::json!({
        "errors": [{ "message": message, "extensions": { "code": code.as_str() } }]
    });
    let mut response = (status, body.to_string()).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, media.content_type());
    response
}

fn bad_request(media: MediaType, message: &str) -> Response {
    error_response(
        StatusCode::BAD_REQUEST,
        media,
        ErrorCode::BadUserInput,
        message,
    )
}

/// Builds a GraphQL request from its parameters, checking their types.
fn request_from_params(params: &Map<String, Json>) -> Result<GqlRequest, &'static str> {
    let query = match params.get("query") {
        None | Some(Json::Null) => String::new(),
        Some(Json::String(q)) => q.clone(),
        Some(_) => return Err("`query` must be a string"),
    };
    let has_persisted = matches!(params.get("extensions"), Some(Json::Object(e)) if e.contains_key("persistedQuery"))
        || params.contains_key("documentId");
    if query.trim().is_empty() && !has_persisted {
        return Err("the request has no `query`");
    }
    let mut request = GqlRequest::new(query);
    match params.get("operationName") {
        None | Some(Json::Null) => {}
        Some(Json::String(name)) => request = request.operation_name(name.clone()),
        Some(_) => return Err("`operationName` must be a string"),
    }
    match params.get("variables") {
        None | Some(Json::Null) => {}
        Some(v @ Json::Object(_)) => request = request.variables(Variables::from_json(v.clone())),
        Some(_) => return Err("`variables` must be an object"),
    }
    match params.get("extensions") {
        None | Some(Json::Null) => {}
        Some(Json::Object(map)) => {
            for (k, v) in map {
                let value = async_graphql::Value::from_json(v.clone())
                    .map_err(|_| "`extensions` must be JSON")?;
                request.extensions.0.insert(k.clone(), value);
            }
        }
        Some(_) => return Err("`extensions` must be an object"),
    }
    Ok(request)
}

/// Whether the operation the request selects is a mutation.
fn selects_mutation(request: &GqlRequest) -> bool {
    let Ok(doc) = parse_query(&request.query) else {
        return false; // the engine reports the syntax error
    };
    match &doc.operations {
        DocumentOperations::Single(op) => op.node.ty == OperationType::Mutation,
        DocumentOperations::Multiple(ops) => match &request.operation_name {
            Some(name) => ops
                .get(name.as_str())
                .is_some_and(|op| op.node.ty == OperationType::Mutation),
            // One named operation is `Multiple` too, and runs without an operationName.
            None if ops.len() == 1 => ops.values().any(|op| op.node.ty == OperationType::Mutation),
            None => false, // ambiguous: the engine reports it
        },
    }
}

/// Resolves the viewer from the `Authorization` header; a present but invalid header is 401.
async fn viewer_from_headers(
    state: &AppState,
    headers: &HeaderMap,
    client: SocketAddr,
) -> Result<Viewer, crate::error::AppError> {
    match headers.get(header::AUTHORIZATION) {
        None => Ok(Viewer::anonymous(Some(client.ip()))),
        Some(value) => {
            let raw = value.to_str().map_err(|_| {
                crate::error::AppError::Unauthenticated("invalid or expired access token".into())
            })?;
            state
                .services
                .accounts
                .authenticator()
                .viewer_from_token(raw, Some(client.ip()))
                .await
        }
    }
}

/// The request id (`x-request-id`: a proxy's, else the UUID the request-id layer set), if it is a
/// plain token.
pub(crate) fn request_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 64
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        .map(str::to_owned)
}

/// The viewer with a recording audit scope (the user, or anonymous; the request id, the client's
/// address and the operation's name).
pub(crate) fn with_audit_scope(
    state: &AppState,
    viewer: Viewer,
    headers: &HeaderMap,
    client: SocketAddr,
    operation_name: Option<&str>,
) -> Viewer {
    let actor = match viewer.user_opt() {
        Some(user) => crate::audit::AuditActor::User(user.id),
        None => crate::audit::AuditActor::Anonymous,
    };
    let scope =
        state
            .services
            .audit
            .scope(actor, request_id(headers), Some(client.ip().to_string()));
    scope.set_operation_name(operation_name);
    viewer.with_audit(scope)
}

async fn execute(
    state: &AppState,
    headers: &HeaderMap,
    client: SocketAddr,
    media: MediaType,
    params: &Map<String, Json>,
    is_get: bool,
) -> Response {
    let (mut request, document_id) =
        match request_from_params(params).and_then(|r| Ok((r, persisted::document_id(params)?))) {
            Ok(r) => r,
            Err(message) => return bad_request(media, message),
        };
    let viewer = match viewer_from_headers(state, headers, client).await {
        Ok(v) => v,
        Err(e) => {
            return error_response(StatusCode::UNAUTHORIZED, media, e.code(), &e.message());
        }
    };
    let viewer = with_audit_scope(
        state,
        viewer,
        headers,
        client,
        request.operation_name.as_deref(),
    );
    if let Err(e) = state
        .persisted
        .resolve(&mut request, document_id.as_deref())
    {
        let status = if media == MediaType::GraphqlResponse {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::OK
        };
        return error_response(status, media, e.code, &e.message);
    }
    if is_get && selects_mutation(&request) {
        let mut response = error_response(
            StatusCode::METHOD_NOT_ALLOWED,
            media,
            ErrorCode::BadUserInput,
            "mutations are only accepted over POST",
        );
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return response;
    }
    let audit = viewer.audit.clone();
    // The client's `traceparent`, when traces are exported, is the operation span's parent.
    let response = if crate::telemetry::otel::enabled() {
        let parent = crate::telemetry::otel::client_context(headers);
        opentelemetry::trace::FutureExt::with_context(
            state.graphql.execute(request, viewer),
            parent,
        )
        .await
    } else {
        state.graphql.execute(request, viewer).await
    };
    // The request's reads go to the audit queue now, before the answer leaves: an in-memory
    // hand-over (no database round-trip), which waits only when the queue is full.
    state.services.audit.flush(&audit).await;

    // A request error (parse, validation, limits, variables): nothing executed, no error path.
    let request_error = response.data == async_graphql::Value::Null
        && !response.errors.is_empty()
        && response.errors.iter().all(|e| e.path.is_empty());
    let extra_headers = response.http_headers.clone();
    let (status, body) = if request_error && media == MediaType::GraphqlResponse {
        // No `data` key at all in a request error's body: edit the tree (rare path).
        let body = serde_json::to_value(&response).map(|mut body| {
            if let Some(obj) = body.as_object_mut() {
                obj.remove("data");
            }
            body.to_string().into_bytes()
        });
        (StatusCode::BAD_REQUEST, body)
    } else {
        // Straight to bytes: no intermediate JSON tree per response.
        (StatusCode::OK, super::body::to_vec(&response))
    };
    let body = match body {
        Ok(b) => b,
        Err(e) => {
            return crate::error::AppError::internal(e).into_response();
        }
    };
    let mut http = (status, body).into_response();
    http.headers_mut().extend(extra_headers);
    http.headers_mut()
        .insert(header::CONTENT_TYPE, media.content_type());
    http
}

/// `POST /graphql`.
pub async fn post(
    State(state): State<AppState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(media) = negotiate(&headers) else {
        return StatusCode::NOT_ACCEPTABLE.into_response();
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_owned();
    if essence != "application/json" {
        return error_response(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            media,
            ErrorCode::BadUserInput,
            "POST bodies must be application/json",
        );
    }
    let params = match serde_json::from_slice::<Json>(&body) {
        Ok(Json::Object(map)) => map,
        Ok(Json::Array(_)) => return bad_request(media, "batched requests are not supported"),
        Ok(_) => return bad_request(media, "the body must be a JSON object"),
        Err(_) => return bad_request(media, "the body is not valid JSON"),
    };
    execute(&state, &headers, client, media, &params, false).await
}

/// `GET /graphql`: a query in the URL, or a WebSocket upgrade for subscriptions.
pub async fn get_or_upgrade(
    State(state): State<AppState>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    let is_upgrade = request
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let (mut parts, _) = request.into_parts();
    if is_upgrade {
        return match WebSocketUpgrade::from_request_parts(&mut parts, &state).await {
            Ok(upgrade) => {
                let slot = parts.extensions.get::<super::connections::Slot>().cloned();
                ws::upgrade(state, upgrade, &parts.headers, client, slot)
            }
            Err(rejection) => rejection.into_response(),
        };
    }
    debug_assert_eq!(parts.method, Method::GET);
    let Some(media) = negotiate(&parts.headers) else {
        return StatusCode::NOT_ACCEPTABLE.into_response();
    };
    let pairs: Vec<(String, String)> = parts
        .uri
        .query()
        .map(|q| serde_urlencoded::from_str(q).unwrap_or_default())
        .unwrap_or_default();
    let mut params = Map::new();
    for (key, value) in pairs {
        if params.contains_key(&key) {
            continue;
        }
        let parsed = match key.as_str() {
            "variables" | "extensions" => match serde_json::from_str::<Json>(&value) {
                Ok(v) => v,
                Err(_) => return bad_request(media, "`variables` and `extensions` must be JSON"),
            },
            _ => Json::String(value),
        };
        params.insert(key, parsed);
    }
    execute(&state, &parts.headers, client, media, &params, true).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(v: &str) -> Option<MediaType> {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_str(v).expect("header"));
        negotiate(&h)
    }

    #[test]
    fn accept_is_honoured_in_the_clients_order() {
        assert_eq!(negotiate(&HeaderMap::new()), Some(MediaType::Json));
        assert_eq!(accept("application/json"), Some(MediaType::Json));
        assert_eq!(
            accept("application/graphql-response+json, application/json;q=0.9"),
            Some(MediaType::GraphqlResponse)
        );
        assert_eq!(
            accept("application/json, multipart/mixed"),
            Some(MediaType::Json)
        );
        assert_eq!(accept("*/*"), Some(MediaType::Json));
        assert_eq!(accept("text/html"), None);
        assert_eq!(accept("application/json;q=0"), None);
    }
}
