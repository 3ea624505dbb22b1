//! Reading the viewer, the services and the per-request loaders from the resolver context.

use std::sync::Arc;

use async_graphql::Context;

use super::{
    batch::DataLoader,
    errors::GqlResult,
    loaders::{AppLoader, MembershipsOf},
};
use crate::{auth::Viewer, domain::Membership, services::Services};

/// The caller (anonymous when the request carried no token).
pub fn viewer<'a>(ctx: &Context<'a>) -> &'a Viewer {
    static ANONYMOUS: std::sync::LazyLock<Viewer> = std::sync::LazyLock::new(Viewer::default);
    ctx.data_opt::<Viewer>().unwrap_or(&ANONYMOUS)
}

/// The services.
pub fn services<'a>(ctx: &Context<'a>) -> &'a Arc<Services> {
    ctx.data_unchecked::<Arc<Services>>()
}

/// The per-request dataloader.
pub fn loader<'a>(ctx: &Context<'a>) -> &'a DataLoader<AppLoader> {
    ctx.data_unchecked::<DataLoader<AppLoader>>()
}

/// The signed-in viewer's memberships: read once per request in a query (the viewer remembers
/// them), else batched through the loader.
pub async fn my_memberships(ctx: &Context<'_>) -> GqlResult<Option<Vec<Membership>>> {
    let viewer = viewer(ctx);
    let me = viewer.user()?.id;
    if viewer.remembered_memberships().is_some() {
        let all = crate::services::access::memberships(&services(ctx).db, viewer).await?;
        return Ok(Some(all));
    }
    loader(ctx).load_one(MembershipsOf(me)).await
}
