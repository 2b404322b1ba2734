//! The parsers against JSON captured from Debian's dockerd 20.10.24 (API 1.41).

use super::*;

/// `GET /containers/json` with two running containers: `c2` on `--network none` with no
/// labels, `c1` on the default bridge with two labels.
const CONTAINERS: &str = r#"[{"Id":"2a2988fd19aed82928633940215d971e010eba559b0f2cccf51fce2d10f22817","Names":["/c2"],"Image":"we1bb:1","ImageID":"sha256:73c4eede3a179fd6b711ff520a8f44ab2a3ef27b28f17f27e7a893a0813ecf67","Command":"sleep 300","Created":1796245640,"Ports":[],"Labels":{},"State":"running","Status":"Up Less than a second","HostConfig":{"NetworkMode":"none"},"NetworkSettings":{"Networks":{"none":{"IPAMConfig":null,"Links":null,"Aliases":null,"NetworkID":"385e624c2a40ac05635f2a6c059f7bffde667b78ac626d0d060acad5db47cf49","EndpointID":"a53359a8b48bd9ba2bd5a9432d60d95ce655cdf2c6738cefd52a3a5fec799cbb","Gateway":"","IPAddress":"","IPPrefixLen":0,"IPv6Gateway":"","GlobalIPv6Address":"","GlobalIPv6PrefixLen":0,"MacAddress":"","DriverOpts":null}}},"Mounts":[]},{"Id":"4bf17c0ebf8354c4938bfc2d2f29b7b8e6a83dee0adbb863e4edf2f284fbe272","Names":["/c1"],"Image":"we1bb:1","ImageID":"sha256:73c4eede3a179fd6b711ff520a8f44ab2a3ef27b28f17f27e7a893a0813ecf67","Command":"sleep 300","Created":1796245640,"Ports":[],"Labels":{"app":"x","role":"backend"},"State":"running","Status":"Up Less than a second","HostConfig":{"NetworkMode":"default"},"NetworkSettings":{"Networks":{"bridge":{"IPAMConfig":null,"Links":null,"Aliases":null,"NetworkID":"14c36d4b63ee28810441d9a769d64c64ee2c3345a8811bb0c2f73d502fcbbc9a","EndpointID":"fbd868d38f2345be6b8844eb9aa213faebd514538403cf8f5527124d93d943ca","Gateway":"172.17.0.1","IPAddress":"172.17.0.2","IPPrefixLen":16,"IPv6Gateway":"","GlobalIPv6Address":"","GlobalIPv6PrefixLen":0,"MacAddress":"02:42:ac:11:00:02","DriverOpts":null}}},"Mounts":[]}]"#;

/// `GET /networks/bridge`.
const BRIDGE: &str = r#"{"Name":"bridge","Id":"14c36d4b63ee28810441d9a769d64c64ee2c3345a8811bb0c2f73d502fcbbc9a","Created":"2026-12-02T21:07:15.494718166Z","Scope":"local","Driver":"bridge","EnableIPv6":false,"IPAM":{"Driver":"default","Options":null,"Config":[{"Subnet":"172.17.0.0/16"}]},"Internal":false,"Attachable":false,"Ingress":false,"ConfigFrom":{"Network":""},"ConfigOnly":false,"Containers":{"4bf17c0ebf8354c4938bfc2d2f29b7b8e6a83dee0adbb863e4edf2f284fbe272":{"Name":"c1","EndpointID":"fbd868d38f2345be6b8844eb9aa213faebd514538403cf8f5527124d93d943ca","MacAddress":"02:42:ac:11:00:02","IPv4Address":"172.17.0.2/16","IPv6Address":""}},"Options":{"com.docker.network.bridge.default_bridge":"true","com.docker.network.bridge.enable_icc":"true","com.docker.network.bridge.enable_ip_masquerade":"true","com.docker.network.bridge.host_binding_ipv4":"0.0.0.0","com.docker.network.bridge.name":"docker0","com.docker.network.driver.mtu":"1500"},"Labels":{}}"#;

