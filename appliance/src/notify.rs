//! The one place notifications leave the daemon: a log line, each configured hook script
//! run with a cleared environment and explicit `PBXHA_*` variables (so a script behaves the
//! same from systemd, a shell or a test), and — when `[mail]` is configured — a mail written
//! to the watchdog crate's durable outbox before anything tries to send it.
//!
//! A failover or switchover is one mail: [`Timeline`] collects, in memory, the entries the
//! daemon journals from the suspicion to the end of the takeover, and [`switchover_report`]
//! turns them into the report. Collecting in memory rather than reading the journal back
//! avoids racing its writer thread.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use pbxha_runner::{Cmd, Runner};
use pbxha_watchdog::checks::{State, Transition};
use pbxha_watchdog::mailer::MailHandle;
use pbxha_watchdog::outbox::{format_ms, NewMail, Outbox};
use pbxha_watchdog::report::{self, Alert, Move, SwitchoverReport, TimelineEntry};
use serde::{Deserialize, Serialize};

use crate::fsm::{Notice, RecordKind, Severity};
use crate::journal::{Entry, Kind};

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
        (_, State::Down, false) => Some(Alert::CheckDown { check, detail }),
        (_, State::Down, true) => Some(Alert::ReplicationBroken { detail: format!("{check}: {detail}") }),
        (State::Down, State::Up, false) => Some(Alert::CheckUp { check, detail }),
        (State::Down, State::Up, true) => Some(Alert::ReplicationRestored { detail: format!("{check}: {detail}") }),
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
                    _ = stop.changed() => return,
                }
            }
        });
        shared
    }
}

/// How often the outbox's state is read for `pbxha status`.
pub const MAIL_STATUS_EVERY: Duration = Duration::from_secs(2);

/// Suspicions this long before a takeover decision open its timeline (the journal's
/// `SUSPICION_LOOKBACK_MS`, for the same reason).
const SUSPICION_LOOKBACK_MS: u64 = 60_000;

/// Entries kept before a decision: a suspicion, link and peer lines; bounded so a flapping
/// link cannot grow it.
const BEFORE_KEEP: usize = 64;

/// The current failover's entries, collected as the daemon journals them (also from the
/// resource group's task, hence the lock). Cheap to clone.
#[derive(Clone, Default)]
pub struct Timeline(Arc<Mutex<TimelineState>>);

#[derive(Default)]
struct TimelineState {
    before: VecDeque<Entry>,
    open: Option<Vec<Entry>>,
}

impl Timeline {
    /// Feeds one journal entry; returns the whole timeline when it was the `FailoverEnd`.
    pub fn observe(&self, e: &Entry) -> Option<Vec<Entry>> {
        let mut st = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match (&e.kind, st.open.take()) {
            (Kind::Record(RecordKind::FailoverBegin), _) => {
                // As the journal does: the timeline starts at the first recent suspicion.
                let since = e.at_ms.saturating_sub(SUSPICION_LOOKBACK_MS);
                let before = std::mem::take(&mut st.before);
                let first =
                    before.iter().position(|b| b.kind == Kind::Record(RecordKind::Suspicion) && b.at_ms >= since);
                let mut entries: Vec<Entry> = first.map_or_else(Vec::new, |i| before.into_iter().skip(i).collect());
                entries.push(e.clone());
                st.open = Some(entries);
                None
            }
            (Kind::Record(RecordKind::FailoverEnd), Some(mut entries)) => {
                entries.push(e.clone());
                Some(entries)
            }
            (_, Some(mut entries)) => {
                entries.push(e.clone());
                st.open = Some(entries);
                None
            }
            (_, None) => {
                if st.before.len() == BEFORE_KEEP {
                    st.before.pop_front();
                }
                st.before.push_back(e.clone());
                None
            }
        }
    }
}

/// What the daemon knows about a failover besides its journal entries.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FailoverContext {
    /// The node that held the group before, when this node saw it hold it.
    pub old_primary: Option<String>,
    /// The peer handed over (switchover, standby, its own fault) rather than dying.
    pub planned: bool,
    pub active_calls: Option<u32>,
    /// Resource names that announce with gratuitous ARP when they start.
    pub garp: Vec<String>,
    pub drbd: Option<String>,
    pub mysql: Option<String>,
}

