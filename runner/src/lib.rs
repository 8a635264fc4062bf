//! The one seam through which pbxha runs external commands (`ip`, `systemctl`, `drbdadm`,
//! `asterisk -rx`, `fs_cli`, OCF agents, hook scripts...).
//!
//! Parts: [`Cmd`] describes a command as an argv (never a shell string), [`Runner`] is the
//! trait every caller takes, [`SystemRunner`] runs commands for real with a timeout that kills
//! the whole process group, and [`ScriptedRunner`] records every call and answers with outputs
//! captured from the real tools, so the logic around a command is tested without the tool.

use std::collections::VecDeque;
use std::fmt;
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use tokio::io::AsyncWriteExt;

/// A command to run: an argv plus the environment it gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cmd {
    /// argv[0]; looked up in PATH unless it contains a slash.
    pub program: String,
    /// argv[1..].
    pub args: Vec<String>,
    /// Variables added to the environment (after clearing it when `clear_env` is set).
    pub env: Vec<(String, String)>,
    /// Hook scripts and OCF agents get a cleared environment so nothing leaks into them by
    /// accident; everything they need is passed explicitly.
    pub clear_env: bool,
    /// The whole process group is killed when this runs out.
    pub timeout: Duration,
    /// Bytes written to the command's stdin, which is closed afterwards.
    pub stdin: Option<Vec<u8>>,
}

/// The default timeout for commands that do not set one: long enough for `systemctl start`
/// of a slow unit, short enough that a hung tool cannot stall a failover forever.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

impl Cmd {
    /// A command from its argv. Panics only on an empty argv, which is a programming error.
    pub fn new<I, S>(argv: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut argv = argv.into_iter().map(Into::into);
        let program = argv.next().expect("Cmd::new needs at least argv[0]");
        Cmd { program, args: argv.collect(), env: Vec::new(), clear_env: false, timeout: DEFAULT_TIMEOUT, stdin: None }
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    pub fn clear_env(mut self) -> Self {
        self.clear_env = true;
        self
    }

    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(bytes.into());
        self
    }

    /// The whole argv, for matching and for error messages.
    pub fn argv(&self) -> Vec<&str> {
        std::iter::once(self.program.as_str()).chain(self.args.iter().map(String::as_str)).collect()
    }
}

impl fmt::Display for Cmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.argv().join(" "))
    }
}

/// What a finished command left behind.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Output {
    /// The exit code; `128 + signal` when a signal ended it, as a shell reports it.
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// A successful output with the given stdout: the usual scripted answer.
    pub fn ok(stdout: impl Into<String>) -> Self {
        Output { code: 0, stdout: stdout.into(), stderr: String::new() }
    }

    /// A failed output with the given exit code and stderr.
    pub fn failed(code: i32, stderr: impl Into<String>) -> Self {
        Output { code, stdout: String::new(), stderr: stderr.into() }
    }

    pub fn success(&self) -> bool {
        self.code == 0
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot run `{argv}`: {source}")]
    Spawn { argv: String, source: std::io::Error },
    #[error("`{argv}` did not finish within {after:?}; its process group was killed")]
    Timeout { argv: String, after: Duration },
    #[error("`{argv}` exited with status {code}: {stderr}")]
    Failed { argv: String, code: i32, stderr: String },
    #[error("no scripted answer for `{argv}`")]
    Unscripted { argv: String },
}

/// Runs commands. Everything in pbxha that starts a process goes through one of these.
#[async_trait]
pub trait Runner: Send + Sync {
    /// Runs `cmd` to completion. A non-zero exit is an `Ok(Output)`: callers decide what a
    /// status means (OCF agents and `systemctl is-active` use them as answers).
    async fn run(&self, cmd: &Cmd) -> Result<Output, RunError>;

    /// Runs `cmd` and turns a non-zero exit into [`RunError::Failed`].
    async fn run_ok(&self, cmd: &Cmd) -> Result<Output, RunError> {
        let out = self.run(cmd).await?;
        if out.success() {
            Ok(out)
        } else {
            Err(RunError::Failed { argv: cmd.to_string(), code: out.code, stderr: out.stderr.trim().to_string() })
        }
    }
}

/// Runs commands for real.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemRunner;

