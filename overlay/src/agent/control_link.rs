//! The agent's link to a control plane: join once with the token, keep the credential, then
//! long-poll netmaps and report the endpoint, riding out outages (fail-static).
//!
//! - [`establish`] gets the first netmap: with the credential of an earlier join
//!   (`state_dir/control.json`, 0600) or by joining with the token. When the control plane is
//!   unreachable it starts from the cached netmap if there is one, and otherwise retries until
//!   the control plane answers. Permanent refusals (wrong CA, token refused, name taken) end it
//!   with the control plane's reason.
//! - [`follow`] runs for the agent's life: it long-polls and hands each new netmap to the agent,
//!   reports endpoint changes, and backs off (0.5 s doubling to 10 s) while the control plane
//!   is down.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use wgmesh_client::api::{ApiReason, JoinBody};
use wgmesh_client::client::{Client, ClientError};
use wgmesh_config::netmap::{Netmap, NetmapUpdate};
use wgmesh_config::token::{CaDigest, HostCredential, JoinToken, TokenError};
use wgmesh_config::{AgentConfig, ControlSection, JoinTokenSource, PublicKey};

use super::netmap_cache::NetmapCache;
use super::statefile::{read_json, write_json, ReadError};
use crate::error::Chain;

/// How long one long poll waits for a change.
const POLL_WAIT: Duration = Duration::from_secs(25);
/// The file in the state directory that holds the host's credential.
pub const CREDENTIAL_FILE: &str = "control.json";

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

