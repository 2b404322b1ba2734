use std::net::SocketAddr;

use ipnet::IpNet;
use wgmesh_config::{HostName, PublicKey};

use super::*;
use crate::ipam::IpamError;

pub(crate) fn key(n: u8) -> PublicKey {
    PublicKey::from_bytes([n; 32])
}

pub(crate) fn name(s: &str) -> HostName {
    s.parse().unwrap()
}

pub(crate) fn request(n: &str, k: u8) -> JoinRequest {
    JoinRequest {
        name: name(n),
        public_key: key(k),
        endpoint: Some(SocketAddr::from(([198, 18, 0, k], 51820))),
        labels: Labels::from([("zone".into(), "host".into())]),
    }
}

/// An initialised registry with one reusable token (secret "t") valid until 1000.
/// `r`'s snapshot (its JSON) loads back equal; with `edit.0` replaced by `edit.1` it is
/// refused with an error containing `refusal`.
pub(crate) fn assert_snapshot_round_trips(r: &Registry, edit: (&str, &str), refusal: &str) {
    let json = serde_json::to_string(r).unwrap();
    let back: Registry = serde_json::from_str(&json).unwrap();
    assert_eq!(&back, r);
    let broken = json.replace(edit.0, edit.1);
    let err = serde_json::from_str::<Registry>(&broken).unwrap_err();
    assert!(err.to_string().contains(refusal), "{err}");
}

pub(crate) fn registry() -> Registry {
    let mut r = Registry::default();
    let m = r
        .plan_initialize("10.42.0.0/16".parse().unwrap(), 24)
        .unwrap();
    r.apply(&m).unwrap();
    let m = r.plan_token(SecretHash::of(b"t"), 0, 1000, true, Labels::new());
    r.apply(&m).unwrap();
    r
}

pub(crate) fn join(r: &mut Registry, n: &str, k: u8) -> Result<Mutation, RegistryError> {
    let m = r.plan_join(
        request(n, k),
        &SecretHash::of(b"t"),
        SecretHash::of(n.as_bytes()),
        10,
    )?;
    r.apply(&m)?;
    Ok(m)
}

#[test]
fn join_assigns_ids_and_lowest_subnets() {
    let mut r = registry();
    join(&mut r, "a", 1).unwrap();
    join(&mut r, "b", 2).unwrap();
    let b = r.host_by_name("b").unwrap();
    assert_eq!(b.id, HostId(1));
    assert_eq!(b.subnet, "10.42.1.0/24".parse::<IpNet>().unwrap());
    assert_eq!(
        r.host_by_credential(&SecretHash::of(b"b")).map(|h| h.id),
        Some(HostId(1))
    );
    assert_eq!(r.revision(), 4);
    assert_eq!(r.tokens()[&TokenId(0)].used_by, vec![HostId(0), HostId(1)]);
}

#[test]
fn name_held_by_another_key_is_refused_until_removed() {
    let mut r = registry();
    join(&mut r, "a", 1).unwrap();
    let before = r.clone();
    let err = join(&mut r, "a", 2).unwrap_err();
    assert_eq!(
        err,
        RegistryError::NameTaken {
            name: name("a"),
            held_by: HostId(0)
        }
    );
    assert!(err.to_string().contains("an admin must remove it first"));
    assert_eq!(r, before);
    assert!(matches!(
        join(&mut r, "other", 1),
        Err(RegistryError::KeyTaken { .. })
    ));
    let m = r.plan_remove("a").unwrap();
    r.apply(&m).unwrap();
    join(&mut r, "a", 2).unwrap();
    // The freed subnet is reused and the id is not.
    let a = r.host_by_name("a").unwrap();
    assert_eq!(a.id, HostId(1));
    assert_eq!(a.subnet, "10.42.0.0/24".parse::<IpNet>().unwrap());
}

