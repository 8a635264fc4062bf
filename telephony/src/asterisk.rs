//! Asterisk: its systemd unit, `asterisk -rx` for the call count and the drain, and
//! optionally AMI ([`crate::ami`]) for the count.
//!
//! ## How a drain refuses new calls
//! Asterisk's own graceful commands all end with Asterisk stopping: `core stop gracefully`
//! refuses new calls and exits once the last one ends, `core stop when convenient` exits once
//! idle. pbxha must decide itself when to stop (after the deadline, or on `--now`), and an
//! Asterisk that exits on its own in the middle of a switchover looks like a crash to the
//! resource monitor. So the drain sets a global dialplan variable with the documented
//! `dialplan set global PBXHA_DRAINING 1` and keeps Asterisk up. The operator's inbound
//! contexts check it, e.g.
//! `same => n,GotoIf($["${PBXHA_DRAINING}" = "1"]?busy)` with `busy` answering
//! `Congestion()` (or the peer's number). Without that dialplan line the drain still waits
//! for calls to end, it just cannot turn new ones away. The variable lives in memory only:
//! a restarted Asterisk starts with it unset.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pbxha_runner::{Cmd, Runner};

use crate::ami::{self, AmiConfig};
use crate::pbx::{Calls, Drain, Pbx, PbxKind, Unit};
use crate::Error;

/// The global dialplan variable set to 1 while draining.
pub const DRAIN_VARIABLE: &str = "PBXHA_DRAINING";
/// `asterisk -rx` connects to the running Asterisk over its control socket; a healthy one
/// answers at once, a hung one never.
const CLI_TIMEOUT: Duration = Duration::from_secs(10);

/// The counts `core show channels count` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelsCount {
    pub channels: u32,
    pub calls: u32,
    /// Since Asterisk started; `None` on versions that do not print it.
    pub processed: Option<u32>,
}

/// Parses `core show channels count`. Asterisk's main/cli.c (handle_chanlist) prints
/// `%d active channel%s`, then `%d active call%s` — or `%d of %d max active call%s (%5.2f%%
/// of capacity)` when `maxcalls` is set — then `%d call%s processed`.
pub fn parse_channels_count(text: &str) -> Result<ChannelsCount, String> {
    let mut channels = None;
    let mut calls = None;
    let mut processed = None;
    for line in text.lines().map(str::trim) {
        let mut words = line.split_whitespace();
        let (Some(first), Some(second)) = (words.next(), words.next()) else {
            continue;
        };
        let Ok(n) = first.parse::<u32>() else {
            continue;
        };
        let third = words.next();
        match (second, third) {
            ("active", Some("channel" | "channels")) => channels = Some(n),
            ("active", Some("call" | "calls")) => calls = Some(n),
            ("of", _) if line.contains(" max active call") => calls = Some(n),
            ("call" | "calls", Some("processed")) => processed = Some(n),
            _ => {}
        }
    }
    match (channels, calls) {
        (Some(channels), Some(calls)) => Ok(ChannelsCount { channels, calls, processed }),
        _ => Err(format!("no `N active channels` / `N active calls` lines in `{}`", text.trim())),
    }
}

/// Output of `asterisk -rx` that means the command did not run, whatever the exit status.
/// asterisk.c: "Unable to connect to remote asterisk (does %s exist?)" when no Asterisk runs;
/// cli.c: "No such command '%s' (type 'core show help %s' for other possible commands)".
fn cli_failure(output: &str) -> Option<&str> {
    output
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("Unable to connect to remote asterisk") || l.starts_with("No such command"))
}

/// An Asterisk under pbxha's control.
pub struct Asterisk {
    unit: Unit,
    runner: Arc<dyn Runner>,
    /// Count calls through AMI instead of `asterisk -rx`, for setups where pbxha cannot
    /// reach Asterisk's control socket.
    ami: Option<AmiConfig>,
}

