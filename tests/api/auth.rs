//! Authentication: every rejection of a request with `UNAUTHENTICATED` (on WebSocket the
//! same rejections close with 4403, in websocket.rs), JWKS keys with rotation, login and its
//! rate limits.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use axum::{Router, routing::get};
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::helpers::{SECRET, TestApp, code, hs256, now};

const VIEWER: &str = "{ viewer { user { email } } }";

const RSA_PRIVATE: &[u8] = include_bytes!("../fixtures/rsa_private.pem");
const RSA_PUBLIC: &[u8] = include_bytes!("../fixtures/rsa_public.pem");
const RSA_ROTATED: &[u8] = include_bytes!("../fixtures/rsa_rotated_private.pem");
const EC_PRIVATE: &[u8] = include_bytes!("../fixtures/ec_private.pem");
const JWKS: &str = include_str!("../fixtures/jwks.json");
const JWKS_ROTATED: &str = include_str!("../fixtures/jwks_rotated.json");

/// A JWKS endpoint that serves `jwks.json` until `rotate` is set, then `jwks_rotated.json`,
/// counting fetches.
struct JwksServer {
    url: String,
    fetches: Arc<AtomicUsize>,
    rotated: Arc<std::sync::atomic::AtomicBool>,
}

async fn jwks_server() -> JwksServer {
    let fetches = Arc::new(AtomicUsize::new(0));
    let rotated = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (f, r) = (fetches.clone(), rotated.clone());
    let router = Router::new().route(
        "/jwks.json",
        get(move || {
            let (f, r) = (f.clone(), r.clone());
            async move {
                f.fetch_add(1, Ordering::SeqCst);
                let body = if r.load(Ordering::SeqCst) {
                    JWKS_ROTATED
                } else {
                    JWKS
                };
                ([("content-type", "application/json")], body)
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, router).await });
    JwksServer {
        url: format!("http://{addr}/jwks.json"),
        fetches,
        rotated,
    }
}

fn sign(alg: Algorithm, kid: &str, key: &EncodingKey, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = Some(kid.into());
    jsonwebtoken::encode(&header, claims, key).expect("sign")
}

async fn jwks_app() -> (TestApp, JwksServer, String) {
    let jwks = jwks_server().await;
    let url = jwks.url.clone();
    let app = TestApp::spawn_with(move |v| {
        v.insert("CAREGRAPH_JWKS_URL".into(), url);
    })
    .await;
    let (user, _, _) = app.owner("Idp Clinic", "idp@example.org").await;
    (app, jwks, user.id.to_string())
}

async fn assert_rejected(app: &TestApp, token: &str) {
    let res = app
        .http
        .post(app.url("/graphql"))
        .bearer_auth(token)
        .json(&json!({ "query": VIEWER }))
        .send()
        .await
        .expect("post");
    assert_eq!(
        res.status(),
        reqwest::StatusCode::UNAUTHORIZED,
        "token {token}"
    );
    let body: Value = res.json().await.expect("json");
    assert_eq!(code(&body), "UNAUTHENTICATED");
}

async fn assert_accepted(app: &TestApp, token: &str, email: &str) {
    let body = app.gql(Some(token), VIEWER, json!({})).await;
    assert_eq!(body["data"]["viewer"]["user"]["email"], email, "{body}");
}

#[tokio::test]
async fn a_valid_hs256_token_is_accepted_and_no_token_is_anonymous() {
    let app = TestApp::spawn().await;
    let (user, _, _) = app.owner("Hs Clinic", "hs@example.org").await;
    let token = hs256(
        SECRET.as_bytes(),
        &json!({ "sub": user.id.to_string(), "exp": now() + 600 }),
    );
    assert_accepted(&app, &token, "hs@example.org").await;
    let body = app.gql(None, VIEWER, json!({})).await;
    assert_eq!(code(&body), "UNAUTHENTICATED");
}

#[tokio::test]
async fn alg_none_a_wrong_key_an_expired_token_and_a_missing_exp_are_rejected() {
    let app = TestApp::spawn().await;
    let (user, _, _) = app.owner("Reject Clinic", "reject@example.org").await;
    let sub = user.id.to_string();
    let b64 = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let none = format!(
        "{}.{}.",
        b64(json!({ "alg": "none", "typ": "JWT" })),
        b64(json!({ "sub": sub, "exp": now() + 600 }))
    );
    assert_rejected(&app, &none).await;
    assert_rejected(
        &app,
        &hs256(
            b"some-other-secret-of-enough-length",
            &json!({ "sub": sub, "exp": now() + 600 }),
        ),
    )
    .await;
    assert_rejected(
        &app,
        &hs256(
            SECRET.as_bytes(),
            &json!({ "sub": sub, "exp": now() - 120 }),
        ),
    )
    .await;
    assert_rejected(&app, &hs256(SECRET.as_bytes(), &json!({ "sub": sub }))).await;
    assert_rejected(
        &app,
        &hs256(
            SECRET.as_bytes(),
            &json!({ "sub": "no-such-user", "exp": now() + 600 }),
        ),
    )
    .await;
    assert_rejected(&app, "not-a-jwt").await;
    // A tampered payload keeps the old signature.
    let good = hs256(
        SECRET.as_bytes(),
        &json!({ "sub": sub, "exp": now() + 600 }),
    );
    let parts: Vec<&str> = good.split('.').collect();
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        b64(json!({ "sub": sub, "exp": now() + 99_999 })),
        parts[2]
    );
    assert_rejected(&app, &forged).await;
}

