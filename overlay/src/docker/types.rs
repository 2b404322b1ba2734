//! What the agent reads from dockerd — running containers, networks, events — and the pure
//! functions that parse the Engine API's JSON into them.
//!
//! The parsers are tolerant in the way Go's encoder needs: a `null` map or list is empty, and a
//! missing optional field is empty. Only the identifiers a value cannot exist without (a
//! container's or network's `Id`) are required. This module performs no I/O.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer};

/// A running container, from `GET /containers/json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    /// The full container id (64 hex digits).
    pub id: String,
    /// Its name without the leading `/` (`docker run --name web` gives `web`); empty if dockerd
    /// gave none.
    pub name: String,
    /// Its labels as dockerd lists them: the `--label k=v` given, over the image's `LABEL`s.
    pub labels: BTreeMap<String, String>,
    /// The id of its image (`ImageID`); empty if dockerd gave none.
    pub image_id: String,
    /// The networks it is connected to, by network name order.
    pub endpoints: Vec<ContainerEndpoint>,
}

/// One of a container's network connections (`NetworkSettings.Networks`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerEndpoint {
    /// The network's full id: what the plugin's `CreateNetwork` and `Join` are given.
    pub network_id: String,
    /// The network's name.
    pub network_name: String,
    /// The endpoint's id: what the plugin's `CreateEndpoint` and `Join` are given.
    pub endpoint_id: String,
    /// Its IPv4 address (`IPAddress`), if it has one: what an IPAM driver gave it, whichever
    /// network driver the network has.
    pub ip: Option<std::net::IpAddr>,
}

/// A network, from `GET /networks/{id or name}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network {
    /// The full network id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its network driver (`bridge`, `wgmesh`, ...).
    pub driver: String,
    /// Its IPAM driver (`default`, `wgmesh`, ...); empty if dockerd gave none.
    pub ipam_driver: String,
}

/// One message of the events stream (`GET /events`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// What it is about: `container`, `network`, ... (`Type`).
    pub kind: String,
    /// What happened: `start`, `die`, `connect`, `exec_start: sh`, ... (`Action`).
    pub action: String,
    /// The id of the object it is about (`Actor.ID`): a container or a network.
    pub id: String,
}

impl Event {
    /// True when this event may change the list of running containers, their names, labels or
    /// network connections: every container event except the frequent ones that cannot
    /// (exec, health checks, attach, resize, copy), and a network's connect and disconnect.
    pub fn touches_containers(&self) -> bool {
        match self.kind.as_str() {
            "container" => {
                let action = self.action.as_str();
                !(action.starts_with("exec_")
                    || action.starts_with("health_status")
                    || matches!(
                        action,
                        "attach"
                            | "detach"
                            | "resize"
                            | "top"
                            | "copy"
                            | "archive-path"
                            | "extract-to-dir"
                            | "export"
                            | "commit"
                    ))
            }
            "network" => matches!(self.action.as_str(), "connect" | "disconnect"),
            _ => false,
        }
    }
}

/// Parses the body of `GET /containers/json`.
pub fn parse_containers(body: &[u8]) -> Result<Vec<Container>, serde_json::Error> {
    let raw: Vec<RawContainer> = serde_json::from_slice(body)?;
    Ok(raw.into_iter().map(RawContainer::into_container).collect())
}

/// Parses the labels of an image, from `GET /images/{id}/json` (`Config.Labels`).
pub fn parse_image_labels(body: &[u8]) -> Result<BTreeMap<String, String>, serde_json::Error> {
    let image: RawImage = serde_json::from_slice(body)?;
    Ok(image.config.labels)
}

/// Parses the body of `GET /networks/{id}`.
pub fn parse_network(body: &[u8]) -> Result<Network, serde_json::Error> {
    let raw: RawNetwork = serde_json::from_slice(body)?;
    Ok(Network {
        id: raw.id,
        name: raw.name,
        driver: raw.driver,
        ipam_driver: raw.ipam.map(|i| i.driver).unwrap_or_default(),
    })
}