impl Asterisk {
    pub fn new(unit: Unit, runner: Arc<dyn Runner>, ami: Option<AmiConfig>) -> Self {
        Asterisk { unit, runner, ami }
    }

    /// Runs one CLI command through `asterisk -rx` and returns what it printed.
    pub async fn cli(&self, command: &str) -> Result<String, Error> {
        let cmd = Cmd::new(["asterisk", "-rx", command]).timeout(CLI_TIMEOUT);
        let out = self.runner.run_ok(&cmd).await?;
        if let Some(line) = cli_failure(&out.stdout).or_else(|| cli_failure(&out.stderr)) {
            return Err(Error::Pbx { command: cmd.to_string(), message: line.to_string() });
        }
        Ok(out.stdout)
    }

    /// `core show channels count`, parsed.
    pub async fn channels_count(&self) -> Result<ChannelsCount, Error> {
        let command = "core show channels count";
        let out = self.cli(command).await?;
        parse_channels_count(&out).map_err(|message| Error::Pbx { command: format!("asterisk -rx {command}"), message })
    }
}

#[async_trait]
impl Drain for Asterisk {
    async fn start_drain(&self) -> Result<(), Error> {
        self.cli(&format!("dialplan set global {DRAIN_VARIABLE} 1")).await.map(drop)
    }

    async fn active_calls(&self) -> Calls {
        if let Some(ami) = &self.ami {
            return ami::active_calls(ami).await;
        }
        match self.channels_count().await {
            Ok(count) => Calls::Known(count.calls),
            Err(e) => Calls::Unknown(e.to_string()),
        }
    }

    async fn end_drain(&self) -> Result<(), Error> {
        self.cli(&format!("dialplan set global {DRAIN_VARIABLE} 0")).await?;
        // An operator may also have begun `core stop gracefully` by hand; whoever reopens
        // the PBX wants it taking calls, so that shutdown is cancelled too.
        self.cli("core abort shutdown").await.map(drop)
    }
}

impl Pbx for Asterisk {
    fn kind(&self) -> PbxKind {
        PbxKind::Asterisk
    }

