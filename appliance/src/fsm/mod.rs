//! The pure failover state machine: `Node::handle(event, now) -> Vec<Action>`.
//!
//! No sockets, no processes, no sleeping, no clock reads: time is an input, so two nodes can
//! be wired together in memory with a fake clock (see `sim.rs`) and every failover rule
//! tested in milliseconds. The decision is level-triggered: each event updates the facts
//! (peer view per link, faults, admin intent) and [`Node::reconcile`] derives what to do
//! from them, so a missed or duplicated event cannot leave the node stuck.

mod event;
#[cfg(test)]
mod explore;
pub mod fence;
#[cfg(test)]
mod sim;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

pub use event::*;

use crate::summary::{GroupPhase, NodeSummary, Role};

/// How soon a stopping daemon retries a stop that failed.
const SHUTDOWN_STOP_RETRY: Duration = Duration::from_secs(1);
/// How often a node whose takeover was refused (the VIP answered ARP) looks again. A peer
/// whose daemon died may have left its addresses behind until its sentinel or systemd's
/// `ExecStopPost=` removes them; the takeover follows within this time of the VIP falling
/// silent.
pub const VIP_REPROBE: Duration = Duration::from_secs(1);
/// How the `SplitBrain` record of a takeover the VIP guard refused begins.
pub const REFUSED_THE_GROUP: &str = "refused the group";
/// The `FailoverEnd` message of a takeover that did not get the group running.
pub const TAKEOVER_FAILED: &str = "takeover failed";

/// `[ping] on-isolation`: what a primary cut off from everything at once (every heartbeat
/// link silent, no ping target answering) does; shared with the lab, which writes it.
pub use pbxha_conf::OnIsolation;

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
    /// The ping `fall` window (fall × interval + timeout): how long a peer must stay
    /// connected after this node lost its ping targets before the group moves for it. Both
    /// nodes usually ping the same gateway, and a gateway blip reaches the two verdicts up to
    /// one ping round apart (Pacemaker's `dampen`).
    pub ping_dampen: Duration,
    /// How often the ping targets are asked: the uncertainty of when a ping verdict's loss
    /// began.
    pub ping_interval: Duration,
    /// How long one ping may take: a failed one ends anywhere between at once (refused,
    /// unreachable) and this timeout.
    pub ping_timeout: Duration,
    pub on_isolation: OnIsolation,
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
    /// A takeover was refused because the VIP answered ARP. Cleared when a re-probe finds
    /// it silent, or when the peer is heard holding the group (the conflict is explained).
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
    /// The last heartbeat on this link whose echo said the peer hears us on it.
    echoed: Option<Instant>,
    /// Reported as one-way (heard here, not there) until it carries both ways again.
    one_way: bool,
}

