//! Reading the viewer, the services and the per-request loaders from the resolver context.

use async_graphql::{Context, dataloader::DataLoader};

use super::loaders::AppLoader;
use crate::{auth::Viewer, services::Services};

/// The caller (anonymous when the request carried no token).
pub fn viewer<'a>(ctx: &Context<'a>) -> &'a Viewer {
    static ANONYMOUS: std::sync::LazyLock<Viewer> = std::sync::LazyLock::new(Viewer::default);
    ctx.data_opt::<Viewer>().unwrap_or(&ANONYMOUS)
}

/// The services.
pub fn services<'a>(ctx: &Context<'a>) -> &'a Services {
    ctx.data_unchecked::<Services>()
}

/// The per-request dataloader.
pub fn loader<'a>(ctx: &Context<'a>) -> &'a DataLoader<AppLoader> {
    ctx.data_unchecked::<DataLoader<AppLoader>>()
}
