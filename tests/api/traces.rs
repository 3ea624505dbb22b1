//! OpenTelemetry traces (README "Operations"): the binary, started with
//! `OTEL_EXPORTER_OTLP_ENDPOINT` pointing at a small OTLP/HTTP receiver here, exports one span per
//! GraphQL operation under the client's `traceparent` (on the HTTP request, or on the WebSocket
//! handshake), with database batches as its children,
//! flushes on shutdown, and puts no request value in any attribute.
//!
//! The exporter is process-global, so the app runs as its own process (`cli::serve`).

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{Router, body::Bytes, extract::State, routing::post};
use opentelemetry_proto::tonic::{
    collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse},
    common::v1::{AnyValue, KeyValue, any_value::Value as Any},
    trace::v1::Span,
};
use prost::Message;
use serde_json::{Value, json};

use tokio_tungstenite::tungstenite::{client::IntoClientRequest, http::HeaderValue};

use crate::{
    cli::{caregraph, serve},
    websocket::{Event, next, send},
};

/// A name and a search text no attribute may hold.
const PLANTED: &str = "Quenby Marchetti";
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";
const WS_TRACE_ID: &str = "0af7651916cd43dd8448eb211c80319c";

/// What the receiver got: the spans, and the service names of their resources.
#[derive(Default)]
struct Received {
    spans: Vec<Span>,
    services: Vec<String>,
}

async fn receive(State(got): State<Arc<Mutex<Received>>>, body: Bytes) -> Vec<u8> {
    let request = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf body");
    let mut got = got.lock().expect("lock");
    for resource in request.resource_spans {
        if let Some(r) = &resource.resource {
            got.services.extend(
                r.attributes
                    .iter()
                    .filter(|a| a.key == "service.name")
                    .filter_map(|a| text(a.value.as_ref())),
            );
        }
        for scope in resource.scope_spans {
            got.spans.extend(scope.spans);
        }
    }
    ExportTraceServiceResponse::default().encode_to_vec()
}

fn text(value: Option<&AnyValue>) -> Option<String> {
    match value?.value.as_ref()? {
        Any::StringValue(s) => Some(s.clone()),
        other => Some(format!("{other:?}")),
    }
}

fn attr(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|a: &&KeyValue| a.key == key)
        .and_then(|a| text(a.value.as_ref()))
}

/// `span` and its descendants, one per line, with the attributes caregraph sets.
fn tree(spans: &[Span], span: &Span, depth: usize) -> String {
    let shown: Vec<String> = span
        .attributes
        .iter()
        .filter(|a| {
            a.key.starts_with("graphql.")
                || a.key.starts_with("db.")
                || a.key == "provider"
                || a.key == "operation"
                || a.key == "status"
        })
        .filter_map(|a| Some(format!("{}={}", a.key, text(a.value.as_ref())?)))
        .collect();
    let mut out = format!(
        "{}{} [trace {} span {} parent {}] {}",
        "  ".repeat(depth),
        span.name,
        hex::encode(&span.trace_id),
        hex::encode(&span.span_id),
        hex::encode(&span.parent_span_id),
        shown.join(" ")
    );
    for child in spans.iter().filter(|s| s.parent_span_id == span.span_id) {
        out.push('\n');
        out.push_str(&tree(spans, child, depth + 1));
    }
    out
}

async fn gql(
    base: &str,
    token: &str,
    traceparent: Option<&str>,
    query: &str,
    variables: Value,
) -> Value {
    let mut request = reqwest::Client::new()
        .post(format!("{base}/graphql"))
        .bearer_auth(token)
        .json(&json!({"query": query, "variables": variables}));
    if let Some(tp) = traceparent {
        request = request.header("traceparent", tp);
    }
    let body: Value = request
        .send()
        .await
        .expect("post")
        .json()
        .await
        .expect("json");
    assert!(body.get("errors").is_none(), "{body}");
    body["data"].clone()
}

