//! The audit trail under replicas and tampering: an export link serves once across replicas, an
//! export is recorded only when recording is on and an ex-auditor's download is a DENIED
//! export, a chain head is signed (a deleted or rewritten head is a break, and a broken chain
//! stops no other chain's sealing), retention verifies what it prunes and two replicas' sweeps
//! do not collide, and filtering a trail by action has its index.

use caregraph::{
    audit::{
        AuditAction, AuditActor, AuditEntity, AuditEntry, AuditRecord, chain, retention, verify,
    },
    db::entities::{audit_chain_head, audit_checkpoint, audit_event},
    domain::OrgId,
};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseBackend, DatabaseConnection, EntityTrait, QueryFilter,
    QueryOrder, Statement, TransactionTrait, sea_query::Expr,
};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use crate::helpers::{Clinic, TestApp, every_read};

const READ_PATIENT: &str = "query ReadRex($id: ID!) { patient(id: $id) { id } }";
const EXPORT: &str = "mutation($o: ID!, $fmt: AuditExportFormat!) {
  exportAuditEvents(orgId: $o, format: $fmt) { url expiresAt } }";
const UPDATE_MEMBER: &str = "mutation($o: ID!, $u: ID!, $i: UpdateOrganizationMemberInput!) {
  updateOrganizationMember(orgId: $o, userId: $u, input: $i) { auditor } }";

fn db(app: &TestApp) -> &DatabaseConnection {
    &app.state.services.db
}

fn key(app: &TestApp) -> SecretString {
    retention::checkpoint_key(&app.state.config)
}

async fn verify(app: &TestApp, chain: Option<&str>) -> Result<verify::Summary, verify::Break> {
    let key = key(app);
    verify::verify(db(app), key.expose_secret().as_bytes(), chain, |_, _| {})
        .await
        .expect("verify runs")
}

/// The vet reads the clinic's patient `times` times.
async fn read(app: &TestApp, c: &Clinic, times: usize) {
    for _ in 0..times {
        app.ok(
            &c.vet.token,
            READ_PATIENT,
            json!({"id": c.patient}),
            "patient",
        )
        .await;
    }
}

/// Waits for the queue, then seals everything sealable.
async fn written_and_sealed(app: &TestApp) {
    assert!(app.state.services.audit.written().await, "the queue drains");
    app.state.services.audit.seal().await.expect("sealing runs");
}

/// A chain's records, sealed ones in order first.
async fn chain_rows(app: &TestApp, chain: &str) -> Vec<audit_event::Model> {
    audit_event::Entity::find()
        .filter(audit_event::Column::Chain.eq(chain))
        .order_by_asc(audit_event::Column::ChainIndex)
        .all(db(app))
        .await
        .expect("rows")
}

/// The chain's newest record (by time, then id).
async fn newest(app: &TestApp, chain: &str) -> audit_event::Model {
    audit_event::Entity::find()
        .filter(audit_event::Column::Chain.eq(chain))
        .order_by_desc(audit_event::Column::At)
        .order_by_desc(audit_event::Column::Id)
        .one(db(app))
        .await
        .expect("query")
        .expect("a record")
}

async fn checkpoints(app: &TestApp, chain: &str) -> Vec<audit_checkpoint::Model> {
    audit_checkpoint::Entity::find()
        .filter(audit_checkpoint::Column::Chain.eq(chain))
        .order_by_asc(audit_checkpoint::Column::ThroughIndex)
        .all(db(app))
        .await
        .expect("checkpoints")
}

async fn export_link(app: &TestApp, token: &str, org: &str) -> String {
    let link = app
        .ok(
            token,
            EXPORT,
            json!({"o": org, "fmt": "CSV"}),
            "exportAuditEvents",
        )
        .await;
    link["url"].as_str().expect("url").to_owned()
}

async fn status_of(app: &TestApp, url: &str) -> u16 {
    let res = app.http.get(app.url(url)).send().await.expect("download");
    let status = res.status().as_u16();
    // The whole body, so the export's record is written before the test looks.
    res.bytes().await.expect("body");
    status
}

async fn exports_of(app: &TestApp, org: &str) -> Vec<audit_event::Model> {
    audit_event::Entity::find()
        .filter(audit_event::Column::OrgId.eq(org))
        .filter(audit_event::Column::Action.eq("EXPORT"))
        .all(db(app))
        .await
        .expect("export records")
}

