//! `wgmesh`: the one binary. Parses the command line and calls into the library crates.

use std::io::Read;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use wgmesh_config::{PrivateKey, DEFAULT_SOCKET};
use wgmesh_control::clock::unix_now;
use wgmesh_overlay::api::status::Status;
use wgmesh_overlay::api::{self, Request};

mod policy;

/// Encrypted overlay network for containers on many hosts, over userspace WireGuard.
#[derive(Parser)]
#[command(name = "wgmesh", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a host agent.
    Agent {
        /// The agent's config file (TOML).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Run the control plane.
    Control {
        /// The control plane's config file (TOML).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Join tokens (needs admin.toml).
    Token {
        #[command(subcommand)]
        command: TokenCmd,
    },
    /// Hosts joined to the control plane (needs admin.toml).
    Node {
        #[command(subcommand)]
        command: NodeCmd,
    },
    /// The network policy: who may talk to whom, by labels, protocols and ports.
    Policy {
        #[command(subcommand)]
        command: policy::PolicyCmd,
    },
    /// Host keys: rotate them.
    Key {
        #[command(subcommand)]
        command: KeyCmd,
    },
    /// Print a new private key (base64, as `wg genkey`).
    Genkey,
    /// Read a private key on stdin and print its public key (as `wg pubkey`).
    Pubkey,
    /// Put a network namespace on the overlay through the local agent, or give an attached one
    /// new labels (it keeps its address).
    Attach {
        /// The network namespace (as `ip netns` names it).
        #[arg(long)]
        netns: String,
        /// The address to give it (default: the next free one of the host's subnet). An
        /// attached namespace keeps its address: another one is refused (detach first).
        #[arg(long)]
        ip: Option<IpAddr>,
        /// A label (key=value) for the policy; repeatable. These are all its labels: attaching
        /// an attached namespace again replaces them. `host` is reserved.
        #[arg(long = "label", value_name = "KEY=VALUE")]
        labels: Vec<String>,
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Take a network namespace off the overlay and free its address.
    Detach {
        /// The network namespace.
        #[arg(long)]
        netns: String,
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Show the local agent's interface, peers and workloads.
    Status {
        /// Print the stable JSON form.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        socket: SocketArg,
    },
    /// Check what the local agent needs; exits 1 and prints one line per problem found.
    Doctor {
        #[command(subcommand)]
        what: DoctorCmd,
    },
}

#[derive(Subcommand)]
enum KeyCmd {
    /// Give a host a new key without losing a packet: the host generates it (the private key
    /// never leaves it) and accepts its old key too until its peers have moved.
    Rotate {
        #[command(flatten)]
        target: RotateTarget,
        /// Static mode (with --socket): how long the old key is still accepted, while the
        /// peers' config files are updated and reloaded. A number with s, m, h or d.
        #[arg(long, default_value = "1h")]
        grace: String,
        #[command(flatten)]
        admin: AdminArg,
    },
}

#[derive(clap::Args)]
#[group(required = true, multiple = false)]
struct RotateTarget {
    /// Rotate this host's key (admin, through the control plane).
    #[arg(long, value_name = "NAME")]
    node: Option<String>,
    /// Rotate every host's key, one host at a time (admin, through the control plane).
    #[arg(long)]
    all: bool,
    /// Static mode: rotate the key of the agent listening on this local API socket, and print
    /// its new public key.
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
}

#[derive(Subcommand)]
enum DoctorCmd {
    /// The Docker plugin: dockerd reachable, the plugin socket present, the networks of
    /// `[docker] networks` there with the wgmesh driver.
    Docker {
        #[command(flatten)]
        socket: SocketArg,
    },
}

#[derive(Subcommand)]
enum TokenCmd {
    /// Create a join token and print it.
    Create {
        /// How long it is valid: a number with s, m, h or d.
        #[arg(long, default_value = "1h")]
        ttl: String,
        /// Let more than one host join with it.
        #[arg(long)]
        reusable: bool,
        /// A label (key=value) given to every host that joins with it; repeatable.
        #[arg(long = "label", value_name = "KEY=VALUE")]
        labels: Vec<String>,
        #[command(flatten)]
        admin: AdminArg,
    },
    /// List the join tokens (never their secrets) and whether they can still be used.
    List {
        /// Print JSON (the API's form).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        admin: AdminArg,
    },
    /// Revoke a join token: no host can join with it any more (hosts that joined stay).
    Revoke {
        /// The token's id, as `token list` shows it.
        id: u64,
        #[command(flatten)]
        admin: AdminArg,
    },
}

#[derive(Subcommand)]
enum NodeCmd {
    /// List the joined hosts.
    List {
        /// Print JSON (the API's form).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        admin: AdminArg,
    },
    /// Remove a host: revoke its credential and drop it from every other host's peers.
    Remove {
        /// The host's name.
        name: String,
        #[command(flatten)]
        admin: AdminArg,
    },
}

#[derive(clap::Args)]
struct AdminArg {
    /// The admin file the control plane wrote (its URL, CA certificate and admin token).
    #[arg(long = "admin", env = "WGMESH_ADMIN", default_value = wgmesh_config::control::DEFAULT_ADMIN_FILE)]
    path: PathBuf,
}

#[derive(clap::Args)]
struct SocketArg {
    /// The agent's local API socket.
    #[arg(long = "socket", env = "WGMESH_SOCKET", default_value = DEFAULT_SOCKET)]
    path: PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Cmd::Agent { .. } | Cmd::Control { .. }) {
        // A command-line tool piped into `head` should end quietly, not panic on EPIPE.
        // SAFETY: restoring the default disposition of SIGPIPE before any thread exists.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wgmesh: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Cmd) -> anyhow::Result<()> {
    match command {
        Cmd::Agent { config } => {
            forbid_dumps()?;
            init_tracing();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            runtime.block_on(wgmesh_overlay::agent::run(&config))?;
        }
        Cmd::Control { config } => {
            forbid_dumps()?;
            init_tracing();
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            runtime.block_on(wgmesh_control::server::run(&config))?;
        }
        Cmd::Token { command } => admin::token(command)?,
        Cmd::Node { command } => admin::node(command)?,
        Cmd::Policy { command } => policy::run(command)?,
        Cmd::Key {
            command:
                KeyCmd::Rotate {
                    target,
                    grace,
                    admin,
                },
        } => match target.socket {
            Some(socket) => {
                let grace_secs = wgmesh_config::duration::parse_duration(&grace)
                    .map_err(|e| anyhow::anyhow!("--grace: {e}"))?;
                anyhow::ensure!(
                    grace_secs <= 365 * 24 * 3600,
                    "--grace: {grace} is longer than a year"
                );
                let result = api::call(&socket, &Request::RotateKey { grace_secs })?;
                let reply: api::RotateKeyReply =
                    serde_json::from_value(result).context("reading the agent's answer")?;
                println!("{}", reply.public_key);
                eprintln!(
                    "the old key {} is accepted for {grace} more: put the new key into the peers' \
                     configs and reload them (SIGHUP)",
                    reply.retiring_public_key
                );
            }
            None => admin::rotate(target.node, target.all, &admin)?,
        },
        Cmd::Genkey => println!("{}", PrivateKey::generate().to_base64()),
        Cmd::Pubkey => {
            let mut input = String::new();
            std::io::stdin()
                .read_to_string(&mut input)
                .context("reading the private key from stdin")?;
            let key: PrivateKey = input.trim().parse().context("stdin")?;
            println!("{}", key.public_key());
        }
        Cmd::Attach {
            netns,
            ip,
            labels,
            socket,
        } => {
            let labels = workload_labels(&labels).context("--label")?;
            let request = Request::Attach { netns, ip, labels };
            let result = api::call(&socket.path, &request)?;
            println!("{}", result["ip"].as_str().unwrap_or_default());
        }
        Cmd::Detach { netns, socket } => {
            api::call(&socket.path, &Request::Detach { netns })?;
        }
        Cmd::Status { json, socket } => {
            let result = api::call(&socket.path, &Request::Status {})?;
            if json {
                println!("{}", serde_json::to_string_pretty(&result)?);
            } else {
                let status: Status =
                    serde_json::from_value(result).context("reading the agent's status")?;
                print!("{}", status.render(unix_now()));
            }
        }
        Cmd::Doctor {
            what: DoctorCmd::Docker { socket },
        } => {
            let result = api::call(&socket.path, &Request::Status {})?;
            let status: Status =
                serde_json::from_value(result).context("reading the agent's status")?;
            let Some(docker) = status.docker else {
                anyhow::bail!(
                    "the agent has no [docker] table in its agent.toml: the Docker plugin is off"
                );
            };
            if docker.problems.is_empty() {
                println!(
                    "docker: ok (plugin {}, dockerd {}, {} network(s) ready, {} container(s))",
                    docker.plugin_socket,
                    docker.engine.socket,
                    docker.networks.len(),
                    status.containers.len()
                );
            } else {
                for p in &docker.problems {
                    println!("problem: {p}");
                }
                std::process::exit(1);
            }
        }
    }
    Ok(())
}

/// The admin commands: one call each on the control plane.
mod admin {
    use anyhow::Context;
    use wgmesh_client::api::TokenBody;
    use wgmesh_client::client::Client;
    use wgmesh_config::control::AdminFile;
    use wgmesh_config::labels;
    use wgmesh_control::admin::{parse_ttl, render_nodes, render_tokens};
    use wgmesh_control::clock::unix_now;

    use super::{AdminArg, NodeCmd, TokenCmd};

    /// `key rotate --node NAME` or `--all`: the control plane queues the rotations and runs
    /// them one host at a time; prints the hosts queued.
    pub(super) fn rotate(node: Option<String>, all: bool, admin: &AdminArg) -> anyhow::Result<()> {
        let (client, file, runtime) = connect(admin)?;
        let reply = match node {
            Some(name) => runtime.block_on(client.rotate_node(&file.token, &name))?,
            None if all => runtime.block_on(client.rotate_all(&file.token))?,
            None => anyhow::bail!("key rotate: give --node NAME, --all or --socket PATH"),
        };
        for name in &reply.queued {
            println!("{name}");
        }
        if !reply.rotating.is_empty() {
            eprintln!(
                "already queued or rotating, not queued again: {}",
                reply.rotating.join(", ")
            );
        }
        eprintln!(
            "queued {} host(s); they rotate one at a time (see `wgmesh node list`)",
            reply.queued.len()
        );
        Ok(())
    }

    pub(super) fn connect(
        arg: &AdminArg,
    ) -> anyhow::Result<(Client, AdminFile, tokio::runtime::Runtime)> {
        let file = AdminFile::load(&arg.path)?;
        let client = Client::with_ca(&file.url, file.ca_cert.der())?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")?;
        Ok((client, file, runtime))
    }

    pub(super) fn token(command: TokenCmd) -> anyhow::Result<()> {
        let (ttl, reusable, assignments, admin) = match command {
            TokenCmd::Create {
                ttl,
                reusable,
                labels,
                admin,
            } => (ttl, reusable, labels, admin),
            TokenCmd::List { json, admin } => {
                let (client, file, runtime) = connect(&admin)?;
                let tokens = runtime.block_on(client.list_tokens(&file.token))?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&tokens)?);
                } else {
                    print!("{}", render_tokens(&tokens, unix_now()));
                }
                return Ok(());
            }
            TokenCmd::Revoke { id, admin } => {
                let (client, file, runtime) = connect(&admin)?;
                let reply = runtime.block_on(client.revoke_token(&file.token, id))?;
                eprintln!("revoked join token {}", reply.revoked);
                return Ok(());
            }
        };
        let ttl_secs = parse_ttl(&ttl).map_err(|e| anyhow::anyhow!("--ttl: {e}"))?;
        let mut labels = labels::Labels::new();
        for a in &assignments {
            let (k, v) = labels::parse_assignment(a).context("--label")?;
            labels.insert(k, v);
        }
        labels::check_labels(&labels).context("--label")?;
        let (client, file, runtime) = connect(&admin)?;
        let body = TokenBody {
            ttl_secs: Some(ttl_secs),
            reusable,
            labels,
        };
        let reply = runtime.block_on(client.create_token(&file.token, &body))?;
        println!("{}", reply.token);
        Ok(())
    }

    pub(super) fn node(command: NodeCmd) -> anyhow::Result<()> {
        match command {
            NodeCmd::List { json, admin } => {
                let (client, file, runtime) = connect(&admin)?;
                let nodes = runtime.block_on(client.list_nodes(&file.token))?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&nodes)?);
                } else {
                    print!("{}", render_nodes(&nodes, unix_now()));
                }
            }
            NodeCmd::Remove { name, admin } => {
                let (client, file, runtime) = connect(&admin)?;
                let reply = runtime.block_on(client.remove_node(&file.token, &name))?;
                eprintln!("removed {}", reply.removed);
            }
        }
        Ok(())
    }
}