impl Link {
    fn new() -> Link {
        Link { last_seen: None, up: false, echoed: None, one_way: false }
    }
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
    /// Why the running drain began: a drain for standby clears the standby request when
    /// it has to be cancelled.
    drain_cause: DrainCause,
    /// When this node lost every ping target (the start of its `NoConnectivity` fault).
    cut_off_since: Option<Instant>,
    /// Since when every heartbeat of the peer said it is connected.
    peer_connected_since: Option<Instant>,
    /// When the peer was declared dead.
    peer_lost_at: Option<Instant>,
    /// The last event handled: a gap of more than deadtime means this daemon was frozen
    /// (SIGSTOP, a stalled VM) while the peer may have declared it dead.
    last_event: Instant,
    /// After a freeze, until then, this node reports itself unhealthy so that a
    /// both-primary tie goes to the peer that kept running.
    stalled_until: Option<Instant>,
    /// Refused takeovers since the first one (the VIP answered ARP): re-probed every
    /// `VIP_REPROBE`, alerted once.
    refused: Option<Refusal>,
    next_vip_probe: Option<Instant>,
    /// Since when this node is fit only to serve when nobody else can (see
    /// `reconcile_fallback`); like `eligible_since`, it waits for a fresh heartbeat.
    fallback_since: Option<Instant>,
    /// The DRBD fencing exchange, as asker and as asked.
    fencing: fence::Fencing,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DrainCause {
    Switchover,
    Standby,
    Failback,
}

#[derive(Clone, Copy, Debug)]
struct Refusal {
    since: Instant,
    probes: u32,
    diagnosed: bool,
}

/// A point-in-time view for `pbxha status`.
#[derive(Clone, Debug, Serialize, Deserialize)]
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

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PeerStatus {
    pub name: String,
    pub alive: bool,
    pub last: Option<NodeSummary>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LinkStatus {
    pub name: String,
    pub up: bool,
    pub last_seen_ms: Option<u64>,
    /// Heartbeats arrive here, but the peer's echo says it does not hear this node.
    pub one_way: bool,
}

impl Node {
    pub fn new(p: Params, now: Instant) -> Node {
        let links = p.link_names.iter().map(|_| Link::new()).collect();
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
            drain_cause: DrainCause::Switchover,
            cut_off_since: None,
            peer_connected_since: None,
            peer_lost_at: None,
            last_event: now,
            stalled_until: None,
            refused: None,
            next_vip_probe: None,
            fallback_since: None,
            fencing: fence::Fencing::default(),
        }
    }

    /// Applies one event and returns what the I/O layer must do, in order.
    pub fn handle(&mut self, event: Event, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        self.notice_stall(now, &mut out);
        match event {
            Event::Tick => {}
            Event::Heartbeat { link, summary, hears_us } => self.on_heartbeat(link, summary, hears_us, now, &mut out),
            Event::Check { name, ok } => self.on_check(name, ok, &mut out),
            Event::Connectivity { reachable, total } => {
                self.connectivity_known = true;
                self.reachable = reachable;
                self.targets = total;
                let cut_off = total > 0 && reachable == 0;
                match (cut_off, self.cut_off_since) {
                    (true, None) => self.cut_off_since = Some(now),
                    (false, Some(_)) => self.cut_off_since = None,
                    _ => {}
                }
                self.set_fault(Fault::NoConnectivity, cut_off, None, &mut out);
            }
            Event::Group(g) => self.on_group(g, now, &mut out),
            Event::Admin(a) => self.on_admin(a, now, &mut out),
            Event::DrainFinished { calls_left } => {
                if self.draining.is_some() {
                    let left = calls_left.map_or("unknown".to_string(), |n| n.to_string());
                    if self.peer_eligible() {
                        self.draining = None;
                        record(&mut out, RecordKind::Admin, format!("drain finished, {left} call(s) left"));
                        self.stop_group(Release::ToPeer, &mut out);
                    } else {
                        self.cancel_drain(&mut out);
                    }
                }
            }
            Event::VipProbed { answered, sip } => self.on_vip_probed(answered, sip, now, &mut out),
            Event::FencePeer => {
                let peer = self.status(now).peer;
                self.fencing.ask(&peer, self.p.deadtime, now, &mut out);
            }
            Event::Outdated { failure } => self.fencing.on_outdated(failure, now, &mut out),
            Event::SplitBrain { resource, report } => {
                record(&mut out, RecordKind::SplitBrain, format!("DRBD split brain on {resource}: {report}"));
                notify(
                    &mut out,
                    Severity::Critical,
                    format!("{}: DRBD split brain on {resource}", self.p.node_name),
                    report,
                );
                self.set_fault(Fault::SplitBrain(resource), true, None, &mut out);
            }
        }
        self.fencing.retry(self.group, now, &mut out);
        self.initdead_passed |= now.saturating_duration_since(self.started) >= self.p.initdead;
        self.expire(now, &mut out);
        self.watch_links(now, &mut out);
        match (self.eligible(), self.eligible_since) {
            (true, None) => self.eligible_since = Some(now),
            (false, Some(_)) => self.eligible_since = None,
            _ => {}
        }
        match (self.fallback_fit() && !self.eligible(), self.fallback_since) {
            (true, None) => self.fallback_since = Some(now),
            (false, Some(_)) => self.fallback_since = None,
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
            Admin::Switchover { .. } | Admin::Standby if self.draining.is_some() || self.release != Release::None => {
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
        // As of the last event: every tick is one.
        let (fence_request, fenced) = self.fencing.flags(self.last_event);
        NodeSummary {
            role: self.role(),
            group: self.group,
            healthy: self.healthy(),
            reachable: self.reachable,
            targets: self.targets,
            handover: self.handover.is_some(),
            calls: None,
            fence_request,
            fenced,
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
                    one_way: l.one_way,
                })
                .collect(),
        }
    }

    /// Applies new timing and policy from a reloaded config; identities must not change.
    pub fn update_params(&mut self, p: Params) {
        if p.link_names.len() != self.links.len() {
            self.links = p.link_names.iter().map(|_| Link::new()).collect();
        }
        self.p = p;
    }

    fn on_heartbeat(&mut self, link: usize, summary: NodeSummary, hears_us: bool, now: Instant, out: &mut Vec<Action>) {
        self.fencing.on_peer(&summary, self.group, now, out);
        let Some(l) = self.links.get_mut(link) else { return };
        l.last_seen = Some(now);
        if hears_us {
            l.echoed = Some(now);
        }
        if !l.up {
            l.up = true;
            // A link coming up gets time for its first echo before it counts as one-way.
            l.echoed = Some(now);
            record(out, RecordKind::Link, format!("link {} up: hearing {}", self.p.link_names[link], self.p.peer_name));
        }
        let silent_there = l.echoed.is_none_or(|t| now.saturating_duration_since(t) > self.p.deadtime);
        let name = &self.p.link_names[link];
        if silent_there && !l.one_way {
            l.one_way = true;
            let msg = format!(
                "link {name} is one-way: {} hears {} on it, but {} does not hear {}",
                self.p.node_name, self.p.peer_name, self.p.peer_name, self.p.node_name
            );
            record(out, RecordKind::Link, msg.clone());
            notify(
                out,
                Severity::Warning,
                format!("{}: one-way heartbeat link {name}", self.p.node_name),
                format!("{msg}; nothing moves for it (check a firewall or a duplex mismatch on that link)"),
            );
        } else if !silent_there && l.one_way {
            l.one_way = false;
            record(out, RecordKind::Link, format!("link {name} carries heartbeats both ways again"));
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
        if !summary.connected() {
            self.peer_connected_since = None;
        } else if self.peer_connected_since.is_none() {
            self.peer_connected_since = Some(now);
        }
        if summary.group == GroupPhase::Running {
            // The address that answered was the peer's, and the peer is back: nothing to
            // probe for any more.
            if let Some(r) = self.refused.take() {
                record(out, RecordKind::Health, format!("peer {} is heard holding the group: the VIP that answered ({} probe(s) since the refusal) was its own", self.p.peer_name, r.probes));
                self.next_vip_probe = None;
                self.faults.retain(|f, _| !matches!(f, Fault::VipConflict(_)));
                out.push(Action::Announce);
            }
        }
        self.peer = Some(summary);
        self.peer_heard = Some(now);
    }

    /// A gap of more than deadtime since the last event: this daemon did not run (SIGSTOP,
    /// a stalled VM). The silence on the links was ours, so the peer is not judged by it; and
    /// for a while this node reports itself unhealthy, so that if the peer took the group
    /// meanwhile the both-primary tie goes to the peer, which kept running.
    fn notice_stall(&mut self, now: Instant, out: &mut Vec<Action>) {
        let gap = now.saturating_duration_since(self.last_event);
        self.last_event = now;
        if self.stalled_until.is_some_and(|t| now >= t) {
            self.stalled_until = None;
            out.push(Action::Announce);
        }
        if gap <= self.p.deadtime {
            return;
        }
        record(
            out,
            RecordKind::Health,
            format!(
                "{} did not run for {} ms (frozen or stalled); not judging the peer by that silence",
                self.p.node_name,
                gap.as_millis()
            ),
        );
        for l in &mut self.links {
            if l.last_seen.is_some() {
                l.last_seen = Some(now);
            }
        }
        self.stalled_until = Some(now + self.p.deadtime * 2);
        out.push(Action::Announce);
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
                    let message = format!("{} holds the group", self.p.node_name);
                    out.push(Action::Record(Record {
                        kind: RecordKind::FailoverEnd,
                        message,
                        end: Some(TakeoverEnd::GroupUp),
                    }));
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
                    record(
                        out,
                        RecordKind::SplitBrain,
                        format!("{REFUSED_THE_GROUP}: {reason}; probing the VIP every {} ms", VIP_REPROBE.as_millis()),
                    );
                    self.refused = Some(Refusal { since: now, probes: 0, diagnosed: false });
                    self.next_vip_probe = Some(now + VIP_REPROBE);
                    self.set_fault(Fault::VipConflict(reason), true, None, out);
                } else {
                    notify(
                        out,
                        Severity::Critical,
                        format!("{}: resource {resource} failed to start", self.p.node_name),
                        reason,
                    );
                    self.set_fault(Fault::Resource(resource), true, until, out);
                }
                if self.failover_open {
                    self.failover_open = false;
                    let end = if conflict { TakeoverEnd::Refused } else { TakeoverEnd::Failed };
                    let message = TAKEOVER_FAILED.into();
                    out.push(Action::Record(Record { kind: RecordKind::FailoverEnd, message, end: Some(end) }));
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
                notify(
                    out,
                    Severity::Critical,
                    format!("{}: resource {resource} would not stop", self.p.node_name),
                    reason,
                );
                self.set_fault(Fault::StopFailed(resource), true, None, out);
                out.push(Action::Announce);
            }
            GroupEvent::ResourceFailed { resource, reason } => {
                let retry = format!(
                    "{reason}; retried after failure-timeout ({} s) unless the peer takes over first",
                    self.p.failure_timeout.as_secs()
                );
                notify(out, Severity::Critical, format!("{}: resource {resource} failed", self.p.node_name), retry);
                self.set_fault(Fault::Resource(resource), true, Some(now + self.p.failure_timeout), out);
            }
            GroupEvent::Recovered { resource } => {
                notify(
                    out,
                    Severity::Info,
                    format!("{}: resource {resource} recovered", self.p.node_name),
                    "restarted after its failure".into(),
                );
                self.set_fault(Fault::Resource(resource), false, None, out);
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
                    self.begin_release(DrainCause::Standby, false, now, out);
                }
            }
            Admin::Online => {
                self.admin_standby = false;
                // Like `crm resource cleanup`: forget expiring failures, a refused takeover
                // and a split brain the operator has resolved by hand. A holder's failed
                // members are restarted; their faults end when they run again.
                let holding = self.holding();
                let failed: Vec<String> = self
                    .faults
                    .keys()
                    .filter_map(|f| match f {
                        Fault::Resource(r) if holding => Some(r.clone()),
                        _ => None,
                    })
                    .collect();
                self.faults.retain(|f, until| {
                    (until.is_none() && !matches!(f, Fault::SplitBrain(_) | Fault::VipConflict(_)))
                        || (holding && matches!(f, Fault::Resource(_)))
                });
                self.refused = None;
                self.next_vip_probe = None;
                if !failed.is_empty() {
                    record(out, RecordKind::Admin, format!("restarting failed resource(s): {}", failed.join(", ")));
                    out.push(Action::RestartFailed);
                }
            }
            Admin::Switchover { now: skip_drain } => self.begin_release(DrainCause::Switchover, skip_drain, now, out),
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

    fn begin_release(&mut self, cause: DrainCause, skip_drain: bool, now: Instant, out: &mut Vec<Action>) {
        if skip_drain || self.p.drain_timeout.is_zero() {
            self.stop_group(Release::ToPeer, out);
        } else {
            self.draining = Some(now + self.p.drain_timeout);
            self.drain_cause = cause;
            out.push(Action::Drain { deadline: self.p.drain_timeout });
        }
    }

    /// The peer stopped being able to take over while calls were draining: moving now would
    /// leave nobody serving, so the PBX takes calls again and the operator hears why.
    fn cancel_drain(&mut self, out: &mut Vec<Action>) {
        self.draining = None;
        let what = match self.drain_cause {
            DrainCause::Switchover => "switchover",
            DrainCause::Standby => {
                self.admin_standby = false;
                "standby"
            }
            DrainCause::Failback => "failback",
        };
        let why = format!("peer {} can no longer take over ({})", self.p.peer_name, self.peer_state_words());
        record(
            out,
            RecordKind::Admin,
            format!(
                "{what} cancelled during the call drain: {why}; {} keeps the group and takes new calls again",
                self.p.node_name
            ),
        );
        notify(
            out,
            Severity::Warning,
            format!("{}: {what} cancelled", self.p.node_name),
            format!(
                "{why}. {} keeps the group and its PBX takes new calls again; ask again once the peer is back.",
                self.p.node_name
            ),
        );
        out.push(Action::CancelDrain);
        out.push(Action::Announce);
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
            if now >= deadline + self.p.deadtime && self.peer_eligible() {
                // The I/O layer never answered the drain: move anyway.
                self.draining = None;
                record(out, RecordKind::Admin, "drain did not report back; moving anyway".into());
                self.stop_group(Release::ToPeer, out);
            }
        }
        if self.group == GroupPhase::Running {
            // A holder that still has a failed member after failure-timeout had nobody to
            // give the group to: restart the member (Pacemaker's failure-timeout), again
            // every failure-timeout while it keeps failing.
            let mut due = Vec::new();
            for (f, until) in self.faults.iter_mut() {
                if let (Fault::Resource(r), Some(u)) = (f, until.as_mut()) {
                    if now >= *u {
                        *u = now + self.p.failure_timeout;
                        due.push(r.clone());
                    }
                }
            }
            if !due.is_empty() {
                record(
                    out,
                    RecordKind::Health,
                    format!("failure-timeout passed with no peer to hand over to: restarting {}", due.join(", ")),
                );
                out.push(Action::RestartFailed);
            }
        }
        // A failure keeps the node out only while it does not hold the group.
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
                record(
                    out,
                    RecordKind::Link,
                    format!(
                        "link {} down: {} silent for {} ms",
                        self.p.link_names[i],
                        self.p.peer_name,
                        self.p.deadtime.as_millis()
                    ),
                );
            }
        }
        let Some(newest) = newest else { return };
        let quiet = now.saturating_duration_since(newest);
        if self.peer_alive && quiet > self.p.warntime && !self.suspicious {
            self.suspicious = true;
            record(
                out,
                RecordKind::Suspicion,
                format!("peer {} silent on all links for {} ms", self.p.peer_name, quiet.as_millis()),
            );
        }
        if self.peer_alive && quiet > self.p.deadtime {
            self.peer_alive = false;
            self.both_primary = false;
            self.peer_lost_at = Some(now);
            self.peer_connected_since = None;
            record(
                out,
                RecordKind::Peer,
                format!("peer {} dead: silent on all links for {} ms", self.p.peer_name, quiet.as_millis()),
            );
            notify(
                out,
                Severity::Warning,
                format!("peer {} is dead", self.p.peer_name),
                format!("no heartbeat on any link for {} ms", quiet.as_millis()),
            );
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
            // A peer that can no longer take what was handed to it will not: stop waiting
            // for it, so this node may take the group back (see `reconcile_fallback`).
            let peer_unfit = self.peer_heard > Some(since) && !self.peer_eligible() && !self.peer_holding();
            if peer_took || !self.peer_alive || peer_unfit || (stale && !self.peer_holding()) {
                self.handover = None;
                out.push(Action::Announce);
            }
        }
        match self.group {
            GroupPhase::Starting | GroupPhase::Stopping => {}
            GroupPhase::Running => self.reconcile_holder(now, out),
            GroupPhase::Stopped => {
                self.probe_vip(now, out);
                self.reconcile_standby(now, out);
            }
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
            if !self.peer_eligible() {
                self.cancel_drain(out);
            }
            return;
        }
        // Only a peer whose group runs is a second holder: one that is still starting may
        // yet be refused (its VIP probe meets ours) and must not make this node stop.
        let peer_holds = self.peer_alive && self.peer.is_some_and(|p| p.group == GroupPhase::Running);
        if peer_holds {
            // A peer that does not hear us cannot learn that it won: only we can settle
            // it, by yielding. Its echo is expected within an interval or two.
            let heard_there = self.peer_hears_us(now, self.p.interval * 2);
            if self.both_primary && !heard_there {
                record(
                    out,
                    RecordKind::SplitBrain,
                    format!(
                        "both nodes primary and {} does not hear {}: {} stops",
                        self.p.peer_name, self.p.node_name, self.p.node_name
                    ),
                );
                self.stop_group(Release::Quietly, out);
            } else if !self.both_primary {
                self.both_primary = true;
                let peer = self.peer.unwrap_or_else(|| self.summary());
                let keep = heard_there && self.wins_tie(&peer);
                let (survivor, loser) =
                    if keep { (&self.p.node_name, &self.p.peer_name) } else { (&self.p.peer_name, &self.p.node_name) };
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
        if self.isolated() {
            record(out, RecordKind::Health, format!("{} is isolated: peer {} silent on every link and no ping target answers; releasing the group (on-isolation = \"release\")", self.p.node_name, self.p.peer_name));
            notify(out, Severity::Critical, format!("{}: isolated, released the group", self.p.node_name), format!("peer {} is silent on every link and no ping target answers; the peer takes over if it still reaches the gateway", self.p.peer_name));
            self.stop_group(Release::Quietly, out);
            return;
        }
        if !self.peer_eligible() {
            return;
        }
        let retry_ok = self.last_stop_failure.is_none_or(|t| now >= t + self.p.failure_timeout);
        // A split brain alone does not move the group: the peer's copy diverged too, and
        // the holder's is the one in use.
        let moving: Vec<&Fault> = self.faults.keys().filter(|f| !matches!(f, Fault::SplitBrain(_))).collect();
        // Lost ping targets move the group only once the peer has kept its own for the
        // dampen window after our loss: a gateway blip both nodes see must move nothing.
        let dampened = moving.iter().all(|f| **f == Fault::NoConnectivity)
            && self
                .cut_off_since
                .zip(self.peer_connected_since)
                .is_none_or(|(lost, peer_ok)| now < lost.max(peer_ok) + self.p.ping_dampen);
        if !moving.is_empty() && !dampened && retry_ok {
            let why: Vec<String> = moving.iter().map(ToString::to_string).collect();
            record(out, RecordKind::Health, format!("handing over to {}: {}", self.p.peer_name, why.join(", ")));
            self.stop_group(Release::ToPeer, out);
        } else if moving.is_empty()
            && self.p.auto_failback
            && self.p.preferred == Some(false)
            && self.peer.is_some_and(|p| p.role == Role::Secondary)
        {
            record(out, RecordKind::Admin, format!("auto-failback to preferred node {}", self.p.peer_name));
            self.begin_release(DrainCause::Failback, false, now, out);
        }
    }

    fn reconcile_standby(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.handover.is_some() {
            return;
        }
        if !self.eligible() {
            self.reconcile_fallback(now, out);
            return;
        }
        if !self.peer_alive {
            if self.peer.is_some() {
                self.start_group(format!("peer {} is dead", self.p.peer_name), false, out);
            } else if now.saturating_duration_since(self.started) >= self.p.initdead {
                self.start_group(
                    format!("peer {} not heard within initdead ({} ms)", self.p.peer_name, self.p.initdead.as_millis()),
                    false,
                    out,
                );
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

    /// Nobody holds the group, both nodes are alive, and neither is fully eligible: a node
    /// whose only fault is lost ping targets serves anyway (the LAN's phones still reach
    /// it), rather than leaving the pair with nobody serving for a fault both share. Never
    /// with a silent peer: a node that hears neither its peer nor its gateway is the one
    /// cut off.
    fn reconcile_fallback(&mut self, now: Instant, out: &mut Vec<Action>) {
        if !self.fallback_fit() || !self.peer_alive || self.peer_heard <= self.fallback_since {
            return;
        }
        let Some(peer) = self.peer else { return };
        if peer.group != GroupPhase::Stopped || peer.role == Role::Primary || self.peer_eligible() {
            return;
        }
        if self.peer_starting_since.is_some_and(|since| now.saturating_duration_since(since) < self.p.initdead) {
            return;
        }
        // The peer may be in the same position (cut off from the gateway, healthy
        // otherwise): then only one of the two, chosen the same way on both, starts.
        let peer_fallback_fit = peer.healthy && !matches!(peer.role, Role::Standby | Role::Starting);
        if peer_fallback_fit && !self.wins_tie(&peer) {
            return;
        }
        self.start_group(
            format!(
                "nobody holds the group and peer {} cannot ({}); serving without ping targets",
                self.p.peer_name,
                self.peer_state_words()
            ),
            true,
            out,
        );
    }

    /// While a refused takeover stands, looks at the VIP again every `VIP_REPROBE`.
    fn probe_vip(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.refused.is_none() || self.next_vip_probe.is_some_and(|t| now < t) {
            return;
        }
        self.next_vip_probe = Some(now + VIP_REPROBE);
        out.push(Action::ProbeVip);
    }

    fn on_vip_probed(&mut self, answered: bool, sip: Option<bool>, now: Instant, out: &mut Vec<Action>) {
        let Some(r) = self.refused.as_mut() else { return };
        r.probes += 1;
        if answered {
            if sip == Some(false) && !self.peer_alive && !r.diagnosed {
                r.diagnosed = true;
                let msg = format!(
                    "the VIP answers ARP but not SIP, and peer {} is silent: its daemon probably died and left the addresses behind (run `pbxha release` there), or another host holds the VIP; {} takes over as soon as the VIP falls silent",
                    self.p.peer_name, self.p.node_name
                );
                record(out, RecordKind::SplitBrain, msg.clone());
                notify(
                    out,
                    Severity::Critical,
                    format!("{}: VIP held by a node that does not answer SIP", self.p.node_name),
                    msg,
                );
            }
            return;
        }
        let waited = now.saturating_duration_since(r.since);
        record(
            out,
            RecordKind::Health,
            format!("the VIP fell silent {} ms after the refused takeover", waited.as_millis()),
        );
        self.refused = None;
        self.next_vip_probe = None;
        self.faults.retain(|f, _| !matches!(f, Fault::VipConflict(_)));
        out.push(Action::Announce);
    }

    /// Deterministic choice between two candidates, evaluated the same way on both nodes:
    /// health first (a node that was frozen, or has a failed member, yields), then
    /// connectivity, then the preferred node, then the lower node id.
    fn wins_tie(&self, peer: &NodeSummary) -> bool {
        let me_healthy = self.healthy();
        if me_healthy != peer.healthy {
            return me_healthy;
        }
        let me_connected = self.targets == 0 || self.reachable > 0;
        if me_connected != peer.connected() {
            return me_connected;
        }
        match self.p.preferred {
            Some(me) => me,
            None => self.p.node_id < self.p.peer_id,
        }
    }

    /// Some link's echo said within `window` that the peer hears this node.
    fn peer_hears_us(&self, now: Instant, window: Duration) -> bool {
        self.links.iter().any(|l| l.echoed.is_some_and(|t| now.saturating_duration_since(t) <= window))
    }

    /// Whether this node hears the peer on `link` now: what its heartbeats on that link
    /// echo. The simulation's stand-in for the membership layer's echo.
    #[cfg(test)]
    fn hears_peer_on(&self, link: usize, now: Instant) -> bool {
        self.links
            .get(link)
            .and_then(|l| l.last_seen)
            .is_some_and(|t| now.saturating_duration_since(t) <= self.p.deadtime)
    }

    /// What the heartbeat calls healthy: no fault but lost ping targets (carried apart, as
    /// `reachable`/`targets`), and not just back from a freeze.
    fn healthy(&self) -> bool {
        self.stalled_until.is_none() && self.faults.keys().all(|f| *f == Fault::NoConnectivity)
    }

    /// Only the ping targets are missing: fit to serve when nobody else can.
    fn fallback_fit(&self) -> bool {
        self.connectivity_known && self.healthy() && !self.admin_standby && !self.shutdown
    }

    /// Cut off from the peer and the gateway at once, with the policy to let go. The two
    /// verdicts arrive at different times (deadtime after the last heartbeat, the ping
    /// window after the first lost ping), so what is compared is when each loss began: a
    /// pulled cable starts both within a ping interval. A node whose peer was gone before its
    /// gateway went (or the gateway before the peer) keeps the group: a peer gone before
    /// could not take it over, and a gateway gone first is a shared fault the peer saw too.
    fn isolated(&self) -> bool {
        if self.p.on_isolation != OnIsolation::Release || self.peer_alive {
            return false;
        }
        let (Some(cut), Some(lost), Some(heard)) = (self.cut_off_since, self.peer_lost_at, self.peer_heard) else {
            return false;
        };
        // The ping verdict comes between (fall - 1) × interval (failed pings that end at once)
        // and fall × interval + timeout (pings that time out) after the gateway went, so the
        // loss began between `earliest` and a ping round plus a timeout later; the peer was
        // last heard within one heartbeat interval before its link went.
        let Some(earliest) = cut.checked_sub(self.p.ping_dampen) else { return false };
        let margin = self.p.interval / 2;
        lost >= heard
            && heard + self.p.interval + margin >= earliest
            && heard <= earliest + self.p.ping_interval + self.p.ping_timeout + margin
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
    out.push(Action::Record(Record { kind, message, end: None }));
}

fn notify(out: &mut Vec<Action>, severity: Severity, subject: String, body: String) {
    out.push(Action::Notify(Notice { severity, subject, body }));
}