async fn set_auditor(app: &TestApp, c: &Clinic, who: &str, auditor: bool) {
    let body: Value = app
        .gql(
            Some(&c.owner.token),
            UPDATE_MEMBER,
            json!({"o": c.org, "u": who, "i": {"auditor": auditor}}),
        )
        .await;
    assert!(body.get("errors").is_none(), "{body}");
}

#[tokio::test]
async fn an_export_link_used_on_one_replica_is_refused_on_the_other() {
    let app = TestApp::spawn().await;
    let c = app.clinic("hlink").await;
    let mut replica = app.replica().await;
    let first = export_link(&app, &c.owner.token, &c.org).await;
    assert_eq!(
        status_of(&replica, &first).await,
        200,
        "the replica serves it"
    );
    assert_eq!(status_of(&app, &first).await, 404, "used on the replica");
    assert_eq!(status_of(&replica, &first).await, 404, "and there too");
    let second = export_link(&replica, &c.owner.token, &c.org).await;
    assert_eq!(status_of(&app, &second).await, 200);
    assert_eq!(status_of(&replica, &second).await, 404);
    assert_eq!(
        exports_of(&app, &c.org).await.len(),
        2,
        "one EXPORT per download served"
    );
    replica.stop().await.expect("replica stops");
}

#[tokio::test]
async fn an_export_with_recording_off_leaves_no_record() {
    let app = TestApp::spawn_with(|v| {
        v.insert("CAREGRAPH_AUDIT".into(), "false".into());
    })
    .await;
    let c = app.clinic("hoff").await;
    let url = export_link(&app, &c.owner.token, &c.org).await;
    assert_eq!(status_of(&app, &url).await, 200);
    assert!(exports_of(&app, &c.org).await.is_empty());
    let all = audit_event::Entity::find()
        .all(db(&app))
        .await
        .expect("records");
    assert!(all.is_empty(), "{all:?}");
}

#[tokio::test]
async fn a_link_opened_by_an_ex_auditor_is_refused_and_recorded_as_a_denied_export() {
    let app = TestApp::spawn().await;
    let c = app.clinic("hexaud").await;
    set_auditor(&app, &c, &c.tech.id, true).await;
    let url = export_link(&app, &c.tech.token, &c.org).await;
    set_auditor(&app, &c, &c.tech.id, false).await;
    assert_eq!(status_of(&app, &url).await, 403);
    let exports = exports_of(&app, &c.org).await;
    assert_eq!(exports.len(), 1, "{exports:?}");
    let e = &exports[0];
    assert_eq!(e.outcome, "DENIED");
    assert_eq!(e.entity_type, "AUDIT_TRAIL");
    assert_eq!(e.entity_id.as_deref(), Some(c.org.as_str()));
    assert_eq!(e.actor_kind, "USER");
    assert_eq!(e.actor_id.as_deref(), Some(c.tech.id.as_str()));
    assert_eq!(e.client_address.as_deref(), Some("127.0.0.1"));
    // The link is used up: the refusal is not repeated as an export attempt.
    assert_eq!(status_of(&app, &url).await, 404);
    assert_eq!(exports_of(&app, &c.org).await.len(), 1);
}

#[tokio::test]
async fn a_deleted_chain_head_is_a_break_and_every_other_chain_is_still_sealed() {
    // Every read recorded: the repeated reads are here to make records.
    let app = TestApp::spawn_with(every_read).await;
    let a = app.clinic("hdela").await;
    let b = app.clinic("hdelb").await;
    read(&app, &a, 2).await;
    read(&app, &b, 2).await;
    written_and_sealed(&app).await;
    verify(&app, None).await.expect("intact to begin with");
    let last_a = chain_rows(&app, &a.org)
        .await
        .last()
        .and_then(|r| r.chain_index)
        .expect("sealed");
    audit_chain_head::Entity::delete_by_id(a.org.clone())
        .exec(db(&app))
        .await
        .expect("delete the head");
    let broken = verify(&app, None)
        .await
        .expect_err("a missing head is a break");
    assert_eq!(broken.chain, a.org);
    assert_eq!(broken.chain_index, last_a);
    assert!(broken.problem.contains("no head"), "{broken}");
    let alone = verify(&app, Some(&a.org))
        .await
        .expect_err("also when asked for that chain");
    assert_eq!(alone.chain, a.org);

    read(&app, &a, 1).await;
    read(&app, &b, 1).await;
    written_and_sealed(&app).await;
    assert!(
        chain_rows(&app, &b.org)
            .await
            .iter()
            .all(|r| r.chain_index.is_some()),
        "the other chain is sealed"
    );
    assert_eq!(
        newest(&app, &a.org).await.chain_index,
        None,
        "nothing is sealed onto a chain without its head"
    );
    verify(&app, Some(&b.org))
        .await
        .expect("the other chain verifies");
}