/// Events of `docker run -d --name c3 --network n2 --label a=b ...`, `network disconnect`,
/// `rename c3 c4`, `exec` and `rm -f c4`, one per line.
const EVENTS: &str = r#"{"status":"create","id":"cfbd9df0bfc1f451be6aa144934bf6fee37b7a2a3e9f9757cd6550cd178b500a","from":"we1bb:1","Type":"container","Action":"create","Actor":{"ID":"cfbd9df0bfc1f451be6aa144934bf6fee37b7a2a3e9f9757cd6550cd178b500a","Attributes":{"a":"b","image":"we1bb:1","name":"c3"}},"scope":"local","time":1796245701,"timeNano":1796245701274915096}
{"Type":"network","Action":"connect","Actor":{"ID":"4013dd1353a56ade3529b9818751dd1b45636fbf52fb2f3f585dd2f0bd04d555","Attributes":{"container":"cfbd9df0bfc1f451be6aa144934bf6fee37b7a2a3e9f9757cd6550cd178b500a","name":"n2","type":"bridge"}},"scope":"local","time":1796245701,"timeNano":1796245701284282949}
{"status":"start","id":"cfbd9df0bfc1f451be6aa144934bf6fee37b7a2a3e9f9757cd6550cd178b500a","from":"we1bb:1","Type":"container","Action":"start","Actor":{"ID":"cfbd9df0bfc1f451be6aa144934bf6fee37b7a2a3e9f9757cd6550cd178b500a","Attributes":{"a":"b","image":"we1bb:1","name":"c3"}},"scope":"local","time":1796245701,"timeNano":1796245701543116297}
{"Type":"network","Action":"disconnect","Actor":{"ID":"4013dd1353a56ade3529b9818751dd1b45636fbf52fb2f3f585dd2f0bd04d555","Attributes":{"container":"cfbd9df0bfc1f451be6aa144934bf6fee37b7a2a3e9f9757cd6550cd178b500a","name":"n2","type":"bridge"}},"scope":"local","time":1796245701,"timeNano":1796245701622109155}
{"status":"rename","id":"cfbd9df0bfc1f451be6aa144934bf6fee37b7a2a3e9f9757cd6550cd178b500a","from":"we1bb:1","Type":"container","Action":"rename","Actor":{"ID":"cfbd9df0bfc1f451be6aa144934bf6fee37b7a2a3e9f9757cd6550cd178b500a","Attributes":{"a":"b","image":"we1bb:1","name":"c4","oldName":"/c3"}},"scope":"local","time":1796245701,"timeNano":1796245701702379968}
{"status":"exec_start: sh -c true","id":"cfbd9df0bfc1f451be6aa144934bf6fee37b7a2a3e9f9757cd6550cd178b500a","from":"we1bb:1","Type":"container","Action":"exec_start: sh -c true","Actor":{"ID":"cfbd9df0bfc1f451be6aa144934bf6fee37b7a2a3e9f9757cd6550cd178b500a","Attributes":{"execID":"5d1c","image":"we1bb:1","name":"c4"}},"scope":"local","time":1796245701,"timeNano":1796245701712379968}
{"status":"die","id":"cfbd9df0bfc1f451be6aa144934bf6fee37b7a2a3e9f9757cd6550cd178b500a","from":"we1bb:1","Type":"container","Action":"die","Actor":{"ID":"cfbd9df0bfc1f451be6aa144934bf6fee37b7a2a3e9f9757cd6550cd178b500a","Attributes":{"a":"b","exitCode":"137","image":"we1bb:1","name":"c4"}},"scope":"local","time":1796245701,"timeNano":1796245701754814571}
{"status":"destroy","id":"cfbd9df0bfc1f451be6aa144934bf6fee37b7a2a3e9f9757cd6550cd178b500a","from":"we1bb:1","Type":"container","Action":"destroy","Actor":{"ID":"cfbd9df0bfc1f451be6aa144934bf6fee37b7a2a3e9f9757cd6550cd178b500a","Attributes":{"a":"b","image":"we1bb:1","name":"c4"}},"scope":"local","time":1796245701,"timeNano":1796245701816249057}"#;

const C1: &str = "4bf17c0ebf8354c4938bfc2d2f29b7b8e6a83dee0adbb863e4edf2f284fbe272";
const BRIDGE_ID: &str = "14c36d4b63ee28810441d9a769d64c64ee2c3345a8811bb0c2f73d502fcbbc9a";

#[test]
fn containers_from_dockerd_20_10() {
    let list = parse_containers(CONTAINERS.as_bytes()).unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0].name, "c2");
    assert!(list[0].labels.is_empty());
    assert_eq!(list[0].endpoints[0].network_name, "none");
    let c1 = &list[1];
    assert_eq!(c1.id, C1);
    assert_eq!(c1.name, "c1");
    assert_eq!(
        c1.labels,
        BTreeMap::from([
            ("app".to_string(), "x".to_string()),
            ("role".to_string(), "backend".to_string())
        ])
    );
    assert_eq!(
        c1.endpoints,
        vec![ContainerEndpoint {
            network_id: BRIDGE_ID.into(),
            network_name: "bridge".into(),
            endpoint_id: "fbd868d38f2345be6b8844eb9aa213faebd514538403cf8f5527124d93d943ca".into(),
            ip: Some("172.17.0.2".parse().unwrap()),
        }]
    );
}

