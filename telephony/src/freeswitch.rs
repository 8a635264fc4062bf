//! FreeSWITCH: its systemd unit, and `fs_cli -x` for the call count (`show calls count`),
//! the drain (`fsctl pause inbound` / `fsctl resume inbound`: new inbound calls are refused
//! while existing ones go on, and FreeSWITCH stays up) and `sofia recover` after a takeover,
//! which re-INVITEs the calls the old primary recorded in the shared database
//! (mod_sofia's track-calls).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pbxha_runner::{Cmd, Runner};

use crate::pbx::{Calls, Drain, Pbx, PbxKind, Unit};
use crate::Error;

/// fs_cli connects to mod_event_socket; a healthy FreeSWITCH answers at once.
const CLI_TIMEOUT: Duration = Duration::from_secs(10);
/// `sofia recover` sends a re-INVITE per recovered call and answers once they are sent.
const RECOVER_TIMEOUT: Duration = Duration::from_secs(60);

/// Parses `show calls count`: mod_commands.c's show_function prints `\n%u total.\n` when
/// asked only for the count.
pub fn parse_show_calls_count(text: &str) -> Result<u32, String> {
    text.lines()
        .map(str::trim)
        .find_map(|l| l.strip_suffix(" total.").and_then(|n| n.parse().ok()))
        .ok_or_else(|| format!("no `N total.` line in `{}`", text.trim()))
}

/// Output of fs_cli that means the command did not run, whatever the exit status: fs_cli.c
/// logs `Error Connecting [...]` when mod_event_socket cannot be reached, and API commands
/// answer `-ERR ...` (mod_commands.c) or `-USAGE: ...` on failure.
fn cli_failure(output: &str) -> Option<&str> {
    output
        .lines()
        .map(str::trim)
        .find(|l| l.contains("Error Connecting") || l.starts_with("-ERR") || l.starts_with("-USAGE"))
}

/// fs_cli reads its connection profiles from `$HOME/.fs_cli_conf` (fs_cli.c); the profile
/// named `default` is used when none is named on the command line.
pub const CLI_CONF_NAME: &str = ".fs_cli_conf";

/// The fs_cli config that logs in to mod_event_socket on 127.0.0.1:8021 (its default
/// listener) with `password` instead of fs_cli's builtin `ClueCon`. Refuses what its
/// `key => value` format cannot carry: a line break, or `#`, which starts a comment.
pub fn render_cli_conf(password: &str) -> Result<String, String> {
    if password.is_empty() || password.contains(['\r', '\n', '#']) {
        return Err("the event-socket password must be one line without `#` (fs_cli's config format)".into());
    }
    Ok(format!("[default]\nhost => 127.0.0.1\nport => 8021\npassword => {password}\n"))
}

/// A FreeSWITCH under pbxha's control.
pub struct FreeSwitch {
    unit: Unit,
    runner: Arc<dyn Runner>,
    /// fs_cli's `$HOME` when a password is configured: a private directory (0700) holding
    /// only [`CLI_CONF_NAME`] (0600). `fs_cli -p` would show the password to every local
    /// user in the process list. Removed when the adapter goes.
    cli_home: Option<tempfile::TempDir>,
}

impl FreeSwitch {
    pub fn new(unit: Unit, runner: Arc<dyn Runner>) -> Self {
        FreeSwitch { unit, runner, cli_home: None }
    }

