//! The agent daemon: turns an [`AgentConfig`] into a running host — key, UDP socket, TUN device,
//! bridge, routes, restored workloads, data-path threads and the local API — and keeps it in step
//! with the config file (SIGHUP) until SIGTERM/SIGINT, when it removes everything it created.
//!
//! Start-up is all or nothing: on any error it undoes what it did and returns the error.
//! A reload is all or nothing too: an invalid file leaves the running configuration untouched.
//!
//! Here: [`run`], the agent's state and its event loop (signals, netmaps, API requests).
//! - `start`: start-up and shutdown; `source`: where the subnet and peers come from; `keys`:
//!   the key files; `statefile`: the state directory and its JSON files; `sysctls`: the
//!   forwarding sysctls changed and their record; `local_nets`: the host's networks for the
//!   peers (what they may reach, where they may roam).
//! - `routes`: the cluster CIDR and which peer prefixes may be routed (never over a route the
//!   agent did not create);
//! - `rotation`: the host's key rotation (the key file and its rotation record);
//! - `reload`: SIGHUP and new netmaps; [`control_link`]: join, long-poll, report the endpoint;
//!   [`netmap_cache`]: the last netmap applied, for fail-static restarts.
//! - `attach`: attach (or relabel), detach and restore workloads, and publish their list for
//!   the control plane; [`workloads`]: their addresses, labels and file.
//! - `status`: what `wgmesh status` shows; `signals`; `random`; `error`: [`AgentError`].

mod attach;
pub mod control_link;
mod docker;
mod error;
mod keys;
mod local_nets;
pub mod netmap_cache;
mod random;
mod reload;
mod rotation;
mod routes;
mod signals;
mod source;
mod start;
mod statefile;
mod status;
mod sysctls;
pub mod workloads;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use ipnet::IpNet;
use tokio::sync::{mpsc, watch};
use wgmesh_config::AgentConfig;

pub use error::AgentError;
pub use statefile::{StateDirError, StateFileError};

use crate::api::status::OffloadStatus;
use crate::api::{Command, Request, Response};
use crate::datapath::audit::{AuditLog, WorkloadNames};
use crate::datapath::{DataPath, Shared};
use crate::error::Chain;
use crate::host::HostNet;
use crate::peers::set::PeerSet;
use control_link::Offer;
use signals::Signals;
use source::PeerSource;
use statefile::{create_state_dir, lock_state_dir};
use sysctls::SavedSysctls;
use workloads::{WorkloadStore, Workloads};

/// Runs the agent with the config file at `path` until SIGTERM or SIGINT.
pub async fn run(path: &Path) -> Result<(), AgentError> {
    // Installed first and kept for the agent's life: a signal that arrives while the agent waits
    // for its control plane or sets up the host is then acted on, never lost or fatal.
    let mut signals = Signals::install().map_err(AgentError::Threads)?;
    let (config, config_text) = AgentConfig::load_with_text(path)?;
    let a = &config.agent;
    create_state_dir(&a.state_dir)?;
    // Held until the agent exits.
    let _lock = lock_state_dir(&a.state_dir)?;
    let plugin = config
        .docker
        .as_ref()
        .map(docker::Plugin::bind)
        .transpose()?;
    let key_files = rotation::HostKeyFiles::new(&a.private_key_file, &a.state_dir);
    let (keys, retiring) = key_files.load(std::time::SystemTime::now())?;
    let public_keys: Vec<_> = keys.all().map(|k| k.public_key()).collect();
    // Waiting for a control plane creates nothing yet, so a signal can simply end the wait.
    let source = tokio::select! {
        source = PeerSource::of(&config, &public_keys) => source,
        () = signals.stop_while_starting() => Err(AgentError::Stopped),
    };
    let source = match source {
        Ok(source) => source,
        Err(e) => {
            drop(plugin);
            return if matches!(e, AgentError::Stopped) {
                Ok(())
            } else {
                Err(e)
            };
        }
    };
    let keys = rotation::StartKeys {
        files: key_files,
        keys,
        retiring,
    };
    let mut agent = Agent::start(path, &config_text, config, keys, source, plugin).await?;
    let result = agent.serve(&mut signals).await;
    agent.shutdown().await;
    result
}

