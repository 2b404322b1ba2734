//! The host's keys while it rotates: the current one, and the one it retires at the end of a
//! grace window ([`HostKeys`]). During the window a handshake initiation may be addressed to
//! either, and [`HostKeys::identify_initiator`] says which one it was for, so that the peer's
//! tunnel of that key answers it.
//!
//! No I/O, no clock.

use std::net::IpAddr;
use std::sync::Arc;

use wgmesh_config::PublicKey;

use super::noise::{Identify, LocalIdentity, ProtocolError};

/// The host's identities: the current one, which every new tunnel speaks for, and while a
/// rotation's grace window lasts the retiring one, which tunnels of peers that have not moved yet
/// still speak for.
#[derive(Clone)]
pub struct HostKeys {
    /// The key new tunnels use.
    pub current: Arc<LocalIdentity>,
    /// The key being retired, accepted until the rotation ends.
    pub retiring: Option<Arc<LocalIdentity>>,
}

/// What [`HostKeys::identify_initiator`] found.
#[derive(Debug)]
pub enum Identified {
    /// An authentic initiation from `remote`, addressed to our key `local`.
    Peer {
        /// Which of our keys it was for.
        local: PublicKey,
        /// The initiator's static key.
        remote: PublicKey,
    },
    /// Under load: send the cookie reply of this length (written to `out`) back to the sender.
    CookieReply(usize),
    /// Valid for none of our keys.
    Invalid(ProtocolError),
}

impl HostKeys {
    /// One key, no rotation.
    pub fn one(current: Arc<LocalIdentity>) -> Self {
        Self {
            current,
            retiring: None,
        }
    }

    /// The identity whose public key is `key`, if it is one of ours.
    pub fn get(&self, key: &PublicKey) -> Option<&Arc<LocalIdentity>> {
        self.all().find(|id| id.public_key() == *key)
    }

    /// Whether `key` is one of ours.
    pub fn holds(&self, key: &PublicKey) -> bool {
        self.get(key).is_some()
    }

    /// The current identity, then the retiring one.
    pub fn all(&self) -> impl Iterator<Item = &Arc<LocalIdentity>> {
        std::iter::once(&self.current).chain(self.retiring.as_ref())
    }

    /// Checks a handshake initiation against the current key, then against the retiring one:
    /// which of ours it was for and who sent it.
    pub fn identify_initiator(&self, from: IpAddr, message: &[u8], out: &mut [u8]) -> Identified {
        let mut last = None;
        for local in self.all() {
            match local.identify_initiator(from, message, out) {
                Identify::Peer(remote) => {
                    return Identified::Peer {
                        local: local.public_key(),
                        remote,
                    }
                }
                Identify::CookieReply(len) => return Identified::CookieReply(len),
                Identify::Invalid(e) => last = Some(e),
            }
        }
        Identified::Invalid(last.expect("at least the current key was tried"))
    }
}

#[cfg(test)]
mod tests {
    use wgmesh_config::PrivateKey;

    use super::*;
    use crate::peers::noise::{Encapsulated, Tunnel};

    fn identity() -> Arc<LocalIdentity> {
        Arc::new(LocalIdentity::new(&PrivateKey::generate()))
    }

    fn initiation(from: &LocalIdentity, to: &PublicKey) -> Vec<u8> {
        let mut tunnel = Tunnel::new(from, to, None, None, 7);
        let mut buf = vec![0u8; 256];
        let Encapsulated::HandshakeInit(n) = tunnel.encapsulate(&[0x45; 20], &mut buf) else {
            panic!("expected an initiation");
        };
        buf.truncate(n);
        buf
    }

    #[test]
    fn an_initiation_for_either_key_names_that_key_and_a_stranger_s_is_invalid() {
        let (old, new, peer) = (identity(), identity(), identity());
        let keys = HostKeys {
            current: new.clone(),
            retiring: Some(old.clone()),
        };
        let from = "198.18.0.9".parse().unwrap();
        let mut out = [0u8; 64];
        for local in [&old, &new] {
            let init = initiation(&peer, &local.public_key());
            match keys.identify_initiator(from, &init, &mut out) {
                Identified::Peer {
                    local: l,
                    remote: r,
                } => assert_eq!((l, r), (local.public_key(), peer.public_key())),
                other => panic!("unexpected {other:?}"),
            }
        }
        let stranger = identity();
        let init = initiation(&peer, &stranger.public_key());
        assert!(matches!(
            keys.identify_initiator(from, &init, &mut out),
            Identified::Invalid(_)
        ));
        // Once the old key is retired, initiations for it are refused.
        let init = initiation(&peer, &old.public_key());
        assert!(matches!(
            HostKeys::one(new).identify_initiator(from, &init, &mut out),
            Identified::Invalid(_)
        ));
        assert!(keys.holds(&old.public_key()) && !keys.holds(&stranger.public_key()));
    }
}
