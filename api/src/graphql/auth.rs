//! `login` and `me`. The rules (one answer for every login failure, the caller's
//! hospital) live in [`hms_app::auth::session`]; here inputs are parsed and results
//! shaped.

use async_graphql::{Context, InputObject, Object, SimpleObject};
use chrono::{DateTime, Utc};
use hms_app::auth::session;
use uuid::Uuid;

use super::error::Result;
use super::types::{HospitalRef, Role};
use super::{principal, request, state};
use crate::graphql::MUTATION_FIELD_COST;
use crate::graphql::QUERY_FIELD_COST;

#[derive(InputObject)]
pub struct LoginInput {
    /// The hospital's code; leave out to sign in as a platform super administrator.
    pub hospital_code: Option<String>,
    pub username: String,
    pub password: String,
}

#[derive(SimpleObject)]
pub struct LoginPayload {
    /// Send as `Authorization: Bearer <token>`.
    pub token: String,
    pub expires_at: DateTime<Utc>,
    pub me: Me,
}

#[derive(SimpleObject, Clone)]
pub struct Me {
    pub id: Uuid,
    pub username: String,
    pub role: Role,
    /// The caller's hospital; null for a super administrator.
    pub hospital: Option<HospitalRef>,
}

impl From<session::Me> for Me {
    fn from(me: session::Me) -> Self {
        Self {
            id: me.id,
            username: me.username,
            role: me.role.into(),
            hospital: me.hospital.map(|h| HospitalRef {
                code: h.code,
                name: h.name,
            }),
        }
    }
}

impl From<session::SignedIn> for LoginPayload {
    fn from(s: session::SignedIn) -> Self {
        Self {
            token: s.token,
            expires_at: s.expires_at,
            me: s.me.into(),
        }
    }
}

#[derive(Default)]
pub struct AuthQuery;

#[Object]
impl AuthQuery {
    /// The signed-in user.
    #[graphql(complexity = "QUERY_FIELD_COST + child_complexity")]
    async fn me(&self, ctx: &Context<'_>) -> Result<Me> {
        let principal = principal(ctx)?;
        Ok(session::me(state(ctx), principal).await?.into())
    }
}

#[derive(Default)]
pub struct AuthMutation;

#[Object]
impl AuthMutation {
    /// Exchanges credentials for a short-lived access token. Every kind of failure
    /// answers the same way.
    #[graphql(complexity = "MUTATION_FIELD_COST + child_complexity")]
    async fn login(&self, ctx: &Context<'_>, input: LoginInput) -> Result<LoginPayload> {
        let credentials = session::Credentials {
            hospital_code: input.hospital_code,
            username: input.username,
            password: input.password,
        };
        let client_addr = request(ctx).info.client_addr.as_deref();
        Ok(session::login(state(ctx), credentials, client_addr)
            .await?
            .into())
    }
}
