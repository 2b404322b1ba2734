//! The agent's link to a control plane: join once with the token, keep the credential, then
//! long-poll netmaps and report the endpoint, riding out outages (fail-static).
//!
//! - [`establish`] gets the first netmap: with the credential of an earlier join
//!   (`state_dir/control.json`, 0600) or by joining with the token. The join pins the
//!   cluster CIDR (kept with the credential); every netmap after it, and the cached one, must
//!   name exactly that cluster CIDR and route nothing outside it, or it is refused whole.
//!   When the control plane is unreachable it starts from the cached netmap if there is one,
//!   and otherwise retries until the control plane answers. Permanent refusals (wrong CA, token refused, name taken) end it
//!   with the control plane's reason.
//! - [`follow()`] runs for the agent's life: it long-polls and hands each new netmap to the agent,
//!   reports endpoint changes, and backs off (0.5 s doubling to 10 s) while the control plane
//!   is down.
//! - [`WorkloadReports`] runs beside it: the agent publishes its whole workload list (names,
//!   addresses, labels) at start and after every attach, detach and relabel, without waiting;
//!   a task sends it, retries with backoff, and sends it again after each reconnection.
//!
//! Here: [`establish`], [`LinkError`] and the check that a netmap is addressed to this host;
//! `follow`: [`follow()`]; `report`: [`WorkloadReports`]; `credential`: the credential and token
//! files; `backoff`: the waits.

mod backoff;
mod credential;
mod follow;
mod report;

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use wgmesh_client::api::{ApiReason, JoinBody};
use wgmesh_client::client::{Client, ClientError};
use wgmesh_config::netmap::{Netmap, NetmapError};
use wgmesh_config::token::{CaDigest, HostCredential, TokenError};
use wgmesh_config::{AgentConfig, ControlSection, PublicKey};

use super::netmap_cache::NetmapCache;
use crate::error::Chain;
use backoff::Backoff;
use credential::{load_link, read_token, save_link};
pub use follow::{follow, Connection, Offer};
pub use report::{KeyReports, WorkloadReports};

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
    /// Others than the owner may read or write the token file.
    #[error(
        "control.join_token_file: {p}: mode {mode:04o} lets other users read or change the join \
         token; make it private with `chmod 600 {p}`",
        p = path.display()
    )]
    TokenMode {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
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
    /// The control plane names no cluster CIDR, so there is nothing to pin.
    #[error(
        "the control plane at {url} sent a netmap without a cluster CIDR; this agent needs one \
         to know what it may route into the tunnel (upgrade the control plane)"
    )]
    NoClusterCidr {
        /// The control plane.
        url: String,
    },
    /// The first netmap breaks an invariant (or the pinned cluster).
    #[error("the control plane's first netmap (revision {revision}) is refused")]
    NetmapRefused {
        /// Its revision.
        revision: u64,
        /// What is wrong with it.
        #[source]
        source: NetmapError,
    },
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
    /// The cluster CIDR pinned at join; `None` only before the join is answered (or in the
    /// credential of an older agent, until the first netmap).
    cluster: Option<IpNet>,
}

