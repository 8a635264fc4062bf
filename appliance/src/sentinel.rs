//! What happens to the group's addresses when the daemon dies without stopping them.
//!
//! A daemon killed with SIGKILL (or crashing) leaves the VIP on its interface. Its `exec`
//! services die with it (PR_SET_PDEATHSIG), so the address answers ARP for a node where
//! nothing answers SIP, and the peer's split-brain guard, seeing the address answered,
//! refuses to take it: an outage without end. A service that survives the daemon (a systemd
//! unit, a command-started PBX) is the opposite case: the node still serves its clients and
//! the address must stay, or a crash that cost nothing today would cost a failover.
//!
//! So one decision, [`release`], serves two callers:
//! - `pbxha release`, run by systemd as `ExecStopPost=` after the unit's processes are gone;
//! - the sentinel, for nodes without systemd: at start the daemon spawns `pbxha sentinel`
//!   (a fresh exec of its own binary, not a fork of the multi-threaded daemon) whose stdin is
//!   the read end of a pipe. Only the daemon holds the write end, close-on-exec, so no
//!   service it starts inherits it: end of file on the pipe means the daemon is gone, however
//!   it died. A clean stop writes one byte first, and the sentinel exits without acting.
//!   The pipe closes while the dying daemon's other files are still being closed, so the
//!   sentinel then waits on a pidfd of the daemon until every thread of it has exited: only
//!   then is the control socket's listener gone, and a connect there means a new daemon.
//!
//! The decision: if a SIP probe of the local PBX or of the VIP is configured, one OPTIONS
//! transaction of [`PROBE_BUDGET`] (sent at 0 and 500 ms, RFC 3261 Timer E) to each target
//! says whether clients are served; otherwise the status of every member that can outlive the
//! daemon (`service` units and commands, `pbx`, `ocf`, `mysql`) does, and a member whose
//! state cannot be told counts as serving, so a doubt keeps the address as today. An `exec`
//! service never counts: it died with the daemon. When nothing serves, every configured VIP
//! is removed over netlink by the `vip` resource's own stop.
//!
//! A daemon restarted while an old sentinel still decides must not lose its addresses to
//! it: the new daemon binds the control socket before anything else, and the sentinel checks
//! that no daemon answers there right before it removes anything, then exits. The new daemon
//! stops whatever it finds at start anyway, and adds a VIP only after its election, seconds
//! later. Under systemd the unit's stop kills the sentinel with the rest of the control
//! group; `ExecStopPost=` then makes the same decision.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use pbxha_runner::Runner;
use pbxha_telephony::{Policy, Probe};

use crate::config::{Config, ProbeConfig, ProbeRole, ProbeTransport, ResourceConfig, ResourceKind, ServiceConfig};
use crate::resources::{Resource, ResourceState};
use crate::Error;

/// How long the SIP check may take: the release stays within about a second of the death,
/// before the peer's dead time ends (1 s by default), so the peer's guard finds the address
/// gone and takes over at once. A PBX that needs longer to answer OPTIONS is taken for dead,
/// which costs a failover, not an outage.
pub const PROBE_BUDGET: Duration = Duration::from_millis(800);

/// The SIP probes that tell whether this node's clients are served. Pure.
pub fn serving_probes(probes: &[ProbeConfig]) -> Vec<&ProbeConfig> {
    probes.iter().filter(|p| matches!(p.role, ProbeRole::LocalPbx { .. } | ProbeRole::Vip)).collect()
}

/// The members that may still run once the daemon is gone, and so may still serve. Pure.
pub fn survivors(resources: &[ResourceConfig]) -> Vec<&ResourceConfig> {
    resources.iter().filter(|r| r.kind.outlives_daemon()).collect()
}

