//! `POST /webhooks/stream` and `POST /webhooks/sendbird`: a delivery is verified over its raw
//! body in constant time (401 without or with a wrong signature), must be JSON (400), must not
//! be older than `CAREGRAPH_WEBHOOK_MAX_AGE_SECONDS` when it carries a time (400), is recorded
//! once, keyed on the digest of the signed body (a retry or a replay under another delivery id
//! answers 200 and changes nothing: the delivery-id headers are not signed), and answered at
//! once; processing follows in the background. A provider that is not configured has no
//! webhook (404).
//!
//! `POST /webhooks/twilio` takes inbound SMS of external chat members: Twilio's form, verified
//! by `X-Twilio-Signature` over the URL Twilio called and the sorted parameters (401 without or
//! with a wrong one), for this account only (403), recorded once by `MessageSid` and answered
//! with an empty TwiML response; the reply is posted in the background (the sweep retries).

use axum::{
    Json,
    body::Bytes,
    extract::{OriginalUri, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use secrecy::ExposeSecret;
use serde_json::{Value, json};

use super::AppState;
use crate::{
    providers::{
        sms::twilio,
        webhooks::{Refusal, body_id, signed, stream_body},
    },
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

/// The URL Twilio signed: `TWILIO_WEBHOOK_URL`, else `CAREGRAPH_PUBLIC_URL` with the request's
/// path and query, else `http://` and the request's `Host` (a made-up host only makes the
/// signature fail).
fn twilio_url(
    state: &AppState,
    configured: Option<&str>,
    headers: &HeaderMap,
    uri: &axum::http::Uri,
) -> String {
    if let Some(url) = configured {
        return url.to_owned();
    }
    let path = uri
        .path_and_query()
        .map_or_else(|| uri.path().to_owned(), |p| p.as_str().to_owned());
    match &state.config.public_url {
        Some(base) => format!("{}{path}", base.trim_end_matches('/')),
        None => format!(
            "http://{}{path}",
            header(headers, "host").unwrap_or_default()
        ),
    }
}

/// An empty TwiML answer: Twilio sends no reply SMS.
fn twiml(status: &str) -> Response {
    (
        StatusCode::OK,
        [
            (axum::http::header::CONTENT_TYPE, "text/xml"),
            (
                axum::http::HeaderName::from_static("x-caregraph-status"),
                status,
            ),
        ],
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response></Response>",
    )
        .into_response()
}

/// Twilio's webhook for inbound SMS.
pub async fn twilio(
    State(state): State<AppState>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    raw: Bytes,
) -> Response {
    let Some(config) = state.config.sms.twilio() else {
        return refuse(StatusCode::NOT_FOUND, "Twilio is not configured");
    };
    let Ok(params) = serde_urlencoded::from_bytes::<Vec<(String, String)>>(&raw) else {
        return refuse(StatusCode::BAD_REQUEST, "the body is not a form");
    };
    let url = twilio_url(&state, config.webhook_url.as_deref(), &headers, &uri);
    let signature = header(&headers, "x-twilio-signature").unwrap_or_default();
    if !twilio::verify(
        config.auth_token.expose_secret().as_bytes(),
        &url,
        &params,
        signature,
    ) {
        tracing::warn!("a Twilio webhook without a valid signature was refused");
        return refuse(
            StatusCode::UNAUTHORIZED,
            "missing or bad X-Twilio-Signature",
        );
    }
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    if param("AccountSid") != Some(config.account_sid.as_str()) {
        return refuse(StatusCode::FORBIDDEN, "not this Twilio account");
    }
    let Some(sid) = param("MessageSid")
        .or_else(|| param("SmsSid"))
        .filter(|s| !s.is_empty())
    else {
        return refuse(StatusCode::BAD_REQUEST, "no MessageSid");
    };
    let sid = sid.to_owned();
    let Ok(text) = String::from_utf8(raw.to_vec()) else {
        return refuse(StatusCode::BAD_REQUEST, "the body is not UTF-8");
    };
    let webhooks = state.services.webhooks.clone();
    match webhooks.record(Source::Twilio, &sid, &text).await {
        Ok(true) => {
            tokio::spawn(async move {
                if let Err(e) = webhooks.process(Source::Twilio, &sid, &text).await {
                    // The sweep tries again.
                    e.log_cause();
                }
            });
            twiml("accepted")
        }
        Ok(false) => twiml("duplicate"),
        Err(e) => {
            // Not recorded: Twilio retries (or its fallback URL takes it).
            e.log_cause();
            refuse(StatusCode::SERVICE_UNAVAILABLE, "try again later")
        }
    }
}
