//! The `service` resource kind: a systemd unit ([`UnitService`]), a set of start/stop/status
//! commands ([`CommandService`]), or a foreground process that pbxha starts and owns
//! ([`ExecService`]).

use std::collections::{BTreeMap, VecDeque};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use pbxha_conf::Reader;
use pbxha_runner::{Cmd, Runner};
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio::task::JoinHandle;

use super::engine::Timeouts;
use super::{Kind, Parts, Resource, ResourceState};
use crate::Error;

/// How a `service` resource is driven: exactly one of these.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ServiceConfig {
    /// A systemd unit: `systemctl start|stop|is-active UNIT`.
    Unit(String),
    /// Separate argvs for start and stop, and optionally status (exit 0 = running).
    Commands { start: Vec<String>, stop: Vec<String>, status: Option<Vec<String>> },
    /// A foreground process that pbxha itself starts, watches and kills (with its process
    /// group) on stop.
    Exec { argv: Vec<String>, env: BTreeMap<String, String> },
}

impl Kind for ServiceConfig {
    fn read(s: &mut Reader) -> Option<Self> {
        let unit = s.opt_string("unit");
        let exec = s.opt_argv("exec");
        let env = s.opt_table("env").map(|mut e| e.strings()).unwrap_or_default();
        let start = s.opt_argv("start");
        let stop = s.opt_argv("stop");
        let status = s.opt_argv("status");
        match (unit, exec, start, stop) {
            (Some(unit), None, None, None) => Some(ServiceConfig::Unit(unit)),
            (None, Some(argv), None, None) => Some(ServiceConfig::Exec { argv, env }),
            (None, None, Some(start), Some(stop)) => Some(ServiceConfig::Commands { start, stop, status }),
            (None, None, Some(_), None) | (None, None, None, Some(_)) => s.problem(
                "start",
                "a service driven by commands needs both `start` and `stop`".into(),
                Some("add the missing argv, e.g. stop = [\"/usr/sbin/asterisk\", \"-rx\", \"core stop now\"]"),
            ),
            _ => s.problem(
                "kind",
                "a service needs exactly one of `unit`, `exec`, or `start`+`stop`".into(),
                Some("unit = \"asterisk\" runs it through systemctl"),
            ),
        }
    }

    fn describe(&self) -> String {
        match self {
            ServiceConfig::Unit(u) => format!("systemd unit {u}"),
            ServiceConfig::Exec { argv, .. } => format!("runs {}", argv.join(" ")),
            ServiceConfig::Commands { start, .. } => format!("start: {}", start.join(" ")),
        }
    }

    fn outlives_daemon(&self) -> bool {
        !matches!(self, ServiceConfig::Exec { .. })
    }

    fn build(&self, name: &str, parts: &Parts) -> Result<Arc<dyn Resource>, Error> {
        build(name, self, parts.timeouts, parts.runner.clone())
    }
}

/// Builds a `service` resource named `name` from its config. Commands get the executor's
/// timeout for their action, so the runner kills a hung command's whole process group.
pub fn build(
    name: &str,
    config: &ServiceConfig,
    timeouts: Timeouts,
    runner: Arc<dyn Runner>,
) -> Result<Arc<dyn Resource>, Error> {
    let empty =
        |key: &str| Error::Resource { resource: name.to_string(), message: format!("`{key}` is an empty argv") };
    Ok(match config {
        ServiceConfig::Unit(unit) => {
            Arc::new(UnitService { name: name.to_string(), unit: unit.clone(), timeouts, runner })
        }
        ServiceConfig::Commands { start, stop, status } => {
            for (key, argv) in [("start", Some(start)), ("stop", Some(stop)), ("status", status.as_ref())] {
                if argv.is_some_and(Vec::is_empty) {
                    return Err(empty(key));
                }
            }
            Arc::new(CommandService {
                name: name.to_string(),
                start: start.clone(),
                stop: stop.clone(),
                status: status.clone(),
                timeouts,
                runner,
                started: AtomicBool::new(false),
            })
        }
        ServiceConfig::Exec { argv, env } => {
            if argv.is_empty() {
                return Err(empty("exec"));
            }
            Arc::new(ExecService::new(name, argv.clone(), env.clone(), exec_grace(timeouts.stop)))
        }
    })
}

