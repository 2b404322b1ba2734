//! Docker's legacy remote network-driver and IPAM-driver protocol (as Docker 20.10 speaks it):
//! the request bodies the agent reads, the answers it gives, and which calls need the agent's
//! state ([`Call`]) and which are answered from constants ([`static_answer`]).
//!
//! Go's JSON: field names in PascalCase, `null` for empty lists and maps, unknown fields common.
//! Every request type takes `null` and missing fields as empty and ignores unknown fields.
//! Pure: no I/O.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

/// `null` or missing as the type's default.
fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// One pool of `IPv4Data`/`IPv6Data` in `CreateNetwork`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct IpamData {
    /// The IPAM driver's address space ([`ADDRESS_SPACE`] for ours).
    #[serde(deserialize_with = "nullable")]
    pub address_space: String,
    /// The pool, a CIDR.
    #[serde(deserialize_with = "nullable")]
    pub pool: String,
    /// The gateway, a CIDR with the pool's prefix length.
    #[serde(deserialize_with = "nullable")]
    pub gateway: String,
    /// `--aux-address` entries.
    #[serde(deserialize_with = "nullable")]
    pub aux_addresses: BTreeMap<String, String>,
}

/// `NetworkDriver.CreateNetwork`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct CreateNetwork {
    /// Docker's id of the network (64 hex).
    #[serde(rename = "NetworkID", deserialize_with = "nullable")]
    pub network_id: String,
    /// `com.docker.network.generic` (the `-o` options), `com.docker.network.enable_ipv6`, ...
    #[serde(deserialize_with = "nullable")]
    pub options: BTreeMap<String, Value>,
    /// The IPv4 pools.
    #[serde(rename = "IPv4Data", deserialize_with = "nullable")]
    pub ipv4_data: Vec<IpamData>,
    /// The IPv6 pools.
    #[serde(rename = "IPv6Data", deserialize_with = "nullable")]
    pub ipv6_data: Vec<IpamData>,
}

/// The key of the `-o` options in `CreateNetwork`'s options.
pub const GENERIC_OPTIONS: &str = "com.docker.network.generic";
/// `--ipv6`, in `CreateNetwork`'s options.
pub const ENABLE_IPV6: &str = "com.docker.network.enable_ipv6";
/// `--internal`, in `CreateNetwork`'s options.
pub const INTERNAL: &str = "com.docker.network.internal";
/// The MTU option (`-o com.docker.network.driver.mtu=1400`), a string.
pub const MTU_OPTION: &str = "com.docker.network.driver.mtu";
/// The key of a gateway in a pool's data, and the address type of a gateway request.
pub const GATEWAY_KEY: &str = "com.docker.network.gateway";
/// The option of `RequestAddress` that says what the address is for.
pub const ADDRESS_TYPE: &str = "RequestAddressType";

impl CreateNetwork {
    /// The `-o` options, as strings (Docker sends them as strings; anything else is shown as
    /// JSON).
    pub fn generic_options(&self) -> BTreeMap<String, String> {
        match self.options.get(GENERIC_OPTIONS) {
            Some(Value::Object(map)) => map
                .iter()
                .map(|(k, v)| {
                    let v = match v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    (k.clone(), v)
                })
                .collect(),
            _ => BTreeMap::new(),
        }
    }

    /// Whether `--ipv6` was given.
    pub fn ipv6(&self) -> bool {
        matches!(self.options.get(ENABLE_IPV6), Some(Value::Bool(true)))
            || !self.ipv6_data.is_empty()
    }
}

/// `NetworkDriver.DeleteNetwork`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct NetworkRef {
    /// Docker's id of the network.
    #[serde(rename = "NetworkID", deserialize_with = "nullable")]
    pub network_id: String,
}

/// The interface in `CreateEndpoint`, and in its answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct EndpointInterface {
    /// IPv4 address, a CIDR, or empty.
    #[serde(
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub address: String,
    /// IPv6 address, a CIDR, or empty.
    #[serde(
        rename = "AddressIPv6",
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub address_ipv6: String,
    /// MAC address `aa:bb:cc:dd:ee:ff`, or empty.
    #[serde(
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub mac_address: String,
}

/// `NetworkDriver.CreateEndpoint`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct CreateEndpoint {
    /// The network.
    #[serde(rename = "NetworkID", deserialize_with = "nullable")]
    pub network_id: String,
    /// Docker's id of the endpoint (64 hex).
    #[serde(rename = "EndpointID", deserialize_with = "nullable")]
    pub endpoint_id: String,
    /// What Docker (its IPAM) already chose.
    #[serde(deserialize_with = "nullable")]
    pub interface: EndpointInterface,
    /// Exposed ports, port maps, `--driver-opt` values.
    #[serde(deserialize_with = "nullable")]
    pub options: BTreeMap<String, Value>,
}