#[tokio::test]
async fn issuer_and_audience_are_checked_when_configured() {
    let app = TestApp::spawn_with(|v| {
        v.insert(
            "CAREGRAPH_JWT_ISSUER".into(),
            "https://idp.example.org/".into(),
        );
        v.insert("CAREGRAPH_JWT_AUDIENCE".into(), "caregraph".into());
    })
    .await;
    let (user, _, _) = app.owner("Iss Clinic", "iss@example.org").await;
    let sub = user.id.to_string();
    let claims =
        |iss: &str, aud: &str| json!({ "sub": sub, "exp": now() + 600, "iss": iss, "aud": aud });
    assert_accepted(
        &app,
        &hs256(
            SECRET.as_bytes(),
            &claims("https://idp.example.org/", "caregraph"),
        ),
        "iss@example.org",
    )
    .await;
    assert_rejected(
        &app,
        &hs256(
            SECRET.as_bytes(),
            &claims("https://evil.example.org/", "caregraph"),
        ),
    )
    .await;
    assert_rejected(
        &app,
        &hs256(
            SECRET.as_bytes(),
            &claims("https://idp.example.org/", "other-app"),
        ),
    )
    .await;
    assert_rejected(
        &app,
        &hs256(
            SECRET.as_bytes(),
            &json!({ "sub": sub, "exp": now() + 600 }),
        ),
    )
    .await;
    // Tokens caregraph mints itself carry both.
    let minted = app.token(&user);
    assert_accepted(&app, &minted, "iss@example.org").await;
}

#[tokio::test]
async fn rs256_and_es256_tokens_verify_against_the_jwks() {
    let (app, _jwks, sub) = jwks_app().await;
    let claims = json!({ "sub": sub, "exp": now() + 600 });
    let rsa = EncodingKey::from_rsa_pem(RSA_PRIVATE).expect("rsa key");
    let ec = EncodingKey::from_ec_pem(EC_PRIVATE).expect("ec key");
    assert_accepted(
        &app,
        &sign(Algorithm::RS256, "rsa-1", &rsa, &claims),
        "idp@example.org",
    )
    .await;
    assert_accepted(
        &app,
        &sign(Algorithm::ES256, "ec-1", &ec, &claims),
        "idp@example.org",
    )
    .await;
    // The header's algorithm must match the key's.
    assert_rejected(&app, &sign(Algorithm::RS256, "ec-1", &rsa, &claims)).await;
    // An expired RS256 token is rejected like any other.
    assert_rejected(
        &app,
        &sign(
            Algorithm::RS256,
            "rsa-1",
            &rsa,
            &json!({ "sub": sub, "exp": now() - 120 }),
        ),
    )
    .await;
}

#[tokio::test]
async fn hs256_signed_with_the_public_rsa_key_is_rejected() {
    // Algorithm confusion: a forger uses the published RSA key as an HMAC secret.
    let (app, _jwks, sub) = jwks_app().await;
    let claims = json!({ "sub": sub, "exp": now() + 600 });
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("rsa-1".into());
    let forged = jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(RSA_PUBLIC))
        .expect("sign");
    assert_rejected(&app, &forged).await;
}

