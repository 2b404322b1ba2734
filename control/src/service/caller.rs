//! Who is calling ([`Caller`], once their bearer token is checked) and what they may do: the
//! admin calls, a host's own records, and how a caller and a host are named in the audit log.

use std::str::FromStr;

use wgmesh_client::api::ApiReason;
use wgmesh_config::HostName;

use super::refusal::{unauthenticated, ApiError};
use crate::audit::{Actor, Target};
use crate::ids::HostId;
use crate::registry::Registry;

/// Who is calling, once their bearer token is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// The holder of the admin token.
    Admin,
    /// A joined host.
    Host(HostId),
    /// No bearer token, or one nobody holds.
    Anonymous,
}

/// Refuses every caller but the admin.
pub(super) fn require_admin(caller: &Caller) -> Result<(), ApiError> {
    match caller {
        Caller::Admin => Ok(()),
        Caller::Anonymous => Err(unauthenticated()),
        Caller::Host(_) => Err(ApiError::new(
            ApiReason::Forbidden,
            "this call needs the admin token; a host credential cannot make it",
        )),
    }
}

/// The host `caller` is, if it is the host called `name`: a host reads and changes only its
/// own records, and the admin none.
pub(super) fn authorize_host(
    registry: &Registry,
    caller: &Caller,
    name: &str,
) -> Result<HostId, ApiError> {
    match caller {
        Caller::Anonymous => Err(unauthenticated()),
        Caller::Admin => Err(ApiError::new(
            ApiReason::Forbidden,
            "the admin token cannot act as a host; use the host's own credential",
        )),
        Caller::Host(id) => {
            let host = registry.host(*id).ok_or_else(unauthenticated)?;
            if host.name.as_str() == name {
                Ok(*id)
            } else {
                Err(ApiError::new(
                    ApiReason::Forbidden,
                    format!(
                        "host {} may only read and change its own records, not {name:?}'s",
                        host.name
                    ),
                ))
            }
        }
    }
}

/// `caller` as the audit log names it.
pub(super) fn actor_of(caller: &Caller, registry: &Registry) -> Actor {
    match caller {
        Caller::Admin => Actor::Admin,
        Caller::Host(id) => match registry.host(*id) {
            Some(h) => Actor::Host {
                id: *id,
                name: h.name.clone(),
            },
            None => Actor::Anonymous,
        },
        Caller::Anonymous => Actor::Anonymous,
    }
}

/// The host called `name` as the audit log names it (with its id while it has one); `None`
/// when `name` is not a host name.
pub(super) fn host_target(name: &str, registry: &Registry) -> Option<Target> {
    let name = HostName::from_str(name).ok()?;
    let id = registry.host_by_name(name.as_str()).map(|h| h.id);
    Some(Target::Host { id, name })
}