    fn unit(&self) -> &Unit {
        &self.unit
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pbxha_runner::{Output, ScriptedRunner};

    // Built from main/cli.c's handle_chanlist format strings (Asterisk 13+), which print these
    // three lines for `core show channels count`.
    const COUNT_IDLE: &str = "0 active channels\n0 active calls\n12 calls processed\n";
    const COUNT_BUSY: &str = "3 active channels\n1 active call\n1 call processed\n";
    // The same with `maxcalls = 100` in asterisk.conf.
    const COUNT_MAXCALLS: &str =
        "4 active channels\n2 of 100 max active calls ( 2.00% of capacity)\n57 calls processed\n";
    // asterisk.c prints this to stderr and exits 1 when no Asterisk runs.
    const NOT_RUNNING: &str = "Unable to connect to remote asterisk (does /var/run/asterisk/asterisk.ctl exist?)\n";
    // cli.c, for a command no loaded module provides (exit status 0).
    const NO_SUCH: &str = "No such command 'core show channels count' (type 'core show help core show channels count' for other possible commands)\n";
    // pbx.c handle_set_global.
    const SET_GLOBAL: &str = "\n    -- Global variable 'PBXHA_DRAINING' set to '1'\n";

    fn asterisk(runner: &Arc<ScriptedRunner>, ami: Option<AmiConfig>) -> Asterisk {
        Asterisk::new(Unit::new("asterisk", runner.clone()), runner.clone(), ami)
    }

    #[test]
    fn parses_core_show_channels_count() {
        assert_eq!(parse_channels_count(COUNT_IDLE), Ok(ChannelsCount { channels: 0, calls: 0, processed: Some(12) }));
        assert_eq!(parse_channels_count(COUNT_BUSY), Ok(ChannelsCount { channels: 3, calls: 1, processed: Some(1) }));
        assert_eq!(
            parse_channels_count(COUNT_MAXCALLS),
            Ok(ChannelsCount { channels: 4, calls: 2, processed: Some(57) })
        );
        // Asterisk 1.4's `show channels` printed no "processed" line.
        assert_eq!(
            parse_channels_count("2 active channels\n1 active call\n"),
            Ok(ChannelsCount { channels: 2, calls: 1, processed: None })
        );
    }

    #[test]
    fn output_without_counts_is_an_error_not_zero() {
        for text in ["", NOT_RUNNING, NO_SUCH, "0 active channels\n", "Failed to retrieve cached channels\n"] {
            assert!(parse_channels_count(text).is_err(), "{text:?}");
        }
    }

    #[tokio::test]
    async fn counts_calls_through_the_cli() {
        let runner = Arc::new(ScriptedRunner::new());
        runner.on(["asterisk", "-rx", "core show channels count"], Output::ok(COUNT_BUSY));
        let pbx = asterisk(&runner, None);
        assert_eq!(pbx.active_calls().await, Calls::Known(1));
        assert_eq!(runner.argvs(), ["asterisk -rx core show channels count"]);
    }

    #[tokio::test]
    async fn a_stopped_or_odd_asterisk_is_unknown() {
        let runner = Arc::new(ScriptedRunner::new());
        let pbx = asterisk(&runner, None);
        runner.on(["asterisk"], Output::failed(1, NOT_RUNNING));
        assert!(matches!(pbx.active_calls().await, Calls::Unknown(ref why) if why.contains("Unable to connect")));
        runner.on(["asterisk"], Output::ok(NO_SUCH));
        assert!(matches!(pbx.active_calls().await, Calls::Unknown(ref why) if why.contains("No such command")));
        runner.fail_spawn(["asterisk"], "No such file or directory");
        assert!(matches!(pbx.active_calls().await, Calls::Unknown(ref why) if why.contains("cannot run")));
    }

    #[tokio::test]
    async fn drain_sets_the_global_and_end_drain_clears_it_and_aborts_any_shutdown() {
        let runner = Arc::new(ScriptedRunner::new());
        runner.on(["asterisk", "-rx"], Output::ok(SET_GLOBAL));
        // handle_abort_shutdown prints nothing.
        runner.on(["asterisk", "-rx", "core abort shutdown"], Output::ok(""));
        let pbx = asterisk(&runner, None);
        pbx.start_drain().await.unwrap();
        pbx.end_drain().await.unwrap();
        assert_eq!(
            runner.argvs(),
            [
                "asterisk -rx dialplan set global PBXHA_DRAINING 1",
                "asterisk -rx dialplan set global PBXHA_DRAINING 0",
                "asterisk -rx core abort shutdown",
            ]
        );
        assert_eq!(pbx.kind(), PbxKind::Asterisk);
        assert_eq!(pbx.unit().name(), "asterisk");
    }

    #[tokio::test]
    async fn a_failed_drain_command_names_it() {
        let runner = Arc::new(ScriptedRunner::new());
        runner.on(["asterisk"], Output::failed(1, NOT_RUNNING));
        let err = asterisk(&runner, None).start_drain().await.unwrap_err().to_string();
        assert!(err.contains("asterisk -rx dialplan set global PBXHA_DRAINING 1"), "{err}");
    }

    #[tokio::test]
    async fn counts_through_ami_when_configured() {
        // Nobody listens there: the count must come from AMI (unknown), not from the CLI.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        drop(listener);
        let runner = Arc::new(ScriptedRunner::new());
        runner.on(["asterisk"], Output::ok(COUNT_IDLE));
        let ami = AmiConfig { addr, username: "pbxha".into(), secret: "x".into(), timeout: Duration::from_secs(5) };
        let calls = asterisk(&runner, Some(ami)).active_calls().await;
        assert!(matches!(calls, Calls::Unknown(ref why) if why.starts_with("AMI ")), "{calls:?}");
        assert!(runner.argvs().is_empty());
    }
}
