//! Start-up and shutdown: the agent takes the UDP port, the TUN device, the bridge and the
//! routes, starts the data-path threads, the local API and the control link, and puts its
//! workloads back; shutdown removes all of it again.
//!
//! Start-up is all or nothing: on any error it undoes what it did and returns the error. The
//! cluster's `unreachable` route comes first and goes last; one taken over from a killed run
//! stays even when the start fails (the host stays closed, not open).

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;
use std::time::Instant;

use ipnet::IpNet;
use tokio::net::UnixListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use wgmesh_config::netmap::Netmap;
use wgmesh_config::{AgentConfig, AgentSection};

use super::control_link::{self, Connection, KeyReports, Link, Offer, Origin, WorkloadReports};
use super::local_nets;
use super::random::{random_seed, random_u32};
use super::routes::{self, RouteGuard};
use super::source::PeerSource;
use super::sysctls::SavedSysctls;
use super::workloads::{self, WorkloadStore, Workloads};
use super::{Agent, AgentError};
use crate::api;
use crate::api::status::OffloadStatus;
use crate::datapath::audit::{AuditLog, AuditTap, WorkloadNames};
use crate::datapath::tun::Tun;
use crate::datapath::udp::Udp;
use crate::datapath::{DataPath, Shared};
use crate::error::Chain;
use crate::host::forwarding::ForwardingTargets;
use crate::host::{self, HostNet, RouteKind};
use crate::peers::identity::HostKeys;
use crate::peers::noise::LocalIdentity;
use crate::peers::set::PeerSet;
use crate::peers::settings::PeerSettings;

impl Agent {
    /// Brings the host up from `source` (see the [module documentation](self)). `config` was
    /// parsed from `config_text`, the file at `config_path`.
    pub(super) async fn start(
        config_path: &Path,
        config_text: &str,
        config: AgentConfig,
        keys: super::rotation::StartKeys,
        source: PeerSource,
        plugin: Option<super::docker::Plugin>,
    ) -> Result<Self, AgentError> {
        let a = &config.agent;
        let subnet = source.subnet;
        let host = HostNet::connect()?;
        let (route_guard, settings, created) =
            close_host(config_path, config_text, &config, &host, &source).await?;
        // A cluster route this start created goes again if the start fails; one taken over
        // from a killed run stays (the host stays closed).
        let mut undo = Undo::new(a);
        undo.cluster = created;
        let identity = keys.keys.current.clone();
        let p = match prepare(a, &host, &keys.keys, &settings, &source).await {
            Ok(p) => p,
            Err(e) => {
                undo.run(&host).await;
                return Err(e);
            }
        };
        // From here on, undo everything on failure.
        undo.socket_bound = true;
        let mut sysctls = p.sysctls;
        let names = Arc::new(WorkloadNames::default());
        let (audit, tap) = match AuditLog::start(&a.audit_log, Arc::clone(&names)) {
            Ok(started) => started,
            Err(e) => {
                undo.run(&host).await;
                return Err(AgentError::AuditLog(e));
            }
        };
        let up = bring_up(
            a,
            &host,
            &mut undo,
            &mut sysctls,
            subnet,
            &p.peers,
            p.udp,
            tap,
        );
        let up = match up.await {
            Ok(up) => up,
            Err(e) => {
                undo.run(&host).await;
                sysctls.restore();
                audit.stop();
                return Err(e);
            }
        };
        up.datapath.initiate_all();
        let (tx, commands) = mpsc::channel(16);
        let api_task = tokio::spawn(api::serve(p.listener, tx));
        let (netmap_tx, netmaps) = mpsc::channel(4);
        let netmaps_refused = Arc::new(AtomicU64::new(0));
        let following = follow_control(source.control, a.endpoint, netmap_tx, &netmaps_refused);
        let mut agent = Self {
            config_path: config_path.to_owned(),
            config,
            host,
            peers: p.peers,
            shared: up.shared,
            datapath: Some(up.datapath),
            offload: up.offload,
            port: up.port,
            subnet,
            route_guard,
            netmaps,
            netmaps_refused,
            endpoint: following.endpoint,
            revision: following.revision,
            connected: following.connected,
            link_task: following.link_task,
            reports: following.reports,
            tun_index: up.tun_index,
            bridge_index: up.bridge_index,
            workloads: p.workloads,
            store: p.store,
            sysctls,
            audit: Some(audit),
            names,
            commands,
            api_task,
            plugin,
            key_files: keys.files,
            retiring: keys.retiring,
            key_reports: following.key_reports,
            rotation_host: None,
        };
        agent.restore_workloads().await;
        agent.restore_containers().await;
        agent.open_firewall().await;
        if let (Some(plugin), Some(docker)) = (agent.plugin.as_mut(), agent.config.docker.as_ref())
        {
            plugin.follow_docker(docker);
        }
        agent.share_workload_names();
        // The list as restored (namespaces gone are forgotten) is the first report.
        agent.publish_workloads();
        // A rotation the first netmap orders (or one this host was in when it stopped).
        if let Some(host) = following.host {
            agent.follow_rotation(&host);
        }
        remove_stale_cluster_routes(&agent.host, agent.route_guard.cluster).await;
        agent.log_running(&identity);
        Ok(agent)
    }

