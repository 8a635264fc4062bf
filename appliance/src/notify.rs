//! The one place notifications leave the daemon: a log line, each configured hook script
//! run with a cleared environment and explicit `PBXHA_*` variables (so a script behaves the
//! same from systemd, a shell or a test), and — when `[mail]` is configured — a mail written
//! to the watchdog crate's durable outbox before anything tries to send it.
//!
//! A failover or switchover is one mail, put together by [`crate::failover`].

use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use pbxha_runner::{Cmd, Runner};
use pbxha_telephony::Health;
use pbxha_watchdog::checks::Transition;
use pbxha_watchdog::mailer::MailHandle;
use pbxha_watchdog::outbox::{format_ms, NewMail, Outbox};
use pbxha_watchdog::report::{self, Alert, SwitchoverReport};
use serde::{Deserialize, Serialize};

use crate::fsm::{Notice, Severity};

/// How long a hook may run before its process group is killed: a hung script must not pile up.
const HOOK_TIMEOUT: Duration = Duration::from_secs(30);

/// Cheap to clone, and every clone sees a reload's settings ([`Notifier::reconfigure`]):
/// the probe and MySQL watchers keep the clones they were given at start.
#[derive(Clone)]
pub struct Notifier {
    node: String,
    runner: Arc<dyn Runner>,
    settings: Arc<RwLock<Settings>>,
}

/// What a reload may change.
struct Settings {
    cluster: String,
    hooks: Vec<Vec<String>>,
    /// The outbox, when `[mail]` is configured.
    mail: Option<MailHandle>,
}

impl Notifier {
    pub fn new(cluster: &str, node: &str, hooks: Vec<Vec<String>>, runner: Arc<dyn Runner>) -> Self {
        let settings = Settings { cluster: cluster.into(), hooks, mail: None };
        Notifier { node: node.into(), runner, settings: Arc::new(RwLock::new(settings)) }
    }

    /// Also mails, through the outbox behind `mail`.
    pub fn with_mail(self, mail: Option<MailHandle>) -> Self {
        self.write().mail = mail;
        self
    }

