//! The resource group executor: one tokio task that owns the ordered group, starts it in
//! order, stops it in reverse, monitors each running member on its own interval, restarts a
//! failed member locally within the `[group]` restart budget, and tells the fsm what happened
//! through [`Event::Group`].
//!
//! Commands from the daemon are queued and handled one at a time, so a stop queued behind a
//! start runs right after that start, and no monitor ever runs while the group is starting or
//! stopping. Monitors run one after the other inside the task, so a hung monitor delays the
//! others by at most its monitor timeout. Every wait uses `tokio::time`, so tests run the
//! executor under paused time.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{Resource, ResourceState};
use crate::config::{GroupConfig, ResourceConfig};
use crate::fsm::{Event, GroupEvent};
use crate::summary::GroupPhase;
use crate::Error;

/// The limits the executor applies to one resource, from its `[[resource]]` table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    pub start: Duration,
    pub stop: Duration,
    pub monitor: Duration,
    /// Time between the end of one monitor and the start of the next.
    pub monitor_interval: Duration,
}

impl From<&ResourceConfig> for Timeouts {
    fn from(config: &ResourceConfig) -> Self {
        Timeouts {
            start: config.start_timeout,
            stop: config.stop_timeout,
            monitor: config.monitor_timeout,
            monitor_interval: config.monitor_interval,
        }
    }
}

/// One member of the group as the executor sees it.
#[derive(Clone)]
pub struct Member {
    /// The config's kind name (`service`, `ocf`, `vip`), shown in status.
    pub kind: &'static str,
    pub timeouts: Timeouts,
    pub resource: Arc<dyn Resource>,
}

impl Member {
    /// A member built from its config and the resource the kind's `build` made from it.
    pub fn new(config: &ResourceConfig, resource: Arc<dyn Resource>) -> Self {
        Member { kind: config.kind.name(), timeouts: Timeouts::from(config), resource }
    }
}

/// What the executor did to a resource, for the journal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ResourceAction {
    Start,
    Stop,
    Monitor,
    /// A local stop + start after a failed monitor.
    Restart,
    Reannounce,
}

impl ResourceAction {
    /// Every action, for reading names back from the journal.
    pub const ALL: [ResourceAction; 5] = [
        ResourceAction::Start,
        ResourceAction::Stop,
        ResourceAction::Monitor,
        ResourceAction::Restart,
        ResourceAction::Reannounce,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ResourceAction::Start => "start",
            ResourceAction::Stop => "stop",
            ResourceAction::Monitor => "monitor",
            ResourceAction::Restart => "restart",
            ResourceAction::Reannounce => "reannounce",
        }
    }

    /// How a timeline says it: "started", "failed to start".
    pub fn outcome(self, ok: bool) -> &'static str {
        match (self, ok) {
            (ResourceAction::Start, true) => "started",
            (ResourceAction::Stop, true) => "stopped",
            (ResourceAction::Monitor, true) => "monitor ok",
            (ResourceAction::Restart, true) => "restarted",
            (ResourceAction::Reannounce, true) => "re-announced",
            (ResourceAction::Start, false) => "failed to start",
            (ResourceAction::Stop, false) => "failed to stop",
            (ResourceAction::Monitor, false) => "monitor failed",
            (ResourceAction::Restart, false) => "failed to restart",
            (ResourceAction::Reannounce, false) => "failed to re-announce",
        }
    }
}

/// One journal line about one resource action: every start and stop, every restart, and every
/// failed monitor or reannounce (successful monitors are too frequent to record).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ResourceReport {
    pub resource: String,
    pub action: ResourceAction,
    pub ok: bool,
    /// Feeds the failover timeline ("each resource start with duration").
    pub duration: Duration,
    /// The error when `ok` is false, otherwise a short note (may be empty).
    pub message: String,
}

/// Where reports go; the daemon wires it to the journal.
pub type Reporter = Arc<dyn Fn(ResourceReport) + Send + Sync>;

/// A member's state as `pbxha status` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MemberState {
    Running,
    Stopped,
    Starting,
    Stopping,
    /// Would not start or stop, or failed more often than the restart budget allows. Not
    /// monitored until the group is started again.
    Failed,
}

/// One line of `pbxha status` for a resource.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceStatus {
    pub name: String,
    pub kind: String,
    pub state: MemberState,
    /// Local restarts within the current `restart-window`.
    pub restarts: u32,
    /// Every local restart since the group was built: a counter for /metrics, which the
    /// sliding window above is not.
    pub restarts_total: u64,
    pub last_error: Option<String>,
    pub last_action: Option<ResourceAction>,
    pub last_action_ms: Option<u64>,
}

/// Per-member bookkeeping shared between the task (writer) and [`GroupHandle::status`].
struct Slot {
    name: String,
    kind: &'static str,
    state: MemberState,
    /// When each local restart in the window happened; pruned as the window slides.
    restarts: VecDeque<Instant>,
    restarts_total: u64,
    last_error: Option<String>,
    last_action: Option<(ResourceAction, Duration)>,
}

