//! Trusted documents (`CAREGRAPH_TRUSTED_DOCUMENTS`): both manifest formats, documents run by id
//! over POST, GET and WebSocket, `_ONLY` refusing raw documents before parsing, the interplay
//! with APQ, a bad manifest stopping the start, and the example operations under
//! `examples/pms/` staying valid.

use std::path::PathBuf;

use reqwest::{StatusCode, header};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::{
    helpers::{TestApp, TestDb, base_vars, code},
    websocket::{Event, acked, next, send, subscribe},
};

const TYPENAME: &str = "query Typename { __typename }";
const LOGIN: &str = r#"mutation Login { login(email: "nobody@example.org", password: "0123456789") { accessToken } }"#;
const CLOCK: &str = "subscription Clock { serverTime(everyMs: 100) }";
const GRAPHQL_RESPONSE: &str = "application/graphql-response+json";

fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// A manifest file in a directory the test keeps.
struct ManifestFile {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl ManifestFile {
    fn new(content: &Value) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("persisted-documents.json");
        std::fs::write(&path, content.to_string()).expect("write manifest");
        Self { _dir: dir, path }
    }

    /// GraphQL Codegen's client preset format: `sha256:<hex>` keys, as it writes them.
    fn codegen(documents: &[&str]) -> Self {
        let map: serde_json::Map<String, Value> = documents
            .iter()
            .map(|d| (format!("sha256:{}", sha256_hex(d)), json!(d)))
            .collect();
        Self::new(&Value::Object(map))
    }

    /// An Apollo persisted query manifest with the given (id, name, type, body) operations.
    fn apollo(operations: &[(&str, &str, &str, &str)]) -> Self {
        let operations: Vec<Value> = operations
            .iter()
            .map(|(id, name, kind, body)| json!({"id": id, "name": name, "type": kind, "body": body}))
            .collect();
        Self::new(&json!({
            "format": "apollo-persisted-query-manifest",
            "version": 1,
            "operations": operations,
        }))
    }

    async fn spawn(&self, only: bool) -> TestApp {
        let path = self.path.display().to_string();
        TestApp::spawn_with(move |v| {
            v.insert("CAREGRAPH_TRUSTED_DOCUMENTS".into(), path);
            if only {
                v.insert("CAREGRAPH_TRUSTED_DOCUMENTS_ONLY".into(), "true".into());
            }
        })
        .await
    }
}

async fn post(app: &TestApp, body: Value) -> (StatusCode, Value) {
    let res = app
        .http
        .post(app.url("/graphql"))
        .header(header::ACCEPT, GRAPHQL_RESPONSE)
        .json(&body)
        .send()
        .await
        .expect("post");
    let status = res.status();
    (status, res.json().await.expect("json"))
}

async fn get(app: &TestApp, params: &[(&str, &str)]) -> (StatusCode, Value) {
    let res = app
        .http
        .get(app.url("/graphql"))
        .header(header::ACCEPT, GRAPHQL_RESPONSE)
        .query(params)
        .send()
        .await
        .expect("get");
    let status = res.status();
    (status, res.json().await.expect("json"))
}

fn apq(hash: &str) -> Value {
    json!({ "persistedQuery": { "version": 1, "sha256Hash": hash } })
}

#[tokio::test]
async fn a_codegen_manifest_runs_its_documents_by_document_id_over_post_and_get() {
    let manifest = ManifestFile::codegen(&[TYPENAME, LOGIN]);
    let app = manifest.spawn(false).await;
    let id = format!("sha256:{}", sha256_hex(TYPENAME));

    let (status, body) = post(&app, json!({ "documentId": id })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["__typename"], "Query", "{body}");

    // The bare hex digest names the same document.
    let (_, body) = post(&app, json!({ "documentId": sha256_hex(TYPENAME) })).await;
    assert_eq!(body["data"]["__typename"], "Query", "{body}");

    let (status, body) = get(&app, &[("documentId", id.as_str())]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["__typename"], "Query", "{body}");

    // A trusted mutation still never runs over GET; over POST it runs (and fails on the
    // unknown login, which shows it executed).
    let login = format!("sha256:{}", sha256_hex(LOGIN));
    let res = app
        .http
        .get(app.url("/graphql"))
        .query(&[("documentId", login.as_str())])
        .send()
        .await
        .expect("get");
    assert_eq!(
        res.status(),
        StatusCode::METHOD_NOT_ALLOWED,
        "{:?}",
        res.text().await
    );
    assert_eq!(res.headers()[header::ALLOW], "POST");
    let (_, body) = post(&app, json!({ "documentId": login })).await;
    assert_eq!(body["errors"][0]["path"][0], "login", "{body}");

    // documentId and query together are refused.
    let (status, body) = post(&app, json!({ "documentId": id, "query": TYPENAME })).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(code(&body), "BAD_USER_INPUT");
}

