//! The pure failover state machine: `Node::handle(event, now) -> Vec<Action>`.
//!
//! No sockets, no processes, no sleeping, no clock reads: time is an input, so two nodes can
//! be wired together in memory with a fake clock (see `sim.rs`) and every failover rule
//! tested in milliseconds. The decision is level-triggered: each event updates the facts
//! (peer view per link, faults, admin intent) and [`Node::reconcile`] derives what to do
//! from them, so a missed or duplicated event cannot leave the node stuck.

mod event;
#[cfg(test)]
mod sim;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Serialize;

pub use event::*;

use crate::summary::{GroupPhase, NodeSummary, Role};

/// How soon a stopping daemon retries a stop that failed.
const SHUTDOWN_STOP_RETRY: Duration = Duration::from_secs(1);

/// Everything the fsm needs to know from the config.
#[derive(Clone, Debug)]
pub struct Params {
    pub node_id: u16,
    pub node_name: String,
    pub peer_id: u16,
    pub peer_name: String,
    pub link_names: Vec<String>,
    pub interval: Duration,
    pub deadtime: Duration,
    pub warntime: Duration,
    pub initdead: Duration,
    /// Ping targets configured; with any, the node counts as cut off until they answer.
    pub ping_targets: u8,
    pub auto_failback: bool,
    /// Some(true) when this node is the preferred one, Some(false) when the peer is.
    pub preferred: Option<bool>,
    /// How long a resource failure keeps this node from taking the group back (Pacemaker's
    /// failure-timeout); `pbxha online` clears it earlier.
    pub failure_timeout: Duration,
    /// How long a planned switchover waits for calls to end before moving anyway.
    pub drain_timeout: Duration,
}

/// Why a node may not hold the group. The node is healthy only when the set is empty
/// (keepalived's fault reasons).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind", content = "name")]
pub enum Fault {
    Check(String),
    Resource(String),
    StopFailed(String),
    NoConnectivity,
    VipConflict(String),
    /// A DRBD split brain on the named resource: this node must not take the group onto
    /// its copy until an operator resolved it and said so (`pbxha online`).
    SplitBrain(String),
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fault::Check(n) => write!(f, "check `{n}` failing"),
            Fault::Resource(n) => write!(f, "resource `{n}` failed"),
            Fault::StopFailed(n) => write!(f, "resource `{n}` would not stop"),
            Fault::NoConnectivity => write!(f, "no ping target answers"),
            Fault::VipConflict(why) => write!(f, "VIP conflict: {why}"),
            Fault::SplitBrain(n) => write!(f, "DRBD split brain on `{n}`"),
        }
    }
}

#[derive(Clone, Debug)]
struct Link {
    last_seen: Option<Instant>,
    up: bool,
}

/// What the node does with the group once the current stop finishes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Release {
    /// Not releasing.
    None,
    /// Give it to the peer (switchover, standby, local fault, failback).
    ToPeer,
    /// Both-primary resolution lost, or a plain stop: no hand-over flag.
    Quietly,
}

pub struct Node {
    p: Params,
    started: Instant,
    group: GroupPhase,
    /// Set when a start has been asked for and not yet answered, etc.
    release: Release,
    draining: Option<Instant>,
    admin_standby: bool,
    shutdown: bool,
    exited: bool,
    handover: Option<Instant>,
    faults: BTreeMap<Fault, Option<Instant>>,
    reachable: u8,
    targets: u8,
    links: Vec<Link>,
    peer: Option<NodeSummary>,
    peer_alive: bool,
    /// All links have been quiet for warntime: the start of a possible failover timeline.
    suspicious: bool,
    failover_open: bool,
    both_primary: bool,
    /// initdead has passed: a node that never heard its peer stops being `Starting`.
    initdead_passed: bool,
    /// The pinger has given its first verdict. Until then the node is starting, not in
    /// fault: a peer must not read "no ping target answers yet" as "cannot hold the group".
    connectivity_known: bool,
    /// Since when the peer has been reporting `Starting`: it is waited for, up to initdead.
    peer_starting_since: Option<Instant>,
    last_role: Role,
    /// When this node last became eligible, and when the peer was last heard: a node that
    /// just became eligible waits for one fresh heartbeat before judging its peer, or two
    /// nodes recovering together would each see the other's stale fault and both start.
    eligible_since: Option<Instant>,
    peer_heard: Option<Instant>,
    last_stop_failure: Option<Instant>,
}

