//! Preshared keys for pairs of hosts (`preshared_keys = true` in control.toml): WireGuard's
//! protection against a future break of Curve25519, one key per pair of hosts.
//!
//! Each pair's key is derived, not stored: `BLAKE2s-MAC(secret, label ‖ lower host id ‖ higher
//! host id ‖ their public keys in that order)`, keyed by one 32-byte secret in
//! `{state_dir}/preshared-keys.secret` (0600, made at the first start with the option). So the
//! store, its snapshots and its mutations hold no preshared key at all: a copy of them reveals
//! none, and only the secret file (beside the CA key, equally protected) does. The host ids are
//! part of it because ids are never reused while keys can be claimed again: a host that joins or
//! rotates to a key another host retired gets pairs of its own id, never the old pairs' keys.
//! Pairs differ, a
//! pair's key is the same seen from either host, and a key rotation of either host gives its
//! pairs new preshared keys with the new keys (the old pair's key stays while the old key does,
//! so tunnels move over without a loss). A host is sent only the keys of pairs that include one
//! of its own keys ([`attach`]), in its netmap, over its authenticated TLS channel.
//!
//! Why the control plane and not the pair: a pair could agree on a key inside its tunnel
//! without the control plane ever seeing it, but only a post-quantum key exchange (ML-KEM, as
//! Rosenpass does) would protect against the break the preshared key is there for; that is a
//! protocol of its own, left for later. A control plane that knows the preshared keys learns
//! nothing of the traffic without the hosts' private keys, which never leave them.

use std::io;
use std::path::Path;

use blake2::digest::{FixedOutput, KeyInit, Update};
use blake2::Blake2sMac256;
use wgmesh_config::netmap::{HostIdentity, NetmapPeer, PairKey};
use wgmesh_config::{PresharedKey, PublicKey};
use zeroize::Zeroize;

use crate::ids::HostId;

/// The file of the secret, in the state directory.
pub const SECRET_FILE: &str = "preshared-keys.secret";

const LABEL: &[u8] = b"wgmesh pair preshared key v1";

/// The secret every pair's preshared key is derived from.
pub struct PskSecret([u8; 32]);

impl Drop for PskSecret {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl PskSecret {
    /// A secret of these bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The secret in `state_dir`, made (0600) when there is none.
    pub fn load_or_create(state_dir: &Path) -> io::Result<Self> {
        let path = state_dir.join(SECRET_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => {
                let bytes = zeroize::Zeroizing::new(bytes);
                let array: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
                    io::Error::other(format!(
                        "{}: not a preshared-key secret (32 bytes expected, {} found)",
                        path.display(),
                        bytes.len()
                    ))
                })?;
                Ok(Self(array))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let secret = PresharedKey::generate();
                wgmesh_client::atomic_file::write(&path, secret.as_bytes(), 0o600)
                    .map_err(|e| e.source)?;
                Ok(Self(*secret.as_bytes()))
            }
            Err(e) => Err(e),
        }
    }

    /// The preshared key of host `a`'s key `ka` with host `b`'s key `kb` (in either order).
    pub fn pair_key(
        &self,
        (a, ka): (HostId, &PublicKey),
        (b, kb): (HostId, &PublicKey),
    ) -> PresharedKey {
        let ((lo, klo), (hi, khi)) = if (a.0, ka.as_bytes()) <= (b.0, kb.as_bytes()) {
            ((a, ka), (b, kb))
        } else {
            ((b, kb), (a, ka))
        };
        let mut mac = <Blake2sMac256 as KeyInit>::new_from_slice(&self.0).expect("a 32-byte key");
        mac.update(LABEL);
        mac.update(&lo.0.to_be_bytes());
        mac.update(&hi.0.to_be_bytes());
        mac.update(klo.as_bytes());
        mac.update(khi.as_bytes());
        let out: [u8; 32] = mac.finalize_fixed().into();
        PresharedKey::from_bytes(out)
    }
}

/// Gives every peer of host `id` (whose netmap identity is `host`) the preshared keys of each
/// pair of one of the host's keys (its registered one, and the new one its rotation announced)
/// and one of the peer's; `id_of` gives a peer's host id by name (a peer without one gets none).
pub fn attach(
    secret: &PskSecret,
    id: HostId,
    host: &HostIdentity,
    peers: &mut [NetmapPeer],
    id_of: impl Fn(&str) -> Option<HostId>,
) {
    let ours: Vec<PublicKey> = std::iter::once(host.public_key)
        .chain(host.rotation.and_then(|r| r.new_key))
        .collect();
    for peer in peers {
        let Some(peer_id) = id_of(&peer.name) else {
            peer.preshared_keys.clear();
            continue;
        };
        peer.preshared_keys = ours
            .iter()
            .flat_map(|local| {
                peer.public_keys.iter().map(move |remote| PairKey {
                    local_key: *local,
                    remote_key: *remote,
                    key: secret.pair_key((id, local), (peer_id, remote)),
                })
            })
            .collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> PublicKey {
        PublicKey::from_bytes([b; 32])
    }

    fn h(id: u64, k: &PublicKey) -> (HostId, &PublicKey) {
        (HostId(id), k)
    }

    #[test]
    fn pairs_differ_and_a_pair_is_the_same_from_either_side() {
        let s = PskSecret::from_bytes([7; 32]);
        let (k1, k2, k3) = (key(1), key(2), key(3));
        let ab = s.pair_key(h(1, &k1), h(2, &k2));
        assert_eq!(ab.as_bytes(), s.pair_key(h(2, &k2), h(1, &k1)).as_bytes());
        assert_ne!(ab.as_bytes(), s.pair_key(h(1, &k1), h(3, &k3)).as_bytes());
        assert_ne!(ab.as_bytes(), s.pair_key(h(2, &k2), h(3, &k3)).as_bytes());
        let other = PskSecret::from_bytes([8; 32]);
        assert_ne!(
            ab.as_bytes(),
            other.pair_key(h(1, &k1), h(2, &k2)).as_bytes()
        );
        // Host 3 claiming host 2's (retired) key gets a pair of its own, not host 2's.
        assert_ne!(ab.as_bytes(), s.pair_key(h(1, &k1), h(3, &k2)).as_bytes());
    }

    #[test]
    fn the_secret_is_made_once_0600_and_kept() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let first = PskSecret::load_or_create(dir.path()).unwrap();
        let mode = std::fs::metadata(dir.path().join(SECRET_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = PskSecret::load_or_create(dir.path()).unwrap();
        let (k1, k2) = (key(1), key(2));
        assert_eq!(
            first.pair_key(h(1, &k1), h(2, &k2)).as_bytes(),
            again.pair_key(h(1, &k1), h(2, &k2)).as_bytes()
        );
        std::fs::write(dir.path().join(SECRET_FILE), b"short").unwrap();
        let err = PskSecret::load_or_create(dir.path())
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("32 bytes expected"), "{err}");
    }
}
