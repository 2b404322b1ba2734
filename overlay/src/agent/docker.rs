//! The agent's side of the Docker plugin: each [`Call`] the plugin socket hands over is decided
//! by [`super::workloads::docker`] and carried out here (veths, the bridge's neighbour entries,
//! the state file, the report to the control plane), one at a time in the agent's loop, so calls
//! for different containers never race.
//!
//! Every change is saved before it is answered, and a call that fails part-way undoes what it
//! did: no veth, reservation or endpoint is left behind. Deletes of things the agent does not
//! know succeed (Docker repeats them, and cannot be refused a delete anyway).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use std::path::PathBuf;

use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};

use super::workloads::docker::{
    self as state, format_mac, Container, DockerError, EndpointOwner, EndpointPlan,
};
use super::{Agent, AgentError};
use crate::api::docker::protocol::{
    self, Call, CreateEndpoint, InterfaceName, Joined, StaticRoute,
};
use crate::api::docker::{self as docker_api, PluginCall};
use crate::api::status::{ContainerStatus, DockerNetworkStatus, DockerStatus, EngineStatus};
use crate::docker::{
    spawn_ensure_networks, spawn_watch, Engine, EngineEvent, NetworkReport, NetworkState,
};
use crate::error::Chain;
use crate::host;

/// Seconds since the Unix epoch.
pub(super) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The Docker plugin's socket, bound before start-up so Docker finds it while the agent waits
/// for its control plane ([`crate::api::docker`]).
pub(super) struct Plugin {
    pub(super) socket: PathBuf,
    /// The plugin's health, for status.
    pub(super) health: DockerStatus,
    calls: mpsc::Receiver<PluginCall>,
    task: tokio::task::JoinHandle<()>,
    /// The Docker API's tasks, once started ([`Plugin::follow_docker`]).
    engine: Option<EngineTasks>,
    /// Every endpoint dockerd listed last, by endpoint id, and every address it showed;
    /// `None` while it does not answer.
    owners: Option<(BTreeMap<String, EndpointOwner>, Vec<IpAddr>)>,
}

/// The background tasks that talk to dockerd, and what they send.
struct EngineTasks {
    events: mpsc::Receiver<EngineEvent>,
    networks: watch::Receiver<Vec<NetworkReport>>,
    tasks: [tokio::task::JoinHandle<()>; 2],
    /// The sweep of stale endpoints and reservations, also when no container changes.
    sweep: tokio::time::Interval,
}

/// What the Docker side of the agent's loop waits for.
pub(super) enum DockerInput {
    /// A plugin call.
    Call(PluginCall),
    /// What the Docker API showed.
    Engine(EngineEvent),
    /// The configured networks' states.
    Networks(Vec<NetworkReport>),
    /// Time to sweep stale endpoints and reservations against the last list.
    Sweep,
}

impl Plugin {
    /// Binds and serves the plugin socket of `docker`.
    pub(super) fn bind(docker: &wgmesh_config::agent::DockerSection) -> Result<Self, AgentError> {
        let socket = docker.plugin_socket();
        let listener = docker_api::bind(&socket)?;
        let (tx, calls) = mpsc::channel(64);
        let task = tokio::spawn(docker_api::serve(listener, tx));
        tracing::info!(socket = %socket.display(), "Docker plugin socket ready");
        let health = DockerStatus {
            plugin_socket: socket.display().to_string(),
            plugin_socket_present: true,
            engine: EngineStatus {
                socket: docker.socket.display().to_string(),
                reachable: None,
                error: None,
            },
            networks: docker
                .networks
                .iter()
                .map(|name| DockerNetworkStatus {
                    name: name.clone(),
                    state: "waiting".to_owned(),
                    detail: None,
                })
                .collect(),
            problems: Vec::new(),
        };
        Ok(Self {
            socket,
            health,
            calls,
            task,
            engine: None,
            owners: None,
        })
    }

    /// Starts following dockerd at `docker.socket`: its containers (for their labels) and the
    /// networks of `docker.networks`. Called once the agent serves plugin calls, since creating
    /// a network makes dockerd call the plugin.
    pub(super) fn follow_docker(&mut self, docker: &wgmesh_config::agent::DockerSection) {
        let engine = Engine::new(docker.socket.clone());
        let (events_tx, events) = mpsc::channel(8);
        let (networks_tx, networks) = watch::channel(Vec::new());
        let tasks = [
            spawn_watch(engine.clone(), events_tx),
            spawn_ensure_networks(engine, docker.networks.clone(), networks_tx),
        ];
        let mut sweep =
            tokio::time::interval(std::time::Duration::from_secs(state::GRACE_SECS / 2));
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        self.engine = Some(EngineTasks {
            events,
            networks,
            tasks,
            sweep,
        });
    }
}