/// The timeline line for the calls the old primary had when this node took over: on a
/// planned move the count it reported as it handed over (its drain's final count), after a
/// death the last count it reported, which are the calls dropped. `None` when nobody held
/// the group before or its count is unknown.
pub fn calls_at_takeover(ctx: &FailoverContext) -> Option<String> {
    let (peer, calls) = (ctx.old_primary.as_ref()?, ctx.active_calls?);
    Some(if ctx.planned {
        format!("calls at the move: {calls} (count from {peer} as it handed over)")
    } else {
        format!("calls dropped: {calls} (last count from peer {peer})")
    })
}

/// Whether a finished timeline is a takeover that did not get the group running.
pub fn takeover_failed(entries: &[Entry]) -> bool {
    entries.last().is_some_and(|e| e.message == crate::fsm::TAKEOVER_FAILED)
}

/// The switchover report for a finished timeline (`entries` from [`Timeline::observe`]).
pub fn switchover_report(cluster: &str, local: &str, entries: &[Entry], ctx: &FailoverContext) -> SwitchoverReport {
    let begin = entries.iter().find(|e| e.kind == Kind::Record(RecordKind::FailoverBegin));
    let failed = takeover_failed(entries);
    let why =
        begin.map_or("unknown", |b| b.message.strip_prefix(&format!("{local} takes over: ")).unwrap_or(&b.message));
    SwitchoverReport {
        cluster: cluster.into(),
        // The decision's wall-clock time: unique per node and stable, so the dedup key holds.
        failover_id: begin.map_or(0, |b| b.at_ms),
        kind: if ctx.planned { Move::Switchover } else { Move::Failover },
        old_primary: ctx.old_primary.clone(),
        new_primary: local.into(),
        reason: if failed { format!("{why}; takeover FAILED") } else { why.into() },
        timeline: entries.iter().map(|e| timeline_entry(e, &ctx.garp)).collect(),
        active_calls: ctx.active_calls,
        drbd: ctx.drbd.clone(),
        mysql: ctx.mysql.clone(),
    }
}

