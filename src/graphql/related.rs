//! Loading the objects a field points at (a user, an organisation, a patient) through the
//! per-request loaders, so that feature modules share one way to follow a reference.

use async_graphql::Context;

use super::{
    context::loader,
    errors::GqlResult,
    organizations::{Organization, User},
    patients::Patient,
};
use crate::{
    domain::{OrgId, PatientId, UserId},
    error::AppError,
};

/// The user an object points at, through the per-request loader.
pub async fn user_of(ctx: &Context<'_>, id: UserId) -> GqlResult<User> {
    loader(ctx)
        .load_one(id)
        .await?
        .map(User)
        .ok_or_else(|| AppError::NotFound("user").into())
}

/// The organisation an object points at, through the per-request loader.
pub async fn org_of(ctx: &Context<'_>, id: OrgId) -> GqlResult<Organization> {
    loader(ctx)
        .load_one(id)
        .await?
        .map(Organization)
        .ok_or_else(|| AppError::NotFound("organization").into())
}

/// The patient an object points at, through the per-request loader.
pub async fn patient_of(ctx: &Context<'_>, id: PatientId) -> GqlResult<Patient> {
    loader(ctx)
        .load_one(id)
        .await?
        .map(Patient)
        .ok_or_else(|| AppError::NotFound("patient").into())
}