/// Dropped (a stop, a failed start, an error before the start), it stops serving and removes
/// the socket file: Docker finds no socket rather than one nobody answers.
impl Drop for Plugin {
    fn drop(&mut self) {
        self.task.abort();
        if let Some(engine) = &self.engine {
            for t in &engine.tasks {
                t.abort();
            }
        }
        if let Err(e) = std::fs::remove_file(&self.socket) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(socket = %self.socket.display(), "cannot remove the Docker plugin socket: {e}");
            }
        }
    }
}

/// The plugin's next input, or never without a plugin.
pub(super) async fn next_input(plugin: &mut Option<Plugin>) -> DockerInput {
    let Some(p) = plugin else {
        return std::future::pending().await;
    };
    let Some(engine) = p.engine.as_mut() else {
        return match p.calls.recv().await {
            Some(call) => DockerInput::Call(call),
            None => std::future::pending().await,
        };
    };
    tokio::select! {
        Some(call) = p.calls.recv() => DockerInput::Call(call),
        Some(event) = engine.events.recv() => DockerInput::Engine(event),
        Ok(()) = engine.networks.changed() => {
            DockerInput::Networks(engine.networks.borrow_and_update().clone())
        }
        _ = engine.sweep.tick() => DockerInput::Sweep,
        // Every source closed: nothing more will come.
        else => std::future::pending().await,
    }
}

impl Plugin {
    /// The plugin's status, its problems found now.
    pub(super) fn status(&self) -> DockerStatus {
        let mut s = self.health.clone();
        s.plugin_socket_present = self.socket.exists();
        s.find_problems();
        s
    }
}

/// What to undo of a call whose caller gave up while it ran.
enum Undo {
    /// An endpoint created.
    Endpoint(String),
    /// An address reserved (its value is in the answer).
    Address,
    /// Nothing worth undoing (deletes, releases, pools, networks: Docker repeats or ignores).
    Nothing,
}

impl Undo {
    /// What undoes `call`, decided before it runs: a repeated `CreateEndpoint` of an endpoint
    /// that exists created nothing, and undoing it must not remove the working endpoint.
    fn of(call: &Call, workloads: &super::Workloads) -> Self {
        match call {
            Call::CreateEndpoint(r) if workloads.container(&r.endpoint_id).is_none() => {
                Self::Endpoint(r.endpoint_id.clone())
            }
            Call::RequestAddress(r) if !r.for_gateway() => Self::Address,
            _ => Self::Nothing,
        }
    }
}

impl Agent {
    /// Undoes a call Docker was told had failed (it timed out while it ran).
    async fn undo_call(&mut self, undo: Undo, answer: &Value) {
        match undo {
            Undo::Endpoint(endpoint) => {
                tracing::warn!(
                    endpoint = state::short(&endpoint),
                    "Docker gave up on this endpoint; removing it"
                );
                self.delete_endpoint(&endpoint).await;
            }
            Undo::Address => {
                let cidr = answer["Address"].as_str().unwrap_or_default();
                let ip = cidr.split('/').next().unwrap_or_default();
                if self.workloads.release_address(ip) {
                    self.save_logged();
                }
            }
            Undo::Nothing => {}
        }
    }
}

fn network_status(r: &NetworkReport) -> DockerNetworkStatus {
    let (state, detail) = match &r.state {
        NetworkState::Waiting => ("waiting", None),
        NetworkState::Ready { id } => ("ready", Some(id.clone())),
        NetworkState::WrongDriver { driver } => ("wrong_driver", Some(driver.clone())),
        NetworkState::Failed { error } => ("failed", Some(error.clone())),
    };
    DockerNetworkStatus {
        name: r.name.clone(),
        state: state.to_owned(),
        detail,
    }
}

fn refused(e: DockerError) -> String {
    e.to_string()
}