struct Shared {
    phase: GroupPhase,
    slots: Vec<Slot>,
}

enum Command {
    /// `released`: the peer said it released the group (see [`Resource::start_released`]).
    Start {
        released: bool,
    },
    Stop,
    Reannounce,
    RestartFailed,
}

/// The daemon's handle on the executor task. Cloning it shares the same task; the task ends
/// when the last handle is dropped (without touching the resources: stopping is an explicit
/// command).
#[derive(Clone)]
pub struct GroupHandle {
    commands: mpsc::UnboundedSender<Command>,
    shared: Arc<Mutex<Shared>>,
    window: Duration,
}

impl GroupHandle {
    /// Queues a start of the whole group; answered by `Started` or `StartFailed`.
    pub fn start(&self) {
        self.send(Command::Start { released: false });
    }

    /// Like [`GroupHandle::start`], after the peer said it released the group: members may
    /// skip checks for a previous holder.
    pub fn start_released(&self) {
        self.send(Command::Start { released: true });
    }

    /// Queues a stop of the whole group; answered by `Stopped` or `StopFailed`.
    pub fn stop(&self) {
        self.send(Command::Stop);
    }

    /// Queues a reannounce (gratuitous ARP again) on every running resource.
    pub fn reannounce(&self) {
        self.send(Command::Reannounce);
    }

    /// Queues a restart of every failed member of the running group; each answers with
    /// `Recovered` or `ResourceFailed`.
    pub fn restart_failed(&self) {
        self.send(Command::RestartFailed);
    }

    fn send(&self, command: Command) {
        if self.commands.send(command).is_err() {
            // Only possible if the task panicked, which it is written never to do.
            tracing::error!("resource group executor is gone; command dropped");
        }
    }

    /// Where the group stands, for the heartbeat summary. A group whose stop failed stays
    /// `Stopping`: the peer must not take over resources this node may still hold.
    pub fn phase(&self) -> GroupPhase {
        lock(&self.shared).phase
    }

    /// Every member in group order, for `pbxha status`.
    pub fn status(&self) -> Vec<ResourceStatus> {
        let now = Instant::now();
        lock(&self.shared)
            .slots
            .iter()
            .map(|slot| ResourceStatus {
                name: slot.name.clone(),
                kind: slot.kind.into(),
                state: slot.state,
                restarts: slot.restarts.iter().filter(|at| now.duration_since(**at) < self.window).count() as u32,
                restarts_total: slot.restarts_total,
                last_error: slot.last_error.clone(),
                last_action: slot.last_action.map(|(action, _)| action),
                last_action_ms: slot.last_action.map(|(_, took)| took.as_millis() as u64),
            })
            .collect()
    }
}

/// The lock is only held for plain field updates, never across an await, so a poisoned lock
/// can only come from a panic elsewhere; the data is still consistent enough to show.
fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Starts the executor task for `members` (in group order) and returns its handle.
pub fn spawn_group(
    members: Vec<Member>,
    policy: GroupConfig,
    events: mpsc::Sender<Event>,
    report: Reporter,
) -> GroupHandle {
    let slots = members
        .iter()
        .map(|m| Slot {
            name: m.resource.name().to_string(),
            kind: m.kind,
            state: MemberState::Stopped,
            restarts: VecDeque::new(),
            restarts_total: 0,
            last_error: None,
            last_action: None,
        })
        .collect();
    let shared = Arc::new(Mutex::new(Shared { phase: GroupPhase::Stopped, slots }));
    let (tx, rx) = mpsc::unbounded_channel();
    let window = policy.restart_window;
    let next_monitor = vec![None; members.len()];
    let executor = Executor { members, policy, events, report, shared: shared.clone(), next_monitor };
    tokio::spawn(executor.run(rx));
    GroupHandle { commands: tx, shared, window }
}

struct Executor {
    members: Vec<Member>,
    policy: GroupConfig,
    events: mpsc::Sender<Event>,
    report: Reporter,
    shared: Arc<Mutex<Shared>>,
    /// When each member is due for its next monitor; `None` while it is not monitored.
    next_monitor: Vec<Option<Instant>>,
}