/// What still serves this node's clients although its daemon is gone, in words; `None`
/// when nothing does.
pub async fn still_serving(config: &Config, runner: Arc<dyn Runner>) -> Option<String> {
    let probes = serving_probes(&config.probes);
    if !probes.is_empty() {
        let checks = probes.iter().map(|p| async move {
            let probe = match p.transport {
                ProbeTransport::Udp => Probe::udp(p.target, PROBE_BUDGET),
                ProbeTransport::Tcp => Probe::tcp(p.target, PROBE_BUDGET),
            };
            let result = pbxha_telephony::probe(&probe).await;
            let policy = Policy { overloaded_is_alive: p.overloaded_is_alive };
            match pbxha_telephony::verdict(&result, policy).is_healthy() {
                true => Some(format!("SIP probe `{}` is answered at {}", p.name, p.target)),
                false => None,
            }
        });
        return futures_util::future::join_all(checks).await.into_iter().flatten().next();
    }
    for r in survivors(&config.resources) {
        if let ResourceKind::Service(ServiceConfig::Commands { status: None, .. }) = &r.kind {
            return Some(format!("resource `{}` may still run (it has no status command to tell)", r.name));
        }
        let members = match crate::resources::build_members(
            std::slice::from_ref(r),
            runner.clone(),
            &Default::default(),
            &Default::default(),
        ) {
            Ok(m) => m,
            Err(e) => return Some(format!("resource `{}` may still run ({e})", r.name)),
        };
        for m in members {
            match tokio::time::timeout(r.monitor_timeout, m.resource.monitor()).await {
                Ok(Ok(ResourceState::Running)) => return Some(format!("resource `{}` still runs", r.name)),
                Ok(Ok(ResourceState::Stopped)) => {}
                Ok(Err(e)) => return Some(format!("resource `{}` may still run ({e})", r.name)),
                Err(_) => return Some(format!("resource `{}` may still run (its monitor timed out)", r.name)),
            }
        }
    }
    None
}

/// What [`release`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Why the held addresses were kept; none when they were released or none was held.
    pub kept: Option<String>,
    /// One line per VIP: removed, not present, or the error.
    pub lines: Vec<String>,
    /// Some VIP could not be removed.
    pub failed: bool,
    /// Nothing served, so the held VIPs were removed (or tried).
    pub released: bool,
}

/// Keeps the VIPs when something this node managed still serves; otherwise removes every
/// configured one it holds. `daemon_up` is asked first and again right before removing, so
/// a daemon that started meanwhile keeps what it holds. A node holding no VIP (a secondary)
/// probes nothing: its SIP probes would reach the peer that holds the VIP.
pub async fn release(config: &Config, runner: Arc<dyn Runner>, daemon_up: impl Fn() -> bool) -> Outcome {
    let restarted =
        || Outcome { kept: Some("a pbxha daemon runs again and holds what it holds".into()), ..Outcome::default() };
    if daemon_up() {
        return restarted();
    }
    let mut out = Outcome::default();
    let mut held = Vec::new();
    for r in &config.resources {
        let ResourceKind::Vip(v) = &r.kind else {
            continue;
        };
        let vip = crate::resources::vip::Vip::new(r.name.clone(), v.clone());
        // One that cannot be read is removed all the same, if nothing serves.
        match vip.monitor().await {
            Ok(ResourceState::Stopped) => out.lines.push(format!("VIP {} was not on {}", v.address.addr, v.interface)),
            Ok(ResourceState::Running) | Err(_) => held.push((vip, v)),
        }
    }
    if held.is_empty() {
        return out;
    }
    if let Some(why) = still_serving(config, runner).await {
        return Outcome { kept: Some(why), ..Outcome::default() };
    }
    if daemon_up() {
        return restarted();
    }
    out.released = true;
    for (vip, v) in held {
        match vip.stop().await {
            Ok(()) => out.lines.push(format!("removed VIP {} from {}", v.address, v.interface)),
            Err(e) => {
                out.failed = true;
                out.lines.push(format!("could not remove VIP {} from {}: {e}", v.address.addr, v.interface));
            }
        }
    }
    out
}

/// Whether a daemon answers on the control socket (a stale socket file refuses).
pub fn daemon_up(socket: &Path) -> bool {
    std::os::unix::net::UnixStream::connect(socket).is_ok()
}

/// The daemon's end of the sentinel's pipe.
pub struct Sentinel {
    pipe: std::io::PipeWriter,
    pid: u32,
}

impl Sentinel {
    /// Starts `pbxha --config CONFIG sentinel` with the read end of a fresh pipe as stdin.
    /// Its output goes where the daemon's goes.
    pub fn spawn(config_path: &Path) -> Result<Sentinel, Error> {
        let (read, pipe) = std::io::pipe().map_err(|e| Error::io("creating the sentinel's pipe", e))?;
        let child = std::process::Command::new("/proc/self/exe")
            .arg("--config")
            .arg(config_path)
            .arg("sentinel")
            .stdin(read)
            .spawn()
            .map_err(|e| Error::io("starting the sentinel (`pbxha sentinel`)", e))?;
        let pid = child.id();
        // Never waited for: it must outlive this process, and init reaps it then. While the
        // daemon lives it only exits after the daemon's byte, as the daemon ends.
        drop(child);
        tracing::info!(pid, "sentinel started: it releases the VIPs if this daemon dies while nothing it ran serves");
        Ok(Sentinel { pipe, pid })
    }

