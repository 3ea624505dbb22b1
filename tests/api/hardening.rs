//! Hardening: no request stalls the server (query cost, connections), and the edge cases
//! attackers try (tokens, webhook replays, control characters, lockouts, secrets) are closed.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::helpers::{TestApp, code};

/// `fragment F0 on <leaf_type> { <leaf> } fragment Fi on <leaf_type> { ...Fi-1 ...Fi-1 }`, spread
/// `levels` deep from `root`.
fn fragment_bomb(levels: usize, on: &str, leaf: &str, root: &str) -> String {
    let mut q = format!("fragment F0 on {on} {{ {leaf} }} ");
    for i in 1..=levels {
        q.push_str(&format!(
            "fragment F{i} on {on} {{ ...F{} ...F{} }} ",
            i - 1,
            i - 1
        ));
    }
    q.push_str(&root.replace("SPREAD", &format!("...F{levels}")));
    q
}

/// Sends `query` anonymously and checks `/healthz` while it runs; the query must be refused as
/// too large within 100 ms.
async fn refused_quickly_while_healthz_answers(app: &TestApp, query: &str) {
    let started = Instant::now();
    let body = app.gql(None, query, json!({}));
    let health = async {
        let response = app
            .http
            .get(app.url("/healthz"))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .expect("healthz answers");
        assert!(response.status().is_success());
    };
    let (body, ()) = tokio::join!(body, health);
    let elapsed = started.elapsed();
    assert_eq!(code(&body), "BAD_USER_INPUT", "{body}");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("too large")),
        "{body}"
    );
    assert!(elapsed < Duration::from_millis(100), "took {elapsed:?}");
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Subscribes with `query` on a `graphql-transport-ws` socket and returns the first message
/// about that operation.
async fn reply(ws: &mut Socket, id: &str, query: &str) -> serde_json::Value {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let sub = json!({"type": "subscribe", "id": id, "payload": {"query": query}});
    ws.send(Message::Text(sub.to_string().into()))
        .await
        .expect("send");
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a reply in time")
            .expect("socket open")
            .expect("frame");
        if let Message::Text(t) = msg {
            let v: serde_json::Value = serde_json::from_str(&t).expect("json");
            if v["id"] == id {
                return v;
            }
        }
    }
}

#[tokio::test]
async fn a_25_level_fragment_bomb_is_refused_within_100_ms_while_healthz_answers() {
    let app = TestApp::spawn().await;
    let bomb = fragment_bomb(25, "Query", "__typename", "{ SPREAD }");
    refused_quickly_while_healthz_answers(&app, &bomb).await;
}

#[tokio::test]
async fn a_fragment_bomb_of_object_leaves_is_refused_within_100_ms() {
    let app = TestApp::spawn().await;
    let bomb = fragment_bomb(26, "User", "id email", "{ viewer { user { SPREAD } } }");
    refused_quickly_while_healthz_answers(&app, &bomb).await;
}

#[tokio::test]
async fn a_fragment_bomb_is_refused_over_websocket_too() {
    let app = TestApp::spawn().await;
    let (_, _, token) = app.owner("Bomb WS", "bomb-ws@example.org").await;
    let mut ws = crate::security::socket(&app, &token).await;
    let bomb = fragment_bomb(25, "Query", "__typename", "{ SPREAD }");
    let started = Instant::now();
    let reply = reply(&mut ws, "b", &bomb).await;
    assert!(started.elapsed() < Duration::from_millis(500));
    assert_eq!(reply["type"], "error", "{reply}");
    assert_eq!(reply["payload"][0]["extensions"]["code"], "BAD_USER_INPUT");
}

#[tokio::test]
async fn a_document_within_the_selection_budget_runs() {
    let app = TestApp::spawn_with(|v| {
        v.insert("CAREGRAPH_MAX_SELECTIONS".into(), "40".into());
    })
    .await;
    let small = fragment_bomb(3, "Query", "__typename", "{ SPREAD }");
    let body = app.gql(None, &small, json!({})).await;
    assert_eq!(body["data"]["__typename"], "Query", "{body}");
    let big = fragment_bomb(5, "Query", "__typename", "{ SPREAD }");
    assert_eq!(
        code(&app.gql(None, &big, json!({})).await),
        "BAD_USER_INPUT"
    );
}

