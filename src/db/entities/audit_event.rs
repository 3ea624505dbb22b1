//! The `audit_events` table: one read or change of patient-linked data, ids and codes only.

use sea_orm::entity::prelude::*;

model! {
    /// One audit record. Rows are only ever inserted, sealed (the chain columns filled once) and,
    /// past retention, pruned behind a checkpoint.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "audit_events")]
    pub struct Model {
        /// A UUIDv7 (time-ordered).
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        /// When it happened.
        pub at: DateTimeUtc,
        /// The hash chain the record belongs to: the organisation's id, or `system` for records
        /// without an organisation (sign-ins).
        pub chain: String,
        /// The organisation, if any.
        pub org_id: Option<String>,
        /// `USER`, `ANONYMOUS`, `SYSTEM`, `SCHEDULER` or `WEBHOOK`.
        pub actor_kind: String,
        /// The user id, or the webhook's provider; none for the system and anonymous callers.
        pub actor_id: Option<String>,
        /// `READ`, `CREATE`, `UPDATE`, `DELETE`, `JOIN`, `EXPORT`, `LOGIN`, `LOGIN_FAILED`, ...
        pub action: String,
        /// `PATIENT`, `APPOINTMENT`, `CHAT_SESSION`, ...
        pub entity_type: String,
        /// The entity's id.
        pub entity_id: Option<String>,
        /// The patient the entity belongs to, if any.
        pub patient_id: Option<String>,
        /// `ALLOWED` or `DENIED`.
        pub outcome: String,
        /// The request's id (`x-request-id`).
        pub request_id: Option<String>,
        /// The client's network address.
        pub client_address: Option<String>,
        /// The GraphQL operation's name, if it had a valid one.
        pub operation_name: Option<String>,
        /// The record's position in its chain, from 1; null until sealed.
        pub chain_index: Option<i64>,
        /// The hash of the previous record of the chain (hex), or of the checkpoint before it.
        pub prev_hash: Option<String>,
        /// SHA-256 (hex) over the canonical record and `prev_hash`; null until sealed.
        pub hash: Option<String>,
    }
}

/// No relations are navigated through the ORM; repositories join explicitly.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