#[tokio::test]
async fn an_unknown_kid_refreshes_the_key_set_once() {
    let (app, jwks, sub) = jwks_app().await;
    let claims = json!({ "sub": sub, "exp": now() + 600 });
    let rotated = EncodingKey::from_rsa_pem(RSA_ROTATED).expect("rotated key");
    let token = sign(Algorithm::RS256, "rsa-2", &rotated, &claims);
    // Before rotation, the kid is unknown even after a refresh.
    assert_rejected(&app, &token).await;
    let before = jwks.fetches.load(Ordering::SeqCst);
    // Hammering with unknown kids does not hammer the identity provider.
    for _ in 0..5 {
        assert_rejected(&app, &sign(Algorithm::RS256, "bogus", &rotated, &claims)).await;
    }
    assert!(
        jwks.fetches.load(Ordering::SeqCst) - before <= 1,
        "refetches are throttled"
    );
    jwks.rotated.store(true, Ordering::SeqCst);
    tokio::time::sleep(std::time::Duration::from_millis(5_100)).await;
    assert_accepted(&app, &token, "idp@example.org").await;
}

#[tokio::test]
async fn an_identity_provider_subject_matches_the_users_external_id() {
    let (app, _jwks, _) = jwks_app().await;
    let (user, _, _) = app.owner("Ext Clinic", "ext@example.org").await;
    use sea_orm::ConnectionTrait;
    app.state
        .services
        .db
        .execute_unprepared(&format!(
            "UPDATE users SET external_id = 'auth0|12345' WHERE id = '{}'",
            user.id
        ))
        .await
        .expect("set external id");
    let rsa = EncodingKey::from_rsa_pem(RSA_PRIVATE).expect("rsa key");
    let token = sign(
        Algorithm::RS256,
        "rsa-1",
        &rsa,
        &json!({ "sub": "auth0|12345", "exp": now() + 600 }),
    );
    assert_accepted(&app, &token, "ext@example.org").await;
}

const LOGIN: &str = "mutation($e: String!, $p: String!) { login(email: $e, password: $p) { accessToken expiresAt user { email } } }";

#[tokio::test]
async fn login_returns_a_working_token_and_a_wrong_password_learns_nothing() {
    let app = TestApp::spawn().await;
    app.owner("Login Clinic", "login@example.org").await;
    let body = app
        .gql(
            None,
            LOGIN,
            json!({ "e": "Login@Example.org", "p": "a long password 1" }),
        )
        .await;
    let token = body["data"]["login"]["accessToken"]
        .as_str()
        .expect("token")
        .to_owned();
    assert_eq!(body["data"]["login"]["user"]["email"], "login@example.org");
    assert_accepted(&app, &token, "login@example.org").await;

    let wrong = app
        .gql(
            None,
            LOGIN,
            json!({ "e": "login@example.org", "p": "not the password" }),
        )
        .await;
    let unknown = app
        .gql(
            None,
            LOGIN,
            json!({ "e": "nobody@example.org", "p": "not the password" }),
        )
        .await;
    assert_eq!(code(&wrong), "UNAUTHENTICATED");
    assert_eq!(
        wrong["errors"][0]["message"],
        unknown["errors"][0]["message"]
    );
    assert_eq!(wrong["data"], Value::Null);
}

#[tokio::test]
async fn login_attempts_are_rate_limited_per_email_and_address() {
    let app = TestApp::spawn_with(|v| {
        v.insert("CAREGRAPH_LOGIN_PER_PAIR_PER_MINUTE".into(), "3".into());
    })
    .await;
    app.owner("Rate Clinic", "rate@example.org").await;
    for _ in 0..3 {
        let body = app
            .gql(
                None,
                LOGIN,
                json!({ "e": "rate@example.org", "p": "wrong password" }),
            )
            .await;
        assert_eq!(code(&body), "UNAUTHENTICATED");
    }
    // From this address, even the right password is refused now, and the answer says when to
    // retry (from another address it is not: see `hardening::`).
    let body = app
        .gql(
            None,
            LOGIN,
            json!({ "e": "rate@example.org", "p": "a long password 1" }),
        )
        .await;
    assert_eq!(code(&body), "RATE_LIMITED", "{body}");
    let retry = body["errors"][0]["extensions"]["retryAfterSeconds"]
        .as_u64()
        .expect("retryAfterSeconds");
    assert!((1..=60).contains(&retry));
    // Another email is not affected.
    let body = app
        .gql(
            None,
            LOGIN,
            json!({ "e": "other@example.org", "p": "wrong password" }),
        )
        .await;
    assert_eq!(code(&body), "UNAUTHENTICATED");
}