    fn log_running(&self, identity: &LocalIdentity) {
        tracing::info!(
            name = %self.config.agent.name,
            interface = %self.config.agent.interface,
            public_key = %identity.public_key(),
            listen_port = self.port,
            subnet = %self.subnet,
            control = self.config.control.as_ref().map(|c| c.url.to_string()),
            peers = self.peers.settings().count(),
            tun_offload = self.offload.tun,
            udp_gso = self.offload.udp_gso,
            udp_gro = self.offload.udp_gro,
            "agent running"
        );
    }

    /// Removes everything the agent created: the threads stop and the TUN device closes (taking
    /// its routes along), the workloads' veths, the same-host rule and table and the bridge are
    /// deleted, the socket removed, and last the cluster's `unreachable` route.
    /// The workloads stay in the state file and are wired again at the next start.
    pub(super) async fn shutdown(&mut self) {
        self.api_task.abort();
        // The containers' veths stay (their other ends are the containers' interfaces): off
        // the bridge, which goes, they reach nothing until the next start guards them again.
        drop(self.plugin.take());
        if let Some(task) = self.link_task.take() {
            task.abort();
        }
        // Stops the workload reports: the control plane keeps the last list it got, as it
        // keeps the host's netmap (the workloads are wired again at the next start).
        self.reports = None;
        if let Some(dp) = self.datapath.take() {
            dp.stop();
        }
        if let Some(audit) = self.audit.take() {
            audit.stop();
        }
        for w in self.workloads.iter() {
            if let Err(e) = self.host.detach(&w.host_ifname).await {
                tracing::warn!(netns = %w.netns, "cannot remove workload veth: {}", Chain(&e));
            }
        }
        let mut undo = Undo::new(&self.config.agent);
        undo.bridge = true;
        undo.same_host = true;
        undo.socket_bound = true;
        undo.cluster = true;
        undo.run(&self.host).await;
        self.sysctls.restore();
        let (bridge, tun) = (
            self.config.agent.bridge.clone(),
            self.config.agent.interface.clone(),
        );
        let closed =
            tokio::task::spawn_blocking(move || host::firewall::close_forwarding(&bridge, &tun))
                .await;
        if let Ok(Err(e)) = closed {
            tracing::warn!("cannot remove the forwarding rules: {}", Chain(&e));
        }
        tracing::info!("agent stopped; host networking removed");
    }

