use super::*;

#[test]
fn static_calls_are_answered_without_the_agent() {
    let Route::Static(v) = route("/Plugin.Activate") else {
        panic!("activate is static")
    };
    assert_eq!(
        v["Implements"],
        serde_json::json!(["NetworkDriver", "IpamDriver"])
    );
    let Route::Static(v) = route("/NetworkDriver.GetCapabilities") else {
        panic!("capabilities are static")
    };
    assert_eq!(v["Scope"], "local", "no cluster store: local data scope");
    assert_eq!(
        route("/NetworkDriver.Join"),
        Route::Agent("NetworkDriver.Join")
    );
    assert_eq!(
        route("/IpamDriver.RequestPool"),
        Route::Agent("IpamDriver.RequestPool")
    );
    assert_eq!(route("/NetworkDriver.Reboot"), Route::Unknown);
    assert_eq!(route("/"), Route::Unknown);
}

#[test]
fn go_json_with_nulls_and_unknown_fields_parses() {
    // As Docker 20.10 sends it: no `--ipv6`, so IPv6Data is null; an unknown field.
    let body = br#"{"NetworkID":"abc","Options":{"com.docker.network.enable_ipv6":false,
        "com.docker.network.generic":{"com.docker.network.driver.mtu":"1400"}},
        "IPv4Data":[{"AddressSpace":"wgmesh","Gateway":"10.42.1.1/24","Pool":"0.0.0.0/0"}],
        "IPv6Data":null,"Future":1}"#;
    let Call::CreateNetwork(c) = parse_call("NetworkDriver.CreateNetwork", body).unwrap() else {
        panic!("a CreateNetwork")
    };
    assert_eq!(c.network_id, "abc");
    assert_eq!(c.generic_options()[MTU_OPTION], "1400");
    assert!(!c.ipv6());
    assert_eq!(c.ipv4_data[0].gateway, "10.42.1.1/24");
    assert!(c.ipv6_data.is_empty());

    let body = br#"{"NetworkID":"n","EndpointID":"e","Interface":{"Address":"10.42.1.2/24",
        "AddressIPv6":"","MacAddress":""},"Options":null}"#;
    let Call::CreateEndpoint(e) = parse_call("NetworkDriver.CreateEndpoint", body).unwrap() else {
        panic!("a CreateEndpoint")
    };
    assert_eq!(e.interface.address, "10.42.1.2/24");
    assert!(e.options.is_empty());

    let Call::RequestAddress(a) = parse_call(
        "IpamDriver.RequestAddress",
        br#"{"PoolID":"p","Address":"","Options":{"RequestAddressType":"com.docker.network.gateway"}}"#,
    )
    .unwrap() else {
        panic!("a RequestAddress")
    };
    assert!(a.for_gateway());
    // An empty body is an empty request, not an error.
    assert_eq!(
        parse_call("NetworkDriver.Leave", b"").unwrap(),
        Call::Leave(EndpointRef::default())
    );
}

#[test]
fn junk_is_an_error_not_a_panic() {
    for junk in [
        &b"{"[..],
        b"\xff\xfe",
        b"[1,2]",
        b"{\"NetworkID\":5}",
        b"null null",
    ] {
        assert!(
            parse_call("NetworkDriver.CreateEndpoint", junk).is_err(),
            "{junk:?}"
        );
    }
    assert!(parse_call("Nope.Nope", b"{}").is_err());
}

#[test]
fn answers_have_docker_field_names() {
    let j = Joined {
        interface_name: InterfaceName {
            src_name: "wgmdabcp".into(),
            dst_prefix: "eth".into(),
        },
        static_routes: vec![StaticRoute {
            destination: "10.42.0.0/16".into(),
            route_type: 0,
            next_hop: "10.42.1.1".into(),
        }],
    };
    assert_eq!(
        serde_json::to_value(j).unwrap(),
        serde_json::json!({
            "InterfaceName": {"SrcName": "wgmdabcp", "DstPrefix": "eth"},
            "StaticRoutes": [{"Destination": "10.42.0.0/16", "RouteType": 0, "NextHop": "10.42.1.1"}]
        })
    );
    assert_eq!(
        endpoint_created(Some("0a:58:0a:2a:01:02"))["Interface"]["MacAddress"],
        "0a:58:0a:2a:01:02"
    );
    assert_eq!(
        pool("id", "0.0.0.0/0", "10.42.1.1/24")["Data"][GATEWAY_KEY],
        "10.42.1.1/24"
    );
    assert_eq!(error("x")["Err"], "x");
}
