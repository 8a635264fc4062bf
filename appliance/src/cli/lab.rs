//! `pbxha lab`: a real two-node cluster in network namespaces on this machine.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Subcommand};
use nix::sys::signal::Signal;
use pbxha_appliance::control::{self, Request};
use pbxha_appliance::status::DaemonStatus;
use pbxha_lab::bench;
use pbxha_lab::plan::{NodeFiles, VIP};
use pbxha_lab::{Daemons, Lab, LinkView, Member, NodeView, OnIsolation, Partition, Pbx, Profile, UpOptions};
use pbxha_runner::SystemRunner;
use serde::Serialize;

use super::admin;

#[derive(Args)]
pub struct LabArgs {
    /// Namespace name prefix (tests use their own so they never touch a real lab).
    #[arg(long, global = true, hide = true, env = "PBXHA_LAB_PREFIX", default_value = pbxha_lab::plan::DEFAULT_PREFIX)]
    prefix: String,
    /// Where the lab keeps configs, the key, logs and PID files.
    #[arg(long, global = true, hide = true, env = "PBXHA_LAB_DIR", default_value = pbxha_lab::plan::DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    #[command(subcommand)]
    command: LabCommand,
}

#[derive(Subcommand)]
pub enum LabCommand {
    /// Build the lab and start one `pbxha run` per node; ends by saying who holds the VIP.
    ///
    /// Namespaces: a and b (the nodes), client, gw (the ping target), on a public bridge
    /// 198.51.100.0/24 with the VIP 198.51.100.100, plus a heartbeat bridge 203.0.113.0/24
    /// between a and b. The host's own network is not touched.
    Up {
        /// The SIP service on the VIP: pbxha's small builtin responder, or a real kamailio.
        #[arg(long, default_value = "builtin")]
        pbx: Pbx,
        /// Heartbeat timing: default (200 ms / dead after 1000 ms) or fast (50 / 250 ms).
        #[arg(long, default_value = "default")]
        profile: Profile,
        /// `[ping] on-isolation` of both nodes: release or keep.
        #[arg(long, default_value = "release")]
        on_isolation: OnIsolation,
        /// Add a `pbx` member driven through an Asterisk double (scripts standing in for
        /// `asterisk -rx` and `systemctl`), so a planned move has calls to drain; `lab calls`
        /// sets how many.
        #[arg(long)]
        asterisk_double: bool,
        /// Namespaces and links only, no daemon: each node gets a root directory and a
        /// loop-backed disk for `pbxha install --root` (`lab exec a -- pbxha install ...`).
        #[arg(long)]
        bare: bool,
    },
    /// Remove everything the lab made: processes, namespaces, bridges, files.
    Down,
    /// Namespaces, addresses, VIP holder and each node's role.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Run a command inside a lab namespace (a, b, client, gw).
    Exec {
        node: Member,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        command: Vec<String>,
    },
    /// Node death: kill every process in the node's namespace and take its links down.
    Kill { node: Member },
    /// Bring a killed node back: links up, daemon started.
    Revive { node: Member },
    /// Crash a node's daemon alone (SIGKILL): what it started and its addresses stay,
    /// unless they die with it.
    Crash { node: Member },
    /// Freeze a node's daemon (SIGSTOP), as a stalled VM would; `lab thaw` resumes it.
    Freeze { node: Member },
    /// Resume a frozen daemon (SIGCONT).
    Thaw { node: Member },
    /// Crash a node's PBX alone (SIGKILL), for its daemon to notice and restart.
    KillPbx { node: Member },
    /// Set how many active calls a node's Asterisk double reports (`up --asterisk-double`).
    Calls { node: Member, calls: u32 },
    /// Cut a node off: the heartbeat link, the public link, or both; or `one-way`: drop
    /// the heartbeats it receives while it still sends its own.
    Partition { which: Partition, node: Member },
    /// Undo every partition and bring every link up.
    Heal,
    /// Planned move of the group to the other node.
    Switchover {
        /// Skip the call drain.
        #[arg(long)]
        now: bool,
    },
    /// Measure failover as a SIP client sees it: outage of node death and of a planned
    /// switchover (min/median/max over --runs), and false failovers in a soak with 20%
    /// heartbeat loss and both cores busy; or, per fault of issue 10, the group's moves and
    /// the client's longest gap. Brings the lab up (and down again) if it is down.
    Bench {
        #[arg(long, default_value_t = 10)]
        runs: usize,
        /// Heartbeat profile; a lab already up must run the same one.
        #[arg(long, default_value = "default")]
        profile: Profile,
        /// unplanned, planned, soak or all (those three); or one fault of issue 10, measured
        /// as moves of the group and the client's longest gap in SIP answers: gateway-blip,
        /// no-peer-failure, one-way, crash-exec, isolation-release, isolation-keep, freeze.
        #[arg(long, default_value = "all")]
        kind: bench::Kind,
        #[arg(long, default_value_t = 300)]
        soak_secs: u64,
        #[arg(long)]
        json: bool,
    },
    /// The builtin SIP responder the lab runs on the VIP (answers OPTIONS naming its node).
    #[command(hide = true)]
    SipResponder {
        #[arg(long)]
        bind: SocketAddr,
        #[arg(long)]
        node: String,
    },
}

