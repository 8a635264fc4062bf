//! DRBD fencing between the two daemons, and what DRBD promotion needs to know of the cluster.
//!
//! The decisions (the request's deadline, the verdict and its exit code, the responder's
//! retries) are the fsm's (`crate::fsm::fence`); here are their edges: the reply on the
//! control socket, `drbdadm outdate` off the main loop, and what the `drbd` resources read.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use pbxha_replica::drbd::control::Drbd;
use pbxha_replica::drbd::events::{events2_argv, follow_events, Backoff, DrbdEvent};
use pbxha_replica::drbd::promote::{in_sync, split_brain_report, ClusterFacts, PeerKnowledge};
use pbxha_replica::drbd::status::{ResourceStatus, Role as DrbdRole};
use pbxha_runner::Runner;
use tokio::sync::{mpsc, watch};

use crate::config::{ResourceConfig, ResourceKind};
use crate::control::Reply;
use crate::fsm::{Event, Node};
use crate::summary::{DrbdBrief, Role};

pub use crate::fsm::fence::FenceVerdict;

/// The fencing exchange's I/O: the fsm decides (`crate::fsm::fence`), this answers the
/// handler, runs drbdadm and tells the `drbd` resources.
#[derive(Default)]
pub struct Fencing {
    view: DrbdView,
}

impl Fencing {
    /// The handle the `drbd` resources read.
    pub fn view(&self) -> &DrbdView {
        &self.view
    }

    /// The reply to one poll of the fence-peer handler, from the fsm's verdict.
    pub fn reply(resource: &str, peer: &str, verdict: FenceVerdict, message: String, asked: bool) -> Reply {
        if asked {
            tracing::info!(resource, peer, "DRBD fence-peer: asking the peer to outdate its disk");
        }
        if verdict != FenceVerdict::Pending {
            tracing::info!(resource, verdict = ?verdict, "DRBD fence-peer: {message}");
        }
        Reply {
            ok: !matches!(verdict, FenceVerdict::Unreachable | FenceVerdict::Unconfirmed),
            message,
            status: Some(verdict.to_status()),
        }
    }

    /// Runs `drbdadm outdate` on the Secondary disks for the peer, off the main loop; the
    /// result comes back as [`Event::Outdated`]. A run the daemon's `stop` overtakes is
    /// dropped: the fsm's retries end with the daemon.
    pub fn outdate(
        attempt: u32,
        resources: &[ResourceConfig],
        runner: &Arc<dyn Runner>,
        events: &mpsc::Sender<Event>,
        stop: &watch::Receiver<bool>,
    ) {
        let drbds: Vec<Drbd> = resources
            .iter()
            .filter_map(|r| match &r.kind {
                ResourceKind::Drbd(d) => Some(Drbd::new(runner.clone(), d.resource.clone(), d.syntax, d.minor)),
                _ => None,
            })
            .collect();
        let (events, mut stop) = (events.clone(), stop.clone());
        tokio::spawn(async move {
            let failure = tokio::select! {
                biased;
                () = crate::stopped(&mut stop) => return,
                outcome = outdate_all(&drbds) => outcome.err(),
            };
            if let (1, Some(failure)) = (attempt, &failure) {
                tracing::warn!(
                    "DRBD fencing: {failure}; retrying every {} ms while the peer asks",
                    crate::fsm::fence::OUTDATE_RETRY.as_millis()
                );
            }
            let _ = events.send(Event::Outdated { failure }).await;
        });
    }

