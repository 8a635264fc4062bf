//! The `pbx` resource kind: Asterisk or FreeSWITCH, driven through the telephony crate's
//! adapters — systemd for start/stop/monitor, the PBX's own CLI (or AMI) for calls. The
//! daemon counts and drains calls through the same adapter, built once with the group
//! ([`crate::calls::GroupPbx`]).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pbxha_conf::Reader;
use pbxha_runner::Runner;
use pbxha_telephony::ami::AmiConfig;
use pbxha_telephony::asterisk::Asterisk;
use pbxha_telephony::freeswitch::FreeSwitch;
use pbxha_telephony::pbx::{ServiceState, Unit};
use pbxha_telephony::{Pbx, PbxKind};
use serde::Serialize;

use super::engine::Timeouts;
use super::{Kind, Parts, Report, Resource, ResourceState};
use crate::config::private_file;
use crate::Error;

/// A PBX (`kind = "pbx"`): started and stopped through its systemd unit, and asked for its
/// calls when a planned switchover drains them.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PbxConfig {
    #[serde(serialize_with = "serialize_kind")]
    pub pbx: pbxha_telephony::PbxKind,
    /// Defaults to the unit Debian's package installs (`asterisk`, `freeswitch`).
    pub unit: String,
    /// Count Asterisk's calls over AMI instead of `asterisk -rx`.
    pub ami: Option<AmiSettings>,
    /// FreeSWITCH: a 0600 file holding mod_event_socket's password, for a FreeSWITCH
    /// whose password is not fs_cli's default.
    pub event_socket_password_file: Option<PathBuf>,
}

/// Where Asterisk's manager interface listens and how pbxha logs in.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AmiSettings {
    pub host: String,
    pub port: u16,
    pub user: String,
    /// Holds the manager.conf secret, so it stays out of the config file.
    pub secret_file: PathBuf,
}

impl Kind for PbxConfig {
    fn read(s: &mut Reader) -> Option<Self> {
        // Every key is taken before any is judged, so a typo beside a wrong value is named too.
        let pbx = s.string("pbx");
        let unit = s.opt_string("unit");
        let host = s.opt_string("ami-host");
        let port = s.contains("ami-port").then(|| s.int_or("ami-port", 1, 65535, 0));
        let user = s.opt_string("ami-user");
        let secret_file = s.opt_path("ami-secret-file");
        let event_socket_password_file = s.opt_path("event-socket-password-file");
        let pbx: PbxKind = match pbx?.parse() {
            Ok(kind) => kind,
            Err(m) => return s.problem("pbx", m, Some("pbx = \"asterisk\" or pbx = \"freeswitch\"")),
        };
        let unit = unit.unwrap_or_else(|| pbx.default_unit().to_string());
        let ami = match (user, secret_file) {
            (None, None) if host.is_none() && port.is_none() => None,
            (Some(user), Some(secret_file)) if pbx == PbxKind::Asterisk => Some(AmiSettings {
                host: host.unwrap_or_else(|| "127.0.0.1".into()),
                port: port.unwrap_or(pbxha_telephony::ami::DEFAULT_PORT),
                user,
                secret_file,
            }),
            (Some(_), Some(_)) => {
                return s.problem("ami-user", "AMI is Asterisk's; FreeSWITCH calls are counted with fs_cli".into(), None)
            }
            _ => {
                return s.problem(
                    "ami-user",
                    "AMI needs both `ami-user` and `ami-secret-file`".into(),
                    Some("the user is a [section] of manager.conf; the file holds its secret"),
                )
            }
        };
        if event_socket_password_file.is_some() && pbx != PbxKind::FreeSwitch {
            return s.problem(
                "event-socket-password-file",
                "the event socket is FreeSWITCH's".into(),
                Some("Asterisk logs in to AMI with ami-user and ami-secret-file"),
            );
        }
        Some(PbxConfig { pbx, unit, ami, event_socket_password_file })
    }

    fn check_files(&self, problem: Report) {
        let secrets = [
            ("ami-secret-file", self.ami.as_ref().map(|a| &a.secret_file)),
            ("event-socket-password-file", self.event_socket_password_file.as_ref()),
        ];
        for (name, path) in secrets {
            if let Some(Err(message)) = path.map(|p| private_file(p)) {
                problem(name, message, "the file must exist with mode 0600 (chmod 600 FILE)");
            }
        }
    }

