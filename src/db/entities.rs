//! sea-orm entities: the tables as they are stored. No GraphQL derives; services turn these into
//! domain values.

pub mod appointment;
pub mod appointment_support_staff;
pub mod care_team;
pub mod care_team_member;
pub mod case;
pub mod case_participant;
pub mod chat_session;
pub mod chat_session_member;
pub mod compliance_group;
pub mod compliance_group_invitation;
pub mod compliance_group_member;
pub mod consent;
pub mod guardian;
pub mod local_chat_channel;
pub mod local_chat_member;
pub mod local_chat_message;
pub mod local_chat_user;
pub mod membership;
pub mod organization;
pub mod outbox;
pub mod patient;
pub mod user;
pub mod webhook_delivery;