    /// Logs fs_cli in with `password` (mod_event_socket's `password` param) instead of
    /// fs_cli's default.
    pub fn with_event_socket_password(mut self, password: &str) -> Result<Self, Error> {
        use std::io::Write;
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let conf = render_cli_conf(password).map_err(|message| Error::Pbx { command: "fs_cli".into(), message })?;
        let home = tempfile::Builder::new()
            .prefix("pbxha-fs_cli-")
            .tempdir()
            .map_err(|e| Error::io("creating a private directory for fs_cli's config", e))?;
        // Before the file goes in: the directory is made with the umask's mode.
        std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o700))
            .map_err(|e| Error::io(format!("setting mode 0700 on {}", home.path().display()), e))?;
        let path = home.path().join(CLI_CONF_NAME);
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .and_then(|mut f| f.write_all(conf.as_bytes()))
            .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
        self.cli_home = Some(home);
        Ok(self)
    }

    /// Runs one API command through `fs_cli -x` and returns what it printed.
    pub async fn api(&self, command: &str, timeout: Duration) -> Result<String, Error> {
        let mut cmd = Cmd::new(["fs_cli", "-x", command]).timeout(timeout);
        if let Some(home) = &self.cli_home {
            cmd = cmd.env("HOME", home.path().to_string_lossy());
        }
        let out = self.runner.run(&cmd).await?;
        if let Some(line) = cli_failure(&out.stdout).or_else(|| cli_failure(&out.stderr)) {
            return Err(Error::Pbx { command: cmd.to_string(), message: line.to_string() });
        }
        if !out.success() {
            return Err(Error::Pbx {
                command: cmd.to_string(),
                message: format!("exited with status {}: {}", out.code, out.stderr.trim()),
            });
        }
        Ok(out.stdout)
    }

    pub async fn calls_count(&self) -> Result<u32, Error> {
        let command = "show calls count";
        let out = self.api(command, CLI_TIMEOUT).await?;
        parse_show_calls_count(&out).map_err(|message| Error::Pbx { command: format!("fs_cli -x {command}"), message })
    }
}

#[async_trait]
impl Drain for FreeSwitch {
    async fn start_drain(&self) -> Result<(), Error> {
        self.api("fsctl pause inbound", CLI_TIMEOUT).await.map(drop)
    }

    async fn active_calls(&self) -> Calls {
        match self.calls_count().await {
            Ok(n) => Calls::Known(n),
            Err(e) => Calls::Unknown(e.to_string()),
        }
    }

    async fn end_drain(&self) -> Result<(), Error> {
        self.api("fsctl resume inbound", CLI_TIMEOUT).await.map(drop)
    }
}

#[async_trait]
impl Pbx for FreeSwitch {
    fn kind(&self) -> PbxKind {
        PbxKind::FreeSwitch
    }

    fn unit(&self) -> &Unit {
        &self.unit
    }

