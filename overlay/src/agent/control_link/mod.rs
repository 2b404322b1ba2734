//! The agent's link to a control plane: join once with the token, keep the credential, then
//! long-poll netmaps and report the endpoint, riding out outages (fail-static).
//!
//! - [`establish`] gets the first netmap: with the credential of an earlier join
//!   (`state_dir/control.json`, 0600) or by joining with the token. When the control plane is
//!   unreachable it starts from the cached netmap if there is one, and otherwise retries until
//!   the control plane answers. Permanent refusals (wrong CA, token refused, name taken) end it
//!   with the control plane's reason.
//! - [`follow()`] runs for the agent's life: it long-polls and hands each new netmap to the agent,
//!   reports endpoint changes, and backs off (0.5 s doubling to 10 s) while the control plane
//!   is down.
//!
//! Here: [`establish`], [`LinkError`] and the check that a netmap is addressed to this host;
//! `follow`: [`follow()`]; `credential`: the credential and token files; `backoff`: the waits.

mod backoff;
mod credential;
mod follow;

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use wgmesh_client::api::{ApiReason, JoinBody};
use wgmesh_client::client::{Client, ClientError};
use wgmesh_config::netmap::Netmap;
use wgmesh_config::token::{CaDigest, HostCredential, TokenError};
use wgmesh_config::{AgentConfig, ControlSection, PublicKey};

use super::netmap_cache::NetmapCache;
use crate::error::Chain;
use backoff::Backoff;
use credential::{load_link, read_token, save_link};
pub use follow::follow;

/// The file in the state directory that holds the host's credential.
pub const CREDENTIAL_FILE: &str = "control.json";

/// Reads a `control.json` at `path` as the agent does at start-up: whether it holds a link to
/// `control` for `name`, and if so whether its join completed. For the fuzz targets (`fuzz/`).
#[doc(hidden)]
pub fn load_credential_file(
    path: &Path,
    control: &ControlSection,
    name: &str,
) -> Result<Option<bool>, LinkError> {
    load_link(path, control, name).map(|link| link.map(|(_, joined)| joined))
}

/// Why the agent cannot get onto the control plane.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// Not joined yet, and agent.toml gives no token.
    #[error(
        "this host has not joined the control plane at {url} yet and agent.toml has no \
         control.join_token_file or control.join_token; create one with `wgmesh token create`"
    )]
    NoToken {
        /// The control plane.
        url: String,
    },
    /// The token file cannot be read.
    #[error("control.join_token_file: {}: cannot read the join token", path.display())]
    TokenRead {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The token file holds no valid token.
    #[error("control.join_token_file: {}", path.display())]
    TokenInvalid {
        /// The file.
        path: PathBuf,
        /// What is wrong (never the token).
        #[source]
        source: TokenError,
    },
    /// The credential file cannot be read.
    #[error("{}: cannot read the credential", path.display())]
    CredentialRead {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The credential file is not one. The sentence names the parse error in its middle, so it
    /// is kept in the variant but not returned as the source (which would print it twice).
    #[error(
        "{}: not a wgmesh credential file ({error}); move it away to join again with the token",
        path.display()
    )]
    CredentialCorrupt {
        /// The file.
        path: PathBuf,
        /// Why it does not parse.
        error: serde_json::Error,
    },
    /// The credential in the file is not a valid host credential.
    #[error("{}", path.display())]
    CredentialInvalid {
        /// The file.
        path: PathBuf,
        /// What is wrong (never the credential).
        #[source]
        source: TokenError,
    },
    /// The credential file cannot be written.
    #[error("{}: cannot save the credential", path.display())]
    CredentialSave {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The control plane no longer accepts the saved credential.
    #[error(
        "the control plane refuses this host's credential (an admin removed it with `wgmesh node \
         remove`); to join again, delete {} and restart with a valid join token",
        path.display()
    )]
    CredentialRefused {
        /// The credential file.
        path: PathBuf,
    },
    /// The control plane refused for good, or cannot be trusted.
    #[error(transparent)]
    Control(#[from] ClientError),
    /// The netmap is addressed to another host.
    #[error(
        "the control plane sent a netmap for {name} with key {key}, but this host is {own_name} \
         with key {own_key}"
    )]
    NotForUs {
        /// The netmap's host name.
        name: String,
        /// The netmap's host key (short).
        key: String,
        /// This host's name.
        own_name: String,
        /// This host's key (short).
        own_key: String,
    },
}

/// A joined host's connection to its control plane.
#[derive(Debug, Clone)]
pub struct Link {
    client: Client,
    name: String,
    credential: HostCredential,
    ca_digest: CaDigest,
}

/// Where the first netmap came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The control plane, just now.
    Control,
    /// The cache: the control plane was unreachable.
    Cache,
}

