//! pbxha's appliance: the daemon and everything the `pbxha` command drives.
//!
//! Parts: [`config`] (the TOML model, every problem reported at once), [`summary`] (what a
//! node tells its peer), [`membership`] (authenticated UDP heartbeats over redundant links),
//! [`fsm`] (the pure failover state machine: events in, actions out, time as an input),
//! [`resources`] (the ordered resource group and its kinds), [`journal`] (SQLite event
//! journal and failover timelines), [`control`] (the Unix control socket), [`daemon`] (the
//! I/O loop that wires them together), [`sentinel`] (gives up the VIPs of a daemon that died
//! while nothing it ran serves), [`http`] (the read-only endpoint, with [`metrics`] and the
//! status [`page`]). The lab (`pbxha lab`) is a crate of its own, `pbxha-lab`.

pub mod calls;
pub mod config;
pub mod connectivity;
pub mod control;
pub mod daemon;
pub mod drill;
pub mod error;
pub mod failover;
pub mod fence;
pub mod fsm;
pub mod http;
pub mod journal;
pub mod membership;
pub mod metrics;
pub mod mysql_watch;
pub mod net;
pub mod notify;
pub mod page;
pub mod probes;
pub mod resources;
pub mod sentinel;
pub mod status;
pub mod summary;

pub use error::Error;

/// Returns once `stop` says stop, or once nobody can say it any more (its sender is gone).
/// The one way the daemon tells its tasks to end: the control socket, `[http]`, the heartbeat
/// links' receivers, the ping monitor, the checks, the MySQL watcher, the DRBD readers, the
/// fencing's drbdadm runs and the outbox all wait on the `watch::Receiver<bool>` that the
/// daemon sets as it exits, or on one of [`stop_within`] (the watchdog crate's loops wait on
/// the same receiver the same way).
pub async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// A stop signal for tasks a reload replaces (the outbox's): set by its own sender, and by
/// `daemon` stopping, so the daemon's exit ends them like every other task.
pub fn stop_within(
    daemon: &tokio::sync::watch::Receiver<bool>,
) -> (tokio::sync::watch::Sender<bool>, tokio::sync::watch::Receiver<bool>) {
    let (own, rx) = tokio::sync::watch::channel(false);
    let (mut daemon, forward) = (daemon.clone(), own.clone());
    tokio::spawn(async move {
        tokio::select! {
            () = stopped(&mut daemon) => {
                forward.send_replace(true);
            }
            // Every task on it has ended (a reload stopped them).
            () = forward.closed() => {}
        }
    });
    (own, rx)
}

/// The wall clock in unix milliseconds, for journal entries and the boot counter's seed (never
/// for deadlines: those use the monotonic clock).
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
