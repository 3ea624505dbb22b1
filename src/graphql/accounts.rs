//! GraphQL for built-in accounts: `login`.

use async_graphql::{Context, Object, SimpleObject};
use chrono::{DateTime, Utc};

use super::{
    context::{services, viewer},
    errors::GqlResult,
    organizations::User,
};

/// A signed access token.
#[derive(SimpleObject)]
pub struct AuthPayload {
    /// The bearer token (a JWT).
    pub access_token: String,
    /// When it expires.
    pub expires_at: DateTime<Utc>,
    /// Whose it is.
    pub user: User,
}

/// Account mutations.
#[derive(Default)]
pub struct AccountMutation;

#[Object]
impl AccountMutation {
    /// Signs in a built-in account. Rate limited per email and per client address.
    async fn login(
        &self,
        ctx: &Context<'_>,
        email: String,
        #[graphql(secret)] password: String,
    ) -> GqlResult<AuthPayload> {
        let token = services(ctx)
            .accounts
            .login(&email, password, viewer(ctx).client_ip, &viewer(ctx).audit)
            .await?;
        Ok(AuthPayload {
            access_token: token.token,
            expires_at: token.expires_at,
            user: User(token.user),
        })
    }
}