/// `Join`, `Leave`, `DeleteEndpoint`, `EndpointOperInfo`: a network and an endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct EndpointRef {
    /// The network.
    #[serde(rename = "NetworkID", deserialize_with = "nullable")]
    pub network_id: String,
    /// The endpoint.
    #[serde(rename = "EndpointID", deserialize_with = "nullable")]
    pub endpoint_id: String,
    /// Join only: the sandbox's network namespace path.
    #[serde(deserialize_with = "nullable")]
    pub sandbox_key: String,
}

/// `IpamDriver.RequestPool`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct RequestPool {
    /// The address space (ours: [`ADDRESS_SPACE`]).
    #[serde(deserialize_with = "nullable")]
    pub address_space: String,
    /// `--subnet`, or empty.
    #[serde(deserialize_with = "nullable")]
    pub pool: String,
    /// `--ip-range`, or empty.
    #[serde(deserialize_with = "nullable")]
    pub sub_pool: String,
    /// `--ipam-opt` values.
    #[serde(deserialize_with = "nullable")]
    pub options: BTreeMap<String, String>,
    /// An IPv6 pool.
    #[serde(rename = "V6")]
    pub v6: bool,
}

/// `IpamDriver.ReleasePool`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct PoolRef {
    /// The pool's id, as [`RequestPool`]'s answer gave it.
    #[serde(rename = "PoolID", deserialize_with = "nullable")]
    pub pool_id: String,
}

/// `IpamDriver.RequestAddress` and `IpamDriver.ReleaseAddress`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct AddressRequest {
    /// The pool's id.
    #[serde(rename = "PoolID", deserialize_with = "nullable")]
    pub pool_id: String,
    /// The address wanted (`--ip`, `--gateway`) or released: a plain IP, or empty.
    #[serde(deserialize_with = "nullable")]
    pub address: String,
    /// [`ADDRESS_TYPE`] and the like.
    #[serde(deserialize_with = "nullable")]
    pub options: BTreeMap<String, String>,
}

impl AddressRequest {
    /// Whether Docker asks for the network's gateway.
    pub fn for_gateway(&self) -> bool {
        self.options.get(ADDRESS_TYPE).map(String::as_str) == Some(GATEWAY_KEY)
    }
}

/// The calls that need the agent's state, parsed.
#[derive(Debug, Clone, PartialEq)]
pub enum Call {
    /// `NetworkDriver.CreateNetwork`.
    CreateNetwork(CreateNetwork),
    /// `NetworkDriver.DeleteNetwork`.
    DeleteNetwork(NetworkRef),
    /// `NetworkDriver.CreateEndpoint`.
    CreateEndpoint(CreateEndpoint),
    /// `NetworkDriver.DeleteEndpoint`.
    DeleteEndpoint(EndpointRef),
    /// `NetworkDriver.Join`.
    Join(EndpointRef),
    /// `NetworkDriver.Leave`.
    Leave(EndpointRef),
    /// `IpamDriver.RequestPool`.
    RequestPool(RequestPool),
    /// `IpamDriver.ReleasePool`.
    ReleasePool(PoolRef),
    /// `IpamDriver.RequestAddress`.
    RequestAddress(AddressRequest),
    /// `IpamDriver.ReleaseAddress`.
    ReleaseAddress(AddressRequest),
}

/// The address space the IPAM driver names (any string does).
pub const ADDRESS_SPACE: &str = "wgmesh";