/// Builds a configuration from `pairs` alone.
fn config_of(pairs: &[(&str, &str)]) -> anyhow::Result<caregraph::config::Config> {
    let map: std::collections::HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    caregraph::config::Config::from_vars(&caregraph::config::Vars::new(move |k| {
        map.get(k).cloned()
    }))
}

#[test]
fn production_refuses_low_entropy_jwt_secrets_of_any_length() {
    for weak in ["a".repeat(32), "ab".repeat(40), "secret".repeat(6)] {
        let refused = config_of(&[
            ("CAREGRAPH_ENV", "production"),
            ("CAREGRAPH_JWT_SECRET", &weak),
        ])
        .expect_err("a predictable secret is refused");
        assert!(refused.to_string().contains("CAREGRAPH_JWT_SECRET"));
    }
    config_of(&[
        ("CAREGRAPH_ENV", "production"),
        (
            "CAREGRAPH_JWT_SECRET",
            "3c9b1e0f6a7d4258b0e1f2a3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f7",
        ),
    ])
    .expect("a random secret is accepted");
}

#[test]
fn starting_with_the_development_secret_warns_loudly_naming_the_variable() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = std::process::Command::new(crate::cli::BIN)
        .current_dir(dir.path())
        .env_remove("CAREGRAPH_DATABASE_URL")
        .env_remove("CAREGRAPH_ENV")
        .env_remove("CAREGRAPH_JWT_SECRET")
        .env("CAREGRAPH_DEMO", "false")
        .env("CAREGRAPH_BIND", "127.0.0.1:0")
        .env("RUST_LOG", "off")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("caregraph starts");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("WARNING") {
                let _ = tx.send(line);
            }
        }
    });
    let warning = rx.recv_timeout(Duration::from_secs(60));
    let _ = child.kill();
    let _ = child.wait();
    let warning = warning.expect("a warning on stderr even with RUST_LOG=off");
    assert!(warning.contains("CAREGRAPH_JWT_SECRET"), "{warning}");
    assert!(warning.contains("PUBLIC development secret"), "{warning}");
}

#[test]
fn the_request_timeout_must_outlast_the_provider_retry_budget() {
    // Defaults: 3 attempts of 10 s and two 5 s backoffs (40 s) inside 45 s.
    config_of(&[]).expect("the defaults fit");
    let refused = config_of(&[("CAREGRAPH_REQUEST_TIMEOUT_SECONDS", "30")])
        .expect_err("30 s is shorter than the 40 s retry budget");
    assert!(
        refused
            .to_string()
            .contains("CAREGRAPH_REQUEST_TIMEOUT_SECONDS")
    );
    config_of(&[
        ("CAREGRAPH_REQUEST_TIMEOUT_SECONDS", "30"),
        ("CAREGRAPH_PROVIDER_RETRIES", "1"),
    ])
    .expect("two attempts of 10 s and one backoff fit in 30 s");
}

#[tokio::test]
async fn a_websocket_message_over_the_default_limit_closes_with_1009() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let app = TestApp::spawn().await;
    let (_, _, token) = app.owner("Big WS", "big-ws@example.org").await;
    let mut ws = crate::security::socket(&app, &token).await;
    let huge = json!({"type": "subscribe", "id": "x", "payload": {"query": "x".repeat(2 << 20)}});
    let _ = ws.send(Message::Text(huge.to_string().into())).await;
    assert_eq!(crate::security::close_code(&mut ws).await, Some(1009));
}

#[tokio::test]
async fn metrics_and_graphiql_can_be_turned_off() {
    let app = TestApp::spawn_with(|v| {
        v.insert("CAREGRAPH_METRICS".into(), "false".into());
        v.insert("CAREGRAPH_GRAPHIQL".into(), "false".into());
    })
    .await;
    for path in ["/metrics", "/graphiql", "/graphiql/assets/graphiql.min.js"] {
        let status = app
            .http
            .get(app.url(path))
            .send()
            .await
            .expect("get")
            .status();
        assert_eq!(status, reqwest::StatusCode::NOT_FOUND, "{path}");
    }
    let health = app.http.get(app.url("/healthz")).send().await.expect("get");
    assert!(health.status().is_success());
}