    fn describe(&self) -> String {
        format!("{} (systemd unit {})", self.pbx, self.unit)
    }

    fn outlives_daemon(&self) -> bool {
        true
    }

    fn build(&self, name: &str, parts: &Parts) -> Result<Arc<dyn Resource>, Error> {
        // The group's PBX shares the daemon's one adapter; only a second `pbx` builds its own.
        let pbx = match parts.pbx.adapter_of(name) {
            Some(pbx) => pbx,
            None => adapter(name, self, parts.runner.clone())?,
        };
        Ok(Arc::new(PbxResource { name: name.to_string(), pbx, timeouts: parts.timeouts }))
    }
}

/// For the config's `Serialize`: the kind as written in the config file.
pub fn serialize_kind<S: serde::Serializer>(kind: &PbxKind, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(kind.name())
}

/// How long one AMI query may take, login included.
const AMI_TIMEOUT: Duration = Duration::from_secs(5);
/// How long to keep retrying `sofia recover` after a start: FreeSWITCH takes a few seconds
/// before fs_cli can connect.
const RECOVER_WINDOW: Duration = Duration::from_secs(60);
const RECOVER_RETRY: Duration = Duration::from_secs(2);

/// The telephony adapter for a `pbx` resource named `name`. Reads the AMI secret file, so
/// its problems are reported when the group is built, naming the file.
pub fn adapter(name: &str, config: &PbxConfig, runner: Arc<dyn Runner>) -> Result<Arc<dyn Pbx>, Error> {
    let unit = Unit::new(config.unit.clone(), runner.clone());
    Ok(match config.pbx {
        PbxKind::Asterisk => {
            let ami = match &config.ami {
                None => None,
                Some(a) => Some(AmiConfig {
                    addr: format!("{}:{}", a.host, a.port),
                    username: a.user.clone(),
                    secret: read_secret(name, "AMI secret file", &a.secret_file)?,
                    timeout: AMI_TIMEOUT,
                }),
            };
            Arc::new(Asterisk::new(unit, runner, ami))
        }
        PbxKind::FreeSwitch => {
            let fs = FreeSwitch::new(unit, runner);
            match &config.event_socket_password_file {
                None => Arc::new(fs),
                Some(path) => {
                    let password = read_secret(name, "event-socket password file", path)?;
                    Arc::new(fs.with_event_socket_password(&password).map_err(|e| Error::Resource {
                        resource: name.to_string(),
                        message: format!("{}: {e}", path.display()),
                    })?)
                }
            }
        }
    })
}

/// The secret in `path`, refused unless only its owner can read it (mode 0600).
fn read_secret(resource: &str, what: &str, path: &std::path::Path) -> Result<String, Error> {
    crate::config::private_file(path)
        .and_then(|()| std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display())))
        .map(|text| text.trim_end_matches(['\r', '\n']).to_string())
        .map_err(|message| Error::Resource {
            resource: resource.to_string(),
            message: format!("cannot use the {what}: {message}"),
        })
}

/// A PBX as a member of the resource group.
pub struct PbxResource {
    name: String,
    pbx: Arc<dyn Pbx>,
    timeouts: Timeouts,
}

impl PbxResource {
    fn error(&self, e: pbxha_telephony::Error) -> Error {
        Error::Resource { resource: self.name.clone(), message: e.to_string() }
    }
}

#[async_trait]
impl Resource for PbxResource {
    fn name(&self) -> &str {
        &self.name
    }

    async fn start(&self) -> Result<(), Error> {
        let unit = self.pbx.unit();
        if unit.state(self.timeouts.monitor).await.map_err(|e| self.error(e))? == ServiceState::Running {
            // Already up (pbxha restarted under a running PBX): it may still be refusing
            // calls from a drain the previous pbxha began.
            if let Err(e) = self.pbx.end_drain().await {
                tracing::warn!(resource = %self.name, "cannot reopen the running PBX to new calls: {e}");
            }
        }
        unit.start(self.timeouts.start).await.map_err(|e| self.error(e))?;
        // Off the start path: the PBX answers its CLI only seconds after systemd reports it
        // started, and the group should not wait for calls to be recovered.
        let pbx = self.pbx.clone();
        let name = self.name.clone();
        tokio::spawn(async move {
            let began = tokio::time::Instant::now();
            loop {
                match pbx.after_takeover().await {
                    Ok(()) => break,
                    Err(e) if began.elapsed() >= RECOVER_WINDOW => {
                        tracing::warn!(resource = %name, "after takeover: {e}; giving up");
                        break;
                    }
                    Err(_) => tokio::time::sleep(RECOVER_RETRY).await,
                }
            }
        });
        Ok(())
    }

