//! One file per subcommand; this one holds the argument model and the dispatcher.

mod admin;
mod check;
mod completions;
mod drill;
mod history;
mod install;
mod keygen;
mod lab;
mod mail;
mod mysql;
mod release;
mod replica;
mod sip;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// pbxha: two-node high availability for Asterisk and FreeSWITCH.
///
/// One daemon replaces heartbeat/Corosync + Pacemaker + keepalived + cron scripts:
/// authenticated heartbeats over redundant links, a resource group (VIP, PBX, ...) started
/// in order on the primary, SIP-aware health, and a journal of every failover.
#[derive(Parser)]
#[command(name = "pbxha", version, propagate_version = true, max_term_width = 100)]
struct Cli {
    /// The config file.
    #[arg(long, short = 'c', global = true, default_value = pbxha_appliance::config::DEFAULT_PATH, env = "PBXHA_CONFIG")]
    config: PathBuf,
    /// Log filter (tracing syntax), e.g. `info`, `debug`, `pbxha_appliance::membership=debug`.
    #[arg(long, global = true, default_value = "info", env = "PBXHA_LOG")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon in the foreground (systemd: Type=notify).
    ///
    /// SIGTERM hands the group to a live peer before stopping; SIGHUP reloads the config,
    /// applying what changed and keeping the running config if the new one is invalid.
    Run {
        /// This node's name; default: the node whose name matches `uname -n`.
        #[arg(long)]
        node: Option<String>,
    },
    /// Show nodes, links, resources, faults and the last failover.
    Status {
        /// Machine-readable output.
        #[arg(long, conflicts_with = "watch")]
        json: bool,
        /// Redraw the status in place every `--interval` seconds, like crm_mon; Ctrl-C stops.
        #[arg(long)]
        watch: bool,
        /// Seconds between redraws with `--watch`.
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=3600))]
        interval: u64,
    },
    /// Take this node out of service; the group moves to the peer if this node holds it.
    Standby,
    /// Put this node back in service: leaves standby and forgets recorded failures (resource
    /// failures still within their failure timeout, and a DRBD split brain you have resolved),
    /// like `crm resource cleanup`.
    Online,
    /// Planned move of the group to the peer, draining calls first.
    ///
    /// Run it on the node that holds the group. It waits until the peer holds it,
    /// printing progress; Ctrl-C stops waiting, not the move.
    Switchover {
        /// Skip the call drain and move at once.
        #[arg(long)]
        now: bool,
    },
    /// A failover rehearsal: health rows, then a real switchover to the peer and back with
    /// the outage a caller sees each way; journaled, mailed with `[mail]`; exit 1 if a row fails.
    Drill {
        /// Skip the call drain of each move.
        #[arg(long)]
        now: bool,
        /// Move the group to the peer once and leave it there.
        #[arg(long, conflicts_with = "dry_run")]
        one_way: bool,
        /// The health rows only; nothing moves.
        #[arg(long)]
        dry_run: bool,
        /// One JSON object: `passed`, `rows` (`name`, `passed`, `detail`, `took_ms`), `moves`
        /// (`from`, `to`, `outage_ms`, ...).
        #[arg(long)]
        json: bool,
        /// Run only if this node holds the group (a scheduled drill, on both nodes).
        #[arg(long, hide = true)]
        if_holder: bool,
    },
    /// Check the config and print every problem with its key path; exit 1 if any.
    CheckConfig {
        /// Check as this node (default: the node matching `uname -n`).
        #[arg(long)]
        node: Option<String>,
    },
    /// Print the last failovers, each as a timeline.
    History {
        /// How many failovers.
        #[arg(long, default_value_t = 5)]
        last: usize,
        /// The journal database (default: `paths.state-db` from the config).
        #[arg(long)]
        db: Option<PathBuf>,
        /// Machine-readable output: the failovers with their journal entries.
        #[arg(long)]
        json: bool,
    },
    /// Mail alerts: send a test mail, or list the outbox.
    Mail {
        #[command(subcommand)]
        command: mail::MailCommand,
        /// The state database (default: `paths.state-db` from the config).
        #[arg(long, global = true)]
        db: Option<PathBuf>,
    },
    /// Show the last results of every check.
    Checks {
        /// How many results per check.
        #[arg(long, default_value_t = 5)]
        last: usize,
        /// The state database (default: `paths.state-db` from the config).
        #[arg(long)]
        db: Option<PathBuf>,
    },
    /// Write a new random shared key for the heartbeat (mode 0600).
    Keygen {
        /// Where to write it (default: `cluster.auth-key-file` or /etc/pbxha/authkey).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Replicated storage: move directories onto the DRBD filesystem and back.
    Replica {
        #[command(subcommand)]
        command: replica::ReplicaCommand,
    },
    /// MySQL/MariaDB master-master replication: setup and health.
    Mysql {
        #[command(subcommand)]
        command: mysql::MysqlCommand,
    },
    /// Set this node up: preflight, a plan of every change, then a journaled apply that
    /// resumes after an interruption (`--undo` reverses it).
    Install(install::InstallArgs),
    /// A real two-node cluster in network namespaces on this machine (`pbxha lab up`).
    Lab(lab::LabArgs),
    /// Send one SIP OPTIONS and print who answered, how and how fast (like sipsak -s).
    SipProbe(sip::SipProbeArgs),
    /// After the daemon died (systemd's ExecStopPost): remove this node's VIPs unless
    /// something it ran still serves (a SIP probe answers, a unit or command still runs).
    /// Refuses while the daemon runs.
    Release,
    /// The daemon's sentinel: stdin is a pipe from the daemon; on its death, `release`.
    #[command(hide = true)]
    Sentinel,
    /// Print a shell completion script (bash, zsh, fish...) to stdout.
    Completions { shell: clap_complete::Shell },
    /// Print the pbxha(8) manual page (roff) to stdout; the package builds it with this.
    #[command(hide = true)]
    Manpage,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.log, matches!(cli.command, Command::Run { .. } | Command::Sentinel));
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pbxha: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Run { node } => {
                pbxha_appliance::daemon::run(pbxha_appliance::daemon::Options { config: cli.config, node })
                    .await
                    .map(|()| ExitCode::SUCCESS)
                    .map_err(anyhow::Error::from)
            }
            Command::Status { json, watch: false, .. } => admin::status(&cli.config, json).await,
            Command::Status { watch: true, interval, .. } => {
                admin::watch(&cli.config, std::time::Duration::from_secs(interval)).await
            }
            Command::Standby => admin::simple(&cli.config, pbxha_appliance::control::Request::Standby).await,
            Command::Online => admin::simple(&cli.config, pbxha_appliance::control::Request::Online).await,
            Command::Switchover { now } => admin::switchover(&cli.config, now).await,
            Command::Drill { now, one_way, dry_run, json, if_holder } => {
                let options = pbxha_appliance::drill::DrillOptions { now, one_way, dry_run };
                drill::run(&cli.config, options, json, if_holder).await
            }
            Command::CheckConfig { node } => Ok(check::run(&cli.config, node.as_deref())),
            Command::History { last, db, json } => history::run(&cli.config, db, last, json),
            Command::Keygen { out } => keygen::run(&cli.config, out),
            Command::Mail { command, db } => mail::run(&cli.config, db, command).await,
            Command::Checks { last, db } => mail::checks(&cli.config, db, last),
            Command::Replica { command } => replica::run(&cli.config, command).await,
            Command::Mysql { command } => mysql::run(&cli.config, command).await,
            Command::Install(args) => install::run(args).await,
            Command::Lab(args) => lab::run(args).await,
            Command::SipProbe(args) => sip::run(args).await,
            Command::Release => release::release(&cli.config).await,
            Command::Sentinel => release::sentinel(&cli.config).await,
            Command::Completions { shell } => completions::completions(shell),
            Command::Manpage => completions::manpage(),
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("pbxha: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(filter: &str, daemon: bool) {
    let filter =
        tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Under systemd, journald stamps every line itself.
    let under_journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(ansi);
    if under_journald {
        builder.without_time().init();
    } else if daemon {
        builder.init();
    } else {
        builder.without_time().init();
    }
}