/// Gets the first netmap (see the [module documentation](self)).
pub async fn establish(
    config: &AgentConfig,
    control: &ControlSection,
    public_key: PublicKey,
    cache: &NetmapCache,
) -> Result<(Link, Netmap, Origin), LinkError> {
    let a = &config.agent;
    let path = a.state_dir.join(CREDENTIAL_FILE);
    let url = control.url.to_string();
    let saved = load_link(&path, control, &a.name)?;
    if let Some((link, true)) = &saved {
        return resume(link.clone(), path, &a.name, public_key, cache).await;
    }
    let token = read_token(control, &url)?;
    // A join begun earlier with this token's CA goes on with its credential.
    let link = match saved {
        Some((link, false)) if link.ca_digest == token.ca_digest => link,
        _ => {
            let link = Link {
                client: Client::pinned(&control.url, token.ca_digest),
                name: a.name.clone(),
                credential: HostCredential::generate(),
                ca_digest: token.ca_digest,
            };
            save_link(&path, &link, false)?;
            link
        }
    };
    let body = JoinBody {
        token: token.expose(),
        name: a.name.clone(),
        public_key,
        endpoint: a.endpoint,
        labels: a.labels.clone(),
        credential: Some(link.credential.expose()),
    };
    join(link, &body, &path, &url).await
}

/// The first netmap of a host that joined earlier (its credential is at `path`): the control
/// plane's, or the cached one while the control plane cannot be reached.
async fn resume(
    link: Link,
    path: PathBuf,
    name: &str,
    public_key: PublicKey,
    cache: &NetmapCache,
) -> Result<(Link, Netmap, Origin), LinkError> {
    let mut backoff = Backoff::new();
    loop {
        match link
            .client
            .netmap(&link.name, &link.credential, 0, Duration::ZERO)
            .await
        {
            Ok(Some(netmap)) => {
                check_ours(&netmap, name, public_key)?;
                return Ok((link, netmap, Origin::Control));
            }
            // Revision 0 always has a newer netmap; a 204 means a confused server.
            Ok(None) => {}
            Err(e) if e.reason() == Some(ApiReason::Unauthenticated) => {
                return Err(LinkError::CredentialRefused { path });
            }
            // A certificate that is expired or not yet valid (a wrong clock) must not stop
            // a host that has a netmap to run on: only the pin and refusals are final here.
            Err(e) if e.is_permanent() && !matches!(e, ClientError::Certificate { .. }) => {
                return Err(e.into())
            }
            Err(e) => {
                if let Some(netmap) = cached(cache, name, public_key) {
                    tracing::warn!(
                        revision = netmap.revision,
                        "control plane unreachable; starting from the cached netmap: {}",
                        Chain(&e)
                    );
                    return Ok((link, netmap, Origin::Cache));
                }
                if e.is_permanent() {
                    return Err(e.into());
                }
                tracing::warn!("control plane unreachable, retrying: {}", Chain(&e));
            }
        }
        tokio::time::sleep(backoff.next()).await;
    }
}

/// Joins with `body` until the control plane answers, then marks the credential saved at
/// `path` as joined.
async fn join(
    link: Link,
    body: &JoinBody,
    path: &Path,
    url: &str,
) -> Result<(Link, Netmap, Origin), LinkError> {
    let mut backoff = Backoff::new();
    loop {
        match link.client.join(body).await {
            Ok(reply) => {
                check_ours(&reply.netmap, &body.name, body.public_key)?;
                save_link(path, &link, true)?;
                tracing::info!(
                    url = %url,
                    subnet = %reply.netmap.host.subnet,
                    "joined the control plane"
                );
                return Ok((link, reply.netmap, Origin::Control));
            }
            Err(e) if e.is_permanent() => return Err(e.into()),
            Err(e) => tracing::warn!("cannot join yet, retrying: {}", Chain(&e)),
        }
        tokio::time::sleep(backoff.next()).await;
    }
}

/// Refuses a netmap addressed to another host than `name` with `key`.
pub(crate) fn check_ours(netmap: &Netmap, name: &str, key: PublicKey) -> Result<(), LinkError> {
    if netmap.host.name == name && netmap.host.public_key == key {
        return Ok(());
    }
    Err(LinkError::NotForUs {
        name: netmap.host.name.clone(),
        key: netmap.host.public_key.short(),
        own_name: name.to_owned(),
        own_key: key.short(),
    })
}

/// The cached netmap, if there is one and it is addressed to this host.
fn cached(cache: &NetmapCache, name: &str, key: PublicKey) -> Option<Netmap> {
    match cache.load() {
        Ok(Some(netmap)) if check_ours(&netmap, name, key).is_ok() => Some(netmap),
        Ok(Some(_)) => {
            tracing::warn!(path = %cache.path().display(), "the cached netmap is for another name or key; ignoring it");
            None
        }
        Ok(None) => None,
        Err(e) => {
            tracing::warn!("{}", Chain(&e));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_netmap_for_another_key_is_refused() {
        let netmap = Netmap {
            revision: 1,
            host: wgmesh_config::netmap::HostIdentity {
                name: "host-a".into(),
                public_key: PublicKey::from_bytes([1; 32]),
                subnet: "10.42.0.0/24".parse().unwrap(),
                endpoint: None,
            },
            peers: vec![],
            cluster_cidr: None,
            epoch: 0,
        };
        assert!(check_ours(&netmap, "host-a", PublicKey::from_bytes([1; 32])).is_ok());
        let err = check_ours(&netmap, "host-a", PublicKey::from_bytes([2; 32])).unwrap_err();
        assert!(err.to_string().contains("this host is host-a"), "{err}");
    }
}