impl Executor {
    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        loop {
            let due = self.next_monitor.iter().flatten().min().copied();
            tokio::select! {
                command = commands.recv() => match command {
                    Some(Command::Start { released }) => self.start_group(released).await,
                    Some(Command::Stop) => self.stop_group().await,
                    Some(Command::Reannounce) => self.reannounce().await,
                    Some(Command::RestartFailed) => self.restart_failed().await,
                    None => break,
                },
                () = sleep_until_due(due) => self.monitor_due().await,
            }
        }
        tracing::debug!("resource group executor stopped: every handle was dropped");
    }

    async fn start_group(&mut self, released: bool) {
        self.set_phase(GroupPhase::Starting);
        self.next_monitor.fill(None);
        for i in 0..self.members.len() {
            let mut shared = lock(&self.shared);
            // A fresh start from the fsm is a new decision: old failures no longer count.
            shared.slots[i].restarts.clear();
            shared.slots[i].last_error = None;
        }
        for i in 0..self.members.len() {
            if let Err(err) = self.start_member(i, ResourceAction::Start, released).await {
                let conflict = matches!(err, Error::VipConflict { .. });
                let resource = self.name(i);
                let mut reason = err.to_string();
                // The failed member is stopped too: a start that timed out or failed midway
                // may have left part of it behind.
                self.set_phase(GroupPhase::Stopping);
                let cleanup = self.stop_members((0..=i).rev()).await;
                let held = cleanup.is_some();
                if let Some((name, err)) = cleanup {
                    reason.push_str(&format!("; stopping `{name}` afterwards also failed: {err}"));
                } else {
                    self.set_phase(GroupPhase::Stopped);
                }
                self.emit(GroupEvent::StartFailed { resource, reason, conflict, held }).await;
                return;
            }
        }
        let now = Instant::now();
        for (i, member) in self.members.iter().enumerate() {
            self.next_monitor[i] = Some(now + member.timeouts.monitor_interval);
        }
        self.set_phase(GroupPhase::Running);
        self.emit(GroupEvent::Started).await;
    }

    async fn stop_group(&mut self) {
        self.set_phase(GroupPhase::Stopping);
        self.next_monitor.fill(None);
        match self.stop_members((0..self.members.len()).rev()).await {
            None => {
                self.set_phase(GroupPhase::Stopped);
                self.emit(GroupEvent::Stopped).await;
            }
            Some((resource, err)) => {
                self.emit(GroupEvent::StopFailed { resource, reason: err.to_string() }).await;
            }
        }
    }

    /// Stops the members in the given order, going on past failures so that as much as
    /// possible is released; returns the first failure.
    async fn stop_members(&mut self, order: impl Iterator<Item = usize>) -> Option<(String, Error)> {
        let mut first = None;
        for i in order {
            if let Err(err) = self.stop_member(i, ResourceAction::Stop).await {
                first.get_or_insert((self.name(i), err));
            }
        }
        first
    }

    async fn start_member(&mut self, i: usize, action: ResourceAction, released: bool) -> Result<(), Error> {
        let member = self.members[i].clone();
        self.set_state(i, MemberState::Starting);
        let started = Instant::now();
        let start = async {
            if released {
                member.resource.start_released().await
            } else {
                member.resource.start().await
            }
        };
        let result = within(&member, "start", member.timeouts.start, start).await;
        let took = started.elapsed();
        self.finish(i, action, took, &result, MemberState::Running);
        result
    }

    async fn stop_member(&mut self, i: usize, action: ResourceAction) -> Result<(), Error> {
        let member = self.members[i].clone();
        self.set_state(i, MemberState::Stopping);
        let started = Instant::now();
        let result = within(&member, "stop", member.timeouts.stop, member.resource.stop()).await;
        let took = started.elapsed();
        self.finish(i, action, took, &result, MemberState::Stopped);
        result
    }

    /// Records the outcome of a start or stop in the member's slot and in the journal.
    fn finish(
        &self,
        i: usize,
        action: ResourceAction,
        took: Duration,
        result: &Result<(), Error>,
        ok_state: MemberState,
    ) {
        let message = match result {
            Ok(()) => String::new(),
            Err(err) => err.to_string(),
        };
        {
            let mut shared = lock(&self.shared);
            let slot = &mut shared.slots[i];
            slot.last_action = Some((action, took));
            if result.is_ok() {
                slot.state = ok_state;
            } else {
                slot.state = MemberState::Failed;
                slot.last_error = Some(message.clone());
            }
        }
        match result {
            Ok(()) => {
                tracing::info!(resource = %self.name(i), action = action.as_str(), ms = took.as_millis() as u64, "done")
            }
            Err(_) => {
                tracing::warn!(resource = %self.name(i), action = action.as_str(), ms = took.as_millis() as u64, error = %message, "failed")
            }
        }
        if action != ResourceAction::Restart {
            self.send_report(i, action, result.is_ok(), took, message);
        }
    }

    /// Runs every monitor that is due, one after the other.
    async fn monitor_due(&mut self) {
        for i in 0..self.members.len() {
            if self.next_monitor[i].is_some_and(|due| due <= Instant::now()) {
                self.monitor(i).await;
            }
        }
    }

    async fn monitor(&mut self, i: usize) {
        let member = self.members[i].clone();
        let started = Instant::now();
        let outcome = within(&member, "monitor", member.timeouts.monitor, member.resource.monitor()).await;
        let took = started.elapsed();
        let reason = match outcome {
            Ok(ResourceState::Running) => {
                self.next_monitor[i] = Some(Instant::now() + member.timeouts.monitor_interval);
                return;
            }
            Ok(ResourceState::Stopped) => "monitor found it stopped".to_string(),
            Err(err) => err.to_string(),
        };
        tracing::warn!(resource = %self.name(i), %reason, "monitor failed");
        self.send_report(i, ResourceAction::Monitor, false, took, reason.clone());
        lock(&self.shared).slots[i].last_error = Some(reason.clone());
        if self.restart_budget_left(i) {
            if self.restart(i, &reason).await {
                self.next_monitor[i] = Some(Instant::now() + member.timeouts.monitor_interval);
            } else {
                // It would not even stop: it may still hold what it held. No more local
                // restarts; the fsm decides (and a hand-over's stop will meet the same).
                self.next_monitor[i] = None;
                self.set_state(i, MemberState::Failed);
                let resource = self.name(i);
                let reason = format!("{reason}; stopping it for a restart failed");
                self.emit(GroupEvent::ResourceFailed { resource, reason }).await;
            }
        } else {
            self.next_monitor[i] = None;
            self.set_state(i, MemberState::Failed);
            let resource = self.name(i);
            let reason = format!(
                "{reason} (after {} local restart(s) within {:?})",
                self.policy.max_restarts, self.policy.restart_window
            );
            self.emit(GroupEvent::ResourceFailed { resource, reason }).await;
        }
    }

    /// Slides the restart window; true when one more restart fits in it.
    fn restart_budget_left(&self, i: usize) -> bool {
        let now = Instant::now();
        let window = self.policy.restart_window;
        let mut shared = lock(&self.shared);
        let restarts = &mut shared.slots[i].restarts;
        while restarts.front().is_some_and(|at| now.duration_since(*at) >= window) {
            restarts.pop_front();
        }
        restarts.len() < self.policy.max_restarts as usize
    }

    /// Stops and starts member `i`; false when the stop failed (it may still be held). A
    /// start that fails leaves the member stopped and monitored, so the next monitor spends
    /// another restart from the budget on it.
    async fn restart(&mut self, i: usize, cause: &str) -> bool {
        {
            let slot = &mut lock(&self.shared).slots[i];
            slot.restarts.push_back(Instant::now());
            slot.restarts_total += 1;
        }
        let started = Instant::now();
        if let Err(err) = self.stop_member(i, ResourceAction::Restart).await {
            let message = format!("restart after `{cause}` failed: could not stop it: {err}");
            self.send_report(i, ResourceAction::Restart, false, started.elapsed(), message);
            return false;
        }
        let result = self.start_member(i, ResourceAction::Restart, false).await;
        let message = match &result {
            Ok(()) => format!("restarted after: {cause}"),
            Err(err) => {
                // Stopped cleanly, then failed to start: the next monitor spends another
                // restart on it (whose stop clears whatever the failed start left).
                self.set_state(i, MemberState::Stopped);
                format!("restart after `{cause}` failed: {err}")
            }
        };
        self.send_report(i, ResourceAction::Restart, result.is_ok(), started.elapsed(), message);
        true
    }

    /// The fsm's second chance for members whose local restarts ran out (failure-timeout
    /// passed with nobody to hand over to, or `pbxha online`): stop what may be left of each,
    /// start it again with a fresh restart budget, and monitor it again if it runs.
    async fn restart_failed(&mut self) {
        if lock(&self.shared).phase != GroupPhase::Running {
            return;
        }
        for i in 0..self.members.len() {
            if lock(&self.shared).slots[i].state != MemberState::Failed {
                continue;
            }
            lock(&self.shared).slots[i].restarts.clear();
            let resource = self.name(i);
            let outcome = match self.stop_member(i, ResourceAction::Restart).await {
                Err(err) => Err(format!("could not stop it for the restart: {err}")),
                Ok(()) => self.start_member(i, ResourceAction::Restart, false).await.map_err(|e| e.to_string()),
            };
            match outcome {
                Ok(()) => {
                    self.next_monitor[i] = Some(Instant::now() + self.members[i].timeouts.monitor_interval);
                    self.send_report(
                        i,
                        ResourceAction::Restart,
                        true,
                        Duration::ZERO,
                        "restarted after its failure".into(),
                    );
                    self.emit(GroupEvent::Recovered { resource }).await;
                }
                Err(reason) => {
                    self.set_state(i, MemberState::Failed);
                    self.next_monitor[i] = None;
                    self.emit(GroupEvent::ResourceFailed { resource, reason }).await;
                }
            }
        }
    }

    async fn reannounce(&mut self) {
        for i in 0..self.members.len() {
            if lock(&self.shared).slots[i].state != MemberState::Running {
                continue;
            }
            let member = self.members[i].clone();
            let started = Instant::now();
            // Announcing is part of acquiring the resource, so it gets the start timeout.
            let result = within(&member, "reannounce", member.timeouts.start, member.resource.reannounce()).await;
            if let Err(err) = result {
                tracing::warn!(resource = %self.name(i), error = %err, "reannounce failed");
                self.send_report(i, ResourceAction::Reannounce, false, started.elapsed(), err.to_string());
            }
        }
    }

    fn name(&self, i: usize) -> String {
        self.members[i].resource.name().to_string()
    }

    fn set_phase(&self, phase: GroupPhase) {
        lock(&self.shared).phase = phase;
    }

    fn set_state(&self, i: usize, state: MemberState) {
        lock(&self.shared).slots[i].state = state;
    }

    fn send_report(&self, i: usize, action: ResourceAction, ok: bool, duration: Duration, message: String) {
        (self.report)(ResourceReport { resource: self.name(i), action, ok, duration, message });
    }

    async fn emit(&self, event: GroupEvent) {
        if self.events.send(Event::Group(event)).await.is_err() {
            tracing::debug!("event channel closed; the daemon is shutting down");
        }
    }
}

