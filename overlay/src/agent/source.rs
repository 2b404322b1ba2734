//! Where the host's subnet and peers come from: agent.toml's `[[peer]]`s (static mode), or the
//! first netmap of a control plane (control mode), which is checked and cached here.

use ipnet::IpNet;
use wgmesh_config::netmap::{HostFilter, Netmap};
use wgmesh_config::{AgentConfig, PresharedKey};

use super::control_link::{self, Origin};
use super::keys::read_key;
use super::netmap_cache::NetmapCache;
use super::AgentError;
use crate::peers::settings::{self, PeerKeys, PeerSettings, PresharedKeyBytes};

/// Where the host's subnet and peers come from: agent.toml, or a control plane's netmap.
pub(super) struct PeerSource {
    pub(super) subnet: IpNet,
    /// The cluster CIDR the agent enforces: agent.toml's `cluster_cidr` (static mode), or the
    /// one pinned at join and kept with the credential (control mode).
    pub(super) cluster: IpNet,
    pub(super) settings: Vec<PeerSettings>,
    pub(super) control: Option<(control_link::Link, Netmap, Origin)>,
}

impl PeerSource {
    /// The policy of the first netmap; none in static mode.
    pub(super) fn policy(&self) -> Option<&HostFilter> {
        self.control
            .as_ref()
            .and_then(|(_, netmap, _)| netmap.filter.as_ref())
    }

    pub(super) async fn of(
        config: &AgentConfig,
        keys: &[wgmesh_config::PublicKey],
    ) -> Result<Self, AgentError> {
        let Some(control) = &config.control else {
            let subnet = config
                .agent
                .subnet
                .expect("agent.toml without [control] has a subnet");
            let cluster = config
                .agent
                .cluster_cidr
                .expect("agent.toml without [control] has a cluster_cidr");
            return Ok(Self {
                subnet,
                cluster,
                settings: peer_settings(config)?,
                control: None,
            });
        };
        let cache = NetmapCache::new(&config.agent.state_dir);
        let (link, netmap, origin) = control_link::establish(config, control, keys, &cache).await?;
        // `establish` checked the netmap against the pin already; this checks it once more,
        // where its settings are made, so no path reaches the peers unchecked.
        let cluster = link.cluster().ok_or_else(|| AgentError::NotPinned)?;
        let settings = settings::from_netmap(&netmap, cluster)?;
        let subnet = netmap.host.subnet;
        if subnet.addr().is_ipv6() && config.agent.mtu < wgmesh_config::MIN_IPV6_MTU {
            return Err(AgentError::MtuTooSmall {
                mtu: config.agent.mtu,
                subnet,
            });
        }
        if origin == Origin::Control {
            cache.save(&netmap)?;
        }
        Ok(Self {
            subnet,
            cluster,
            settings,
            control: Some((link, netmap, origin)),
        })
    }
}

/// The peers of a config, with preshared keys read from their files.
pub(super) fn peer_settings(config: &AgentConfig) -> Result<Vec<PeerSettings>, AgentError> {
    config
        .peers
        .iter()
        .map(|p| {
            let preshared_key = match &p.preshared_key_file {
                Some(path) => Some(PresharedKeyBytes(read_key::<PresharedKey>(path)?)),
                None => None,
            };
            Ok(PeerSettings {
                name: p.name.clone(),
                keys: PeerKeys::one(p.public_key),
                endpoint: p.endpoint,
                allowed_ips: p.allowed_ips.clone(),
                persistent_keepalive: p.persistent_keepalive,
                preshared_key,
                pair_psks: Vec::new(),
                key_epoch: None,
            })
        })
        .collect()
}
