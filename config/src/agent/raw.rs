//! The serde shape of agent.toml: what `toml` reads (every value keeps its span, for errors)
//! and what [`AgentConfig::to_toml`] writes.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::{AgentConfig, JoinTokenSource};

/// The serde shape of the file: every value keeps its span for error messages.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAgentConfig {
    pub(super) agent: Spanned<RawAgentSection>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) peer: Vec<Spanned<RawPeerConfig>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) control: Option<Spanned<RawControlSection>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) docker: Option<Spanned<RawDockerSection>>,
}

/// Integers are read as `i64` so out-of-range values get our message, not serde's.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAgentSection {
    pub(super) name: Spanned<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) private_key_file: Option<Spanned<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) listen_port: Option<Spanned<i64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) interface: Option<Spanned<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) bridge: Option<Spanned<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) mtu: Option<Spanned<i64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) subnet: Option<Spanned<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) cluster_cidr: Option<Spanned<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) endpoint: Option<Spanned<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) socket: Option<Spanned<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) state_dir: Option<Spanned<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) audit_log: Option<Spanned<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) offload: Option<Spanned<bool>>,
    /// Last, so `to_toml` can write it as an `[agent.labels]` table after the plain values.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) labels: Option<Spanned<BTreeMap<Spanned<String>, Spanned<String>>>>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawControlSection {
    pub(super) url: Spanned<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) join_token: Option<Spanned<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) join_token_file: Option<Spanned<String>>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDockerSection {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) plugin_dir: Option<Spanned<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) socket: Option<Spanned<String>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) networks: Vec<Spanned<String>>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPeerConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) name: Option<Spanned<String>>,
    pub(super) public_key: Spanned<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) endpoint: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) allowed_ips: Vec<Spanned<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) persistent_keepalive: Option<Spanned<i64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) preshared_key_file: Option<Spanned<String>>,
}

/// Spans are meaningless when writing; use an empty one.
fn unspanned<T>(value: T) -> Spanned<T> {
    Spanned::new(0..0, value)
}

fn path_string(path: &Path) -> Spanned<String> {
    unspanned(path.to_string_lossy().into_owned())
}

impl From<&AgentConfig> for RawAgentConfig {
    fn from(config: &AgentConfig) -> Self {
        let a = &config.agent;
        let agent = RawAgentSection {
            name: unspanned(a.name.clone()),
            private_key_file: Some(path_string(&a.private_key_file)),
            listen_port: Some(unspanned(a.listen_port.into())),
            interface: Some(unspanned(a.interface.clone())),
            bridge: Some(unspanned(a.bridge.clone())),
            mtu: Some(unspanned(a.mtu.into())),
            subnet: a.subnet.map(|s| unspanned(s.to_string())),
            cluster_cidr: a.cluster_cidr.map(|c| unspanned(c.to_string())),
            endpoint: a.endpoint.map(|e| unspanned(e.to_string())),
            socket: Some(path_string(&a.socket)),
            state_dir: Some(path_string(&a.state_dir)),
            audit_log: Some(path_string(&a.audit_log)),
            offload: Some(unspanned(a.offload)),
            labels: (!a.labels.is_empty()).then(|| {
                unspanned(
                    a.labels
                        .iter()
                        .map(|(k, v)| (unspanned(k.clone()), unspanned(v.clone())))
                        .collect(),
                )
            }),
        };
        let control = config.control.as_ref().map(|c| {
            let (join_token, join_token_file) = match &c.join_token {
                Some(JoinTokenSource::Inline(token)) => (Some(unspanned(token.expose())), None),
                Some(JoinTokenSource::File(path)) => (None, Some(path_string(path))),
                None => (None, None),
            };
            unspanned(RawControlSection {
                url: unspanned(c.url.to_string()),
                join_token,
                join_token_file,
            })
        });
        let peer = config
            .peers
            .iter()
            .map(|p| {
                unspanned(RawPeerConfig {
                    name: p.name.clone().map(unspanned),
                    public_key: unspanned(p.public_key.to_string()),
                    endpoint: p.endpoint.map(|e| unspanned(e.to_string())),
                    allowed_ips: p
                        .allowed_ips
                        .iter()
                        .map(|ip| unspanned(ip.to_string()))
                        .collect(),
                    persistent_keepalive: p.persistent_keepalive.map(|k| unspanned(k.into())),
                    preshared_key_file: p.preshared_key_file.as_deref().map(path_string),
                })
            })
            .collect();
        let docker = config.docker.as_ref().map(|d| {
            unspanned(RawDockerSection {
                plugin_dir: Some(path_string(&d.plugin_dir)),
                socket: Some(path_string(&d.socket)),
                networks: d.networks.iter().cloned().map(unspanned).collect(),
            })
        });
        Self {
            agent: unspanned(agent),
            peer,
            control,
            docker,
        }
    }
}
