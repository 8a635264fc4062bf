//! `pbxha lab`: a real two-node cluster in network namespaces on this machine.
//!
//! [`plan`] holds the design as data and pure functions (namespaces, addresses, `ip`
//! commands, partition rules, node configs); [`Lab`] carries it out through the command
//! runner and tears it down again, leaving nothing behind even after a half-finished `up`.
//! Two things do not go through the runner because it only runs commands to completion
//! with captured output: the node daemons (started in the background) and `exec` (which
//! inherits the terminal). [`bench`] measures failover on the live lab; [`testns`] makes
//! throw-away namespaces for tests.
//!
//! The crate knows nothing of the daemon's types: it renders the nodes' configs as text,
//! runs the `pbxha` executable it is given, and reaches the running daemons through
//! [`Daemons`], which the `pbxha` command implements with its control client.

mod bare;
pub mod bench;
mod error;
pub mod plan;
pub mod testns;
#[cfg(test)]
mod tests;

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use pbxha_runner::{Cmd, Runner};
use serde::{Deserialize, Serialize};

pub use error::Error;
pub use plan::{Interface, Member, OnIsolation, Partition, Pbx, Profile};
use plan::{Names, NodeFiles, AUTH_KEY_FILE, RECORD_FILE, VIP};

/// Each `ip`/`iptables` call is quick; a hung one must not hang the lab.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(15);
/// How long processes get to exit on SIGTERM before SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(3);
/// How long SIGKILLed processes get to leave the process table.
const KILL_WAIT: Duration = Duration::from_secs(5);
/// Rounds of list-and-signal in `down`: a stopping daemon starts at most a process or two.
const DOWN_ROUNDS: usize = 3;
/// How long `down` waits for exited processes to be reaped. The daemons' parent is init
/// once the `lab up` that started them has exited, and some inits (a container's) reap
/// only every second or two.
const REAP_WAIT: Duration = Duration::from_secs(5);

fn lab_err(message: impl Into<String>) -> Error {
    Error::Lab { message: message.into() }
}

/// The part of a daemon's status the lab and its bench judge by. The `pbxha` command fills
/// it from the daemon's typed status, so the lab needs none of the daemon's types.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeView {
    /// `primary`, `secondary`, `starting`…, as `pbxha status` shows it.
    pub role: String,
    /// The group's phase: `running`, `stopped`…
    pub group: String,
    pub peer_alive: bool,
    /// When the last failover this daemon recorded began.
    pub last_failover_at_ms: Option<u64>,
    /// Group members whose restart budget is spent.
    pub failed_members: Vec<String>,
    pub links: Vec<LinkView>,
}

/// One heartbeat link's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LinkView {
    pub name: String,
    pub accepted: u64,
    pub dropped: u64,
    pub send_errors: u64,
}

/// What the lab asks of a node's running daemon over its control socket (`NodeFiles::
/// control_socket`). The `pbxha` command implements it with its control client, as it
/// implements `pbxha_installer::Appliance` for the wizard.
#[async_trait::async_trait]
pub trait Daemons: Send + Sync {
    /// What the lab reads of the daemon's status (`None` when the reply carries none).
    /// `Err` says why the daemon could not be asked.
    async fn status(&self, socket: &Path) -> Result<Option<NodeView>, String>;
    /// `pbxha switchover --now`: `Ok(Err(reason))` when the daemon refused.
    async fn switchover_now(&self, socket: &Path) -> Result<Result<(), String>, String>;
}

/// How to build the lab.
#[derive(Clone, Debug)]
pub struct UpOptions {
    pub profile: Profile,
    pub pbx: Pbx,
    /// `[ping] on-isolation` of both nodes.
    pub on_isolation: OnIsolation,
    /// Add a `pbx` member driven through an Asterisk double, so a planned move has calls
    /// to drain (`lab calls` sets how many).
    pub asterisk_double: bool,
    /// The pbxha executable: the builtin PBX's argv and the daemons run it.
    pub exe: PathBuf,
    /// Start `pbxha run` on a and b; off builds the topology and configs only.
    pub start_daemons: bool,
    /// How long `up` waits for a node to take the VIP before reporting.
    pub vip_wait: Duration,
}

