//! `pbxha replica migrate|undo`: move PBX directories onto the replicated filesystem and back.
//! `pbxha replica fence-peer|split-brain`: DRBD's handlers, answered through the daemon.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Subcommand, ValueEnum};
use pbxha_appliance::config::{self, ResourceKind};
use pbxha_appliance::control::{self, Request};
use pbxha_appliance::fence::FenceVerdict;
use pbxha_replica::drbd::conf::Syntax;
use pbxha_replica::drbd::control::Drbd;
use pbxha_replica::drbd::promote::split_brain_report;
use pbxha_replica::migrate::{self, MigrateOptions, MigrateRole};
use pbxha_runner::SystemRunner;

#[derive(Subcommand)]
pub enum ReplicaCommand {
    /// Move directories into the replica and leave symlinks (resumable; run it again after
    /// an interruption). Originals are kept under PARENT/.pbxha-replica-backup.
    Migrate {
        /// Directories of a service: asterisk, freeswitch, mysql, web (repeatable).
        #[arg(long, value_parser = ["asterisk", "freeswitch", "mysql", "web"])]
        profile: Vec<String>,
        /// A directory to move (repeatable).
        #[arg(long)]
        dir: Vec<PathBuf>,
        /// Where the replicated filesystem is mounted.
        #[arg(long, default_value = "/replica")]
        replica_root: PathBuf,
        /// primary copies into the mounted replica; secondary only sets its local copies aside.
        #[arg(long, value_enum, default_value_t = RoleArg::Primary)]
        role: RoleArg,
        /// Print the checked plan and change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Restore the original layout of migrated directories (default: every profile's).
    /// The replica's copy is renamed aside, never deleted.
    Undo {
        #[arg(long, value_parser = ["asterisk", "freeswitch", "mysql", "web"])]
        profile: Vec<String>,
        #[arg(long)]
        dir: Vec<PathBuf>,
    },
    /// DRBD's fence-peer handler (`fencing resource-only`): the peer's pbxha outdates its
    /// disk over the heartbeat. Exits as DRBD expects: 3 peer Inconsistent, 4 peer outdated,
    /// 5 peer dead (silent on every link), 6 peer is Primary; 1 when the local daemon cannot
    /// be asked or a live peer did not confirm (DRBD then changes nothing).
    FencePeer {
        /// The DRBD resource; DRBD sets DRBD_RESOURCE for its handlers.
        #[arg(long, env = "DRBD_RESOURCE")]
        resource: String,
    },
    /// DRBD's split-brain handler: a critical alert with this side's DRBD state, and this
    /// node in fault until `pbxha online`.
    SplitBrain {
        /// The DRBD resource; DRBD sets DRBD_RESOURCE for its handlers.
        #[arg(long, env = "DRBD_RESOURCE")]
        resource: String,
    },
}

/// How often the fence-peer handler asks its daemon for the verdict.
const FENCE_POLL: Duration = Duration::from_millis(200);
/// A backstop only: the daemon gives its verdict within a few dead times.
const FENCE_MAX_POLLS: u32 = 600;

#[derive(Clone, Copy, ValueEnum)]
pub enum RoleArg {
    Primary,
    Secondary,
}

pub async fn run(config: &Path, cmd: ReplicaCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ReplicaCommand::FencePeer { resource } => Ok(fence_peer(config, resource).await),
        ReplicaCommand::SplitBrain { resource } => Ok(split_brain(config, resource).await),
        ReplicaCommand::Migrate { profile, dir, replica_root, role, dry_run } => {
            let (dirs, skipped) = migrate::selection(&profile, &dir)?;
            for s in skipped {
                eprintln!("skipping {}: not present on this host", s.display());
            }
            let role = match role {
                RoleArg::Primary => MigrateRole::Primary,
                RoleArg::Secondary => MigrateRole::Secondary,
            };
            let opts = MigrateOptions { dirs, replica_root, role, progress: !dry_run };
            if dry_run {
                print!("{}", migrate::plan(&opts)?.describe());
                println!("dry run: nothing changed");
            } else {
                let plan = migrate::migrate(&opts)?;
                print!("{}", plan.describe());
                println!("migrated {} director(y/ies)", plan.items.len());
            }
            Ok(ExitCode::SUCCESS)
        }
        ReplicaCommand::Undo { profile, dir } => {
            let dirs = if profile.is_empty() && dir.is_empty() {
                migrate::all_profile_dirs()
            } else {
                migrate::selection(&profile, &dir)?.0
            };
            let undone = migrate::undo(&dirs)?;
            if undone.is_empty() {
                println!("nothing to undo");
            }
            for u in undone {
                match u.replica_copy_kept_at {
                    Some(p) => println!("restored {}; the replica's copy is kept at {}", u.dir.display(), p.display()),
                    None => println!("restored {}", u.dir.display()),
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn fence_peer(config: &Path, resource: String) -> ExitCode {
    let socket = control::socket_for(config);
    let request = Request::FencePeer { resource: resource.clone() };
    for _ in 0..FENCE_MAX_POLLS {
        let reply = match control::call(&socket, &request).await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("pbxha fence-peer {resource}: {e}");
                return ExitCode::FAILURE;
            }
        };
        let Some(verdict) = reply.status.as_ref().and_then(FenceVerdict::from_status) else {
            eprintln!("pbxha fence-peer {resource}: the daemon did not give a verdict: {}", reply.message);
            return ExitCode::FAILURE;
        };
        if let Some(code) = verdict.exit_code() {
            println!("pbxha fence-peer {resource}: {}", reply.message);
            return ExitCode::from(code);
        }
        tokio::time::sleep(FENCE_POLL).await;
    }
    // Not "unreachable": nothing here says the peer is dead.
    eprintln!("pbxha fence-peer {resource}: no verdict from the daemon after {FENCE_MAX_POLLS} polls");
    ExitCode::FAILURE
}

async fn split_brain(config: &Path, resource: String) -> ExitCode {
    // The generation comes from the matching `drbd` resource; DRBD 9 when none matches.
    let (syntax, minor) = config::load(config)
        .ok()
        .and_then(|c| {
            c.resources.into_iter().find_map(|r| match r.kind {
                ResourceKind::Drbd(d) if d.resource == resource => Some((d.syntax, d.minor)),
                _ => None,
            })
        })
        .unwrap_or((Syntax::V9, 0));
    let drbd = Drbd::new(Arc::new(SystemRunner), resource.clone(), syntax, minor);
    let report = match drbd.status().await {
        Ok(local) => split_brain_report(&local, None),
        Err(e) => format!("local state unreadable ({e})"),
    };
    match control::call(&control::socket_for(config), &Request::SplitBrain { resource, report: report.clone() }).await {
        Ok(reply) => {
            println!("{}", reply.message);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("pbxha split-brain: {e}; not reported: {report}");
            ExitCode::FAILURE
        }
    }
}