#[tokio::test]
async fn records_rewritten_with_their_head_fail_verification_and_nothing_is_sealed_onto_them() {
    // Every read recorded: the repeated reads are here to make records.
    let app = TestApp::spawn_with(every_read).await;
    let c = app.clinic("hrewrite").await;
    read(&app, &c, 3).await;
    written_and_sealed(&app).await;
    let rows = chain_rows(&app, &c.org).await;
    let from = rows.len() / 2;
    // Rewrite a record and re-chain everything after it with plain SHA-256, head included.
    let mut prev = rows[from].prev_hash.clone().expect("sealed");
    for (i, row) in rows[from..].iter().enumerate() {
        let mut row = row.clone();
        if i == 0 {
            row.entity_id = Some("someone-else".into());
        }
        let index = row.chain_index.expect("sealed");
        let h = chain::hash(&row, index, &prev);
        audit_event::Entity::update_many()
            .col_expr(audit_event::Column::EntityId, Expr::value(row.entity_id))
            .col_expr(audit_event::Column::PrevHash, Expr::value(prev.clone()))
            .col_expr(audit_event::Column::Hash, Expr::value(h.clone()))
            .filter(audit_event::Column::Id.eq(row.id.clone()))
            .exec(db(&app))
            .await
            .expect("rewrite");
        prev = h;
    }
    audit_chain_head::Entity::update_many()
        .col_expr(audit_chain_head::Column::LastHash, Expr::value(prev))
        .filter(audit_chain_head::Column::Chain.eq(c.org.as_str()))
        .exec(db(&app))
        .await
        .expect("rewrite the head");
    let broken = verify(&app, None).await.expect_err("the rewrite is found");
    assert_eq!(broken.chain, c.org);
    assert!(broken.problem.contains("signature"), "{broken}");

    read(&app, &c, 1).await;
    written_and_sealed(&app).await;
    assert_eq!(
        newest(&app, &c.org).await.chain_index,
        None,
        "nothing is sealed onto a head whose signature does not hold"
    );
}

#[tokio::test]
async fn retention_does_not_prune_a_prefix_that_does_not_verify_and_reports_it() {
    let app = TestApp::spawn().await;
    let a = app.clinic("hreta").await;
    let b = app.clinic("hretb").await;
    read(&app, &a, 3).await;
    read(&app, &b, 3).await;
    written_and_sealed(&app).await;
    let a_rows = chain_rows(&app, &a.org).await;
    let victim = &a_rows[1];
    audit_event::Entity::update_many()
        .col_expr(audit_event::Column::EntityId, Expr::value("someone-else"))
        .filter(audit_event::Column::Id.eq(victim.id.clone()))
        .exec(db(&app))
        .await
        .expect("tamper");
    let cutoff = chrono::Utc::now() + chrono::Duration::seconds(1);
    let deleted = retention::prune(db(&app), &key(&app), cutoff)
        .await
        .expect("the sweep runs");
    assert!(deleted > 0, "the clean chains are pruned");
    assert_eq!(
        chain_rows(&app, &a.org).await.len(),
        a_rows.len(),
        "nothing of the tampered chain goes"
    );
    assert!(
        checkpoints(&app, &a.org).await.is_empty(),
        "and nothing is signed"
    );
    assert!(
        chain_rows(&app, &b.org).await.is_empty(),
        "the clean chain is pruned"
    );
    assert_eq!(checkpoints(&app, &b.org).await.len(), 1);
    verify(&app, Some(&b.org))
        .await
        .expect("the pruned chain verifies");

    let report = retention::prune_report(db(&app), &key(&app), cutoff)
        .await
        .expect("the sweep runs");
    assert_eq!(report.deleted, 0);
    assert_eq!(report.refused.len(), 1, "{:?}", report.refused);
    let refused = &report.refused[0];
    assert_eq!(refused.chain, a.org);
    assert_eq!(Some(refused.chain_index), victim.chain_index);
    assert_eq!(refused.record_id.as_deref(), Some(victim.id.as_str()));
    assert!(refused.problem.contains("hash"), "{refused}");
}