impl UpOptions {
    /// The defaults of `pbxha lab up` with the given executable.
    pub fn new(exe: PathBuf) -> Self {
        UpOptions {
            profile: Profile::Default,
            pbx: Pbx::Builtin,
            on_isolation: OnIsolation::default(),
            asterisk_double: false,
            exe,
            start_daemons: true,
            vip_wait: Duration::from_secs(20),
        }
    }
}

/// What `up` recorded in the state directory, so later commands (`revive`) know how the
/// lab was built.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Record {
    prefix: String,
    profile: Profile,
    pbx: Pbx,
    exe: PathBuf,
    start_daemons: bool,
    on_isolation: OnIsolation,
}

/// One member's namespace as it is now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MemberStatus {
    pub member: Member,
    pub namespace: String,
    pub present: bool,
    pub interfaces: Vec<Interface>,
    /// Processes running in the namespace.
    pub pids: Vec<i32>,
}

/// The lab as it is now (`pbxha lab status [--json]`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LabStatus {
    pub prefix: String,
    pub state_dir: PathBuf,
    pub switch_present: bool,
    pub members: Vec<MemberStatus>,
    /// Nodes with the VIP on an interface: one normally, none during a failover, two in a
    /// split brain.
    pub vip_holders: Vec<Member>,
}

impl LabStatus {
    /// Whether every namespace exists.
    pub fn is_up(&self) -> bool {
        self.switch_present && self.members.iter().all(|m| m.present)
    }
}

/// The lab, addressed by its namespace prefix and state directory.
pub struct Lab {
    runner: Arc<dyn Runner>,
    names: Names,
    state_dir: PathBuf,
}

impl Lab {
    /// The real lab: prefix `pbxha-`, state in `/run/pbxha-lab`.
    pub fn new(runner: Arc<dyn Runner>) -> Self {
        Lab {
            runner,
            names: Names { prefix: plan::DEFAULT_PREFIX.into() },
            state_dir: PathBuf::from(plan::DEFAULT_STATE_DIR),
        }
    }

