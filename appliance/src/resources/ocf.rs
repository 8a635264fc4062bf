//! The `ocf` resource kind: runs an installed OCF resource agent (resource-agents'
//! `heartbeat/IPaddr2`, `heartbeat/mysql`...) so operators can reuse what they already trust.
//!
//! Calling convention and exit codes follow the OCF Resource Agent API 1.0 (ClusterLabs
//! OCF-spec, `ra/1.0/resource-agent-api.md`): the action is argv[1], parameters arrive as
//! `OCF_RESKEY_<name>` in the environment, and the exit code is the answer.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pbxha_conf::Reader;
use pbxha_runner::{Cmd, Output, Runner};
use serde::Serialize;

use super::engine::Timeouts;
use super::{Kind, Parts, Report, Resource, ResourceState};
use crate::config::Config;
use crate::Error;

/// An installed OCF resource agent (resource-agents' `heartbeat/IPaddr2` and friends).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OcfConfig {
    /// `provider/type`, resolved as `$OCF_ROOT/resource.d/provider/type`.
    pub agent: String,
    pub ocf_root: PathBuf,
    /// Passed as `OCF_RESKEY_<name>`.
    pub params: BTreeMap<String, String>,
}

impl Kind for OcfConfig {
    fn read(s: &mut Reader) -> Option<Self> {
        Some(OcfConfig {
            agent: s.string("agent").unwrap_or_default(),
            ocf_root: s.path_or("ocf-root", "/usr/lib/ocf"),
            params: s.opt_table("params").map(|mut p| p.strings()).unwrap_or_default(),
        })
    }

    fn validate(&self, _: &Config, _: usize, problem: Report) {
        if !self.agent.contains('/') {
            problem("agent", format!("`{}` is not provider/type", self.agent), "e.g. agent = \"heartbeat/IPaddr2\"");
        }
    }

    fn describe(&self) -> String {
        format!("OCF agent {}", self.agent)
    }

    fn outlives_daemon(&self) -> bool {
        true
    }

    fn build(&self, name: &str, parts: &Parts) -> Result<Arc<dyn Resource>, Error> {
        build(name, self, parts.timeouts, parts.runner.clone())
    }
}

/// OCF_SUCCESS.
const SUCCESS: i32 = 0;
/// OCF_NOT_RUNNING: the answer of `monitor` for a cleanly stopped resource.
const NOT_RUNNING: i32 = 7;

/// What an OCF exit code means (OCF Resource Agent API 1.0, "Exit status codes").
fn meaning(code: i32) -> &'static str {
    match code {
        0 => "success",
        1 => "generic error",
        2 => "invalid arguments",
        3 => "unimplemented action",
        4 => "insufficient privileges",
        5 => "not installed",
        6 => "not configured",
        7 => "not running",
        8 => "running as master (promotable agents are not supported)",
        9 => "failed as master (promotable agents are not supported)",
        _ => "unknown exit code",
    }
}

/// Splits `provider/type`; both parts must be plain file names.
fn parse_agent(agent: &str) -> Option<(&str, &str)> {
    let (provider, kind) = agent.split_once('/')?;
    let plain = |s: &str| !s.is_empty() && s != "." && s != ".." && !s.contains('/');
    (plain(provider) && plain(kind)).then_some((provider, kind))
}

/// Builds an `ocf` resource named `name`. The agent runs with the executor's timeout for each
/// action, so the runner kills a hung agent's whole process group.
pub fn build(
    name: &str,
    config: &OcfConfig,
    timeouts: Timeouts,
    runner: Arc<dyn Runner>,
) -> Result<Arc<dyn Resource>, Error> {
    let Some((provider, kind)) = parse_agent(&config.agent) else {
        return Err(Error::Resource {
            resource: name.to_string(),
            message: format!("agent `{}` is not of the form provider/type (e.g. heartbeat/IPaddr2)", config.agent),
        });
    };
    let path = config.ocf_root.join("resource.d").join(provider).join(kind);
    let mut env = vec![
        ("OCF_ROOT".to_string(), config.ocf_root.display().to_string()),
        ("OCF_RESOURCE_INSTANCE".to_string(), name.to_string()),
        ("OCF_RESOURCE_TYPE".to_string(), kind.to_string()),
        ("OCF_RESOURCE_PROVIDER".to_string(), provider.to_string()),
    ];
    env.extend(config.params.iter().map(|(k, v)| (format!("OCF_RESKEY_{k}"), v.clone())));
    Ok(Arc::new(OcfAgent { name: name.to_string(), path, env, timeouts, runner }))
}

