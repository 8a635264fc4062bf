//! The DRBD fencing exchange between the two nodes, as fsm state: the requester's deadline
//! and verdict, and the responder's `drbdadm outdate` attempts. The I/O (answering the
//! handler on the control socket, running drbdadm) stays in `crate::fence` and the daemon.
//!
//! With `fencing resource-only` DRBD runs its fence-peer handler, `pbxha replica fence-peer`,
//! when it loses the replication link and must know whether the peer may still write. Each
//! poll of the handler is an [`Event::FencePeer`]; the first raises `fence_request` in this
//! node's heartbeats until a verdict or [`FENCE_DEADTIMES`] dead times. The peer, if it holds
//! no group, answers with [`Action::Outdate`] and, once drbdadm succeeded
//! ([`Event::Outdated`]), with `fenced` in its heartbeats.
//!
//! The peer's DRBD may not have seen the disconnect yet when the request arrives, and then
//! refuses ("Refusing to be Outdated while Connected", drbdsetup exit 11): the responder
//! retries every [`OUTDATE_RETRY`] for as long as the request stands and its own group stays
//! stopped. "Peer unreachable" (exit 5) tells DRBD the peer is dead and its disk may be
//! treated as outdated, so it is only ever the answer for a peer silent on every link; a
//! live peer that does not confirm in time gets the failure code, which makes DRBD keep I/O
//! frozen or refuse the change.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{Action, PeerStatus};
use crate::summary::{DrbdDisk, GroupPhase, NodeSummary, Role};

/// How many dead times the handler waits for the peer's answer: one to get the request
/// through, one for `drbdadm outdate`, one for the answer to come back.
pub const FENCE_DEADTIMES: u32 = 3;

/// A request whose deadline passed longer ago than this was left by a handler that is gone
/// (it polls every few hundred milliseconds): the next one starts afresh. The responder
/// likewise stops retrying once the peer's request has not been heard for this long.
pub const STALE_AFTER: Duration = Duration::from_secs(2);

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
#[derive(Clone, Debug, Default, PartialEq, Eq)]
enum Responder {
    #[default]
    Idle,
    /// `drbdadm outdate` runs: attempt number `attempt`. `abandoned`: the request ended
    /// meanwhile, so its answer is stale (and a failure is the last).
    Outdating {
        attempt: u32,
        abandoned: bool,
    },
    /// Attempt `attempt` failed, saying `failure`; the next one is due at `next`.
    Retrying {
        attempt: u32,
        next: Instant,
        failure: String,
    },
    Fenced,
    /// Retried until the request lapsed or the backstop: not tried again until the peer asks
    /// anew.
    Failed,
}

/// Fencing state of one node, both as the one asking and as the one asked.
#[derive(Clone, Debug, Default)]
pub(super) struct Fencing {
    /// Asking the peer to outdate, until this deadline.
    asking: Option<Instant>,
    responder: Responder,
    /// When the peer's request was last heard, so retries stop once the peer stopped asking
    /// or fell silent.
    requested: Option<Instant>,
}

impl Fencing {
    /// One poll of the fence-peer handler: the verdict, after raising the request if none
    /// stands. A new request is announced at once rather than at the next interval.
    pub(super) fn ask(&mut self, peer: &PeerStatus, deadtime: Duration, now: Instant, out: &mut Vec<Action>) {
        let mut asked = false;
        if self.asking.is_none_or(|deadline| now > deadline + STALE_AFTER) {
            self.asking = None;
            if peer.alive {
                self.asking = Some(now + deadtime * FENCE_DEADTIMES);
                asked = true;
            }
        }
        let expired = self.asking.is_none_or(|deadline| now >= deadline);
        let (verdict, message) = verdict(peer, expired);
        let answered = verdict != FenceVerdict::Pending && self.asking.take().is_some();
        out.push(Action::FenceAnswer { verdict, message, asked });
        if asked || answered {
            out.push(Action::Announce);
        }
    }

    /// The flags for the next heartbeat: `(fence_request, fenced)`.
    pub(super) fn flags(&self, now: Instant) -> (bool, bool) {
        (self.asking.is_some_and(|deadline| now < deadline), self.responder == Responder::Fenced)
    }