    async fn stop(&self) -> Result<(), Error> {
        self.pbx.unit().stop(self.timeouts.stop).await.map_err(|e| self.error(e))
    }

    async fn monitor(&self) -> Result<ResourceState, Error> {
        Ok(match self.pbx.unit().state(self.timeouts.monitor).await.map_err(|e| self.error(e))? {
            ServiceState::Running => ResourceState::Running,
            ServiceState::Stopped => ResourceState::Stopped,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::calls::GroupPbx;
    use crate::config::AmiSettings;
    use crate::config::{ResourceConfig, ResourceKind};
    use pbxha_runner::{Output, ScriptedRunner};
    use pbxha_telephony::Calls;

    fn timeouts() -> Timeouts {
        let s = Duration::from_secs(5);
        Timeouts { start: s, stop: s, monitor: s, monitor_interval: s }
    }

    /// A `pbx` resource of kind `pbx` with its defaults (also for [`crate::calls`]' tests).
    pub(crate) fn resource_config(pbx: PbxKind) -> ResourceConfig {
        ResourceConfig {
            name: "pbx".into(),
            start_timeout: Duration::from_secs(5),
            stop_timeout: Duration::from_secs(5),
            monitor_timeout: Duration::from_secs(5),
            monitor_interval: Duration::from_secs(2),
            kind: ResourceKind::Pbx(PbxConfig {
                pbx,
                unit: pbx.default_unit().into(),
                ami: None,
                event_socket_password_file: None,
            }),
        }
    }

    /// The member as a group without a shared adapter builds it.
    fn build(name: &str, config: &PbxConfig, timeouts: Timeouts, runner: Arc<dyn Runner>) -> Result<Arc<dyn Resource>, Error> {
        let parts = Parts { timeouts, runner, drbd_view: &Default::default(), pbx: &Default::default() };
        config.build(name, &parts)
    }

    fn config(r: &ResourceConfig) -> &PbxConfig {
        match &r.kind {
            ResourceKind::Pbx(p) => p,
            _ => unreachable!("a pbx resource"),
        }
    }

    #[tokio::test]
    async fn starts_stops_and_monitors_through_systemd() {
        let runner = Arc::new(ScriptedRunner::new());
        runner.on(["systemctl", "is-active"], Output { code: 3, stdout: "inactive\n".into(), stderr: String::new() });
        runner.on(["systemctl", "start"], Output::ok(""));
        runner.on(["systemctl", "stop"], Output::ok(""));
        runner.on(["fs_cli"], Output::ok("+OK\n"));
        let r = resource_config(PbxKind::FreeSwitch);
        let pbx = build("pbx", config(&r), timeouts(), runner.clone()).unwrap();
        assert_eq!(pbx.monitor().await.unwrap(), ResourceState::Stopped);
        pbx.start().await.unwrap();
        pbx.stop().await.unwrap();
        let argvs = runner.argvs();
        assert_eq!(
            argvs[..4],
            [
                "systemctl is-active freeswitch",
                "systemctl is-active freeswitch",
                "systemctl start freeswitch",
                "systemctl stop freeswitch"
            ]
        );
        assert!(!argvs.iter().any(|a| a.contains("fsctl resume")), "a stopped PBX has no drain to end: {argvs:?}");
        // sofia recover runs in the background after the start.
        for _ in 0..100 {
            if runner.argvs().iter().any(|a| a == "fs_cli -x sofia recover") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(runner.argvs().iter().any(|a| a == "fs_cli -x sofia recover"), "{:?}", runner.argvs());
    }

    #[test]
    fn the_group_pbx_member_uses_the_daemons_one_adapter() {
        // The shared adapter runs its commands through `shared`; one built anew would use `own`.
        let (shared, own) = (Arc::new(ScriptedRunner::new()), Arc::new(ScriptedRunner::new()));
        shared.on(["systemctl", "is-active"], Output::ok("active\n"));
        let mut second = resource_config(PbxKind::FreeSwitch);
        second.name = "second".into();
        let resources = [resource_config(PbxKind::FreeSwitch), second];
        let group_pbx = GroupPbx::new(&resources, shared.clone()).unwrap();
        let members = crate::resources::build_members(&resources, own.clone(), &Default::default(), &group_pbx).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        for m in &members {
            let _ = rt.block_on(m.resource.monitor());
        }
        assert_eq!(shared.argvs(), ["systemctl is-active freeswitch"], "the group's PBX");
        assert_eq!(own.argvs(), ["systemctl is-active freeswitch"], "a second pbx has its own adapter");
    }

    #[tokio::test]
    async fn starting_a_running_pbx_reopens_it_to_calls() {
        let runner = Arc::new(ScriptedRunner::new());
        runner.on(["systemctl", "is-active"], Output::ok("active\n"));
        runner.on(["systemctl", "start"], Output::ok(""));
        runner.on(["asterisk", "-rx"], Output::ok(""));
        let r = resource_config(PbxKind::Asterisk);
        let pbx = build("pbx", config(&r), timeouts(), runner.clone()).unwrap();
        pbx.start().await.unwrap();
        assert_eq!(
            runner.argvs(),
            [
                "systemctl is-active asterisk",
                "asterisk -rx dialplan set global PBXHA_DRAINING 0",
                "asterisk -rx core abort shutdown",
                "systemctl start asterisk"
            ]
        );
    }

    /// An Asterisk resource that logs in to AMI with the secret in `secret_file`.
    fn asterisk_with_ami(secret_file: std::path::PathBuf) -> ResourceConfig {
        let mut r = resource_config(PbxKind::Asterisk);
        if let ResourceKind::Pbx(p) = &mut r.kind {
            p.ami = Some(AmiSettings { host: "127.0.0.1".into(), port: 5038, user: "pbxha".into(), secret_file });
        }
        r
    }

    #[tokio::test]
    async fn an_unreadable_ami_secret_file_is_named() {
        let r = asterisk_with_ami("/nonexistent/pbxha-ami-secret".into());
        let err = build("pbx", config(&r), timeouts(), Arc::new(ScriptedRunner::new())).err().unwrap().to_string();
        assert!(err.contains("/nonexistent/pbxha-ami-secret") && err.contains("resource `pbx`"), "{err}");
    }

    #[tokio::test]
    async fn an_ami_secret_file_open_to_others_is_refused_and_a_private_one_used() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ami-secret");
        std::fs::write(&path, "s3cret\n").unwrap();
        let r = asterisk_with_ami(path.clone());
        let runner = || -> Arc<dyn Runner> { Arc::new(ScriptedRunner::new()) };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = build("pbx", config(&r), timeouts(), runner()).err().unwrap().to_string();
        assert!(
            err.contains(&path.display().to_string()) && err.contains("mode 0644") && err.contains("resource `pbx`"),
            "{err}"
        );
        let key = crate::config::tests::key_file(0o600);
        let mut whole = crate::config::parse(&crate::config::tests::minimal(key.path())).unwrap();
        whole.resources = vec![r.clone()];
        let problems = whole.check_files();
        assert!(
            problems.iter().any(|p| p.key == "resource[0].ami-secret-file" && p.message.contains("mode 0644")),
            "{problems:?}"
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(build("pbx", config(&r), timeouts(), runner()).is_ok());
    }

    #[tokio::test]
    async fn freeswitch_logs_in_with_the_configured_event_socket_password() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("esl-password");
        std::fs::write(&path, "n0t-ClueCon\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let key = crate::config::tests::key_file(0o600);
        let text = format!(
            "{}\n[[resource]]\nname = \"fs\"\nkind = \"pbx\"\npbx = \"freeswitch\"\nevent-socket-password-file = \"{}\"\n",
            crate::config::tests::minimal(key.path()),
            path.display()
        );
        let c = crate::config::parse(&text).unwrap();
        let runner = Arc::new(ScriptedRunner::new());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let problems = c.check_files();
        assert!(
            problems
                .iter()
                .any(|p| p.key == "resource[0].event-socket-password-file" && p.message.contains("mode 0640")),
            "{problems:?}"
        );
        let err = adapter("fs", config(&c.resources[0]), runner.clone()).err().unwrap().to_string();
        assert!(err.contains(&path.display().to_string()) && err.contains("mode 0640"), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(c.check_files(), vec![]);
        runner.on(["fs_cli", "-x", "show calls count"], Output::ok("\n2 total.\n\n"));
        let pbx = adapter("fs", config(&c.resources[0]), runner.clone()).unwrap();
        assert_eq!(pbx.active_calls().await, Calls::Known(2));
        let home = runner.calls()[0].env.iter().find(|(k, _)| k == "HOME").map(|(_, v)| v.clone()).unwrap();
        let conf = std::fs::read_to_string(std::path::Path::new(&home).join(".fs_cli_conf")).unwrap();
        assert!(conf.contains("password => n0t-ClueCon\n"), "{conf}");
    }

    /// A valid config whose group is the given `[[resource]]` tables.
    fn config_text(key: &std::path::Path, resources: &str) -> String {
        format!(
            "[cluster]\nname = \"t\"\nid = 7\nauth-key-file = \"{}\"\n\n[[node]]\nname = \"a\"\nid = 1\n[[node]]\nname = \"b\"\nid = 2\n\n[[link]]\nname = \"hb\"\n[link.addresses]\na = \"203.0.113.11/24\"\nb = \"203.0.113.12/24\"\n\n{resources}",
            key.display()
        )
    }

    fn key_file() -> tempfile::NamedTempFile {
        use std::io::Write;
        use std::os::unix::fs::PermissionsExt;
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(b"0123456789abcdef0123456789abcdef\n").unwrap();
        std::fs::set_permissions(f.path(), std::fs::Permissions::from_mode(0o600)).unwrap();
        f
    }

    #[test]
    fn pbx_resources_parse_with_defaults_and_ami() {
        let key = key_file();
        // A private file, as validation wants one.
        let secret = key_file();
        let text = config_text(
            key.path(),
            &format!(
                "[[resource]]\nname = \"fs\"\nkind = \"pbx\"\npbx = \"freeswitch\"\n\n\
                 [[resource]]\nname = \"ast\"\nkind = \"pbx\"\npbx = \"asterisk\"\nunit = \"asterisk-custom\"\n\
                 ami-user = \"pbxha\"\nami-secret-file = \"{}\"\n",
                secret.path().display()
            ),
        );
        let c = crate::config::parse(&text).unwrap();
        assert_eq!(
            config(&c.resources[0]),
            &PbxConfig {
                pbx: PbxKind::FreeSwitch,
                unit: "freeswitch".into(),
                ami: None,
                event_socket_password_file: None,
            }
        );
        let ami = AmiSettings {
            host: "127.0.0.1".into(),
            port: 5038,
            user: "pbxha".into(),
            secret_file: secret.path().into(),
        };
        assert_eq!(
            config(&c.resources[1]),
            &PbxConfig {
                pbx: PbxKind::Asterisk,
                unit: "asterisk-custom".into(),
                ami: Some(ami),
                event_socket_password_file: None,
            }
        );
        let json = serde_json::to_value(&c.resources[1].kind).unwrap();
        assert_eq!(json["kind"], "pbx");
        assert_eq!(json["pbx"], "asterisk");
    }

    #[test]
    fn drain_timeout_is_read_from_the_group_table() {
        let key = key_file();
        let c = crate::config::parse(&config_text(key.path(), "")).unwrap();
        assert_eq!(c.group.drain_timeout, Duration::from_secs(300));
        let text = config_text(key.path(), "[group]\ndrain-timeout = \"90s\"\n");
        let c = crate::config::parse(&text).unwrap();
        assert_eq!(c.group.drain_timeout, Duration::from_secs(90));
    }

    #[test]
    fn bad_pbx_resources_name_the_key() {
        let key = key_file();
        for (resource, at, says) in [
            ("pbx = \"yate\"", "resource[0].pbx", "unknown PBX `yate`"),
            ("pbx = \"asterisk\"\nami-user = \"pbxha\"", "resource[0].ami-user", "needs both"),
            ("pbx = \"freeswitch\"\nami-user = \"u\"\nami-secret-file = \"/f\"", "resource[0].ami-user", "Asterisk's"),
            (
                "pbx = \"asterisk\"\nevent-socket-password-file = \"/f\"",
                "resource[0].event-socket-password-file",
                "FreeSWITCH's",
            ),
            ("pbx = \"asterisk\"\nami-port = 70000", "resource[0].ami-port", "out of range"),
        ] {
            let text = config_text(key.path(), &format!("[[resource]]\nname = \"p\"\nkind = \"pbx\"\n{resource}\n"));
            let problems = crate::config::parse(&text).unwrap_err();
            assert!(problems.iter().any(|p| p.key == at && p.message.contains(says)), "{resource}: {problems:?}");
        }
    }
}
