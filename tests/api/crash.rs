//! A change and its chat side effects commit in one transaction: a burst of case participant
//! additions against the real binary, killed with SIGKILL mid-burst and restarted on the same
//! database, leaves every acknowledged change with all its effects (participant row, room
//! member row, provider channel member once the outbox delivers) and no change with half of
//! them.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::Duration,
};

use sea_orm::{ConnectionTrait, Database, DatabaseConnection, Statement};
use serde_json::{Value, json};

use crate::{
    cli::{Running, caregraph, serve},
    helpers::TestDb,
};

/// How many changes the burst makes, and after how many acknowledgements the process dies.
const CHANGES: usize = 40;
const KILL_AFTER: usize = 15;

/// Starts the binary on `db` (demo data on the first start); its base URL and owner token.
fn start(dir: &std::path::Path, db: &TestDb) -> (Running, String, String) {
    start_with(dir, db, &[])
}

/// [`start`] with more variables (a provider's, say).
fn start_with(
    dir: &std::path::Path,
    db: &TestDb,
    vars: &[(String, String)],
) -> (Running, String, String) {
    let mut cmd = caregraph(dir);
    cmd.env("CAREGRAPH_DATABASE_URL", &db.url)
        .env("CAREGRAPH_DEMO", "true")
        .env("CAREGRAPH_OUTBOX_POLL_MS", "50")
        .envs(vars.iter().map(|(k, v)| (k, v)));
    let (running, link) = serve(cmd);
    let (base, token) = link.split_once("/graphiql#token=").expect("link shape");
    (running, base.to_owned(), token.to_owned())
}

async fn gql(http: &reqwest::Client, base: &str, token: &str, query: &str, vars: Value) -> Value {
    http.post(format!("{base}/graphql"))
        .bearer_auth(token)
        .json(&json!({"query": query, "variables": vars}))
        .send()
        .await
        .expect("request")
        .json()
        .await
        .expect("json")
}

/// One column of every row `sql` returns.
async fn column(db: &DatabaseConnection, sql: String, name: &str) -> BTreeSet<String> {
    db.query_all_raw(Statement::from_string(db.get_database_backend(), sql))
        .await
        .expect("query")
        .iter()
        .map(|r| r.try_get::<String>("", name).expect("column"))
        .collect()
}

/// Which cases (by id) hold `user`: as a participant, as a member of the case's room here, and
/// as a member of the room's channel at the (local) provider.
async fn holdings(
    db: &DatabaseConnection,
    user: &str,
) -> (BTreeSet<String>, BTreeSet<String>, BTreeSet<String>) {
    let participant = column(
        db,
        format!("SELECT case_id FROM case_participants WHERE user_id = '{user}'"),
        "case_id",
    )
    .await;
    let member = column(
        db,
        format!(
            "SELECT s.natural_key AS k FROM chat_session_members m JOIN chat_sessions s \
             ON s.id = m.session_id WHERE m.user_id = '{user}' AND s.natural_key LIKE 'case:%'"
        ),
        "k",
    )
    .await
    .into_iter()
    .map(|k| k.trim_start_matches("case:").to_owned())
    .collect();
    let at_provider = column(
        db,
        format!(
            "SELECT s.natural_key AS k FROM local_chat_members p JOIN chat_sessions s \
             ON p.cid = s.channel_type || ':' || s.channel_id \
             WHERE p.user_id = '{user}' AND s.natural_key LIKE 'case:%'"
        ),
        "k",
    )
    .await
    .into_iter()
    .map(|k| k.trim_start_matches("case:").to_owned())
    .collect();
    (participant, member, at_provider)
}