#[test]
fn a_second_join_of_a_name_is_refused_and_a_retry_is_recognised_by_its_credential() {
    let mut r = registry();
    join(&mut r, "a", 1).unwrap();
    join(&mut r, "b", 2).unwrap();
    // Name and key are public (every netmap lists them): they prove nothing.
    let hijack = r.plan_join(
        request("a", 1),
        &SecretHash::of(b"t"),
        SecretHash::of(b"attacker"),
        20,
    );
    assert!(
        matches!(hijack, Err(RegistryError::NameTaken { .. })),
        "{hijack:?}"
    );
    assert_eq!(
        r.joined_as(&request("a", 1), &SecretHash::of(b"attacker")),
        None
    );
    // The host itself, retrying with the credential it joined with.
    assert_eq!(
        r.joined_as(&request("a", 1), &SecretHash::of(b"a")),
        Some(HostId(0))
    );
    assert_eq!(r.joined_as(&request("a", 2), &SecretHash::of(b"a")), None);
}

#[test]
fn a_credential_belongs_to_one_host() {
    let mut r = registry();
    join(&mut r, "a", 1).unwrap();
    // Another host choosing host a's credential (a copied state directory).
    let err = r
        .plan_join(
            request("b", 2),
            &SecretHash::of(b"t"),
            SecretHash::of(b"a"),
            10,
        )
        .unwrap_err();
    assert_eq!(err, RegistryError::CredentialInUse(HostId(0)));
    // A snapshot with two hosts sharing one is refused as a whole.
    join(&mut r, "b", 2).unwrap();
    let mut snap = serde_json::to_value(&r).unwrap();
    snap["hosts"][1]["credential_hash"] = snap["hosts"][0]["credential_hash"].clone();
    let err = serde_json::from_value::<Registry>(snap).unwrap_err();
    assert!(err.to_string().contains("already host 0's"), "{err}");
}

#[test]
fn tokens_are_refused_with_the_reason() {
    let mut r = registry();
    let once = r.plan_token(
        SecretHash::of(b"once"),
        0,
        100,
        false,
        Labels::from([("zone".into(), "token".into())]),
    );
    r.apply(&once).unwrap();
    let plan = |r: &Registry, secret: &[u8], now| {
        r.plan_join(
            request("x", 9),
            &SecretHash::of(secret),
            SecretHash::of(b"c"),
            now,
        )
    };
    assert_eq!(
        plan(&r, b"nope", 10).unwrap_err().to_string(),
        "the join token is unknown"
    );
    assert_eq!(
        plan(&r, b"once", 100).unwrap_err().to_string(),
        "the join token 1 expired at 100 (unix seconds)"
    );
    let m = plan(&r, b"once", 99).unwrap();
    r.apply(&m).unwrap();
    // Token labels win over the host's own.
    assert_eq!(r.host_by_name("x").unwrap().labels["zone"], "token");
    assert_eq!(
        plan(&r, b"once", 50).unwrap_err().to_string(),
        "the join token 1 was already used by host 0"
    );
    // Replaying the same join again is refused too (single use holds under replay).
    assert!(matches!(
        r.check(&m),
        Err(RegistryError::Token(TokenRefused::Used { .. }))
    ));
    let revoke = r.plan_revoke_token(TokenId(0)).unwrap();
    r.apply(&revoke).unwrap();
    assert_eq!(
        plan(&r, b"t", 10).unwrap_err(),
        RegistryError::Token(TokenRefused::Revoked { id: TokenId(0) })
    );
}

#[test]
fn mutations_before_initialization_or_out_of_order_are_refused() {
    let mut r = Registry::default();
    let join = Mutation::HostJoined {
        id: HostId(0),
        name: name("a"),
        public_key: key(1),
        endpoint: None,
        subnet: "10.42.0.0/24".parse().unwrap(),
        labels: Labels::new(),
        credential_hash: SecretHash::of(b"a"),
        token: None,
        at: 0,
    };
    assert_eq!(r.apply(&join), Err(RegistryError::NotInitialized));
    r.apply(
        &r.plan_initialize("10.42.0.0/16".parse().unwrap(), 24)
            .unwrap(),
    )
    .unwrap();
    assert!(matches!(
        r.plan_initialize("10.0.0.0/8".parse().unwrap(), 24),
        Err(RegistryError::AlreadyInitialized { .. })
    ));
    r.apply(&join).unwrap();
    // The same subnet for another host is refused: IPAM never double-allocates.
    let mut twin = join.clone();
    if let Mutation::HostJoined {
        id,
        name: n,
        public_key,
        credential_hash,
        ..
    } = &mut twin
    {
        *id = HostId(5);
        *n = name("b");
        *public_key = key(2);
        *credential_hash = SecretHash::of(b"b");
    }
    assert!(matches!(
        r.apply(&twin),
        Err(RegistryError::Ipam(IpamError::AlreadyAllocated { .. }))
    ));
    assert!(matches!(
        r.apply(&Mutation::HostRemoved { id: HostId(9) }),
        Err(RegistryError::NoSuchHost(_))
    ));
}

