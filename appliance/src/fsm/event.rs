//! What goes into the state machine ([`Event`]) and what comes out ([`Action`]).

use std::time::Duration;

use serde::Serialize;

use super::fence::FenceVerdict;
use crate::summary::NodeSummary;

/// Everything that can happen to a node, on one channel.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// Periodic timer: deadlines (deadtime, initdead, drain) are checked here.
    Tick,
    /// An authenticated heartbeat from the peer arrived on link `link` (index into the
    /// config's links). `hears_us`: the packet echoes a recent heartbeat of ours on that
    /// link, so the peer hears this node there too.
    Heartbeat { link: usize, summary: NodeSummary, hears_us: bool },
    /// A local health check (`[[check]]` with `failover = true`) changed its verdict; the
    /// check has already applied its own `rise`/`fall`. A failing check is a fault.
    Check { name: String, ok: bool },
    /// Ping targets answering now (after the pinger's own rise/fall) out of `total`.
    Connectivity { reachable: u8, total: u8 },
    /// News from the resource group executor.
    Group(GroupEvent),
    /// An operator's request from the control socket (or SIGTERM's hand-over).
    Admin(Admin),
    /// The call drain before a planned hand-over finished (calls reached zero, or the
    /// deadline passed with `calls_left`).
    DrainFinished { calls_left: Option<u32> },
    /// DRBD reported a split brain on `resource` (its split-brain handler): both copies
    /// changed apart. `report` has both sides' state for the alert.
    SplitBrain { resource: String, report: String },
    /// The answer to [`Action::ProbeVip`]: whether any VIP answered ARP (or IPv6 DAD), and
    /// whether it answered SIP OPTIONS (`None` without a SIP probe on the VIP).
    VipProbed { answered: bool, sip: Option<bool> },
    /// A poll of DRBD's fence-peer handler: ask the peer to outdate its disk; answered with
    /// [`Action::FenceAnswer`].
    FencePeer,
    /// The answer to [`Action::Outdate`]: `failure` says why the disks were not outdated.
    Outdated { failure: Option<String> },
}

#[derive(Clone, Debug, PartialEq)]
pub enum GroupEvent {
    /// Every resource started.
    Started,
    /// A resource failed to start; the executor has already stopped the ones before it.
    /// `held`: stopping them failed too, so something (the VIP, a mount) may still be held.
    StartFailed { resource: String, reason: String, conflict: bool, held: bool },
    /// Every resource stopped.
    Stopped,
    /// A resource would not stop. The node cannot safely give the group away.
    StopFailed { resource: String, reason: String },
    /// A running resource failed and local restarts are exhausted.
    ResourceFailed { resource: String, reason: String },
    /// A failed resource runs again after [`Action::RestartFailed`].
    Recovered { resource: String },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Admin {
    /// Take this node out of service (moving the group away if it holds it).
    Standby,
    /// Put it back.
    Online,
    /// Planned move of the group to the peer; `now` skips the call drain.
    Switchover { now: bool },
    /// The daemon is stopping (SIGTERM): hand over to a live peer, then stop.
    Shutdown,
}

/// What the I/O layer must do. The fsm never does any of it itself.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Start the resource group in order. `released`: the peer's authenticated heartbeat
    /// says its group is stopped, so checks for a previous holder (the VIP's ARP probe) can
    /// be skipped; false when the peer is dead or was never heard.
    StartGroup { released: bool },
    /// Stop the resource group in reverse order.
    StopGroup,
    /// Stop taking new calls and wait for active ones, up to `deadline`.
    Drain { deadline: Duration },
    /// Abandon the running drain and let the PBX take new calls again: the peer can no
    /// longer take over.
    CancelDrain,
    /// Restart the group's failed members (fresh restart budget); each answers with
    /// [`GroupEvent::Recovered`] or [`GroupEvent::ResourceFailed`].
    RestartFailed,
    /// Probe the VIPs (ARP / DAD, and SIP OPTIONS where a probe targets the VIP) without
    /// starting anything; the answer is [`Event::VipProbed`].
    ProbeVip,
    /// Send a heartbeat now instead of at the next interval: the summary changed.
    Announce,
    /// Send gratuitous ARP for the VIPs again (after winning a both-primary resolution).
    Reannounce,
    /// Write to the journal.
    Record(Record),
    /// Tell people (mail, hooks, log).
    Notify(Notice),
    /// The verdict for the fence-peer handler's poll ([`Event::FencePeer`]); `asked`: this
    /// poll raised the request to the peer.
    FenceAnswer { verdict: FenceVerdict, message: String, asked: bool },
    /// Outdate the local DRBD disks for the peer (attempt number `attempt`); the answer is
    /// [`Event::Outdated`].
    Outdate { attempt: u32 },
    /// The peer's request could not be met after `attempts` outdates (the last said
    /// `failure`): this disk is not promoted until it is seen in sync or an operator clears it.
    MissedFence { attempts: u32, failure: String },
    /// Shutdown finished: the daemon may exit.
    Exit,
}

/// A journal line the fsm asks for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Record {
    pub kind: RecordKind,
    pub message: String,
    /// On a `FailoverEnd`: how the takeover ended, for its report (the message is for people).
    pub end: Option<TakeoverEnd>,
}

/// How a takeover ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TakeoverEnd {
    /// The group runs here.
    GroupUp,
    /// A member would not start; the group did not move.
    Failed,
    /// The VIP answered ARP, so nothing started (the split-brain guard): counted apart, and
    /// with no outage of its own.
    Refused,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RecordKind {
    RoleChange,
    Peer,
    Link,
    Health,
    Admin,
    /// The first sign of trouble that may lead to a failover (a link went silent).
    Suspicion,
    /// The decision to take over; opens a failover timeline.
    FailoverBegin,
    /// The group is running on the new primary; closes the timeline.
    FailoverEnd,
    SplitBrain,
    /// The VIP's first SIP answer after a takeover (the PBX serves again).
    FirstAnswer,
    /// The calls the old primary had at a takeover: dropped, or moved on a hand-over.
    Calls,
}

/// Something a person should hear about.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Notice {
    pub severity: Severity,
    pub subject: String,
    pub body: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}
