//! `pbxha release` (systemd's `ExecStopPost=`) and the hidden `pbxha sentinel` the daemon
//! starts: both give up this node's VIPs once its daemon is gone and nothing it ran still
//! serves (see `pbxha_appliance::sentinel`).

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use pbxha_appliance::config;
use pbxha_appliance::sentinel::{self, Outcome};

/// Refuses while the daemon runs (it manages the VIPs itself); otherwise keeps them if
/// something still serves, or removes them, and says which.
pub async fn release(config_path: &Path) -> anyhow::Result<ExitCode> {
    let config = config::load(config_path)?;
    let socket = config.paths.control_socket.clone();
    if sentinel::daemon_up(&socket) {
        eprintln!("pbxha release: the daemon runs (it answers on {}); it manages the VIPs itself", socket.display());
        return Ok(ExitCode::FAILURE);
    }
    let outcome =
        sentinel::release(&config, Arc::new(pbxha_runner::SystemRunner), || sentinel::daemon_up(&socket)).await;
    Ok(report("pbxha release", &outcome))
}

/// The sentinel: its stdin is the daemon's pipe.
pub async fn sentinel(config_path: &Path) -> anyhow::Result<ExitCode> {
    let outcome = sentinel::watch(config_path).await?;
    Ok(if outcome.failed { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

fn report(who: &str, outcome: &Outcome) -> ExitCode {
    match &outcome.kept {
        Some(why) => println!("{who}: keeping the VIPs: {why}"),
        None if outcome.lines.is_empty() => {
            println!("{who}: no VIP is configured; nothing to release")
        }
        None => {
            for line in &outcome.lines {
                println!("{who}: {line}");
            }
        }
    }
    if outcome.failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
