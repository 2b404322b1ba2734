//! Start-up and shutdown: the agent takes the UDP port, the TUN device, the bridge and the
//! routes, starts the data-path threads, the local API and the control link, and puts its
//! workloads back; shutdown removes all of it again.
//!
//! Start-up is all or nothing: on any error it undoes what it did and returns the error.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use ipnet::IpNet;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use wgmesh_config::netmap::Netmap;
use wgmesh_config::{AgentConfig, AgentSection};

use super::control_link::{self, Link, Offer, Origin};
use super::random::random_u32;
use super::source::PeerSource;
use super::workloads::{self, WorkloadStore};
use super::{Agent, AgentError};
use crate::api;
use crate::api::status::OffloadStatus;
use crate::datapath::tun::Tun;
use crate::datapath::udp::Udp;
use crate::datapath::{DataPath, Shared};
use crate::error::Chain;
use crate::host::{self, HostNet};
use crate::peers::noise::LocalIdentity;
use crate::peers::set::PeerSet;

impl Agent {
    /// Brings the host up from `source` (see the [module documentation](self)).
    pub(super) async fn start(
        config_path: &Path,
        config: AgentConfig,
        identity: Arc<LocalIdentity>,
        source: PeerSource,
    ) -> Result<Self, AgentError> {
        let a = &config.agent;
        let subnet = source.subnet;
        let cluster = source.cluster;
        let mut peers = PeerSet::new(identity.clone(), random_u32());
        peers.apply(&source.settings)?;
        let store = WorkloadStore::new(&a.state_dir);
        let workloads = store.load(subnet)?;
        let udp = bind_udp(a)?;
        let host = HostNet::connect()?;
        let listener = api::bind(&a.socket)?;

        // From here on, undo everything on failure.
        let mut undo = Undo::new(a);
        let started = bring_up(a, &host, &mut undo, subnet, &peers, udp).await;
        let Up {
            tun_index,
            bridge_index,
            offload,
            shared,
            datapath,
            port,
        } = match started {
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
        let connected = Arc::new(AtomicBool::new(false));
        let netmaps_refused = Arc::new(AtomicU64::new(0));
        let Following {
            endpoint,
            revision,
            link_task,
        } = follow_control(
            source.control,
            a.endpoint,
            netmap_tx,
            &connected,
            &netmaps_refused,
        );
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
            cluster,
            netmaps_refused,
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
    /// its routes along), the workloads' veths and the bridge are deleted, the socket removed.
    /// The workloads stay in the state file and are wired again at the next start.
    pub(super) async fn shutdown(&mut self) {
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

/// Creates the TUN device and the bridge, routes the peers' prefixes and starts the data-path
/// threads. What it created is marked in `undo`, which the caller runs on failure.
async fn bring_up(
    a: &AgentSection,
    host: &HostNet,
    undo: &mut Undo,
    subnet: IpNet,
    peers: &PeerSet,
    udp: Udp,
) -> Result<Up, AgentError> {
    host::enable_forwarding(subnet.addr().is_ipv6())?;
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
    let shared = Shared::new(peers.table());
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

/// What [`follow_control`] started; all `None` in static mode.
struct Following {
    /// The endpoint to report to the control plane.
    endpoint: Option<watch::Sender<Option<SocketAddr>>>,
    /// The revision of the first netmap.
    revision: Option<u64>,
    /// The task that follows the control plane.
    link_task: Option<JoinHandle<()>>,
}

/// In control mode, starts following the control plane from the first netmap, and sets
/// `connected` when that netmap came from the control plane itself.
fn follow_control(
    control: Option<(Link, Netmap, Origin)>,
    endpoint: Option<SocketAddr>,
    netmaps: mpsc::Sender<Offer>,
    connected: &Arc<AtomicBool>,
    refused: &Arc<AtomicU64>,
) -> Following {
    let Some((link, netmap, origin)) = control else {
        return Following {
            endpoint: None,
            revision: None,
            link_task: None,
        };
    };
    connected.store(origin == Origin::Control, Ordering::Relaxed);
    let (endpoint_tx, endpoint_rx) = watch::channel(endpoint);
    let revision = netmap.revision;
    let task = tokio::spawn(control_link::follow(
        link,
        netmap,
        netmaps,
        endpoint_rx,
        Arc::clone(connected),
        Arc::clone(refused),
    ));
    Following {
        endpoint: Some(endpoint_tx),
        revision: Some(revision),
        link_task: Some(task),
    }
}