/// SIGTERM gets three quarters of the stop timeout; the rest is left for SIGKILL and reaping,
/// so the executor's stop timeout does not cut the escalation short.
fn exec_grace(stop_timeout: Duration) -> Duration {
    stop_timeout * 3 / 4
}

fn command_error(resource: &str, source: pbxha_runner::RunError) -> Error {
    Error::Command { resource: resource.to_string(), source }
}

fn argv_cmd(argv: &[String], timeout: Duration) -> Cmd {
    Cmd::new(argv.iter().cloned()).timeout(timeout)
}

/// A systemd unit driven with `systemctl`.
pub struct UnitService {
    name: String,
    unit: String,
    timeouts: Timeouts,
    runner: Arc<dyn Runner>,
}

impl UnitService {
    fn systemctl(&self, verb: &str, timeout: Duration) -> Cmd {
        Cmd::new(["systemctl", verb, self.unit.as_str()]).timeout(timeout)
    }
}

#[async_trait]
impl Resource for UnitService {
    fn name(&self) -> &str {
        &self.name
    }

    async fn start(&self) -> Result<(), Error> {
        let cmd = self.systemctl("start", self.timeouts.start);
        self.runner.run_ok(&cmd).await.map(drop).map_err(|e| command_error(&self.name, e))
    }

    async fn stop(&self) -> Result<(), Error> {
        let cmd = self.systemctl("stop", self.timeouts.stop);
        self.runner.run_ok(&cmd).await.map(drop).map_err(|e| command_error(&self.name, e))
    }

    async fn monitor(&self) -> Result<ResourceState, Error> {
        let cmd = self.systemctl("is-active", self.timeouts.monitor);
        let out = self.runner.run(&cmd).await.map_err(|e| command_error(&self.name, e))?;
        is_active_state(out.code).ok_or_else(|| Error::Resource {
            resource: self.name.clone(),
            message: format!(
                "`{cmd}` exited with status {}: {}",
                out.code,
                format!("{} {}", out.stdout.trim(), out.stderr.trim()).trim()
            ),
        })
    }
}

/// `systemctl is-active` exit codes: 0 when active, 3 (LSB "program is not running") for
/// inactive, failed, activating and deactivating units. Anything else (4 for a unit systemd
/// cannot find, 1 when systemctl cannot talk to systemd) says nothing about the unit.
fn is_active_state(code: i32) -> Option<ResourceState> {
    match code {
        0 => Some(ResourceState::Running),
        3 => Some(ResourceState::Stopped),
        _ => None,
    }
}

/// A service driven by separate argvs (never a shell string). Without a status argv the
/// service is assumed to keep running after a successful start until it is stopped: there is
/// nothing to ask, so its monitor can only repeat what pbxha itself did.
pub struct CommandService {
    name: String,
    start: Vec<String>,
    stop: Vec<String>,
    status: Option<Vec<String>>,
    timeouts: Timeouts,
    runner: Arc<dyn Runner>,
    /// The last start succeeded and no stop followed; the answer when there is no status argv.
    started: AtomicBool,
}

#[async_trait]
impl Resource for CommandService {
    fn name(&self) -> &str {
        &self.name
    }

    async fn start(&self) -> Result<(), Error> {
        let cmd = argv_cmd(&self.start, self.timeouts.start);
        self.runner.run_ok(&cmd).await.map_err(|e| command_error(&self.name, e))?;
        self.started.store(true, Ordering::SeqCst);
        Ok(())
    }

    async fn stop(&self) -> Result<(), Error> {
        let cmd = argv_cmd(&self.stop, self.timeouts.stop);
        self.runner.run_ok(&cmd).await.map_err(|e| command_error(&self.name, e))?;
        self.started.store(false, Ordering::SeqCst);
        Ok(())
    }