#[tokio::test]
async fn production_errors_do_not_name_schema_arguments() {
    const MISSING: &str =
        "{ organization { id } colleagues(orgId: \"x\", frist: 3) { totalCount } }";
    let dev = TestApp::spawn().await;
    let body = dev.gql(None, MISSING, json!({})).await;
    assert!(body.to_string().contains("\\\"id\\\""), "{body}");
    let prod = TestApp::spawn_with(|v| {
        v.insert("CAREGRAPH_ENV".into(), "production".into());
    })
    .await;
    let body = prod.gql(None, MISSING, json!({})).await;
    let errors = body["errors"].as_array().expect("errors");
    assert!(!errors.is_empty());
    for error in errors {
        let message = error["message"].as_str().expect("message");
        assert_eq!(
            message,
            caregraph::graphql::redact::GENERIC_ARGUMENT_ERROR,
            "{body}"
        );
        assert_eq!(error["extensions"]["code"], "BAD_USER_INPUT");
    }
}

#[tokio::test]
async fn nul_in_every_search_argument_is_bad_user_input_naming_it() {
    let app = TestApp::spawn().await;
    let c = app.clinic("nul").await;
    let searches = [
        (
            "query($o: ID!, $t: String!) { searchColleagues(orgId: $o, query: $t) { role } }",
            "query",
        ),
        (
            "query($o: ID!, $t: String) { patients(orgId: $o, search: $t) { totalCount } }",
            "search",
        ),
        (
            "query($o: ID!, $t: String!) { caseByReference(orgId: $o, reference: $t) { id } }",
            "reference",
        ),
    ];
    for (query, field) in searches {
        for text in ["ab\u{0}", "\u{0}\u{0}", "\u{0}%", "x\u{1b}y"] {
            let body = app
                .gql(Some(&c.owner.token), query, json!({"o": c.org, "t": text}))
                .await;
            assert_eq!(code(&body), "BAD_USER_INPUT", "{field} {text:?}: {body}");
            assert_eq!(body["errors"][0]["extensions"]["field"], field, "{body}");
        }
        // Written into the document rather than passed as a variable, the same.
        let inline = query
            .replace(", $t: String!", "")
            .replace(", $t: String", "")
            .replace("$t", "\"ab\\u0000\"");
        let body = app
            .gql(Some(&c.owner.token), &inline, json!({"o": c.org}))
            .await;
        assert_eq!(code(&body), "BAD_USER_INPUT", "{inline}: {body}");
        assert_eq!(body["errors"][0]["extensions"]["field"], field);
    }
}

#[tokio::test]
async fn control_characters_and_over_long_texts_in_input_objects_are_refused_by_path() {
    let app = TestApp::spawn_with(|v| {
        v.insert("CAREGRAPH_MAX_TEXT_BYTES".into(), "1000".into());
    })
    .await;
    let c = app.clinic("ctl").await;
    let create =
        "mutation($o: ID!, $i: CreateCaseInput!) { createCase(orgId: $o, input: $i) { id title } }";
    let body = app
        .gql(
            Some(&c.owner.token),
            create,
            json!({"o": c.org, "i": {"reference": "C-1", "title": "bad\u{7}bell"}}),
        )
        .await;
    assert_eq!(code(&body), "BAD_USER_INPUT", "{body}");
    assert_eq!(body["errors"][0]["extensions"]["field"], "input.title");
    let body = app
        .gql(
            Some(&c.owner.token),
            create,
            json!({"o": c.org, "i": {"reference": "C-1", "title": "x".repeat(1001)}}),
        )
        .await;
    assert_eq!(
        body["errors"][0]["extensions"]["field"], "input.title",
        "{body}"
    );
    // Line breaks and tabs are text.
    let ok = app
        .ok(
            &c.owner.token,
            create,
            json!({"o": c.org, "i": {"reference": "C-2", "title": "two\nlines\tand tab"}}),
            "createCase",
        )
        .await;
    assert_eq!(ok["title"], "two\nlines\tand tab");
}

const LOGIN: &str =
    "mutation($e: String!, $p: String!) { login(email: $e, password: $p) { accessToken } }";

