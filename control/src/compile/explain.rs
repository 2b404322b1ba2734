//! `policy explain`: what a policy decides for a flow between two endpoints named as the admin
//! names them ([`EndpointRef`]): `HOST/NETNS` (a known workload), `HOST` (a host's own traffic)
//! or a selector's text, `k=v,k=v`, `{k=v}` or `{}` (a hypothetical endpoint carrying exactly
//! those labels), read by config's one selector parser.

use std::fmt;
use std::str::FromStr;

use wgmesh_config::labels::Labels;
use wgmesh_config::name::{check_host_name, NameFault};
use wgmesh_config::policy::{
    Action, DecidedBy, Decision, Flow, Policy, Selector, SelectorParseError,
};

use super::endpoints::endpoint_labels;
use crate::registry::Registry;

/// An endpoint as `policy explain` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointRef {
    /// `HOST/NETNS`: a workload the registry knows.
    Workload {
        /// Its host's name.
        host: String,
        /// Its name on that host.
        name: String,
    },
    /// `HOST`: a host's own traffic.
    Host(String),
    /// A selector's text (`k=v,k=v`, `{k=v}`, `{}` or the empty text): an endpoint carrying
    /// exactly these labels.
    Labels(Labels),
}

/// Why an endpoint cannot be resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExplainError {
    /// Selector text (`k=v,k=v`, `{...}`) that is no selector.
    #[error("{source}; or name a known endpoint: HOST/NETNS (a workload) or HOST")]
    Selector {
        /// What is wrong with it (its message quotes the text and the selector form).
        #[from]
        source: SelectorParseError,
    },
    /// `HOST` or `HOST/NETNS` whose host part is no host name.
    #[error(
        "{text:?}: {host:?} is not a host name ({fault}); an endpoint is HOST/NETNS, HOST or a \
         selector (k=v,k=v, {{k=v}} or {{}})"
    )]
    HostName {
        /// The text as given.
        text: String,
        /// Its host part.
        host: String,
        /// Which part of the host-name rule it breaks.
        fault: NameFault,
    },
    /// No host of this name.
    #[error("no host {0}")]
    NoSuchHost(String),
    /// No workload of this name on the host.
    #[error("host {host} has no workload {name:?}")]
    NoSuchWorkload {
        /// The host.
        host: String,
        /// The name asked for.
        name: String,
    },
}

/// What a policy decides for one flow, and the label sets it decided on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation<'p> {
    /// The labels the source carries.
    pub from: Labels,
    /// The labels the destination carries.
    pub to: Labels,
    /// The verdict and what decided it.
    pub decision: Decision<'p>,
}

impl FromStr for EndpointRef {
    type Err = ExplainError;

    /// Text with `=` or braces, or the empty text, is a selector, read by
    /// [`Selector::from_str`] exactly as every selector text is (`k=v,k=v`, `{k=v}`, `{}` or
    /// `""`, spaces around keys and values ignored; keys may hold a `/`, as in
    /// `example.com/zone=a`); else `HOST/NETNS` or `HOST`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let trimmed = text.trim();
        if trimmed.is_empty() || trimmed.contains('=') || trimmed.starts_with('{') {
            let Selector(labels) = text.parse()?;
            return Ok(Self::Labels(labels));
        }
        let (host, name) = match trimmed.split_once('/') {
            Some((host, name)) => (host, Some(name)),
            None => (trimmed, None),
        };
        check_host_name(host).map_err(|fault| ExplainError::HostName {
            text: text.to_owned(),
            host: host.to_owned(),
            fault,
        })?;
        let host = host.to_owned();
        Ok(match name {
            Some(name) => Self::Workload {
                host,
                name: name.to_owned(),
            },
            None => Self::Host(host),
        })
    }
}

impl fmt::Display for EndpointRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Workload { host, name } => write!(f, "{host}/{name}"),
            Self::Host(host) => f.write_str(host),
            Self::Labels(labels) => {
                for (i, (k, v)) in labels.iter().enumerate() {
                    let sep = if i == 0 { "" } else { "," };
                    write!(f, "{sep}{k}={v}")?;
                }
                Ok(())
            }
        }
    }
}

impl EndpointRef {
    /// The labels this endpoint carries in `registry`.
    pub fn labels(&self, registry: &Registry) -> Result<Labels, ExplainError> {
        match self {
            Self::Labels(labels) => Ok(labels.clone()),
            Self::Host(host) => registry
                .host_by_name(host)
                .map(|h| endpoint_labels(h, None))
                .ok_or_else(|| ExplainError::NoSuchHost(host.clone())),
            Self::Workload { host, name } => {
                if registry.host_by_name(host).is_none() {
                    return Err(ExplainError::NoSuchHost(host.clone()));
                }
                let (h, w) =
                    registry
                        .workload(host, name)
                        .ok_or_else(|| ExplainError::NoSuchWorkload {
                            host: host.clone(),
                            name: name.clone(),
                        })?;
                Ok(endpoint_labels(h, Some(w)))
            }
        }
    }
}

/// What `policy` (`None`: no policy, everything allowed) decides for `flow` from `from` to
/// `to`, resolved in `registry`.
pub fn explain<'p>(
    registry: &Registry,
    policy: Option<&'p Policy>,
    from: &EndpointRef,
    to: &EndpointRef,
    flow: Flow,
) -> Result<Explanation<'p>, ExplainError> {
    let from = from.labels(registry)?;
    let to = to.labels(registry)?;
    let decision = decide(policy, &from, &to, flow);
    Ok(Explanation { from, to, decision })
}

/// What `policy` (`None`: no policy, everything allowed by default) decides for `flow` from an
/// endpoint labelled `from` to one labelled `to`.
pub fn decide<'p>(
    policy: Option<&'p Policy>,
    from: &Labels,
    to: &Labels,
    flow: Flow,
) -> Decision<'p> {
    match policy {
        Some(p) => p.decide(from, to, flow),
        None => Decision {
            action: Action::Allow,
            by: DecidedBy::Default,
        },
    }
}