    async fn monitor(&self) -> Result<ResourceState, Error> {
        let Some(status) = &self.status else {
            return Ok(if self.started.load(Ordering::SeqCst) {
                ResourceState::Running
            } else {
                ResourceState::Stopped
            });
        };
        let out = self
            .runner
            .run(&argv_cmd(status, self.timeouts.monitor))
            .await
            .map_err(|e| command_error(&self.name, e))?;
        Ok(if out.success() { ResourceState::Running } else { ResourceState::Stopped })
    }
}

/// How long a freshly spawned process must stay alive for its start to count: long enough
/// to catch a bad flag or a missing library, short enough not to slow a failover.
const SETTLE: Duration = Duration::from_millis(100);
/// Lines of stderr kept to explain a process that died at start.
const TAIL_LINES: usize = 10;
/// Longer output lines are logged in pieces, so a process cannot make pbxha buffer without end.
const MAX_LINE: u64 = 4096;
/// How long to wait for the last stderr lines of a process that died at start (a forked
/// grandchild may hold the pipe open forever).
const TAIL_WAIT: Duration = Duration::from_secs(1);

/// A foreground process that pbxha starts and owns, with its whole process group. Its output
/// goes to the log (tracing, with the resource name and stream) line by line.
pub struct ExecService {
    name: String,
    argv: Vec<String>,
    /// Added to the daemon's own environment.
    env: BTreeMap<String, String>,
    /// Between SIGTERM to the group and SIGKILL.
    grace: Duration,
    /// The live process; a tokio mutex because stop holds it while waiting for the exit.
    child: tokio::sync::Mutex<Option<Owned>>,
}

/// A spawned process group. Dropping it kills the group (kill-on-drop guard), so neither an
/// executor timeout nor a dropped resource can leave the process behind.
struct Owned {
    child: tokio::process::Child,
    pgid: libc::pid_t,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
    stderr_reader: Option<JoinHandle<()>>,
}

impl Owned {
    fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill(2) on a negative pid signals the group we created; no memory is touched.
        unsafe {
            libc::kill(-self.pgid, signal);
        }
    }

    fn tail(&self) -> String {
        self.stderr_tail.lock().map(|t| t.iter().cloned().collect::<Vec<_>>().join(" | ")).unwrap_or_default()
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        // The group id stays reserved while any member lives, so this cannot hit a stranger;
        // tokio reaps the dropped child in the background.
        self.signal(libc::SIGKILL);
    }
}

impl ExecService {
    /// A process to run from `argv` with `env` added; `grace` is how long SIGTERM gets before
    /// SIGKILL on stop.
    pub fn new(name: &str, argv: Vec<String>, env: BTreeMap<String, String>, grace: Duration) -> Self {
        ExecService { name: name.to_string(), argv, env, grace, child: tokio::sync::Mutex::new(None) }
    }

    fn program(&self) -> &str {
        self.argv.first().map(String::as_str).unwrap_or_default()
    }

    fn wait_error(&self, e: std::io::Error) -> Error {
        Error::io(format!("resource `{}`: waiting for `{}`", self.name, self.program()), e)
    }

