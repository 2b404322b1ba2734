//! The credentials someone holds, kept beside the control plane's lock: a request from an
//! address the refusal limiter limits goes on only if its bearer token is one of them, decided
//! without taking that lock, so a limited flood never reaches it. The same lookups decide, before
//! a body is read, whether a route's larger body limit applies (only to the admin for a policy,
//! only to a host for a workload report). Only those choices are made here: every request that
//! goes on is still authenticated under the lock.

use std::collections::HashSet;
use std::str::FromStr;
use std::sync::Mutex;

use wgmesh_config::token::{AdminToken, HostCredential, SecretHash};

use crate::service::Control;

/// The admin token's hash and the hosts' credential hashes, as of a registry revision.
#[derive(Debug)]
pub(super) struct KnownCredentials {
    admin: SecretHash,
    hosts: Mutex<Hosts>,
}

#[derive(Debug)]
struct Hosts {
    /// The registry revision the hashes are of.
    revision: u64,
    hashes: HashSet<[u8; 32]>,
}

impl Hosts {
    fn of(control: &Control) -> Self {
        let registry = control.registry();
        Self {
            revision: registry.revision(),
            hashes: registry
                .hosts()
                .values()
                .map(|h| *h.credential_hash.as_bytes())
                .collect(),
        }
    }
}

impl KnownCredentials {
    /// The credentials `control` knows now.
    pub(super) fn of(control: &Control) -> Self {
        Self {
            admin: *control.admin_hash(),
            hosts: Mutex::new(Hosts::of(control)),
        }
    }

    /// Takes the hosts' credentials again if the registry changed since (under the control
    /// plane's lock, after a call; a pass over the hosts when a host joined or left).
    pub(super) fn refresh(&self, control: &Control) {
        if self.lock().revision == control.registry().revision() {
            return;
        }
        let fresh = Hosts::of(control);
        *self.lock() = fresh;
    }

    /// Whether `bearer` is the admin token or a host's credential (a hash and a set lookup).
    pub(super) fn holds(&self, bearer: &str) -> bool {
        self.is_admin(bearer) || self.is_host(bearer)
    }

    /// Whether `bearer` is the admin token (a hash): the one caller whose policy bodies may
    /// exceed [`MAX_BODY`](wgmesh_client::api::MAX_BODY).
    pub(super) fn is_admin(&self, bearer: &str) -> bool {
        AdminToken::from_str(bearer).is_ok_and(|admin| admin.hash().ct_eq(&self.admin))
    }

    /// Whether `bearer` is some host's credential (a hash and a set lookup), as of the last
    /// call: the only callers whose workload reports may exceed
    /// [`MAX_BODY`](wgmesh_client::api::MAX_BODY). Which host it is, and whether it may report
    /// for the route's host, is decided under the lock.
    pub(super) fn is_host(&self, bearer: &str) -> bool {
        HostCredential::from_str(bearer)
            .is_ok_and(|c| self.lock().hashes.contains(c.hash().as_bytes()))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Hosts> {
        // Held for a lookup or a swap only; a panic cannot leave the set half-changed.
        self.hosts.lock().unwrap_or_else(|e| e.into_inner())
    }
}