    /// [`Self::open_firewall`] in the background: the loop does not wait for `iptables` (which
    /// may wait for dockerd's lock while it starts containers).
    pub(super) fn spawn_open_firewall(&self) {
        let (bridge, tun) = (
            self.config.agent.bridge.clone(),
            self.config.agent.interface.clone(),
        );
        tokio::task::spawn_blocking(move || {
            log_opened(host::firewall::open_forwarding(&bridge, &tun))
        });
    }

    /// Lets the overlay's forwarding past the host's packet filter ([`host::firewall`]); run at
    /// start and again whenever dockerd is seen (it may have put its rules above ours since).
    pub(super) async fn open_firewall(&self) {
        let (bridge, tun) = (
            self.config.agent.bridge.clone(),
            self.config.agent.interface.clone(),
        );
        let opened =
            tokio::task::spawn_blocking(move || host::firewall::open_forwarding(&bridge, &tun))
                .await;
        match opened {
            Ok(result) => log_opened(result),
            Err(e) => tracing::warn!("cannot set the overlay's forwarding rules: {e}"),
        }
    }
}

/// Closes the cluster on the host before anything else is set up: screens the peers' prefixes
/// against the host's routes (in static mode a refused one is an error at its line in
/// agent.toml; in control mode it is logged, counted and left out), then creates or takes over
/// the cluster's `unreachable` route. Returns the guard, the peers to apply, and whether a
/// failed start may remove the cluster route again: only when it created it now and no
/// earlier run left one (taken over, or left for another prefix, the routes stay, so a host
/// whose bridge a killed run left behind stays closed).
async fn close_host(
    config_path: &Path,
    config_text: &str,
    config: &AgentConfig,
    host: &HostNet,
    source: &PeerSource,
) -> Result<(RouteGuard, Vec<PeerSettings>, bool), AgentError> {
    let control = routes::control_addrs(config).await;
    let mut guard = RouteGuard::new(source.cluster, config, &control);
    let present = host.main_routes().await?;
    let (settings, refused) = guard.screen(&source.settings, &present);
    if config.control.is_none() {
        routes::refuse_static(config_path, config_text, &refused)?;
    }
    guard.record(refused);
    let created = routes::close_cluster(host, source.cluster, &guard.guarded, &present).await?;
    // Cluster routes of an earlier run for another prefix stay until this start has succeeded
    // (`remove_stale_cluster_routes`): if it fails, the host stays closed for that prefix too,
    // and then this start's own route stays as well (undo removes every cluster route).
    let stale = present
        .iter()
        .any(|r| r.is_ours() && r.kind == RouteKind::Unreachable && r.dst != source.cluster);
    Ok((guard, settings, created && !stale))
}

/// Removes the cluster routes an earlier run left for prefixes other than `cluster`, once this
/// start has closed `cluster` and is up.
async fn remove_stale_cluster_routes(host: &HostNet, cluster: IpNet) {
    match host.remove_cluster_routes(Some(cluster)).await {
        Ok(stale) => {
            for stale in stale {
                tracing::info!(%stale, "removed the cluster route of an earlier run");
            }
        }
        Err(e) => tracing::warn!(
            "cannot remove an earlier run's cluster route: {}",
            Chain(&e)
        ),
    }
}

/// What start-up takes before it changes the host's links.
struct Prepared {
    peers: PeerSet,
    store: WorkloadStore,
    workloads: Workloads,
    sysctls: SavedSysctls,
    udp: Udp,
    listener: UnixListener,
}