impl Agent {
    /// Carries out one plugin call; the answer's body, or the error the user sees.
    pub(super) async fn plugin_call(&mut self, call: Call) -> Result<Value, String> {
        let now = unix_now();
        match call {
            Call::RequestPool(r) => {
                let p = self.workloads.request_pool(&r).map_err(refused)?;
                Ok(protocol::pool(&p.id, &p.pool, &p.gateway))
            }
            Call::ReleasePool(_) => Ok(json!({})),
            Call::RequestAddress(r) => {
                self.settle_addresses();
                let ip = self.workloads.request_address(&r, now).map_err(refused)?;
                if !r.for_gateway() {
                    if let Err(e) = self.store.save(&self.workloads) {
                        // Unrecorded, it could be handed out again after a restart: refuse.
                        self.workloads.release_address(&ip.addr().to_string());
                        return Err(Chain(&e).to_string());
                    }
                    tracing::debug!(%ip, "address reserved for Docker");
                }
                Ok(protocol::address(&ip.to_string()))
            }
            Call::ReleaseAddress(r) => {
                if self.workloads.release_address(&r.address) {
                    self.save_logged();
                    tracing::debug!(ip = %r.address, "Docker released an address");
                }
                Ok(json!({}))
            }
            Call::CreateNetwork(r) => {
                let network = self
                    .workloads
                    .plan_network(&r, self.config.agent.mtu)
                    .map_err(refused)?;
                let before = self.workloads.clone();
                self.workloads
                    .insert_network(&r.network_id, network.clone());
                if let Err(e) = self.store.save(&self.workloads) {
                    self.workloads = before;
                    return Err(Chain(&e).to_string());
                }
                tracing::info!(network = state::short(&r.network_id), mtu = network.mtu,
                    pool = ?network.pool, "Docker network created");
                Ok(json!({}))
            }
            Call::DeleteNetwork(r) => {
                // Docker removes a network's endpoints first; any it left go with it.
                let left: Vec<String> = self
                    .workloads
                    .containers()
                    .filter(|c| c.network == r.network_id)
                    .map(|c| c.endpoint.clone())
                    .collect();
                for endpoint in left {
                    self.delete_endpoint(&endpoint).await;
                }
                if self.workloads.remove_network(&r.network_id).is_some() {
                    self.save_logged();
                    tracing::info!(
                        network = state::short(&r.network_id),
                        "Docker network removed"
                    );
                }
                Ok(json!({}))
            }
            Call::CreateEndpoint(r) => self.create_endpoint(&r, now).await,
            Call::DeleteEndpoint(r) => {
                self.delete_endpoint(&r.endpoint_id).await;
                Ok(json!({}))
            }
            Call::Join(r) => self.join(&r.endpoint_id),
            Call::Leave(_) => Ok(json!({})),
        }
    }

    /// Handles one input of the plugin's side of the loop.
    pub(super) async fn docker_input(&mut self, input: DockerInput) {
        match input {
            DockerInput::Call(call) => {
                // A caller that gave up waiting gets no answer, and nothing is done; one that
                // gave up while the call ran is told it failed, so what it did is undone.
                if call.reply.is_closed() {
                    return;
                }
                let undo = Undo::of(&call.call, &self.workloads);
                let answer = self.plugin_call(call.call).await;
                if call.reply.is_closed() {
                    if let Ok(value) = &answer {
                        self.undo_call(undo, value).await;
                    }
                    return;
                }
                let _ = call.reply.send(answer);
            }
            DockerInput::Sweep => {
                if let Some((owners, listed)) = self.plugin.as_ref().and_then(|p| p.owners.clone())
                {
                    self.docker_listed(&owners, &listed).await;
                }
            }
            DockerInput::Engine(EngineEvent::Snapshot(containers)) => {
                self.set_engine(true, None);
                // Every address Docker shows, on any network: one a container of another
                // network driver got from our IPAM driver is in use too.
                let listed: Vec<IpAddr> = containers
                    .iter()
                    .flat_map(|c| c.endpoints.iter().filter_map(|e| e.ip))
                    .collect();
                let owners: BTreeMap<String, EndpointOwner> = containers
                    .into_iter()
                    .flat_map(|c| {
                        c.endpoints.into_iter().map(move |e| {
                            let owner = EndpointOwner {
                                id: c.id.clone(),
                                name: c.name.clone(),
                                labels: c.labels.clone(),
                            };
                            (e.endpoint_id, owner)
                        })
                    })
                    .collect();
                self.docker_listed(&owners, &listed).await;
                if let Some(p) = self.plugin.as_mut() {
                    p.owners = Some((owners, listed));
                }
                // dockerd may have put its own FORWARD rules above ours since the last look.
                self.spawn_open_firewall();
            }
            DockerInput::Engine(EngineEvent::Unreachable(error)) => {
                tracing::warn!("dockerd is unreachable: {error}");
                self.set_engine(false, Some(error));
                // Nothing is stale while dockerd cannot say what it has.
                if let Some(p) = self.plugin.as_mut() {
                    p.owners = None;
                }
            }
            DockerInput::Networks(reports) => {
                if let Some(p) = self.plugin.as_mut() {
                    p.health.networks = reports.iter().map(network_status).collect();
                }
            }
        }
    }

