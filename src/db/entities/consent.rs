//! The `consents` table.

use sea_orm::entity::prelude::*;

/// A consent record.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "consents")]
pub struct Model {
    /// The `id` column.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// The `patient_id` column.
    pub patient_id: String,
    /// The `scope` column.
    pub scope: String,
    /// The `granted_to_org_id` column.
    pub granted_to_org_id: Option<String>,
    /// The `compliance_group_id` column.
    pub compliance_group_id: Option<String>,
    /// The `granted_at` column.
    pub granted_at: DateTimeUtc,
    /// The `expires_at` column.
    pub expires_at: Option<DateTimeUtc>,
    /// The `revoked_at` column.
    pub revoked_at: Option<DateTimeUtc>,
    /// The `recorded_by` column.
    pub recorded_by: String,
    /// The `lapse_applied_at` column.
    pub lapse_applied_at: Option<DateTimeUtc>,
}

/// No relations are navigated through the ORM; repositories join explicitly.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
