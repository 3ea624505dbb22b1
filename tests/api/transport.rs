//! GraphQL over HTTP: media types, status codes, CSRF defences, limits, persisted queries,
//! null propagation, and the graphql-http server audits.

use reqwest::{StatusCode, header};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::helpers::{TestApp, code};

#[tokio::test]
async fn a_get_query_works_and_a_get_mutation_is_refused_with_405() {
    let app = TestApp::spawn().await;
    let res = app
        .http
        .get(app.url("/graphql"))
        .query(&[("query", "{ __typename }")])
        .send()
        .await
        .expect("get");
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["data"]["__typename"], "Query");

    let res = app
        .http
        .get(app.url("/graphql"))
        .query(&[(
            "query",
            r#"mutation { login(email: "x@example.org", password: "whatever-long") { accessToken } }"#,
        )])
        .send()
        .await
        .expect("get");
    assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(res.headers()[header::ALLOW], "POST");
    let body: Value = res.json().await.expect("json");
    assert_eq!(code(&body), "BAD_USER_INPUT");
}

#[tokio::test]
async fn a_named_mutation_in_a_multi_operation_document_is_refused_over_get() {
    let app = TestApp::spawn().await;
    let doc = r#"query Q { __typename } mutation M { login(email: "a@b.org", password: "0123456789") { accessToken } }"#;
    let res = app
        .http
        .get(app.url("/graphql"))
        .query(&[("query", doc), ("operationName", "M")])
        .send()
        .await
        .expect("get");
    assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
    let res = app
        .http
        .get(app.url("/graphql"))
        .query(&[("query", doc), ("operationName", "Q")])
        .send()
        .await
        .expect("get");
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn malformed_json_and_a_missing_query_are_400_with_a_graphql_error_body() {
    let app = TestApp::spawn().await;
    for body in [
        "{not json",
        "{}",
        r#"{"query": 42}"#,
        r#"{"query":"{__typename}","variables":[1]}"#,
        "[]",
    ] {
        let res = app
            .http
            .post(app.url("/graphql"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .expect("post");
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "body {body}");
        let json: Value = res.json().await.expect("json");
        assert_eq!(code(&json), "BAD_USER_INPUT", "body {body}");
        assert!(json.get("data").is_none());
    }
    let res = app.http.get(app.url("/graphql")).send().await.expect("get");
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn unsupported_media_types_including_text_plain_are_415() {
    let app = TestApp::spawn().await;
    for ct in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
        None,
    ] {
        let mut req = app
            .http
            .post(app.url("/graphql"))
            .body(r#"{"query":"{ __typename }"}"#);
        if let Some(ct) = ct {
            req = req.header(header::CONTENT_TYPE, ct);
        }
        let res = req.send().await.expect("post");
        assert_eq!(res.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE, "{ct:?}");
    }
    // The same body as JSON (with a charset) runs.
    let res = app
        .http
        .post(app.url("/graphql"))
        .header(header::CONTENT_TYPE, "application/json; charset=utf-8")
        .body(r#"{"query":"{ __typename }"}"#)
        .send()
        .await
        .expect("post");
    assert_eq!(res.status(), StatusCode::OK);
}

async fn post_with_accept(app: &TestApp, accept: &str, query: &str) -> reqwest::Response {
    app.http
        .post(app.url("/graphql"))
        .header(header::ACCEPT, accept)
        .json(&json!({ "query": query }))
        .send()
        .await
        .expect("post")
}

#[tokio::test]
async fn application_json_is_answered_as_json_with_200_even_for_request_errors() {
    let app = TestApp::spawn().await;
    let res = post_with_accept(&app, "application/json", "{ __typename }").await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        res.headers()[header::CONTENT_TYPE]
            .to_str()
            .expect("ct")
            .starts_with("application/json")
    );

    let res = post_with_accept(&app, "application/json", "{ noSuchField }").await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.expect("json");
    assert_eq!(code(&body), "BAD_USER_INPUT");
}

#[tokio::test]
async fn graphql_response_json_is_honoured_with_400_and_no_data_for_request_errors() {
    let app = TestApp::spawn().await;
    let accept = "application/graphql-response+json";
    let res = post_with_accept(&app, accept, "{ __typename }").await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        res.headers()[header::CONTENT_TYPE]
            .to_str()
            .expect("ct")
            .starts_with(accept)
    );

    for broken in [
        "{ noSuchField }",
        "{ __typename",
        "query($n: Int!) { __typename }",
    ] {
        let res = post_with_accept(&app, accept, broken).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{broken}");
        assert!(
            res.headers()[header::CONTENT_TYPE]
                .to_str()
                .expect("ct")
                .starts_with(accept)
        );
        let body: Value = res.json().await.expect("json");
        assert!(body.get("data").is_none(), "{broken}: {body}");
        assert_eq!(code(&body), "BAD_USER_INPUT");
    }

    let res = post_with_accept(&app, "text/html", "{ __typename }").await;
    assert_eq!(res.status(), StatusCode::NOT_ACCEPTABLE);
}

#[tokio::test]
async fn a_non_null_field_error_propagates_null_to_its_parent() {
    // async-graphql 7.1.0 to 7.2.1 drop the field instead; caregraph pins 7.0.19.
    let app = TestApp::spawn().await;
    let body = app
        .gql(None, "{ __typename viewer { user { id } } }", json!({}))
        .await;
    assert_eq!(body["data"], Value::Null, "{body}");
    assert_eq!(body["errors"][0]["path"], json!(["viewer"]));
    assert_eq!(code(&body), "UNAUTHENTICATED");

    let (_, _, token) = app.owner("Nulls", "nulls@example.org").await;
    let body = app
        .gql(Some(&token), r#"{ viewer { user { id } } organization(id: "00000000-0000-7000-8000-000000000000") { name } }"#, json!({}))
        .await;
    assert_eq!(body["data"], Value::Null, "{body}");
    assert_eq!(code(&body), "NOT_FOUND");
}

#[tokio::test]
async fn response_fields_keep_the_order_of_the_query() {
    let app = TestApp::spawn().await;
    let (_, _, token) = app.owner("Order", "order@example.org").await;
    let res = app
        .http
        .post(app.url("/graphql"))
        .bearer_auth(&token)
        .json(&json!({ "query": "{ viewer { user { email id } memberships { role } } }" }))
        .send()
        .await
        .expect("post");
    let text = res.text().await.expect("text");
    let email = text.find("\"email\"").expect("email");
    let id = text.find("\"id\"").expect("id");
    let user = text.find("\"user\"").expect("user");
    let memberships = text.find("\"memberships\"").expect("memberships");
    assert!(email < id && user < memberships, "{text}");
}

#[tokio::test]
async fn batched_requests_and_oversized_bodies_are_refused() {
    let app = TestApp::spawn().await;
    let res = app
        .http
        .post(app.url("/graphql"))
        .json(&json!([{ "query": "{ __typename }" }, { "query": "{ __typename }" }]))
        .send()
        .await
        .expect("post");
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);

    let huge = format!(
        r#"{{"query":"{{ __typename }}","variables":{{"pad":"{}"}}}}"#,
        "x".repeat(1_100_000)
    );
    let res = app
        .http
        .post(app.url("/graphql"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(huge)
        .send()
        .await
        .expect("post");
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body: Value = res.json().await.expect("a GraphQL error body");
    assert_eq!(code(&body), "BAD_USER_INPUT");
    let res = app
        .http
        .get(app.url("/healthz"))
        .send()
        .await
        .expect("health");
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn depth_and_complexity_limits_reject_hostile_queries_and_the_server_stays_healthy() {
    let app = TestApp::spawn().await;
    let (_, _, token) = app.owner("Limits", "limits@example.org").await;

    // 13 levels of data fields through the organisation <-> colleague cycle.
    let mut deep = String::from("email");
    for i in 0..6 {
        deep = if i % 2 == 0 {
            format!("user {{ {deep} }}")
        } else {
            format!("memberships {{ user {{ id }} }} user {{ {deep} }}")
        };
    }
    let mut nested = String::from("name");
    for _ in 0..6 {
        nested = format!("memberships {{ organization {{ {nested} }} }}");
    }
    let too_deep = format!("{{ viewer {{ {nested} }} }}");
    let body = app.gql(Some(&token), &too_deep, json!({})).await;
    assert_eq!(code(&body), "BAD_USER_INPUT", "{body}");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .expect("msg")
            .contains("too deep")
    );

    let aliases: String = (0..700)
        .map(|i| format!("a{i}: viewer {{ user {{ id }} }} "))
        .collect();
    let body = app
        .gql(Some(&token), &format!("{{ {aliases} }}"), json!({}))
        .await;
    assert!(body["data"].is_null(), "the alias bomb did not run");
    assert_eq!(code(&body), "BAD_USER_INPUT");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .expect("msg")
            .contains("complex")
    );

    let body = app
        .gql(Some(&token), "{ viewer { user { email } } }", json!({}))
        .await;
    assert_eq!(
        body["data"]["viewer"]["user"]["email"],
        "limits@example.org"
    );
    let res = app
        .http
        .get(app.url("/readyz"))
        .send()
        .await
        .expect("ready");
    assert_eq!(res.status(), StatusCode::OK);
}

/// GraphiQL's own schema query (graphql-js `getIntrospectionQuery` with descriptions).
pub const INTROSPECTION: &str = r#"
query IntrospectionQuery {
  __schema {
    queryType { name }
    mutationType { name }
    subscriptionType { name }
    types { ...FullType }
    directives { name description locations args { ...InputValue } }
  }
}
fragment FullType on __Type {
  kind name description
  fields(includeDeprecated: true) {
    name description
    args { ...InputValue }
    type { ...TypeRef }
    isDeprecated deprecationReason
  }
  inputFields { ...InputValue }
  interfaces { ...TypeRef }
  enumValues(includeDeprecated: true) { name description isDeprecated deprecationReason }
  possibleTypes { ...TypeRef }
}
fragment InputValue on __InputValue { name description type { ...TypeRef } defaultValue }
fragment TypeRef on __Type {
  kind name
  ofType { kind name ofType { kind name ofType { kind name ofType { kind name
    ofType { kind name ofType { kind name ofType { kind name ofType { kind name } } } } } } } }
}
"#;

#[tokio::test]
async fn graphiqls_introspection_query_passes_the_limits() {
    let app = TestApp::spawn().await;
    let body = app.gql(None, INTROSPECTION, json!({})).await;
    assert!(body.get("errors").is_none(), "{body}");
    assert_eq!(body["data"]["__schema"]["queryType"]["name"], "Query");
}

#[tokio::test]
async fn production_turns_introspection_and_suggestions_off() {
    let app = TestApp::spawn_with(|v| {
        v.insert("CAREGRAPH_ENV".into(), "production".into());
    })
    .await;
    let body = app.gql(None, INTROSPECTION, json!({})).await;
    assert!(body["data"]["__schema"].is_null(), "{body}");
    let body = app.gql(None, "{ viewr { user { id } } }", json!({})).await;
    let message = body["errors"][0]["message"].as_str().expect("message");
    assert!(!message.contains("Did you mean"), "{message}");
}

fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

#[tokio::test]
async fn automatic_persisted_queries_register_and_replay_by_hash() {
    let app = TestApp::spawn().await;
    let query = "{ __typename }";
    let ext = json!({ "persistedQuery": { "version": 1, "sha256Hash": sha256_hex(query) } });

    let miss: Value = app
        .http
        .post(app.url("/graphql"))
        .json(&json!({ "extensions": ext }))
        .send()
        .await
        .expect("post")
        .json()
        .await
        .expect("json");
    assert_eq!(miss["errors"][0]["message"], "PersistedQueryNotFound");

    let register: Value = app
        .http
        .post(app.url("/graphql"))
        .json(&json!({ "query": query, "extensions": ext }))
        .send()
        .await
        .expect("post")
        .json()
        .await
        .expect("json");
    assert_eq!(register["data"]["__typename"], "Query");

    let res = app
        .http
        .get(app.url("/graphql"))
        .query(&[("extensions", ext.to_string())])
        .send()
        .await
        .expect("get");
    assert_eq!(res.status(), StatusCode::OK);
    let hit: Value = res.json().await.expect("json");
    assert_eq!(hit["data"]["__typename"], "Query");

    let wrong =
        json!({ "persistedQuery": { "version": 1, "sha256Hash": sha256_hex("{ other }") } });
    let mismatch: Value = app
        .http
        .post(app.url("/graphql"))
        .json(&json!({ "query": query, "extensions": wrong }))
        .send()
        .await
        .expect("post")
        .json()
        .await
        .expect("json");
    assert_eq!(code(&mismatch), "BAD_USER_INPUT");
}

#[tokio::test]
async fn a_persisted_mutation_is_still_refused_over_get() {
    let app = TestApp::spawn().await;
    let mutation =
        r#"mutation { login(email: "a@example.org", password: "0123456789") { accessToken } }"#;
    let ext = json!({ "persistedQuery": { "version": 1, "sha256Hash": sha256_hex(mutation) } });
    let _ = app
        .http
        .post(app.url("/graphql"))
        .json(&json!({ "query": mutation, "extensions": ext }))
        .send()
        .await
        .expect("post");
    let res = app
        .http
        .get(app.url("/graphql"))
        .query(&[("extensions", ext.to_string())])
        .send()
        .await
        .expect("get");
    assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn health_and_readiness_answer() {
    let app = TestApp::spawn().await;
    let res = app
        .http
        .get(app.url("/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(res.status(), StatusCode::OK);
    let res = app
        .http
        .get(app.url("/readyz"))
        .send()
        .await
        .expect("readyz");
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["checks"]["database"], "up", "{body}");
}

#[tokio::test]
async fn graphiql_is_served_with_its_assets_from_the_binary() {
    let app = TestApp::spawn().await;
    let res = app
        .http
        .get(app.url("/graphiql"))
        .send()
        .await
        .expect("page");
    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        res.headers()[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .expect("csp")
            .contains("script-src 'self'")
    );
    let html = res.text().await.expect("html");
    for asset in [
        "graphiql.min.js",
        "graphiql.min.css",
        "react.production.min.js",
        "react-dom.production.min.js",
        "graphql-ws.min.js",
        "init.js",
    ] {
        assert!(
            html.contains(&format!("/graphiql/assets/{asset}")),
            "{asset}"
        );
        let res = app
            .http
            .get(app.url(&format!("/graphiql/assets/{asset}")))
            .send()
            .await
            .expect("asset");
        assert_eq!(res.status(), StatusCode::OK, "{asset}");
        let body = res.bytes().await.expect("bytes"); // reqwest decodes gzip when enabled; check size only
        assert!(body.len() > 500, "{asset} is {} bytes", body.len());
    }
    let res = app
        .http
        .get(app.url("/graphiql/assets/..%2FCargo.toml"))
        .send()
        .await
        .expect("asset");
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
}

/// The graphql-http server audits: every MUST and SHOULD audit must pass. Needs
/// `CAREGRAPH_TEST_AUDIT=1` after `npm ci --prefix tests/audit` (`.ci/run` does both).
#[tokio::test]
#[ignore = "needs CAREGRAPH_TEST_AUDIT=1 and `npm ci --prefix tests/audit`"]
async fn the_graphql_http_server_audits_pass() {
    crate::helpers::needs_env(
        "CAREGRAPH_TEST_AUDIT",
        "set CAREGRAPH_TEST_AUDIT=1 after `npm ci --prefix tests/audit`",
    );
    let app = TestApp::spawn().await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/audit/audit.mjs");
    let output = tokio::process::Command::new("node")
        .arg(script)
        .arg(app.url("/graphql"))
        .output()
        .await
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    eprintln!("{stdout}{}", String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "audits failed:\n{stdout}");
    assert!(stdout.contains("\"error\":0"), "{stdout}");
    assert!(stdout.contains("\"warn\":0"), "{stdout}");
}
