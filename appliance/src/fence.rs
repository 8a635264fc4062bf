//! DRBD fencing between the two daemons, and what DRBD promotion needs to know of the cluster.
//!
//! With `fencing resource-only` DRBD runs its fence-peer handler, `pbxha replica fence-peer`,
//! when it loses the replication link and must know whether the peer may still write. The
//! handler asks the local daemon (`Request::FencePeer`); the daemon raises `fence_request` in
//! its heartbeats; the peer's daemon, if it holds no group, runs `drbdadm outdate` on its
//! Secondary disks and answers `fenced`. The handler polls its daemon until a verdict, so the
//! main loop never waits on anyone.
//!
//! The peer's DRBD may not have seen the disconnect yet when the request arrives, and then
//! refuses ("Refusing to be Outdated while Connected", drbdsetup exit 11): the responder
//! retries every [`OUTDATE_RETRY`] for as long as the request stands. "Peer unreachable"
//! (exit 5) tells DRBD the peer is dead and its disk may be treated as outdated, so it is
//! only ever the answer for a peer silent on every link; a live peer that does not confirm
//! in time gets the failure code, which makes DRBD keep I/O frozen or refuse the change.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use pbxha_replica::drbd::control::Drbd;
use pbxha_replica::drbd::events::{events2_argv, follow_events, Backoff, DrbdEvent};
use pbxha_replica::drbd::promote::{in_sync, split_brain_report, ClusterFacts, PeerKnowledge};
use pbxha_replica::drbd::status::{ResourceStatus, Role as DrbdRole};
use pbxha_runner::Runner;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::config::{ResourceConfig, ResourceKind};
use crate::control::Reply;
use crate::fsm::{Event, Node, PeerStatus};
use crate::summary::{DrbdBrief, DrbdDisk, GroupPhase, NodeSummary, Role};

/// How many dead times the handler waits for the peer's answer: one to get the request
/// through, one for `drbdadm outdate`, one for the answer to come back.
pub const FENCE_DEADTIMES: u32 = 3;

/// A request whose deadline passed longer ago than this was left by a handler that is gone
/// (it polls every few hundred milliseconds): the next one starts afresh. The responder
/// likewise stops retrying once the peer's request has not been heard for this long.
const STALE_AFTER: Duration = Duration::from_secs(2);

/// The responder's pause between two `drbdadm outdate` attempts: the peer's DRBD notices a
/// lost connection within its ping timeout (drbd.conf(5) `ping-timeout`, 500 ms by default),
/// so a few attempts cover it without running drbdadm at every heartbeat.
pub const OUTDATE_RETRY: Duration = Duration::from_millis(300);

/// A backstop on the retries, whatever the peer keeps asking: ten minutes' worth.
const OUTDATE_MAX_ATTEMPTS: u32 = 2_000;

/// The answer to a fence-peer request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FenceVerdict {
    /// Asked, no answer yet: poll again.
    Pending,
    /// The peer outdated its disk.
    Outdated,
    /// The peer is dead: silent on every link.
    Unreachable,
    /// The peer is alive but did not confirm outdating its disk in time (its `drbdadm
    /// outdate` kept failing, or its answer did not arrive).
    Unconfirmed,
    /// The peer holds (or is moving) the group and refused to outdate.
    PeerPrimary,
    /// The peer's disk is Inconsistent (as its heartbeat says): it has no usable copy.
    PeerInconsistent,
}

impl FenceVerdict {
    /// The fence-peer handler's exit code (drbd.conf(5), "fence-peer": 3 the peer's disk
    /// is already Inconsistent, 4 the peer's disk is Outdated, 5 the peer could not be
    /// reached, 6 the peer refused because it is Primary); none while pending. Any other
    /// code is a failure: DRBD's kernel side (`conn_try_outdate_peer`) logs "fence-peer
    /// helper broken", changes no disk state and leaves I/O frozen where fencing froze it,
    /// which is right for a live peer whose disk may still be UpToDate.
    pub fn exit_code(self) -> Option<u8> {
        match self {
            FenceVerdict::Pending => None,
            FenceVerdict::Unconfirmed => Some(1),
            FenceVerdict::PeerInconsistent => Some(3),
            FenceVerdict::Outdated => Some(4),
            FenceVerdict::Unreachable => Some(5),
            FenceVerdict::PeerPrimary => Some(6),
        }
    }