/// A point-in-time view for `pbxha status`.
#[derive(Clone, Debug, Serialize)]
pub struct NodeStatus {
    pub node: String,
    pub role: Role,
    pub group: GroupPhase,
    pub faults: Vec<String>,
    pub admin_standby: bool,
    pub handover: bool,
    pub draining: bool,
    pub reachable: u8,
    pub targets: u8,
    pub peer: PeerStatus,
    pub links: Vec<LinkStatus>,
}

#[derive(Clone, Debug, Serialize)]
pub struct PeerStatus {
    pub name: String,
    pub alive: bool,
    pub last: Option<NodeSummary>,
}

#[derive(Clone, Debug, Serialize)]
pub struct LinkStatus {
    pub name: String,
    pub up: bool,
    pub last_seen_ms: Option<u64>,
}

impl Node {
    pub fn new(p: Params, now: Instant) -> Node {
        let links = p.link_names.iter().map(|_| Link { last_seen: None, up: false }).collect();
        let mut faults = BTreeMap::new();
        if p.ping_targets > 0 {
            faults.insert(Fault::NoConnectivity, None);
        }
        let targets = p.ping_targets;
        Node {
            targets,
            p,
            started: now,
            group: GroupPhase::Stopped,
            release: Release::None,
            draining: None,
            admin_standby: false,
            shutdown: false,
            exited: false,
            handover: None,
            faults,
            reachable: 0,
            links,
            peer: None,
            peer_alive: false,
            suspicious: false,
            failover_open: false,
            both_primary: false,
            initdead_passed: false,
            connectivity_known: targets == 0,
            peer_starting_since: None,
            last_role: Role::Starting,
            eligible_since: None,
            peer_heard: None,
            last_stop_failure: None,
        }
    }

    /// Applies one event and returns what the I/O layer must do, in order.
    pub fn handle(&mut self, event: Event, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        match event {
            Event::Tick => {}
            Event::Heartbeat { link, summary } => self.on_heartbeat(link, summary, now, &mut out),
            Event::Check { name, ok } => self.on_check(name, ok, &mut out),
            Event::Connectivity { reachable, total } => {
                self.connectivity_known = true;
                self.reachable = reachable;
                self.targets = total;
                let cut_off = total > 0 && reachable == 0;
                self.set_fault(Fault::NoConnectivity, cut_off, None, &mut out);
            }
            Event::Group(g) => self.on_group(g, now, &mut out),
            Event::Admin(a) => self.on_admin(a, now, &mut out),
            Event::DrainFinished { calls_left } => {
                if self.draining.take().is_some() {
                    let left = calls_left.map_or("unknown".to_string(), |n| n.to_string());
                    record(&mut out, RecordKind::Admin, format!("drain finished, {left} call(s) left"));
                    self.stop_group(Release::ToPeer, &mut out);
                }
            }
            Event::SplitBrain { resource, report } => {
                record(&mut out, RecordKind::SplitBrain, format!("DRBD split brain on {resource}: {report}"));
                notify(&mut out, Severity::Critical, format!("{}: DRBD split brain on {resource}", self.p.node_name), report);
                self.set_fault(Fault::SplitBrain(resource), true, None, &mut out);
            }
        }
        self.initdead_passed |= now.saturating_duration_since(self.started) >= self.p.initdead;
        self.expire(now, &mut out);
        self.watch_links(now, &mut out);
        match (self.eligible(), self.eligible_since) {
            (true, None) => self.eligible_since = Some(now),
            (false, Some(_)) => self.eligible_since = None,
            _ => {}
        }
        self.reconcile(now, &mut out);
        self.note_role(&mut out);
        out
    }

    /// Why an admin request cannot be carried out now, for a clear answer on the control
    /// socket. `None` means it will be.
    pub fn refuse(&self, admin: &Admin) -> Option<String> {
        let holding = self.holding();
        match admin {
            Admin::Switchover { .. } if !holding => Some(format!(
                "this node ({}) does not hold the group; run the switchover on the primary{}",
                self.p.node_name,
                if self.peer_holding() { format!(" ({})", self.p.peer_name) } else { String::new() }
            )),
            Admin::Switchover { .. } | Admin::Standby if holding && !self.peer_eligible() => Some(format!(
                "peer {} cannot take over ({}); the PBX would be left down",
                self.p.peer_name,
                self.peer_state_words()
            )),
            Admin::Switchover { .. } if self.draining.is_some() || self.release != Release::None => {
                Some("a hand-over is already in progress".into())
            }
            _ => None,
        }
    }