    async fn after_takeover(&self) -> Result<(), Error> {
        let out = self.api("sofia recover", RECOVER_TIMEOUT).await?;
        tracing::info!("sofia recover: {}", out.trim());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pbxha_runner::{Output, ScriptedRunner};

    // mod_commands.c show_function with "count": "\n%u total.\n"; fs_cli adds a newline.
    const COUNT_IDLE: &str = "\n0 total.\n\n";
    const COUNT_BUSY: &str = "\n3 total.\n\n";
    // mod_commands.c ctl_function answers "+OK\n" to `fsctl pause|resume [inbound|outbound]`.
    const FSCTL_OK: &str = "+OK\n\n";
    // fs_cli.c when mod_event_socket does not answer (FreeSWITCH down); fs_cli exits -1.
    const NOT_CONNECTED: &str = "[ERROR] fs_cli.c:1679 main() Error Connecting []\n";
    // mod_commands.c ctl_function for a verb it does not know (its CTL_SYNTAX shortened).
    const FSCTL_ERR: &str = "-ERR INVALID COMMAND\nUSAGE: fsctl [recover|send_sighup|hupall|pause [inbound|outbound]|resume [inbound|outbound]|shutdown [cancel|elegant|asap|now|restart]]\n";

    fn freeswitch(runner: &Arc<ScriptedRunner>) -> FreeSwitch {
        FreeSwitch::new(Unit::new("freeswitch", runner.clone()), runner.clone())
    }

    #[test]
    fn parses_show_calls_count() {
        assert_eq!(parse_show_calls_count(COUNT_IDLE), Ok(0));
        assert_eq!(parse_show_calls_count(COUNT_BUSY), Ok(3));
        assert_eq!(parse_show_calls_count("3 total."), Ok(3));
        for text in ["", NOT_CONNECTED, "-ERR SQL disabled, no data available!\n", "x total.\n"] {
            assert!(parse_show_calls_count(text).is_err(), "{text:?}");
        }
    }

    #[tokio::test]
    async fn counts_calls_with_fs_cli() {
        let runner = Arc::new(ScriptedRunner::new());
        runner.on(["fs_cli", "-x", "show calls count"], Output::ok(COUNT_BUSY));
        assert_eq!(freeswitch(&runner).active_calls().await, Calls::Known(3));
        assert_eq!(runner.argvs(), ["fs_cli -x show calls count"]);
    }

    #[tokio::test]
    async fn an_unreachable_freeswitch_is_unknown_not_zero() {
        let runner = Arc::new(ScriptedRunner::new());
        // Wherever fs_cli's logger puts the line, and whatever the exit status.
        for out in [
            Output::failed(255, NOT_CONNECTED),
            Output { code: 255, stdout: NOT_CONNECTED.into(), stderr: String::new() },
            Output::ok(NOT_CONNECTED),
        ] {
            runner.on(["fs_cli"], out);
            let calls = freeswitch(&runner).active_calls().await;
            assert!(matches!(calls, Calls::Unknown(ref why) if why.contains("Error Connecting")), "{calls:?}");
        }
        runner.on(["fs_cli"], Output::failed(1, ""));
        assert!(
            matches!(freeswitch(&runner).active_calls().await, Calls::Unknown(ref why) if why.contains("status 1"))
        );
    }

    #[tokio::test]
    async fn drains_with_fsctl_pause_and_resume_inbound() {
        let runner = Arc::new(ScriptedRunner::new());
        runner.on(["fs_cli", "-x"], Output::ok(FSCTL_OK));
        let pbx = freeswitch(&runner);
        pbx.start_drain().await.unwrap();
        pbx.end_drain().await.unwrap();
        assert_eq!(runner.argvs(), ["fs_cli -x fsctl pause inbound", "fs_cli -x fsctl resume inbound"]);
        runner.on(["fs_cli", "-x"], Output::ok(FSCTL_ERR));
        let err = pbx.start_drain().await.unwrap_err().to_string();
        assert!(err.contains("fs_cli -x fsctl pause inbound") && err.contains("-ERR INVALID COMMAND"), "{err}");
    }

    #[tokio::test]
    async fn a_configured_password_reaches_fs_cli_through_a_private_home() {
        use std::os::unix::fs::PermissionsExt;
        let runner = Arc::new(ScriptedRunner::new());
        runner.on(["fs_cli", "-x", "show calls count"], Output::ok(COUNT_IDLE));
        let pbx = freeswitch(&runner).with_event_socket_password("s3cret pw").unwrap();
        assert_eq!(pbx.active_calls().await, Calls::Known(0));
        let cmd = &runner.calls()[0];
        // Not on the command line, where `ps` shows it.
        assert_eq!(cmd.to_string(), "fs_cli -x show calls count");
        let home = cmd.env.iter().find(|(k, _)| k == "HOME").map(|(_, v)| v.clone()).unwrap();
        let home = std::path::Path::new(&home);
        let conf = home.join(CLI_CONF_NAME);
        assert_eq!(
            std::fs::read_to_string(&conf).unwrap(),
            "[default]\nhost => 127.0.0.1\nport => 8021\npassword => s3cret pw\n"
        );
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!((mode(home), mode(&conf)), (0o700, 0o600));
        let home = home.to_path_buf();
        drop(pbx);
        assert!(!home.exists(), "the private home goes with the adapter");
        // Without a password fs_cli keeps its own defaults.
        freeswitch(&runner).active_calls().await;
        assert!(runner.calls()[1].env.is_empty());
        for bad in ["", "two\nlines", "has#hash"] {
            assert!(freeswitch(&runner).with_event_socket_password(bad).is_err(), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn recovers_sofia_calls_after_a_takeover() {
        let runner = Arc::new(ScriptedRunner::new());
        // mod_sofia answers with what it recovered; only failures are told apart.
        runner.on(["fs_cli", "-x", "sofia recover"], Output::ok("+OK\n"));
        let pbx = freeswitch(&runner);
        pbx.after_takeover().await.unwrap();
        assert_eq!(runner.calls()[0].timeout, RECOVER_TIMEOUT);
        runner.on(["fs_cli"], Output::failed(255, NOT_CONNECTED));
        let err = pbx.after_takeover().await.unwrap_err().to_string();
        assert!(err.contains("fs_cli -x sofia recover") && err.contains("Error Connecting"), "{err}");
        assert_eq!(pbx.kind(), PbxKind::FreeSwitch);
    }
}