#[test]
fn cluster_full_is_refused() {
    let mut r = Registry::default();
    r.apply(
        &r.plan_initialize("10.42.0.0/23".parse().unwrap(), 24)
            .unwrap(),
    )
    .unwrap();
    r.apply(&r.plan_token(SecretHash::of(b"t"), 0, 1000, true, Labels::new()))
        .unwrap();
    join(&mut r, "a", 1).unwrap();
    join(&mut r, "b", 2).unwrap();
    assert!(matches!(
        join(&mut r, "c", 3),
        Err(RegistryError::Ipam(IpamError::Exhausted { .. }))
    ));
}

#[test]
fn snapshot_round_trips_and_is_checked() {
    let mut r = registry();
    join(&mut r, "a", 1).unwrap();
    join(&mut r, "b", 2).unwrap();
    let m = r
        .plan_endpoint(HostId(1), Some("198.18.0.9:1".parse().unwrap()))
        .unwrap()
        .unwrap();
    r.apply(&m).unwrap();
    // A snapshot with two hosts on one subnet is refused.
    assert_snapshot_round_trips(&r, ("10.42.1.0/24", "10.42.0.0/24"), "already allocated");
}

#[test]
fn mutation_json_is_tagged_and_strict() {
    let m = Mutation::HostRemoved { id: HostId(3) };
    let json = serde_json::to_string(&m).unwrap();
    assert_eq!(json, r#"{"type":"host_removed","id":3}"#);
    assert!(serde_json::from_str::<Mutation>(r#"{"type":"host_removed","id":3,"x":1}"#).is_err());
    assert!(serde_json::from_str::<Mutation>(r#"{"type":"nope"}"#).is_err());
}

#[test]
fn host_names_parse() {
    assert!("".parse::<HostName>().is_err());
    assert!("a/b".parse::<HostName>().is_err());
    assert!("x".repeat(64).parse::<HostName>().is_err());
    assert!("host-a.b_c".parse::<HostName>().is_ok());
}

#[test]
fn token_rules_refuse_revoked_then_used_then_expired() {
    let mut token = Token {
        id: TokenId(4),
        secret_hash: SecretHash::of(b"t"),
        created_at: 0,
        expires_at: 100,
        reusable: false,
        labels: Labels::new(),
        used_by: Vec::new(),
        revoked: false,
    };
    assert_eq!(token.check_usable(Some(99)), Ok(()));
    let expired = TokenRefused::Expired {
        id: TokenId(4),
        expired_at: 100,
    };
    assert_eq!(token.check_usable(Some(100)), Err(expired));
    // Without a clock (replay), expiry is not checked.
    assert_eq!(token.check_usable(None), Ok(()));
    token.used_by.push(HostId(7));
    let used = TokenRefused::Used {
        id: TokenId(4),
        by: HostId(7),
    };
    assert_eq!(token.check_usable(Some(100)), Err(used.clone()));
    assert_eq!(token.check_usable(None), Err(used));
    token.reusable = true;
    assert_eq!(token.check_usable(Some(99)), Ok(()));
    token.revoked = true;
    let revoked = TokenRefused::Revoked { id: TokenId(4) };
    assert_eq!(token.check_usable(Some(100)), Err(revoked.clone()));
    assert_eq!(token.check_usable(None), Err(revoked));
}

pub(crate) mod policy;
mod rotation;
pub(crate) mod workloads;