    /// How the verdict travels in `Reply::status`.
    pub fn to_status(self) -> serde_json::Value {
        serde_json::json!({ "fence-peer": self })
    }

    /// The verdict in a reply from the daemon, if it carries one.
    pub fn from_status(status: &serde_json::Value) -> Option<FenceVerdict> {
        serde_json::from_value(status.get("fence-peer")?.clone()).ok()
    }
}

/// What the peer's state says about a fence request. Pure.
pub fn verdict(peer: &PeerStatus, expired: bool) -> (FenceVerdict, String) {
    let name = &peer.name;
    match peer.last {
        _ if !peer.alive => (FenceVerdict::Unreachable, format!("peer {name} is dead: silent on every link")),
        Some(p) if p.role == Role::Primary || p.group != GroupPhase::Stopped => (
            FenceVerdict::PeerPrimary,
            format!("peer {name} holds the group ({}, group {}); it keeps its disk", p.role, p.group.as_str()),
        ),
        Some(p) if p.drbd.is_some_and(|d| d.disk == DrbdDisk::Inconsistent) => {
            (FenceVerdict::PeerInconsistent, format!("peer {name} reports its DRBD disk Inconsistent"))
        }
        Some(p) if p.fenced => (FenceVerdict::Outdated, format!("peer {name} outdated its DRBD disk")),
        _ if expired => (
            FenceVerdict::Unconfirmed,
            format!(
                "peer {name} is alive but did not confirm outdating its disk in time; not reporting it \
                 unreachable, as its disk may still be UpToDate (see its log for `drbdadm outdate`)"
            ),
        ),
        _ => (FenceVerdict::Pending, format!("waiting for peer {name} to outdate its disk")),
    }
}

/// The responder's progress on the peer's current fence request.
const IDLE: u8 = 0;
const OUTDATING: u8 = 1;
const FENCED: u8 = 2;
/// Retried until the request lapsed or the backstop: not tried again until the peer asks
/// anew.
const FAILED: u8 = 3;

/// Fencing state of one daemon, both as the one asking and as the one asked.
#[derive(Default)]
pub struct Fencing {
    /// Asking the peer to outdate, until this deadline.
    asking: Option<Instant>,
    /// Answering the peer's request; written by the outdate task.
    responder: Arc<AtomicU8>,
    /// When the peer's request was last heard, so the outdate task stops retrying once the
    /// peer stopped asking or fell silent. On tokio's clock, so tests with paused time step
    /// through the retries.
    requested: Arc<Mutex<Option<tokio::time::Instant>>>,
    view: DrbdView,
}

impl Fencing {
    /// The handle the `drbd` resources read.
    pub fn view(&self) -> &DrbdView {
        &self.view
    }

    /// One poll of the fence-peer handler. Returns the reply and whether the heartbeat
    /// summary changed (the caller sends one at once rather than at the next interval).
    pub fn ask(&mut self, resource: &str, peer: &PeerStatus, deadtime: Duration, now: Instant) -> (Reply, bool) {
        let mut started = false;
        if self.asking.is_none_or(|deadline| now > deadline + STALE_AFTER) {
            self.asking = None;
            if peer.alive {
                self.asking = Some(now + deadtime * FENCE_DEADTIMES);
                started = true;
                tracing::info!(resource, peer = %peer.name, "DRBD fence-peer: asking the peer to outdate its disk");
            }
        }
        let expired = self.asking.is_none_or(|deadline| now >= deadline);
        let (v, message) = verdict(peer, expired);
        if v != FenceVerdict::Pending {
            started |= self.asking.take().is_some();
            tracing::info!(resource, verdict = ?v, "DRBD fence-peer: {message}");
        }
        let reply = Reply {
            ok: !matches!(v, FenceVerdict::Unreachable | FenceVerdict::Unconfirmed),
            message,
            status: Some(v.to_status()),
        };
        (reply, started)
    }

