//! The agent daemon: turns an [`AgentConfig`] into a running host — key, UDP socket, TUN device,
//! bridge, routes, restored workloads, data-path threads and the local API — and keeps it in step
//! with the config file (SIGHUP) until SIGTERM/SIGINT, when it removes everything it created.
//!
//! Start-up is all or nothing: on any error it undoes what it did and returns the error.
//! A reload is all or nothing too: an invalid file leaves the running configuration untouched.

pub mod control_link;
pub mod netmap_cache;
mod statefile;
pub mod workloads;

use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use ipnet::IpNet;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, watch};
use wgmesh_config::netmap::Netmap;
use wgmesh_config::{AgentConfig, AgentSection, ConfigError, PresharedKey, PrivateKey};

use crate::agent::netmap_cache::{NetmapApplyError, NetmapCache, NetmapCacheError};
use crate::api::status::{
    ControlStatus, HostDropStatus, OffloadStatus, PeerDropStatus, PeerStatus, Status,
    WorkloadStatus,
};
use crate::api::{self, ApiError, Command, Request, Response};
use crate::datapath::tun::Tun;
use crate::datapath::udp::Udp;
use crate::datapath::{DataPath, Shared};
use crate::error::Chain;
use crate::host::{self, HostError, HostNet};
use crate::peers::noise::LocalIdentity;
use crate::peers::peer::{PeerSettings, PresharedKeyBytes};
use crate::peers::table::{PeerSet, PeerSetError};
use control_link::{LinkError, Origin};
use wgmesh_client::dirlock::{DirLock, LockError};
use workloads::{Workload, WorkloadError, WorkloadStore, Workloads};