#[async_trait]
impl Runner for SystemRunner {
    async fn run(&self, cmd: &Cmd) -> Result<Output, RunError> {
        let argv = cmd.to_string();
        let mut command = tokio::process::Command::new(&cmd.program);
        command.args(&cmd.args);
        if cmd.clear_env {
            command.env_clear();
            // A cleared environment still needs a PATH for the script's own commands.
            command.env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
        }
        command
            .envs(cmd.env.iter().map(|(k, v)| (k, v)))
            .stdin(if cmd.stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Own process group, so a timeout kills everything the command forked.
            .process_group(0)
            .kill_on_drop(true);
        tracing::debug!(%argv, "running");
        let mut child = command.spawn().map_err(|source| RunError::Spawn { argv: argv.clone(), source })?;
        // Kills the whole group if this future is dropped before the command ends (a caller's
        // own timeout fired first): kill_on_drop alone reaches only the leader.
        let mut group = GroupGuard(child.id());
        let stdin = match (cmd.stdin.clone(), child.stdin.take()) {
            // Written beside the output reading, inside the timeout: a command that stops
            // reading its stdin while its stdout fills must not hang us for ever.
            (Some(bytes), Some(mut pipe)) => Some(tokio::spawn(async move {
                // A command that exits without reading its stdin is not an error here.
                let _ = pipe.write_all(&bytes).await;
            })),
            _ => None,
        };
        let result = tokio::time::timeout(cmd.timeout, child.wait_with_output()).await;
        if let Some(writer) = stdin {
            writer.abort();
        }
        match result {
            Ok(Ok(out)) => {
                group.0 = None;
                Ok(Output {
                    code: exit_code(out.status),
                    stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                    stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
                })
            }
            Ok(Err(source)) => Err(RunError::Spawn { argv, source }),
            Err(_) => Err(RunError::Timeout { argv, after: cmd.timeout }),
        }
    }
}

/// SIGKILLs a process group we created, on drop, unless disarmed (`.0 = None`).
struct GroupGuard(Option<u32>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.0 {
            kill_group(pgid);
        }
    }
}

fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

/// SIGKILL to a whole process group we created.
fn kill_group(pgid: u32) {
    // SAFETY: kill(2) with a negative pid signals the group; no memory is touched.
    unsafe {
        libc::kill(-(pgid as i32), libc::SIGKILL);
    }
}

/// One scripted answer rule: calls whose argv starts with `prefix` get the next reply.
struct Rule {
    prefix: Vec<String>,
    /// Replies are used in order; the last one repeats.
    replies: VecDeque<Result<Output, String>>,
}

/// Records every command and answers from a script of outputs captured from the real tools.
///
/// Rules match by argv prefix, newest rule first, so a test can override an answer midway.
#[derive(Default)]
pub struct ScriptedRunner {
    rules: Mutex<Vec<Rule>>,
    calls: Mutex<Vec<Cmd>>,
}

impl ScriptedRunner {
    pub fn new() -> Self {
        Self::default()
    }

    /// Answers commands starting with `prefix` with `output` (repeatedly).
    pub fn on<I, S>(&self, prefix: I, output: Output) -> &Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.push(prefix, vec![Ok(output)])
    }

    /// Answers successive matching calls with successive outputs; the last repeats.
    pub fn on_seq<I, S>(&self, prefix: I, outputs: Vec<Output>) -> &Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.push(prefix, outputs.into_iter().map(Ok).collect())
    }

    /// Makes commands starting with `prefix` fail to spawn (as a missing binary would).
    pub fn fail_spawn<I, S>(&self, prefix: I, why: &str) -> &Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.push(prefix, vec![Err(why.to_string())])
    }

    fn push<I, S>(&self, prefix: I, replies: Vec<Result<Output, String>>) -> &Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let prefix = prefix.into_iter().map(Into::into).collect();
        self.rules.lock().expect("runner lock").push(Rule { prefix, replies: replies.into() });
        self
    }

    /// Every command run so far, in order.
    pub fn calls(&self) -> Vec<Cmd> {
        self.calls.lock().expect("runner lock").clone()
    }

    /// Every command run so far as argv strings, for compact assertions.
    pub fn argvs(&self) -> Vec<String> {
        self.calls().iter().map(ToString::to_string).collect()
    }
}