    /// Adds the fencing flags to the next heartbeat.
    pub fn mark(&self, summary: &mut NodeSummary, now: Instant) {
        summary.fence_request = self.asking.is_some_and(|deadline| now < deadline);
        summary.fenced = self.responder.load(Ordering::SeqCst) == FENCED;
    }

    /// A heartbeat from the peer: outdate the local DRBD disks if it asks and this node
    /// holds no group; forget the last answer once it stops asking.
    pub fn on_peer(&self, peer: &NodeSummary, own: GroupPhase, resources: &[ResourceConfig], runner: &Arc<dyn Runner>) {
        if !peer.fence_request {
            self.responder.store(IDLE, Ordering::SeqCst);
            return;
        }
        // A node holding the group keeps its disk; its role in the heartbeat is the refusal.
        // One that started the group while retrying stops retrying.
        if own != GroupPhase::Stopped {
            let _ = self.responder.compare_exchange(OUTDATING, IDLE, Ordering::SeqCst, Ordering::SeqCst);
            return;
        }
        *self.requested.lock().unwrap_or_else(PoisonError::into_inner) = Some(tokio::time::Instant::now());
        if self.responder.compare_exchange(IDLE, OUTDATING, Ordering::SeqCst, Ordering::SeqCst).is_err() {
            return;
        }
        let drbds: Vec<Drbd> = resources
            .iter()
            .filter_map(|r| match &r.kind {
                ResourceKind::Drbd(d) => Some(Drbd::new(runner.clone(), d.resource.clone(), d.syntax, d.minor)),
                _ => None,
            })
            .collect();
        let (responder, requested, view) = (self.responder.clone(), self.requested.clone(), self.view.clone());
        tokio::spawn(async move {
            let standing = || {
                responder.load(Ordering::SeqCst) == OUTDATING
                    && requested
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .is_some_and(|t| t.elapsed() < STALE_AFTER)
            };
            let mut attempt = 0;
            let done = loop {
                attempt += 1;
                let failure = match outdate_all(&drbds).await {
                    Ok(()) => break true,
                    Err(e) => e,
                };
                if attempt == 1 {
                    tracing::warn!(
                        "DRBD fencing: {failure}; retrying every {} ms while the peer asks",
                        OUTDATE_RETRY.as_millis()
                    );
                }
                if attempt < OUTDATE_MAX_ATTEMPTS && standing() {
                    tokio::time::sleep(OUTDATE_RETRY).await;
                    if standing() {
                        continue;
                    }
                }
                tracing::error!(
                    attempts = attempt,
                    "DRBD fencing: {failure}; stopped retrying (the peer stopped asking). Its fence-peer handler \
                     gets a failure, not \"unreachable\", so DRBD does not take this disk for outdated; it is \
                     not promoted here until it is in sync with the peer again or an operator runs `pbxha online`"
                );
                view.miss_fence();
                break false;
            };
            // The peer may have stopped asking meanwhile (IDLE): then the answer is stale.
            let _ = responder.compare_exchange(
                OUTDATING,
                if done { FENCED } else { FAILED },
                Ordering::SeqCst,
                Ordering::SeqCst,
            );
        });
    }

    /// Updates what the `drbd` resources know, after every fsm step.
    pub fn follow(&self, fsm: &Node, now: Instant) {
        let st = fsm.status(now);
        let peer = if st.peer.alive {
            PeerKnowledge::Alive
        } else if st.role == Role::Starting {
            // Within initdead a silent peer may just be booting.
            PeerKnowledge::Unknown
        } else {
            PeerKnowledge::Dead
        };
        self.view.set(peer, fsm.split_brain());
    }
}

