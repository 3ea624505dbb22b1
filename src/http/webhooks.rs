//! `POST /webhooks/stream` and `POST /webhooks/sendbird`: a delivery is verified over its raw
//! body in constant time (401 without or with a wrong signature), must be JSON (400), must not
//! be older than `CAREGRAPH_WEBHOOK_MAX_AGE_SECONDS` when it carries a time (400), is recorded
//! once, keyed on the digest of the signed body (a retry or a replay under another delivery id
//! answers 200 and changes nothing: the delivery-id headers are not signed), and answered at
//! once; processing follows in the background. A provider that is not configured has no
//! webhook (404).

use axum::{
    Json,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use secrecy::ExposeSecret;
use serde_json::{Value, json};

use super::AppState;
use crate::{
    providers::webhooks::{Refusal, body_id, signed, stream_body},
    services::webhooks::Source,
};

fn refuse(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Stream's webhook.
pub async fn stream(State(state): State<AppState>, headers: HeaderMap, raw: Bytes) -> Response {
    let Some(stream) = &state.config.chat.stream else {
        return refuse(StatusCode::NOT_FOUND, "Stream is not configured");
    };
    let signature = header(&headers, "x-signature");
    if signature.is_none() {
        return refuse(StatusCode::UNAUTHORIZED, "missing X-Signature");
    }
    let body = match stream_body(&raw) {
        Ok(body) => body,
        Err(Refusal::Malformed | Refusal::Unsigned) => {
            return refuse(StatusCode::BAD_REQUEST, "the body does not inflate");
        }
    };
    if !signed(
        stream.api_secret.expose_secret().as_bytes(),
        &body,
        signature,
    ) {
        tracing::warn!("a Stream webhook with a wrong signature was refused");
        return refuse(StatusCode::UNAUTHORIZED, "bad X-Signature");
    }
    // Stream's signature does not cover X-Webhook-Id: the key is what the signature covers.
    let id = body_id(&body);
    accept(state, Source::Stream, id, body).await
}

/// Sendbird's webhook.
pub async fn sendbird(State(state): State<AppState>, headers: HeaderMap, raw: Bytes) -> Response {
    let Some(sendbird) = &state.config.chat.sendbird else {
        return refuse(StatusCode::NOT_FOUND, "Sendbird is not configured");
    };
    let signature = header(&headers, "x-sendbird-signature");
    if !signed(
        sendbird.api_token.expose_secret().as_bytes(),
        &raw,
        signature,
    ) {
        tracing::warn!("a Sendbird webhook without a valid signature was refused");
        return refuse(
            StatusCode::UNAUTHORIZED,
            "missing or bad x-sendbird-signature",
        );
    }
    let id = body_id(&raw);
    accept(state, Source::Sendbird, id, raw.to_vec()).await
}

/// Checks the JSON, records the delivery once, answers, and processes it in the background.
async fn accept(state: AppState, source: Source, id: String, body: Vec<u8>) -> Response {
    let parsed = String::from_utf8(body).ok().and_then(|text| {
        let json = serde_json::from_str::<Value>(&text).ok()?;
        json.is_object().then_some((text, json))
    });
    let Some((text, json)) = parsed else {
        return refuse(StatusCode::BAD_REQUEST, "the body is not a JSON object");
    };
    let webhooks = state.services.webhooks.clone();
    if webhooks.is_stale(&json, state.config.security.webhook_max_age) {
        tracing::warn!(
            provider = source.as_str(),
            "a webhook delivery older than CAREGRAPH_WEBHOOK_MAX_AGE_SECONDS was refused"
        );
        return refuse(StatusCode::BAD_REQUEST, "the delivery is too old");
    }
    match webhooks.record(source, &id, &text).await {
        Ok(true) => {
            tokio::spawn(async move {
                if let Err(e) = webhooks.process(source, &id, &text).await {
                    // The sweep tries again.
                    e.log_cause();
                }
            });
            (StatusCode::OK, Json(json!({ "status": "accepted" }))).into_response()
        }
        Ok(false) => (StatusCode::OK, Json(json!({ "status": "duplicate" }))).into_response(),
        Err(e) => {
            // Not recorded: the provider retries.
            e.log_cause();
            refuse(StatusCode::SERVICE_UNAVAILABLE, "try again later")
        }
    }
}
