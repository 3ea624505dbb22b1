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
        // Boxed: resolvers of row types await this, and async-graphql boxes every field of a
        // row with room for the largest of its resolvers (an `Appointment` field was 2.5 KB
        // with the read inline, for each of a page's 50 rows times its fields).
        let read = crate::services::access::memberships(&services(ctx).db, viewer);
        return Ok(Some(Box::pin(read).await?));
    }
    loader(ctx).load_one(MembershipsOf(me)).await
}