    fn spawn(&self) -> Result<Owned, Error> {
        let mut command = tokio::process::Command::new(self.program());
        command
            .args(self.argv.get(1..).unwrap_or_default())
            .envs(&self.env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Own group, so stop and the drop guard reach everything it forks.
            .process_group(0);
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: the closure only makes async-signal-safe system calls and does not allocate.
        unsafe {
            command.pre_exec(move || {
                // Dies with the daemon even if it is SIGKILLed. PDEATHSIG follows the spawning
                // thread; tokio's worker threads live as long as the runtime, i.e. the daemon.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The daemon died between fork and prctl: nobody would ever kill us.
                if libc::getppid() != parent {
                    return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
                }
                Ok(())
            });
        }
        let mut child = command.spawn().map_err(|e| Error::Resource {
            resource: self.name.clone(),
            message: format!("cannot start `{}`: {e}", self.argv.join(" ")),
        })?;
        // A child that has not been waited for always has a pid; without one, signalling
        // "group 0" would hit pbxha's own group, so refuse rather than guess.
        let Some(pgid) = child.id().map(|pid| pid as libc::pid_t).filter(|pid| *pid > 0) else {
            return Err(Error::Resource {
                resource: self.name.clone(),
                message: format!("`{}` started without a process id", self.program()),
            });
        };
        let stderr_tail = Arc::new(Mutex::new(VecDeque::new()));
        if let Some(stdout) = child.stdout.take() {
            tokio::spawn(forward(self.name.clone(), "stdout", stdout, None));
        }
        let stderr_reader = child
            .stderr
            .take()
            .map(|stderr| tokio::spawn(forward(self.name.clone(), "stderr", stderr, Some(stderr_tail.clone()))));
        tracing::info!(resource = %self.name, pid = pgid, argv = %self.argv.join(" "), "process started");
        Ok(Owned { child, pgid, stderr_tail, stderr_reader })
    }
}

/// Logs a child's output line by line; keeps the last lines in `tail` when given.
async fn forward(
    resource: String,
    stream: &'static str,
    pipe: impl AsyncRead + Unpin,
    tail: Option<Arc<Mutex<VecDeque<String>>>>,
) {
    let mut reader = BufReader::new(pipe);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match (&mut reader).take(MAX_LINE).read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let line = String::from_utf8_lossy(&buf).trim_end().to_string();
        tracing::info!(resource = %resource, stream, "{line}");
        if let Some(tail) = &tail {
            if let Ok(mut tail) = tail.lock() {
                if tail.len() == TAIL_LINES {
                    tail.pop_front();
                }
                tail.push_back(line);
            }
        }
    }
}

#[async_trait]
impl Resource for ExecService {
    fn name(&self) -> &str {
        &self.name
    }

    async fn start(&self) -> Result<(), Error> {
        let mut slot = self.child.lock().await;
        if let Some(owned) = slot.as_mut() {
            if matches!(owned.child.try_wait(), Ok(None)) {
                return Ok(());
            }
        }
        // A previous process that exited: drop it (and whatever it left in its group).
        *slot = None;
        let mut owned = self.spawn()?;
        tokio::time::sleep(SETTLE).await;
        let status = owned.child.try_wait().map_err(|e| self.wait_error(e))?;
        if let Some(status) = status {
            if let Some(reader) = owned.stderr_reader.take() {
                // A timeout here only loses the last lines of the message.
                let _ = tokio::time::timeout(TAIL_WAIT, reader).await;
            }
            return Err(Error::Resource {
                resource: self.name.clone(),
                message: format!("`{}` exited right after start ({status}): {}", self.argv.join(" "), owned.tail()),
            });
        }
        *slot = Some(owned);
        Ok(())
    }

    async fn stop(&self) -> Result<(), Error> {
        let Some(mut owned) = self.child.lock().await.take() else {
            return Ok(());
        };
        owned.signal(libc::SIGTERM);
        // A stopped (hung, SIGSTOPped) process only sees SIGTERM once it runs again; systemd
        // sends SIGCONT after SIGTERM for the same reason.
        owned.signal(libc::SIGCONT);
        match tokio::time::timeout(self.grace, owned.child.wait()).await {
            Ok(Ok(status)) => tracing::info!(resource = %self.name, %status, "process stopped"),
            Ok(Err(e)) => {
                tracing::warn!(resource = %self.name, error = %e, "waiting for the process failed")
            }
            Err(_) => {
                tracing::warn!(resource = %self.name, grace = ?self.grace, "process ignored SIGTERM; killing its group")
            }
        }
        // Also reaches members of the group that outlived the main process.
        owned.signal(libc::SIGKILL);
        owned.child.wait().await.map_err(|e| self.wait_error(e))?;
        Ok(())
    }