#[tokio::test]
async fn login_attempts_are_rate_limited_per_client_address() {
    let app = TestApp::spawn_with(|v| {
        v.insert("CAREGRAPH_LOGIN_PER_ADDRESS_PER_MINUTE".into(), "4".into());
    })
    .await;
    for i in 0..4 {
        let body = app
            .gql(
                None,
                LOGIN,
                json!({ "e": format!("u{i}@example.org"), "p": "wrong password" }),
            )
            .await;
        assert_eq!(code(&body), "UNAUTHENTICATED");
    }
    let body = app
        .gql(
            None,
            LOGIN,
            json!({ "e": "u9@example.org", "p": "wrong password" }),
        )
        .await;
    assert_eq!(code(&body), "RATE_LIMITED");
}

#[tokio::test]
async fn a_future_nbf_token_is_refused_over_http_and_websocket() {
    let (app, _jwks, sub) = jwks_app().await;
    let ahead = json!({ "sub": sub, "exp": now() + 7200, "nbf": now() + 3600 });
    let hs = hs256(SECRET.as_bytes(), &ahead);
    let rsa = EncodingKey::from_rsa_pem(RSA_PRIVATE).expect("rsa key");
    let rs = sign(Algorithm::RS256, "rsa-1", &rsa, &ahead);
    for token in [&hs, &rs] {
        assert_rejected(&app, token).await;
        let mut ws = crate::websocket::connect(&app, "graphql-transport-ws").await;
        crate::websocket::send(
            &mut ws,
            json!({"type": "connection_init", "payload": {"token": token}}),
        )
        .await;
        crate::websocket::expect_close(&mut ws, 4403).await;
    }
    // Within the leeway (30 s by default), a slightly fast issuer clock is fine.
    let skewed = json!({ "sub": sub, "exp": now() + 600, "nbf": now() + 10, "iat": now() + 10 });
    assert_accepted(&app, &hs256(SECRET.as_bytes(), &skewed), "idp@example.org").await;
    assert_accepted(
        &app,
        &sign(Algorithm::RS256, "rsa-1", &rsa, &skewed),
        "idp@example.org",
    )
    .await;
}

#[tokio::test]
async fn a_token_issued_in_the_future_is_refused() {
    let app = TestApp::spawn_with(|v| {
        v.insert("CAREGRAPH_JWT_LEEWAY_SECONDS".into(), "5".into());
    })
    .await;
    let (user, _, _) = app.owner("Iat Clinic", "iat@example.org").await;
    let sub = user.id.to_string();
    let future = json!({ "sub": sub, "exp": now() + 7200, "iat": now() + 600 });
    assert_rejected(&app, &hs256(SECRET.as_bytes(), &future)).await;
    let nbf = json!({ "sub": sub, "exp": now() + 7200, "nbf": now() + 60 });
    assert_rejected(&app, &hs256(SECRET.as_bytes(), &nbf)).await;
    let past = json!({ "sub": sub, "exp": now() + 600, "iat": now() - 60, "nbf": now() - 60 });
    assert_accepted(&app, &hs256(SECRET.as_bytes(), &past), "iat@example.org").await;
}

#[tokio::test]
async fn an_audience_array_holding_ours_is_accepted_and_one_without_it_refused() {
    let app = TestApp::spawn_with(|v| {
        v.insert("CAREGRAPH_JWT_AUDIENCE".into(), "caregraph".into());
    })
    .await;
    let (user, _, _) = app.owner("Aud Clinic", "aud@example.org").await;
    let sub = user.id.to_string();
    let with = |aud: Value| json!({ "sub": sub, "exp": now() + 600, "aud": aud });
    assert_accepted(
        &app,
        &hs256(SECRET.as_bytes(), &with(json!(["account", "caregraph"]))),
        "aud@example.org",
    )
    .await;
    assert_rejected(
        &app,
        &hs256(SECRET.as_bytes(), &with(json!(["account", "other"]))),
    )
    .await;
    assert_rejected(&app, &hs256(SECRET.as_bytes(), &with(json!([])))).await;
}