fn lab(args: &LabArgs) -> Lab {
    Lab::new(Arc::new(SystemRunner)).with_prefix(&args.prefix).with_state_dir(&args.state_dir)
}

pub async fn run(args: LabArgs) -> anyhow::Result<ExitCode> {
    let lab = lab(&args);
    match args.command {
        LabCommand::Up { pbx, profile, on_isolation, asterisk_double, bare } => {
            let exe = std::env::current_exe()?;
            let mut opts = UpOptions::new(exe.clone());
            opts.pbx = pbx;
            opts.profile = profile;
            opts.on_isolation = on_isolation;
            opts.asterisk_double = asterisk_double;
            if bare {
                opts.start_daemons = false;
                lab.up(&opts, &|line| println!("lab: {line}")).await?;
                for (node, root, disk) in lab.make_bare().await? {
                    println!("lab: {node}: root {}, disk {disk}", root.display());
                }
                println!(
                    "Try: {} lab exec a -- {} install --root {}",
                    exe.display(),
                    exe.display(),
                    lab.bare_root(Member::A).display()
                );
                return Ok(ExitCode::SUCCESS);
            }
            let status = lab.up(&opts, &|line| println!("lab: {line}")).await?;
            let roles = roles(&lab).await;
            let holder = status.vip_holders.first().map(|m| m.name()).unwrap_or("nobody yet");
            println!();
            println!("VIP {VIP} is on {holder} ({})", describe_roles(&roles));
            let exe = exe.display();
            println!("Try:");
            println!("  {exe} lab exec client -- {exe} sip-probe {VIP}    # which node answers SIP on the VIP");
            println!("  {exe} lab status                 # nodes, roles, VIP holder");
            println!("  {exe} lab kill {holder:<8}           # node death: watch the other node take over");
            println!("  {exe} lab switchover             # planned move");
            println!("  {exe} lab partition hb a         # cut the heartbeat link: no failover (the public link still carries heartbeats)");
            let web = pbxha_lab::plan::http_endpoint(Member::A);
            println!("  {exe} lab exec client -- curl -s http://{web}/metrics    # a's Prometheus metrics; / is its status page");
            println!("  {exe} lab down                   # remove everything");
            Ok(ExitCode::SUCCESS)
        }
        LabCommand::Down => {
            lab.down().await?;
            println!("lab: down; nothing left behind");
            Ok(ExitCode::SUCCESS)
        }
        LabCommand::Status { json } => {
            let status = lab.status().await?;
            let roles = roles(&lab).await;
            if json {
                #[derive(Serialize)]
                struct Out<'a> {
                    #[serde(flatten)]
                    lab: &'a pbxha_lab::LabStatus,
                    roles: &'a BTreeMap<String, String>,
                }
                println!("{}", serde_json::to_string_pretty(&Out { lab: &status, roles: &roles })?);
                return Ok(ExitCode::SUCCESS);
            }
            if !status.is_up() && status.members.iter().all(|m| !m.present) {
                println!("lab: down (no namespaces with prefix {})", status.prefix);
                return Ok(ExitCode::SUCCESS);
            }
            for m in &status.members {
                let addrs: Vec<String> = m
                    .interfaces
                    .iter()
                    .flat_map(|i| i.addresses.iter().map(move |a| format!("{}={a}", i.name)))
                    .collect();
                let role = roles.get(m.member.name()).map(|r| format!("  [{r}]")).unwrap_or_default();
                println!(
                    "{:<7} {:<16} {:<7} {}{role}",
                    m.member.name(),
                    m.namespace,
                    if m.present { "present" } else { "MISSING" },
                    addrs.join(" ")
                );
            }
            let holders: Vec<&str> = status.vip_holders.iter().map(|m| m.name()).collect();
            println!("VIP {VIP} on: {}", if holders.is_empty() { "nobody".into() } else { holders.join(" and ") });
            Ok(ExitCode::SUCCESS)
        }
        LabCommand::Exec { node, command } => {
            let code = lab.exec(node, &command).await?;
            Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
        }
        LabCommand::Kill { node } => {
            lab.kill(node).await?;
            println!("lab: {node} killed (processes killed, links down)");
            Ok(ExitCode::SUCCESS)
        }
        LabCommand::Revive { node } => {
            match lab.revive(node).await? {
                Some(pid) => println!("lab: {node} revived (pbxha pid {pid})"),
                None => println!("lab: {node} revived"),
            }
            Ok(ExitCode::SUCCESS)
        }
        LabCommand::Crash { node } => {
            let pid = lab.signal_daemon(node, Signal::SIGKILL)?;
            println!("lab: {node}'s daemon (pid {pid}) killed; its PBX and addresses were not touched");
            Ok(ExitCode::SUCCESS)
        }
        LabCommand::Freeze { node } => {
            let pid = lab.signal_daemon(node, Signal::SIGSTOP)?;
            println!("lab: {node}'s daemon (pid {pid}) frozen; `pbxha lab thaw {node}` resumes it");
            Ok(ExitCode::SUCCESS)
        }
        LabCommand::Thaw { node } => {
            let pid = lab.signal_daemon(node, Signal::SIGCONT)?;
            println!("lab: {node}'s daemon (pid {pid}) resumed");
            Ok(ExitCode::SUCCESS)
        }
        LabCommand::KillPbx { node } => {
            let pids = lab.kill_pbx(node).await?;
            let pids: Vec<String> = pids.iter().map(ToString::to_string).collect();
            println!("lab: {node}'s PBX killed (pid {})", pids.join(", "));
            Ok(ExitCode::SUCCESS)
        }
        LabCommand::Calls { node, calls } => {
            lab.set_calls(node, calls)?;
            println!("lab: {node}'s Asterisk double reports {calls} active call(s)");
            Ok(ExitCode::SUCCESS)
        }
        LabCommand::Partition { which, node } => {
            lab.partition(which, node).await?;
            println!("lab: {node} partitioned ({which:?}); `pbxha lab heal` undoes it");
            Ok(ExitCode::SUCCESS)
        }
        LabCommand::Heal => {
            lab.heal().await?;
            println!("lab: healed");
            Ok(ExitCode::SUCCESS)
        }
        LabCommand::Switchover { now } => {
            let roles = roles(&lab).await;
            let Some(primary) = roles.iter().find(|(_, r)| r.as_str() == "primary").map(|(n, _)| n.clone()) else {
                anyhow::bail!("no node is primary ({})", describe_roles(&roles));
            };
            let node: Member = primary.parse().map_err(|e: String| anyhow::anyhow!(e))?;
            println!("lab: switchover from {primary}");
            admin::switchover(&NodeFiles::new(lab.state_dir(), node).config, now).await
        }
        LabCommand::Bench { runs, profile, kind, soak_secs, json } => {
            let opts = bench::BenchOptions {
                runs,
                profile,
                kind,
                soak: std::time::Duration::from_secs(soak_secs),
                exe: std::env::current_exe()?,
            };
            // With --json, progress goes to stderr so stdout stays one JSON document.
            let report = bench::run(&lab, &ControlSockets, &opts, shutdown_signal(), &|line| {
                if json {
                    eprintln!("bench: {line}")
                } else {
                    println!("bench: {line}")
                }
            })
            .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", bench::render(&report));
            }
            Ok(ExitCode::SUCCESS)
        }
        LabCommand::SipResponder { bind, node } => {
            let cfg = pbxha_telephony::ResponderConfig::new(node);
            let responder = pbxha_telephony::Responder::bind(bind, Some(bind), cfg).await?;
            responder.run(shutdown_signal()).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The lab's nodes, reached through the daemon's control client.
struct ControlSockets;

#[async_trait::async_trait]
impl Daemons for ControlSockets {
    async fn status(&self, socket: &Path) -> Result<Option<NodeView>, String> {
        let reply = control::call(socket, &Request::Status).await.map_err(|e| e.to_string())?;
        Ok(DaemonStatus::from_reply(&reply).map(|s| node_view(&s)))
    }

    async fn switchover_now(&self, socket: &Path) -> Result<Result<(), String>, String> {
        let reply = control::call(socket, &Request::Switchover { now: true }).await.map_err(|e| e.to_string())?;
        Ok(if reply.ok { Ok(()) } else { Err(reply.message) })
    }
}

/// The lab's reading of a daemon's typed status.
fn node_view(s: &DaemonStatus) -> NodeView {
    NodeView {
        role: s.node.role.to_string(),
        group: s.node.group.as_str().to_string(),
        peer_alive: s.node.peer.alive,
        last_failover_at_ms: s.last_failover.as_ref().map(|f| f.at_ms),
        failed_members: s
            .resources
            .iter()
            .filter(|r| r.state == pbxha_appliance::resources::MemberState::Failed)
            .map(|r| r.name.clone())
            .collect(),
        links: s
            .heartbeat
            .links
            .iter()
            .map(|l| LinkView {
                name: l.name.clone(),
                accepted: l.accepted,
                dropped: l.drops.total(),
                send_errors: l.send_errors,
            })
            .collect(),
    }
}

/// Each node's role from its control socket; "down" when its daemon does not answer.
async fn roles(lab: &Lab) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for node in Member::NODES {
        let socket = NodeFiles::new(lab.state_dir(), node).control_socket;
        let role = match ControlSockets.status(&socket).await {
            Ok(status) => status.map_or_else(|| "unknown".into(), |s| s.role),
            Err(_) => "down".into(),
        };
        out.insert(node.name().to_string(), role);
    }
    out
}

fn describe_roles(roles: &BTreeMap<String, String>) -> String {
    roles.iter().map(|(n, r)| format!("{n}: {r}")).collect::<Vec<_>>().join(", ")
}

async fn shutdown_signal() {
    let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
