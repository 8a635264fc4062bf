//! The one place notifications leave the daemon: a log line, and each configured hook script
//! run with a cleared environment and explicit `PBXHA_*` variables (so a script behaves the
//! same from systemd, a shell or a test). Mail joins here through the watchdog crate's outbox.

use std::sync::Arc;
use std::time::Duration;

use pbxha_runner::{Cmd, Runner};

use crate::fsm::{Notice, Severity};

/// How long a hook may run before its process group is killed: a hung script must not pile up.
const HOOK_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone)]
pub struct Notifier {
    cluster: String,
    node: String,
    hooks: Vec<Vec<String>>,
    runner: Arc<dyn Runner>,
}

impl Notifier {
    pub fn new(cluster: &str, node: &str, hooks: Vec<Vec<String>>, runner: Arc<dyn Runner>) -> Self {
        Notifier { cluster: cluster.into(), node: node.into(), hooks, runner }
    }

    /// Logs the notice and starts every hook in the background; never blocks the caller.
    pub fn send(&self, notice: &Notice) {
        match notice.severity {
            Severity::Info => tracing::info!(subject = %notice.subject, "{}", notice.body),
            Severity::Warning => tracing::warn!(subject = %notice.subject, "{}", notice.body),
            Severity::Critical => tracing::error!(subject = %notice.subject, "{}", notice.body),
        }
        for argv in &self.hooks {
            let cmd = self.hook_cmd(argv, notice);
            let runner = self.runner.clone();
            tokio::spawn(async move {
                match runner.run(&cmd).await {
                    Ok(out) if out.success() => {}
                    Ok(out) => tracing::warn!(hook = %cmd, code = out.code, stderr = %out.stderr.trim(), "notification hook failed"),
                    Err(e) => tracing::warn!(error = %e, "notification hook failed"),
                }
            });
        }
    }

    fn hook_cmd(&self, argv: &[String], notice: &Notice) -> Cmd {
        let severity = match notice.severity {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        };
        Cmd::new(argv.iter().cloned())
            .clear_env()
            .timeout(HOOK_TIMEOUT)
            .env("PBXHA_CLUSTER", &self.cluster)
            .env("PBXHA_NODE", &self.node)
            .env("PBXHA_SEVERITY", severity)
            .env("PBXHA_SUBJECT", &notice.subject)
            .env("PBXHA_BODY", &notice.body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pbxha_runner::{Output, ScriptedRunner};

    #[tokio::test]
    async fn hooks_get_a_cleared_environment_with_pbxha_variables() {
        let runner = Arc::new(ScriptedRunner::new());
        runner.on(["/usr/local/bin/alert"], Output::ok(""));
        let n = Notifier::new("pbx", "a", vec![vec!["/usr/local/bin/alert".into(), "--page".into()]], runner.clone());
        n.send(&Notice { severity: Severity::Critical, subject: "split brain".into(), body: "both primary".into() });
        for _ in 0..100 {
            if !runner.calls().is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let call = &runner.calls()[0];
        assert!(call.clear_env);
        assert_eq!(call.to_string(), "/usr/local/bin/alert --page");
        let env: std::collections::BTreeMap<_, _> = call.env.iter().cloned().collect();
        assert_eq!(env["PBXHA_SEVERITY"], "critical");
        assert_eq!(env["PBXHA_SUBJECT"], "split brain");
        assert_eq!(env["PBXHA_NODE"], "a");
    }
}
