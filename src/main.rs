//! `wgmesh`: the one binary. Parses the command line and calls into the library crates.

use std::io::Read;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use wgmesh_config::PrivateKey;
use wgmesh_overlay::api::{self, Request};
use wgmesh_overlay::status::Status;

const DEFAULT_SOCKET: &str = "/run/wgmesh/agent.sock";

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
    /// Print a new private key (base64, as `wg genkey`).
    Genkey,
    /// Read a private key on stdin and print its public key (as `wg pubkey`).
    Pubkey,
    /// Put a network namespace on the overlay through the local agent.
    Attach {
        /// The network namespace (as `ip netns` names it).
        #[arg(long)]
        netns: String,
        /// The address to give it (default: the next free one of the host's subnet).
        #[arg(long)]
        ip: Option<IpAddr>,
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
}

#[derive(clap::Args)]
struct SocketArg {
    /// The agent's local API socket.
    #[arg(long = "socket", env = "WGMESH_SOCKET", default_value = DEFAULT_SOCKET)]
    path: PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Cmd::Agent { .. }) {
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
            init_tracing();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            runtime.block_on(wgmesh_overlay::agent::run(&config))?;
        }
        Cmd::Genkey => println!("{}", PrivateKey::generate().to_base64()),
        Cmd::Pubkey => {
            let mut input = String::new();
            std::io::stdin()
                .read_to_string(&mut input)
                .context("reading the private key from stdin")?;
            let key: PrivateKey = input.trim().parse().context("stdin")?;
            println!("{}", key.public_key());
        }
        Cmd::Attach { netns, ip, socket } => {
            let result = api::call(&socket.path, &Request::Attach { netns, ip })?;
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
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                print!("{}", status.render(now));
            }
        }
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
        .with_writer(std::io::stderr)
        .init();
}