async fn prepare(
    a: &AgentSection,
    host: &HostNet,
    keys: &HostKeys,
    settings: &[PeerSettings],
    source: &PeerSource,
) -> Result<Prepared, AgentError> {
    let nets = local_nets::read(host, source.subnet, source.cluster).await?;
    let mut peers = PeerSet::new(keys.current.clone(), random_u32(), nets);
    peers.set_host_keys(keys.clone())?;
    // Static mode: a peer whose key was edited in place (a rotation) is the same peer.
    peers.match_names(source.control.is_none());
    peers.seed_flows(random_seed());
    peers.apply(settings)?;
    // The policy of the first netmap (the control plane's, or the cached one during an
    // outage) is in the first table the data path gets: enforced from the first packet.
    peers.apply_policy(Instant::now(), source.policy());
    let store = WorkloadStore::new(&a.state_dir);
    let workloads = store.load(source.subnet)?;
    let mut sysctls = SavedSysctls::load(&a.state_dir)?;
    // What a killed agent left changed goes back first.
    sysctls.restore();
    let udp = bind_udp(a)?;
    let listener = api::bind(&a.socket)?;
    Ok(Prepared {
        peers,
        store,
        workloads,
        sysctls,
        udp,
        listener,
    })
}

/// What start-up created and shutdown removes.
struct Undo {
    bridge_name: String,
    socket: PathBuf,
    /// The bridge was made (or reused).
    bridge: bool,
    /// The same-host rule and table may be ours to remove.
    same_host: bool,
    /// The API socket is ours to remove.
    socket_bound: bool,
    /// The cluster route to remove, last.
    cluster: bool,
}

impl Undo {
    fn new(a: &AgentSection) -> Self {
        Self {
            bridge_name: a.bridge.clone(),
            socket: a.socket.clone(),
            bridge: false,
            same_host: false,
            socket_bound: false,
            cluster: false,
        }
    }

    async fn run(&mut self, host: &HostNet) {
        if self.same_host {
            if let Err(e) = host.unroute_same_host().await {
                tracing::warn!("cannot remove the same-host rule and table: {}", Chain(&e));
            }
        }
        if self.bridge {
            if let Err(e) = host.delete_link(&self.bridge_name).await {
                tracing::warn!(bridge = %self.bridge_name, "cannot remove bridge: {}", Chain(&e));
            }
        }
        if self.socket_bound {
            let _ = std::fs::remove_file(&self.socket);
        }
        // Last: with the bridge gone nothing on this host sends into the cluster any more.
        if self.cluster {
            if let Err(e) = host.remove_cluster_routes(None).await {
                tracing::warn!("cannot remove the cluster route: {}", Chain(&e));
            }
        }
    }
}

/// What [`bring_up`] made.
struct Up {
    tun_index: u32,
    bridge_index: u32,
    offload: OffloadStatus,
    shared: Arc<Shared>,
    datapath: DataPath,
    port: u16,
}

/// Binds the UDP port, with a hint when another program holds it.
fn bind_udp(a: &AgentSection) -> Result<Udp, AgentError> {
    Udp::bind(a.listen_port, a.offload).map_err(|source| AgentError::Udp {
        port: a.listen_port,
        hint: if source.kind() == io::ErrorKind::AddrInUse {
            " (another program, or another agent in this network namespace, uses it; pick another listen_port)"
        } else {
            ""
        },
        source,
    })
}