/// One OCF agent instance.
pub struct OcfAgent {
    name: String,
    /// `$OCF_ROOT/resource.d/<provider>/<type>`.
    path: PathBuf,
    /// Everything the agent gets besides PATH: its environment is cleared so nothing of the
    /// daemon's leaks into it.
    env: Vec<(String, String)>,
    timeouts: Timeouts,
    runner: Arc<dyn Runner>,
}

impl OcfAgent {
    /// Runs `action` and returns its output; only a missing agent or a failure to run it is
    /// an error here, the exit code is for the caller to judge.
    async fn run(&self, action: &str, timeout: Duration) -> Result<Output, Error> {
        check_executable(&self.path).map_err(|message| Error::Resource { resource: self.name.clone(), message })?;
        let mut cmd = Cmd::new([self.path.display().to_string(), action.to_string()]).clear_env().timeout(timeout);
        cmd.env.extend(self.env.iter().cloned());
        // Pacemaker passes the action timeout this way and many agents size their wait loops
        // by it (ocf-shellfuncs reads it).
        cmd = cmd.env("OCF_RESKEY_CRM_meta_timeout", timeout.as_millis().to_string());
        self.runner.run(&cmd).await.map_err(|source| Error::Command { resource: self.name.clone(), source })
    }

    fn failure(&self, action: &str, out: &Output) -> Error {
        let text = if out.stderr.trim().is_empty() { &out.stdout } else { &out.stderr };
        let lines: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
        let tail = lines[lines.len().saturating_sub(3)..].join(" | ");
        Error::Resource {
            resource: self.name.clone(),
            message: format!(
                "OCF agent {} {action} exited {} ({}){}{tail}",
                self.path.display(),
                out.code,
                meaning(out.code),
                if tail.is_empty() { "" } else { ": " }
            ),
        }
    }
}

/// Why `path` cannot be run as an agent, if it cannot.
fn check_executable(path: &Path) -> Result<(), String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("OCF agent {}: {e}", path.display()))?;
    if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
        return Err(format!("OCF agent {} is not an executable file", path.display()));
    }
    Ok(())
}

#[async_trait]
impl Resource for OcfAgent {
    fn name(&self) -> &str {
        &self.name
    }

    async fn start(&self) -> Result<(), Error> {
        let out = self.run("start", self.timeouts.start).await?;
        if out.code == SUCCESS {
            Ok(())
        } else {
            Err(self.failure("start", &out))
        }
    }

    /// An agent that says "not running" to `stop` has nothing to stop: success.
    async fn stop(&self) -> Result<(), Error> {
        let out = self.run("stop", self.timeouts.stop).await?;
        if out.code == SUCCESS || out.code == NOT_RUNNING {
            Ok(())
        } else {
            Err(self.failure("stop", &out))
        }
    }

    async fn monitor(&self) -> Result<ResourceState, Error> {
        let out = self.run("monitor", self.timeouts.monitor).await?;
        match out.code {
            SUCCESS => Ok(ResourceState::Running),
            NOT_RUNNING => Ok(ResourceState::Stopped),
            _ => Err(self.failure("monitor", &out)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use pbxha_runner::{ScriptedRunner, SystemRunner};

    use super::*;

    const TIMEOUTS: Timeouts = Timeouts {
        start: Duration::from_secs(20),
        stop: Duration::from_secs(20),
        monitor: Duration::from_secs(10),
        monitor_interval: Duration::from_secs(10),
    };

    /// A small but honest agent: start writes a state file named by a parameter, monitor
    /// checks it, stop removes it; a missing parameter is OCF_ERR_CONFIGURED. The state file
    /// also records what the agent saw in its environment.
    const AGENT: &str = r#"#!/bin/sh
if [ -z "$OCF_RESKEY_state" ]; then echo "ERROR: parameter state is required" >&2; exit 6; fi
case "$1" in
start)
    echo "$OCF_RESKEY_greeting $OCF_RESOURCE_INSTANCE $OCF_RESOURCE_PROVIDER/$OCF_RESOURCE_TYPE $OCF_ROOT ${HOME:-no-home} $OCF_RESKEY_CRM_meta_timeout" > "$OCF_RESKEY_state"
    exit 0 ;;
stop)
    [ -f "$OCF_RESKEY_state" ] || exit 7
    rm -f "$OCF_RESKEY_state"; exit 0 ;;
monitor)
    [ -f "$OCF_RESKEY_state" ] && exit 0
    exit 7 ;;
*)
    exit 3 ;;