#[tokio::test]
async fn a_single_named_mutation_sent_raw_over_get_is_refused_too() {
    let app = TestApp::spawn().await;
    let res = app
        .http
        .get(app.url("/graphql"))
        .query(&[("query", LOGIN)])
        .send()
        .await
        .expect("get");
    assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
    let body: Value = res.json().await.expect("json");
    assert_eq!(code(&body), "BAD_USER_INPUT");
}

#[tokio::test]
async fn an_apollo_manifest_runs_by_persisted_query_hash_with_opaque_ids() {
    let manifest = ManifestFile::apollo(&[
        ("typename-v1", "Typename", "query", TYPENAME),
        (&sha256_hex(LOGIN), "Login", "mutation", LOGIN),
    ]);
    let app = manifest.spawn(true).await;

    let (status, body) = post(&app, json!({ "extensions": apq("typename-v1") })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["__typename"], "Query", "{body}");

    let ext = apq("typename-v1").to_string();
    let (status, body) = get(&app, &[("extensions", ext.as_str())]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["__typename"], "Query", "{body}");

    // Apollo's client sends the query along after a miss: accepted when it is the document.
    let (_, body) = post(
        &app,
        json!({ "query": TYPENAME, "extensions": apq("typename-v1") }),
    )
    .await;
    assert_eq!(body["data"]["__typename"], "Query", "{body}");
    let (status, body) = post(
        &app,
        json!({ "query": "{ __typename }", "extensions": apq("typename-v1") }),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(code(&body), "BAD_USER_INPUT");

    // An Apollo id is also a documentId.
    let (_, body) = post(&app, json!({ "documentId": "typename-v1" })).await;
    assert_eq!(body["data"]["__typename"], "Query", "{body}");
}

#[tokio::test]
async fn an_unknown_document_id_is_persisted_query_not_found() {
    let manifest = ManifestFile::codegen(&[TYPENAME]);
    for only in [false, true] {
        let app = manifest.spawn(only).await;
        let unknown = format!("sha256:{}", sha256_hex("{ __typename }"));
        let (status, body) = post(&app, json!({ "documentId": unknown })).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "only={only} {body}");
        assert_eq!(code(&body), "PERSISTED_QUERY_NOT_FOUND", "only={only}");
        assert!(body.get("data").is_none(), "{body}");

        // With application/json the request error is a 200, as for every request error.
        let res = app
            .http
            .get(app.url("/graphql"))
            .query(&[("documentId", unknown.as_str())])
            .send()
            .await
            .expect("get");
        assert_eq!(res.status(), StatusCode::OK);
        let body: Value = res.json().await.expect("json");
        assert_eq!(code(&body), "PERSISTED_QUERY_NOT_FOUND");

        let (_, body) = post(&app, json!({ "documentId": 42 })).await;
        assert_eq!(code(&body), "BAD_USER_INPUT");
    }
}

#[tokio::test]
async fn under_only_a_raw_query_is_refused_before_parsing_unless_it_is_a_trusted_document() {
    let manifest = ManifestFile::codegen(&[TYPENAME]);
    let app = manifest.spawn(true).await;

    let (status, body) = post(&app, json!({ "query": "{ __typename }" })).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(code(&body), "TRUSTED_DOCUMENT_REQUIRED");
    assert!(body.get("data").is_none(), "{body}");

    // Not even parsed: a syntax error is answered the same way.
    let (_, body) = post(&app, json!({ "query": "{ this is not graphql" })).await;
    assert_eq!(code(&body), "TRUSTED_DOCUMENT_REQUIRED", "{body}");

    let (_, body) = get(&app, &[("query", "{ __typename }")]).await;
    assert_eq!(code(&body), "TRUSTED_DOCUMENT_REQUIRED", "{body}");

    // The exact text of a trusted document may be sent as it is.
    let (status, body) = post(&app, json!({ "query": TYPENAME })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["__typename"], "Query");
}

