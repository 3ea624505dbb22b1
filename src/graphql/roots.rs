//! The query, mutation and subscription roots, merged from the feature modules.

use async_graphql::MergedObject;

use super::{
    accounts::AccountMutation,
    organizations::{OrganizationMutation, OrganizationQuery},
};

pub use super::subscriptions::Subscription;

/// Every query.
#[derive(MergedObject, Default)]
pub struct Query(OrganizationQuery);

/// Every mutation.
#[derive(MergedObject, Default)]
pub struct Mutation(AccountMutation, OrganizationMutation);
