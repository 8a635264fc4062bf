//! Shared harness for pbxha's end-to-end tests: finding the built `pbxha`, prerequisites that
//! fail under `CI=true` instead of skipping, daemons owned by a kill-on-drop guard, and
//! bounded polling.

pub mod bare;
pub mod lab;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The `pbxha` binary built by `cargo build` (scripts/test-all builds it first).
pub fn pbxha() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let exe = target.join("debug/pbxha");
    assert!(
        exe.exists(),
        "{} is missing: run `cargo build -p pbxha-appliance` first (scripts/test-all does)",
        exe.display()
    );
    exe
}

/// Whether a test may run. Under `CI=true` a missing prerequisite fails the test; elsewhere
/// it is reported and the test returns early.
pub fn require(ok: bool, what: &str) -> bool {
    if ok {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("prerequisite missing under CI=true: {what}");
    }
    eprintln!("prerequisite missing, test not run: {what}");
    false
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

pub fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs `pbxha ARGS...` to completion.
pub fn pbxha_cmd(args: &[&str]) -> Output {
    Command::new(pbxha()).args(args).output().expect("running pbxha")
}

/// `pbxha lab ARGS...` on the lab with this namespace prefix and state directory.
pub fn lab_cmd(prefix: &str, state_dir: &Path, args: &[&str]) -> Output {
    lab_command(prefix, state_dir, args).output().expect("running pbxha lab")
}

/// The `pbxha lab ARGS...` command of [`lab_cmd`], to spawn.
pub fn lab_command(prefix: &str, state_dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(pbxha());
    cmd.arg("lab").args(args).env("PBXHA_LAB_PREFIX", prefix).env("PBXHA_LAB_DIR", state_dir).stdin(Stdio::null());
    cmd
}

/// A process the test started; killed (SIGKILL) and reaped on drop, also when the test fails.
pub struct Guard {
    pub child: Child,
    pub name: String,
}

impl Guard {
    pub fn spawn(name: &str, cmd: &mut Command) -> Guard {
        let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Guard { child, name: name.to_string() }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal by PID.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on a PID we own.
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }

    /// Waits up to `limit` for the process to exit; returns whether it did.
    pub fn wait_exit(&mut self, limit: Duration) -> bool {
        let until = Instant::now() + limit;
        while Instant::now() < until {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `f` every 50 ms until it returns `Some`, panicking with `what` after `limit`.
pub fn wait_for<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let until = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < until, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `pbxha status --json` for a config, or `None` while the daemon is not answering.
pub fn status_json(config: &Path) -> Option<serde_json::Value> {
    let out = Command::new(pbxha()).arg("--config").arg(config).args(["status", "--json"]).output().ok()?;
    if !out.status.success() {
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

/// The PID of the daemon `pbxha install` says it started itself (systemd not PID 1).
pub fn started_daemon(said: &str) -> u32 {
    said.split("started `pbxha run` itself (pid ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no daemon pid in:\n{said}"))
}

/// Whether a process with this PID exists (and is not a zombie).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.rsplit(')').next().is_some_and(|rest| !rest.trim_start().starts_with('Z')))
        .unwrap_or(false)
}

/// A UDP port free on every local address now, for one loopback pair's heartbeats: a fixed
/// port would meet another test, or another run of the suite on the same machine, using it.
pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("binding UDP 0.0.0.0:0 to find a free port")
}

/// Writes a two-node loopback cluster into `dir`: a 0600 key file and `a.toml`/`b.toml`
/// with nodes `a` (127.0.0.1) and `b` (127.0.0.2) on one link at UDP `port`, a quick
/// heartbeat (100 ms, dead after 600 ms) and state files in `dir`. `extra(node)` is appended
/// to each node's config (resources, `[mail]`, checks...). Returns the config paths.
pub fn write_loopback_pair(dir: &Path, cluster: &str, port: u16, extra: impl Fn(&str) -> String) -> [PathBuf; 2] {
    use std::os::unix::fs::PermissionsExt;
    let key = dir.join("authkey");
    std::fs::write(&key, "0123456789abcdef0123456789abcdef\n").expect("writing the key file");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod 600 the key file");
    let d = dir.display();
    ["a", "b"].map(|node| {
        let text = format!(
            r#"
[cluster]
name = "{cluster}"
id = 42
auth-key-file = "{d}/authkey"
[heartbeat]
interval = 100
deadtime = 600
warntime = 300
initdead = 1500
port = {port}
{nodes}
[[link]]
name = "lo"
[link.addresses]
a = "127.0.0.1/8"
b = "127.0.0.2/8"
[paths]
state-db = "{d}/{node}.db"
control-socket = "{d}/{node}.sock"
{}
"#,
            extra(node),
            nodes = pbxha_lab::plan::PAIR_NODES,
        );
        let path = dir.join(format!("{node}.toml"));
        std::fs::write(&path, text).expect("writing a node config");
        path
    })
}

/// Starts `pbxha run --node NODE` on `config`, its log (stderr) written to `log`.
pub fn run_daemon(config: &Path, node: &str, log: &Path) -> Guard {
    let log = std::fs::File::create(log).unwrap_or_else(|e| panic!("creating {}: {e}", log.display()));
    Guard::spawn(
        node,
        Command::new(pbxha())
            .arg("--config")
            .arg(config)
            .args(["run", "--node", node])
            .stdout(Stdio::null())
            .stderr(log),
    )
}

/// How many "late heartbeat" warnings (a gap over warntime) a daemon's log holds.
pub fn late_heartbeats(log: &Path) -> usize {
    std::fs::read_to_string(log).unwrap_or_default().matches("late heartbeat").count()
}

/// A group member that is a plain long-lived process, for configs that need one resource.
pub const SLEEPING_WORKER: &str = "[[resource]]\nname = \"worker\"\nkind = \"service\"\nexec = [\"sleep\", \"600\"]\n";

/// Shared by the loopback and lab tests of the `[http]` endpoint.
pub mod web;