    /// A heartbeat from the peer: outdate the local DRBD disks if it asks and this node
    /// holds no group; forget the last answer once it stops asking.
    pub(super) fn on_peer(&mut self, peer: &NodeSummary, own: GroupPhase, now: Instant, out: &mut Vec<Action>) {
        // A node holding the group keeps its disk; its role in the heartbeat is the refusal.
        // One that started the group while retrying stops retrying, as when the peer stops
        // asking; only then is the last answer forgotten.
        if !peer.fence_request || own != GroupPhase::Stopped {
            match &mut self.responder {
                Responder::Outdating { abandoned, .. } => *abandoned = true,
                Responder::Retrying { attempt, failure, .. } => {
                    let (attempts, failure) = (*attempt, failure.clone());
                    self.give_up(attempts, failure, out);
                    self.responder = Responder::Idle;
                }
                _ if !peer.fence_request => self.responder = Responder::Idle,
                _ => {}
            }
            return;
        }
        self.requested = Some(now);
        match &mut self.responder {
            Responder::Idle => {
                self.responder = Responder::Outdating { attempt: 1, abandoned: false };
                out.push(Action::Outdate { attempt: 1 });
            }
            Responder::Outdating { abandoned, .. } => *abandoned = false,
            _ => {}
        }
    }

    /// The answer to [`Action::Outdate`]: `failure` says why it did not outdate.
    pub(super) fn on_outdated(&mut self, failure: Option<String>, now: Instant, out: &mut Vec<Action>) {
        let Responder::Outdating { attempt, abandoned } = self.responder else { return };
        match failure {
            // The peer stopped asking meanwhile: the answer is stale.
            None if abandoned => self.responder = Responder::Idle,
            None => self.responder = Responder::Fenced,
            Some(failure) if abandoned => {
                self.give_up(attempt, failure, out);
                self.responder = Responder::Idle;
            }
            Some(failure) if attempt < OUTDATE_MAX_ATTEMPTS && self.standing(now) => {
                self.responder = Responder::Retrying { attempt, next: now + OUTDATE_RETRY, failure }
            }
            Some(failure) => self.give_up(attempt, failure, out),
        }
    }

    /// Every event: the next outdate attempt when one is due, the request still stands and
    /// this node's group (`own`) is stopped. A node that started the group meanwhile stops
    /// retrying at once: the peer that asked may have died, and then no heartbeat of its
    /// comes to end the retries (see [`Fencing::on_peer`]) before this disk must serve.
    pub(super) fn retry(&mut self, own: GroupPhase, now: Instant, out: &mut Vec<Action>) {
        let Responder::Retrying { attempt, next, failure } = &self.responder else { return };
        if own != GroupPhase::Stopped {
            let (attempts, failure) = (*attempt, failure.clone());
            self.give_up(attempts, failure, out);
            self.responder = Responder::Idle;
            return;
        }
        if now < *next {
            return;
        }
        let attempt = *attempt;
        if self.standing(now) {
            self.responder = Responder::Outdating { attempt: attempt + 1, abandoned: false };
            out.push(Action::Outdate { attempt: attempt + 1 });
        } else {
            let failure = failure.clone();
            self.give_up(attempt, failure, out);
        }
    }

    fn standing(&self, now: Instant) -> bool {
        self.requested.is_some_and(|t| now.saturating_duration_since(t) < STALE_AFTER)
    }

