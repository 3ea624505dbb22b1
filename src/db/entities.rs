//! sea-orm entities: the tables as they are stored. No GraphQL derives; services turn these into
//! domain values.

pub mod membership;
pub mod organization;
pub mod user;