    /// Another namespace prefix, so tests never touch a real lab or each other.
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.names.prefix = prefix.into();
        self
    }

    pub fn with_state_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.state_dir = dir.into();
        self
    }

    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// The namespace `member` lives in.
    pub fn namespace(&self, member: Member) -> String {
        self.names.ns(member)
    }

    async fn run(&self, argv: Vec<String>) -> Result<pbxha_runner::Output, Error> {
        let cmd = Cmd::new(argv).timeout(COMMAND_TIMEOUT);
        self.runner.run_ok(&cmd).await.map_err(|e| lab_err(e.to_string()))
    }

    async fn present_namespaces(&self) -> Result<Vec<String>, Error> {
        let out = self.run(vec!["ip".into(), "netns".into(), "list".into()]).await?;
        let ours = self.names.all();
        Ok(plan::parse_netns_list(&out.stdout).into_iter().filter(|n| ours.contains(n)).collect())
    }

    /// Builds the lab, printing progress through `progress`. Refuses when any part of a lab
    /// with this prefix or state directory exists; on a failure half-way, tears down what
    /// it made and returns the failure.
    pub async fn up(&self, opts: &UpOptions, progress: &(dyn Fn(&str) + Send + Sync)) -> Result<LabStatus, Error> {
        let present = self.present_namespaces().await?;
        if !present.is_empty() {
            return Err(lab_err(format!(
                "already up: namespace(s) {} exist; run `pbxha lab down` first",
                present.join(", ")
            )));
        }
        if self.state_dir.join(RECORD_FILE).exists() {
            return Err(lab_err(format!(
                "already up: {} exists; run `pbxha lab down` first",
                self.state_dir.join(RECORD_FILE).display()
            )));
        }
        // `down` removes the state directory: never adopt one that holds someone's files.
        let occupied = std::fs::read_dir(&self.state_dir).is_ok_and(|mut entries| entries.next().is_some());
        if occupied {
            return Err(lab_err(format!(
                "{} exists and is not empty; give the lab a new or empty state directory",
                self.state_dir.display()
            )));
        }
        match self.build(opts, progress).await {
            Ok(status) => Ok(status),
            Err(e) => {
                progress(&format!("failed: {e}; tearing down what was built"));
                if let Err(cleanup) = self.down().await {
                    tracing::error!(error = %cleanup, "tearing down a half-built lab failed");
                }
                Err(e)
            }
        }
    }

    async fn build(&self, opts: &UpOptions, progress: &(dyn Fn(&str) + Send + Sync)) -> Result<LabStatus, Error> {
        progress(&format!("writing configs to {}", self.state_dir.display()));
        self.write_state(opts)?;
        progress(&format!("creating namespaces {}*", self.names.prefix));
        for argv in plan::topology(&self.names) {
            self.run(argv).await?;
        }
        if opts.start_daemons {
            for node in Member::NODES {
                let pid = self.start_daemon(&opts.exe, node)?;
                progress(&format!(
                    "started pbxha on {node} (pid {pid}), log {}",
                    NodeFiles::new(&self.state_dir, node).log.display()
                ));
            }
            progress(&format!("waiting up to {:?} for a node to take the VIP {VIP}", opts.vip_wait));
            let status = self.wait_for_vip(opts.vip_wait).await?;
            match status.vip_holders.as_slice() {
                [] => progress(&format!("no node holds the VIP yet; see the logs in {}", self.state_dir.display())),
                holders => progress(&format!(
                    "VIP {VIP} held by {}",
                    holders.iter().map(|m| m.name()).collect::<Vec<_>>().join(" and ")
                )),
            }
            return Ok(status);
        }
        progress("topology ready (daemons not started)");
        self.status().await
    }

    async fn wait_for_vip(&self, wait: Duration) -> Result<LabStatus, Error> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let status = self.status().await?;
            if !status.vip_holders.is_empty() || tokio::time::Instant::now() >= deadline {
                return Ok(status);
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    fn write_state(&self, opts: &UpOptions) -> Result<(), Error> {
        let dir = &self.state_dir;
        std::fs::create_dir_all(dir).map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| Error::io(format!("setting mode 0700 on {}", dir.display()), e))?;
        // The record goes first: it is what lets `down` remove this directory.
        let record = Record {
            prefix: self.names.prefix.clone(),
            profile: opts.profile,
            pbx: opts.pbx,
            exe: opts.exe.clone(),
            start_daemons: opts.start_daemons,
            on_isolation: opts.on_isolation,
        };
        let json =
            serde_json::to_string_pretty(&record).map_err(|e| lab_err(format!("encoding the lab record: {e}")))?;
        write_file(&dir.join(RECORD_FILE), json.as_bytes(), 0o644)?;
        let key: [u8; 32] = rand::random();
        let key_hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        write_file(&dir.join(AUTH_KEY_FILE), format!("{key_hex}\n").as_bytes(), 0o600)?;
        for node in Member::NODES {
            let files = NodeFiles::new(dir, node);
            let text = plan::node_config(
                node,
                dir,
                opts.profile,
                opts.pbx,
                opts.on_isolation,
                opts.asterisk_double,
                &opts.exe,
            );
            write_file(&files.config, text.as_bytes(), 0o644)?;
            if opts.asterisk_double {
                let bin = files.asterisk_double.join("bin");
                std::fs::create_dir_all(&bin).map_err(|e| Error::io(format!("creating {}", bin.display()), e))?;
                for (name, script) in plan::asterisk_double_scripts(&files.asterisk_double) {
                    write_file(&bin.join(name), script.as_bytes(), 0o755)?;
                }
                let [calls, unit, _] = plan::asterisk_double_files(&files.asterisk_double);
                write_file(&calls, b"0\n", 0o644)?;
                write_file(&unit, b"inactive\n", 0o644)?;
            }
            if opts.pbx == Pbx::Kamailio {
                write_file(&files.kamailio_config, plan::kamailio_config(node).as_bytes(), 0o644)?;
                std::fs::create_dir_all(&files.kamailio_run)
                    .map_err(|e| Error::io(format!("creating {}", files.kamailio_run.display()), e))?;
            }
        }
        Ok(())
    }

    fn record(&self) -> Result<Record, Error> {
        let path = self.state_dir.join(RECORD_FILE);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| Error::io(format!("reading {}; is the lab up?", path.display()), e))?;
        serde_json::from_str(&text).map_err(|e| lab_err(format!("{}: {e}", path.display())))
    }

    /// Starts `EXE run --config STATE/NODE.toml --node NODE` inside the node's namespace, in
    /// its own session, output to STATE/NODE.log, PID in STATE/NODE.pid. Returns the PID.
    pub fn start_daemon(&self, exe: &Path, node: Member) -> Result<u32, Error> {
        if !node.is_node() {
            return Err(lab_err(format!("{node} is not a cluster node; only a and b run pbxha")));
        }
        let files = NodeFiles::new(&self.state_dir, node);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&files.log)
            .map_err(|e| Error::io(format!("opening {}", files.log.display()), e))?;
        let log_err = log.try_clone().map_err(|e| Error::io(format!("opening {}", files.log.display()), e))?;
        let mut cmd = std::process::Command::new("ip");
        // The Asterisk double, when the lab has one, answers for `asterisk` and `systemctl`.
        let double = files.asterisk_double.join("bin");
        if double.is_dir() {
            let path = std::env::var_os("PATH").unwrap_or_default();
            let paths = std::iter::once(double).chain(std::env::split_paths(&path));
            let joined =
                std::env::join_paths(paths).map_err(|e| lab_err(format!("PATH for {}'s daemon: {e}", node.name())))?;
            cmd.env("PATH", joined);
        }
        cmd.args(["netns", "exec", &self.names.ns(node)])
            .arg(exe)
            .args(["run", "--config"])
            .arg(&files.config)
            .args(["--node", node.name()])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        // SAFETY: setsid(2) is async-signal-safe and touches no memory of the parent. A
        // session of its own keeps the daemon alive when the terminal that ran `up` closes.
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
        let child =
            cmd.spawn().map_err(|e| Error::io(format!("starting {} in {}", exe.display(), self.names.ns(node)), e))?;
        let pid = child.id();
        write_file(&files.pid, format!("{pid}\n").as_bytes(), 0o644)?;
        Ok(pid)
    }

    /// Removes the lab: every process in its namespaces and every recorded process still
    /// running our command line, the namespaces, the state directory. Idempotent. Returns
    /// only once those processes are gone from the process table, so a `lab up` right after
    /// never meets one; a process that survives SIGKILL keeps the namespaces (and the PID
    /// files naming it) in place and is reported.
    pub async fn down(&self) -> Result<(), Error> {
        let present = self.present_namespaces().await?;
        let mut signalled = Vec::new();
        // A daemon that is stopping may still start a process (the next resource, a hook)
        // after the PIDs were listed: list again until a round finds none.
        for _ in 0..DOWN_ROUNDS {
            let pids = self.lab_pids(&present).await?;
            if pids.is_empty() {
                break;
            }
            signalled.extend_from_slice(&pids);
            let survivors = terminate(&pids, TERM_GRACE).await;
            if !survivors.is_empty() {
                return Err(lab_err(format!(
                    "process(es) {survivors:?} still run after SIGKILL; namespaces and {} kept",
                    self.state_dir.display()
                )));
            }
        }
        let left = self.lab_pids(&present).await?;
        if !left.is_empty() {
            return Err(lab_err(format!(
                "process(es) {left:?} kept appearing in the lab's namespaces through {DOWN_ROUNDS} rounds of SIGTERM/SIGKILL; namespaces kept"
            )));
        }
        wait_reaped(&signalled, REAP_WAIT).await;
        for ns in &present {
            self.run(vec!["ip".into(), "netns".into(), "del".into(), ns.clone()]).await?;
        }
        self.detach_disks().await?;
        self.remove_state_dir()
    }

    /// The live processes of the lab: in its namespaces, or recorded in its PID files.
    async fn lab_pids(&self, namespaces: &[String]) -> Result<Vec<i32>, Error> {
        let mut pids = Vec::new();
        for ns in namespaces {
            pids.extend(self.namespace_pids(ns).await?);
        }
        pids.extend(self.recorded_pids());
        pids.retain(|p| alive(*p));
        pids.sort_unstable();
        pids.dedup();
        Ok(pids)
    }

    async fn namespace_pids(&self, ns: &str) -> Result<Vec<i32>, Error> {
        let out = self.run(vec!["ip".into(), "netns".into(), "pids".into(), ns.into()]).await?;
        Ok(plan::parse_pids(&out.stdout))
    }

    /// PIDs from STATE/*.pid whose process still runs a command line naming the state
    /// directory, so a reused PID of an unrelated process is never signalled.
    fn recorded_pids(&self) -> Vec<i32> {
        let marker = self.state_dir.to_string_lossy().into_owned();
        let Ok(entries) = std::fs::read_dir(&self.state_dir) else {
            return Vec::new();
        };
        entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "pid"))
            .filter_map(|p| std::fs::read_to_string(p).ok()?.trim().parse::<i32>().ok())
            .filter(|pid| *pid > 1)
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .map(|c| String::from_utf8_lossy(&c).split('\0').any(|arg| arg.contains(&marker)))
                    .unwrap_or(false)
            })
            .collect()
    }

    fn remove_state_dir(&self) -> Result<(), Error> {
        let dir = &self.state_dir;
        let Ok(mut entries) = std::fs::read_dir(dir) else {
            return Ok(());
        };
        // Only a directory the lab made (its record inside, or empty) is removed: a
        // mistyped --state-dir must never cost someone their files.
        if !dir.join(RECORD_FILE).exists() && entries.next().is_some() {
            return Err(lab_err(format!(
                "{} has no {RECORD_FILE}; not removing a directory the lab did not make",
                dir.display()
            )));
        }
        std::fs::remove_dir_all(dir).map_err(|e| Error::io(format!("removing {}", dir.display()), e))
    }

    /// Namespaces, interfaces, processes and VIP holders.
    pub async fn status(&self) -> Result<LabStatus, Error> {
        let present = self.present_namespaces().await?;
        let mut members = Vec::new();
        for member in Member::ALL {
            let namespace = self.names.ns(member);
            let mut status = MemberStatus {
                member,
                present: present.contains(&namespace),
                namespace,
                interfaces: vec![],
                pids: vec![],
            };
            if status.present {
                let out = self
                    .run(vec![
                        "ip".into(),
                        "-n".into(),
                        status.namespace.clone(),
                        "-j".into(),
                        "addr".into(),
                        "show".into(),
                    ])
                    .await?;
                status.interfaces =
                    plan::parse_ip_addr(&out.stdout).map_err(|e| lab_err(format!("{}: {e}", status.namespace)))?;
                status.pids = self.namespace_pids(&status.namespace).await?;
            }
            members.push(status);
        }
        let vip_holders = members
            .iter()
            .filter(|m| m.member.is_node())
            .filter(|m| m.interfaces.iter().any(|i| i.addresses.iter().any(|a| a.split('/').next() == Some(VIP))))
            .map(|m| m.member)
            .collect();
        Ok(LabStatus {
            prefix: self.names.prefix.clone(),
            state_dir: self.state_dir.clone(),
            switch_present: present.contains(&self.names.switch()),
            members,
            vip_holders,
        })
    }

    /// Runs `argv` inside `member`'s namespace with the terminal's stdio; returns its exit
    /// code (128 + signal when a signal ended it).
    pub async fn exec(&self, member: Member, argv: &[String]) -> Result<i32, Error> {
        if argv.is_empty() {
            return Err(lab_err("exec needs a command to run"));
        }
        let ns = self.names.ns(member);
        let status = tokio::process::Command::new("ip")
            .args(["netns", "exec", &ns])
            .args(argv)
            .status()
            .await
            .map_err(|e| Error::io(format!("running `ip netns exec {ns} {}`", argv.join(" ")), e))?;
        use std::os::unix::process::ExitStatusExt;
        Ok(status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
    }

    /// Crashes `member`: SIGKILL to every process in its namespace, its interfaces down.
    pub async fn kill(&self, member: Member) -> Result<(), Error> {
        let ns = self.names.ns(member);
        // As a power cut leaves nothing running: a child the daemon forked after the listing
        // (a command it runs) is not in it, so list again until a round finds none; `revive`
        // starts the daemon again only in an empty namespace.
        for _ in 0..DOWN_ROUNDS {
            let pids = self.namespace_pids(&ns).await?;
            if pids.is_empty() {
                return self.set_links(member, "down").await;
            }
            terminate(&pids, Duration::ZERO).await;
        }
        let left = self.namespace_pids(&ns).await?;
        if !left.is_empty() {
            return Err(lab_err(format!(
                "process(es) {left:?} kept appearing in {ns} through {DOWN_ROUNDS} rounds of SIGKILL"
            )));
        }
        self.set_links(member, "down").await
    }

    /// Signals `node`'s daemon alone, by the PID `up` or `revive` recorded: SIGSTOP and
    /// SIGCONT freeze and resume it, SIGKILL crashes it while what it started and the
    /// addresses it added stay (unless they die with it). Returns the PID.
    pub fn signal_daemon(&self, node: Member, signal: nix::sys::signal::Signal) -> Result<i32, Error> {
        let pid = self.daemon_pid(node)?;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal)
            .map_err(|e| lab_err(format!("sending {signal} to {node}'s daemon (pid {pid}): {e}")))?;
        Ok(pid)
    }

    /// Kills `node`'s PBX alone (SIGKILL to the daemon's children: the exec service's
    /// process; a PBX that forks workers of its own may leave them), as a crash the daemon
    /// must notice. Returns the PIDs killed.
    pub async fn kill_pbx(&self, node: Member) -> Result<Vec<i32>, Error> {
        let daemon = self.daemon_pid(node)?;
        let children: Vec<i32> = self
            .namespace_pids(&self.names.ns(node))
            .await?
            .into_iter()
            .filter(|pid| parent_of(*pid) == Some(daemon))
            .collect();
        if children.is_empty() {
            return Err(lab_err(format!("{node}'s daemon (pid {daemon}) runs no PBX right now")));
        }
        terminate(&children, Duration::ZERO).await;
        Ok(children)
    }

    /// The PID of `node`'s running daemon, from its PID file; refused when that process is
    /// gone or no longer ours (its command line does not name the state directory).
    fn daemon_pid(&self, node: Member) -> Result<i32, Error> {
        if !node.is_node() {
            return Err(lab_err(format!("{node} is not a cluster node; only a and b run pbxha")));
        }
        let path = NodeFiles::new(&self.state_dir, node).pid;
        let text = std::fs::read_to_string(&path)
            .map_err(|e| Error::io(format!("reading {}; is the lab up?", path.display()), e))?;
        let pid: i32 = text.trim().parse().map_err(|e| lab_err(format!("{}: not a PID ({e})", path.display())))?;
        if !self.recorded_pids().contains(&pid) || !alive(pid) {
            return Err(lab_err(format!("{node}'s daemon (pid {pid} in {}) is not running", path.display())));
        }
        Ok(pid)
    }

    /// Sets how many active calls `node`'s Asterisk double reports.
    pub fn set_calls(&self, node: Member, calls: u32) -> Result<(), Error> {
        let dir = NodeFiles::new(&self.state_dir, node).asterisk_double;
        if !dir.is_dir() {
            return Err(lab_err(format!(
                "{node} has no Asterisk double ({} is missing); bring the lab up with `--asterisk-double`",
                dir.display()
            )));
        }
        let [path, _, _] = plan::asterisk_double_files(&dir);
        write_file(&path, format!("{calls}\n").as_bytes(), 0o644)
    }

    /// Brings `member` back: interfaces up and, for a node of a lab built with daemons, its
    /// daemon started again (its PID is returned).
    pub async fn revive(&self, member: Member) -> Result<Option<u32>, Error> {
        if member.is_node() {
            // As after a reboot: the VIP a killed node held is gone from its interface before
            // the link comes back, or its kernel would answer ARP for it beside the new holder.
            let cmd =
                Cmd::new(["ip", "-n", &self.names.ns(member), "addr", "del", &format!("{VIP}/24"), "dev", "pub0"])
                    .timeout(COMMAND_TIMEOUT);
            // Absent (the node never held it) is fine.
            let _ = self.runner.run(&cmd).await;
        }
        self.set_links(member, "up").await?;
        let record = self.record()?;
        if member.is_node() && record.start_daemons && self.namespace_pids(&self.names.ns(member)).await?.is_empty() {
            return self.start_daemon(&record.exe, member).map(Some);
        }
        Ok(None)
    }

    async fn set_links(&self, member: Member, state: &str) -> Result<(), Error> {
        let ns = self.names.ns(member);
        for port in member.ports() {
            self.run(vec![
                "ip".into(),
                "-n".into(),
                ns.clone(),
                "link".into(),
                "set".into(),
                port.ifname.into(),
                state.into(),
            ])
            .await?;
        }
        Ok(())
    }

    fn iptables(&self, member: Member, args: &[String]) -> Cmd {
        // -w: the xtables lock is shared by every namespace on the machine.
        let mut argv = vec![
            "ip".to_string(),
            "netns".into(),
            "exec".into(),
            self.names.ns(member),
            "iptables".into(),
            "-w".into(),
            "5".into(),
        ];
        argv.extend_from_slice(args);
        Cmd::new(argv).timeout(COMMAND_TIMEOUT)
    }

    /// Cuts `which` links of `member` with iptables DROP in and out. Cumulative and
    /// idempotent: a rule already there is not added twice.
    pub async fn partition(&self, which: Partition, member: Member) -> Result<(), Error> {
        for spec in plan::partition_rules(which, member).map_err(lab_err)? {
            let check = self.iptables(member, &[vec!["-C".to_string()], spec.clone()].concat());
            let present = self.runner.run(&check).await.map_err(|e| lab_err(e.to_string()))?.success();
            if !present {
                let add = self.iptables(member, &[vec!["-A".to_string()], spec].concat());
                self.runner.run_ok(&add).await.map_err(|e| lab_err(e.to_string()))?;
            }
        }
        Ok(())
    }

    /// Removes every partition and brings every interface up.
    pub async fn heal(&self) -> Result<(), Error> {
        let present = self.present_namespaces().await?;
        for member in Member::ALL {
            if !present.contains(&self.names.ns(member)) {
                continue;
            }
            // The lab's namespaces hold no rules but the lab's, so flushing removes exactly those.
            for chain in ["INPUT", "OUTPUT"] {
                let flush = self.iptables(member, &["-F".to_string(), chain.to_string()]);
                self.runner.run_ok(&flush).await.map_err(|e| lab_err(e.to_string()))?;
            }
            self.set_links(member, "up").await?;
        }
        Ok(())
    }
}

fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), Error> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
    // mode() applies only on creation; a leftover file keeps its old mode otherwise.
    f.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(|e| Error::io(format!("setting mode {mode:o} on {}", path.display()), e))?;
    f.write_all(bytes).map_err(|e| Error::io(format!("writing {}", path.display()), e))
}

/// Whether `pid` still runs (a zombie counts as gone: it holds nothing but a table slot).
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state letter follows the parenthesised command name, which may hold spaces.
        Ok(stat) => stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next()) != Some("Z"),
        Err(_) => false,
    }
}

/// The parent PID from /proc/PID/stat (the field after the state letter).
fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// SIGTERM to every PID, SIGKILL to those still there after `grace` (at once when zero),
/// then waits (bounded) for them to go. Returns those still running after that.
async fn terminate(pids: &[i32], grace: Duration) -> Vec<i32> {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let signal_all = |sig: Signal| {
        for pid in pids.iter().filter(|p| alive(**p)) {
            // ESRCH means it is gone already, which is the goal.
            let _ = kill(Pid::from_raw(*pid), sig);
        }
    };
    if !grace.is_zero() {
        signal_all(Signal::SIGTERM);
        wait_until(grace, || !pids.iter().any(|p| alive(*p))).await;
    }
    signal_all(Signal::SIGKILL);
    wait_until(KILL_WAIT, || !pids.iter().any(|p| alive(*p))).await;
    pids.iter().copied().filter(|p| alive(*p)).collect()
}

/// Polls `done` every 50 ms until it holds or `limit` passes.
async fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !done() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits (bounded) until every exited PID has left the process table: reaped here when it
/// is our child (in-process callers such as tests start the daemons themselves), by its
/// parent otherwise. A zombie holds nothing but its PID, so one still there after `limit`
/// is logged, naming its parent, rather than failing `down`.
async fn wait_reaped(pids: &[i32], limit: Duration) {
    use nix::sys::wait::{waitpid, WaitPidFlag};
    use nix::unistd::Pid;
    let in_table = |pid: i32| Path::new(&format!("/proc/{pid}")).exists();
    wait_until(limit, || {
        for pid in pids {
            // ECHILD for a process that is not ours: its parent reaps it.
            let _ = waitpid(Pid::from_raw(*pid), Some(WaitPidFlag::WNOHANG));
        }
        !pids.iter().any(|p| in_table(*p))
    })
    .await;
    for pid in pids.iter().filter(|p| in_table(**p)) {
        let parent = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| s.rsplit_once(')')?.1.split_whitespace().nth(1).map(String::from))
            .unwrap_or_else(|| "?".into());
        tracing::warn!(pid, parent = %parent, "exited, but its parent has not reaped it after {limit:?}");
    }
}