#[tokio::test]
async fn two_replicas_sweeping_at_once_prune_each_batch_once_without_error() {
    // Every read recorded: the repeated reads are here to make records.
    let app = TestApp::spawn_with(every_read).await;
    let c = app.clinic("hsweep").await;
    read(&app, &c, 20).await;
    written_and_sealed(&app).await;
    let mut replica = app.replica().await;
    let rows = chain_rows(&app, &c.org).await;
    assert!(rows.len() >= 20, "{}", rows.len());
    let count = || async {
        audit_event::Entity::find()
            .all(db(&app))
            .await
            .expect("rows")
            .len() as u64
    };
    for round in 1..=4usize {
        let cutoff = rows[round * 4].at;
        let before = count().await;
        let (ka, kb) = (key(&app), key(&replica));
        let (x, y) = tokio::join!(
            retention::prune_report(db(&app), &ka, cutoff),
            retention::prune_report(db(&replica), &kb, cutoff),
        );
        let (x, y) = (x.expect("one sweep"), y.expect("the other sweep"));
        assert!(x.refused.is_empty() && y.refused.is_empty(), "{x:?} {y:?}");
        assert_eq!(
            x.deleted + y.deleted,
            before - count().await,
            "each record counted once"
        );
        let left = chain_rows(&app, &c.org).await;
        let first_kept = rows.iter().find(|r| r.at >= cutoff).expect("kept");
        assert_eq!(left[0].chain_index, first_kept.chain_index);
        assert_eq!(
            checkpoints(&app, &c.org).await.len(),
            round,
            "one checkpoint per round"
        );
    }
    verify(&app, None)
        .await
        .expect("the chains verify after the sweeps");
    replica.stop().await.expect("replica stops");
}

#[tokio::test]
async fn filtering_an_organisations_trail_by_action_uses_the_org_action_index() {
    let app = TestApp::spawn().await;
    let c = app.clinic("hindex").await;
    assert!(app.state.services.audit.written().await);
    // Many reads and a few joins in the organisation: a filter on JOIN is selective.
    let org = OrgId::parse(&c.org, "org").expect("org id");
    let rows: Vec<AuditRecord> = (0..3_000)
        .map(|i| {
            let action = if i % 600 == 0 {
                AuditAction::Join
            } else {
                AuditAction::Read
            };
            AuditRecord {
                id: uuid::Uuid::now_v7(),
                at: chrono::Utc::now() - chrono::Duration::seconds(i),
                actor: AuditActor::System,
                entry: AuditEntry::new(action, AuditEntity::Patient, &c.patient).org(org),
                request_id: None,
                client_address: None,
                operation_name: None,
            }
        })
        .collect();
    for chunk in rows.chunks(500) {
        audit_event::Entity::insert_many(chunk.iter().map(AuditRecord::to_row))
            .exec_without_returning(db(&app))
            .await
            .expect("insert");
    }
    let backend = db(&app).get_database_backend();
    let sql = format!(
        "SELECT id FROM audit_events WHERE org_id = '{}' AND action = 'JOIN' \
         ORDER BY at DESC, id DESC LIMIT 21",
        c.org
    );
    let txn = db(&app).begin().await.expect("txn");
    txn.execute_unprepared("ANALYZE audit_events")
        .await
        .expect("analyze");
    let plan: Vec<String> = match backend {
        DatabaseBackend::Postgres => txn
            .query_all_raw(Statement::from_string(backend, format!("EXPLAIN {sql}")))
            .await
            .expect("explain")
            .iter()
            .map(|r| r.try_get_by_index::<String>(0).expect("line"))
            .collect(),
        _ => txn
            .query_all_raw(Statement::from_string(
                backend,
                format!("EXPLAIN QUERY PLAN {sql}"),
            ))
            .await
            .expect("explain")
            .iter()
            .map(|r| r.try_get::<String>("", "detail").expect("detail"))
            .collect(),
    };
    txn.rollback().await.expect("rollback");
    let plan = plan.join("\n");
    assert!(plan.contains("idx_audit_events_org_action"), "{plan}");
    assert!(
        !plan.to_uppercase().contains("TEMP B-TREE"),
        "no sort: {plan}"
    );
    assert!(!plan.contains("Sort"), "no sort: {plan}");
}