    pub fn role(&self) -> Role {
        if self.holding() || self.group == GroupPhase::Stopping {
            Role::Primary
        } else if self.admin_standby {
            Role::Standby
        } else if !self.connectivity_known || (self.peer.is_none() && !self.initdead_passed) {
            Role::Starting
        } else if !self.faults.is_empty() {
            Role::Fault
        } else {
            Role::Secondary
        }
    }

    /// What goes into the next heartbeat.
    pub fn summary(&self) -> NodeSummary {
        NodeSummary {
            role: self.role(),
            group: self.group,
            healthy: self.faults.is_empty(),
            reachable: self.reachable,
            targets: self.targets,
            handover: self.handover.is_some(),
            calls: None,
            fence_request: false,
            fenced: false,
            drbd: None,
        }
    }

    /// A DRBD split brain is unresolved: no copy may be promoted.
    pub fn split_brain(&self) -> bool {
        self.faults.keys().any(|f| matches!(f, Fault::SplitBrain(_)))
    }

    pub fn exited(&self) -> bool {
        self.exited
    }

    pub fn status(&self, now: Instant) -> NodeStatus {
        NodeStatus {
            node: self.p.node_name.clone(),
            role: self.role(),
            group: self.group,
            faults: self.faults.keys().map(ToString::to_string).collect(),
            admin_standby: self.admin_standby,
            handover: self.handover.is_some(),
            draining: self.draining.is_some(),
            reachable: self.reachable,
            targets: self.targets,
            peer: PeerStatus { name: self.p.peer_name.clone(), alive: self.peer_alive, last: self.peer },
            links: self
                .p
                .link_names
                .iter()
                .zip(&self.links)
                .map(|(name, l)| LinkStatus {
                    name: name.clone(),
                    up: l.up,
                    last_seen_ms: l.last_seen.map(|t| now.saturating_duration_since(t).as_millis() as u64),
                })
                .collect(),
        }
    }

    /// Applies new timing and policy from a reloaded config; identities must not change.
    pub fn update_params(&mut self, p: Params) {
        if p.link_names.len() != self.links.len() {
            self.links = p.link_names.iter().map(|_| Link { last_seen: None, up: false }).collect();
        }
        self.p = p;
    }

    fn on_heartbeat(&mut self, link: usize, summary: NodeSummary, now: Instant, out: &mut Vec<Action>) {
        let Some(l) = self.links.get_mut(link) else { return };
        l.last_seen = Some(now);
        if !l.up {
            l.up = true;
            record(out, RecordKind::Link, format!("link {} up: hearing {}", self.p.link_names[link], self.p.peer_name));
        }
        if !self.peer_alive {
            self.peer_alive = true;
            record(out, RecordKind::Peer, format!("peer {} alive ({})", self.p.peer_name, summary.role));
        } else if self.peer.map(|p| p.role) != Some(summary.role) {
            record(out, RecordKind::Peer, format!("peer {} is now {}", self.p.peer_name, summary.role));
        }
        if self.suspicious {
            self.suspicious = false;
        }
        if summary.role != Role::Starting {
            self.peer_starting_since = None;
        } else if self.peer_starting_since.is_none() {
            self.peer_starting_since = Some(now);
        }
        self.peer = Some(summary);
        self.peer_heard = Some(now);
    }

    fn on_check(&mut self, name: String, ok: bool, out: &mut Vec<Action>) {
        self.set_fault(Fault::Check(name), !ok, None, out);
    }

