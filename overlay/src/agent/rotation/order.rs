//! What a host does about its control plane's rotation order ([`KeyRotationOrder`] in its
//! netmap): a pure decision from the netmap's host section and the keys the host holds.
//!
//! The protocol, from the host's side:
//! - *requested* (an order without `new_key`): make a new key (it never leaves the host), keep
//!   both on disk, accept both, and report the new public key for the order's epoch;
//! - *announced* (`new_key` is ours): the peers have it first in their netmaps; once every peer
//!   that had a session carries traffic on the new key's tunnel, report that the peers moved;
//! - no order, and the registered key is our new one: the rotation completed, retire the old key;
//! - no order, and the registered key is our old one: the rotation was abandoned (its deadline
//!   passed before our report arrived), go back to the old key.
//!
//! No I/O.

use wgmesh_config::netmap::{HostIdentity, KeyRotationOrder};
use wgmesh_config::PublicKey;

/// The keys this host holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct HeldKeys {
    /// The current key.
    pub(super) current: PublicKey,
    /// The key being retired, while a rotation runs.
    pub(super) retiring: Option<PublicKey>,
    /// The epoch the rotation was made for (control mode).
    pub(super) epoch: Option<u64>,
}

/// One step; the agent takes it and decides again, until [`KeyStep::Nothing`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum KeyStep {
    /// Nothing to do.
    Nothing,
    /// Make a new key for this epoch (the old one is kept until the rotation ends).
    Rotate {
        /// The order's epoch.
        epoch: u64,
    },
    /// Report the new key of this epoch (again: the control plane may not have it).
    Report {
        /// The order's epoch.
        epoch: u64,
        /// Our new key.
        key: PublicKey,
        /// Whether the peers moved to it.
        moved: bool,
    },
    /// The rotation completed: forget the old key.
    Retire,
    /// The rotation was abandoned: the old key is current again, the new one forgotten.
    RollBack,
    /// The order announces a key this host does not hold: nothing is done (a confused or lying
    /// control plane; the old key stays accepted, so nothing breaks).
    Foreign {
        /// The key announced.
        key: PublicKey,
    },
}

/// The next step for the netmap's `host` section, given the keys held and whether every peer
/// moved to our current key.
pub(super) fn next_step(host: &HostIdentity, held: &HeldKeys, moved: bool) -> KeyStep {
    let registered = host.public_key;
    match (host.rotation, held.retiring) {
        (None, Some(_)) if registered == held.current => KeyStep::Retire,
        (None, Some(old)) if registered == old => KeyStep::RollBack,
        (None, _) => KeyStep::Nothing,
        (
            Some(KeyRotationOrder {
                epoch,
                new_key: None,
            }),
            None,
        ) => {
            if registered == held.current {
                KeyStep::Rotate { epoch }
            } else {
                KeyStep::Nothing
            }
        }
        (
            Some(KeyRotationOrder {
                epoch,
                new_key: None,
            }),
            Some(old),
        ) => {
            if registered == old && held.epoch == Some(epoch) {
                // Made already (before a restart, or the report was lost): report it again.
                KeyStep::Report {
                    epoch,
                    key: held.current,
                    moved: false,
                }
            } else if registered == old {
                // A new key of an older rotation, which the control plane gave up.
                KeyStep::RollBack
            } else if registered == held.current {
                // The last rotation completed while we did not see it: retire, then rotate.
                KeyStep::Retire
            } else {
                KeyStep::Nothing
            }
        }
        (
            Some(KeyRotationOrder {
                epoch,
                new_key: Some(key),
            }),
            _,
        ) => {
            if key != held.current {
                KeyStep::Foreign { key }
            } else if moved && held.retiring.is_some() {
                KeyStep::Report {
                    epoch,
                    key,
                    moved: true,
                }
            } else {
                KeyStep::Nothing
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> PublicKey {
        PublicKey::from_bytes([b; 32])
    }

    fn host(registered: u8, rotation: Option<(u64, Option<u8>)>) -> HostIdentity {
        HostIdentity {
            name: "a".into(),
            public_key: key(registered),
            subnet: "10.42.1.0/24".parse().unwrap(),
            endpoint: None,
            key_epoch: 0,
            rotation: rotation.map(|(epoch, new)| KeyRotationOrder {
                epoch,
                new_key: new.map(key),
            }),
        }
    }

    fn held(current: u8, retiring: Option<u8>, epoch: Option<u64>) -> HeldKeys {
        HeldKeys {
            current: key(current),
            retiring: retiring.map(key),
            epoch,
        }
    }

    #[test]
    fn a_whole_rotation_step_by_step() {
        // Requested: make a key.
        let h = host(1, Some((1, None)));
        assert_eq!(
            next_step(&h, &held(1, None, None), false),
            KeyStep::Rotate { epoch: 1 }
        );
        // Made (key 2): report it, and again after a restart or a lost report.
        let made = held(2, Some(1), Some(1));
        let report = KeyStep::Report {
            epoch: 1,
            key: key(2),
            moved: false,
        };
        assert_eq!(next_step(&h, &made, false), report);
        assert_eq!(next_step(&h, &made, true), report);
        // Announced: wait for the peers, then say they moved.
        let h = host(1, Some((1, Some(2))));
        assert_eq!(next_step(&h, &made, false), KeyStep::Nothing);
        assert_eq!(
            next_step(&h, &made, true),
            KeyStep::Report {
                epoch: 1,
                key: key(2),
                moved: true
            }
        );
        // Completed: retire the old key; then nothing more.
        let h = host(2, None);
        assert_eq!(next_step(&h, &made, true), KeyStep::Retire);
        assert_eq!(next_step(&h, &held(2, None, None), true), KeyStep::Nothing);
    }

    #[test]
    fn an_abandoned_rotation_rolls_back_and_a_missed_completion_retires_first() {
        let made = held(2, Some(1), Some(1));
        assert_eq!(next_step(&host(1, None), &made, false), KeyStep::RollBack);
        // A new order for epoch 2 while we hold a key of the abandoned epoch 1: back first.
        assert_eq!(
            next_step(&host(1, Some((2, None))), &made, false),
            KeyStep::RollBack
        );
        // Rotation 1 completed unseen (key 2 registered) and rotation 2 is requested.
        assert_eq!(
            next_step(&host(2, Some((2, None))), &made, false),
            KeyStep::Retire
        );
        assert_eq!(
            next_step(&host(2, Some((2, None))), &held(2, None, None), false),
            KeyStep::Rotate { epoch: 2 }
        );
    }

    #[test]
    fn a_key_we_do_not_hold_is_never_taken() {
        let h = host(1, Some((1, Some(9))));
        assert_eq!(
            next_step(&h, &held(1, None, None), true),
            KeyStep::Foreign { key: key(9) }
        );
        // Not our key registered and no order: nothing (check_ours refuses such a netmap).
        assert_eq!(
            next_step(&host(7, None), &held(1, Some(2), Some(1)), true),
            KeyStep::Nothing
        );
        assert_eq!(
            next_step(&host(7, Some((1, None))), &held(1, None, None), true),
            KeyStep::Nothing
        );
    }
}
