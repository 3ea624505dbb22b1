//! sea-orm entities: the tables as they are stored. No GraphQL derives; services turn these into
//! domain values.

pub mod appointment;
pub mod appointment_support_staff;
pub mod care_team;
pub mod care_team_member;
pub mod case;
pub mod case_participant;
pub mod compliance_group;
pub mod compliance_group_member;
pub mod consent;
pub mod guardian;
pub mod membership;
pub mod organization;
pub mod patient;
pub mod user;
