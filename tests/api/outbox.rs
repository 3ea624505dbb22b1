//! The outbox: provider side effects survive outages and restarts, happen once at the
//! provider, and reads are batched to each provider's limit.

use std::time::{Duration, Instant};

use caregraph::{
    outbox::{Entry, Operation, enqueue},
    providers::chat::{ChannelRef, ChannelSpec, ChatUser},
};
use sea_orm::ConnectionTrait;
use serde_json::{Map, json};

use crate::{
    fakes::{self, FakeProvider},
    helpers::TestApp,
};

fn quick_outbox(vars: &mut std::collections::HashMap<String, String>, fake: &dyn FakeProvider) {
    for (k, v) in fake.vars() {
        vars.insert(k, v);
    }
    vars.insert("CAREGRAPH_OUTBOX_BACKOFF_MS".into(), "20".into());
    vars.insert("CAREGRAPH_OUTBOX_MAX_BACKOFF_SECONDS".into(), "1".into());
    vars.insert("CAREGRAPH_OUTBOX_POLL_MS".into(), "50".into());
    vars.insert("CAREGRAPH_OUTBOX_MAX_ATTEMPTS".into(), "1000".into());
    vars.insert("CAREGRAPH_PROVIDER_RETRIES".into(), "0".into());
    vars.insert("CAREGRAPH_PROVIDER_TIMEOUT_SECONDS".into(), "2".into());
    vars.insert(
        "CAREGRAPH_PROVIDER_BREAKER_COOLDOWN_SECONDS".into(),
        "0.2".into(),
    );
}

fn channel(i: usize) -> ChannelRef {
    ChannelRef {
        channel_type: "messaging".into(),
        channel_id: format!("appointment-outage-{i:03}"),
    }
}

fn provisioning(i: usize) -> Vec<Entry> {
    let users = vec![
        ChatUser {
            id: format!("client-{i}"),
            name: format!("Client {i}"),
            image: None,
        },
        ChatUser {
            id: "vet-1".into(),
            name: "Vet".into(),
            image: None,
        },
    ];
    vec![
        Entry::new(
            format!("test:{i}:users"),
            None,
            Operation::UpsertUsers {
                users: users.clone(),
            },
        ),
        Entry::new(
            format!("test:{i}:create"),
            None,
            Operation::CreateChannel {
                users,
                spec: ChannelSpec {
                    channel: channel(i),
                    created_by: "vet-1".into(),
                    members: vec![format!("client-{i}"), "vet-1".into()],
                    name: Some(format!("Appointment {i}")),
                    image: None,
                    metadata: Map::new(),
                    frozen: true,
                },
            },
        ),
    ]
}

