//! The admin's join-token calls: create, list (with each token's state), revoke.

use std::net::IpAddr;

use wgmesh_client::api::{
    TokenBody, TokenInfo, TokenReply, TokenRevokedReply, TokenState, DEFAULT_TOKEN_TTL_SECS,
    MAX_TOKEN_TTL_SECS,
};
use wgmesh_config::token::JoinToken;

use super::caller::{require_admin, Caller};
use super::refusal::{check_labels, registry_error, ApiError};
use super::Control;
use crate::audit::{Action, Target};
use crate::ids::TokenId;
use crate::registry::{Mutation, Token, TokenRefused};

impl Control {
    /// `POST /v1/tokens`.
    pub fn create_token(
        &mut self,
        caller: &Caller,
        body: TokenBody,
        now: u64,
        from: Option<IpAddr>,
    ) -> Result<TokenReply, ApiError> {
        let result = self.try_create_token(caller, body, now);
        let target = result.as_ref().ok().map(|reply| Target::Token {
            id: TokenId(reply.id),
        });
        self.audited(caller, Action::TokenCreate, target, result, now, from)
    }

    fn try_create_token(
        &mut self,
        caller: &Caller,
        body: TokenBody,
        now: u64,
    ) -> Result<TokenReply, ApiError> {
        require_admin(caller)?;
        let ttl = body.ttl_secs.unwrap_or(DEFAULT_TOKEN_TTL_SECS);
        if ttl == 0 || ttl > MAX_TOKEN_TTL_SECS {
            return Err(ApiError::bad_request(format!(
                "ttl_secs: {ttl} is out of range; use 1 to {MAX_TOKEN_TTL_SECS} (a year)"
            )));
        }
        check_labels(&body.labels)?;
        let token = JoinToken::generate(&self.ca_der);
        let m = self
            .registry
            .plan_token(token.secret_hash(), now, ttl, body.reusable, body.labels);
        let Mutation::TokenCreated { id, expires_at, .. } = &m else {
            unreachable!("plan_token plans a token");
        };
        let (id, expires_at) = (id.0, *expires_at);
        self.commit(&m)?;
        tracing::info!(
            id,
            expires_at,
            reusable = body.reusable,
            "join token created"
        );
        Ok(TokenReply {
            token: token.expose(),
            id,
            expires_at,
        })
    }

    /// `GET /v1/tokens`: every join token, oldest first.
    pub fn list_tokens(
        &mut self,
        caller: &Caller,
        now: u64,
        from: Option<IpAddr>,
    ) -> Result<Vec<TokenInfo>, ApiError> {
        self.admin_only(caller, Action::TokenList, now, from)?;
        Ok(self
            .registry
            .tokens()
            .values()
            .map(|t| TokenInfo {
                id: t.id.0,
                created_at: t.created_at,
                expires_at: t.expires_at,
                reusable: t.reusable,
                labels: t.labels.clone(),
                joins: t.used_by.len(),
                state: token_state(t, now),
            })
            .collect())
    }

    /// `DELETE /v1/tokens/{id}`: no host can join with the token afterwards (hosts that joined
    /// with it stay).
    pub fn revoke_token(
        &mut self,
        caller: &Caller,
        id: &str,
        now: u64,
        from: Option<IpAddr>,
    ) -> Result<TokenRevokedReply, ApiError> {
        let parsed = id.parse::<u64>().ok().map(TokenId);
        let result = self.try_revoke_token(caller, id, parsed);
        let target = parsed.map(|id| Target::Token { id });
        self.audited(caller, Action::TokenRevoke, target, result, now, from)
    }

    fn try_revoke_token(
        &mut self,
        caller: &Caller,
        text: &str,
        id: Option<TokenId>,
    ) -> Result<TokenRevokedReply, ApiError> {
        require_admin(caller)?;
        let id = id.ok_or_else(|| {
            ApiError::bad_request(format!(
                "{text:?} is not a token id (a number, as `token list` shows)"
            ))
        })?;
        let m = self
            .registry
            .plan_revoke_token(id)
            .map_err(registry_error)?;
        // Revoking twice changes nothing and writes nothing.
        if !self.registry.tokens()[&id].revoked {
            self.commit(&m)?;
        }
        tracing::info!(id = id.0, "join token revoked");
        Ok(TokenRevokedReply { revoked: id.0 })
    }
}

/// `token`'s state at `now` for `token list`: what [`Token::check_usable`] says of a join with
/// it, so the list and the joins cannot disagree.
fn token_state(token: &Token, now: u64) -> TokenState {
    match token.check_usable(Some(now)) {
        Ok(()) => TokenState::Valid,
        Err(TokenRefused::Revoked { .. }) => TokenState::Revoked,
        Err(TokenRefused::Used { .. }) => TokenState::Used,
        // `Unknown` is the refusal of a secret no token has, never of a token at hand.
        Err(TokenRefused::Expired { .. } | TokenRefused::Unknown) => TokenState::Expired,
    }
}