#[test]
fn go_nulls_and_missing_fields_are_empty() {
    let body = r#"[{"Id":"a","Names":null,"Labels":null,"NetworkSettings":{"Networks":{}}},
                   {"Id":"b","NetworkSettings":null},
                   {"Id":"c","NetworkSettings":{"Networks":null}},
                   {"Id":"d","NetworkSettings":{"Networks":{"n":null,"m":{"NetworkID":null}}}}]"#;
    let list = parse_containers(body.as_bytes()).unwrap();
    assert_eq!(list.len(), 4);
    for c in &list[..3] {
        assert_eq!(c.name, "");
        assert!(c.labels.is_empty());
        assert!(c.endpoints.is_empty());
    }
    assert_eq!(
        list[3].endpoints,
        vec![ContainerEndpoint {
            network_id: String::new(),
            network_name: "m".into(),
            endpoint_id: String::new(),
            ip: None,
        }]
    );
    assert_eq!(parse_containers(b"[]").unwrap(), vec![]);
}

#[test]
fn a_container_without_id_or_a_non_list_is_refused() {
    assert!(parse_containers(br#"[{"Names":["/x"]}]"#).is_err());
    assert!(parse_containers(br#"{"message":"x"}"#).is_err());
    assert!(parse_containers(b"[{").is_err());
}

#[test]
fn the_name_is_the_one_without_a_link_path() {
    let body = r#"[{"Id":"a","Names":["/web/db","/db"]},{"Id":"b","Names":["/x/y"]}]"#;
    let list = parse_containers(body.as_bytes()).unwrap();
    assert_eq!(list[0].name, "db");
    assert_eq!(list[1].name, "x/y");
}

#[test]
fn network_from_dockerd_20_10() {
    assert_eq!(
        parse_network(BRIDGE.as_bytes()).unwrap(),
        Network {
            id: BRIDGE_ID.into(),
            name: "bridge".into(),
            driver: "bridge".into(),
            ipam_driver: "default".into(),
        }
    );
    let n = parse_network(br#"{"Id":"x","Name":"n","Driver":"wgmesh","IPAM":null}"#).unwrap();
    assert_eq!((n.driver.as_str(), n.ipam_driver.as_str()), ("wgmesh", ""));
    assert!(parse_network(br#"{"Name":"n"}"#).is_err());
}

#[test]
fn created_network_id_and_warning() {
    let body = br#"{"Id":"4013dd1353a56ade3529b9818751dd1b45636fbf52fb2f3f585dd2f0bd04d555","Warning":""}"#;
    let (id, warning) = parse_created(body).unwrap();
    assert_eq!(
        id,
        "4013dd1353a56ade3529b9818751dd1b45636fbf52fb2f3f585dd2f0bd04d555"
    );
    assert_eq!(warning, "");
    assert!(parse_created(br#"{"Warning":"w"}"#).is_err());
}

#[test]
fn docker_error_messages_verbatim() {
    assert_eq!(
        error_message(br#"{"message":"plugin \"nosuchdrv\" not found"}"#),
        r#"plugin "nosuchdrv" not found"#
    );
    assert_eq!(
        error_message(br#"{"message":"network with name n2 already exists"}"#),
        "network with name n2 already exists"
    );
    assert_eq!(error_message(b"404 page not found\n"), "404 page not found");
}

#[test]
fn events_from_dockerd_20_10() {
    let events: Vec<Event> = EVENTS
        .lines()
        .map(|l| parse_event(l.as_bytes()).unwrap())
        .collect();
    let got: Vec<(&str, &str, bool)> = events
        .iter()
        .map(|e| (e.kind.as_str(), e.action.as_str(), e.touches_containers()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("container", "create", true),
            ("network", "connect", true),
            ("container", "start", true),
            ("network", "disconnect", true),
            ("container", "rename", true),
            ("container", "exec_start: sh -c true", false),
            ("container", "die", true),
            ("container", "destroy", true),
        ]
    );
    assert_eq!(
        events[1].id,
        "4013dd1353a56ade3529b9818751dd1b45636fbf52fb2f3f585dd2f0bd04d555"
    );
    assert_eq!(
        events[0].id,
        "cfbd9df0bfc1f451be6aa144934bf6fee37b7a2a3e9f9757cd6550cd178b500a"
    );
}

#[test]
fn events_that_cannot_change_containers() {
    let ev = |kind: &str, action: &str| Event {
        kind: kind.into(),
        action: action.into(),
        id: "x".into(),
    };
    assert!(!ev("container", "health_status: healthy").touches_containers());
    assert!(!ev("container", "exec_die").touches_containers());
    assert!(!ev("container", "resize").touches_containers());
    assert!(!ev("network", "create").touches_containers());
    assert!(!ev("network", "destroy").touches_containers());
    assert!(!ev("image", "pull").touches_containers());
    assert!(ev("container", "update").touches_containers());
    assert!(ev("container", "stop").touches_containers());
    assert!(ev("container", "kill").touches_containers());
}

#[test]
fn an_event_missing_its_actor_parses_with_an_empty_id() {
    let e = parse_event(br#"{"Type":"container","Action":"start","Actor":null}"#).unwrap();
    assert_eq!(e.id, "");
    assert!(parse_event(b"not json").is_err());
}
