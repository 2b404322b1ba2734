//! `wgmesh control`: start the control plane from `control.toml` and serve until SIGTERM or
//! SIGINT.
//!
//! Start-up is ordered so that a bad configuration creates nothing: the file is validated
//! first, then the state directory (0700), the PKI, the store (initialised with the cluster
//! network on first start, and checked against it afterwards), `admin.toml` (0600), the audit
//! log, and finally the listening socket. Every file in the state directory is created 0600;
//! files left wider by older versions (or by hand) are narrowed at start, with a warning.

use std::fs::File;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use wgmesh_config::control::{AdminFile, CertificatePem, ControlConfig};
use wgmesh_config::token::AdminToken;
use wgmesh_config::ConfigError;

use crate::audit::{AuditError, AuditLog};
use crate::http::{self, ServeLimits, Shared};
use crate::pki::{Pki, PkiError};
use crate::psk::PskSecret;
use crate::registry::{Registry, RotationSettings};
use crate::service::Control;
use crate::store::{FileStore, Store, StoreError};
use wgmesh_client::atomic_file::{self, WriteError};
use wgmesh_client::dirlock::{DirLock, LockError};
use wgmesh_client::private_dir;

/// Why the control plane could not start or keep running.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// `control.toml` is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The state directory could not be created.
    #[error("{}: cannot create the state directory", path.display())]
    StateDir {
        /// The directory.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The CA or server certificate could not be loaded or created.
    #[error(transparent)]
    Pki(#[from] PkiError),
    /// The store could not be opened or initialised.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Another control plane runs on this state directory.
    #[error(
        "{}: another `wgmesh control` uses this state directory (two would corrupt its store); \
         stop it first, or give this one another state_dir",
        path.display()
    )]
    StateDirInUse {
        /// The lock file.
        path: PathBuf,
    },
    /// The store was made for another cluster network.
    #[error(
        "{}: the store holds cluster_cidr {stored_cidr} with host_prefix {stored_prefix}, but \
         {config} says {cidr} and {prefix}; host subnets cannot be moved: put the stored values \
         back, or use a new state_dir for a new cluster",
        store.display(), config = config.display()
    )]
    NetworkChanged {
        /// The store file.
        store: PathBuf,
        /// control.toml.
        config: PathBuf,
        /// The stored cluster CIDR.
        stored_cidr: ipnet::IpNet,
        /// The stored host prefix.
        stored_prefix: u8,
        /// The configured cluster CIDR.
        cidr: ipnet::IpNet,
        /// The configured host prefix.
        prefix: u8,
    },
    /// `admin.toml` could not be read or written.
    #[error("cannot write admin.toml")]
    AdminWrite(#[from] WriteError),
    /// An existing `admin.toml` is invalid.
    #[error("{0} (delete the file to have a new admin token issued)")]
    AdminRead(ConfigError),
    /// The audit log could not be opened.
    #[error(transparent)]
    Audit(#[from] AuditError),
    /// The API address could not be bound.
    #[error("cannot listen on {addr}{hint}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: io::Error,
        /// What to do about it.
        hint: &'static str,
    },
    /// Signal handlers could not be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(io::Error),
    /// The preshared-key secret (`preshared_keys = true`) could not be read or made.
    #[error("{}: cannot read or create the preshared-key secret", path.display())]
    PskSecret {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

/// Runs the control plane configured by the file at `config_path` until SIGTERM or SIGINT.
pub async fn run(config_path: &Path) -> Result<(), ServerError> {
    let config = ControlConfig::load(config_path)?;
    raise_open_file_limit();
    let dir = &config.state_dir;
    create_private_dir(dir)?;
    File::open(dir)
        .and_then(|f| private_dir::narrow(&f, dir, 0o700))
        .map_err(|source| ServerError::StateDir {
            path: dir.clone(),
            source,
        })?;
    // Held until the control plane exits (the kernel drops it then, even after kill -9).
    let _lock = lock_state_dir(dir)?;
    let pki = Pki::load_or_create(dir, &config.advertise)?;
    let (store, registry) = open_store(&config, config_path)?;
    let admin = ensure_admin_file(&config, &pki)?;
    if let Some(parent) = config.audit_log.parent() {
        if !parent.as_os_str().is_empty() {
            create_private_dir(parent)?;
        }
    }
    let audit =
        AuditLog::open_rotating(&config.audit_log, config.audit_max_bytes, config.audit_keep)?;
    // Every state file, admin.toml included, is made private before the first request.
    private_dir::narrow_files(dir);
    let listener = listen(config.listen).await?;
    let shutdown = shutdown_signal()?;
    let hosts = registry.hosts().len();
    let revision = registry.revision();
    let control = Control::new(
        registry,
        Box::new(store),
        audit,
        admin.token.hash(),
        pki.ca_der().to_vec(),
    )
    .with_rotation(RotationSettings {
        interval: config.key_rotation_interval,
        grace: config.key_rotation_grace,
    });
    let control = if config.preshared_keys {
        let secret = PskSecret::load_or_create(&config.state_dir).map_err(|source| {
            ServerError::PskSecret {
                path: config.state_dir.join(crate::psk::SECRET_FILE),
                source,
            }
        })?;
        control.with_preshared_keys(secret)
    } else {
        control
    };
    tracing::info!(
        listen = %config.listen,
        url = %admin.url,
        ca_digest = %pki.ca_digest(),
        admin_file = %config.admin_file_path().display(),
        hosts,
        revision,
        "control plane listening"
    );
    let limits = ServeLimits {
        max_connections: config.max_connections as usize,
        max_connections_per_address: config.max_connections_per_address,
        handshake_timeout: Duration::from_secs(config.handshake_timeout_secs.into()),
        ..ServeLimits::default()
    };
    let shared = Shared::with_limits(control, limits);
    // Rotations are stepped while the API serves: their deadlines are in the store, so
    // stopping and starting again neither skips nor repeats a step.
    let rotations = tokio::spawn(http::schedule_rotations(
        Arc::clone(&shared),
        http::ROTATION_TICK,
    ));
    http::serve(listener, pki.server_config(), shared, shutdown).await;
    rotations.abort();
    Ok(())
}

/// Opens the store in `state_dir` and replays it: on first start it is initialised with the
/// configured cluster network; afterwards that network must be the stored one.
fn open_store(
    config: &ControlConfig,
    config_path: &Path,
) -> Result<(FileStore, Registry), ServerError> {
    let mut store = FileStore::open(&config.state_dir)?;
    let mut registry = store.load()?;
    match registry.ipam() {
        None => {
            let m = registry
                .plan_initialize(config.cluster_cidr, config.host_prefix)
                .map_err(StoreError::Rejected)?;
            store.commit(&m)?;
            registry.apply(&m).map_err(StoreError::Rejected)?;
        }
        Some(ipam)
            if ipam.cidr() != config.cluster_cidr || ipam.host_prefix() != config.host_prefix =>
        {
            return Err(ServerError::NetworkChanged {
                store: store.path().to_owned(),
                config: config_path.to_owned(),
                stored_cidr: ipam.cidr(),
                stored_prefix: ipam.host_prefix(),
                cidr: config.cluster_cidr,
                prefix: config.host_prefix,
            });
        }
        Some(_) => {}
    }
    Ok((store, registry))
}

/// Binds the API's address.
async fn listen(addr: SocketAddr) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Listen {
            addr,
            hint: if source.kind() == io::ErrorKind::AddrInUse {
                " (another program uses this port; pick another `listen`)"
            } else {
                ""
            },
            source,
        })
}