/// What a request path is.
#[derive(Debug, PartialEq)]
pub enum Route {
    /// Answered at once with this body (no state needed).
    Static(Value),
    /// Needs the agent: parse the body with [`parse_call`].
    Agent(&'static str),
    /// Not a call this plugin implements (answered 404).
    Unknown,
}

/// Classifies the request path `path` (`/NetworkDriver.Join`).
pub fn route(path: &str) -> Route {
    let method = path.trim_start_matches('/');
    match method {
        "Plugin.Activate" => {
            Route::Static(serde_json::json!({ "Implements": ["NetworkDriver", "IpamDriver"] }))
        }
        // Local data scope (no cluster store); connectivity reaches every host of the mesh.
        "NetworkDriver.GetCapabilities" => {
            Route::Static(serde_json::json!({ "Scope": "local", "ConnectivityScope": "global" }))
        }
        "IpamDriver.GetCapabilities" => Route::Static(
            serde_json::json!({ "RequiresMACAddress": false, "RequiresRequestReplay": false }),
        ),
        "IpamDriver.GetDefaultAddressSpaces" => Route::Static(serde_json::json!({
            "LocalDefaultAddressSpace": ADDRESS_SPACE,
            "GlobalDefaultAddressSpace": ADDRESS_SPACE,
        })),
        // Values of well-known keys with the wrong type have crashed dockerd: an empty map.
        "NetworkDriver.EndpointOperInfo" => Route::Static(serde_json::json!({ "Value": {} })),
        // Port publishing and outside access come from docker_gwbridge, not from us.
        "NetworkDriver.ProgramExternalConnectivity"
        | "NetworkDriver.RevokeExternalConnectivity"
        | "NetworkDriver.DiscoverNew"
        | "NetworkDriver.DiscoverDelete" => Route::Static(serde_json::json!({})),
        _ => AGENT_CALLS
            .into_iter()
            .find(|c| *c == method)
            .map_or(Route::Unknown, Route::Agent),
    }
}

/// The calls that need the agent ([`Route::Agent`]), each once.
pub const AGENT_CALLS: [&str; 10] = [
    "NetworkDriver.CreateNetwork",
    "NetworkDriver.DeleteNetwork",
    "NetworkDriver.CreateEndpoint",
    "NetworkDriver.DeleteEndpoint",
    "NetworkDriver.Join",
    "NetworkDriver.Leave",
    "IpamDriver.RequestPool",
    "IpamDriver.ReleasePool",
    "IpamDriver.RequestAddress",
    "IpamDriver.ReleaseAddress",
];

/// Parses the body of the agent call `method` (a name [`route`] gave). An empty body reads as
/// `{}`.
pub fn parse_call(method: &str, body: &[u8]) -> Result<Call, serde_json::Error> {
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    Ok(match method {
        "NetworkDriver.CreateNetwork" => Call::CreateNetwork(serde_json::from_slice(body)?),
        "NetworkDriver.DeleteNetwork" => Call::DeleteNetwork(serde_json::from_slice(body)?),
        "NetworkDriver.CreateEndpoint" => Call::CreateEndpoint(serde_json::from_slice(body)?),
        "NetworkDriver.DeleteEndpoint" => Call::DeleteEndpoint(serde_json::from_slice(body)?),
        "NetworkDriver.Join" => Call::Join(serde_json::from_slice(body)?),
        "NetworkDriver.Leave" => Call::Leave(serde_json::from_slice(body)?),
        "IpamDriver.RequestPool" => Call::RequestPool(serde_json::from_slice(body)?),
        "IpamDriver.ReleasePool" => Call::ReleasePool(serde_json::from_slice(body)?),
        "IpamDriver.RequestAddress" => Call::RequestAddress(serde_json::from_slice(body)?),
        "IpamDriver.ReleaseAddress" => Call::ReleaseAddress(serde_json::from_slice(body)?),
        other => {
            return Err(serde::de::Error::custom(format!(
                "{other} is not a call of this plugin"
            )))
        }
    })
}

/// The answer of `CreateEndpoint`: the MAC the agent gave the container's interface.
pub fn endpoint_created(mac: Option<&str>) -> Value {
    match mac {
        Some(mac) => serde_json::json!({ "Interface": { "MacAddress": mac } }),
        None => serde_json::json!({}),
    }
}

/// One route of a `Join` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct StaticRoute {
    /// The destination, a CIDR.
    pub destination: String,
    /// 0: via `next_hop`; 1: connected, through the interface.
    pub route_type: u8,
    /// The next hop (type 0), else empty.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub next_hop: String,
}

/// The answer of `Join`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Joined {
    /// The interface to move into the container, and the prefix of its name there.
    pub interface_name: InterfaceName,
    /// Routes inside the container.
    pub static_routes: Vec<StaticRoute>,
}

/// `InterfaceName` of [`Joined`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct InterfaceName {
    /// The interface's name on the host.
    pub src_name: String,
    /// Its name's prefix inside the container (`eth` gives `eth0`, `eth1`, ...).
    pub dst_prefix: String,
}

/// The answer of `RequestPool`.
pub fn pool(pool_id: &str, pool: &str, gateway: &str) -> Value {
    serde_json::json!({ "PoolID": pool_id, "Pool": pool, "Data": { GATEWAY_KEY: gateway } })
}

/// The answer of `RequestAddress`: a CIDR.
pub fn address(cidr: &str) -> Value {
    serde_json::json!({ "Address": cidr, "Data": {} })
}

/// An error, as both drivers' clients read it (any status but 200 with `Err`).
pub fn error(message: &str) -> Value {
    serde_json::json!({ "Err": message })
}

#[cfg(test)]
mod tests;