#[tokio::test]
async fn a_kill_9_mid_burst_leaves_every_acknowledged_change_with_all_its_chat_effects_and_none_half_done()
 {
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let http = reqwest::Client::new();
    let (mut running, base, token) = start(dir.path(), &db);

    // The demo clinic, its owner (the cases' ADMIN) and a colleague the burst adds.
    let me = gql(
        &http,
        &base,
        &token,
        "{ viewer { user { id } memberships { organization { id } } } }",
        json!({}),
    )
    .await;
    let owner = me["data"]["viewer"]["user"]["id"]
        .as_str()
        .expect("owner")
        .to_owned();
    let org = me["data"]["viewer"]["memberships"][0]["organization"]["id"]
        .as_str()
        .expect("org")
        .to_owned();
    let colleagues = gql(
        &http,
        &base,
        &token,
        "query($o: ID!) { colleagues(orgId: $o, first: 50) { edges { node { user { id } } } } }",
        json!({"o": org}),
    )
    .await;
    let joiner = colleagues["data"]["colleagues"]["edges"]
        .as_array()
        .expect("colleagues")
        .iter()
        .filter_map(|e| e["node"]["user"]["id"].as_str())
        .find(|u| *u != owner)
        .expect("a colleague")
        .to_owned();
    let mut cases = Vec::new();
    for i in 0..CHANGES {
        let made = gql(
            &http,
            &base,
            &token,
            "mutation($o: ID!, $i: CreateCaseInput!) { createCase(orgId: $o, input: $i) { id chat { id } } }",
            json!({"o": org, "i": {"reference": format!("CRASH-{i}"), "title": format!("Claim {i}"),
                "participants": [{"userId": owner, "role": "ADMIN"}]}}),
        )
        .await;
        let case = &made["data"]["createCase"];
        assert!(case["chat"]["id"].is_string(), "the room exists: {made}");
        cases.push(case["id"].as_str().expect("case").to_owned());
    }

    // The burst: four at a time; the process dies after the KILL_AFTER-th acknowledgement,
    // with others in flight.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<usize>();
    let gate = Arc::new(tokio::sync::Semaphore::new(4));
    let mut burst = tokio::task::JoinSet::new();
    for (i, case) in cases.iter().cloned().enumerate() {
        let (http, base, token, joiner, tx, gate) = (
            http.clone(),
            base.clone(),
            token.clone(),
            joiner.clone(),
            tx.clone(),
            gate.clone(),
        );
        burst.spawn(async move {
            let _permit = gate.acquire().await.expect("gate");
            let Ok(response) = http
                .post(format!("{base}/graphql"))
                .bearer_auth(&token)
                .json(&json!({
                    "query": "mutation($c: ID!, $u: ID!) { addCaseParticipant(caseId: $c, input: {userId: $u, role: PRACTITIONER}) { id } }",
                    "variables": {"c": case, "u": joiner}}))
                .send()
                .await
            else {
                return;
            };
            let Ok(body) = response.json::<Value>().await else {
                return;
            };
            if body["data"]["addCaseParticipant"]["id"] == case.as_str() {
                let _ = tx.send(i);
            }
        });
    }
    drop(tx);
    let mut acknowledged = BTreeSet::new();
    while let Some(i) = rx.recv().await {
        acknowledged.insert(i);
        if acknowledged.len() == KILL_AFTER {
            running.kill();
            break;
        }
    }
    while burst.join_next().await.is_some() {}
    // Answers that arrived before the kill count too.
    while let Ok(i) = rx.try_recv() {
        acknowledged.insert(i);
    }
    assert!(
        acknowledged.len() >= KILL_AFTER && acknowledged.len() < CHANGES,
        "the kill fell mid-burst: {} acknowledged",
        acknowledged.len()
    );

    // Restart on the same database; the outbox delivers what the dead process left.
    let (_running, _, _) = start(dir.path(), &db);
    let conn = Database::connect(&db.url).await.expect("connect");
    let index: BTreeMap<&str, usize> = cases
        .iter()
        .enumerate()
        .map(|(i, c)| (c.as_str(), i))
        .collect();
    let of = |set: &BTreeSet<String>| -> BTreeSet<usize> {
        set.iter()
            .filter_map(|c| index.get(c.as_str()).copied())
            .collect()
    };
    let mut state = holdings(&conn, &joiner).await;
    for _ in 0..300 {
        if state.1 == state.2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        state = holdings(&conn, &joiner).await;
    }
    let (participant, member, at_provider) = (of(&state.0), of(&state.1), of(&state.2));
    let whole: BTreeSet<usize> = participant
        .intersection(&member)
        .copied()
        .collect::<BTreeSet<_>>()
        .intersection(&at_provider)
        .copied()
        .collect();
    let unacknowledged_applied = whole.difference(&acknowledged).count();
    eprintln!(
        "changes: {CHANGES}; acknowledged before the kill: {}; acknowledged with every effect \
         after restart: {}; unacknowledged but whole: {unacknowledged_applied}; half-done: {}",
        acknowledged.len(),
        acknowledged.intersection(&whole).count(),
        participant.symmetric_difference(&member).count()
            + member.symmetric_difference(&at_provider).count(),
    );
    assert!(
        acknowledged.is_subset(&whole),
        "every acknowledged change has all its effects: acknowledged {acknowledged:?}, whole {whole:?}"
    );
    assert_eq!(
        participant, member,
        "no change is half done (participant vs room member)"
    );
    assert_eq!(
        member, at_provider,
        "the outbox delivered every room membership"
    );
}