    /// A clean stop: the sentinel exits without touching anything.
    pub fn dismiss(mut self) {
        match self.pipe.write_all(b"x") {
            // Gone already: stopped with the rest of the process group (lab down, systemd).
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
            Ok(()) => {}
            Err(e) => tracing::warn!(
                pid = self.pid,
                "cannot dismiss the sentinel: {e}; it will check what still serves and may release the VIPs"
            ),
        }
    }
}

/// How long the sentinel waits, after the pipe closed, for every thread of the daemon to
/// have exited. The kernel closes a killed process's files in a few milliseconds.
const EXIT_WAIT: Duration = Duration::from_secs(2);

/// A process held by a pidfd: it becomes readable only once every thread of the process
/// has exited, and so every file it held is closed.
struct Process(Option<std::os::fd::OwnedFd>);

impl Process {
    /// The daemon that started this sentinel.
    fn parent() -> Process {
        let pid = nix::unistd::getppid();
        let process = Process::open(pid.as_raw());
        // Reparented already: the daemon is gone, and the pid may name another process.
        match nix::unistd::getppid() == pid {
            true => process,
            false => Process(None),
        }
    }

    fn open(pid: i32) -> Process {
        use std::os::fd::FromRawFd;
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
        let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        match i32::try_from(raw) {
            // SAFETY: a descriptor the kernel just gave this process; nothing else owns it.
            Ok(raw) if raw >= 0 => Process(Some(unsafe { std::os::fd::OwnedFd::from_raw_fd(raw) })),
            _ => Process(None),
        }
    }

    /// Whether the process has exited within `limit` (at once when its pidfd could not be
    /// had: a kernel before 5.3, or a daemon gone before this sentinel looked).
    fn gone_within(&self, limit: Duration) -> bool {
        use std::os::fd::AsRawFd;
        let Some(fd) = &self.0 else {
            return true;
        };
        let deadline = std::time::Instant::now() + limit;
        // Bounded by the deadline: a signal (EINTR) only shortens one round.
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let mut poll = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
            let ms = i32::try_from(left.as_millis()).unwrap_or(i32::MAX);
            // SAFETY: one valid pollfd, its count, a bounded timeout.
            let n = unsafe { libc::poll(&mut poll, 1, ms) };
            if n > 0 {
                return true;
            }
            let interrupted = n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted;
            if !interrupted || left.is_zero() {
                return false;
            }
        }
    }
}

