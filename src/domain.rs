//! Domain types: identifiers, roles and values with their rules. Nothing here does I/O.

pub mod ids;
pub mod people;

pub use ids::{OrgId, UserId};
pub use people::{Email, Membership, OrgRole, Organization, Slug, User};
