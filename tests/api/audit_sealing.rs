//! Sealing on the way in: the writer stores a request's records already placed in their
//! organisation's chain (no second write by the sealer), after whatever the sealer placed, and
//! the chain verifies whichever of the two placed each record.

use caregraph::{
    audit::{AuditActor, AuditEntity, AuditEntry, AuditRecord, chain, retention, verify},
    db::entities::audit_event,
    domain::{OrgId, UserId},
};
use chrono::{SubsecRound, Utc};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder};
use secrecy::ExposeSecret;

use crate::helpers::TestApp;

/// A READ record of `patient` by `actor` in `org`, unsealed.
fn read(org: OrgId, actor: UserId, patient: &str) -> audit_event::Model {
    AuditRecord {
        id: uuid::Uuid::now_v7(),
        at: Utc::now().trunc_subsecs(6),
        actor: AuditActor::User(actor),
        entry: AuditEntry::read(AuditEntity::Patient, patient).org(org),
        request_id: Some("req-sealing".into()),
        client_address: None,
        operation_name: Some("PatientPage".into()),
    }
    .to_model()
}

async fn chain_rows(app: &TestApp, chain: &str) -> Vec<audit_event::Model> {
    audit_event::Entity::find()
        .filter(audit_event::Column::Chain.eq(chain))
        .order_by_asc(audit_event::Column::ChainIndex)
        .all(&app.state.services.db)
        .await
        .expect("rows")
}

#[tokio::test]
async fn records_appended_by_the_writer_are_stored_sealed_after_what_the_sealer_placed_and_the_chain_verifies()
 {
    let app = TestApp::spawn().await;
    let c = app.clinic("aappend").await;
    let db = &app.state.services.db;
    let key = retention::checkpoint_key(&app.state.config);
    // The clinic's set-up changes were written unsealed in their transactions: seal them.
    assert!(app.state.services.audit.written().await);
    app.state.services.audit.seal().await.expect("seal");
    let before = chain_rows(&app, &c.org).await;
    let head = before.last().expect("the set-up left records");
    let org = OrgId::parse(&c.org, "org").expect("org");
    let vet = UserId::parse(&c.vet.id, "vet").expect("vet");
    let mut rows: Vec<_> = (0..3).map(|_| read(org, vet, &c.patient)).collect();

    assert!(
        chain::append(db, key.expose_secret().as_bytes(), &c.org, &mut rows)
            .await
            .expect("append")
    );

    let after = chain_rows(&app, &c.org).await;
    assert_eq!(after.len(), before.len() + 3);
    let stored = &after[before.len()..];
    assert_eq!(stored, rows.as_slice(), "stored as appended, sealed");
    assert_eq!(stored[0].chain_index, head.chain_index.map(|i| i + 1));
    assert_eq!(stored[0].prev_hash, head.hash);
    for pair in stored.windows(2) {
        assert_eq!(pair[1].chain_index, pair[0].chain_index.map(|i| i + 1));
        assert_eq!(pair[1].prev_hash, pair[0].hash);
        assert!(pair[1].hash.is_some());
    }
    // Nothing was left for the sealer.
    assert_eq!(app.state.services.audit.seal().await.expect("seal"), 0);

    // A change written unsealed after them is placed behind them by the sealer.
    let scope = app
        .state
        .services
        .audit
        .scope(AuditActor::User(vet), None, None);
    scope
        .record_in(
            db,
            AuditEntry::new(
                caregraph::audit::AuditAction::Update,
                AuditEntity::Patient,
                &c.patient,
            )
            .org(org),
        )
        .await
        .expect("record");
    assert_eq!(app.state.services.audit.seal().await.expect("seal"), 1);
    let last = chain_rows(&app, &c.org).await.pop().expect("rows");
    assert_eq!(last.action, "UPDATE");
    assert_eq!(last.prev_hash, stored[2].hash);

    let summary = verify::verify(db, key.expose_secret().as_bytes(), Some(&c.org), |_, _| {})
        .await
        .expect("verify runs")
        .expect("the chain holds");
    assert_eq!(summary.records, after.len() as u64 + 1);
}

#[tokio::test]
async fn an_append_a_database_refuses_stores_nothing_and_leaves_the_head_where_it_was() {
    let app = TestApp::spawn().await;
    let c = app.clinic("arefuse").await;
    let db = &app.state.services.db;
    let key = retention::checkpoint_key(&app.state.config);
    assert!(app.state.services.audit.written().await);
    app.state.services.audit.seal().await.expect("seal");
    let before = chain_rows(&app, &c.org).await;
    let org = OrgId::parse(&c.org, "org").expect("org");
    let vet = UserId::parse(&c.vet.id, "vet").expect("vet");
    let stored = read(org, vet, &c.patient);
    let mut first = vec![stored.clone()];
    assert!(
        chain::append(db, key.expose_secret().as_bytes(), &c.org, &mut first)
            .await
            .expect("append")
    );
    // The same id again (a batch whose commit answer was lost): the insert fails as a whole.
    let mut again = vec![read(org, vet, &c.patient), stored];
    assert!(
        chain::append(db, key.expose_secret().as_bytes(), &c.org, &mut again)
            .await
            .is_err()
    );

    let after = chain_rows(&app, &c.org).await;
    assert_eq!(
        after.len(),
        before.len() + 1,
        "nothing of the refused batch"
    );
    verify::verify(db, key.expose_secret().as_bytes(), Some(&c.org), |_, _| {})
        .await
        .expect("verify runs")
        .expect("the chain holds: the head did not move");
}

#[tokio::test]
async fn an_append_of_a_batch_that_is_no_power_of_two_stores_every_record_exactly_as_given() {
    let app = TestApp::spawn().await;
    let c = app.clinic("achunks").await;
    let db = &app.state.services.db;
    let key = retention::checkpoint_key(&app.state.config);
    assert!(app.state.services.audit.written().await);
    app.state.services.audit.seal().await.expect("seal");
    let before = chain_rows(&app, &c.org).await;
    let org = OrgId::parse(&c.org, "org").expect("org");
    let vet = UserId::parse(&c.vet.id, "vet").expect("vet");
    // 45 = 32 + 8 + 4 + 1 rows: every statement size the writer uses, with and without the
    // optional columns.
    let mut rows: Vec<_> = (0..45)
        .map(|i| {
            let mut row = read(org, vet, &c.patient);
            if i % 3 == 0 {
                row.request_id = None;
                row.operation_name = None;
                row.patient_id = Some(c.patient.clone());
            }
            row
        })
        .collect();

    assert!(
        chain::append(db, key.expose_secret().as_bytes(), &c.org, &mut rows)
            .await
            .expect("append")
    );

    let after = chain_rows(&app, &c.org).await;
    assert_eq!(&after[before.len()..], rows.as_slice());
    let summary = verify::verify(db, key.expose_secret().as_bytes(), Some(&c.org), |_, _| {})
        .await
        .expect("verify runs")
        .expect("the chain holds");
    assert_eq!(summary.records, after.len() as u64);
}