    fn give_up(&mut self, attempts: u32, failure: String, out: &mut Vec<Action>) {
        self.responder = Responder::Failed;
        out.push(Action::MissedFence { attempts, failure });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::summary::DrbdBrief;

    fn summary(role: Role, group: GroupPhase) -> NodeSummary {
        NodeSummary::plain(role, group)
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

    /// One poll: the verdict, and whether it was announced.
    fn poll(f: &mut Fencing, p: &PeerStatus, deadtime: Duration, now: Instant) -> (FenceVerdict, String, bool) {
        let mut out = Vec::new();
        f.ask(p, deadtime, now, &mut out);
        let announced = out.contains(&Action::Announce);
        match out.into_iter().next() {
            Some(Action::FenceAnswer { verdict, message, .. }) => (verdict, message, announced),
            other => panic!("no answer: {other:?}"),
        }
    }

    #[test]
    fn asking_raises_the_flag_until_answered_or_expired() {
        let t0 = Instant::now();
        let dt = Duration::from_secs(1);
        let mut f = Fencing::default();
        let secondary = summary(Role::Secondary, GroupPhase::Stopped);

        // A dead peer: answered at once, nothing asked.
        let (v, _, announced) = poll(&mut f, &peer(false, None), dt, t0);
        assert!(v == FenceVerdict::Unreachable && !announced && !f.flags(t0).0);

        let (v, _, announced) = poll(&mut f, &peer(true, Some(secondary)), dt, t0);
        assert!(v == FenceVerdict::Pending && announced && f.flags(t0).0);

        let fenced = NodeSummary { fenced: true, ..secondary };
        let (v, _, announced) = poll(&mut f, &peer(true, Some(fenced)), dt, t0 + dt);
        assert!(v == FenceVerdict::Outdated && announced);
        assert!(!f.flags(t0 + dt).0, "answered: the request is dropped");

        // A peer that stays alive and silent about it: unconfirmed after FENCE_DEADTIMES dead times.
        let t1 = t0 + Duration::from_secs(60);
        poll(&mut f, &peer(true, Some(secondary)), dt, t1);
        let (v, _, _) = poll(&mut f, &peer(true, Some(secondary)), dt, t1 + dt * 2);
        assert_eq!(v, FenceVerdict::Pending);
        assert!(!f.flags(t1 + dt * FENCE_DEADTIMES).0, "the flag drops at the deadline");
        let (v, message, _) = poll(&mut f, &peer(true, Some(secondary)), dt, t1 + dt * FENCE_DEADTIMES);
        assert!(v == FenceVerdict::Unconfirmed && message.contains("in time"), "{message}");
    }

    fn outdates(out: &[Action]) -> usize {
        out.iter().filter(|a| matches!(a, Action::Outdate { .. })).count()
    }

    #[test]
    fn the_asked_node_outdates_once_per_request_and_never_while_holding_the_group() {
        let t0 = Instant::now();
        let mut f = Fencing::default();
        let mut out = Vec::new();
        let request = NodeSummary { fence_request: true, ..summary(Role::Primary, GroupPhase::Running) };
        f.on_peer(&request, GroupPhase::Running, t0, &mut out);
        assert!(out.is_empty() && f.responder == Responder::Idle);

        f.on_peer(&request, GroupPhase::Stopped, t0, &mut out);
        f.on_outdated(None, t0, &mut out);
        f.on_peer(&request, GroupPhase::Stopped, t0, &mut out);
        assert_eq!(out, [Action::Outdate { attempt: 1 }], "outdated once per request");
        assert!(f.flags(t0).1);

        // The request ends: forget the answer.
        f.on_peer(&summary(Role::Primary, GroupPhase::Running), GroupPhase::Stopped, t0, &mut out);
        assert!(!f.flags(t0).1);
    }

    #[test]
    fn a_refused_outdate_is_retried_while_the_peer_asks_and_not_after() {
        let t0 = Instant::now();
        let mut f = Fencing::default();
        let mut out = Vec::new();
        let request = NodeSummary { fence_request: true, ..summary(Role::Primary, GroupPhase::Running) };
        let refused = || Some("Refusing to be Outdated while Connected".to_string());
        // The peer asks every 100 ms for 3 s, then falls silent; the node's ticks every 10 ms.
        let mut now = t0;
        while now < t0 + Duration::from_secs(5) {
            if now < t0 + Duration::from_secs(3) && (now - t0).as_millis().is_multiple_of(100) {
                f.on_peer(&request, GroupPhase::Stopped, now, &mut out);
            }
            if matches!(out.last(), Some(Action::Outdate { .. })) {
                f.on_outdated(refused(), now, &mut out);
            }
            f.retry(GroupPhase::Stopped, now, &mut out);
            now += Duration::from_millis(10);
        }
        let asked = outdates(&out);
        // Every OUTDATE_RETRY for 3 s, then up to STALE_AFTER more.
        assert!((10..=18).contains(&asked), "attempts: {asked}");
        assert_eq!(f.responder, Responder::Failed);
        assert!(
            matches!(out.last(), Some(Action::MissedFence { attempts, failure }) if *attempts as usize == asked && failure.contains("Refusing")),
            "{:?}",
            out.last()
        );

        // A new request retries again, and starting the group here stops it.
        out.clear();
        f.on_peer(&summary(Role::Primary, GroupPhase::Running), GroupPhase::Stopped, now, &mut out);
        f.on_peer(&request, GroupPhase::Stopped, now, &mut out);
        f.on_outdated(refused(), now, &mut out);
        f.on_peer(&request, GroupPhase::Starting, now, &mut out);
        f.retry(GroupPhase::Starting, now + OUTDATE_RETRY * 10, &mut out);
        assert_eq!((outdates(&out), &f.responder), (1, &Responder::Idle), "{out:?}");
    }
}