/// Sleeps until `due`, or forever when nothing is due.
async fn sleep_until_due(due: Option<Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due).await,
        None => std::future::pending().await,
    }
}

/// Runs one resource action under its timeout; a timeout becomes an error naming the action.
async fn within<T>(
    member: &Member,
    action: &str,
    limit: Duration,
    future: impl std::future::Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    match tokio::time::timeout(limit, future).await {
        Ok(result) => result,
        Err(_) => Err(Error::Resource {
            resource: member.resource.name().to_string(),
            message: format!("{action} did not finish within {limit:?}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use async_trait::async_trait;

    use super::*;

    /// What one scripted call of the fake does.
    #[derive(Clone, Copy, Debug)]
    enum Outcome {
        Ok,
        /// Monitor only: the resource is not running.
        Stopped,
        Fail,
        Conflict,
        Slow(Duration),
        Hang,
    }

    /// A resource whose every answer is scripted per action (unscripted calls succeed, and
    /// monitors say running) and whose calls go to a log shared by the whole group.
    struct Fake {
        name: String,
        log: Arc<Mutex<Vec<String>>>,
        script: Mutex<HashMap<&'static str, VecDeque<Outcome>>>,
    }

    impl Fake {
        fn script(&self, action: &'static str, outcomes: &[Outcome]) {
            self.script.lock().unwrap().entry(action).or_default().extend(outcomes);
        }

        async fn call(&self, action: &'static str) -> Result<ResourceState, Error> {
            self.log.lock().unwrap().push(format!("{}:{action}", self.name));
            let outcome = self.script.lock().unwrap().get_mut(action).and_then(VecDeque::pop_front);
            let resource = self.name.clone();
            match outcome.unwrap_or(Outcome::Ok) {
                Outcome::Ok => Ok(ResourceState::Running),
                Outcome::Stopped => Ok(ResourceState::Stopped),
                Outcome::Fail => Err(Error::Resource { resource, message: format!("{action} broke") }),
                Outcome::Conflict => Err(Error::VipConflict {
                    resource,
                    vip: "198.51.100.10".into(),
                    holder: "02:00:00:00:00:02".into(),
                }),
                Outcome::Slow(took) => {
                    tokio::time::sleep(took).await;
                    Ok(ResourceState::Running)
                }
                Outcome::Hang => std::future::pending().await,
            }
        }
    }

    #[async_trait]
    impl Resource for Fake {
        fn name(&self) -> &str {
            &self.name
        }
        async fn start(&self) -> Result<(), Error> {
            self.call("start").await.map(drop)
        }
        async fn stop(&self) -> Result<(), Error> {
            self.call("stop").await.map(drop)
        }
        async fn monitor(&self) -> Result<ResourceState, Error> {
            self.call("monitor").await
        }
        async fn reannounce(&self) -> Result<(), Error> {
            self.call("reannounce").await.map(drop)
        }
    }

    const TIMEOUTS: Timeouts = Timeouts {
        start: Duration::from_secs(20),
        stop: Duration::from_secs(20),
        monitor: Duration::from_secs(5),
        monitor_interval: Duration::from_secs(10),
    };

    struct Group {
        handle: GroupHandle,
        events: mpsc::Receiver<Event>,
        log: Arc<Mutex<Vec<String>>>,
        reports: Arc<Mutex<Vec<ResourceReport>>>,
        fakes: HashMap<String, Arc<Fake>>,
    }

    fn group(names: &[&str], max_restarts: u32, restart_window: Duration) -> Group {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut fakes = HashMap::new();
        let members = names
            .iter()
            .map(|name| {
                let fake = Arc::new(Fake { name: name.to_string(), log: log.clone(), script: Mutex::default() });
                fakes.insert(name.to_string(), fake.clone());
                Member { kind: "service", timeouts: TIMEOUTS, resource: fake }
            })
            .collect();
        let (tx, events) = mpsc::channel(16);
        let reports = Arc::new(Mutex::new(Vec::new()));
        let sink = reports.clone();
        let report: Reporter = Arc::new(move |r| sink.lock().unwrap().push(r));
        let handle = spawn_group(
            members,
            GroupConfig {
                max_restarts,
                restart_window,
                failure_timeout: restart_window,
                drain_timeout: crate::config::DEFAULT_DRAIN_TIMEOUT,
            },
            tx,
            report,
        );
        Group { handle, events, log, reports, fakes }
    }

    impl Group {
        fn fake(&self, name: &str) -> &Fake {
            &self.fakes[name]
        }

        async fn next(&mut self) -> GroupEvent {
            match tokio::time::timeout(Duration::from_secs(3600), self.events.recv()).await {
                Ok(Some(Event::Group(event))) => event,
                other => panic!("expected a group event, got {other:?}"),
            }
        }

        /// Takes the log so far.
        fn calls(&self) -> Vec<String> {
            std::mem::take(&mut *self.log.lock().unwrap())
        }

        fn count(&self, call: &str) -> usize {
            self.log.lock().unwrap().iter().filter(|c| *c == call).count()
        }

        fn reports(&self) -> Vec<(String, ResourceAction, bool)> {
            self.reports.lock().unwrap().iter().map(|r| (r.resource.clone(), r.action, r.ok)).collect()
        }
    }

    fn state_of(group: &Group, name: &str) -> MemberState {
        group.handle.status().into_iter().find(|s| s.name == name).map(|s| s.state).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn starts_in_order_and_stops_in_reverse() {
        let mut g = group(&["drbd", "fs", "vip"], 3, Duration::from_secs(60));
        g.fake("fs").script("start", &[Outcome::Slow(Duration::from_secs(3))]);
        g.handle.start();
        assert_eq!(g.next().await, GroupEvent::Started);
        assert_eq!(g.handle.phase(), GroupPhase::Running);
        assert_eq!(g.calls(), ["drbd:start", "fs:start", "vip:start"]);
        let fs = g.reports.lock().unwrap().iter().find(|r| r.resource == "fs").cloned().unwrap();
        assert_eq!((fs.action, fs.ok, fs.duration), (ResourceAction::Start, true, Duration::from_secs(3)));

        g.handle.stop();
        assert_eq!(g.next().await, GroupEvent::Stopped);
        assert_eq!(g.calls(), ["vip:stop", "fs:stop", "drbd:stop"]);
        assert_eq!(g.handle.phase(), GroupPhase::Stopped);
        assert_eq!(g.reports().len(), 6, "every start and stop is reported");
        assert!(g.handle.status().iter().all(|s| s.state == MemberState::Stopped));
    }

    #[tokio::test(start_paused = true)]
    async fn failed_start_stops_what_was_started_in_reverse() {
        let mut g = group(&["drbd", "fs", "vip"], 3, Duration::from_secs(60));
        g.fake("fs").script("start", &[Outcome::Fail]);
        g.handle.start();
        let GroupEvent::StartFailed { resource, reason, conflict, held } = g.next().await else {
            panic!("not a start failure")
        };
        assert_eq!((resource.as_str(), conflict, held), ("fs", false, false));
        assert!(reason.contains("start broke"), "{reason}");
        assert_eq!(g.calls(), ["drbd:start", "fs:start", "fs:stop", "drbd:stop"]);
        assert_eq!(g.handle.phase(), GroupPhase::Stopped);
        assert!(g.reports().contains(&("fs".into(), ResourceAction::Start, false)));
    }

    #[tokio::test(start_paused = true)]
    async fn vip_conflict_is_flagged() {
        let mut g = group(&["fs", "vip"], 3, Duration::from_secs(60));
        g.fake("vip").script("start", &[Outcome::Conflict]);
        g.handle.start();
        let GroupEvent::StartFailed { resource, conflict, .. } = g.next().await else { panic!("not a start failure") };
        assert_eq!((resource.as_str(), conflict), ("vip", true));
    }

    #[tokio::test(start_paused = true)]
    async fn a_hung_start_times_out() {
        let mut g = group(&["drbd", "fs"], 3, Duration::from_secs(60));
        g.fake("fs").script("start", &[Outcome::Hang]);
        let began = Instant::now();
        g.handle.start();
        let GroupEvent::StartFailed { resource, reason, .. } = g.next().await else { panic!("not a start failure") };
        assert_eq!(resource, "fs");
        assert!(reason.contains("start did not finish within 20s"), "{reason}");
        assert_eq!(began.elapsed(), TIMEOUTS.start);
        assert_eq!(g.calls(), ["drbd:start", "fs:start", "fs:stop", "drbd:stop"]);
    }

    #[tokio::test(start_paused = true)]
    async fn cleanup_failure_after_a_failed_start_is_in_the_reason() {
        let mut g = group(&["drbd", "fs"], 3, Duration::from_secs(60));
        g.fake("fs").script("start", &[Outcome::Fail]);
        g.fake("drbd").script("stop", &[Outcome::Fail]);
        g.handle.start();
        let GroupEvent::StartFailed { reason, held, .. } = g.next().await else { panic!("not a start failure") };
        assert!(held, "the fsm must be told something may still be held");
        assert!(reason.contains("stopping `drbd` afterwards also failed"), "{reason}");
        assert_eq!(g.handle.phase(), GroupPhase::Stopping, "drbd may still be held");
    }

    #[tokio::test(start_paused = true)]
    async fn stop_goes_on_past_failures_and_names_the_first() {
        let mut g = group(&["drbd", "fs", "vip", "pbx"], 3, Duration::from_secs(60));
        g.handle.start();
        assert_eq!(g.next().await, GroupEvent::Started);
        g.calls();
        g.fake("vip").script("stop", &[Outcome::Hang]);
        g.fake("fs").script("stop", &[Outcome::Fail]);
        g.handle.stop();
        let GroupEvent::StopFailed { resource, reason } = g.next().await else { panic!("not a stop failure") };
        assert_eq!(resource, "vip");
        assert!(reason.contains("stop did not finish within 20s"), "{reason}");
        assert_eq!(g.calls(), ["pbx:stop", "vip:stop", "fs:stop", "drbd:stop"]);
        assert_eq!(g.handle.phase(), GroupPhase::Stopping);
        assert_eq!(state_of(&g, "vip"), MemberState::Failed);
        assert_eq!(state_of(&g, "drbd"), MemberState::Stopped);

        // A later stop retries, and succeeds now that the script is spent.
        g.handle.stop();
        assert_eq!(g.next().await, GroupEvent::Stopped);
        assert_eq!(g.handle.phase(), GroupPhase::Stopped);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_queued_behind_a_start_runs_right_after_it_without_monitors() {
        let mut g = group(&["fs", "vip"], 3, Duration::from_secs(60));
        // The start takes longer than a monitor interval: still no monitor may run.
        g.fake("vip").script("start", &[Outcome::Slow(TIMEOUTS.monitor_interval * 3 / 2)]);
        g.handle.start();
        g.handle.stop();
        assert_eq!(g.next().await, GroupEvent::Started);
        assert_eq!(g.next().await, GroupEvent::Stopped);
        assert_eq!(g.calls(), ["fs:start", "vip:start", "vip:stop", "fs:stop"]);
        tokio::time::sleep(TIMEOUTS.monitor_interval * 5).await;
        assert_eq!(g.calls(), Vec::<String>::new(), "a stopped group is not monitored");
    }

    #[tokio::test(start_paused = true)]
    async fn monitors_each_resource_on_its_interval() {
        let mut g = group(&["fs", "vip"], 3, Duration::from_secs(60));
        g.handle.start();
        assert_eq!(g.next().await, GroupEvent::Started);
        tokio::time::sleep(TIMEOUTS.monitor_interval * 3 + Duration::from_secs(1)).await;
        assert_eq!(g.count("fs:monitor"), 3);
        assert_eq!(g.count("vip:monitor"), 3);
        assert!(g.reports().iter().all(|r| r.1 != ResourceAction::Monitor), "healthy monitors are not reported");
    }

    #[tokio::test(start_paused = true)]
    async fn failed_monitor_restarts_locally_then_gives_up() {
        let mut g = group(&["fs", "pbx"], 2, Duration::from_secs(300));
        g.handle.start();
        assert_eq!(g.next().await, GroupEvent::Started);
        g.calls();
        g.fake("pbx").script("monitor", &[Outcome::Stopped, Outcome::Fail, Outcome::Hang]);
        let GroupEvent::ResourceFailed { resource, reason } = g.next().await else { panic!("not a resource failure") };
        assert_eq!(resource, "pbx");
        assert!(reason.contains("monitor did not finish within 5s"), "{reason}");
        assert!(reason.contains("after 2 local restart(s)"), "{reason}");
        let pbx: Vec<String> = g.calls().into_iter().filter(|c| c.starts_with("pbx")).collect();
        assert_eq!(
            pbx,
            ["pbx:monitor", "pbx:stop", "pbx:start", "pbx:monitor", "pbx:stop", "pbx:start", "pbx:monitor"]
        );
        let reports = g.reports();
        let restarts = reports.iter().filter(|r| r.1 == ResourceAction::Restart && r.2).count();
        let failed_monitors = reports.iter().filter(|r| r.1 == ResourceAction::Monitor && !r.2).count();
        assert_eq!((restarts, failed_monitors), (2, 3));

        let status = g.handle.status();
        assert_eq!(status[1].state, MemberState::Failed);
        assert_eq!(status[1].restarts, 2);
        assert!(status[1].last_error.as_deref().is_some_and(|e| e.contains("did not finish")));

        // Given up: pbx is no longer monitored, fs still is.
        tokio::time::sleep(TIMEOUTS.monitor_interval * 5).await;
        let later = g.calls();
        assert!(!later.iter().any(|c| c.starts_with("pbx")), "{later:?}");
        assert!(later.contains(&"fs:monitor".to_string()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_restart_whose_stop_fails_is_escalated_at_once() {
        let mut g = group(&["vip", "pbx"], 3, Duration::from_secs(60));
        g.handle.start();
        assert_eq!(g.next().await, GroupEvent::Started);
        g.fake("vip").script("monitor", &[Outcome::Stopped]);
        g.fake("vip").script("stop", &[Outcome::Fail]);
        let GroupEvent::ResourceFailed { resource, reason } = g.next().await else {
            panic!("expected the failed restart to be escalated")
        };
        assert_eq!(resource, "vip");
        assert!(reason.contains("stopping it for a restart failed"), "{reason}");
        assert_eq!(g.handle.status()[0].state, MemberState::Failed, "not `stopped`: it may still be held");
        assert_eq!(g.count("vip:start"), 1, "no start after a failed stop");
    }

    #[tokio::test(start_paused = true)]
    async fn restarts_outside_the_window_do_not_count() {
        // One restart allowed per 15 s; failures 20 s apart are each restarted.
        let mut g = group(&["pbx"], 1, Duration::from_secs(15));
        g.handle.start();
        assert_eq!(g.next().await, GroupEvent::Started);
        g.fake("pbx").script("monitor", &[Outcome::Stopped, Outcome::Ok, Outcome::Stopped, Outcome::Ok]);
        let quiet = tokio::time::timeout(TIMEOUTS.monitor_interval * 6, g.next()).await;
        assert!(quiet.is_err(), "no event expected, got {quiet:?}");
        assert_eq!(g.count("pbx:stop"), 2);
        assert_eq!(g.handle.status()[0].state, MemberState::Running);

        // Two failures 10 s apart exceed it.
        g.fake("pbx").script("monitor", &[Outcome::Stopped, Outcome::Stopped]);
        assert!(matches!(g.next().await, GroupEvent::ResourceFailed { .. }));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_restart_is_retried_at_the_next_monitor() {
        let mut g = group(&["pbx"], 3, Duration::from_secs(300));
        g.handle.start();
        assert_eq!(g.next().await, GroupEvent::Started);
        g.calls();
        g.fake("pbx").script("monitor", &[Outcome::Stopped, Outcome::Stopped]);
        g.fake("pbx").script("start", &[Outcome::Fail]);
        tokio::time::sleep(TIMEOUTS.monitor_interval * 2 + Duration::from_secs(1)).await;
        assert_eq!(g.calls(), ["pbx:monitor", "pbx:stop", "pbx:start", "pbx:monitor", "pbx:stop", "pbx:start"]);
        assert!(g.reports().contains(&("pbx".into(), ResourceAction::Restart, false)));
        assert_eq!(g.handle.status()[0].state, MemberState::Running);
        assert_eq!(g.handle.status()[0].restarts, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_start_forgets_old_restarts() {
        let mut g = group(&["pbx"], 1, Duration::from_secs(300));
        g.handle.start();
        assert_eq!(g.next().await, GroupEvent::Started);
        g.fake("pbx").script("monitor", &[Outcome::Stopped, Outcome::Stopped]);
        assert!(matches!(g.next().await, GroupEvent::ResourceFailed { .. }));
        g.handle.start();
        assert_eq!(g.next().await, GroupEvent::Started);
        let status = &g.handle.status()[0];
        assert_eq!((status.state, status.restarts, status.last_error.clone()), (MemberState::Running, 0, None));
        // The counter behind pbxha_resource_restarts_total never goes back.
        assert_eq!(status.restarts_total, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn reannounce_touches_only_running_resources() {
        let mut g = group(&["fs", "vip"], 3, Duration::from_secs(60));
        g.handle.reannounce();
        g.handle.start();
        assert_eq!(g.next().await, GroupEvent::Started);
        g.fake("vip").script("reannounce", &[Outcome::Fail]);
        g.handle.reannounce();
        g.handle.stop();
        assert_eq!(g.next().await, GroupEvent::Stopped);
        assert_eq!(g.calls(), ["fs:start", "vip:start", "fs:reannounce", "vip:reannounce", "vip:stop", "fs:stop"]);
        assert!(g.reports().contains(&("vip".into(), ResourceAction::Reannounce, false)));
    }

    #[tokio::test(start_paused = true)]
    async fn status_serializes_for_pbxha_status() {
        let mut g = group(&["fs"], 3, Duration::from_secs(60));
        g.fake("fs").script("start", &[Outcome::Slow(Duration::from_millis(1500))]);
        g.handle.start();
        assert_eq!(g.next().await, GroupEvent::Started);
        let json = serde_json::to_value(g.handle.status()).unwrap();
        assert_eq!(
            json,
            serde_json::json!([{
                "name": "fs", "kind": "service", "state": "running", "restarts": 0, "restarts_total": 0,
                "last_error": null, "last_action": "start", "last_action_ms": 1500
            }])
        );
    }
}