/// Outdates every configured DRBD resource that is Secondary here. Fails, saying why, if
/// there is none, or any is Primary or cannot be outdated: the requester then hears no
/// `fenced` and, past its deadline, gives DRBD a failure.
async fn outdate_all(drbds: &[Drbd]) -> Result<(), String> {
    if drbds.is_empty() {
        return Err("the peer asks to outdate DRBD, but no drbd resource is configured here".into());
    }
    for d in drbds {
        let res = d.resource();
        match d.status().await {
            Ok(s) if s.role == DrbdRole::Secondary => {
                d.outdate().await.map_err(|e| format!("cannot outdate {res} for the peer: {e}"))?;
                tracing::info!("DRBD fencing: outdated {res} at the peer's request");
            }
            Ok(s) => {
                return Err(format!("{res} is {:?} here although this node holds no group; not outdating it", s.role));
            }
            Err(e) => return Err(format!("cannot read the state of {res}: {e}")),
        }
    }
    Ok(())
}

/// How often the first `drbd` resource's state is read for the heartbeat. events2 reports
/// changes sooner where it runs; this read also covers a follower that is down.
const STATUS_EVERY: Duration = Duration::from_secs(3);

/// This node's first `drbd` resource as last read: by `drbdsetup status` every
/// [`STATUS_EVERY`] and by the events2 follower, whose split-brain helper calls become
/// [`Event::SplitBrain`]. The heartbeat carries its [`DrbdBrief`].
#[derive(Clone, Default)]
pub struct LocalDrbd {
    latest: Arc<Mutex<Option<ResourceStatus>>>,
    /// Told when the copies are seen in sync again.
    view: DrbdView,
}

impl LocalDrbd {
    /// Starts the reader and the follower for the first `drbd` resource, if any; both stop
    /// once `events` is closed (the daemon exits).
    pub fn spawn(
        resources: &[ResourceConfig],
        runner: Arc<dyn Runner>,
        events: mpsc::Sender<Event>,
        view: &DrbdView,
    ) -> LocalDrbd {
        let local = LocalDrbd { view: view.clone(), ..LocalDrbd::default() };
        let Some(cfg) = resources.iter().find_map(|r| match &r.kind {
            ResourceKind::Drbd(d) => Some(d.clone()),
            _ => None,
        }) else {
            return local;
        };
        let drbd = Drbd::new(runner, cfg.resource.clone(), cfg.syntax, cfg.minor);
        let (reader, tx) = (local.clone(), events.clone());
        tokio::spawn(async move {
            while !tx.is_closed() {
                match drbd.status().await {
                    Ok(s) => reader.set(s),
                    Err(e) => {
                        tracing::debug!("reading DRBD {} for the heartbeat: {e}", drbd.resource());
                        reader.clear();
                    }
                }
                tokio::time::sleep(STATUS_EVERY).await;
            }
        });
        let (drbd_tx, mut drbd_rx) = mpsc::channel(64);
        tokio::spawn(follow_events(events2_argv(&cfg.resource), drbd_tx, Backoff::default()));
        let follower = local.clone();
        tokio::spawn(async move {
            while let Some(ev) = drbd_rx.recv().await {
                let ev = match ev {
                    DrbdEvent::Status(s) if s.name == cfg.resource => {
                        follower.set(s);
                        continue;
                    }
                    DrbdEvent::SplitBrain { resource, peer } => Event::SplitBrain {
                        report: format!(
                            "DRBD called its split-brain helper for {resource}'s connection to {peer} (drbdsetup events2)"
                        ),
                        resource,
                    },
                    _ => continue,
                };
                if events.send(ev).await.is_err() {
                    return;
                }
            }
        });
        local
    }