    /// A reload's cluster name, hooks and outbox, for this notifier and all its clones.
    pub fn reconfigure(&self, cluster: &str, hooks: Vec<Vec<String>>, mail: Option<MailHandle>) {
        *self.write() = Settings { cluster: cluster.into(), hooks, mail };
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Settings> {
        // Settings are replaced whole, so a panic elsewhere cannot leave them half-written.
        self.settings.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Settings> {
        self.settings.write().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Logs the notice and starts every hook in the background; critical notices (split
    /// brain, failed resources, a VIP conflict) are mailed too. Role changes and peer death
    /// are not: the switchover report tells them. Never blocks the caller.
    pub fn send(&self, notice: &Notice) {
        let cluster = self.read().cluster.clone();
        let mail = (notice.severity == Severity::Critical).then(|| {
            let now = crate::unix_ms();
            NewMail {
                dedup_key: format!("notice:{}:{now}", notice.subject),
                subject: format!("[{cluster}] {}", notice.subject),
                body: format!(
                    "Cluster: {cluster}\nNode:    {}\nTime:    {}\n\n{}\n",
                    self.node,
                    format_ms(now),
                    notice.body
                ),
            }
        });
        self.fan_out(notice, mail);
    }

    /// A check, replication or admin alert: log, hooks and mail.
    pub fn alert(&self, alert: &Alert, at_ms: u64) {
        let mail = report::alert_mail(&self.read().cluster, &self.node, alert, at_ms);
        let severity = match alert {
            Alert::CheckDown { .. } | Alert::ReplicationBroken { .. } | Alert::SplitBrain { .. } => Severity::Critical,
            _ => Severity::Info,
        };
        let notice = Notice { severity, subject: mail.subject.clone(), body: mail.body.clone() };
        self.fan_out(&notice, Some(mail));
    }

    /// The one mail of a failover or switchover (hooks hear it too).
    pub fn switchover(&self, r: &SwitchoverReport) {
        let mail = report::switchover_mail(r);
        let notice = Notice { severity: Severity::Warning, subject: mail.subject.clone(), body: mail.body.clone() };
        self.fan_out(&notice, Some(mail));
    }

    fn fan_out(&self, notice: &Notice, mail: Option<NewMail>) {
        match notice.severity {
            Severity::Info => tracing::info!(subject = %notice.subject, "{}", notice.body),
            Severity::Warning => tracing::warn!(subject = %notice.subject, "{}", notice.body),
            Severity::Critical => tracing::error!(subject = %notice.subject, "{}", notice.body),
        }
        let settings = self.read();
        if let (Some(handle), Some(mail)) = (&settings.mail, mail) {
            handle.queue(mail);
        }
        for argv in &settings.hooks {
            let cmd = self.hook_cmd(&settings.cluster, argv, notice);
            let runner = self.runner.clone();
            tokio::spawn(async move {
                match runner.run(&cmd).await {
                    Ok(out) if out.success() => {}
                    Ok(out) => {
                        tracing::warn!(hook = %cmd, code = out.code, stderr = %out.stderr.trim(), "notification hook failed")
                    }
                    Err(e) => tracing::warn!(error = %e, "notification hook failed"),
                }
            });
        }
    }

    fn hook_cmd(&self, cluster: &str, argv: &[String], notice: &Notice) -> Cmd {
        let severity = match notice.severity {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        };
        Cmd::new(argv.iter().cloned())
            .clear_env()
            .timeout(HOOK_TIMEOUT)
            .env("PBXHA_CLUSTER", cluster)
            .env("PBXHA_NODE", &self.node)
            .env("PBXHA_SEVERITY", severity)
            .env("PBXHA_SUBJECT", &notice.subject)
            .env("PBXHA_BODY", &notice.body)
    }
}

/// The alert a check's state change deserves: none for the first verdict `up`, replication
/// words for a `mysql-replication` check.
pub fn check_alert(t: &Transition, replication: bool) -> Option<Alert> {
    let (check, detail) = (t.check.clone(), t.detail.clone());
    match (t.from, t.to, replication) {
        (_, Health::Down, false) => Some(Alert::CheckDown { check, detail }),
        (_, Health::Down, true) => Some(Alert::ReplicationBroken { detail: format!("{check}: {detail}") }),
        (Health::Down, Health::Up, false) => Some(Alert::CheckUp { check, detail }),
        (Health::Down, Health::Up, true) => Some(Alert::ReplicationRestored { detail: format!("{check}: {detail}") }),
        _ => None,
    }
}

/// The outbox as `pbxha status` shows it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct MailStatus {
    /// Mails not yet accepted by the server.
    pub pending: usize,
    /// The newest failure among them: what an operator must fix.
    pub last_error: Option<String>,
}

impl MailStatus {
    /// Reads the outbox in `db` (read-only, beside the delivery loop).
    pub fn read(db: &Path) -> Result<MailStatus, pbxha_watchdog::Error> {
        let pending = Outbox::open_read_only(db)?.pending()?;
        let last_error = pending
            .iter()
            .filter(|m| m.last_error.is_some())
            .max_by_key(|m| m.next_attempt_ms)
            .and_then(|m| m.last_error.clone());
        Ok(MailStatus { pending: pending.len(), last_error })
    }

    /// Keeps a copy fresh in the background (every [`MAIL_STATUS_EVERY`]): `pbxha status`
    /// must not wait on the database from the loop that sends heartbeats.
    pub fn watch(
        db: std::path::PathBuf,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) -> Arc<Mutex<Option<MailStatus>>> {
        let shared = Arc::new(Mutex::new(None));
        let out = shared.clone();
        tokio::spawn(async move {
            loop {
                let path = db.clone();
                let read = tokio::task::spawn_blocking(move || MailStatus::read(&path)).await;
                let status = match read {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => MailStatus { pending: 0, last_error: Some(e.to_string()) },
                    Err(e) => MailStatus { pending: 0, last_error: Some(format!("reading the outbox: {e}")) },
                };
                *out.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(status);
                tokio::select! {
                    _ = tokio::time::sleep(MAIL_STATUS_EVERY) => {}
                    () = crate::stopped(&mut stop) => return,
                }
            }
        });
        shared
    }
}

/// How often the outbox's state is read for `pbxha status`.
pub const MAIL_STATUS_EVERY: Duration = Duration::from_secs(2);

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
        let call = &calls(&runner, 1).await[0];
        assert!(call.clear_env);
        assert_eq!(call.to_string(), "/usr/local/bin/alert --page");
        let env: std::collections::BTreeMap<_, _> = call.env.iter().cloned().collect();
        assert_eq!(env["PBXHA_SEVERITY"], "critical");
        assert_eq!(env["PBXHA_SUBJECT"], "split brain");
        assert_eq!(env["PBXHA_NODE"], "a");
    }

    /// Waits (bounded) until the runner has seen `n` hook runs; they start in the background.
    async fn calls(runner: &ScriptedRunner, n: usize) -> Vec<Cmd> {
        for _ in 0..200 {
            if runner.calls().len() >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let calls = runner.calls();
        assert_eq!(calls.len(), n, "{:?}", calls.iter().map(ToString::to_string).collect::<Vec<_>>());
        calls
    }

    #[tokio::test]
    async fn a_reload_reaches_clones_made_before_it() {
        let runner = Arc::new(ScriptedRunner::new());
        runner.on(["old-hook"], Output::ok(""));
        runner.on(["new-hook"], Output::ok(""));
        let n = Notifier::new("pbx", "a", vec![vec!["old-hook".into()]], runner.clone());
        // As the probe and MySQL watchers hold theirs.
        let held = n.clone();
        let notice = Notice { severity: Severity::Info, subject: "trunk back".into(), body: String::new() };
        held.send(&notice);
        calls(&runner, 1).await;
        n.reconfigure("pbx-renamed", vec![vec!["new-hook".into()]], None);
        held.send(&notice);
        let calls = calls(&runner, 2).await;
        assert_eq!(calls[1].to_string(), "new-hook");
        let env: std::collections::BTreeMap<_, _> = calls[1].env.iter().cloned().collect();
        assert_eq!(env["PBXHA_CLUSTER"], "pbx-renamed");
    }

    #[test]
    fn check_changes_become_alerts_but_the_first_up_does_not() {
        let t = |from, to| Transition { check: "db".into(), from, to, detail: "x".into(), at_ms: 1 };
        assert_eq!(check_alert(&t(Health::Unknown, Health::Up), false), None);
        assert!(matches!(check_alert(&t(Health::Unknown, Health::Down), false), Some(Alert::CheckDown { .. })));
        assert!(matches!(check_alert(&t(Health::Down, Health::Up), false), Some(Alert::CheckUp { .. })));
        assert!(matches!(check_alert(&t(Health::Up, Health::Down), true), Some(Alert::ReplicationBroken { .. })));
        assert!(matches!(check_alert(&t(Health::Down, Health::Up), true), Some(Alert::ReplicationRestored { .. })));
    }
}
