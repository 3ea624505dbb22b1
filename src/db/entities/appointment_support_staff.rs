//! The `appointment_support_staff` table.

use sea_orm::entity::prelude::*;

model! {
    /// A support staff member of an appointment.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "appointment_support_staff")]
    pub struct Model {
        /// The `appointment_id` column.
        #[sea_orm(primary_key, auto_increment = false)]
        pub appointment_id: String,
        /// The `user_id` column.
        #[sea_orm(primary_key, auto_increment = false)]
        pub user_id: String,
    }
}

/// No relations are navigated through the ORM; repositories join explicitly.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