/// Parses the body of a successful `POST /networks/create`: the new network's id, and
/// dockerd's warning (empty when there is none).
pub fn parse_created(body: &[u8]) -> Result<(String, String), serde_json::Error> {
    let raw: RawCreated = serde_json::from_slice(body)?;
    Ok((raw.id, raw.warning))
}

/// Parses one line of the events stream.
pub fn parse_event(line: &[u8]) -> Result<Event, serde_json::Error> {
    let raw: RawEvent = serde_json::from_slice(line)?;
    Ok(Event {
        kind: raw.kind,
        action: raw.action,
        id: raw.actor.map(|a| a.id).unwrap_or_default(),
    })
}

/// The text of dockerd's error body `{"message": "..."}`, verbatim; the body itself (lossy
/// UTF-8, trimmed) when it is not that shape.
pub fn error_message(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct RawError {
        message: String,
    }
    match serde_json::from_slice::<RawError>(body) {
        Ok(e) => e.message,
        Err(_) => String::from_utf8_lossy(body).trim().to_string(),
    }
}

/// Go encodes an empty map or slice as `null`: treat it as the default.
fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawContainer {
    id: String,
    #[serde(default, deserialize_with = "null_default")]
    names: Vec<String>,
    #[serde(default, deserialize_with = "null_default")]
    labels: BTreeMap<String, String>,
    #[serde(rename = "ImageID", default, deserialize_with = "null_default")]
    image_id: String,
    #[serde(default, deserialize_with = "null_default")]
    network_settings: RawNetworkSettings,
}

impl RawContainer {
    fn into_container(self) -> Container {
        let endpoints = self
            .network_settings
            .networks
            .into_iter()
            .filter_map(|(network_name, e)| {
                e.map(|e| ContainerEndpoint {
                    network_id: e.network_id,
                    network_name,
                    endpoint_id: e.endpoint_id,
                    ip: e.ip_address.parse().ok(),
                })
            })
            .collect();
        Container {
            id: self.id,
            name: container_name(&self.names),
            labels: self.labels,
            image_id: self.image_id,
            endpoints,
        }
    }
}

/// The container's own name among `Names`: links add names like `/other/alias`, so the one
/// without a second `/` is preferred.
fn container_name(names: &[String]) -> String {
    let strip = |n: &String| n.strip_prefix('/').unwrap_or(n).to_string();
    names
        .iter()
        .map(strip)
        .find(|n| !n.contains('/'))
        .or_else(|| names.first().map(strip))
        .unwrap_or_default()
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct RawNetworkSettings {
    #[serde(default, deserialize_with = "null_default")]
    networks: BTreeMap<String, Option<RawEndpoint>>,
}

#[derive(Deserialize)]
struct RawEndpoint {
    #[serde(rename = "NetworkID", default, deserialize_with = "null_default")]
    network_id: String,
    #[serde(rename = "EndpointID", default, deserialize_with = "null_default")]
    endpoint_id: String,
    #[serde(rename = "IPAddress", default, deserialize_with = "null_default")]
    ip_address: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawImage {
    #[serde(default, deserialize_with = "null_default")]
    config: RawImageConfig,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct RawImageConfig {
    #[serde(default, deserialize_with = "null_default")]
    labels: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawNetwork {
    id: String,
    #[serde(default, deserialize_with = "null_default")]
    name: String,
    #[serde(default, deserialize_with = "null_default")]
    driver: String,
    #[serde(rename = "IPAM", default)]
    ipam: Option<RawIpam>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawIpam {
    #[serde(default, deserialize_with = "null_default")]
    driver: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawCreated {
    id: String,
    #[serde(default, deserialize_with = "null_default")]
    warning: String,
}

#[derive(Deserialize)]
struct RawEvent {
    #[serde(rename = "Type", default, deserialize_with = "null_default")]
    kind: String,
    #[serde(rename = "Action", default, deserialize_with = "null_default")]
    action: String,
    #[serde(rename = "Actor", default)]
    actor: Option<RawActor>,
}

#[derive(Deserialize)]
struct RawActor {
    #[serde(rename = "ID", default, deserialize_with = "null_default")]
    id: String,
}

#[cfg(test)]
mod tests;