/// The running agent: what it created and what it listens to.
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
    /// The cluster CIDR the agent closes and the peer prefixes it refused.
    route_guard: routes::RouteGuard,
    /// Netmaps from the control plane (never any in static mode).
    netmaps: mpsc::Receiver<Offer>,
    /// Netmaps refused since start (control mode), shown by status; the link counts the ones
    /// that do not even parse.
    netmaps_refused: Arc<AtomicU64>,
    /// The endpoint to report to the control plane (control mode).
    endpoint: Option<watch::Sender<Option<SocketAddr>>>,
    /// The revision of the netmap applied last (control mode).
    revision: Option<u64>,
    /// Whether the control plane answered the last call (control mode).
    connected: Arc<AtomicBool>,
    link_task: Option<tokio::task::JoinHandle<()>>,
    /// Where the workload list is published for the control plane (control mode).
    reports: Option<control_link::WorkloadReports>,
    tun_index: u32,
    bridge_index: u32,
    workloads: Workloads,
    store: WorkloadStore,
    /// The forwarding sysctls changed, restored at shutdown.
    sysctls: SavedSysctls,
    /// The writer of the audit log of refused flows, stopped at shutdown.
    audit: Option<AuditLog>,
    /// The workloads' namespaces by address, for the audit log.
    names: Arc<WorkloadNames>,
    commands: mpsc::Receiver<Command>,
    api_task: tokio::task::JoinHandle<()>,
    /// The Docker plugin (a `[docker]` table): its calls, and its socket's task.
    plugin: Option<docker::Plugin>,
    /// The host's key file and rotation record.
    key_files: rotation::HostKeyFiles,
    /// The rotation in progress, if any.
    retiring: Option<rotation::Retiring>,
    /// Where the host's key is reported during a control-plane rotation (control mode).
    key_reports: Option<control_link::KeyReports>,
    /// The host section of the netmap applied last (control mode): its rotation order.
    rotation_host: Option<wgmesh_config::netmap::HostIdentity>,
}

impl Agent {
    async fn serve(&mut self, signals: &mut Signals) -> Result<(), AgentError> {
        loop {
            let retire_due = self.retire_due();
            let rotation_ticks = self.rotation_ticks();
            tokio::select! {
                _ = signals.hup.recv() => match self.reload().await {
                    Ok(summary) => tracing::info!("{summary}"),
                    Err(e) => tracing::error!("reload failed; keeping the running configuration: {}", Chain(&e)),
                },
                _ = signals.term.recv() => { tracing::info!("SIGTERM: shutting down"); return Ok(()) }
                _ = signals.int.recv() => { tracing::info!("SIGINT: shutting down"); return Ok(()) }
                Some(offer) = self.netmaps.recv() => self.offered(offer).await,
                Some(cmd) = self.commands.recv() => {
                    let response = self.handle(cmd.request).await;
                    let _ = cmd.reply.send(response);
                }
                input = docker::next_input(&mut self.plugin) => self.docker_input(input).await,
                () = rotation::tick(rotation_ticks) => {
                    if let Some(host) = self.rotation_host.clone() {
                        self.follow_rotation(&host);
                    }
                }
                () = rotation::until(retire_due) => {
                    if let Err(e) = self.retire_key() {
                        tracing::error!("cannot retire the old key: {}", Chain(&e));
                    }
                }
            }
        }
    }

    /// Applies the netmap of `offer`, or refuses (and counts) it, and tells the link which.
    async fn offered(&mut self, Offer { netmap, verdict }: Offer) {
        let revision = netmap.revision;
        let host = netmap.host.clone();
        let applied = match self.apply_netmap(netmap).await {
            Ok(summary) => {
                tracing::info!(revision, "{summary}");
                self.follow_rotation(&host);
                true
            }
            Err(e) => {
                let refused = self.netmaps_refused.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::error!(
                    revision,
                    refused,
                    "cannot apply the netmap; keeping the running peers: {}",
                    Chain(&e)
                );
                false
            }
        };
        let _ = verdict.send(applied);
    }

    async fn handle(&mut self, request: Request) -> Response {
        match request {
            Request::Status {} => {
                Response::ok(serde_json::to_value(self.status()).expect("status serializes"))
            }
            Request::Attach { netns, ip, labels } => match self.attach(&netns, ip, labels).await {
                Ok(w) => Response::ok(serde_json::json!({
                    "netns": w.netns,
                    "ip": w.ip.to_string(),
                    "host_ifname": w.host_ifname,
                    "labels": w.labels,
                })),
                Err(e) => Response::err(Chain(&e)),
            },
            Request::RotateKey { grace_secs } => {
                match self.rotate_key(std::time::Duration::from_secs(grace_secs)) {
                    Ok(reply) => {
                        Response::ok(serde_json::to_value(reply).expect("reply serializes"))
                    }
                    Err(e) => Response::err(Chain(&e)),
                }
            }
            Request::Detach { netns } => match self.detach(&netns).await {
                Ok(w) => {
                    Response::ok(serde_json::json!({ "netns": w.netns, "ip": w.ip.to_string() }))
                }
                Err(e) => Response::err(Chain(&e)),
            },
        }
    }
}
