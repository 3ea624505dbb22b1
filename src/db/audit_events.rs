//! Reading the audit trail: an organisation's records by filter, newest first, by page (the
//! `auditEvents` connection) or by chunk (the streamed export), and a patient's access log.
//! Nothing here updates or deletes a record.

use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, Condition, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    sea_query::{Expr, ExprTrait, Query},
};

use super::{
    entities::{audit_event, membership},
    keyset::{self, Keyset},
};
use crate::{
    audit::{AuditAction, AuditOutcome},
    domain::{
        OrgId, PatientId, UserId,
        audit::{
            AccessLogEntry, ActorKind, AuditEvent, AuditFilter, action_from_db, entity_from_db,
            outcome_from_db,
        },
        pagination::{Page, PageRequest},
    },
    error::AppResult,
};

use audit_event::Column as C;

/// Newest first, the id breaking ties (the indexes end in `(at, id)`).
fn newest_first() -> Keyset<C> {
    Keyset::time(C::At, C::Id).descending()
}

/// The condition of `filter` within organisation `org_id`.
fn condition(org_id: OrgId, filter: &AuditFilter) -> Condition {
    let mut c = Condition::all().add(C::OrgId.eq(org_id.as_string()));
    if let Some(p) = filter.patient_id {
        c = c.add(C::PatientId.eq(p.as_string()));
    }
    if let Some(a) = &filter.actor_id {
        c = c.add(C::ActorId.eq(a.as_str()));
    }
    if let Some(e) = filter.entity {
        c = c.add(C::EntityType.eq(e.as_str()));
    }
    if let Some(a) = filter.action {
        c = c.add(C::Action.eq(a.as_str()));
    }
    if let Some(o) = filter.outcome {
        c = c.add(C::Outcome.eq(o.as_str()));
    }
    if let Some(from) = filter.from {
        c = c.add(C::At.gte(from));
    }
    if let Some(to) = filter.to {
        c = c.add(C::At.lt(to));
    }
    c
}

fn to_domain(m: audit_event::Model) -> AppResult<AuditEvent> {
    Ok(AuditEvent {
        actor_kind: ActorKind::from_db(&m.actor_kind)?,
        org_id: m.org_id.as_deref().map(OrgId::from_db).transpose()?,
        action: action_from_db(&m.action)?,
        entity: entity_from_db(&m.entity_type)?,
        outcome: outcome_from_db(&m.outcome)?,
        id: m.id,
        at: m.at,
        actor_id: m.actor_id,
        entity_id: m.entity_id,
        patient_id: m.patient_id,
        request_id: m.request_id,
        client_address: m.client_address,
        operation_name: m.operation_name,
    })
}

/// One page of an organisation's records matching `filter`, newest first.
pub async fn page(
    db: &impl super::Source,
    org_id: OrgId,
    filter: &AuditFilter,
    request: &PageRequest,
) -> AppResult<Page<AuditEvent>> {
    keyset::page::<audit_event::Entity, _>(
        db,
        condition(org_id, filter),
        newest_first(),
        request,
        to_domain,
    )
    .await
}

/// Where a chunked read stands: the last row's time and id.
pub type ChunkKey = (DateTime<Utc>, String);

/// Up to `limit` records matching `filter` that sort after `after`, newest first (the export
/// reads the trail chunk by chunk with this, never all at once).
pub async fn chunk(
    db: &impl super::Source,
    org_id: OrgId,
    filter: &AuditFilter,
    after: Option<&ChunkKey>,
    limit: u64,
) -> AppResult<Vec<AuditEvent>> {
    let mut query = audit_event::Entity::find().filter(condition(org_id, filter));
    if let Some((at, id)) = after {
        query = query.filter(
            Condition::any().add(C::At.lt(*at)).add(
                Condition::all()
                    .add(C::At.eq(*at))
                    .add(C::Id.lt(id.as_str())),
            ),
        );
    }
    query
        .order_by_desc(C::At)
        .order_by_desc(C::Id)
        .limit(limit)
        .all(db)
        .await?
        .into_iter()
        .map(to_domain)
        .collect()
}

/// A page of `patient_id`'s access log, newest first: allowed reads of the patient's data by
/// users who are (or were) members of the organisation the read was made in.
pub async fn access_log(
    db: &impl super::Source,
    patient_id: PatientId,
    request: &PageRequest,
) -> AppResult<Page<AccessLogEntry>> {
    let staff = Query::select()
        .expr(Expr::val(1))
        .from(membership::Entity)
        .and_where(
            Expr::col((membership::Entity, membership::Column::UserId))
                .equals((audit_event::Entity, C::ActorId)),
        )
        .and_where(
            Expr::col((membership::Entity, membership::Column::OrgId))
                .equals((audit_event::Entity, C::OrgId)),
        )
        .to_owned();
    let filter = Condition::all()
        .add(C::PatientId.eq(patient_id.as_string()))
        .add(C::Action.eq(AuditAction::Read.as_str()))
        .add(C::Outcome.eq(AuditOutcome::Allowed.as_str()))
        .add(C::ActorKind.eq(ActorKind::User.as_str()))
        .add(C::OrgId.is_not_null())
        .add(Expr::exists(staff));
    keyset::page::<audit_event::Entity, _>(db, filter, newest_first(), request, |m| {
        Ok(AccessLogEntry {
            org_id: OrgId::from_db(m.org_id.as_deref().unwrap_or_default())?,
            reader: UserId::from_db(m.actor_id.as_deref().unwrap_or_default())?,
            action: action_from_db(&m.action)?,
            id: m.id,
            at: m.at,
        })
    })
    .await
}