/// Logs in from the loopback address `from` (127.0.0.x), returning the body.
async fn login_from(app: &TestApp, from: &str, email: &str, password: &str) -> serde_json::Value {
    let client = reqwest::Client::builder()
        .local_address(Some(from.parse().expect("address")))
        .build()
        .expect("client");
    client
        .post(app.url("/graphql"))
        .json(&json!({"query": LOGIN, "variables": {"e": email, "p": password}}))
        .send()
        .await
        .expect("login")
        .json()
        .await
        .expect("json")
}

#[tokio::test]
async fn the_victims_right_password_from_another_address_logs_in_after_an_attackers_failures() {
    let app = TestApp::spawn_with(|v| {
        v.insert("CAREGRAPH_LOGIN_PER_EMAIL_PER_MINUTE".into(), "3".into());
        v.insert("CAREGRAPH_LOGIN_PER_PAIR_PER_MINUTE".into(), "5".into());
    })
    .await;
    app.owner("Victim Clinic", "victim@example.org").await;
    let email = "victim@example.org";
    // The attacker exhausts their own (email, address) pair.
    for _ in 0..5 {
        let body = login_from(&app, "127.0.0.2", email, "guess").await;
        assert!(
            matches!(code(&body), "UNAUTHENTICATED" | "RATE_LIMITED"),
            "{body}"
        );
    }
    let body = login_from(&app, "127.0.0.2", email, "guess").await;
    assert_eq!(code(&body), "RATE_LIMITED", "{body}");
    // A wrong guess from yet another address is slowed and told when to retry.
    let started = Instant::now();
    let body = login_from(&app, "127.0.0.3", email, "guess").await;
    assert_eq!(code(&body), "RATE_LIMITED", "{body}");
    assert!(body["errors"][0]["extensions"]["retryAfterSeconds"].as_u64() >= Some(1));
    assert!(started.elapsed() >= Duration::from_millis(900));
    // The victim, from their own address, signs in with the right password.
    let body = login_from(&app, "127.0.0.4", email, "a long password 1").await;
    assert!(body["data"]["login"]["accessToken"].is_string(), "{body}");
}

/// Values planted in a full flow that must never reach the log.
const PLANTED: [&str; 6] = [
    "planted-intruder-3391@example.org",
    "PlantedPassword-7781",
    "Plantedsearch4471",
    "Plantedname5512",
    "Plantedmessage8823",
    "Plantedvariable6604",
];