    /// The fsm stopped retrying the peer's request.
    pub fn missed(&self, attempts: u32, failure: &str) {
        tracing::error!(
            attempts,
            "DRBD fencing: {failure}; stopped retrying (the peer stopped asking). Its fence-peer handler \
             gets a failure, not \"unreachable\", so DRBD does not take this disk for outdated; it is \
             not promoted here until it is in sync with the peer again or an operator runs `pbxha online`"
        );
        self.view.miss_fence();
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
    /// Starts the reader and the follower for the first `drbd` resource, if any; both end on
    /// the daemon's `stop`.
    pub fn spawn(
        resources: &[ResourceConfig],
        runner: Arc<dyn Runner>,
        events: mpsc::Sender<Event>,
        view: &DrbdView,
        stop: &watch::Receiver<bool>,
    ) -> LocalDrbd {
        let local = LocalDrbd { view: view.clone(), ..LocalDrbd::default() };
        let Some(cfg) = resources.iter().find_map(|r| match &r.kind {
            ResourceKind::Drbd(d) => Some(d.clone()),
            _ => None,
        }) else {
            return local;
        };
        let drbd = Drbd::new(runner, cfg.resource.clone(), cfg.syntax, cfg.minor);
        let (reader, mut stop_reading) = (local.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                match drbd.status().await {
                    Ok(s) => reader.set(s),
                    Err(e) => {
                        tracing::debug!("reading DRBD {} for the heartbeat: {e}", drbd.resource());
                        reader.clear();
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(STATUS_EVERY) => {}
                    () = crate::stopped(&mut stop_reading) => return,
                }
            }
        });
        let (drbd_tx, mut drbd_rx) = mpsc::channel(64);
        // The follower ends once its receiving side, below, has ended on `stop`.
        tokio::spawn(follow_events(events2_argv(&cfg.resource), drbd_tx, Backoff::default()));
        let (follower, mut stop) = (local.clone(), stop.clone());
        tokio::spawn(async move {
            while let Some(ev) = tokio::select! {
                ev = drbd_rx.recv() => ev,
                () = crate::stopped(&mut stop) => None,
            } {
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
    use crate::summary::DrbdDisk;
    use pbxha_runner::{Output, ScriptedRunner};

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

    #[tokio::test]
    async fn the_asked_node_outdates_a_secondary_disk_and_never_a_primary() {
        let resources = drbd_resources();
        let r = Arc::new(ScriptedRunner::new());
        r.on(["drbdsetup", "status"], Output::ok(SECONDARY));
        r.on(["drbdadm", "outdate"], Output::ok(""));
        let runner: Arc<dyn Runner> = r.clone();
        let (tx, mut rx) = mpsc::channel(4);
        let (stop_tx, stop) = watch::channel(false);
        Fencing::outdate(1, &resources, &runner, &tx, &stop);
        assert_eq!(rx.recv().await, Some(Event::Outdated { failure: None }));
        assert_eq!(r.argvs(), ["drbdsetup status --json r0", "drbdadm outdate r0"]);

        r.on(["drbdsetup", "status"], Output::ok(PRIMARY));
        Fencing::outdate(2, &resources, &runner, &tx, &stop);
        let Some(Event::Outdated { failure: Some(why) }) = rx.recv().await else { panic!("outdated a Primary") };
        assert!(why.contains("r0 is Primary here"), "{why}");
        assert_eq!(r.argvs().iter().filter(|a| a.starts_with("drbdadm outdate")).count(), 1);

        // Nothing to outdate is a failure too: the peer must not hear `fenced`.
        Fencing::outdate(1, &[], &runner, &tx, &stop);
        assert!(matches!(rx.recv().await, Some(Event::Outdated { failure: Some(_) })));

        // Once the daemon stops, a run reports nothing: the exchange ends with it.
        stop_tx.send_replace(true);
        Fencing::outdate(3, &resources, &runner, &tx, &stop);
        drop(tx);
        assert_eq!(rx.recv().await, None);
    }

    #[test]
    fn a_missed_fence_keeps_the_disk_from_promotion_until_cleared() {
        let f = Fencing::default();
        f.missed(3, "cannot outdate r0 for the peer");
        assert!(f.view().facts().missed_fence);
        f.view().clear_missed_fence("test");
        assert!(!f.view().facts().missed_fence);
    }

    #[test]
    fn the_reply_fails_only_for_unreachable_and_unconfirmed() {
        for (v, ok) in [
            (FenceVerdict::Pending, true),
            (FenceVerdict::Outdated, true),
            (FenceVerdict::PeerPrimary, true),
            (FenceVerdict::Unreachable, false),
            (FenceVerdict::Unconfirmed, false),
        ] {
            let r = Fencing::reply("r0", "b", v, "m".into(), false);
            assert_eq!((r.ok, r.status.as_ref().and_then(FenceVerdict::from_status)), (ok, Some(v)));
        }
    }
}
