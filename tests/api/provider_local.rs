//! Token revocation on the local provider: its tokens open nothing by themselves (local chat
//! is reached through caregraph's own API and session), so revoking succeeds without changing
//! any chat state, and the outbox delivers the operation like any other.

use caregraph::providers::chat::{ChatProvider, local::LocalChat};

use crate::helpers::{TestApp, TestDb};

#[tokio::test]
async fn revoking_tokens_on_the_local_provider_succeeds_and_is_not_a_capability() {
    let db = TestDb::new().await;
    let conn = sea_orm::Database::connect(&db.url).await.expect("connect");
    caregraph::db::migrate(&conn).await.expect("migrate");
    let chat = LocalChat::new(
        caregraph::db::Db::pooled(conn),
        secrecy::SecretString::from("local-chat-test-key"),
    );
    assert!(!chat.capabilities().revokes_tokens);
    assert!(chat.capabilities().message_history, "the rest stays");
    chat.revoke_tokens("u-1", chrono::Utc::now())
        .await
        .expect("nothing to revoke");
}

#[tokio::test]
async fn a_token_revocation_written_to_the_outbox_is_delivered_by_the_local_provider() {
    let app = TestApp::spawn().await;
    assert_eq!(app.state.services.outbox.provider().name(), "local");
    assert!(
        crate::fakes::deliver_through_outbox(
            &app,
            &[caregraph::outbox::revoke_tokens_entry(
                "staff-1",
                None,
                chrono::Utc::now()
            )]
        )
        .await,
        "delivered"
    );
    let counts = app.state.services.outbox.counts().await.expect("counts");
    assert_eq!((counts.pending, counts.dead), (0, 0));
}