/// Installs the SIGTERM and SIGINT handlers; the future completes at the first of them.
fn shutdown_signal() -> Result<impl Future<Output = ()>, ServerError> {
    let mut term = signal(SignalKind::terminate()).map_err(ServerError::Signals)?;
    let mut int = signal(SignalKind::interrupt()).map_err(ServerError::Signals)?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        }
    })
}

/// Loads `admin.toml`, or creates it with a new admin token. The URL and CA certificate are
/// rewritten when `advertise`, `listen` or the CA changed; the token is kept.
fn ensure_admin_file(config: &ControlConfig, pki: &Pki) -> Result<AdminFile, ServerError> {
    let path = config.admin_file_path();
    let url = config.admin_url();
    let ca_cert = CertificatePem::from_der(pki.ca_der().to_vec());
    let existing = match path.try_exists() {
        Ok(true) => Some(AdminFile::load(&path).map_err(ServerError::AdminRead)?),
        Ok(false) => None,
        Err(source) => return Err(WriteError { path, source }.into()),
    };
    let admin = match existing {
        Some(a) if a.url == url && a.ca_cert == ca_cert => return Ok(a),
        Some(a) => AdminFile {
            url,
            ca_cert,
            token: a.token,
        },
        None => AdminFile {
            url,
            ca_cert,
            token: AdminToken::generate(),
        },
    };
    atomic_file::write(&path, admin.to_toml().as_bytes(), 0o600)?;
    tracing::info!(path = %path.display(), "wrote admin.toml (the admin CLI's URL, CA and token)");
    Ok(admin)
}

/// Raises the soft limit on open files to the hard limit: every agent holds a connection for
/// its long poll, and the usual soft limit (1024) would refuse hosts beyond about a thousand.
fn raise_open_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed to them.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 || limit.rlim_cur >= limit.rlim_max
        {
            return;
        }
        let before = limit.rlim_cur;
        limit.rlim_cur = limit.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
            tracing::debug!(before, after = limit.rlim_cur, "raised the open-file limit");
        }
    }
}

/// Takes the lock on `dir`, or says that another control plane holds it.
fn lock_state_dir(dir: &Path) -> Result<DirLock, ServerError> {
    DirLock::take(dir).map_err(|e| match e {
        LockError::Held { path } => ServerError::StateDirInUse { path },
        LockError::Io { path, source } => ServerError::StateDir { path, source },
    })
}

/// Creates `dir` and its parents, mode 0700 (existing directories are left as they are).
fn create_private_dir(dir: &Path) -> Result<(), ServerError> {
    private_dir::create(dir).map_err(|source| ServerError::StateDir {
        path: dir.to_owned(),
        source,
    })
}
