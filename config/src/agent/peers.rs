//! The `[[peer]]` tables of static mode: each peer's values, and the clashes between peers
//! (a public key used twice, allowed IPs that overlap another peer's or this host's subnet).
//! Both ends of a clash are named: the error is at the second, and mentions the first's line.

use std::collections::HashMap;
use std::ops::Range;

use ipnet::IpNet;
use toml::Spanned;

use super::raw::RawPeerConfig;
use super::value::{
    check_endpoint, check_name, check_path, check_prefix, overlaps, to_u16, Invalid,
};
use super::PeerConfig;
use crate::document::Document;
use crate::error::ConfigError;
use crate::key::PublicKey;

/// The overlay prefixes a peer must keep to: its allowed IPs lie outside this host's
/// `subnet` and inside the `cluster` CIDR, its endpoint outside the cluster.
#[derive(Clone, Copy)]
struct OverlayBounds {
    subnet: Option<IpNet>,
    cluster: Option<IpNet>,
}

/// What the peers before the one being validated claimed: where each key and allowed prefix
/// was first seen.
#[derive(Default)]
struct Claims {
    /// Public key -> (peer index, span of the key).
    keys: HashMap<PublicKey, (usize, Range<usize>)>,
    /// Every allowed prefix so far, with its field and span.
    prefixes: Vec<(IpNet, String, Range<usize>)>,
}

impl Document<'_> {
    /// Every `[[peer]]` table, in file order. `subnet` is this host's own subnet, which no
    /// peer's allowed IPs may overlap; `cluster` the cluster CIDR, which holds them all (and
    /// none of the peers' endpoints).
    pub(super) fn validate_peers(
        &self,
        peers: &[Spanned<RawPeerConfig>],
        subnet: Option<IpNet>,
        cluster: Option<IpNet>,
    ) -> Result<Vec<PeerConfig>, ConfigError> {
        let mut claims = Claims::default();
        peers
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let bounds = OverlayBounds { subnet, cluster };
                self.validate_peer(i, p.get_ref(), bounds, &mut claims)
            })
            .collect()
    }

    /// The `[[peer]]` table at index `i`.
    fn validate_peer(
        &self,
        i: usize,
        p: &RawPeerConfig,
        bounds: OverlayBounds,
        claims: &mut Claims,
    ) -> Result<PeerConfig, ConfigError> {
        let field = |name: &str| format!("peer[{i}].{name}");
        let name = match &p.name {
            Some(v) => Some(self.check(v, &field("name"), |s| check_name(s))?),
            None => None,
        };
        let public_key = self.validate_peer_key(i, &p.public_key, claims)?;
        let endpoint = match &p.endpoint {
            Some(v) => {
                let endpoint = self.check(v, &field("endpoint"), |s| check_endpoint(s))?;
                self.check_endpoint_outside(
                    &v.span(),
                    &field("endpoint"),
                    endpoint,
                    bounds.cluster,
                )?;
                Some(endpoint)
            }
            None => None,
        };
        let allowed_ips = self.validate_allowed_ips(i, &p.allowed_ips, bounds, claims)?;
        let persistent_keepalive = match &p.persistent_keepalive {
            Some(v) => {
                let secs = self.check(v, &field("persistent_keepalive"), |&v| {
                    to_u16(v, 0, u16::MAX, "use 1 to 65535 seconds, or 0 for off")
                })?;
                (secs != 0).then_some(secs)
            }
            None => None,
        };
        let preshared_key_file = match &p.preshared_key_file {
            Some(v) => Some(self.check(v, &field("preshared_key_file"), |s| check_path(s))?),
            None => None,
        };
        Ok(PeerConfig {
            name,
            public_key,
            endpoint,
            allowed_ips,
            persistent_keepalive,
            preshared_key_file,
        })
    }

    /// Peer `i`'s `public_key`, which no earlier peer may have.
    fn validate_peer_key(
        &self,
        i: usize,
        raw: &Spanned<String>,
        claims: &mut Claims,
    ) -> Result<PublicKey, ConfigError> {
        let field = format!("peer[{i}].public_key");
        let public_key = self.check(raw, &field, |s| {
            s.parse::<PublicKey>()
                .map_err(|e| Invalid::new(format!("{s:?} is not a public key: {e}")).with_source(e))
        })?;
        if let Some((first, span)) = claims.keys.get(&public_key) {
            return Err(self.error(
                &raw.span(),
                field,
                format!(
                    "{} is also the key of peer[{first}] (line {}); each peer needs its own key",
                    public_key.short(),
                    self.line(span)
                ),
            ));
        }
        claims.keys.insert(public_key, (i, raw.span()));
        Ok(public_key)
    }

    /// Peer `i`'s `allowed_ips`: inside the cluster, outside `subnet`, and not overlapping
    /// another peer's. (The agent checks "inside the cluster" again before it routes a prefix,
    /// as defence in depth, with `host::conflict`; here the error can name the line.)
    fn validate_allowed_ips(
        &self,
        i: usize,
        raw: &[Spanned<String>],
        OverlayBounds { subnet, cluster }: OverlayBounds,
        claims: &mut Claims,
    ) -> Result<Vec<IpNet>, ConfigError> {
        let mut allowed_ips = Vec::with_capacity(raw.len());
        let first_of_peer = claims.prefixes.len();
        for (j, v) in raw.iter().enumerate() {
            let here = format!("peer[{i}].allowed_ips[{j}]");
            let net = self.check(v, &here, |s| check_prefix(s))?;
            if let Some(subnet) = subnet.filter(|subnet| overlaps(&net, subnet)) {
                return Err(self.error(
                    &v.span(),
                    here,
                    format!(
                        "{net} overlaps agent.subnet {subnet}; a peer's allowed IPs must lie \
                         outside this host's own subnet"
                    ),
                ));
            }
            // Only other peers' prefixes: overlaps within one peer are redundant, not
            // ambiguous.
            if let Some((other, other_field, other_span)) = claims.prefixes[..first_of_peer]
                .iter()
                .find(|(other, _, _)| overlaps(&net, other))
            {
                return Err(self.error(
                    &v.span(),
                    here,
                    format!(
                        "{net} overlaps {other_field} {other} (line {}); the allowed IPs of \
                         different peers must not overlap",
                        self.line(other_span)
                    ),
                ));
            }
            if let Some(cluster) = cluster.filter(|cluster| !cluster.contains(&net)) {
                return Err(self.error(
                    &v.span(),
                    here,
                    format!(
                        "{net} is not inside agent.cluster_cidr {cluster}; a peer's allowed IPs \
                         must lie inside the cluster CIDR (widen cluster_cidr, or route this \
                         prefix some other way)"
                    ),
                ));
            }
            claims.prefixes.push((net, here, v.span()));
            allowed_ips.push(net);
        }
        Ok(allowed_ips)
    }
}