/// What `control.json` holds: enough to talk to the control plane without the token.
///
/// The credential is made here and saved before the join is sent (`joined: false`), so a join
/// whose reply is lost, or an agent stopped mid-join, retries with the same credential and the
/// control plane recognises it; anyone else with the host's (public) name and key is refused.
#[derive(Serialize, Deserialize)]
#[serde(tag = "version")]
enum CredentialFile {
    #[serde(rename = "1")]
    V1 {
        url: String,
        ca_digest: CaDigest,
        name: String,
        credential: String,
        joined: bool,
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

/// Long-polls for changes to `current` (the netmap the agent runs) and sends every new netmap
/// to `netmaps`; reports the endpoint in `endpoint` whenever it differs from what the control
/// plane holds. Ends when `netmaps` is closed. `connected` says whether the last call
/// succeeded.
///
/// The control plane answers with what changed (a delta) when it can; the delta is applied to
/// `current` here, so the agent always gets whole, checked netmaps. A delta that does not fit
/// makes the next poll ask for the whole netmap.
pub async fn follow(
    link: Link,
    mut current: Netmap,
    netmaps: mpsc::Sender<Netmap>,
    mut endpoint: watch::Receiver<Option<SocketAddr>>,
    connected: Arc<AtomicBool>,
) {
    let mut reported = current.host.endpoint;
    let mut health = Health::new(connected);
    let mut backoff = Backoff::new();
    loop {
        let wanted = *endpoint.borrow_and_update();
        if wanted != reported {
            if !report_endpoint(&link, wanted, &mut health).await {
                tokio::time::sleep(backoff.next()).await;
                continue;
            }
            reported = wanted;
        }
        // While down, ask without waiting, so that coming back is noticed (and shown in status)
        // at once rather than after a full long poll.
        let wait = if health.down {
            Duration::ZERO
        } else {
            POLL_WAIT
        };
        let poll = link.client.netmap_update(
            &link.name,
            &link.credential,
            (current.revision, current.epoch),
            wait,
        );
        tokio::select! {
            result = poll => match result {
                Ok(Some(update)) => {
                    health.reachable("control plane reachable again");
                    backoff = Backoff::new();
                    let Some(netmap) = updated(&mut current, update) else {
                        // The pause keeps a misbehaving control plane from making this a
                        // tight loop.
                        tokio::time::sleep(backoff.next()).await;
                        continue;
                    };
                    reported = netmap.host.endpoint;
                    current = netmap.clone();
                    if netmaps.send(netmap).await.is_err() {
                        return;
                    }
                }
                Ok(None) => {
                    health.reachable("control plane reachable again; no change");
                    backoff = Backoff::new();
                }
                Err(e) => {
                    if !health.down {
                        if e.reason() == Some(ApiReason::Unauthenticated) {
                            tracing::error!("the control plane refuses this host's credential (removed with `wgmesh node remove`?); keeping the last netmap: {}", Chain(&e));
                        } else {
                            tracing::warn!("control plane unreachable; keeping the last netmap and retrying: {}", Chain(&e));
                        }
                    }
                    health.unreachable();
                    tokio::time::sleep(backoff.next()).await;
                }
            },
            Ok(()) = endpoint.changed() => {}
            () = netmaps.closed() => return,
        }
    }
}

/// Tells the control plane that the host's endpoint is now `wanted`; false if that failed.
async fn report_endpoint(link: &Link, wanted: Option<SocketAddr>, health: &mut Health) -> bool {
    match link
        .client
        .set_endpoint(&link.name, &link.credential, wanted)
        .await
    {
        Ok(_) => {
            tracing::info!(endpoint = ?wanted, "reported the endpoint to the control plane");
            true
        }
        Err(e) => {
            if !health.down {
                tracing::warn!("cannot report the endpoint; will retry: {}", Chain(&e));
            }
            health.unreachable();
            false
        }
    }
}

/// Whether the control plane answers, as [`follow`] saw it last; shared with the agent's
/// status through `connected`.
struct Health {
    down: bool,
    connected: Arc<AtomicBool>,
}

impl Health {
    fn new(connected: Arc<AtomicBool>) -> Self {
        Self {
            down: !connected.load(Ordering::Relaxed),
            connected,
        }
    }

    /// A call succeeded; says `message` when the control plane was down until now.
    fn reachable(&mut self, message: &str) {
        if self.down {
            tracing::info!("{message}");
            self.down = false;
            self.connected.store(true, Ordering::Relaxed);
        }
    }

    /// A call failed.
    fn unreachable(&mut self) {
        self.down = true;
        self.connected.store(false, Ordering::Relaxed);
    }
}

/// The whole netmap `update` gives for `current`; `None` when it is a delta that does not fit
/// `current`, whose revision is then set to 0 so that the next poll asks for the whole netmap
/// (revision 0 always gets it).
fn updated(current: &mut Netmap, update: NetmapUpdate) -> Option<Netmap> {
    match update {
        NetmapUpdate::Full(netmap) => Some(netmap),
        NetmapUpdate::Delta(delta) => match current.apply_delta(&delta) {
            Ok(netmap) => Some(netmap),
            Err(e) => {
                tracing::warn!("cannot apply a netmap delta; asking for the whole netmap: {e}");
                current.revision = 0;
                None
            }
        },
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

fn read_token(control: &ControlSection, url: &str) -> Result<JoinToken, LinkError> {
    match &control.join_token {
        Some(JoinTokenSource::Inline(token)) => Ok(token.clone()),
        Some(JoinTokenSource::File(path)) => {
            let text = std::fs::read_to_string(path).map_err(|source| LinkError::TokenRead {
                path: path.clone(),
                source,
            })?;
            JoinToken::from_str(&text).map_err(|source| LinkError::TokenInvalid {
                path: path.clone(),
                source,
            })
        }
        None => Err(LinkError::NoToken {
            url: url.to_owned(),
        }),
    }
}

/// The link of an earlier join (and whether that join completed), if `control.json` is for this
/// control plane and name.
fn load_link(
    path: &Path,
    control: &ControlSection,
    name: &str,
) -> Result<Option<(Link, bool)>, LinkError> {
    let path_buf = || path.to_owned();
    let file = read_json::<CredentialFile>(path).map_err(|e| match e {
        ReadError::Io(source) => LinkError::CredentialRead {
            path: path_buf(),
            source,
        },
        ReadError::Corrupt(error) => LinkError::CredentialCorrupt {
            path: path_buf(),
            error,
        },
    })?;
    let Some(CredentialFile::V1 {
        url,
        ca_digest,
        name: saved_name,
        credential,
        joined,
    }) = file
    else {
        return Ok(None);
    };
    if url != control.url.to_string() || saved_name != name {
        tracing::info!(saved_url = %url, saved_name, "the saved credential is for another control plane or name; joining with the token");
        return Ok(None);
    }
    let credential =
        HostCredential::from_str(&credential).map_err(|source| LinkError::CredentialInvalid {
            path: path_buf(),
            source,
        })?;
    let link = Link {
        client: Client::pinned(&control.url, ca_digest),
        name: saved_name,
        credential,
        ca_digest,
    };
    Ok(Some((link, joined)))
}

fn save_link(path: &Path, link: &Link, joined: bool) -> Result<(), LinkError> {
    let file = CredentialFile::V1 {
        url: link.client.url().to_string(),
        ca_digest: link.ca_digest,
        name: link.name.clone(),
        credential: link.credential.expose(),
        joined,
    };
    write_json(path, &file).map_err(|source| LinkError::CredentialSave {
        path: path.to_owned(),
        source,
    })
}

/// Exponential backoff with jitter: 0.5 s, 1 s, 2 s, ... up to 10 s, each ±20 %.
struct Backoff {
    next: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(500);
    const MAX: Duration = Duration::from_secs(10);

    fn new() -> Self {
        Self { next: Self::FIRST }
    }

    fn next(&mut self) -> Duration {
        let base = self.next;
        self.next = (base * 2).min(Self::MAX);
        let jitter = f64::from(super::random::random_u32()) / f64::from(u32::MAX) * 0.4 + 0.8;
        base.mul_f64(jitter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap_with_bounded_jitter() {
        let mut b = Backoff::new();
        let waits: Vec<Duration> = (0..8).map(|_| b.next()).collect();
        assert!(waits[0] >= Duration::from_millis(400) && waits[0] <= Duration::from_millis(600));
        assert!(waits[1] >= Duration::from_millis(800) && waits[1] <= Duration::from_millis(1200));
        for w in &waits[5..] {
            assert!(
                *w >= Duration::from_secs(8) && *w <= Duration::from_secs(12),
                "{w:?}"
            );
        }
    }

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

    #[test]
    fn credential_and_token_file_errors_name_the_file_then_the_cause() {
        let dir = tempfile::tempdir().unwrap();
        let token_file = dir.path().join("join.token");
        let control = ControlSection {
            url: "https://198.18.0.10:7443".parse().unwrap(),
            join_token: Some(JoinTokenSource::File(token_file.clone())),
        };
        let url = control.url.to_string();
        let err = read_token(&control, &url).unwrap_err();
        assert_eq!(
            Chain(&err).to_string(),
            format!(
                "control.join_token_file: {}: cannot read the join token: No such file or \
                 directory (os error 2)",
                token_file.display()
            )
        );
        std::fs::write(&token_file, "WGM1-nope").unwrap();
        let parse = JoinToken::from_str("WGM1-nope").unwrap_err();
        let err = read_token(&control, &url).unwrap_err();
        assert_eq!(
            Chain(&err).to_string(),
            format!("control.join_token_file: {}: {parse}", token_file.display())
        );

        let path = dir.path().join(CREDENTIAL_FILE);
        std::fs::write(&path, "{nope").unwrap();
        let json = serde_json::from_str::<CredentialFile>("{nope")
            .err()
            .unwrap();
        let err = load_link(&path, &control, "host-a").err().unwrap();
        assert_eq!(
            Chain(&err).to_string(),
            format!(
                "{}: not a wgmesh credential file ({json}); move it away to join again with the \
                 token",
                path.display()
            )
        );
    }
}