#[tokio::test]
async fn an_operation_is_one_span_under_the_clients_trace_with_batches_as_children_and_no_values() {
    let got = Arc::new(Mutex::new(Received::default()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let receiver = listener.local_addr().expect("addr");
    let router = Router::new()
        .route("/v1/traces", post(receive))
        .with_state(got.clone());
    tokio::spawn(async move { axum::serve(listener, router).await });

    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = caregraph(dir.path());
    cmd.env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{receiver}"))
        .env("OTEL_SERVICE_NAME", "caregraph-traces-test")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .env_remove("OTEL_TRACES_SAMPLER_ARG")
        // Nothing is exported on a timer during the test: only the flush at shutdown sends.
        .env("OTEL_BSP_SCHEDULE_DELAY", "600000");
    let (mut running, link) = tokio::task::spawn_blocking(move || serve(cmd))
        .await
        .expect("started");
    let (base, token) = link.split_once("/graphiql#token=").expect("link shape");

    let viewer = gql(
        base,
        token,
        None,
        "{ viewer { memberships { organization { id } } } }",
        json!({}),
    )
    .await;
    let org = viewer["viewer"]["memberships"][0]["organization"]["id"].clone();
    gql(
        base,
        token,
        None,
        "mutation($o: ID!, $i: CreatePatientInput!) { createPatient(orgId: $o, input: $i) { id } }",
        json!({"o": org, "i": {"name": PLANTED, "species": "Cat"}}),
    )
    .await;
    let traceparent = format!("00-{TRACE_ID}-{CLIENT_SPAN}-01");
    let found = gql(
        base,
        token,
        Some(&traceparent),
        "query PatientPage($o: ID!, $s: String) { patients(orgId: $o, search: $s) { edges { node { name guardians { relationship } } } } }",
        json!({"o": org, "s": PLANTED}),
    )
    .await;
    assert_eq!(
        found["patients"]["edges"][0]["node"]["name"], PLANTED,
        "{found}"
    );
    // A subscription over WebSocket, the trace context on the handshake.
    let ws_url = format!("{}/graphql", base.replacen("http://", "ws://", 1));
    let mut handshake = ws_url.into_client_request().expect("request");
    handshake.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static("graphql-transport-ws"),
    );
    handshake.headers_mut().insert(
        "traceparent",
        HeaderValue::from_str(&format!("00-{WS_TRACE_ID}-{CLIENT_SPAN}-01")).expect("header"),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(handshake)
        .await
        .expect("upgrade");
    send(
        &mut ws,
        json!({"type": "connection_init", "payload": {"Authorization": format!("Bearer {token}")}}),
    )
    .await;
    assert_eq!(
        next(&mut ws).await,
        Event::Msg(json!({"type": "connection_ack"}))
    );
    send(
        &mut ws,
        json!({"type": "subscribe", "id": "1", "payload": {"query": "subscription Clock { serverTime(everyMs: 100) }"}}),
    )
    .await;
    let Event::Msg(tick) = next(&mut ws).await else {
        panic!("expected a tick");
    };
    assert_eq!(tick["type"], "next", "{tick}");
    send(&mut ws, json!({"type": "complete", "id": "1"})).await;
    ws.close(None).await.expect("close");
    assert!(
        got.lock().expect("lock").spans.is_empty(),
        "nothing before the flush"
    );

    let status = tokio::task::spawn_blocking(move || running.terminate())
        .await
        .expect("terminated");
    assert!(status.success(), "{status:?}");
    let started = Instant::now();
    while got.lock().expect("lock").spans.is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no spans arrived"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let got = got.lock().expect("lock");
    assert!(
        got.services.iter().all(|s| s == "caregraph-traces-test"),
        "{:?}",
        got.services
    );
    let operation = got
        .spans
        .iter()
        .find(|s| s.name == "query PatientPage")
        .unwrap_or_else(|| {
            panic!(
                "no operation span in {:?}",
                got.spans.iter().map(|s| &s.name).collect::<Vec<_>>()
            )
        });
    assert_eq!(
        hex::encode(&operation.trace_id),
        TRACE_ID,
        "the client's trace"
    );
    assert_eq!(
        hex::encode(&operation.parent_span_id),
        CLIENT_SPAN,
        "the client's span is the parent"
    );
    assert_eq!(
        attr(operation, "graphql.operation.name").as_deref(),
        Some("PatientPage")
    );
    assert_eq!(
        attr(operation, "graphql.operation.type").as_deref(),
        Some("query")
    );
    let children: Vec<&Span> = got
        .spans
        .iter()
        .filter(|s| s.parent_span_id == operation.span_id)
        .collect();
    assert!(
        children.iter().any(|s| s.name == "load GuardiansOf"
            && attr(s, "db.operation.batch.size").as_deref().is_some()),
        "{:?}",
        children.iter().map(|s| &s.name).collect::<Vec<_>>()
    );
    // The subscription's span is under the handshake's trace.
    let subscription = got
        .spans
        .iter()
        .find(|s| s.name == "subscription Clock")
        .expect("the subscription's span");
    assert_eq!(hex::encode(&subscription.trace_id), WS_TRACE_ID);
    assert_eq!(hex::encode(&subscription.parent_span_id), CLIENT_SPAN);
    assert_eq!(
        attr(subscription, "graphql.operation.type").as_deref(),
        Some("subscription")
    );
    // The mutation without a traceparent is a trace of its own.
    let mutation = got
        .spans
        .iter()
        .find(|s| s.name == "mutation anonymous")
        .expect("the mutation's span");
    assert_ne!(mutation.trace_id, operation.trace_id);
    assert!(mutation.parent_span_id.is_empty(), "a root span");

    // The tree, for README "Operations" (`cargo test --test api traces -- --nocapture`).
    eprintln!("{}", tree(&got.spans, operation, 0));

    // No span name or attribute holds a value from the requests.
    for span in &got.spans {
        let mut texts = vec![span.name.clone()];
        texts.extend(
            span.attributes
                .iter()
                .filter_map(|a| text(a.value.as_ref())),
        );
        texts.extend(span.events.iter().map(|e| e.name.clone()));
        for t in texts {
            for planted in ["Quenby", "Marchetti"] {
                assert!(!t.contains(planted), "{planted} in span {}: {t}", span.name);
            }
        }
    }
}