/// The demo clinic's id and its owner's colleagues (not the owner).
async fn clinic_and_colleagues(
    http: &reqwest::Client,
    base: &str,
    token: &str,
) -> (String, Vec<String>) {
    let me = gql(
        http,
        base,
        token,
        "{ viewer { user { id } memberships { organization { id } } } }",
        json!({}),
    )
    .await;
    let owner = me["data"]["viewer"]["user"]["id"]
        .as_str()
        .expect("owner")
        .to_owned();
    let org = me["data"]["viewer"]["memberships"][0]["organization"]["id"]
        .as_str()
        .expect("org")
        .to_owned();
    let colleagues = gql(
        http,
        base,
        token,
        "query($o: ID!) { colleagues(orgId: $o, first: 50) { edges { node { user { id } } } } }",
        json!({"o": org}),
    )
    .await;
    let colleagues = colleagues["data"]["colleagues"]["edges"]
        .as_array()
        .expect("colleagues")
        .iter()
        .filter_map(|e| e["node"]["user"]["id"].as_str())
        .filter(|u| *u != owner)
        .map(str::to_owned)
        .collect();
    (org, colleagues)
}

/// A chat's provider channel, from its GraphQL answer.
fn channel_of(chat: &Value) -> caregraph::providers::chat::ChannelRef {
    caregraph::providers::chat::ChannelRef {
        channel_type: chat["channelType"].as_str().expect("type").to_owned(),
        channel_id: chat["channelId"].as_str().expect("id").to_owned(),
    }
}

// Two workers: `start_with` blocks its thread until the link is printed, and the demo seed
// before it talks to the fake provider, which is served on this runtime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_kill_9_with_channels_pending_a_reopen_answers_ready_and_the_rest_follow_within_seconds()
 {
    use crate::fakes::FakeProvider;
    const OPEN: &str = "mutation($o: ID!, $c: ID!) { openDirectChat(orgId: $o, colleagueId: $c) { id channelType channelId provisioning provisioningRetryAt } }";
    let fake = crate::fakes::stream::start().await;
    let db = TestDb::new().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let http = reqwest::Client::new();
    let (mut running, base, token) = start_with(dir.path(), &db, &fake.vars());
    let (org, colleagues) = clinic_and_colleagues(&http, &base, &token).await;
    let open = |base: String, token: String, colleague: String| {
        let http = http.clone();
        let org = org.clone();
        async move {
            let body = gql(
                &http,
                &base,
                &token,
                OPEN,
                json!({"o": org, "c": colleague}),
            )
            .await;
            body["data"]["openDirectChat"].clone()
        }
    };

    // The provider is down: two chats are saved, their channels are not made.
    fake.control().fail(503, "{}", 10_000);
    let chat = open(base.clone(), token.clone(), colleagues[0].clone()).await;
    assert_eq!(chat["provisioning"], "FAILED", "{chat}");
    assert!(chat["provisioningRetryAt"].is_string(), "{chat}");
    let other = open(base.clone(), token.clone(), colleagues[1].clone()).await;
    assert_ne!(other["provisioning"], "READY", "{other}");
    running.kill();

    // The provider is back; the restarted process answers the reopen once the channel exists.
    fake.control().heal();
    let (_running, base, token) = start_with(dir.path(), &db, &fake.vars());
    let started = std::time::Instant::now();
    let reopened = open(base, token, colleagues[0].clone()).await;
    let took = started.elapsed();
    assert_eq!(reopened["id"], chat["id"], "the same chat: {reopened}");
    assert_eq!(reopened["provisioning"], "READY", "{reopened}");
    assert!(
        fake.channel(&channel_of(&chat)).is_some(),
        "the channel exists at the provider"
    );
    eprintln!("reopen after restart answered READY in {took:?}");
    assert!(
        took < Duration::from_secs(5),
        "within seconds, not a lease: {took:?}"
    );
    // The chat nobody reopened follows on the worker's schedule, within seconds.
    while fake.channel(&channel_of(&other)).is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the other channel is delivered within seconds of the restart"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "the other pending channel existed {:?} after the restart",
        started.elapsed()
    );
}