    fn set_engine(&mut self, reachable: bool, error: Option<String>) {
        if let Some(p) = self.plugin.as_mut() {
            p.health.engine.reachable = Some(reachable);
            p.health.engine.error = error;
        }
    }

    /// `CreateEndpoint`: the container's veth pair, guarded on the bridge, and its record.
    async fn create_endpoint(&mut self, r: &CreateEndpoint, now: u64) -> Result<Value, String> {
        let (c, mtu) = match self.workloads.plan_endpoint(r, now).map_err(refused)? {
            EndpointPlan::Exists(c) => return Ok(self.endpoint_answer(r, &c)),
            // Never above the overlay's (lowered since the network was created?).
            EndpointPlan::Create(c, mtu) => (c, mtu.min(self.config.agent.mtu)),
        };
        let addr = c.ip.addr();
        if let Some(other) = self.veth_owner(&c.host_ifname) {
            // Two endpoint ids alike in their first 40 bits: never take the other's veth.
            return Err(format!(
                "endpoint {}: its interface name {} is that of endpoint {other}; remove that \
                 container first",
                state::short(&r.endpoint_id),
                c.host_ifname
            ));
        }
        // A veth of this name is a leftover of this very endpoint (an agent killed between
        // creating it and saving its record, and Docker retrying): the name is ours.
        let _ = self.host.detach(&c.host_ifname).await;
        self.host
            .create_container_veth(&c.host_ifname, self.bridge_index, addr, mtu)
            .await
            .map_err(|e| Chain(&e).to_string())?;
        if let Err(e) = self
            .host
            .pin_neighbour(self.bridge_index, addr, host::workload_mac(addr))
            .await
        {
            let _ = self.host.detach(&c.host_ifname).await;
            self.unpin_addr(addr).await;
            return Err(Chain(&e).to_string());
        }
        self.workloads.insert_container(c.clone());
        if let Err(e) = self.store.save(&self.workloads) {
            self.workloads.remove_container(&c.endpoint);
            let _ = self.host.detach(&c.host_ifname).await;
            self.unpin_addr(addr).await;
            return Err(Chain(&e).to_string());
        }
        self.share_workload_names();
        self.publish_workloads();
        tracing::info!(endpoint = state::short(&c.endpoint), ip = %c.ip, veth = %c.host_ifname,
            "Docker endpoint created");
        Ok(self.endpoint_answer(r, &c))
    }

    /// The recorded endpoint whose host veth is named `name`, if any.
    fn veth_owner(&self, name: &str) -> Option<String> {
        self.workloads
            .containers()
            .find(|c| c.host_ifname == name)
            .map(|c| state::short(&c.endpoint).to_owned())
    }

    /// The MAC the container gets, told to Docker unless it set one itself.
    fn endpoint_answer(&self, r: &CreateEndpoint, c: &Container) -> Value {
        let mac = format_mac(host::workload_mac(c.ip.addr()));
        protocol::endpoint_created(r.interface.mac_address.is_empty().then_some(mac.as_str()))
    }

    /// `Join`: the container end of the veth, and routes to the whole cluster through the
    /// bridge. No default route: Docker gives the container its `docker_gwbridge` for the rest
    /// of the world (and `-p`), so only cluster traffic takes the overlay.
    fn join(&self, endpoint: &str) -> Result<Value, String> {
        let c = self.workloads.container(endpoint).ok_or_else(|| {
            refused(DockerError::UnknownEndpoint {
                id: endpoint.to_owned(),
            })
        })?;
        let gateway = self.workloads.gateway();
        let joined = Joined {
            interface_name: InterfaceName {
                src_name: host::peer_ifname(&c.host_ifname),
                dst_prefix: "eth".to_owned(),
            },
            static_routes: vec![
                // On-link even when the network's --subnet leaves the gateway out.
                StaticRoute {
                    destination: format!("{gateway}/32"),
                    route_type: 1,
                    next_hop: String::new(),
                },
                StaticRoute {
                    destination: self.route_guard.cluster.to_string(),
                    route_type: 0,
                    next_hop: gateway.to_string(),
                },
            ],
        };
        Ok(serde_json::to_value(joined).expect("joins serialize"))
    }