fn timeline_entry(e: &Entry, garp: &[String]) -> TimelineEntry {
    let (what, duration_ms, ok) = match &e.kind {
        Kind::Record(kind) => {
            let label = match kind {
                RecordKind::Suspicion => "suspicion",
                RecordKind::FailoverBegin => "decision",
                RecordKind::FailoverEnd => "done",
                RecordKind::RoleChange => "role",
                RecordKind::Peer => "peer",
                RecordKind::Link => "link",
                RecordKind::Health => "health",
                RecordKind::Admin => "admin",
                RecordKind::SplitBrain => "split brain",
            };
            (format!("{label}: {}", e.message), None, None)
        }
        Kind::Resource { resource, action, duration_ms, ok } => {
            let mut what = format!("{resource} {}", action.outcome(*ok));
            if !e.message.is_empty() {
                what.push_str(&format!(": {}", e.message));
            }
            // The vip resource sends its first gratuitous ARP before its start returns.
            if *ok && *action == crate::resources::ResourceAction::Start && garp.contains(resource) {
                what.push_str("; gratuitous ARP sent");
            }
            (what, Some(*duration_ms), Some(*ok))
        }
    };
    TimelineEntry { at_ms: e.at_ms, node: e.node.clone(), what, duration_ms, ok }
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

    fn rec(at_ms: u64, kind: RecordKind, message: &str) -> Entry {
        Entry { at_ms, node: "b".into(), kind: Kind::Record(kind), message: message.into() }
    }

    fn start(at_ms: u64, resource: &str, duration_ms: u64, ok: bool) -> Entry {
        let kind = Kind::Resource {
            resource: resource.into(),
            action: crate::resources::ResourceAction::Start,
            duration_ms,
            ok,
        };
        Entry { at_ms, node: "b".into(), kind, message: String::new() }
    }

    #[test]
    fn a_timeline_runs_from_the_recent_suspicion_to_the_end() {
        let t = Timeline::default();
        let t0 = 1_714_564_800_000;
        let feed = [
            rec(t0 - 120_000, RecordKind::Suspicion, "old flap"),
            rec(t0 - 90_000, RecordKind::Link, "link hb up"),
            rec(t0, RecordKind::Suspicion, "peer a silent on all links for 310 ms"),
            rec(t0 + 300, RecordKind::Peer, "peer a dead"),
            rec(t0 + 301, RecordKind::FailoverBegin, "b takes over: peer a is dead"),
            start(t0 + 340, "vip", 35, true),
            start(t0 + 900, "pbx", 540, true),
        ];
        for e in &feed {
            assert_eq!(t.observe(e), None);
        }
        let done = t.observe(&rec(t0 + 901, RecordKind::FailoverEnd, "b holds the group")).unwrap();
        assert_eq!(done.len(), 6, "from the recent suspicion on: {done:#?}");
        assert_eq!(done[0].message, "peer a silent on all links for 310 ms");
        assert_eq!(t.observe(&rec(t0 + 950, RecordKind::Health, "later")), None, "closed");

        let ctx = FailoverContext { old_primary: Some("a".into()), garp: vec!["vip".into()], ..Default::default() };
        let r = switchover_report("pbx", "b", &done, &ctx);
        assert_eq!((r.failover_id, r.kind, r.reason.as_str()), (t0 + 301, Move::Failover, "peer a is dead"));
        let m = report::switchover_mail(&r);
        assert_eq!(m.subject, "[pbx] failover: a → b (peer a is dead)");
        for line in [
            "suspicion: peer a silent",
            "decision: b takes over",
            "vip started; gratuitous ARP sent (35 ms)",
            "pbx started (540 ms)",
            "done: b holds the group",
        ] {
            assert!(m.body.contains(line), "{line} missing from\n{}", m.body);
        }
    }

    #[test]
    fn a_failed_takeover_says_so() {
        let t = Timeline::default();
        t.observe(&rec(10, RecordKind::FailoverBegin, "b takes over: peer a handed over"));
        t.observe(&start(20, "vip", 5, false));
        let done = t.observe(&rec(30, RecordKind::FailoverEnd, "takeover failed")).unwrap();
        let ctx = FailoverContext { planned: true, garp: vec!["vip".into()], ..Default::default() };
        let r = switchover_report("pbx", "b", &done, &ctx);
        assert_eq!((r.kind, r.reason.as_str()), (Move::Switchover, "peer a handed over; takeover FAILED"));
        assert_eq!(r.timeline[1].what, "vip failed to start");
    }

    #[test]
    fn calls_at_takeover_are_dropped_after_a_death_and_moved_after_a_hand_over() {
        let mut ctx = FailoverContext { old_primary: Some("a".into()), active_calls: Some(3), ..Default::default() };
        assert_eq!(calls_at_takeover(&ctx).as_deref(), Some("calls dropped: 3 (last count from peer a)"));
        ctx.planned = true;
        assert_eq!(calls_at_takeover(&ctx).as_deref(), Some("calls at the move: 3 (count from a as it handed over)"));
        ctx.active_calls = None;
        assert_eq!(calls_at_takeover(&ctx), None, "an unknown count is not zero");
        let cold = FailoverContext { active_calls: Some(0), ..Default::default() };
        assert_eq!(calls_at_takeover(&cold), None, "a cold start dropped nothing");
    }

    #[test]
    fn check_changes_become_alerts_but_the_first_up_does_not() {
        let t = |from, to| Transition { check: "db".into(), from, to, detail: "x".into(), at_ms: 1 };
        assert_eq!(check_alert(&t(State::Unknown, State::Up), false), None);
        assert!(matches!(check_alert(&t(State::Unknown, State::Down), false), Some(Alert::CheckDown { .. })));
        assert!(matches!(check_alert(&t(State::Down, State::Up), false), Some(Alert::CheckUp { .. })));
        assert!(matches!(check_alert(&t(State::Up, State::Down), true), Some(Alert::ReplicationBroken { .. })));
        assert!(matches!(check_alert(&t(State::Down, State::Up), true), Some(Alert::ReplicationRestored { .. })));
    }
}
