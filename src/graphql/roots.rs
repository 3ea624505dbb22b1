//! The query, mutation and subscription roots, merged from the feature modules.

use async_graphql::MergedObject;

use super::{
    accounts::AccountMutation,
    appointments::{AppointmentMutation, AppointmentQuery},
    audit::{AuditMutation, AuditQuery},
    booking::{BookingMutation, BookingQuery},
    cases::{CaseMutation, CaseQuery},
    chat::{ChatMutation, ChatQuery},
    invitations::{InvitationMutation, InvitationQuery},
    organizations::{OrganizationMutation, OrganizationQuery},
    patients::{PatientMutation, PatientQuery},
    provider_ops::{ProviderOpsMutation, ProviderOpsQuery},
    sms::SmsMutation,
};

pub use super::subscriptions::Subscription;

/// Every query.
#[derive(MergedObject, Default)]
pub struct Query(
    OrganizationQuery,
    PatientQuery,
    CaseQuery,
    AppointmentQuery,
    BookingQuery,
    ProviderOpsQuery,
    ChatQuery,
    AuditQuery,
    InvitationQuery,
);

/// Every mutation.
#[derive(MergedObject, Default)]
pub struct Mutation(
    AccountMutation,
    OrganizationMutation,
    PatientMutation,
    CaseMutation,
    AppointmentMutation,
    BookingMutation,
    ProviderOpsMutation,
    ChatMutation,
    SmsMutation,
    AuditMutation,
    InvitationMutation,
);