    fn on_group(&mut self, g: GroupEvent, now: Instant, out: &mut Vec<Action>) {
        match g {
            GroupEvent::Started => {
                // A stop queued behind this start is still coming.
                if self.group != GroupPhase::Stopping {
                    self.group = GroupPhase::Running;
                }
                if self.failover_open {
                    self.failover_open = false;
                    record(out, RecordKind::FailoverEnd, format!("{} holds the group", self.p.node_name));
                }
                out.push(Action::Announce);
            }
            GroupEvent::StartFailed { resource, reason, conflict, held } => {
                if held {
                    // As after a failed stop: keep reporting the group as ours so the peer
                    // never starts beside what may still be held here.
                    self.group = GroupPhase::Running;
                    self.last_stop_failure = Some(now);
                    self.set_fault(Fault::StopFailed(resource.clone()), true, None, out);
                } else {
                    self.group = GroupPhase::Stopped;
                }
                let until = Some(now + self.p.failure_timeout);
                if conflict {
                    record(out, RecordKind::SplitBrain, format!("refused the group: {reason}"));
                    notify(out, Severity::Critical, format!("{}: VIP conflict, refused to take over", self.p.node_name), reason.clone());
                    self.set_fault(Fault::VipConflict(reason), true, until, out);
                } else {
                    notify(out, Severity::Critical, format!("{}: resource {resource} failed to start", self.p.node_name), reason);
                    self.set_fault(Fault::Resource(resource), true, until, out);
                }
                if self.failover_open {
                    self.failover_open = false;
                    record(out, RecordKind::FailoverEnd, "takeover failed".into());
                }
                out.push(Action::Announce);
            }
            GroupEvent::Stopped => {
                self.group = GroupPhase::Stopped;
                self.faults.retain(|f, _| !matches!(f, Fault::StopFailed(_)));
                if self.release == Release::ToPeer && !self.shutdown_without_peer() {
                    self.handover = Some(now);
                }
                self.release = Release::None;
                out.push(Action::Announce);
                if self.shutdown {
                    self.exited = true;
                    out.push(Action::Exit);
                }
            }
            GroupEvent::StopFailed { resource, reason } => {
                // Something may still be held (the VIP, a mount): keep reporting the group as
                // running so the peer never starts beside it.
                self.group = GroupPhase::Running;
                self.release = Release::None;
                self.last_stop_failure = Some(now);
                notify(out, Severity::Critical, format!("{}: resource {resource} would not stop", self.p.node_name), reason);
                self.set_fault(Fault::StopFailed(resource), true, None, out);
                out.push(Action::Announce);
            }
            GroupEvent::ResourceFailed { resource, reason } => {
                notify(out, Severity::Critical, format!("{}: resource {resource} failed", self.p.node_name), reason);
                self.set_fault(Fault::Resource(resource), true, Some(now + self.p.failure_timeout), out);
            }
        }
    }

    fn on_admin(&mut self, a: Admin, now: Instant, out: &mut Vec<Action>) {
        if let Some(why) = self.refuse(&a) {
            if a != Admin::Shutdown {
                record(out, RecordKind::Admin, format!("refused {a:?}: {why}"));
                return;
            }
        }
        record(out, RecordKind::Admin, format!("{a:?} requested"));
        match a {
            Admin::Standby => {
                self.admin_standby = true;
                if self.holding() {
                    self.begin_release(false, now, out);
                }
            }
            Admin::Online => {
                self.admin_standby = false;
                // Like `crm resource cleanup`: forget expiring failures, and a split brain the
                // operator has resolved by hand.
                self.faults.retain(|f, until| until.is_none() && !matches!(f, Fault::SplitBrain(_)));
            }
            Admin::Switchover { now: skip_drain } => self.begin_release(skip_drain, now, out),
            Admin::Shutdown => {
                self.shutdown = true;
                if self.group == GroupPhase::Stopped {
                    self.exited = true;
                    out.push(Action::Exit);
                } else if self.group != GroupPhase::Stopping {
                    self.draining = None;
                    self.stop_group(Release::ToPeer, out);
                }
            }
        }
    }

    fn begin_release(&mut self, skip_drain: bool, now: Instant, out: &mut Vec<Action>) {
        if skip_drain || self.p.drain_timeout.is_zero() {
            self.stop_group(Release::ToPeer, out);
        } else {
            self.draining = Some(now + self.p.drain_timeout);
            out.push(Action::Drain { deadline: self.p.drain_timeout });
        }
    }

    fn stop_group(&mut self, release: Release, out: &mut Vec<Action>) {
        if self.group == GroupPhase::Stopping {
            return;
        }
        self.release = release;
        self.group = GroupPhase::Stopping;
        out.push(Action::StopGroup);
        out.push(Action::Announce);
    }

    fn start_group(&mut self, why: String, released: bool, out: &mut Vec<Action>) {
        self.handover = None;
        self.group = GroupPhase::Starting;
        self.failover_open = true;
        record(out, RecordKind::FailoverBegin, format!("{} takes over: {why}", self.p.node_name));
        out.push(Action::StartGroup { released });
        out.push(Action::Announce);
    }

    fn set_fault(&mut self, fault: Fault, on: bool, until: Option<Instant>, out: &mut Vec<Action>) {
        if on {
            if self.faults.insert(fault.clone(), until).is_none() {
                record(out, RecordKind::Health, format!("fault: {fault}"));
                out.push(Action::Announce);
            }
        } else if self.faults.remove(&fault).is_some() {
            record(out, RecordKind::Health, format!("recovered: {fault}"));
            out.push(Action::Announce);
        }
    }

