//! What pbxha asks of a PBX, whichever it is: service control through systemd ([`Unit`]),
//! how many calls are up ([`Calls`]), refusing new calls before a planned switchover
//! ([`Drain`]) and anything to redo after a takeover ([`Pbx::after_takeover`]).
//!
//! Every command goes through the [`Runner`] seam, so the adapters are tested on outputs
//! captured from the real tools.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pbxha_runner::{Cmd, Runner};

use crate::Error;

/// The PBXs pbxha knows, as written in the config (`pbx = "asterisk"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PbxKind {
    Asterisk,
    FreeSwitch,
}

impl PbxKind {
    pub fn name(self) -> &'static str {
        match self {
            PbxKind::Asterisk => "asterisk",
            PbxKind::FreeSwitch => "freeswitch",
        }
    }

    /// The systemd unit Debian's packages install, used when the config names none.
    pub fn default_unit(self) -> &'static str {
        self.name()
    }
}

impl fmt::Display for PbxKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for PbxKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "asterisk" => Ok(PbxKind::Asterisk),
            "freeswitch" => Ok(PbxKind::FreeSwitch),
            other => Err(format!("unknown PBX `{other}` (one of asterisk, freeswitch)")),
        }
    }
}

/// How many calls a PBX has up. A count that could not be read is `Unknown`, never zero:
/// a drain that mistook "cannot tell" for "idle" would cut live calls.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Calls {
    Known(u32),
    /// Why the count could not be read.
    Unknown(String),
}

impl Calls {
    pub fn known(&self) -> Option<u32> {
        match self {
            Calls::Known(n) => Some(*n),
            Calls::Unknown(_) => None,
        }
    }
}

impl fmt::Display for Calls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Calls::Known(n) => write!(f, "{n} call(s)"),
            Calls::Unknown(why) => write!(f, "unknown number of calls ({why})"),
        }
    }
}

/// What `systemctl is-active` says about a unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServiceState {
    Running,
    Stopped,
}

/// A systemd unit driven with `systemctl` through the runner.
pub struct Unit {
    name: String,
    runner: Arc<dyn Runner>,
}

impl Unit {
    pub fn new(name: impl Into<String>, runner: Arc<dyn Runner>) -> Self {
        Unit { name: name.into(), runner }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn systemctl(&self, verb: &str, timeout: Duration) -> Cmd {
        Cmd::new(["systemctl", verb, self.name.as_str()]).timeout(timeout)
    }

    /// `systemctl start`; idempotent, as systemd makes it.
    pub async fn start(&self, timeout: Duration) -> Result<(), Error> {
        self.runner.run_ok(&self.systemctl("start", timeout)).await?;
        Ok(())
    }

    /// `systemctl stop`; idempotent.
    pub async fn stop(&self, timeout: Duration) -> Result<(), Error> {
        self.runner.run_ok(&self.systemctl("stop", timeout)).await?;
        Ok(())
    }

    /// `systemctl is-active`: exit 0 is active, 3 (LSB "not running") covers inactive,
    /// failed and transitional units; any other code (4: no such unit, 1: systemd not
    /// reachable) says nothing about the unit and is an error.
    pub async fn state(&self, timeout: Duration) -> Result<ServiceState, Error> {
        let cmd = self.systemctl("is-active", timeout);
        let out = self.runner.run(&cmd).await?;
        match out.code {
            0 => Ok(ServiceState::Running),
            3 => Ok(ServiceState::Stopped),
            code => Err(Error::Pbx {
                command: cmd.to_string(),
                message: format!(
                    "exited with status {code}: {}",
                    format!("{} {}", out.stdout.trim(), out.stderr.trim()).trim()
                ),
            }),
        }
    }
}

/// Refusing new calls and counting the ones still up: what a planned switchover needs.
#[async_trait]
pub trait Drain: Send + Sync {
    /// Stops the PBX from accepting new calls while it keeps the ones it has.
    async fn start_drain(&self) -> Result<(), Error>;
    /// Calls up right now; `Unknown` when the PBX cannot be asked or answers garbage.
    async fn active_calls(&self) -> Calls;
    /// Accepts new calls again. [`drain`](crate::drain::drain) does not call this: after a
    /// drain the PBX is stopped and moved, and reopening first would let calls in only to
    /// drop them. It is for a PBX found running with a drain an earlier pbxha left behind.
    async fn end_drain(&self) -> Result<(), Error>;
}

/// A PBX under pbxha's control.
#[async_trait]
pub trait Pbx: Drain {
    fn kind(&self) -> PbxKind;
    /// The systemd unit that runs it.
    fn unit(&self) -> &Unit;
    /// Work a PBX needs after this node took the group (FreeSWITCH re-INVITEs the calls it
    /// can recover); nothing for most.
    async fn after_takeover(&self) -> Result<(), Error> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pbxha_runner::{Output, ScriptedRunner};

    #[test]
    fn kinds_parse_as_written_in_the_config() {
        assert_eq!("asterisk".parse(), Ok(PbxKind::Asterisk));
        assert_eq!("freeswitch".parse(), Ok(PbxKind::FreeSwitch));
        let err = "yate".parse::<PbxKind>().unwrap_err();
        assert!(err.contains("yate") && err.contains("asterisk, freeswitch"), "{err}");
        assert_eq!(PbxKind::FreeSwitch.default_unit(), "freeswitch");
    }

    #[test]
    fn unknown_calls_are_never_a_count() {
        assert_eq!(Calls::Known(0).known(), Some(0));
        assert_eq!(Calls::Unknown("timeout".into()).known(), None);
        assert_eq!(Calls::Unknown("timeout".into()).to_string(), "unknown number of calls (timeout)");
    }

    #[tokio::test]
    async fn unit_state_follows_is_active_exit_codes() {
        let runner = Arc::new(ScriptedRunner::new());
        let unit = Unit::new("asterisk", runner.clone());
        let t = Duration::from_secs(5);
        runner.on(["systemctl", "is-active"], Output::ok("active\n"));
        assert_eq!(unit.state(t).await.unwrap(), ServiceState::Running);
        // systemctl(1): "inactive" with exit 3.
        runner.on(["systemctl", "is-active"], Output { code: 3, stdout: "inactive\n".into(), stderr: String::new() });
        assert_eq!(unit.state(t).await.unwrap(), ServiceState::Stopped);
        // Without systemd as PID 1: "System has not been booted with systemd as init system
        // (PID 1). Can't operate." with exit 1.
        runner.on(
            ["systemctl", "is-active"],
            Output::failed(1, "System has not been booted with systemd as init system (PID 1). Can't operate.\n"),
        );
        let err = unit.state(t).await.unwrap_err().to_string();
        assert!(err.contains("systemctl is-active asterisk") && err.contains("status 1"), "{err}");
        runner.on(
            ["systemctl", "start"],
            Output::failed(5, "Failed to start asterisk.service: Unit asterisk.service not found.\n"),
        );
        let err = unit.start(t).await.unwrap_err().to_string();
        assert!(err.contains("systemctl start asterisk") && err.contains("not found"), "{err}");
        assert!(runner.argvs().contains(&"systemctl start asterisk".to_string()));
    }
}