    fn set(&self, status: ResourceStatus) {
        if in_sync(&status) {
            self.view.clear_missed_fence("its copy is in sync with the peer's again");
        }
        *self.latest.lock().unwrap_or_else(PoisonError::into_inner) = Some(status);
    }

    fn clear(&self) {
        *self.latest.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// The last state read, if the last read succeeded.
    pub fn status(&self) -> Option<ResourceStatus> {
        self.latest.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// What the heartbeat says of it.
    pub fn brief(&self) -> Option<DrbdBrief> {
        self.status().as_ref().map(DrbdBrief::of)
    }
}

/// The split-brain alert text: this node's last read state of `resource` and the peer's as
/// its last heartbeat told, with what the reporter (DRBD's handler or events2) saw when this
/// node has no state of its own to show. Pure.
pub fn split_brain_detail(
    resource: &str,
    local: Option<&ResourceStatus>,
    peer: Option<DrbdBrief>,
    reported: &str,
) -> String {
    let peer = peer.map(|p| p.to_status(resource));
    match local.filter(|l| l.name == resource) {
        Some(l) => split_brain_report(l, peer.as_ref()),
        None => format!(
            "{reported}; peer as it last reported: {}",
            peer.as_ref().map_or_else(|| "unknown".to_string(), ResourceStatus::summary)
        ),
    }
}

/// What the cluster knows that DRBD's promotion rules need, shared with the `drbd` resources
/// (they promote from the group executor's tasks, away from the fsm).
#[derive(Clone, Default)]
pub struct DrbdView {
    peer: Arc<AtomicU8>,
    split_brain: Arc<AtomicBool>,
    /// The peer asked us to outdate and we never could (see `ClusterFacts::missed_fence`);
    /// cleared once the copies are seen in sync, or by `pbxha online`.
    missed_fence: Arc<AtomicBool>,
}

impl DrbdView {
    fn set(&self, peer: PeerKnowledge, split_brain: bool) {
        let code = match peer {
            PeerKnowledge::Unknown => 0,
            PeerKnowledge::Alive => 1,
            PeerKnowledge::Dead => 2,
        };
        self.peer.store(code, Ordering::SeqCst);
        self.split_brain.store(split_brain, Ordering::SeqCst);
    }

    /// Dead only when membership says so; unknown before the first verdict.
    pub fn peer(&self) -> PeerKnowledge {
        match self.peer.load(Ordering::SeqCst) {
            1 => PeerKnowledge::Alive,
            2 => PeerKnowledge::Dead,
            _ => PeerKnowledge::Unknown,
        }
    }

    /// A DRBD split brain is unresolved (the fsm's fault).
    pub fn split_brain(&self) -> bool {
        self.split_brain.load(Ordering::SeqCst)
    }

    /// Everything promotion needs to know besides the local DRBD status.
    pub fn facts(&self) -> ClusterFacts {
        ClusterFacts {
            peer: self.peer(),
            split_brain: self.split_brain(),
            missed_fence: self.missed_fence.load(Ordering::SeqCst),
        }
    }

    fn miss_fence(&self) {
        self.missed_fence.store(true, Ordering::SeqCst);
    }

    /// The operator checked the copies (`pbxha online`), or DRBD showed them in sync.
    pub fn clear_missed_fence(&self, why: &str) {
        if self.missed_fence.swap(false, Ordering::SeqCst) {
            tracing::info!("DRBD: this disk may be promoted again ({why})");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pbxha_runner::{Output, ScriptedRunner};

    fn summary(role: Role, group: GroupPhase) -> NodeSummary {
        NodeSummary {
            role,
            group,
            healthy: true,
            reachable: 0,
            targets: 0,
            handover: false,
            calls: None,
            fence_request: false,
            fenced: false,
            drbd: None,
        }
    }

    fn peer(alive: bool, last: Option<NodeSummary>) -> PeerStatus {
        PeerStatus { name: "b".into(), alive, last }
    }

    #[test]
    fn verdicts_map_to_drbd_exit_codes() {
        let secondary = summary(Role::Secondary, GroupPhase::Stopped);
        let fenced = NodeSummary { fenced: true, ..secondary };
        let inconsistent = NodeSummary {
            drbd: Some(DrbdBrief { role: crate::summary::DrbdRole::Secondary, disk: DrbdDisk::Inconsistent }),
            ..secondary
        };
        let cases = [
            (peer(false, Some(fenced)), false, FenceVerdict::Unreachable, Some(5)),
            (peer(true, Some(summary(Role::Primary, GroupPhase::Running))), false, FenceVerdict::PeerPrimary, Some(6)),
            (
                peer(true, Some(summary(Role::Secondary, GroupPhase::Stopping))),
                false,
                FenceVerdict::PeerPrimary,
                Some(6),
            ),
            (peer(true, Some(fenced)), true, FenceVerdict::Outdated, Some(4)),
            (peer(true, Some(secondary)), true, FenceVerdict::Unconfirmed, Some(1)),
            (peer(true, Some(secondary)), false, FenceVerdict::Pending, None),
            (peer(true, Some(inconsistent)), false, FenceVerdict::PeerInconsistent, Some(3)),
        ];
        for (p, expired, want, code) in cases {
            let (v, message) = verdict(&p, expired);
            assert_eq!((v, v.exit_code()), (want, code), "{message}");
            assert!(message.contains("peer b"), "{message}");
            assert_eq!(FenceVerdict::from_status(&v.to_status()), Some(v));
        }
    }

    #[test]
    fn asking_raises_the_flag_until_answered_or_expired() {
        let t0 = Instant::now();
        let dt = Duration::from_secs(1);
        let mut f = Fencing::default();
        let mut s = summary(Role::Primary, GroupPhase::Running);
        let secondary = summary(Role::Secondary, GroupPhase::Stopped);

        // A dead peer: answered at once, nothing asked.
        let (r, announce) = f.ask("r0", &peer(false, None), dt, t0);
        assert_eq!(FenceVerdict::from_status(r.status.as_ref().unwrap()), Some(FenceVerdict::Unreachable));
        f.mark(&mut s, t0);
        assert!(!announce && !s.fence_request);

        let (r, announce) = f.ask("r0", &peer(true, Some(secondary)), dt, t0);
        assert!(announce && r.ok);
        assert_eq!(FenceVerdict::from_status(r.status.as_ref().unwrap()), Some(FenceVerdict::Pending));
        f.mark(&mut s, t0);
        assert!(s.fence_request);

        let fenced = NodeSummary { fenced: true, ..secondary };
        let (r, _) = f.ask("r0", &peer(true, Some(fenced)), dt, t0 + dt);
        assert_eq!(FenceVerdict::from_status(r.status.as_ref().unwrap()), Some(FenceVerdict::Outdated));
        f.mark(&mut s, t0 + dt);
        assert!(!s.fence_request, "answered: the request is dropped");

        // A silent peer that stays alive: unreachable after FENCE_DEADTIMES dead times.
        let t1 = t0 + Duration::from_secs(60);
        f.ask("r0", &peer(true, Some(secondary)), dt, t1);
        let (r, _) = f.ask("r0", &peer(true, Some(secondary)), dt, t1 + dt * 2);
        assert_eq!(FenceVerdict::from_status(r.status.as_ref().unwrap()), Some(FenceVerdict::Pending));
        let (r, _) = f.ask("r0", &peer(true, Some(secondary)), dt, t1 + dt * FENCE_DEADTIMES);
        assert!(!r.ok && r.message.contains("in time"), "{}", r.message);
    }

    // `drbdsetup status --json` shape from drbd-utils 9 (see replica/src/drbd/status.rs).
    const SECONDARY: &str =
        r#"[{"name":"r0","role":"Secondary","devices":[{"volume":0,"disk-state":"UpToDate"}],"connections":[]}]"#;
    const PRIMARY: &str =
        r#"[{"name":"r0","role":"Primary","devices":[{"volume":0,"disk-state":"UpToDate"}],"connections":[]}]"#;

    /// The `drbd` resource as the config parser reads it (and rejects a wrong `syntax`).
    fn drbd_resources() -> Vec<ResourceConfig> {
        let key = crate::config::tests::key_file(0o600);
        let text = format!(
            "{}\n[[resource]]\nname = \"data\"\nkind = \"drbd\"\nresource = \"r0\"\nsyntax = \"SYNTAX\"\nallow-degraded = true\n",
            crate::config::tests::minimal(key.path())
        );
        let problems = crate::config::parse(&text.replace("SYNTAX", "8")).unwrap_err();
        assert!(problems.iter().any(|p| p.key.ends_with("syntax")), "{problems:?}");
        let resources = crate::config::parse(&text.replace("SYNTAX", "9")).unwrap().resources;
        match &resources[0].kind {
            ResourceKind::Drbd(d) => {
                assert!(d.allow_degraded && d.syntax == pbxha_replica::drbd::conf::Syntax::V9)
            }
            other => panic!("{other:?}"),
        }
        resources
    }

    #[test]
    fn the_split_brain_detail_shows_both_sides() {
        let local = pbxha_replica::drbd::status::parse_status_json(SECONDARY).unwrap().remove(0);
        let peer = DrbdBrief { role: crate::summary::DrbdRole::Primary, disk: DrbdDisk::UpToDate };
        let d = split_brain_detail("r0", Some(&local), Some(peer), "from the handler");
        assert!(
            d.contains("local: r0 role:Secondary disk:UpToDate") && d.contains("peer: r0 role:Primary disk:UpToDate"),
            "{d}"
        );
        assert_eq!(DrbdBrief::of(&peer.to_status("r0")), peer);
        // Nothing read here (or another resource): the reporter's text and the peer's side.
        let d = split_brain_detail("r1", Some(&local), None, "from the handler");
        assert_eq!(d, "from the handler; peer as it last reported: unknown");
    }

    /// Bounded in tokio time, which the paused tests advance on every sleep.
    async fn settle(f: &Fencing) -> u8 {
        for _ in 0..2_000 {
            let s = f.responder.load(Ordering::SeqCst);
            if s != OUTDATING {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("the outdate task did not finish");
    }

    #[tokio::test(start_paused = true)]
    async fn the_asked_node_outdates_a_secondary_disk_once_and_never_a_primary() {
        let resources = drbd_resources();
        let r = Arc::new(ScriptedRunner::new());
        r.on(["drbdsetup", "status"], Output::ok(SECONDARY));
        r.on(["drbdadm", "outdate"], Output::ok(""));
        let runner: Arc<dyn Runner> = r.clone();
        let f = Fencing::default();
        let request = NodeSummary { fence_request: true, ..summary(Role::Primary, GroupPhase::Running) };

        // Holding the group: refuse, run nothing.
        f.on_peer(&request, GroupPhase::Running, &resources, &runner);
        assert_eq!(f.responder.load(Ordering::SeqCst), IDLE);

        f.on_peer(&request, GroupPhase::Stopped, &resources, &runner);
        assert_eq!(settle(&f).await, FENCED);
        f.on_peer(&request, GroupPhase::Stopped, &resources, &runner);
        assert_eq!(r.argvs(), ["drbdsetup status --json r0", "drbdadm outdate r0"], "outdated once per request");
        let mut s = summary(Role::Secondary, GroupPhase::Stopped);
        f.mark(&mut s, Instant::now());
        assert!(s.fenced);

        // The request ends: forget the answer. A Primary disk is never outdated.
        f.on_peer(&summary(Role::Primary, GroupPhase::Running), GroupPhase::Stopped, &resources, &runner);
        f.mark(&mut s, Instant::now());
        assert!(!s.fenced);
        r.on(["drbdsetup", "status"], Output::ok(PRIMARY));
        f.on_peer(&request, GroupPhase::Stopped, &resources, &runner);
        assert_eq!(settle(&f).await, FAILED);
        assert_eq!(r.argvs().iter().filter(|a| a.starts_with("drbdadm outdate")).count(), 1);
    }

    /// What drbdsetup 9 prints and exits with when the peer's DRBD still sees the connection
    /// (drbdsetup.c: SS_CONNECTED_OUTDATES is not one of the codes it maps, so exit 11).
    fn refused_while_connected() -> Output {
        Output::failed(11, "r0: State change failed: (-6) Refusing to be Outdated while Connected\n")
    }

    fn outdates(r: &ScriptedRunner) -> usize {
        r.argvs().iter().filter(|a| a.starts_with("drbdadm outdate")).count()
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_outdate_is_retried_while_the_peer_asks() {
        let resources = drbd_resources();
        let r = Arc::new(ScriptedRunner::new());
        r.on(["drbdsetup", "status"], Output::ok(SECONDARY));
        r.on_seq(["drbdadm", "outdate"], vec![refused_while_connected(), Output::ok("")]);
        let runner: Arc<dyn Runner> = r.clone();
        let f = Fencing::default();
        let request = NodeSummary { fence_request: true, ..summary(Role::Primary, GroupPhase::Running) };
        let t0 = tokio::time::Instant::now();
        f.on_peer(&request, GroupPhase::Stopped, &resources, &runner);
        assert_eq!(settle(&f).await, FENCED);
        assert!(!f.view().facts().missed_fence);
        assert_eq!(outdates(&r), 2, "{:?}", r.argvs());
        let waited = t0.elapsed();
        assert!(waited >= OUTDATE_RETRY && waited < 2 * OUTDATE_RETRY, "retried after {waited:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn retries_stop_when_the_peer_stops_asking_or_this_node_takes_the_group() {
        let resources = drbd_resources();
        let r = Arc::new(ScriptedRunner::new());
        r.on(["drbdsetup", "status"], Output::ok(SECONDARY));
        r.on(["drbdadm", "outdate"], refused_while_connected());
        let runner: Arc<dyn Runner> = r.clone();
        let f = Fencing::default();
        let request = NodeSummary { fence_request: true, ..summary(Role::Primary, GroupPhase::Running) };
        // The peer asks with every heartbeat for 3 s, then falls silent.
        for _ in 0..30 {
            f.on_peer(&request, GroupPhase::Stopped, &resources, &runner);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(f.responder.load(Ordering::SeqCst), OUTDATING, "still retrying while asked");
        let asked = outdates(&r);
        assert!((9..=12).contains(&asked), "one attempt per {OUTDATE_RETRY:?} over 3 s: {asked}");
        assert_eq!(settle(&f).await, FAILED);
        assert!(f.view().facts().missed_fence, "a disk that could not be outdated is not promoted");
        f.view().clear_missed_fence("test");
        assert!(!f.view().facts().missed_fence);
        let after = outdates(&r);
        assert!(after - asked <= 8, "retries end within {STALE_AFTER:?} of the last request: {after} - {asked}");
        let mut s = summary(Role::Secondary, GroupPhase::Stopped);
        f.mark(&mut s, Instant::now());
        assert!(!s.fenced);

        // A new request retries again, and starting the group here stops it.
        f.on_peer(&summary(Role::Primary, GroupPhase::Running), GroupPhase::Stopped, &resources, &runner);
        f.on_peer(&request, GroupPhase::Stopped, &resources, &runner);
        tokio::time::sleep(OUTDATE_RETRY * 2).await;
        f.on_peer(&request, GroupPhase::Starting, &resources, &runner);
        let stopped_at = outdates(&r);
        tokio::time::sleep(OUTDATE_RETRY * 10).await;
        assert_eq!(outdates(&r), stopped_at, "no retries once the group starts here");
        assert_eq!(f.responder.load(Ordering::SeqCst), IDLE);
    }
}