    fn expire(&mut self, now: Instant, out: &mut Vec<Action>) {
        if let Some(deadline) = self.draining {
            if now >= deadline + self.p.deadtime {
                // The I/O layer never answered the drain: move anyway.
                self.draining = None;
                record(out, RecordKind::Admin, "drain did not report back; moving anyway".into());
                self.stop_group(Release::ToPeer, out);
            }
        }
        // A failure keeps the node out only while it does not hold the group: a holder
        // with a failed resource has nobody to give it to, and a new start would retry.
        if self.group != GroupPhase::Stopped {
            return;
        }
        let expired: Vec<Fault> =
            self.faults.iter().filter(|(_, until)| until.is_some_and(|u| now >= u)).map(|(f, _)| f.clone()).collect();
        for f in expired {
            self.set_fault(f, false, None, out);
        }
    }

    fn watch_links(&mut self, now: Instant, out: &mut Vec<Action>) {
        let mut newest: Option<Instant> = None;
        for (i, l) in self.links.iter_mut().enumerate() {
            let Some(seen) = l.last_seen else { continue };
            newest = newest.max(Some(seen));
            if l.up && now.saturating_duration_since(seen) > self.p.deadtime {
                l.up = false;
                record(out, RecordKind::Link, format!("link {} down: {} silent for {} ms", self.p.link_names[i], self.p.peer_name, self.p.deadtime.as_millis()));
            }
        }
        let Some(newest) = newest else { return };
        let quiet = now.saturating_duration_since(newest);
        if self.peer_alive && quiet > self.p.warntime && !self.suspicious {
            self.suspicious = true;
            record(out, RecordKind::Suspicion, format!("peer {} silent on all links for {} ms", self.p.peer_name, quiet.as_millis()));
        }
        if self.peer_alive && quiet > self.p.deadtime {
            self.peer_alive = false;
            self.both_primary = false;
            record(out, RecordKind::Peer, format!("peer {} dead: silent on all links for {} ms", self.p.peer_name, quiet.as_millis()));
            notify(out, Severity::Warning, format!("peer {} is dead", self.p.peer_name), format!("no heartbeat on any link for {} ms", quiet.as_millis()));
        }
    }

    /// Decides, from the facts, whether to start, stop or keep the group.
    fn reconcile(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.exited {
            return;
        }
        if let Some(since) = self.handover {
            let peer_took = self.peer_alive && self.peer.is_some_and(|p| p.role == Role::Primary);
            let stale = now.saturating_duration_since(since) > self.p.deadtime * 3;
            if peer_took || !self.peer_alive || (stale && !self.peer_holding()) {
                self.handover = None;
                out.push(Action::Announce);
            }
        }
        match self.group {
            GroupPhase::Starting | GroupPhase::Stopping => {}
            GroupPhase::Running => self.reconcile_holder(now, out),
            GroupPhase::Stopped => self.reconcile_standby(now, out),
        }
    }

    fn reconcile_holder(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.shutdown {
            // Keep trying to release what a failed stop left held; the daemon bounds how
            // long it waits before giving up (and leaving the watchdog armed).
            if self.last_stop_failure.is_some_and(|t| now >= t + SHUTDOWN_STOP_RETRY) {
                self.last_stop_failure = None;
                self.stop_group(Release::ToPeer, out);
            }
            return;
        }
        if self.draining.is_some() {
            return;
        }
        let peer_holds = self.peer_holding() && self.peer.is_some_and(|p| p.role == Role::Primary);
        if peer_holds {
            if !self.both_primary {
                self.both_primary = true;
                let peer = self.peer.unwrap_or_else(|| self.summary());
                let keep = self.wins_tie(&peer);
                let (survivor, loser) = if keep { (&self.p.node_name, &self.p.peer_name) } else { (&self.p.peer_name, &self.p.node_name) };
                let msg = format!("both nodes primary; {survivor} keeps the group, {loser} stops");
                record(out, RecordKind::SplitBrain, msg.clone());
                notify(out, Severity::Critical, format!("split brain resolved: {survivor} keeps the group"), msg);
                if keep {
                    out.push(Action::Reannounce);
                } else {
                    self.stop_group(Release::Quietly, out);
                }
            }
            return;
        }
        self.both_primary = false;
        if !self.peer_eligible() {
            return;
        }
        let retry_ok = self.last_stop_failure.is_none_or(|t| now >= t + self.p.failure_timeout);
        // A split brain alone does not move the group: the peer's copy diverged too, and
        // the holder's is the one in use.
        let hand_over = self.faults.keys().any(|f| !matches!(f, Fault::SplitBrain(_)));
        if hand_over && retry_ok {
            let why: Vec<String> = self.faults.keys().map(ToString::to_string).collect();
            record(out, RecordKind::Health, format!("handing over to {}: {}", self.p.peer_name, why.join(", ")));
            self.stop_group(Release::ToPeer, out);
        } else if self.p.auto_failback
            && self.p.preferred == Some(false)
            && self.peer.is_some_and(|p| p.role == Role::Secondary)
        {
            record(out, RecordKind::Admin, format!("auto-failback to preferred node {}", self.p.peer_name));
            self.begin_release(false, now, out);
        }
    }