async fn wait_until_delivered(app: &TestApp, within: Duration) {
    let started = Instant::now();
    loop {
        let counts = app.state.services.outbox.counts().await.expect("counts");
        if counts.pending == 0 {
            if counts.dead > 0 {
                let rows = app
                    .state
                    .services
                    .db
                    .query_all_raw(sea_orm::Statement::from_string(
                        app.state.services.db.get_database_backend(),
                        "SELECT idempotency_key, last_error FROM outbox WHERE status = 'dead' LIMIT 3",
                    ))
                    .await
                    .expect("dead rows");
                let errors: Vec<String> = rows
                    .iter()
                    .map(|r| {
                        format!(
                            "{:?}: {:?}",
                            r.try_get::<String>("", "idempotency_key"),
                            r.try_get::<Option<String>>("", "last_error")
                        )
                    })
                    .collect();
                panic!("{} rows died: {errors:?}", counts.dead);
            }
            return;
        }
        assert!(
            started.elapsed() < within,
            "still pending after {within:?}: {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn provisionings_started_during_an_outage_complete_after_it_each_exactly_once() {
    let fake = fakes::stream::start().await;
    let app = TestApp::spawn_with(|v| quick_outbox(v, &fake)).await;
    // The provider answers 503 to everything for a while.
    fake.control().fail(
        503,
        r#"{"code":-1,"message":"unavailable","StatusCode":503}"#,
        usize::MAX,
    );
    let db = &app.state.services.db;
    for i in 0..200 {
        let txn = caregraph::db::begin(db).await.expect("begin");
        enqueue(&txn, &provisioning(i), chrono::Utc::now())
            .await
            .expect("enqueue");
        txn.commit().await.expect("commit");
        app.state.services.outbox.wake();
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    let during = app.state.services.outbox.counts().await.expect("counts");
    assert_eq!(
        during.pending, 400,
        "nothing is lost or given up during the outage"
    );
    assert!(
        fake.control().requests().is_empty(),
        "nothing reached the provider"
    );

    fake.control().heal();
    wait_until_delivered(&app, Duration::from_secs(60)).await;
    for i in 0..200 {
        let ch = channel(i);
        let creates = fake.control().calls(
            "POST",
            &format!("/channels/messaging/{}/query", ch.channel_id),
        );
        assert_eq!(creates.len(), 1, "channel {i} created exactly once");
        assert_eq!(
            fake.members(&ch).map(|m| m.len()),
            Some(2),
            "channel {i} has its members"
        );
    }
}

#[tokio::test]
async fn a_new_process_delivers_what_a_stopped_one_left_pending_exactly_once() {
    let fake = fakes::stream::start().await;
    let first = TestApp::spawn_with(|v| {
        quick_outbox(v, &fake);
        // This process never gets to deliver: its provider is down the whole time.
    })
    .await;
    fake.control().fail(503, "down", usize::MAX);
    let db = first.state.services.db.clone();
    for i in 0..20 {
        let txn = caregraph::db::begin(&db).await.expect("begin");
        enqueue(&txn, &provisioning(i), chrono::Utc::now())
            .await
            .expect("enqueue");
        txn.commit().await.expect("commit");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // One row looks claimed by a process that died mid-delivery: its lease runs 1 s more.
    let lease_until = (chrono::Utc::now() + chrono::Duration::seconds(1)).to_rfc3339();
    db.execute_unprepared(&format!(
        "UPDATE outbox SET locked_until = '{lease_until}' WHERE idempotency_key = 'test:7:create'"
    ))
    .await
    .expect("lease");
    let second = first.restart(|_| {}).await;
    fake.control().heal();
    wait_until_delivered(&second, Duration::from_secs(30)).await;
    for i in 0..20 {
        let ch = channel(i);
        let creates = fake.control().calls(
            "POST",
            &format!("/channels/messaging/{}/query", ch.channel_id),
        );
        assert_eq!(creates.len(), 1, "channel {i} created exactly once");
    }
    // Enqueueing the same keys again (a retried request) changes nothing.
    let txn = caregraph::db::begin(&second.state.services.db)
        .await
        .expect("begin");
    enqueue(&txn, &provisioning(3), chrono::Utc::now())
        .await
        .expect("enqueue");
    txn.commit().await.expect("commit");
    second.state.services.outbox.wake();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        second
            .state
            .services
            .outbox
            .counts()
            .await
            .expect("counts")
            .pending,
        0
    );
    assert_eq!(
        fake.control()
            .calls("POST", "/channels/messaging/appointment-outage-003/query")
            .len(),
        1
    );
}

#[tokio::test]
async fn a_rejected_operation_is_dead_at_once_and_counted() {
    let fake = fakes::stream::start().await;
    let app = TestApp::spawn_with(|v| quick_outbox(v, &fake)).await;
    fake.control().fail(
        400,
        r#"{"code":4,"message":"bad input","StatusCode":400}"#,
        1,
    );
    let txn = caregraph::db::begin(&app.state.services.db)
        .await
        .expect("begin");
    enqueue(&txn, &provisioning(1)[..1], chrono::Utc::now())
        .await
        .expect("enqueue");
    txn.commit().await.expect("commit");
    app.state.services.outbox.wake();
    let started = Instant::now();
    loop {
        let counts = app.state.services.outbox.counts().await.expect("counts");
        if counts.dead == 1 && counts.pending == 0 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{counts:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(fake.control().requests().is_empty(), "a 400 is not retried");
}

async fn read_in_pages(fake: &dyn FakeProvider, n: usize, reader: &str) {
    let p = fake.adapter(crate::helpers::quick_resilience(3));
    let users = vec![ChatUser {
        id: reader.into(),
        name: "Reader".into(),
        image: None,
    }];
    p.upsert_users(&users).await.expect("users");
    for i in 0..n {
        p.create_channel(&ChannelSpec {
            channel: ChannelRef {
                channel_type: "messaging".into(),
                channel_id: format!("page-{i:03}"),
            },
            created_by: reader.into(),
            members: vec![reader.into()],
            name: None,
            image: None,
            metadata: Map::new(),
            frozen: false,
        })
        .await
        .expect("create");
    }
}

#[tokio::test]
async fn a_page_of_channel_reads_costs_one_provider_call_per_batch_limit() {
    use caregraph::graphql::{
        batch::{Batches, DataLoader},
        loaders::ChannelReads,
    };

    for (name, fake, per_100, per_10) in [
        (
            "stream",
            Box::new(fakes::stream::start().await) as Box<dyn FakeProvider>,
            4,
            1,
        ),
        (
            "sendbird",
            Box::new(fakes::sendbird::start().await) as Box<dyn FakeProvider>,
            1,
            1,
        ),
    ] {
        let reader = caregraph::domain::UserId::new();
        read_in_pages(fake.as_ref(), 100, &reader.to_string()).await;
        let app = TestApp::spawn_with(|v| {
            for (k, val) in fake.vars() {
                v.insert(k, val);
            }
        })
        .await;
        for (n, expected) in [(100, per_100), (10, per_10)] {
            fake.control().clear();
            let loader: DataLoader<ChannelReads> = caregraph::graphql::loaders::channel_reads(
                &app.state.services,
                &reader,
                &Batches::default(),
            );
            let keys: Vec<ChannelRef> = (0..n)
                .map(|i| ChannelRef {
                    channel_type: "messaging".into(),
                    channel_id: format!("page-{i:03}"),
                })
                .collect();
            let found = loader.load_many(keys).await.expect("load");
            assert_eq!(found.len(), n, "{name}");
            let calls = fake.control().requests().len();
            assert_eq!(calls, expected, "{name}: {n} channels cost {calls} calls");
        }
    }
}

#[tokio::test]
async fn admins_see_failed_provider_operations_retry_them_and_metrics_count_them() {
    let fake = fakes::stream::start().await;
    let app = TestApp::spawn_with(|v| {
        quick_outbox(v, &fake);
        v.insert("CAREGRAPH_METRICS_TOKEN".into(), "metrics-secret".into());
    })
    .await;
    let c = app.clinic("deadletters").await;
    fake.control().fail(
        400,
        r#"{"code":4,"message":"bad input","StatusCode":400}"#,
        1,
    );
    let txn = caregraph::db::begin(&app.state.services.db)
        .await
        .expect("begin");
    let mut entries = provisioning(1);
    for e in &mut entries {
        e.org_id = Some(c.org.clone());
    }
    enqueue(&txn, &entries[..1], chrono::Utc::now())
        .await
        .expect("enqueue");
    txn.commit().await.expect("commit");
    app.state.services.outbox.wake();
    let q = "query($o: ID!) { failedProviderOperations(orgId: $o) { id operation key status attempts lastError } }";
    let started = Instant::now();
    let failed = loop {
        let list = app
            .ok(
                &c.owner.token,
                q,
                serde_json::json!({"o": c.org}),
                "failedProviderOperations",
            )
            .await;
        if list.as_array().is_some_and(|l| !l.is_empty()) {
            break list;
        }
        assert!(started.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(failed[0]["operation"], "upsert_users");
    assert_eq!(failed[0]["status"], "dead");
    assert!(
        failed[0]["lastError"]
            .as_str()
            .expect("error")
            .contains("400")
    );

    // Metrics need the token and count the dead row.
    let res = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("metrics");
    assert_eq!(res.status(), 401);
    let text = app
        .http
        .get(app.url("/metrics"))
        .bearer_auth("metrics-secret")
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(text.contains("caregraph_outbox_dead 1"), "{text}");
    assert!(
        text.contains("caregraph_provider_calls_total{provider=\"stream\""),
        "{text}"
    );

    // Only OWNER/ADMIN; outsiders learn nothing.
    let retry = "mutation($o: ID!, $id: ID!) { retryProviderOperation(orgId: $o, id: $id) { status attempts } }";
    let vars = serde_json::json!({"o": c.org, "id": failed[0]["id"]});
    assert_eq!(
        crate::helpers::code(&app.gql(Some(&c.tech.token), retry, vars.clone()).await),
        "FORBIDDEN"
    );
    assert_eq!(
        crate::helpers::code(&app.gql(Some(&c.outsider.token), retry, vars.clone()).await),
        "NOT_FOUND"
    );
    assert_eq!(
        crate::helpers::code(
            &app.gql(Some(&c.tech.token), q, serde_json::json!({"o": c.org}))
                .await
        ),
        "FORBIDDEN"
    );
    let retried = app
        .ok(&c.owner.token, retry, vars, "retryProviderOperation")
        .await;
    assert_eq!(retried["status"], "pending");
    wait_until_delivered(&app, Duration::from_secs(10)).await;
    let list = app
        .ok(
            &c.owner.token,
            q,
            serde_json::json!({"o": c.org}),
            "failedProviderOperations",
        )
        .await;
    assert_eq!(list, serde_json::json!([]));
}

#[tokio::test]
async fn a_caller_can_deliver_its_own_rows_at_once_and_falls_back_to_the_worker() {
    let fake = fakes::stream::start().await;
    let app = TestApp::spawn_with(|v| {
        quick_outbox(v, &fake);
        // The worker stays asleep unless woken, so only deliver_now can deliver here.
        v.insert("CAREGRAPH_OUTBOX_POLL_MS".into(), "600000".into());
        // A loaded test machine must not turn a slow answer into a failure here.
        v.insert("CAREGRAPH_PROVIDER_TIMEOUT_SECONDS".into(), "20".into());
    })
    .await;
    let outbox = &app.state.services.outbox;
    let txn = caregraph::db::begin(&app.state.services.db)
        .await
        .expect("begin");
    let keys = enqueue(&txn, &provisioning(1)[1..], chrono::Utc::now())
        .await
        .expect("enqueue");
    txn.commit().await.expect("commit");
    let delivered = outbox.deliver_now(&keys).await.expect("deliver");
    if !delivered {
        let rows = app
            .state
            .services
            .db
            .query_all_raw(sea_orm::Statement::from_string(
                app.state.services.db.get_database_backend(),
                "SELECT status, attempts, last_error, next_attempt_at, locked_until FROM outbox",
            ))
            .await
            .expect("rows");
        let rows: Vec<String> = rows.iter().map(|r| format!("{r:?}")).collect();
        panic!("not delivered before returning: {rows:?}");
    }
    assert_eq!(
        fake.control()
            .calls("POST", "/channels/messaging/appointment-outage-001/query")
            .len(),
        1
    );

    // With the provider down, the caller gets `false` at once and the row waits for the worker.
    fake.control().fail(503, "down", usize::MAX);
    let txn = caregraph::db::begin(&app.state.services.db)
        .await
        .expect("begin");
    let keys = enqueue(&txn, &provisioning(2)[1..], chrono::Utc::now())
        .await
        .expect("enqueue");
    txn.commit().await.expect("commit");
    let started = Instant::now();
    assert!(!outbox.deliver_now(&keys).await.expect("deliver"));
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "the caller is not held up"
    );
    assert_eq!(outbox.counts().await.expect("counts").pending, 1);
    fake.control().heal();
    wait_until_delivered(&app, Duration::from_secs(10)).await;
    assert_eq!(
        fake.control()
            .calls("POST", "/channels/messaging/appointment-outage-002/query")
            .len(),
        1
    );
}

/// Writes `entries` in a transaction of their own; returns their keys.
async fn enqueue_committed(app: &TestApp, entries: &[Entry]) -> Vec<String> {
    let txn = caregraph::db::begin(&app.state.services.db)
        .await
        .expect("begin");
    let keys = enqueue(&txn, entries, chrono::Utc::now())
        .await
        .expect("enqueue");
    txn.commit().await.expect("commit");
    keys
}

/// The outbox row written for `key`, as stored.
async fn stored_row(app: &TestApp, key: &str) -> caregraph::db::entities::outbox::Model {
    use caregraph::db::entities::outbox;
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
    outbox::Entity::find()
        .filter(outbox::Column::IdempotencyKey.eq(key))
        .one(&app.state.services.db)
        .await
        .expect("read")
        .expect("the row")
}

#[tokio::test]
async fn an_outbox_attempt_calls_the_provider_once_and_the_outbox_owns_the_retries() {
    let fake = fakes::stream::start().await;
    let app = TestApp::spawn_with(|v| {
        quick_outbox(v, &fake);
        // Calls within a request would be tried three times; outbox deliveries must not be.
        v.insert("CAREGRAPH_PROVIDER_RETRIES".into(), "2".into());
    })
    .await;
    fake.control().fail(503, "down", 3);
    let keys = enqueue_committed(&app, &provisioning(1)[..1]).await;
    app.state.services.outbox.wake();
    wait_until_delivered(&app, Duration::from_secs(10)).await;
    assert_eq!(
        stored_row(&app, &keys[0]).await.attempts,
        4,
        "three failed outbox attempts of one call each, then the delivery"
    );
}

#[tokio::test]
async fn a_providers_retry_after_sets_the_outbox_rows_next_attempt() {
    let fake = fakes::stream::start().await;
    let app = TestApp::spawn_with(|v| {
        quick_outbox(v, &fake);
        v.insert("CAREGRAPH_OUTBOX_MAX_BACKOFF_SECONDS".into(), "30".into());
        v.insert("CAREGRAPH_OUTBOX_POLL_MS".into(), "600000".into());
    })
    .await;
    fake.control().inject(fakes::Fault::Respond {
        status: 429,
        body: r#"{"code":9,"message":"Too many requests","StatusCode":429}"#.into(),
        headers: vec![("Retry-After".into(), "7".into())],
        count: 1,
    });
    let keys = enqueue_committed(&app, &provisioning(1)[..1]).await;
    assert!(
        !app.state
            .services
            .outbox
            .deliver_now(&keys)
            .await
            .expect("deliver")
    );
    let row = stored_row(&app, &keys[0]).await;
    assert_eq!(row.attempts, 1);
    let wait = row.next_attempt_at - row.updated_at;
    assert!(
        (6_900..=7_100).contains(&wait.num_milliseconds()),
        "the provider asked for 7 s, the outbox's own first wait is 20-40 ms: {wait:?}"
    );
}

#[tokio::test]
async fn a_delivery_slower_than_its_lease_keeps_the_row_by_heartbeat_and_calls_the_provider_once() {
    let fake = fakes::stream::start().await;
    fake.seed_users(&["slow-user"]);
    let app = TestApp::spawn_with(|v| {
        quick_outbox(v, &fake);
        v.insert("CAREGRAPH_OUTBOX_POLL_MS".into(), "50".into());
        v.insert("CAREGRAPH_OUTBOX_LEASE_SECONDS".into(), "2".into());
        v.insert("CAREGRAPH_PROVIDER_TIMEOUT_SECONDS".into(), "10".into());
    })
    .await;
    // The provider takes 5 s to answer: two and a half leases.
    fake.control().inject(fakes::Fault::Delay {
        by: Duration::from_secs(5),
        count: 1,
    });
    let entry = caregraph::outbox::revoke_tokens_entry("slow-user", None, chrono::Utc::now());
    let txn = caregraph::db::begin(&app.state.services.db)
        .await
        .expect("begin");
    let keys = enqueue(&txn, &[entry], chrono::Utc::now())
        .await
        .expect("enqueue");
    txn.commit().await.expect("commit");
    // The polling worker may claim the row before the caller does; either way it ends delivered.
    let outbox = &app.state.services.outbox;
    let _ = outbox.deliver_now(&keys).await.expect("deliver");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let states = outbox.states(&keys).await.expect("states");
        if states
            .iter()
            .all(|(_, s)| *s == caregraph::outbox::RowState::Done)
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not delivered: {states:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Without the heartbeat the polling worker would have claimed the row again after 2 s.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        fake.control().calls("PATCH", "/users").len(),
        1,
        "one call to the provider"
    );
}

#[tokio::test]
async fn provisionings_sent_after_the_provider_recovers_succeed_without_waiting_out_a_long_cooldown()
 {
    const OPEN: &str = "mutation($o: ID!, $c: ID!) { openDirectChat(orgId: $o, colleagueId: $c) { id provisioning } }";
    let fake = fakes::stream::start().await;
    let app = TestApp::spawn_with(|v| {
        quick_outbox(v, &fake);
        v.insert("CAREGRAPH_PROVIDER_BREAKER_THRESHOLD".into(), "2".into());
        // The longest cooldown an outage can grow to; a short outage never reaches it.
        v.insert(
            "CAREGRAPH_PROVIDER_BREAKER_COOLDOWN_SECONDS".into(),
            "60".into(),
        );
    })
    .await;
    let c = app.clinic("recover").await;
    // An outage: two provisionings fail and the breaker opens.
    fake.control().fail(503, "{}", 1_000);
    for colleague in [&c.tech, &c.owner] {
        let chat = app
            .ok(
                &c.vet.token,
                OPEN,
                json!({"o": c.org, "c": colleague.id}),
                "openDirectChat",
            )
            .await;
        assert_ne!(chat["provisioning"], "READY", "{chat}");
    }
    // The provider is back: after the first, short cooldown the next provisioning succeeds.
    fake.control().heal();
    tokio::time::sleep(caregraph::providers::http::FIRST_COOLDOWN + Duration::from_millis(100))
        .await;
    let started = Instant::now();
    let chat = app
        .ok(
            &c.tech.token,
            OPEN,
            json!({"o": c.org, "c": c.owner.id}),
            "openDirectChat",
        )
        .await;
    assert_eq!(chat["provisioning"], "READY", "{chat}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn reopening_a_chat_during_an_outage_costs_its_channel_no_attempts() {
    const OPEN: &str = "mutation($o: ID!, $c: ID!) { openDirectChat(orgId: $o, colleagueId: $c) { id provisioning provisioningRetryAt } }";
    let fake = fakes::stream::start().await;
    let app = TestApp::spawn_with(|v| {
        quick_outbox(v, &fake);
        v.insert("CAREGRAPH_OUTBOX_MAX_ATTEMPTS".into(), "2".into());
        // The worker waits long between tries: only the reopens try early.
        v.insert("CAREGRAPH_OUTBOX_BACKOFF_MS".into(), "60000".into());
        v.insert("CAREGRAPH_OUTBOX_MAX_BACKOFF_SECONDS".into(), "120".into());
    })
    .await;
    let c = app.clinic("reopens").await;
    fake.control().fail(503, "{}", 1_000);
    for _ in 0..5 {
        let chat = app
            .ok(
                &c.vet.token,
                OPEN,
                json!({"o": c.org, "c": c.tech.id}),
                "openDirectChat",
            )
            .await;
        assert_eq!(chat["provisioning"], "FAILED", "{chat}");
        assert!(chat["provisioningRetryAt"].is_string(), "not dead: {chat}");
    }
    // Back: after the breaker's short cooldown the next reopen gets the channel made (a dead
    // row would never be tried again).
    fake.control().heal();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let chat = app
        .ok(
            &c.vet.token,
            OPEN,
            json!({"o": c.org, "c": c.tech.id}),
            "openDirectChat",
        )
        .await;
    assert_eq!(chat["provisioning"], "READY", "{chat}");
}