#[tokio::test]
async fn without_only_raw_queries_run_as_before() {
    let manifest = ManifestFile::codegen(&[TYPENAME]);
    let app = manifest.spawn(false).await;
    let (status, body) = post(&app, json!({ "query": "{ __typename }" })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["__typename"], "Query");
    let (_, body) = get(&app, &[("query", "query Other { __typename }")]).await;
    assert_eq!(body["data"]["__typename"], "Query", "{body}");
}

#[tokio::test]
async fn apq_keeps_working_beside_the_manifest_and_a_manifest_hit_needs_no_registration() {
    let manifest = ManifestFile::codegen(&[TYPENAME]);
    let app = manifest.spawn(false).await;

    // The manifest's document by its hash, never registered.
    let (_, body) = post(&app, json!({ "extensions": apq(&sha256_hex(TYPENAME)) })).await;
    assert_eq!(body["data"]["__typename"], "Query", "{body}");

    // Another document goes the APQ way: miss, register, replay.
    let other = "query Other { __typename }";
    let ext = apq(&sha256_hex(other));
    let (_, miss) = post(&app, json!({ "extensions": ext })).await;
    assert_eq!(code(&miss), "PERSISTED_QUERY_NOT_FOUND", "{miss}");
    assert_eq!(miss["errors"][0]["message"], "PersistedQueryNotFound");
    let (_, registered) = post(&app, json!({ "query": other, "extensions": ext })).await;
    assert_eq!(registered["data"]["__typename"], "Query", "{registered}");
    let (_, hit) = post(&app, json!({ "extensions": ext })).await;
    assert_eq!(hit["data"]["__typename"], "Query", "{hit}");
}

#[tokio::test]
async fn under_only_apq_cannot_register_a_new_document() {
    let manifest = ManifestFile::codegen(&[TYPENAME]);
    let app = manifest.spawn(true).await;
    let other = "query Other { __typename }";
    let ext = apq(&sha256_hex(other));

    let (_, miss) = post(&app, json!({ "extensions": ext })).await;
    assert_eq!(code(&miss), "PERSISTED_QUERY_NOT_FOUND", "{miss}");
    let (status, refused) = post(&app, json!({ "query": other, "extensions": ext })).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(code(&refused), "TRUSTED_DOCUMENT_REQUIRED", "{refused}");
    // Nothing was remembered.
    let (_, still) = post(&app, json!({ "extensions": ext })).await;
    assert_eq!(code(&still), "PERSISTED_QUERY_NOT_FOUND", "{still}");

    let (_, body) = post(&app, json!({ "extensions": apq(&sha256_hex(TYPENAME)) })).await;
    assert_eq!(body["data"]["__typename"], "Query", "{body}");
}

