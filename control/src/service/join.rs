//! `POST /v1/join`: a host joins with a join token, or retries a join that succeeded with the
//! credential it chose.

use std::net::IpAddr;
use std::str::FromStr;

use wgmesh_client::api::{ApiReason, JoinBody, JoinReply};
use wgmesh_config::token::{HostCredential, JoinToken};
use wgmesh_config::HostName;

use super::endpoint::check_endpoint;
use super::refusal::{check_labels, outcome_of, registry_error, ApiError};
use super::Control;
use crate::audit::{Action, Actor, AuditEvent, Outcome, Target};
use crate::registry::{JoinRequest, Mutation};

impl Control {
    /// `POST /v1/join`.
    pub fn join(
        &mut self,
        body: JoinBody,
        now: u64,
        from: Option<IpAddr>,
    ) -> Result<JoinReply, ApiError> {
        let name = HostName::from_str(&body.name).ok();
        let target = name.clone().map(|name| Target::Host { id: None, name });
        let mut event = AuditEvent {
            time: now,
            actor: Actor::Joiner { token: None },
            from,
            action: Action::Join,
            target,
            result: Outcome::Ok,
        };
        let result = self.try_join(body, now, &mut event);
        event.result = outcome_of(&result);
        self.record(&event);
        result
    }

    fn try_join(
        &mut self,
        body: JoinBody,
        now: u64,
        event: &mut AuditEvent,
    ) -> Result<JoinReply, ApiError> {
        let token = self.join_token(&body.token)?;
        let token_hash = token.secret_hash();
        if let Ok(t) = self.registry.check_token(&token_hash, now) {
            event.actor = Actor::Joiner { token: Some(t.id) };
        }
        let (request, credential) = join_request(body, self.cluster_cidr())?;
        let id = match self.registry.joined_as(&request, &credential.hash()) {
            Some(id) => {
                tracing::info!(name = %request.name, "join retried by the host that made it");
                id
            }
            None => {
                let m = self
                    .registry
                    .plan_join(request, &token_hash, credential.hash(), now)
                    .map_err(registry_error)?;
                let Mutation::HostJoined { id, .. } = &m else {
                    unreachable!("plan_join plans a join");
                };
                let id = *id;
                self.commit(&m)?;
                let host = self.registry.host(id).expect("just joined");
                tracing::info!(name = %host.name, subnet = %host.subnet, key = %host.public_key.short(), "host joined");
                id
            }
        };
        self.registry.touch(id, now);
        let host = self.registry.host(id).expect("joined");
        event.target = Some(Target::Host {
            id: Some(id),
            name: host.name.clone(),
        });
        let netmap = self.netmap_of(id);
        Ok(JoinReply {
            credential: credential.expose(),
            netmap,
        })
    }

    /// The join token `text`, if it is one and is for this control plane's CA.
    fn join_token(&self, text: &str) -> Result<JoinToken, ApiError> {
        let token =
            JoinToken::from_str(text).map_err(|e| ApiError::bad_request(format!("token: {e}")))?;
        if !token.ca_digest.matches(&self.ca_der) {
            return Err(ApiError::new(
                ApiReason::TokenWrongCa,
                format!(
                    "the join token is for the CA with digest {}, not this control plane's",
                    token.ca_digest
                ),
            ));
        }
        Ok(token)
    }
}

/// The rest of a join's body, checked: the request and the credential (the host's own, or a
/// new one).
fn join_request(
    body: JoinBody,
    cluster: Option<ipnet::IpNet>,
) -> Result<(JoinRequest, HostCredential), ApiError> {
    let name = HostName::from_str(&body.name).map_err(|e| {
        ApiError::bad_request(format!("name: {:?} is not a host name: {e}", body.name))
    })?;
    // Parsing the body refuses a low-order key already; a body built in-process is checked too.
    if body.public_key.is_low_order() {
        return Err(ApiError::bad_request(format!(
            "public_key: {} {}",
            body.public_key,
            wgmesh_config::KeyError::LowOrder
        )));
    }
    check_labels(&body.labels)?;
    check_endpoint(body.endpoint, cluster)?;
    let credential = match &body.credential {
        Some(text) => HostCredential::from_str(text)
            .map_err(|e| ApiError::bad_request(format!("credential: {e}")))?,
        None => HostCredential::generate(),
    };
    let request = JoinRequest {
        name,
        public_key: body.public_key,
        endpoint: body.endpoint,
        labels: body.labels,
    };
    Ok((request, credential))
}