esac
"#;

    /// Writes `$root/resource.d/pbxha/Dummy` with mode `mode`. The file is installed by a
    /// child process so this test process never holds it open for writing: another test
    /// thread forking at that moment would make exec fail with "Text file busy".
    fn install_agent(root: &Path, mode: &str) -> PathBuf {
        let dir = root.join("resource.d/pbxha");
        std::fs::create_dir_all(&dir).unwrap();
        let source = root.join("agent.src");
        std::fs::write(&source, AGENT).unwrap();
        let path = dir.join("Dummy");
        let status = std::process::Command::new("install").args(["-m", mode]).arg(&source).arg(&path).status().unwrap();
        assert!(status.success());
        path
    }

    fn config(root: &Path, params: &[(&str, String)]) -> OcfConfig {
        OcfConfig {
            agent: "pbxha/Dummy".into(),
            ocf_root: root.to_path_buf(),
            params: params.iter().map(|(k, v)| (k.to_string(), v.clone())).collect::<BTreeMap<_, _>>(),
        }
    }

    #[tokio::test]
    async fn real_agent_start_monitor_stop() {
        let root = tempfile::tempdir().unwrap();
        install_agent(root.path(), "0755");
        let state = root.path().join("state");
        let params = [("state", state.display().to_string()), ("greeting", "hello".to_string())];
        let agent = build("web", &config(root.path(), &params), TIMEOUTS, Arc::new(SystemRunner)).unwrap();

        assert_eq!(agent.monitor().await.unwrap(), ResourceState::Stopped);
        agent.start().await.unwrap();
        assert_eq!(
            std::fs::read_to_string(&state).unwrap(),
            format!("hello web pbxha/Dummy {} no-home 20000\n", root.path().display()),
            "parameters, instance, type and timeout arrive; nothing else of the daemon's environment"
        );
        assert_eq!(agent.monitor().await.unwrap(), ResourceState::Running);
        agent.stop().await.unwrap();
        assert!(!state.exists());
        assert_eq!(agent.monitor().await.unwrap(), ResourceState::Stopped);
        agent.stop().await.expect("stop of a stopped resource (exit 7) is a success");
    }

    #[tokio::test]
    async fn real_agent_missing_parameter_is_not_configured() {
        let root = tempfile::tempdir().unwrap();
        let path = install_agent(root.path(), "0755");
        let agent = build("web", &config(root.path(), &[]), TIMEOUTS, Arc::new(SystemRunner)).unwrap();
        let err = agent.start().await.unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "resource `web`: OCF agent {} start exited 6 (not configured): ERROR: parameter state is required",
                path.display()
            )
        );
    }

    #[tokio::test]
    async fn missing_or_non_executable_agent_is_named() {
        let root = tempfile::tempdir().unwrap();
        let runner = Arc::new(ScriptedRunner::new());
        let agent = build("web", &config(root.path(), &[]), TIMEOUTS, runner.clone()).unwrap();
        let err = agent.start().await.unwrap_err().to_string();
        assert!(err.contains(&format!("{}/resource.d/pbxha/Dummy", root.path().display())), "{err}");
        assert!(err.contains("No such file"), "{err}");

        install_agent(root.path(), "0644");
        let err = agent.monitor().await.unwrap_err().to_string();
        assert!(err.contains("resource.d/pbxha/Dummy is not an executable file"), "{err}");
        assert!(runner.calls().is_empty(), "nothing may run a missing agent");
    }

    #[test]
    fn agent_must_be_provider_slash_type() {
        for bad in ["Dummy", "pbxha/", "/Dummy", "../Dummy", "pbxha/x/Dummy", "pbxha/.."] {
            let root = Path::new("/usr/lib/ocf");
            let config = OcfConfig { agent: bad.into(), ocf_root: root.into(), params: BTreeMap::new() };
            let err = build("web", &config, TIMEOUTS, Arc::new(ScriptedRunner::new())).err().map(|e| e.to_string());
            assert!(err.as_deref().is_some_and(|e| e.contains(&format!("`{bad}`"))), "{bad}: {err:?}");
        }
    }

    /// An agent file for the scripted runner to "run", and the agent built on it.
    fn scripted() -> (tempfile::TempDir, Arc<ScriptedRunner>, Arc<dyn Resource>, String) {
        let root = tempfile::tempdir().unwrap();
        let path = install_agent(root.path(), "0755").display().to_string();
        let runner = Arc::new(ScriptedRunner::new());
        let params = [("ip", "198.51.100.10".to_string()), ("cidr_netmask", "24".to_string())];
        let agent = build("vip", &config(root.path(), &params), TIMEOUTS, runner.clone()).unwrap();
        (root, runner, agent, path)
    }

    #[tokio::test]
    async fn the_agent_gets_a_cleared_environment_with_ocf_variables() {
        let (root, runner, agent, path) = scripted();
        runner.on([path.as_str()], Output::ok(""));
        agent.monitor().await.unwrap();
        let call = &runner.calls()[0];
        assert_eq!(call.argv(), [path.as_str(), "monitor"]);
        assert!(call.clear_env);
        assert_eq!(call.timeout, TIMEOUTS.monitor);
        let env: BTreeMap<&str, &str> = call.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let root = root.path().display().to_string();
        assert_eq!(
            env,
            BTreeMap::from([
                ("OCF_ROOT", root.as_str()),
                ("OCF_RESOURCE_INSTANCE", "vip"),
                ("OCF_RESOURCE_TYPE", "Dummy"),
                ("OCF_RESOURCE_PROVIDER", "pbxha"),
                ("OCF_RESKEY_cidr_netmask", "24"),
                ("OCF_RESKEY_ip", "198.51.100.10"),
                ("OCF_RESKEY_CRM_meta_timeout", "10000"),
            ])
        );
    }

    #[tokio::test]
    async fn exit_codes_are_honoured_per_action() {
        let (_root, runner, agent, path) = scripted();
        let answer = |action: &str, code: i32| {
            runner.on([path.as_str(), action], Output { code, stdout: String::new(), stderr: String::new() });
        };
        answer("monitor", 0);
        assert_eq!(agent.monitor().await.unwrap(), ResourceState::Running);
        answer("monitor", 7);
        assert_eq!(agent.monitor().await.unwrap(), ResourceState::Stopped);
        answer("stop", 7);
        agent.stop().await.unwrap();
        answer("start", 0);
        agent.start().await.unwrap();

        for (code, meaning) in [
            (1, "generic error"),
            (2, "invalid arguments"),
            (3, "unimplemented action"),
            (4, "insufficient privileges"),
            (5, "not installed"),
            (6, "not configured"),
            (7, "not running"),
            (42, "unknown exit code"),
        ] {
            answer("start", code);
            let err = agent.start().await.unwrap_err().to_string();
            assert_eq!(err, format!("resource `vip`: OCF agent {path} start exited {code} ({meaning})"));
        }
        for code in [1, 5, 8] {
            answer("monitor", code);
            let err = agent.monitor().await.unwrap_err().to_string();
            assert!(err.contains(&format!("monitor exited {code} ({})", meaning(code))), "{err}");
            answer("stop", code);
            let err = agent.stop().await.unwrap_err().to_string();
            assert!(err.contains(&format!("stop exited {code}")), "{err}");
        }
    }

    #[tokio::test]
    async fn failure_message_keeps_the_last_lines_of_the_agent_log() {
        let (_root, runner, agent, path) = scripted();
        let log = "INFO: checking\nINFO: adding 198.51.100.10/24\n\nERROR: RTNETLINK answers: Operation not permitted\nERROR: failed\n";
        runner.on([path.as_str(), "start"], Output { code: 1, stdout: "ignored".into(), stderr: log.into() });
        let err = agent.start().await.unwrap_err().to_string();
        assert!(
            err.ends_with("(generic error): INFO: adding 198.51.100.10/24 | ERROR: RTNETLINK answers: Operation not permitted | ERROR: failed"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_runner_failure_is_a_command_error() {
        let (_root, runner, agent, path) = scripted();
        runner.fail_spawn([path.as_str()], "Exec format error");
        let err = agent.monitor().await.unwrap_err().to_string();
        assert!(err.contains("resource `vip`") && err.contains("Exec format error"), "{err}");
    }
}