/// Why the agent could not start (or had to stop).
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The config file is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A key file could not be read, created or parsed.
    #[error("{path}: {message}")]
    KeyFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The state directory could not be created.
    #[error("cannot create the state directory {path}")]
    StateDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Another agent runs on this state directory.
    #[error("agent.state_dir: another `wgmesh agent` uses {} (its lock is held); stop it first, or give this one another state_dir", path.display())]
    StateDirInUse {
        /// The lock file.
        path: PathBuf,
    },
    /// The UDP port could not be bound.
    #[error("agent.listen_port: cannot bind UDP port {port}{hint}")]
    Udp {
        /// The port.
        port: u16,
        /// A hint for the common case.
        hint: &'static str,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The TUN device could not be created.
    #[error("agent.interface: cannot create TUN device {name:?}")]
    Tun {
        /// The device name.
        name: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Host networking failed.
    #[error(transparent)]
    Host(#[from] HostError),
    /// The peers could not be applied.
    #[error(transparent)]
    Peers(#[from] PeerSetError),
    /// The workloads' state could not be read or written.
    #[error(transparent)]
    Store(#[from] workloads::StoreError),
    /// The local API socket could not be bound.
    #[error("agent.socket: {0}")]
    Api(#[from] ApiError),
    /// The control plane cannot be used.
    #[error(transparent)]
    Link(#[from] LinkError),
    /// A netmap cannot be applied.
    #[error(transparent)]
    Netmap(#[from] NetmapApplyError),
    /// The netmap cache cannot be written.
    #[error(transparent)]
    NetmapCache(#[from] NetmapCacheError),
    /// The subnet the control plane assigned does not fit the configured MTU.
    #[error("agent.mtu: {mtu} is too small for the IPv6 subnet {subnet} the control plane assigned; use 1280 to 9000")]
    MtuTooSmall {
        /// The MTU.
        mtu: u16,
        /// The subnet.
        subnet: IpNet,
    },
    /// A reload changed settings that need a restart.
    #[error("{fields} cannot change while the agent runs; restart it to apply")]
    NeedsRestart {
        /// The fields.
        fields: String,
    },
    /// The data-path threads could not start.
    #[error("cannot start the data path")]
    Threads(#[source] io::Error),
}

/// Runs the agent with the config file at `path` until SIGTERM or SIGINT.
pub async fn run(path: &Path) -> Result<(), AgentError> {
    // Installed first and kept for the agent's life: a signal that arrives while the agent waits
    // for its control plane or sets up the host is then acted on, never lost or fatal.
    let mut signals = Signals::install().map_err(AgentError::Threads)?;
    let config = AgentConfig::load(path)?;
    let a = &config.agent;
    create_state_dir(&a.state_dir)?;
    // Two agents on one state directory would share a credential, a netmap cache and a
    // workload list; held until the agent exits.
    let _lock = DirLock::take(&a.state_dir).map_err(|e| match e {
        LockError::Held { path } => AgentError::StateDirInUse { path },
        LockError::Io { path, source } => AgentError::StateDir { path, source },
    })?;
    let key = load_or_create_key(&a.private_key_file)?;
    let identity = Arc::new(LocalIdentity::new(&key));
    drop(key);
    // Waiting for a control plane creates nothing yet, so a signal can simply end the wait.
    let source = tokio::select! {
        source = PeerSource::of(&config, identity.public_key()) => source?,
        () = signals.stop_while_starting() => return Ok(()),
    };
    let mut agent = Agent::start(path, config, identity, source).await?;
    let result = agent.serve(&mut signals).await;
    agent.shutdown().await;
    result
}

/// The signals the agent acts on.
struct Signals {
    hup: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> io::Result<Self> {
        Ok(Self {
            hup: signal(SignalKind::hangup())?,
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// Completes at SIGTERM or SIGINT; a SIGHUP before the agent runs has nothing to reload.
    async fn stop_while_starting(&mut self) {
        loop {
            tokio::select! {
                _ = self.hup.recv() => tracing::info!("SIGHUP while starting: nothing to reload yet"),
                _ = self.term.recv() => return tracing::info!("SIGTERM: stopping"),
                _ = self.int.recv() => return tracing::info!("SIGINT: stopping"),
            }
        }
    }
}

/// Where the host's subnet and peers come from: agent.toml, or a control plane's netmap.
struct PeerSource {
    subnet: IpNet,
    settings: Vec<PeerSettings>,
    control: Option<(control_link::Link, Netmap, Origin)>,
}

impl PeerSource {
    async fn of(
        config: &AgentConfig,
        public_key: wgmesh_config::PublicKey,
    ) -> Result<Self, AgentError> {
        let Some(control) = &config.control else {
            let subnet = config
                .agent
                .subnet
                .expect("agent.toml without [control] has a subnet");
            return Ok(Self {
                subnet,
                settings: peer_settings(config)?,
                control: None,
            });
        };
        let cache = NetmapCache::new(&config.agent.state_dir);
        let (link, netmap, origin) =
            control_link::establish(config, control, public_key, &cache).await?;
        let settings = netmap_cache::peer_settings(&netmap)?;
        let subnet = netmap.host.subnet;
        if subnet.addr().is_ipv6() && config.agent.mtu < wgmesh_config::MIN_IPV6_MTU {
            return Err(AgentError::MtuTooSmall {
                mtu: config.agent.mtu,
                subnet,
            });
        }
        if origin == Origin::Control {
            cache.save(&netmap)?;
        }
        Ok(Self {
            subnet,
            settings,
            control: Some((link, netmap, origin)),
        })
    }
}

struct Agent {
    config_path: PathBuf,
    config: AgentConfig,
    host: HostNet,
    peers: PeerSet,
    shared: Arc<Shared>,
    datapath: Option<DataPath>,
    offload: OffloadStatus,
    /// The bound UDP port (differs from the config when it asks for 0).
    port: u16,
    /// The host's overlay subnet: from agent.toml, or assigned by the control plane.
    subnet: IpNet,
    /// Netmaps from the control plane (never any in static mode).
    netmaps: mpsc::Receiver<Netmap>,
    /// The endpoint to report to the control plane (control mode).
    endpoint: Option<watch::Sender<Option<SocketAddr>>>,
    /// The revision of the netmap applied last (control mode).
    revision: Option<u64>,
    /// Whether the control plane answered the last call (control mode).
    connected: Arc<std::sync::atomic::AtomicBool>,
    link_task: Option<tokio::task::JoinHandle<()>>,
    tun_index: u32,
    bridge_index: u32,
    workloads: Workloads,
    store: WorkloadStore,
    commands: mpsc::Receiver<Command>,
    api_task: tokio::task::JoinHandle<()>,
}

impl Agent {
    async fn start(
        config_path: &Path,
        config: AgentConfig,
        identity: Arc<LocalIdentity>,
        source: PeerSource,
    ) -> Result<Self, AgentError> {
        let a = &config.agent;
        let subnet = source.subnet;
        let mut peers = PeerSet::new(identity.clone(), random_u32());
        peers.apply(&source.settings)?;
        let store = WorkloadStore::new(&a.state_dir);
        let workloads = store.load(subnet)?;
        let udp = Udp::bind(a.listen_port, a.offload).map_err(|source| AgentError::Udp {
            port: a.listen_port,
            hint: if source.kind() == io::ErrorKind::AddrInUse {
                " (another program, or another agent in this network namespace, uses it; pick another listen_port)"
            } else {
                ""
            },
            source,
        })?;
        let host = HostNet::connect()?;
        let listener = api::bind(&a.socket)?;

        // From here on, undo everything on failure.
        let mut undo = Undo::new(a);
        let started = async {
            host::enable_forwarding(subnet.addr().is_ipv6())?;
            let tun =
                Tun::create(&a.interface, a.mtu, a.offload).map_err(|source| AgentError::Tun {
                    name: a.interface.clone(),
                    source,
                })?;
            let tun_index =
                host.link_index(&a.interface)
                    .await?
                    .ok_or_else(|| AgentError::Tun {
                        name: a.interface.clone(),
                        source: io::Error::other("created but not found"),
                    })?;
            undo.bridge = true;
            let gateway = IpNet::new(workloads::gateway(subnet), subnet.prefix_len())
                .expect("subnet prefix length");
            let bridge_index = host.ensure_bridge(&a.bridge, gateway, a.mtu).await?;
            for net in peers.routed_prefixes() {
                host.replace_route(net, tun_index, Some(gateway.addr()))
                    .await?;
            }
            let offload = OffloadStatus {
                tun: tun.offload(),
                udp_gso: udp.max_gso_segments() > 1,
                udp_gro: udp.gro_segments() > 1,
            };
            let port = udp.local_port().unwrap_or(a.listen_port);
            let shared = Shared::new(identity.clone(), peers.table());
            let datapath =
                DataPath::start(shared.clone(), tun, udp, a.mtu).map_err(AgentError::Threads)?;
            Ok::<_, AgentError>((tun_index, bridge_index, offload, shared, datapath, port))
        }
        .await;
        let (tun_index, bridge_index, offload, shared, datapath, port) = match started {
            Ok(v) => v,
            Err(e) => {
                undo.run(&host).await;
                return Err(e);
            }
        };
        datapath.initiate_all();
        let (tx, commands) = mpsc::channel(16);
        let api_task = tokio::spawn(api::serve(listener, tx));
        let (netmap_tx, netmaps) = mpsc::channel(4);
        let connected = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (endpoint, revision, link_task) = match source.control {
            Some((link, netmap, origin)) => {
                connected.store(
                    origin == Origin::Control,
                    std::sync::atomic::Ordering::Relaxed,
                );
                let (endpoint_tx, endpoint_rx) = watch::channel(a.endpoint);
                let revision = netmap.revision;
                let task = tokio::spawn(control_link::follow(
                    link,
                    netmap,
                    netmap_tx,
                    endpoint_rx,
                    Arc::clone(&connected),
                ));
                (Some(endpoint_tx), Some(revision), Some(task))
            }
            None => (None, None, None),
        };
        let mut agent = Self {
            config_path: config_path.to_owned(),
            config,
            host,
            peers,
            shared,
            datapath: Some(datapath),
            offload,
            port,
            subnet,
            netmaps,
            endpoint,
            revision,
            connected,
            link_task,
            tun_index,
            bridge_index,
            workloads,
            store,
            commands,
            api_task,
        };
        agent.restore_workloads().await;
        tracing::info!(
            name = %agent.config.agent.name,
            interface = %agent.config.agent.interface,
            public_key = %identity.public_key(),
            listen_port = port,
            subnet = %agent.subnet,
            control = agent.config.control.as_ref().map(|c| c.url.to_string()),
            peers = agent.peers.settings().count(),
            tun_offload = offload.tun,
            udp_gso = offload.udp_gso,
            udp_gro = offload.udp_gro,
            "agent running"
        );
        Ok(agent)
    }

    async fn serve(&mut self, signals: &mut Signals) -> Result<(), AgentError> {
        loop {
            tokio::select! {
                _ = signals.hup.recv() => match self.reload().await {
                    Ok(summary) => tracing::info!("{summary}"),
                    Err(e) => tracing::error!("reload failed; keeping the running configuration: {}", Chain(&e)),
                },
                _ = signals.term.recv() => { tracing::info!("SIGTERM: shutting down"); return Ok(()) }
                _ = signals.int.recv() => { tracing::info!("SIGINT: shutting down"); return Ok(()) }
                Some(netmap) = self.netmaps.recv() => {
                    let revision = netmap.revision;
                    match self.apply_netmap(netmap).await {
                        Ok(summary) => tracing::info!(revision, "{summary}"),
                        Err(e) => tracing::error!(revision, "cannot apply the netmap; keeping the running peers: {}", Chain(&e)),
                    }
                }
                Some(cmd) = self.commands.recv() => {
                    let response = self.handle(cmd.request).await;
                    let _ = cmd.reply.send(response);
                }
            }
        }
    }

    async fn reload(&mut self) -> Result<String, AgentError> {
        let new = AgentConfig::load(&self.config_path)?;
        let mut fixed = fixed_fields_changed(&self.config.agent, &new.agent);
        fixed.extend(mode_changed(&self.config, &new));
        if !fixed.is_empty() {
            return Err(AgentError::NeedsRestart {
                fields: fixed.join(", "),
            });
        }
        if new.control.is_some() {
            // Peers come from the control plane; what agent.toml may change is the endpoint.
            if let Some(tx) = &self.endpoint {
                tx.send_replace(new.agent.endpoint);
            }
            let labels_changed = new.agent.labels != self.config.agent.labels;
            self.config = new;
            return Ok(format!(
                "reloaded {}: control mode, endpoint {}{}",
                self.config_path.display(),
                self.config
                    .agent
                    .endpoint
                    .map_or_else(|| "none".to_owned(), |e| e.to_string()),
                if labels_changed {
                    "; labels are sent when joining and do not change afterwards"
                } else {
                    ""
                }
            ));
        }
        let settings = peer_settings(&new)?;
        let summary = self.apply_peers(&settings).await?;
        self.config = new;
        Ok(format!(
            "reloaded {}: {summary}",
            self.config_path.display()
        ))
    }

    /// Applies a netmap from the control plane: its peers replace the running ones (unchanged
    /// peers keep their sessions), and it becomes the cached netmap.
    async fn apply_netmap(&mut self, netmap: Netmap) -> Result<String, AgentError> {
        let identity = &netmap.host;
        if identity.public_key != self.shared.identity.public_key()
            || identity.name != self.config.agent.name
        {
            return Err(LinkError::NotForUs {
                name: identity.name.clone(),
                key: identity.public_key.short(),
                own_name: self.config.agent.name.clone(),
                own_key: self.shared.identity.public_key().short(),
            }
            .into());
        }
        if identity.subnet != self.subnet {
            return Err(AgentError::NeedsRestart {
                fields: format!(
                    "the subnet (the control plane moved it from {} to {})",
                    self.subnet, identity.subnet
                ),
            });
        }
        let settings = netmap_cache::peer_settings(&netmap)?;
        let summary = self.apply_peers(&settings).await?;
        self.revision = Some(netmap.revision);
        if let Err(e) = NetmapCache::new(&self.config.agent.state_dir).save(&netmap) {
            tracing::error!("{}", Chain(&e));
        }
        Ok(format!(
            "applied netmap revision {}: {summary}",
            netmap.revision
        ))
    }

    /// Replaces the running peers with `settings` and routes their prefixes.
    async fn apply_peers(&mut self, settings: &[PeerSettings]) -> Result<String, AgentError> {
        let changes = self.peers.apply(settings)?;
        // The data path learns the new peers before the kernel routes anything to them.
        self.shared.table.store(Arc::new(self.peers.table()));
        let gateway = workloads::gateway(self.subnet);
        for net in &changes.routes_added {
            if let Err(e) = self
                .host
                .replace_route(*net, self.tun_index, Some(gateway))
                .await
            {
                tracing::error!(%net, "cannot add route: {}", Chain(&e));
            }
        }
        for net in &changes.routes_removed {
            if let Err(e) = self.host.delete_route(*net, self.tun_index).await {
                tracing::error!(%net, "cannot remove route: {}", Chain(&e));
            }
        }
        if let Some(dp) = &self.datapath {
            dp.initiate_all();
        }
        Ok(format!(
            "{} peers added, {} removed, {} changed",
            changes.added.len(),
            changes.removed.len(),
            changes.changed.len()
        ))
    }

    async fn handle(&mut self, request: Request) -> Response {
        match request {
            Request::Status {} => {
                Response::ok(serde_json::to_value(self.status()).expect("status serializes"))
            }
            Request::Attach { netns, ip } => match self.attach(&netns, ip).await {
                Ok(w) => Response::ok(
                    serde_json::json!({ "netns": w.netns, "ip": w.ip.to_string(), "host_ifname": w.host_ifname }),
                ),
                Err(e) => Response::err(e),
            },
            Request::Detach { netns } => match self.detach(&netns).await {
                Ok(w) => {
                    Response::ok(serde_json::json!({ "netns": w.netns, "ip": w.ip.to_string() }))
                }
                Err(e) => Response::err(e),
            },
        }
    }

    async fn attach(&mut self, netns: &str, ip: Option<IpAddr>) -> Result<Workload, String> {
        let addr = self
            .workloads
            .allocate(netns, ip)
            .map_err(|e| Chain(&e).to_string())?;
        let workload = Workload {
            netns: netns.to_owned(),
            ip: addr,
            host_ifname: host::host_ifname_for(netns),
        };
        self.wire(&workload)
            .await
            .map_err(|e| Chain(&e).to_string())?;
        self.workloads.insert(workload.clone());
        if let Err(e) = self.store.save(&self.workloads) {
            // Without the record the address could be handed out twice: undo.
            let _ = self.host.detach(&workload.host_ifname).await;
            self.workloads.remove(netns).ok();
            return Err(Chain(&e).to_string());
        }
        tracing::info!(netns, ip = %workload.ip, "workload attached");
        Ok(workload)
    }

    async fn detach(&mut self, netns: &str) -> Result<Workload, String> {
        let workload = self.workloads.get(netns).cloned().ok_or_else(|| {
            WorkloadError::NotAttached {
                netns: netns.into(),
            }
            .to_string()
        })?;
        self.host
            .detach(&workload.host_ifname)
            .await
            .map_err(|e| Chain(&e).to_string())?;
        self.workloads.remove(netns).ok();
        self.store
            .save(&self.workloads)
            .map_err(|e| Chain(&e).to_string())?;
        tracing::info!(netns, ip = %workload.ip, "workload detached");
        Ok(workload)
    }

    async fn wire(&self, w: &Workload) -> Result<(), HostError> {
        self.host
            .attach_netns(
                &w.netns,
                &w.host_ifname,
                self.bridge_index,
                w.ip,
                self.workloads.gateway(),
                self.config.agent.mtu,
            )
            .await
    }

    /// Puts the workloads of the state file back on the bridge: after kill -9 their veths still
    /// exist and only need the (possibly new) bridge; after a clean stop they are wired anew.
    /// Namespaces that no longer exist are forgotten.
    async fn restore_workloads(&mut self) {
        let saved: Vec<Workload> = self.workloads.iter().cloned().collect();
        let mut changed = false;
        for w in saved {
            if !Path::new("/run/netns").join(&w.netns).exists() {
                tracing::warn!(netns = %w.netns, ip = %w.ip, "namespace is gone; forgetting its workload");
                self.workloads.remove(&w.netns).ok();
                changed = true;
                continue;
            }
            let result = match self.host.link_index(&w.host_ifname).await {
                Ok(Some(index)) => self.host.enslave(index, self.bridge_index).await,
                Ok(None) => self.wire(&w).await,
                Err(e) => Err(e),
            };
            match result {
                Ok(()) => tracing::info!(netns = %w.netns, ip = %w.ip, "workload restored"),
                Err(e) => {
                    tracing::error!(netns = %w.netns, "cannot restore workload: {}", Chain(&e))
                }
            }
        }
        if changed {
            if let Err(e) = self.store.save(&self.workloads) {
                tracing::error!("{}", Chain(&e));
            }
        }
    }

    fn status(&self) -> Status {
        let a = &self.config.agent;
        let now = SystemTime::now();
        let table = self.shared.table.load();
        let mut peers: Vec<PeerStatus> = table
            .peers()
            .map(|peer| {
                let st = peer.lock();
                let latest_handshake = st.since_last_handshake().and_then(|ago| {
                    now.checked_sub(ago)
                        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                        .map(|d| d.as_secs())
                });
                PeerStatus {
                    name: st.name.clone(),
                    public_key: peer.public_key().to_string(),
                    endpoint: st.endpoint.map(|e| e.to_string()),
                    allowed_ips: st.allowed_ips.iter().map(|n| n.to_string()).collect(),
                    persistent_keepalive: st.persistent_keepalive,
                    latest_handshake,
                    rx_bytes: st.stats.rx_bytes,
                    tx_bytes: st.stats.tx_bytes,
                    rx_packets: st.stats.rx_packets,
                    tx_packets: st.stats.tx_packets,
                    dropped: PeerDropStatus {
                        source_not_allowed: st.stats.dropped.source_not_allowed,
                        decrypt_failed: st.stats.dropped.decrypt_failed,
                        no_endpoint: st.stats.dropped.no_endpoint,
                        no_session: st.stats.dropped.no_session,
                    },
                }
            })
            .collect();
        peers.sort_by(|a, b| a.public_key.cmp(&b.public_key));
        let d = self.shared.drops.counts();
        Status {
            name: a.name.clone(),
            interface: a.interface.clone(),
            public_key: self.shared.identity.public_key().to_string(),
            listen_port: self.port,
            subnet: self.subnet.to_string(),
            offload: self.offload,
            peers,
            dropped: HostDropStatus {
                no_route: d.no_route,
                unknown_peer: d.unknown_peer,
                malformed: d.malformed,
            },
            workloads: self
                .workloads
                .iter()
                .map(|w| WorkloadStatus {
                    netns: w.netns.clone(),
                    ip: w.ip.to_string(),
                    host_ifname: w.host_ifname.clone(),
                })
                .collect(),
            control: self.config.control.as_ref().map(|c| ControlStatus {
                url: c.url.to_string(),
                revision: self.revision.unwrap_or(0),
                connected: self.connected.load(std::sync::atomic::Ordering::Relaxed),
            }),
        }
    }

    /// Removes everything the agent created: the threads stop and the TUN device closes (taking
    /// its routes along), the workloads' veths and the bridge are deleted, the socket removed.
    /// The workloads stay in the state file and are wired again at the next start.
    async fn shutdown(&mut self) {
        self.api_task.abort();
        if let Some(task) = self.link_task.take() {
            task.abort();
        }
        if let Some(dp) = self.datapath.take() {
            dp.stop();
        }
        for w in self.workloads.iter() {
            if let Err(e) = self.host.detach(&w.host_ifname).await {
                tracing::warn!(netns = %w.netns, "cannot remove workload veth: {}", Chain(&e));
            }
        }
        let mut undo = Undo::new(&self.config.agent);
        undo.bridge = true;
        undo.run(&self.host).await;
        tracing::info!("agent stopped; host networking removed");
    }
}

/// What start-up created and shutdown removes.
struct Undo {
    bridge_name: String,
    socket: PathBuf,
    bridge: bool,
}

impl Undo {
    fn new(a: &AgentSection) -> Self {
        Self {
            bridge_name: a.bridge.clone(),
            socket: a.socket.clone(),
            bridge: false,
        }
    }

    async fn run(&mut self, host: &HostNet) {
        if self.bridge {
            if let Err(e) = host.delete_link(&self.bridge_name).await {
                tracing::warn!(bridge = %self.bridge_name, "cannot remove bridge: {}", Chain(&e));
            }
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

fn fixed_fields_changed(old: &AgentSection, new: &AgentSection) -> Vec<&'static str> {
    let mut out = Vec::new();
    let mut check = |changed: bool, name: &'static str| {
        if changed {
            out.push(name);
        }
    };
    check(old.name != new.name, "agent.name");
    check(
        old.private_key_file != new.private_key_file,
        "agent.private_key_file",
    );
    check(old.listen_port != new.listen_port, "agent.listen_port");
    check(old.interface != new.interface, "agent.interface");
    check(old.bridge != new.bridge, "agent.bridge");
    check(old.mtu != new.mtu, "agent.mtu");
    check(old.subnet != new.subnet, "agent.subnet");
    check(old.socket != new.socket, "agent.socket");
    check(old.state_dir != new.state_dir, "agent.state_dir");
    check(old.offload != new.offload, "agent.offload");
    out
}

fn mode_changed(old: &AgentConfig, new: &AgentConfig) -> Option<&'static str> {
    match (&old.control, &new.control) {
        (None, None) => None,
        (Some(a), Some(b)) if a.url == b.url => None,
        (Some(_), Some(_)) => Some("control.url"),
        _ => Some("[control] (static and control mode)"),
    }
}

/// The peers of a config, with preshared keys read from their files.
fn peer_settings(config: &AgentConfig) -> Result<Vec<PeerSettings>, AgentError> {
    config
        .peers
        .iter()
        .map(|p| {
            let preshared_key = match &p.preshared_key_file {
                Some(path) => Some(PresharedKeyBytes(read_key::<PresharedKey>(path)?)),
                None => None,
            };
            Ok(PeerSettings {
                name: p.name.clone(),
                public_key: p.public_key,
                endpoint: p.endpoint,
                allowed_ips: p.allowed_ips.clone(),
                persistent_keepalive: p.persistent_keepalive,
                preshared_key,
            })
        })
        .collect()
}

fn read_key<K: std::str::FromStr>(path: &Path) -> Result<K, AgentError>
where
    K::Err: std::fmt::Display,
{
    let text = std::fs::read_to_string(path).map_err(|e| AgentError::KeyFile {
        path: path.to_owned(),
        message: format!("cannot read the key file: {e}"),
    })?;
    warn_if_readable_by_others(path);
    text.trim()
        .parse()
        .map_err(|e: K::Err| AgentError::KeyFile {
            path: path.to_owned(),
            message: e.to_string(),
        })
}

fn warn_if_readable_by_others(path: &Path) {
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(path = %path.display(), mode = format!("{mode:o}"), "key file is accessible to group or others; chmod 600 it");
        }
    }
}

/// Reads the host's private key, creating it (mode 0600) when the file does not exist.
fn load_or_create_key(path: &Path) -> Result<PrivateKey, AgentError> {
    if path.exists() {
        return read_key(path);
    }
    let err = |e: io::Error| AgentError::KeyFile {
        path: path.to_owned(),
        message: format!("cannot create the key file: {e}"),
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let key = PrivateKey::generate();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(err)?;
    writeln!(f, "{}", key.to_base64()).map_err(err)?;
    f.sync_all().map_err(err)?;
    tracing::info!(path = %path.display(), "created a new private key");
    Ok(key)
}

fn create_state_dir(dir: &Path) -> Result<(), AgentError> {
    wgmesh_client::private_dir::create(dir).map_err(|source| AgentError::StateDir {
        path: dir.to_owned(),
        source,
    })?;
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    Ok(())
}

pub(crate) fn random_u32() -> u32 {
    use rand_core::RngCore;
    rand_core::OsRng.next_u32()
}
