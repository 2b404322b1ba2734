//! `wgmesh policy ...`: the network policy commands. Thin: parsing the file, running its tests
//! and the report are `wgmesh_config::policy`'s; the calls are the client's; how their answers
//! read is `wgmesh_control::admin`'s.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;
use wgmesh_client::api::{ExplainQuery, PolicyBody};
use wgmesh_config::policy::{render_test_report, Flow, Origin, Policy};
use wgmesh_control::admin::{render_applied, render_explain, render_policy};
use wgmesh_control::compile::EndpointRef;

use super::admin::connect;
use super::AdminArg;

/// The policy commands.
#[derive(Subcommand)]
pub(crate) enum PolicyCmd {
    /// Check a policy file offline: validate it, run its [[test]]s and print each result.
    /// Exits non-zero if the file is invalid or a test fails.
    Test {
        /// The policy file (TOML).
        file: PathBuf,
    },
    /// Validate a policy file and run its [[test]]s here (printing each result), then store it
    /// on the control plane, which checks and tests it again and replaces the policy in force.
    /// A bad file or a failing test changes nothing.
    Apply {
        /// The policy file (TOML).
        file: PathBuf,
        #[command(flatten)]
        admin: AdminArg,
    },
    /// Show the policy in force: where it came from, its revision and its text.
    Show {
        /// Print the stable JSON form (`{"policy": null}` when none is applied).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        admin: AdminArg,
    },
    /// Say whether the policy in force allows one flow, and which rule (or the default)
    /// decided.
    Explain {
        /// Who starts the flow: HOST/NETNS (a workload), HOST (the host's own traffic) or a
        /// selector, k=v,k=v or {k=v,k=v} (an endpoint with exactly these labels; {} for none).
        #[arg(long, value_name = "SEL")]
        from: String,
        /// Who it goes to, in the same forms.
        #[arg(long, value_name = "SEL")]
        to: String,
        /// The flow: tcp/PORT, udp/PORT or icmp.
        #[arg(long, value_name = "PROTO/PORT")]
        port: String,
        /// Print the API's JSON form.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        admin: AdminArg,
    },
    /// Remove the policy in force: everything is allowed again.
    Remove {
        #[command(flatten)]
        admin: AdminArg,
    },
}

pub(crate) fn run(command: PolicyCmd) -> anyhow::Result<()> {
    match command {
        PolicyCmd::Test { file } => test(&file),
        PolicyCmd::Apply { file, admin } => apply(&file, &admin),
        PolicyCmd::Show { json, admin } => show(json, &admin),
        PolicyCmd::Explain {
            from,
            to,
            port,
            json,
            admin,
        } => explain(ExplainQuery { from, to, port }, json, &admin),
        PolicyCmd::Remove { admin } => remove(&admin),
    }
}

fn test(file: &Path) -> anyhow::Result<()> {
    let policy = Policy::load(file)?;
    print!("{}", render_test_report(&policy.run_tests()));
    policy.check_tests(file)?;
    Ok(())
}

fn apply(file: &Path, admin: &AdminArg) -> anyhow::Result<()> {
    let origin: Origin = file
        .to_string_lossy()
        .parse()
        .with_context(|| format!("{}: cannot name the policy by its file", file.display()))?;
    let (policy, text) = Policy::load_with_text(file)?;
    print!("{}", render_test_report(&policy.run_tests()));
    policy.check_tests(file)?;
    let (client, admin_file, runtime) = connect(admin)?;
    let body = PolicyBody {
        text,
        origin: origin.to_string(),
    };
    let reply = runtime.block_on(client.apply_policy(&admin_file.token, &body))?;
    print!("{}", render_applied(origin.as_str(), &reply));
    Ok(())
}

fn show(json: bool, admin: &AdminArg) -> anyhow::Result<()> {
    let (client, file, runtime) = connect(admin)?;
    let reply = runtime.block_on(client.policy(&file.token))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&reply)?);
    } else {
        print!("{}", render_policy(&reply));
    }
    Ok(())
}

fn explain(query: ExplainQuery, json: bool, admin: &AdminArg) -> anyhow::Result<()> {
    // The forms are checked here too, for an error that names the option; whether a host or
    // workload exists only the control plane knows.
    query.from.parse::<EndpointRef>().context("--from")?;
    query.to.parse::<EndpointRef>().context("--to")?;
    query.port.parse::<Flow>().context("--port")?;
    let (client, file, runtime) = connect(admin)?;
    let reply = runtime.block_on(client.explain_policy(&file.token, &query))?;
    if json {
        println!("{}", serde_json::to_string_pretty(&reply)?);
    } else {
        print!("{}", render_explain(&reply));
    }
    Ok(())
}

fn remove(admin: &AdminArg) -> anyhow::Result<()> {
    let (client, file, runtime) = connect(admin)?;
    let reply = runtime.block_on(client.remove_policy(&file.token))?;
    if reply.removed {
        eprintln!(
            "removed the policy at revision {}: everything is allowed",
            reply.revision
        );
    } else {
        eprintln!("no policy was applied: everything is allowed");
    }
    Ok(())
}