/// Creates the TUN device and the bridge (its MAC pinned, forwarding and same-host proxying on,
/// the sysctls recorded in `sysctls`), routes same-host traffic and the peers' prefixes into the
/// TUN device and starts the data-path threads (auditing into `audit`). What it created is marked in `undo` and
/// `sysctls`, which the caller runs on failure.
#[allow(clippy::too_many_arguments)]
async fn bring_up(
    a: &AgentSection,
    host: &HostNet,
    undo: &mut Undo,
    sysctls: &mut SavedSysctls,
    subnet: IpNet,
    peers: &PeerSet,
    udp: Udp,
    audit: AuditTap,
) -> Result<Up, AgentError> {
    let tun = Tun::create(&a.interface, a.mtu, a.offload).map_err(|source| AgentError::Tun {
        name: a.interface.clone(),
        source,
    })?;
    let tun_index = host
        .link_index(&a.interface)
        .await?
        .ok_or_else(|| AgentError::Tun {
            name: a.interface.clone(),
            source: io::Error::other("created but not found"),
        })?;
    undo.bridge = true;
    let gateway =
        IpNet::new(workloads::gateway(subnet), subnet.prefix_len()).expect("subnet prefix length");
    let bridge_index = host.ensure_bridge(&a.bridge, gateway, a.mtu).await?;
    host.pin_mac(bridge_index, &a.bridge, host::bridge_mac(a.name.as_str()))
        .await?;
    let targets = ForwardingTargets {
        bridge: &a.bridge,
        tun: &a.interface,
        v6: subnet.addr().is_ipv6(),
    };
    sysctls.enable_forwarding(&targets)?;
    sysctls.enable_proxy(&targets)?;
    undo.same_host = true;
    host.route_same_host(&a.bridge, subnet, tun_index).await?;
    for net in peers.routed_prefixes() {
        host.add_route(net, tun_index, Some(gateway.addr())).await?;
    }
    let offload = OffloadStatus {
        tun: tun.offload(),
        udp_gso: udp.max_gso_segments() > 1,
        udp_gro: udp.gro_segments() > 1,
    };
    let port = udp.local_port().unwrap_or(a.listen_port);
    let shared = Shared::new(peers.table(), audit);
    let datapath = DataPath::start(shared.clone(), tun, udp, a.mtu).map_err(AgentError::Threads)?;
    Ok(Up {
        tun_index,
        bridge_index,
        offload,
        shared,
        datapath,
        port,
    })
}

/// What [`follow_control`] started; all `None` (and never connected) in static mode.
struct Following {
    /// The endpoint to report to the control plane.
    endpoint: Option<watch::Sender<Option<SocketAddr>>>,
    /// The revision of the first netmap.
    revision: Option<u64>,
    /// Whether the control plane answered the last call.
    connected: Arc<AtomicBool>,
    /// The task that follows the control plane.
    link_task: Option<JoinHandle<()>>,
    /// The workload reports (their own task).
    reports: Option<WorkloadReports>,
    /// The key reports during a rotation (their own task).
    key_reports: Option<KeyReports>,
    /// The first netmap's host section: its rotation order.
    host: Option<wgmesh_config::netmap::HostIdentity>,
}

/// In control mode, starts following the control plane from the first netmap (connected when
/// that netmap came from the control plane itself) and reporting the workloads.
fn follow_control(
    control: Option<(Link, Netmap, Origin)>,
    endpoint: Option<SocketAddr>,
    netmaps: mpsc::Sender<Offer>,
    refused: &Arc<AtomicU64>,
) -> Following {
    let Some((link, netmap, origin)) = control else {
        return Following {
            endpoint: None,
            revision: None,
            connected: Arc::new(AtomicBool::new(false)),
            link_task: None,
            reports: None,
            key_reports: None,
            host: None,
        };
    };
    let connection = Connection::new(origin == Origin::Control);
    let reports = WorkloadReports::start(link.clone(), connection.reconnects.subscribe());
    let key_reports = KeyReports::start(link.clone(), connection.reconnects.subscribe());
    let host = netmap.host.clone();
    let (endpoint_tx, endpoint_rx) = watch::channel(endpoint);
    let revision = netmap.revision;
    let connected = Arc::clone(&connection.connected);
    let task = tokio::spawn(control_link::follow(
        link,
        netmap,
        netmaps,
        endpoint_rx,
        connection,
        Arc::clone(refused),
    ));
    Following {
        endpoint: Some(endpoint_tx),
        revision: Some(revision),
        connected,
        link_task: Some(task),
        reports: Some(reports),
        key_reports: Some(key_reports),
        host: Some(host),
    }
}

fn log_opened(result: Result<bool, host::firewall::FirewallError>) {
    match result {
        Ok(false) => {}
        Ok(true) => tracing::info!("FORWARD rules set on top: bridge <-> TUN, nothing else"),
        Err(e) => tracing::warn!("cannot set the overlay's forwarding rules: {}", Chain(&e)),
    }
}