/// The sentinel's life: waits for the daemon's byte or its death, and on death releases
/// the VIPs unless something still serves. Returns what it did, for its exit status.
pub async fn watch(config_path: &Path) -> Result<Outcome, Error> {
    // SIGINT and SIGHUP go to the daemon (Ctrl-C, reload); ignored here by taking them.
    let sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt());
    let sighup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
    let (_sigint, _sighup) =
        (sigint.map_err(|e| Error::io("taking SIGINT", e))?, sighup.map_err(|e| Error::io("taking SIGHUP", e))?);
    let daemon = Process::parent();
    let got = tokio::task::spawn_blocking(|| std::io::stdin().read(&mut [0u8; 1]))
        .await
        .map_err(|e| Error::io("waiting for the daemon", std::io::Error::other(e)))?;
    if matches!(got, Ok(1)) {
        return Ok(Outcome { kept: Some("the daemon stopped cleanly".into()), ..Outcome::default() });
    }
    // The pipe closes as the dying daemon's files are closed one by one: its control socket
    // may still be listening, and a connect to it succeeds, as if a daemon ran again.
    if !tokio::task::spawn_blocking(move || daemon.gone_within(EXIT_WAIT)).await.unwrap_or(false) {
        tracing::warn!(
            "sentinel: the daemon's pipe closed but the process has not exited within {EXIT_WAIT:?}; deciding anyway"
        );
    }
    let config = crate::config::load(config_path)?;
    tracing::error!("sentinel: the pbxha daemon died without stopping its group; checking what still serves");
    let socket = config.paths.control_socket.clone();
    let outcome = release(&config, Arc::new(pbxha_runner::SystemRunner), || daemon_up(&socket)).await;
    let lines = outcome.lines.join("; ");
    match &outcome.kept {
        Some(why) => tracing::warn!("sentinel: keeping the VIPs: {why}"),
        None if outcome.released => tracing::error!("sentinel: nothing serves: {lines}"),
        None if lines.is_empty() => {
            tracing::info!("sentinel: no VIP is configured; nothing to release")
        }
        None => tracing::info!("sentinel: this node holds no VIP: {lines}"),
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_with(extra: &str) -> Config {
        let key = crate::config::tests::key_file(0o600);
        crate::config::parse(&format!("{}\n{extra}", crate::config::tests::minimal(key.path()))).unwrap()
    }

    const GROUP: &str = r#"
[[resource]]
name = "vip"
kind = "vip"
address = "198.51.100.100/24"
interface = "pub0"
[[resource]]
name = "pbx"
kind = "service"
exec = ["sleep", "600"]
[[resource]]
name = "unit"
kind = "service"
unit = "asterisk.service"
[[resource]]
name = "cmds"
kind = "service"
start = ["true"]
stop = ["true"]
[[probe]]
name = "trunk"
role = "trunk"
target = "udp:198.51.100.1:5060"
"#;

    #[test]
    fn a_process_counts_as_gone_only_once_it_has_exited() {
        let mut child = std::process::Command::new("sleep").arg("60").spawn().expect("starting sleep");
        let process = Process::open(i32::try_from(child.id()).expect("a pid"));
        assert!(process.0.is_some(), "pidfd_open");
        assert!(!process.gone_within(Duration::from_millis(100)), "sleep 60 is still running");
        child.kill().expect("killing sleep");
        // Not yet reaped: exited is enough.
        assert!(process.gone_within(Duration::from_secs(10)));
        child.wait().expect("reaping sleep");
    }

    #[test]
    fn exec_services_and_addresses_never_count_as_serving() {
        let c = config_with(GROUP);
        let names: Vec<&str> = survivors(&c.resources).iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["unit", "cmds"]);
        assert!(serving_probes(&c.probes).is_empty(), "a trunk probe says nothing of this node");
    }

    #[tokio::test]
    async fn a_member_that_may_survive_keeps_the_addresses() {
        use pbxha_runner::{Output, ScriptedRunner};
        let c = config_with(GROUP);
        let r = Arc::new(ScriptedRunner::new());
        // `systemctl is-active` exit 3: the unit is not running (its real LSB code).
        r.on(["systemctl", "is-active"], Output::failed(3, "inactive\n"));
        let why = still_serving(&c, r.clone()).await;
        assert_eq!(why.as_deref(), Some("resource `cmds` may still run (it has no status command to tell)"));
        r.on(["systemctl", "is-active"], Output::ok("active\n"));
        assert_eq!(still_serving(&c, r.clone()).await.as_deref(), Some("resource `unit` still runs"));
        assert!(r.argvs().iter().all(|a| a.starts_with("systemctl is-active asterisk.service")), "{:?}", r.argvs());
    }

    #[tokio::test]
    async fn with_a_sip_probe_the_answer_decides() {
        // A responder on loopback that answers OPTIONS, then the same port with nobody on it.
        let config = pbxha_telephony::ResponderConfig::new("a");
        let responder = pbxha_telephony::Responder::bind("127.0.0.1:0".parse().unwrap(), None, config).await.unwrap();
        let target = responder.udp_addr();
        let responder = tokio::spawn(responder.run(std::future::pending()));
        let group = format!(
            "[[resource]]\nname = \"unit\"\nkind = \"service\"\nunit = \"x.service\"\n[[probe]]\nname = \"pbx\"\nrole = \"vip\"\ntarget = \"udp:{target}\"\n"
        );
        let c = config_with(&group);
        let runner = Arc::new(pbxha_runner::ScriptedRunner::new());
        let why = still_serving(&c, runner.clone()).await;
        assert_eq!(why, Some(format!("SIP probe `pbx` is answered at {target}")));
        responder.abort();
        let _ = responder.await;
        let started = std::time::Instant::now();
        assert_eq!(still_serving(&c, runner.clone()).await, None, "the unit's state is not asked when a probe decides");
        assert!(started.elapsed() < PROBE_BUDGET + Duration::from_millis(300), "{:?}", started.elapsed());
        assert!(runner.argvs().is_empty(), "{:?}", runner.argvs());
    }

    #[tokio::test]
    async fn an_old_sentinel_leaves_a_restarted_daemon_alone() {
        // Nothing serves (an exec service only), but a daemon answers again: nothing removed.
        let c = config_with("[[resource]]\nname = \"vip\"\nkind = \"vip\"\naddress = \"198.51.100.100/24\"\ninterface = \"pub0\"\n[[resource]]\nname = \"pbx\"\nkind = \"service\"\nexec = [\"sleep\", \"600\"]\n");
        let runner = Arc::new(pbxha_runner::ScriptedRunner::new());
        let out = release(&c, runner.clone(), || true).await;
        assert_eq!(out.kept.as_deref(), Some("a pbxha daemon runs again and holds what it holds"));
        assert!(out.lines.is_empty() && !out.failed, "{out:?}");
    }
}