#[tokio::test]
async fn a_subscription_runs_by_document_id_over_websocket_and_only_refuses_raw_ones() {
    let manifest = ManifestFile::codegen(&[CLOCK]);
    let app = manifest.spawn(true).await;
    let (_, _, token) = app.owner("Trusted Clinic", "trusted@example.org").await;
    let mut ws = acked(&app, "graphql-transport-ws", &token).await;

    let id = format!("sha256:{}", sha256_hex(CLOCK));
    let m = subscribe(&mut ws, "1", json!({"documentId": id})).await;
    assert_eq!(m["type"], "next", "{m}");
    assert_eq!(m["id"], "1");
    assert!(m["payload"]["data"]["serverTime"].is_string(), "{m}");
    send(&mut ws, json!({"type": "complete", "id": "1"})).await;

    // Apollo's hash form over the socket too.
    send(
        &mut ws,
        json!({"type": "subscribe", "id": "2", "payload": {"extensions": apq(&sha256_hex(CLOCK))}}),
    )
    .await;
    loop {
        match next(&mut ws).await {
            Event::Msg(m) if m["id"] == "1" => continue, // a result sent before `complete` landed
            Event::Msg(m) => {
                assert_eq!(m["type"], "next", "{m}");
                assert_eq!(m["id"], "2");
                break;
            }
            other => panic!("expected a result, got {other:?}"),
        }
    }
    send(&mut ws, json!({"type": "complete", "id": "2"})).await;

    for (op, payload, expected) in [
        (
            "3",
            json!({"query": "subscription { serverTime(everyMs: 100) }"}),
            "TRUSTED_DOCUMENT_REQUIRED",
        ),
        (
            "4",
            json!({"documentId": format!("sha256:{}", sha256_hex("{ nope }"))}),
            "PERSISTED_QUERY_NOT_FOUND",
        ),
    ] {
        send(
            &mut ws,
            json!({"type": "subscribe", "id": op, "payload": payload}),
        )
        .await;
        loop {
            match next(&mut ws).await {
                Event::Msg(m) if m["id"] == "1" || m["id"] == "2" => continue,
                Event::Msg(m) => {
                    assert_eq!(m["type"], "error", "{m}");
                    assert_eq!(m["id"], op);
                    assert_eq!(m["payload"][0]["extensions"]["code"], expected, "{m}");
                    break;
                }
                other => panic!("expected an error message, got {other:?}"),
            }
        }
    }
}

#[tokio::test]
async fn a_bad_manifest_stops_the_start_with_the_variable_and_the_entry_named() {
    let db = TestDb::new().await;
    let wrong = ManifestFile::new(&json!({ "sha256:0123abcd": TYPENAME }));
    let not_json = ManifestFile::new(&json!("just a string"));
    let cases = [
        (
            wrong.path.clone(),
            "sha256:0123abcd: the key is not the SHA-256",
        ),
        (not_json.path.clone(), "expected a JSON object"),
        (
            PathBuf::from("/nonexistent/caregraph/documents.json"),
            "cannot open",
        ),
    ];
    for (path, problem) in cases {
        let mut vars = base_vars(&db);
        vars.insert(
            "CAREGRAPH_TRUSTED_DOCUMENTS".into(),
            path.display().to_string(),
        );
        let config =
            caregraph::config::Config::from_vars(&caregraph::config::Vars::new(move |k| {
                vars.get(k).cloned()
            }))
            .expect("config");
        let err = match caregraph::app::App::build(config).await {
            Ok(_) => panic!("{} must stop the start", path.display()),
            Err(e) => format!("{e:#}"),
        };
        assert!(err.starts_with("CAREGRAPH_TRUSTED_DOCUMENTS"), "{err}");
        assert!(err.contains(problem), "{err}");
    }
}

#[tokio::test]
async fn every_example_operation_validates_and_is_in_the_example_manifest() {
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/pms"));
    let config = caregraph::config::Config::from_vars(&caregraph::config::Vars::new(|_| None))
        .expect("defaults");
    let validator = caregraph::graphql::validator(
        &config.graphql,
        caregraph::graphql::cost::CostLimits::default(),
    );
    let manifest =
        caregraph::graphql::trusted::Manifest::read(&dir.join("persisted-documents.json"))
            .expect("the example manifest reads");
    let mut operations = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("examples/pms") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "graphql") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read");
        let problems = caregraph::graphql::offline::check_document(&validator, &text).await;
        assert!(problems.is_empty(), "{}: {problems:?}", path.display());
        let doc = async_graphql::parser::parse_query(&text).expect("parses");
        for (name, _) in doc.operations.iter() {
            let name = name
                .map(|n| n.to_string())
                .expect("example operations are named");
            // The manifest holds this operation (codegen prints it on one line).
            let kinds = ["query", "mutation", "subscription"];
            assert!(
                manifest.entries.iter().any(|e| kinds
                    .iter()
                    .any(|k| e.body.starts_with(&format!("{k} {name}("))
                        || e.body.starts_with(&format!("{k} {name} ")))),
                "{name} ({}) is not in persisted-documents.json: rerun codegen",
                path.display()
            );
            operations.push(name);
        }
    }
    operations.sort();
    assert_eq!(
        operations,
        [
            "ChatSessions",
            "ChatSessionsChanged",
            "Dashboard",
            "SendChatMessage"
        ]
    );
    assert_eq!(manifest.entries.len(), operations.len());
}
