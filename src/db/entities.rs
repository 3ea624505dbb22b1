//! sea-orm entities: the tables as they are stored. No GraphQL derives; services turn these into
//! domain values.

/// Defines an entity's `Model` (with sea-orm's derive) and its reader by column position
/// ([`super::columns::FromColumns`]): its fields in their order, which is the order of the
/// entity's `Column` enum and so of the columns sea-orm selects.
macro_rules! model {
    (
        $(#[$attr:meta])*
        pub struct Model {
            $( $(#[$field_attr:meta])* pub $field:ident : $ty:ty ),* $(,)?
        }
    ) => {
        $(#[$attr])*
        pub struct Model {
            $( $(#[$field_attr])* pub $field: $ty ),*
        }

        impl $crate::db::columns::FromColumns for Model {
            fn from_columns(
                columns: &mut $crate::db::columns::Columns<'_>,
            ) -> Result<Self, sea_orm::DbErr> {
                // Struct fields are evaluated in the order written: the columns' order.
                Ok(Self { $( $field: columns.next()? ),* })
            }
        }
    };
}

pub mod appointment;
pub mod appointment_support_staff;
pub mod audit_chain_head;
pub mod audit_checkpoint;
pub mod audit_event;
pub mod audit_export_link;
pub mod booking_lock;
pub mod care_team;
pub mod care_team_member;
pub mod case;
pub mod case_participant;
pub mod chat_external_member;
pub mod chat_session;
pub mod chat_session_member;
pub mod compliance_group;
pub mod compliance_group_invitation;
pub mod compliance_group_member;
pub mod consent;
pub mod guardian;
pub mod invitation;
pub mod local_chat_channel;
pub mod local_chat_member;
pub mod local_chat_message;
pub mod local_chat_user;
pub mod local_sms_message;
pub mod membership;
pub mod organization;
pub mod outbound_mail;
pub mod outbox;
pub mod patient;
pub mod practitioner_availability;
pub mod user;
pub mod webhook_delivery;