#[tokio::test]
async fn a_trace_level_log_of_a_full_flow_holds_no_planted_value() {
    use std::io::Read;
    let dir = tempfile::tempdir().expect("tempdir");
    let log_path = dir.path().join("caregraph.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    let mut child = std::process::Command::new(crate::cli::BIN)
        .current_dir(dir.path())
        .env_remove("CAREGRAPH_DATABASE_URL")
        .env_remove("CAREGRAPH_ENV")
        .env("CAREGRAPH_JWT_SECRET", crate::helpers::SECRET)
        .env("CAREGRAPH_DEMO", "true")
        .env("CAREGRAPH_BIND", "127.0.0.1:0")
        .env("RUST_LOG", "trace")
        .env("CAREGRAPH_LOG_FORMAT", "json")
        .stdout(std::process::Stdio::piped())
        .stderr(log.try_clone().expect("log"))
        .spawn()
        .expect("caregraph starts");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    let copy = std::thread::spawn(move || {
        use std::io::{BufRead, BufReader, Write};
        let mut log = log;
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some((base, _)) = line.trim().split_once("/graphiql#token=") {
                let _ = tx.send(base.to_owned());
            }
            let _ = writeln!(log, "{line}");
        }
    });
    let base = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("caregraph serves");
    let http = reqwest::Client::new();
    let gql = |token: Option<String>, query: &str, variables: serde_json::Value| {
        let mut request = http
            .post(format!("{base}/graphql"))
            .json(&json!({"query": query, "variables": variables}));
        if let Some(t) = token {
            request = request.bearer_auth(t);
        }
        async move {
            request
                .send()
                .await
                .expect("post")
                .json::<serde_json::Value>()
                .await
                .expect("json")
        }
    };
    // A failed login with a planted email and password, then the demo owner's.
    gql(None, LOGIN, json!({"e": PLANTED[0], "p": PLANTED[1]})).await;
    let login = gql(
        None,
        LOGIN,
        json!({"e": "olivia.hart@riverside-vets.example", "p": "caregraph-demo"}),
    )
    .await;
    let token = login["data"]["login"]["accessToken"]
        .as_str()
        .expect("the demo owner signs in")
        .to_owned();
    let viewer = gql(
        Some(token.clone()),
        "{ viewer { memberships { organization { id } } } }",
        json!({}),
    )
    .await;
    let org = viewer["data"]["viewer"]["memberships"][0]["organization"]["id"]
        .as_str()
        .expect("org")
        .to_owned();
    // A search in a GET query string.
    let search = format!(
        "query {{ searchColleagues(orgId: \"{org}\", query: \"{}\") {{ role }} }}",
        PLANTED[2]
    );
    let got = http
        .get(format!("{base}/graphql"))
        .query(&[("query", search.as_str())])
        .bearer_auth(&token)
        .send()
        .await
        .expect("get");
    assert!(got.status().is_success());
    // A patient's name in a variable, a colleague chat and a message in it.
    let patient = gql(
        Some(token.clone()),
        "mutation($o: ID!, $i: CreatePatientInput!) { createPatient(orgId: $o, input: $i) { id } }",
        json!({"o": org, "i": {"name": PLANTED[3], "species": PLANTED[5]}}),
    )
    .await;
    assert!(
        patient["data"]["createPatient"]["id"].is_string(),
        "{patient}"
    );
    let colleagues = gql(
        Some(token.clone()),
        "query($o: ID!) { searchColleagues(orgId: $o, query: \"ma\") { user { id } } }",
        json!({"o": org}),
    )
    .await;
    let colleague = colleagues["data"]["searchColleagues"][0]["user"]["id"]
        .as_str()
        .expect("a colleague")
        .to_owned();
    let chat = gql(
        Some(token.clone()),
        "mutation($o: ID!, $c: ID!) { openDirectChat(orgId: $o, colleagueId: $c) { id } }",
        json!({"o": org, "c": colleague}),
    )
    .await;
    let chat = chat["data"]["openDirectChat"]["id"]
        .as_str()
        .expect("a chat")
        .to_owned();
    let sent = gql(
        Some(token.clone()),
        "mutation($s: ID!, $t: String!) { sendChatMessage(sessionId: $s, text: $t) { id } }",
        json!({"s": chat, "t": PLANTED[4]}),
    )
    .await;
    assert!(sent["data"]["sendChatMessage"]["id"].is_string(), "{sent}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = child.kill();
    let _ = child.wait();
    let _ = copy.join();
    let mut text = String::new();
    std::fs::File::open(&log_path)
        .expect("log")
        .read_to_string(&mut text)
        .expect("read");
    // Debug lines were captured (the message's domain event among them).
    assert!(
        text.contains("\"level\":\"DEBUG\"") && text.contains("domain event: chat changed"),
        "the log was captured at debug level and below: {text}"
    );
    for planted in PLANTED {
        let found: Vec<&str> = text.lines().filter(|l| l.contains(planted)).collect();
        assert!(found.is_empty(), "{planted} is in the log: {found:?}");
    }
}

/// Opens `n` TCP connections to `app` from the loopback address `from`, sending nothing.
async fn idle_connections(app: &TestApp, from: &str, n: usize) -> Vec<tokio::net::TcpStream> {
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind(format!("{from}:0").parse().expect("address"))
            .expect("bind");
        if let Ok(stream) = socket.connect(app.addr).await {
            held.push(stream);
        }
    }
    held
}

/// How many of `streams` the server still holds open (a closed one reads end-of-stream).
async fn still_open(streams: &mut [tokio::net::TcpStream]) -> usize {
    use tokio::io::AsyncReadExt;
    let mut open = 0;
    for stream in streams {
        let mut byte = [0u8; 1];
        match tokio::time::timeout(Duration::from_millis(5), stream.read(&mut byte)).await {
            Err(_) => open += 1,     // nothing to read yet: open
            Ok(Ok(0) | Err(_)) => {} // closed by the server
            Ok(Ok(_)) => open += 1,
        }
    }
    open
}

/// `/healthz` and `/readyz` answer within a second.
async fn healthz_answers(app: &TestApp) {
    for path in ["/healthz", "/readyz"] {
        let started = Instant::now();
        let response = app
            .http
            .get(app.url(path))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .expect("the health check answers during the flood");
        assert!(response.status().is_success(), "{path}");
        assert!(started.elapsed() < Duration::from_secs(1), "{path}");
    }
}

