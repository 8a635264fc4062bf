//! `pbxha replica migrate|undo`: move PBX directories onto the replicated filesystem and back.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Subcommand, ValueEnum};
use pbxha_replica::migrate::{self, MigrateOptions, MigrateRole};

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
}

#[derive(Clone, Copy, ValueEnum)]
pub enum RoleArg {
    Primary,
    Secondary,
}

pub fn run(cmd: ReplicaCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ReplicaCommand::Migrate {
            profile,
            dir,
            replica_root,
            role,
            dry_run,
        } => {
            let (dirs, skipped) = migrate::selection(&profile, &dir)?;
            for s in skipped {
                eprintln!("skipping {}: not present on this host", s.display());
            }
            let role = match role {
                RoleArg::Primary => MigrateRole::Primary,
                RoleArg::Secondary => MigrateRole::Secondary,
            };
            let opts = MigrateOptions {
                dirs,
                replica_root,
                role,
                progress: !dry_run,
            };
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
                    Some(p) => println!(
                        "restored {}; the replica's copy is kept at {}",
                        u.dir.display(),
                        p.display()
                    ),
                    None => println!("restored {}", u.dir.display()),
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
