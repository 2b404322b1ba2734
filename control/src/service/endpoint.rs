//! Which endpoints a host may give for itself (at join and in endpoint reports): other hosts
//! send WireGuard packets to it, so it must be an address a packet can really be sent to on
//! the underlay. Refused, each with a message naming what is refused and what would be valid:
//! port 0, the addresses no peer can be reached at ([`Unusable`], the rule the agent applies to
//! roaming too), and addresses inside the cluster CIDR (the overlay itself: a packet loop). Without these checks a host
//! could point every agent's traffic at their own loopback or at a multicast group (a
//! reflection vector).
//!
//! Pure: no I/O.

use std::net::SocketAddr;

use ipnet::IpNet;
use wgmesh_client::api::ApiReason;
use wgmesh_config::endpoint::Unusable;

use super::refusal::ApiError;

const VALID: &str = "give the host's underlay address and WireGuard port, such as \
                     \"198.18.0.5:51820\" (a unicast address other hosts can reach), or none";

/// Checks a request's `endpoint` for a cluster of `cluster` (the cluster CIDR, when the
/// registry has one).
pub(super) fn check_endpoint(
    endpoint: Option<SocketAddr>,
    cluster: Option<IpNet>,
) -> Result<(), ApiError> {
    let Some(endpoint) = endpoint else {
        return Ok(());
    };
    if endpoint.port() == 0 {
        return Err(refused(endpoint, "has port 0"));
    }
    let ip = endpoint.ip().to_canonical();
    if let Some(class) = Unusable::of(ip) {
        return Err(refused(endpoint, &format!("is a {class} address")));
    }
    if let Some(cidr) = cluster.filter(|c| c.contains(&ip)) {
        return Err(refused(
            endpoint,
            &format!(
                "is inside the cluster CIDR {cidr}, the overlay itself (packets to it would loop \
                 through the tunnel)"
            ),
        ));
    }
    Ok(())
}

fn refused(endpoint: SocketAddr, why: &str) -> ApiError {
    ApiError::new(
        ApiReason::BadEndpoint,
        format!("endpoint: {endpoint} {why}; {VALID}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(endpoint: &str, cluster: Option<&str>) -> Result<(), ApiError> {
        check_endpoint(
            Some(endpoint.parse().unwrap()),
            cluster.map(|c| c.parse().unwrap()),
        )
    }

    #[test]
    fn unicast_underlay_endpoints_are_accepted() {
        let cluster = Some("10.42.0.0/16");
        for ok in [
            "198.18.0.5:51820",
            "192.0.2.1:1",
            "10.43.0.1:51820",
            "[2001:db8::5]:51820",
            "[fd00::1]:51820",
            "[::ffff:198.18.0.5]:51820",
        ] {
            assert_eq!(check(ok, cluster), Ok(()), "{ok}");
        }
        assert_eq!(check_endpoint(None, None), Ok(()), "no endpoint");
    }

    #[test]
    fn each_unreachable_class_is_refused_by_name() {
        for (bad, class) in [
            ("198.18.0.5:0", "port 0"),
            ("0.0.0.0:51820", "unspecified"),
            ("0.1.2.3:51820", "unspecified"),
            ("[::]:51820", "unspecified"),
            ("127.0.0.1:51820", "loopback"),
            ("127.9.9.9:51820", "loopback"),
            ("[::1]:51820", "loopback"),
            ("[::ffff:127.0.0.1]:51820", "loopback"),
            ("224.0.0.1:51820", "multicast"),
            ("239.255.255.250:1900", "multicast"),
            ("[ff02::1]:51820", "multicast"),
            ("169.254.1.1:51820", "link-local"),
            ("[fe80::1]:51820", "link-local"),
            ("[febf::1]:51820", "link-local"),
            ("255.255.255.255:51820", "broadcast"),
        ] {
            let e = check(bad, None).unwrap_err();
            assert_eq!(e.reason, ApiReason::BadEndpoint, "{bad}");
            assert!(e.message.contains(class), "{bad}: {}", e.message);
            assert!(
                e.message.contains("198.18.0.5:51820"),
                "says what is valid: {}",
                e.message
            );
        }
    }

    #[test]
    fn cluster_cidr_endpoints_are_refused() {
        let e = check("10.42.3.1:51820", Some("10.42.0.0/16")).unwrap_err();
        assert_eq!(e.reason, ApiReason::BadEndpoint);
        assert!(
            e.message.contains("cluster CIDR 10.42.0.0/16"),
            "{}",
            e.message
        );
        let e = check("[fd42::7]:51820", Some("fd42::/48")).unwrap_err();
        assert!(e.message.contains("fd42::/48"), "{}", e.message);
        assert_eq!(check("10.42.3.1:51820", None), Ok(()), "no cluster yet");
    }
}