/// The labels of `attach --label k=v ...`, checked as the agent checks them (a repeated key
/// keeps its last value).
fn workload_labels(assignments: &[String]) -> anyhow::Result<wgmesh_config::labels::Labels> {
    use wgmesh_config::labels;
    let mut out = labels::Labels::new();
    for a in assignments {
        let (k, v) = labels::parse_assignment(a)?;
        out.insert(k, v);
    }
    // An attached namespace is never a container: `container` is refused too.
    labels::check_reported_labels("", &out)?;
    Ok(out)
}

/// Makes this process non-dumpable before it reads any key or token: no core dump (which
/// would write its private key, preshared keys, tokens and credentials to disk), and no reading
/// of its memory through /proc or ptrace by other processes of the same user. Inherited by the
/// process's threads; `execve` of a setuid program aside, it stays for the process's life.
fn forbid_dumps() -> anyhow::Result<()> {
    // SAFETY: PR_SET_DUMPABLE takes an integer argument and no pointer.
    let rc = unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context(
            "prctl(PR_SET_DUMPABLE, 0): cannot forbid core dumps of a process holding keys",
        );
    }
    Ok(())
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        // boringtun warns at every handshake retry of an unreachable peer; our own events say
        // what matters (`RUST_LOG=boringtun=debug` brings them back).
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,boringtun=error"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
}