impl Link {
    /// The cluster CIDR pinned at join: every netmap must name exactly this one. Always
    /// `Some` on a link [`establish`] returned.
    pub fn cluster(&self) -> Option<IpNet> {
        self.cluster
    }
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
    keys: &[PublicKey],
    cache: &NetmapCache,
) -> Result<(Link, Netmap, Origin), LinkError> {
    let a = &config.agent;
    let public_key = *keys.first().expect("the current key");
    let path = a.state_dir.join(CREDENTIAL_FILE);
    let url = control.url.to_string();
    let saved = load_link(&path, control, &a.name)?;
    if let Some((link, true)) = &saved {
        return resume(link.clone(), path, &a.name, keys, cache).await;
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
                cluster: None,
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
/// plane's, or the cached one while the control plane cannot be reached (or sends a netmap
/// that is refused). A credential without a pinned cluster CIDR (an older agent's) pins the
/// one of the first netmap the control plane sends, and cannot start from the cache.
async fn resume(
    mut link: Link,
    path: PathBuf,
    name: &str,
    keys: &[PublicKey],
    cache: &NetmapCache,
) -> Result<(Link, Netmap, Origin), LinkError> {
    let mut backoff = Backoff::new();
    loop {
        let e = match link
            .client
            .netmap(&link.name, &link.credential, 0, Duration::ZERO)
            .await
        {
            Ok(Some(netmap)) => {
                check_ours(&netmap, name, keys)?;
                let pinned = pin_if_unpinned(&mut link, &netmap, &path)?;
                match netmap.check_pinned(pinned) {
                    Ok(()) => return Ok((link, netmap, Origin::Control)),
                    Err(e) => {
                        let revision = netmap.revision;
                        tracing::error!(revision, "refusing the control plane's netmap: {e}");
                        None
                    }
                }
            }
            // Revision 0 always has a newer netmap; a 204 means a confused server.
            Ok(None) => None,
            Err(e) if e.reason() == Some(ApiReason::Unauthenticated) => {
                return Err(LinkError::CredentialRefused { path });
            }
            // A certificate that is expired or not yet valid (a wrong clock) must not stop
            // a host that has a netmap to run on: only the pin and refusals are final here.
            Err(e) if e.is_permanent() && !matches!(e, ClientError::Certificate { .. }) => {
                return Err(e.into())
            }
            Err(e) => Some(e),
        };
        if let Some(netmap) = cached(cache, name, keys, link.cluster) {
            let why = e.as_ref().map_or_else(
                || "its netmap is refused".to_owned(),
                |e| format!("unreachable: {}", Chain(e)),
            );
            tracing::warn!(
                revision = netmap.revision,
                "starting from the cached netmap; the control plane is {why}"
            );
            return Ok((link, netmap, Origin::Cache));
        }
        match e {
            Some(e) if e.is_permanent() => return Err(e.into()),
            Some(e) => tracing::warn!("control plane unreachable, retrying: {}", Chain(&e)),
            None => {}
        }
        tokio::time::sleep(backoff.next()).await;
    }
}

/// The cluster CIDR pinned for `link`; for a credential without one (an older agent's),
/// the one `netmap` names, which the control plane just sent over the pinned connection: it is
/// saved with the credential at `path`.
fn pin_if_unpinned(link: &mut Link, netmap: &Netmap, path: &Path) -> Result<IpNet, LinkError> {
    if let Some(pinned) = link.cluster {
        return Ok(pinned);
    }
    let Some(cluster) = netmap.cluster_cidr else {
        return Err(LinkError::NoClusterCidr {
            url: link.client.url().to_string(),
        });
    };
    link.cluster = Some(cluster);
    save_link(path, link, true)?;
    tracing::info!(
        %cluster,
        "the credential had no cluster CIDR (an older agent wrote it); pinned the control \
         plane's, which every netmap must name from now on"
    );
    Ok(cluster)
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
                check_ours(&reply.netmap, &body.name, &[body.public_key])?;
                let netmap = &reply.netmap;
                let Some(cluster) = netmap.cluster_cidr else {
                    return Err(LinkError::NoClusterCidr { url: url.into() });
                };
                netmap
                    .check_pinned(cluster)
                    .map_err(|source| LinkError::NetmapRefused {
                        revision: netmap.revision,
                        source,
                    })?;
                let link = Link {
                    cluster: Some(cluster),
                    ..link
                };
                save_link(path, &link, true)?;
                tracing::info!(
                    url = %url,
                    subnet = %reply.netmap.host.subnet,
                    %cluster,
                    "joined the control plane; pinned its cluster CIDR"
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
/// Whether `netmap` is addressed to this host: its name, and one of its `keys` (the current
/// one first; while a rotation runs, the retiring one too: the control plane registers the new
/// key only when the rotation completes, and goes back to the old one if it is abandoned).
pub(crate) fn check_ours(netmap: &Netmap, name: &str, keys: &[PublicKey]) -> Result<(), LinkError> {
    if netmap.host.name == name && keys.contains(&netmap.host.public_key) {
        return Ok(());
    }
    Err(LinkError::NotForUs {
        name: netmap.host.name.clone(),
        key: netmap.host.public_key.short(),
        own_name: name.to_owned(),
        own_key: keys.first().map(PublicKey::short).unwrap_or_default(),
    })
}

/// The cached netmap, if there is one, it is addressed to this host and it fits the cluster
/// `pinned` (without a pin, the cache cannot be checked and is not used).
fn cached(
    cache: &NetmapCache,
    name: &str,
    keys: &[PublicKey],
    pinned: Option<IpNet>,
) -> Option<Netmap> {
    let path = cache.path().display();
    match cache.load() {
        Ok(Some(netmap)) if check_ours(&netmap, name, keys).is_ok() => {
            let Some(pinned) = pinned else {
                tracing::warn!(
                    %path,
                    "no cluster CIDR is pinned yet (the credential is an older agent's), so the \
                     cached netmap cannot be checked; waiting for the control plane"
                );
                return None;
            };
            match netmap.check_pinned(pinned) {
                Ok(()) => Some(netmap),
                Err(e) => {
                    tracing::error!(
                        %path,
                        revision = netmap.revision,
                        "refusing the cached netmap: {e}; waiting for the control plane"
                    );
                    None
                }
            }
        }
        Ok(Some(_)) => {
            tracing::warn!(%path, "the cached netmap is for another name or key; ignoring it");
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
                key_epoch: 0,
                rotation: None,
            },
            peers: vec![],
            cluster_cidr: None,
            epoch: 0,
            filter: None,
        };
        let key = |b| PublicKey::from_bytes([b; 32]);
        assert!(check_ours(&netmap, "host-a", &[key(1)]).is_ok());
        // Mid-rotation the old key is still the registered one.
        assert!(check_ours(&netmap, "host-a", &[key(3), key(1)]).is_ok());
        let err = check_ours(&netmap, "host-a", &[key(2)]).unwrap_err();
        assert!(err.to_string().contains("this host is host-a"), "{err}");
    }
}