#[tokio::test]
async fn a_flood_of_idle_connections_leaves_healthz_answering() {
    let app = TestApp::spawn_with(|v| {
        v.insert("CAREGRAPH_MAX_CONNECTIONS".into(), "300".into());
        v.insert("CAREGRAPH_MAX_CONNECTIONS_PER_ADDRESS".into(), "100".into());
        v.insert("CAREGRAPH_HEADER_READ_TIMEOUT_SECONDS".into(), "2".into());
    })
    .await;
    let mut flood = idle_connections(&app, "127.0.0.2", 1_100).await;
    assert!(flood.len() >= 1_000, "the flood connected");
    healthz_answers(&app).await;
    let open = still_open(&mut flood).await;
    assert!(open <= 100, "{open} idle connections held from one address");
    // Silent connections are dropped after the header-read timeout.
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    assert_eq!(still_open(&mut flood).await, 0);
}

#[tokio::test]
async fn a_flood_of_silent_connections_from_many_addresses_makes_room_for_healthz() {
    let app = TestApp::spawn_with(|v| {
        v.insert("CAREGRAPH_MAX_CONNECTIONS".into(), "200".into());
        v.insert("CAREGRAPH_MAX_CONNECTIONS_PER_ADDRESS".into(), "100".into());
        v.insert("CAREGRAPH_HEADER_READ_TIMEOUT_SECONDS".into(), "30".into());
    })
    .await;
    let mut flood = Vec::new();
    for i in 2..6 {
        flood.extend(idle_connections(&app, &format!("127.0.0.{i}"), 100).await);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(still_open(&mut flood).await <= 200, "the global cap holds");
    // The cap is full of silent connections, long before their header-read timeout: the oldest
    // makes room for the health check.
    healthz_answers(&app).await;
}

#[tokio::test]
async fn a_document_is_kept_parsed_only_once_it_has_run_to_data() {
    let app = TestApp::spawn().await;
    let kept = || app.state.graphql.documents_kept();
    let before = kept();
    for _ in 0..2 {
        let body = app.gql(None, "{ noSuchField }", json!({})).await;
        assert!(body["errors"].is_array(), "{body}");
    }
    assert_eq!(
        kept(),
        before,
        "a document that fails validation is not kept"
    );
    let long = format!("{{ __typename {} }}", "__typename ".repeat(300));
    let body = app.gql(None, &long, json!({})).await;
    assert_eq!(body["data"]["__typename"], "Query", "{body}");
    assert_eq!(kept(), before, "a long text is not kept");
    for _ in 0..3 {
        let body = app.gql(None, "{ __typename }", json!({})).await;
        assert_eq!(body["data"]["__typename"], "Query", "{body}");
    }
    assert_eq!(kept(), before + 1, "a document that ran is kept once");
}

#[tokio::test]
async fn a_kept_document_is_still_checked_for_its_variables_and_its_callers_rights() {
    let app = TestApp::spawn().await;
    let c = app.clinic("kept").await;
    let query = "query($o: ID!, $t: String) { patients(orgId: $o, search: $t) { totalCount } }";
    let kept = app.state.graphql.documents_kept();
    let ok = app
        .ok(
            &c.owner.token,
            query,
            json!({"o": c.org, "t": "re"}),
            "patients",
        )
        .await;
    assert!(ok["totalCount"].is_number(), "{ok}");
    assert_eq!(app.state.graphql.documents_kept(), kept + 1);
    // The same text again, now with a control character: refused before any resolver runs.
    let body = app
        .gql(
            Some(&c.owner.token),
            query,
            json!({"o": c.org, "t": "ab\u{0}"}),
        )
        .await;
    assert_eq!(code(&body), "BAD_USER_INPUT", "{body}");
    assert_eq!(body["errors"][0]["extensions"]["field"], "search", "{body}");
    // And from someone outside the clinic: the rule is the resolvers', not the document's.
    for outsider in [&c.outsider, &c.stranger] {
        let body = app
            .gql(Some(&outsider.token), query, json!({"o": c.org, "t": "re"}))
            .await;
        assert_eq!(body["data"], serde_json::Value::Null, "{body}");
        assert!(body["errors"].is_array(), "{body}");
    }
}