#[async_trait]
impl Runner for ScriptedRunner {
    async fn run(&self, cmd: &Cmd) -> Result<Output, RunError> {
        self.calls.lock().expect("runner lock").push(cmd.clone());
        let argv = cmd.argv();
        let mut rules = self.rules.lock().expect("runner lock");
        let rule = rules
            .iter_mut()
            .rev()
            .find(|r| r.prefix.len() <= argv.len() && r.prefix.iter().zip(&argv).all(|(p, a)| p == a));
        let Some(rule) = rule else {
            return Err(RunError::Unscripted { argv: cmd.to_string() });
        };
        let reply = if rule.replies.len() > 1 { rule.replies.pop_front() } else { rule.replies.front().cloned() };
        match reply {
            Some(Ok(out)) => Ok(out),
            Some(Err(why)) => Err(RunError::Spawn {
                argv: cmd.to_string(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, why),
            }),
            None => Err(RunError::Unscripted { argv: cmd.to_string() }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn system_runner_reports_exit_code_and_output() {
        let out = SystemRunner.run(&Cmd::new(["sh", "-c", "echo hi; echo err >&2; exit 3"])).await.unwrap();
        assert_eq!(out.code, 3);
        assert_eq!(out.stdout, "hi\n");
        assert_eq!(out.stderr, "err\n");
    }

    #[tokio::test]
    async fn system_runner_kills_the_group_on_timeout() {
        let started = std::time::Instant::now();
        let cmd = Cmd::new(["sh", "-c", "sleep 30 & sleep 30"]).timeout(Duration::from_millis(200));
        let err = SystemRunner.run(&cmd).await.unwrap_err();
        assert!(matches!(err, RunError::Timeout { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn dropping_a_running_command_kills_its_whole_group() {
        let dir = std::env::temp_dir().join(format!("pbxha-runner-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pidfile = dir.join("bg.pid");
        let cmd = Cmd::new(["sh", "-c", &format!("sleep 30 & echo $! > {}; wait", pidfile.display())]);
        // The caller's own timeout fires first and drops the run future.
        let _ = tokio::time::timeout(Duration::from_millis(300), SystemRunner.run(&cmd)).await;
        let pid: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
        let mut gone = false;
        for _ in 0..100 {
            // SAFETY: signal 0 only checks that the PID exists.
            let exists = unsafe { libc::kill(pid, 0) } == 0
                && !std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z"));
            if !exists {
                gone = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = std::fs::remove_dir_all(&dir);
        assert!(gone, "the background child {pid} outlived the dropped command");
    }

    #[tokio::test]
    async fn a_command_that_ignores_a_large_stdin_still_times_out() {
        // `sleep` never reads stdin: writing 4 MiB would block for ever outside the timeout.
        let cmd = Cmd::new(["sleep", "30"]).stdin(vec![b'x'; 4 << 20]).timeout(Duration::from_millis(300));
        let began = std::time::Instant::now();
        let err = SystemRunner.run(&cmd).await.unwrap_err();
        assert!(matches!(err, RunError::Timeout { .. }), "{err}");
        assert!(began.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn system_runner_clears_the_environment_when_asked() {
        std::env::set_var("PBXHA_LEAK_TEST", "leaked");
        let cmd = Cmd::new(["sh", "-c", "echo \"${PBXHA_LEAK_TEST:-clean} $PBXHA_X\""]).clear_env().env("PBXHA_X", "x");
        assert_eq!(SystemRunner.run(&cmd).await.unwrap().stdout, "clean x\n");
    }

    #[tokio::test]
    async fn missing_binary_is_a_spawn_error_naming_it() {
        let err = SystemRunner.run(&Cmd::new(["/nonexistent/pbxha-tool"])).await.unwrap_err();
        assert!(err.to_string().contains("/nonexistent/pbxha-tool"), "{err}");
    }

    #[tokio::test]
    async fn scripted_runner_matches_by_prefix_and_records() {
        let r = ScriptedRunner::new();
        r.on(["systemctl", "is-active"], Output::failed(3, "inactive"));
        r.on_seq(["drbdadm"], vec![Output::ok("1"), Output::ok("2")]);
        assert_eq!(r.run(&Cmd::new(["systemctl", "is-active", "x"])).await.unwrap().code, 3);
        assert_eq!(r.run(&Cmd::new(["drbdadm", "a"])).await.unwrap().stdout, "1");
        assert_eq!(r.run(&Cmd::new(["drbdadm", "b"])).await.unwrap().stdout, "2");
        assert_eq!(r.run(&Cmd::new(["drbdadm", "c"])).await.unwrap().stdout, "2");
        assert!(matches!(r.run(&Cmd::new(["ip"])).await, Err(RunError::Unscripted { .. })));
        assert_eq!(r.argvs(), ["systemctl is-active x", "drbdadm a", "drbdadm b", "drbdadm c", "ip"]);
        let err = r.run_ok(&Cmd::new(["systemctl", "is-active", "y"])).await.unwrap_err();
        assert!(err.to_string().contains("status 3"), "{err}");
    }
}
