//! A stateful fake of Twilio's Messages REST API: `POST /2010-04-01/Accounts/{sid}/Messages.json`
//! with HTTP basic auth (the account SID and [`AUTH_TOKEN`]), a form-encoded `To`, `From` (or
//! `MessagingServiceSid`) and `Body`, Twilio's error bodies (`code`, `message`, `status`) and
//! `201` with the message resource (`sid` `SM…`). It also signs inbound webhooks as Twilio does
//! (HMAC-SHA1 over the URL and the sorted parameters), computed here independently of caregraph.

use std::{
    collections::HashSet,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use axum::{
    Json, Router,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
};
use base64::{Engine, engine::general_purpose::STANDARD};
use hmac::{Hmac, Mac};
use serde_json::json;
use sha1::Sha1;

use super::{Control, serve};
use crate::helpers::TestApp;

/// The account SID the fake accepts.
pub const ACCOUNT_SID: &str = "AC00000000000000000000000000000001";

/// The auth token the fake accepts (and signs webhooks with).
pub const AUTH_TOKEN: &str = "fake-twilio-auth-token-0123456789";

/// caregraph's sending number.
pub const FROM_NUMBER: &str = "+15005550006";

/// A message the fake accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Accepted {
    pub sid: String,
    pub to: String,
    pub from: Option<String>,
    pub messaging_service_sid: Option<String>,
    pub body: String,
}

#[derive(Default)]
struct World {
    accepted: Vec<Accepted>,
    /// Numbers Twilio finds invalid although well-formed (unassigned: 21211, naming the number).
    invalid: HashSet<String>,
}

type Shared = Arc<Mutex<World>>;

/// A running fake Twilio.
pub struct FakeTwilio {
    /// Where it listens.
    pub addr: SocketAddr,
    control: Control,
    world: Shared,
}

fn error(status: u16, code: u32, message: &str) -> Response {
    (
        StatusCode::from_u16(status).expect("status"),
        Json(json!({
            "code": code,
            "message": message,
            "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
            "status": status,
        })),
    )
        .into_response()
}

fn e164(raw: &str) -> bool {
    raw.strip_prefix('+').is_some_and(|d| {
        (8..=15).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()) && !d.starts_with('0')
    })
}

async fn create_message(
    State(world): State<Shared>,
    Path(account): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let expected = format!(
        "Basic {}",
        STANDARD.encode(format!("{ACCOUNT_SID}:{AUTH_TOKEN}"))
    );
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
        return error(401, 20003, "Authenticate");
    }
    if account != ACCOUNT_SID {
        return error(404, 20404, "The requested resource was not found");
    }
    if headers.get("content-type").and_then(|v| v.to_str().ok())
        != Some("application/x-www-form-urlencoded")
    {
        return error(400, 21100, "Content-Type must be form-encoded");
    }
    let Ok(form) = serde_urlencoded::from_bytes::<Vec<(String, String)>>(&body) else {
        return error(400, 21100, "Malformed form");
    };
    let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let Some(to) = get("To") else {
        return error(400, 21604, "A 'To' phone number is required.");
    };
    if !e164(&to) || world.lock().expect("fake twilio").invalid.contains(&to) {
        return error(
            400,
            21211,
            &format!("The 'To' number {to} is not a valid phone number."),
        );
    }
    let from = get("From");
    let service = get("MessagingServiceSid");
    if from.is_none() && service.is_none() {
        return error(400, 21603, "A 'From' phone number is required.");
    }
    let Some(text) = get("Body").filter(|b| !b.is_empty()) else {
        return error(400, 21602, "Message body is required.");
    };
    let mut world = world.lock().expect("fake twilio");
    let sid = format!("SM{}", uuid::Uuid::new_v4().simple());
    world.accepted.push(Accepted {
        sid: sid.clone(),
        to: to.clone(),
        from: from.clone(),
        messaging_service_sid: service.clone(),
        body: text.clone(),
    });
    (
        StatusCode::CREATED,
        Json(json!({
            "account_sid": ACCOUNT_SID,
            "api_version": "2010-04-01",
            "body": text,
            "direction": "outbound-api",
            "from": from,
            "messaging_service_sid": service,
            "num_segments": "1",
            "sid": sid,
            "status": "queued",
            "to": to,
            "uri": format!("/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/{sid}.json"),
        })),
    )
        .into_response()
}

/// Starts a fake Twilio on a free port.
pub async fn start() -> FakeTwilio {
    let world = Shared::default();
    let control = Control::default();
    let router = Router::new()
        .route(
            "/2010-04-01/Accounts/{account}/Messages.json",
            post(create_message),
        )
        .with_state(world.clone());
    let addr = serve(router, control.clone()).await;
    FakeTwilio {
        addr,
        control,
        world,
    }
}

/// Twilio's signature of a webhook: base64(HMAC-SHA1(token, url + sorted name/value pairs)).
pub fn sign(token: &str, url: &str, params: &[(&str, &str)]) -> String {
    let mut sorted = params.to_vec();
    sorted.sort();
    let mut mac = Hmac::<Sha1>::new_from_slice(token.as_bytes()).expect("key");
    mac.update(url.as_bytes());
    for (k, v) in sorted {
        mac.update(k.as_bytes());
        mac.update(v.as_bytes());
    }
    STANDARD.encode(mac.finalize().into_bytes())
}

impl FakeTwilio {
    /// The request log and fault injection.
    pub fn control(&self) -> &Control {
        &self.control
    }

    /// The variables that point caregraph's SMS gateway here.
    pub fn vars(&self) -> Vec<(String, String)> {
        vec![
            ("CAREGRAPH_SMS_PROVIDER".into(), "twilio".into()),
            ("TWILIO_ACCOUNT_SID".into(), ACCOUNT_SID.into()),
            ("TWILIO_AUTH_TOKEN".into(), AUTH_TOKEN.into()),
            ("TWILIO_FROM_NUMBER".into(), FROM_NUMBER.into()),
            ("TWILIO_BASE_URL".into(), format!("http://{}", self.addr)),
        ]
    }

    /// Every message accepted so far.
    pub fn accepted(&self) -> Vec<Accepted> {
        self.world.lock().expect("fake twilio").accepted.clone()
    }

    /// Makes Twilio refuse `number` as invalid (21211, its message naming the number).
    pub fn invalidate(&self, number: &str) {
        self.world
            .lock()
            .expect("fake twilio")
            .invalid
            .insert(number.to_owned());
    }

    /// Posts an inbound SMS to caregraph's webhook as Twilio would, signed; the status.
    pub async fn inbound(&self, app: &TestApp, sid: &str, from: &str, body: &str) -> u16 {
        let params = [
            ("AccountSid", ACCOUNT_SID),
            ("ApiVersion", "2010-04-01"),
            ("Body", body),
            ("From", from),
            ("MessageSid", sid),
            ("NumMedia", "0"),
            ("NumSegments", "1"),
            ("SmsMessageSid", sid),
            ("SmsSid", sid),
            ("SmsStatus", "received"),
            ("To", FROM_NUMBER),
        ];
        let url = app.url("/webhooks/twilio");
        let signature = sign(AUTH_TOKEN, &url, &params);
        post_form(&url, &params, Some(signature.as_str())).await
    }
}

/// Posts a form to `url` with an optional `X-Twilio-Signature`; the status.
pub async fn post_form(url: &str, params: &[(&str, &str)], signature: Option<&str>) -> u16 {
    let mut request = reqwest::Client::new().post(url).form(params);
    if let Some(s) = signature {
        request = request.header("x-twilio-signature", s);
    }
    request.send().await.expect("post").status().as_u16()
}