    /// `DeleteEndpoint`, and endpoints Docker no longer shows: the veth pair (both ends), the
    /// bridge's neighbour entry and the record go. The address stays reserved until Docker
    /// releases it (or, for an endpoint Docker forgot, until the reservation expires).
    async fn delete_endpoint(&mut self, endpoint: &str) {
        let Some(c) = self.workloads.remove_container(endpoint) else {
            // Never recorded (a create that failed, or a repeat): a veth of that name is
            // still ours to remove, unless a recorded endpoint has that name.
            if let Ok(name) = state::host_ifname_for_endpoint(endpoint) {
                if self.veth_owner(&name).is_none() {
                    let _ = self.host.detach(&name).await;
                }
            }
            return;
        };
        if let Err(e) = self.host.detach(&c.host_ifname).await {
            // The veth may still be on the bridge with the address: the record stays, so that
            // the address is given to no one, and the sweep tries again.
            tracing::warn!(veth = %c.host_ifname, "cannot remove a container's veth; keeping its record to try again: {}", Chain(&e));
            self.workloads.insert_container(c);
            return;
        }
        self.unpin_addr(c.ip.addr()).await;
        self.save_logged();
        self.share_workload_names();
        self.publish_workloads();
        tracing::info!(endpoint = state::short(endpoint), ip = %c.ip, name = %c.name,
            "Docker endpoint removed");
    }

    /// What the Docker API lists (`owners`: every endpoint of a running or created
    /// container; `listed`: every address it shows): containers learn their labels; endpoints
    /// it no longer lists, and reservations nobody uses, go after the grace period.
    pub(super) async fn docker_listed(
        &mut self,
        owners: &BTreeMap<String, EndpointOwner>,
        listed: &[IpAddr],
    ) {
        let now = unix_now();
        let mut changed = self.workloads.learn_owners(owners);
        for c in self.workloads.stale_containers(owners, now) {
            tracing::warn!(endpoint = state::short(&c.endpoint), ip = %c.ip,
                "Docker no longer lists this container endpoint; removing it");
            self.delete_endpoint(&c.endpoint).await;
        }
        let freed = self.workloads.expire_reservations(listed, now);
        if !freed.is_empty() {
            tracing::info!(addresses = ?freed, "freed addresses Docker asked for but never used");
            changed = true;
        }
        if changed {
            self.save_logged();
            self.share_workload_names();
            self.publish_workloads();
        }
    }

    /// Guards the containers' veths again after a restart (a clean stop keeps them: their
    /// other ends are the containers' interfaces); forgets those whose veth is gone.
    pub(super) async fn restore_containers(&mut self) {
        let saved: Vec<Container> = self.workloads.containers().cloned().collect();
        for c in saved {
            let addr = c.ip.addr();
            let result = match self.host.link_index(&c.host_ifname).await {
                Ok(Some(index)) => {
                    let secured = self
                        .host
                        .secure_port(index, &c.host_ifname, self.bridge_index, addr)
                        .await;
                    match secured {
                        Ok(()) => {
                            self.host
                                .pin_neighbour(self.bridge_index, addr, host::workload_mac(addr))
                                .await
                        }
                        Err(e) => Err(e),
                    }
                }
                Ok(None) => {
                    tracing::warn!(endpoint = state::short(&c.endpoint), ip = %c.ip,
                        "the container's veth is gone; forgetting its endpoint");
                    self.workloads.remove_container(&c.endpoint);
                    self.save_logged();
                    continue;
                }
                Err(e) => Err(e),
            };
            match result {
                Ok(()) => {
                    tracing::info!(endpoint = state::short(&c.endpoint), ip = %c.ip, "container restored")
                }
                Err(e) => tracing::error!(
                    endpoint = state::short(&c.endpoint),
                    "cannot restore a container: {}",
                    Chain(&e)
                ),
            }
        }
    }

    /// The containers, as status shows them.
    pub(super) fn container_status(&self) -> Vec<ContainerStatus> {
        self.workloads
            .containers()
            .map(|c| ContainerStatus {
                id: c.id.clone(),
                name: c.name.clone(),
                endpoint: c.endpoint.clone(),
                network: c.network.clone(),
                ip: c.ip.to_string(),
                host_ifname: c.host_ifname.clone(),
                labels: c.labels.clone(),
                labels_known: c.labels_known,
            })
            .collect()
    }

    async fn unpin_addr(&self, addr: IpAddr) {
        if let Err(e) = self.host.unpin_neighbour(self.bridge_index, addr).await {
            tracing::warn!(%addr, "cannot remove a neighbour entry: {}", Chain(&e));
        }
    }

    /// Saves the state file after a change that has happened whatever the file says (a
    /// release, a removal): a failure is logged, not answered.
    fn save_logged(&self) {
        if let Err(e) = self.store.save(&self.workloads) {
            tracing::error!("{}", Chain(&e));
        }
    }
}