    fn reconcile_standby(&mut self, now: Instant, out: &mut Vec<Action>) {
        if !self.eligible() || self.handover.is_some() {
            return;
        }
        if !self.peer_alive {
            if self.peer.is_some() {
                self.start_group(format!("peer {} is dead", self.p.peer_name), false, out);
            } else if now.saturating_duration_since(self.started) >= self.p.initdead {
                self.start_group(format!("peer {} not heard within initdead ({} ms)", self.p.peer_name, self.p.initdead.as_millis()), false, out);
            }
            return;
        }
        let Some(peer) = self.peer else { return };
        if peer.group != GroupPhase::Stopped || peer.role == Role::Primary {
            return;
        }
        if self.peer_heard <= self.eligible_since {
            return;
        }
        // A starting peer has not decided yet (its pinger may not have answered): wait for
        // it, but not forever.
        if self.peer_starting_since.is_some_and(|since| now.saturating_duration_since(since) < self.p.initdead) {
            return;
        }
        let why = if peer.handover {
            format!("peer {} handed over", self.p.peer_name)
        } else if !self.peer_eligible() {
            format!("peer {} cannot hold the group ({})", self.p.peer_name, self.peer_state_words())
        } else if self.wins_tie(&peer) && peer.role != Role::Starting {
            format!("neither node holds the group and {} wins the tie", self.p.node_name)
        } else {
            return;
        };
        // The peer is alive and says its group is stopped.
        self.start_group(why, true, out);
    }

    /// Deterministic choice between two candidates, evaluated the same way on both nodes:
    /// connectivity first, then the preferred node, then the lower node id.
    fn wins_tie(&self, peer: &NodeSummary) -> bool {
        let me_connected = self.targets == 0 || self.reachable > 0;
        if me_connected != peer.connected() {
            return me_connected;
        }
        match self.p.preferred {
            Some(me) => me,
            None => self.p.node_id < self.p.peer_id,
        }
    }

    fn eligible(&self) -> bool {
        self.faults.is_empty() && !self.admin_standby && !self.shutdown
    }

    fn peer_eligible(&self) -> bool {
        self.peer_alive
            && self.peer.is_some_and(|p| p.healthy && p.connected() && !matches!(p.role, Role::Standby | Role::Fault))
    }

    fn peer_holding(&self) -> bool {
        self.peer_alive && self.peer.is_some_and(|p| p.group != GroupPhase::Stopped)
    }

    fn holding(&self) -> bool {
        matches!(self.group, GroupPhase::Starting | GroupPhase::Running)
    }

    fn shutdown_without_peer(&self) -> bool {
        self.shutdown && !self.peer_alive
    }

    fn peer_state_words(&self) -> String {
        match (self.peer_alive, self.peer) {
            (false, _) | (_, None) => "not heard".into(),
            (true, Some(p)) if !p.connected() => format!("{}, no ping target answers", p.role),
            (true, Some(p)) if !p.healthy => format!("{}, unhealthy", p.role),
            (true, Some(p)) => p.role.to_string(),
        }
    }

    fn note_role(&mut self, out: &mut Vec<Action>) {
        let role = self.role();
        if role != self.last_role {
            let msg = format!("{} → {}", self.last_role, role);
            self.last_role = role;
            record(out, RecordKind::RoleChange, msg.clone());
            notify(out, Severity::Info, format!("{} is now {}", self.p.node_name, role), msg);
            out.push(Action::Announce);
        }
    }
}

fn record(out: &mut Vec<Action>, kind: RecordKind, message: String) {
    out.push(Action::Record(Record { kind, message }));
}

fn notify(out: &mut Vec<Action>, severity: Severity, subject: String, body: String) {
    out.push(Action::Notify(Notice { severity, subject, body }));
}