    async fn monitor(&self) -> Result<ResourceState, Error> {
        let mut slot = self.child.lock().await;
        let Some(owned) = slot.as_mut() else {
            return Ok(ResourceState::Stopped);
        };
        match owned.child.try_wait() {
            Ok(None) => Ok(ResourceState::Running),
            Ok(Some(status)) => {
                tracing::warn!(resource = %self.name, %status, stderr = %owned.tail(), "process exited");
                *slot = None;
                Ok(ResourceState::Stopped)
            }
            Err(e) => Err(self.wait_error(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Instant;

    use pbxha_runner::{Output, ScriptedRunner};

    use super::*;

    const TIMEOUTS: Timeouts = Timeouts {
        start: Duration::from_secs(90),
        stop: Duration::from_secs(60),
        monitor: Duration::from_secs(5),
        monitor_interval: Duration::from_secs(10),
    };

    fn unit(runner: &Arc<ScriptedRunner>) -> Arc<dyn Resource> {
        build("pbx", &ServiceConfig::Unit("asterisk.service".into()), TIMEOUTS, runner.clone()).unwrap()
    }

    /// What `systemctl is-active` prints, with its exit code, as systemd 252 does.
    fn is_active(stdout: &str, code: i32) -> Output {
        Output { code, stdout: format!("{stdout}\n"), stderr: String::new() }
    }

    #[tokio::test]
    async fn unit_start_stop_go_through_systemctl_with_the_action_timeouts() {
        let runner = Arc::new(ScriptedRunner::new());
        runner.on(["systemctl"], Output::ok(""));
        let pbx = unit(&runner);
        pbx.start().await.unwrap();
        pbx.stop().await.unwrap();
        assert_eq!(runner.argvs(), ["systemctl start asterisk.service", "systemctl stop asterisk.service"]);
        let timeouts: Vec<Duration> = runner.calls().iter().map(|c| c.timeout).collect();
        assert_eq!(timeouts, [TIMEOUTS.start, TIMEOUTS.stop]);
    }

    #[tokio::test]
    async fn unit_monitor_reads_is_active() {
        let runner = Arc::new(ScriptedRunner::new());
        let pbx = unit(&runner);
        for (stdout, code, state) in [
            ("active", 0, ResourceState::Running),
            ("inactive", 3, ResourceState::Stopped),
            ("failed", 3, ResourceState::Stopped),
            ("activating", 3, ResourceState::Stopped),
        ] {
            runner.on(["systemctl", "is-active", "asterisk.service"], is_active(stdout, code));
            assert_eq!(pbx.monitor().await.unwrap(), state, "{stdout}");
        }
    }

    #[tokio::test]
    async fn unit_monitor_errors_on_other_exit_codes() {
        let runner = Arc::new(ScriptedRunner::new());
        runner.on(["systemctl", "is-active"], is_active("unknown", 4));
        let err = unit(&runner).monitor().await.unwrap_err().to_string();
        assert!(err.contains("systemctl is-active asterisk.service") && err.contains("status 4: unknown"), "{err}");

        runner.on(
            ["systemctl", "is-active"],
            Output::failed(1, "System has not been booted with systemd as init system (PID 1). Can't operate.\n"),
        );
        let err = unit(&runner).monitor().await.unwrap_err().to_string();
        assert!(err.contains("not been booted with systemd"), "{err}");
    }

    #[tokio::test]
    async fn unit_start_failure_carries_systemctl_message() {
        let runner = Arc::new(ScriptedRunner::new());
        runner.on(
            ["systemctl", "start"],
            Output::failed(
                1,
                "Job for asterisk.service failed because the control process exited with error code.\n\
                 See \"systemctl status asterisk.service\" and \"journalctl -xeu asterisk.service\" for details.\n",
            ),
        );
        let err = unit(&runner).start().await.unwrap_err().to_string();
        assert!(err.starts_with("resource `pbx`: `systemctl start asterisk.service` exited with status 1"), "{err}");
        assert!(err.contains("control process exited"), "{err}");
    }

    fn commands(status: Option<Vec<String>>) -> ServiceConfig {
        let argv = |s: &str| s.split(' ').map(String::from).collect();
        ServiceConfig::Commands {
            start: argv("/usr/sbin/httpd -k start"),
            stop: argv("/usr/sbin/httpd -k stop"),
            status,
        }
    }

    #[tokio::test]
    async fn commands_run_their_argvs_and_status_exit_decides() {
        let runner = Arc::new(ScriptedRunner::new());
        runner.on(["/usr/sbin/httpd"], Output::ok(""));
        runner.on_seq(["pidof"], vec![Output::ok("4242\n"), Output::failed(1, "")]);
        let status = Some(vec!["pidof".to_string(), "httpd".to_string()]);
        let web = build("web", &commands(status), TIMEOUTS, runner.clone()).unwrap();
        web.start().await.unwrap();
        assert_eq!(web.monitor().await.unwrap(), ResourceState::Running);
        assert_eq!(web.monitor().await.unwrap(), ResourceState::Stopped);
        web.stop().await.unwrap();
        assert_eq!(
            runner.argvs(),
            ["/usr/sbin/httpd -k start", "pidof httpd", "pidof httpd", "/usr/sbin/httpd -k stop"]
        );
        assert_eq!(runner.calls()[1].timeout, TIMEOUTS.monitor);
    }

    #[tokio::test]
    async fn commands_without_status_trust_their_own_start_and_stop() {
        let runner = Arc::new(ScriptedRunner::new());
        runner.on_seq(["/usr/sbin/httpd", "-k", "start"], vec![Output::failed(1, "httpd: bad config"), Output::ok("")]);
        runner.on(["/usr/sbin/httpd", "-k", "stop"], Output::ok(""));
        let web = build("web", &commands(None), TIMEOUTS, runner.clone()).unwrap();
        assert_eq!(web.monitor().await.unwrap(), ResourceState::Stopped);
        let err = web.start().await.unwrap_err().to_string();
        assert!(err.contains("httpd: bad config"), "{err}");
        assert_eq!(web.monitor().await.unwrap(), ResourceState::Stopped);
        web.start().await.unwrap();
        assert_eq!(web.monitor().await.unwrap(), ResourceState::Running);
        web.stop().await.unwrap();
        assert_eq!(web.monitor().await.unwrap(), ResourceState::Stopped);
    }

    #[test]
    fn empty_argvs_are_refused_naming_the_key() {
        let runner: Arc<dyn Runner> = Arc::new(ScriptedRunner::new());
        let config =
            ServiceConfig::Commands { start: vec!["true".into()], stop: vec!["true".into()], status: Some(vec![]) };
        let err = build("web", &config, TIMEOUTS, runner.clone()).err().unwrap().to_string();
        assert!(err.contains("web") && err.contains("`status`"), "{err}");
        let config = ServiceConfig::Exec { argv: vec![], env: BTreeMap::new() };
        assert!(build("web", &config, TIMEOUTS, runner).err().unwrap().to_string().contains("`exec`"));
    }

    fn exec(script: &str, grace: Duration) -> ExecService {
        let argv = ["sh", "-c", script].map(String::from).to_vec();
        ExecService::new(
            "daemon",
            argv,
            BTreeMap::from([("PBXHA_TEST_GREETING".to_string(), "hello".to_string())]),
            grace,
        )
    }

    /// A process that exists and is not a zombie.
    fn alive(pid: libc::pid_t) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|stat| stat.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z')))
            .unwrap_or(false)
    }

    async fn pgid(service: &ExecService) -> libc::pid_t {
        service.child.lock().await.as_ref().map(|o| o.pgid).unwrap()
    }

    /// Polls (bounded) until `pid` is gone.
    async fn gone(pid: libc::pid_t) -> bool {
        for _ in 0..100 {
            if !alive(pid) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    async fn read_pid(path: &Path) -> libc::pid_t {
        for _ in 0..100 {
            if let Some(pid) = std::fs::read_to_string(path).ok().and_then(|s| s.trim().parse().ok()) {
                return pid;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{} never got a pid", path.display());
    }

    #[tokio::test]
    async fn exec_start_monitor_stop_with_env() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("greeting");
        let service =
            exec(&format!("echo \"$PBXHA_TEST_GREETING\" > {}; exec sleep 30", out.display()), Duration::from_secs(5));
        service.start().await.unwrap();
        let pid = pgid(&service).await;
        assert!(alive(pid));
        assert_eq!(service.monitor().await.unwrap(), ResourceState::Running);
        service.start().await.unwrap();
        assert_eq!(pgid(&service).await, pid, "starting a running process is a no-op");
        for _ in 0..100 {
            if std::fs::read_to_string(&out).is_ok_and(|s| s == "hello\n") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "hello\n");
        service.stop().await.unwrap();
        assert!(!alive(pid), "stop reaps the process");
        assert_eq!(service.monitor().await.unwrap(), ResourceState::Stopped);
    }

    #[tokio::test]
    async fn exec_process_that_dies_is_seen_stopped() {
        let service = exec("sleep 0.5; exit 2", Duration::from_secs(5));
        service.start().await.unwrap();
        let mut state = ResourceState::Running;
        for _ in 0..100 {
            state = service.monitor().await.unwrap();
            if state == ResourceState::Stopped {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(state, ResourceState::Stopped);
        // And it can be started again.
        service.start().await.unwrap();
        assert_eq!(service.monitor().await.unwrap(), ResourceState::Running);
        service.stop().await.unwrap();
    }

    #[tokio::test]
    async fn exec_stop_reaches_a_stopped_process_without_waiting_out_the_grace() {
        let service = exec("exec sleep 30", Duration::from_secs(20));
        service.start().await.unwrap();
        let leader = pgid(&service).await;
        // A hung PBX: the whole group stopped.
        // SAFETY: kill(2) on the group this test started.
        unsafe {
            libc::kill(-(leader as i32), libc::SIGSTOP);
        }
        let began = Instant::now();
        service.stop().await.unwrap();
        assert!(began.elapsed() < Duration::from_secs(10), "stop waited {:?}", began.elapsed());
        assert!(!alive(leader));
    }

    #[tokio::test]
    async fn exec_kills_what_ignores_sigterm_after_the_grace() {
        let dir = tempfile::tempdir().unwrap();
        let bg = dir.path().join("bg.pid");
        let grace = Duration::from_millis(500);
        // The background child is in the same group and ignores SIGTERM too.
        let service = exec(&format!("trap '' TERM; sleep 30 & echo $! > {}; wait", bg.display()), grace);
        service.start().await.unwrap();
        let leader = pgid(&service).await;
        let child = read_pid(&bg).await;
        let began = Instant::now();
        service.stop().await.unwrap();
        assert!(began.elapsed() >= grace, "SIGKILL came before the grace ran out");
        assert!(!alive(leader));
        assert!(gone(child).await, "the group's other member survived");
        service.stop().await.unwrap();
    }

    #[tokio::test]
    async fn exec_stop_is_idempotent() {
        let service = exec("exec sleep 30", Duration::from_secs(5));
        service.stop().await.unwrap();
        service.start().await.unwrap();
        service.stop().await.unwrap();
        service.stop().await.unwrap();
    }

    #[tokio::test]
    async fn exec_missing_binary_is_named() {
        let service = ExecService::new(
            "daemon",
            vec!["/nonexistent/pbxha-daemon".into(), "-f".into()],
            BTreeMap::new(),
            Duration::from_secs(1),
        );
        let err = service.start().await.unwrap_err().to_string();
        assert!(err.contains("/nonexistent/pbxha-daemon"), "{err}");
    }

    #[tokio::test]
    async fn exec_that_exits_at_once_fails_with_its_stderr() {
        let service = exec("echo 'cannot bind 127.0.0.1:5060' >&2; exit 1", Duration::from_secs(1));
        let err = service.start().await.unwrap_err().to_string();
        assert!(err.contains("exited right after start") && err.contains("exit status: 1"), "{err}");
        assert!(err.contains("cannot bind 127.0.0.1:5060"), "{err}");
        assert_eq!(service.monitor().await.unwrap(), ResourceState::Stopped);
    }

    #[tokio::test]
    async fn dropping_an_exec_service_kills_its_group() {
        let dir = tempfile::tempdir().unwrap();
        let bg = dir.path().join("bg.pid");
        let service = exec(&format!("sleep 30 & echo $! > {}; wait", bg.display()), Duration::from_secs(5));
        service.start().await.unwrap();
        let leader = pgid(&service).await;
        let child = read_pid(&bg).await;
        drop(service);
        assert!(gone(leader).await && gone(child).await, "drop left the group running");
    }
}
