//! Two fsm nodes wired together in memory with a fake clock: heartbeats travel over
//! simulated links that can be cut, the resource group takes simulated time to start and
//! stop, and every step checks that the group is never held by both nodes at once.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::fence::FenceVerdict;
use super::*;

pub(super) const STEP: Duration = Duration::from_millis(10);

pub(super) fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

pub(super) fn params(id: u16) -> Params {
    let (me, peer) = if id == 1 { ("a", "b") } else { ("b", "a") };
    Params {
        node_id: id,
        node_name: me.into(),
        peer_id: 3 - id,
        peer_name: peer.into(),
        link_names: vec!["hb".into(), "pub".into()],
        interval: ms(200),
        deadtime: ms(1000),
        warntime: ms(500),
        initdead: ms(3000),
        ping_targets: 0,
        auto_failback: false,
        preferred: None,
        failure_timeout: ms(10_000),
        drain_timeout: ms(2000),
        ping_dampen: PING_INTERVAL * PING_FALL + PING_TIMEOUT,
        ping_interval: PING_INTERVAL,
        ping_timeout: PING_TIMEOUT,
        on_isolation: OnIsolation::Release,
    }
}

/// The simulated pinger's timing: the config's defaults (`[ping]` interval 1 s, timeout
/// 800 ms, rise 2, fall 3).
pub(super) const PING_INTERVAL: Duration = Duration::from_millis(1000);
const PING_TIMEOUT: Duration = Duration::from_millis(800);
const PING_RISE: u32 = 2;
const PING_FALL: u32 = 3;

/// One node's pinger: a sample every interval through the daemon's own hysteresis
/// (`pbxha_telephony::Hysteresis`: unknown until `rise` successes or `fall` failures in a
/// row, which also change the verdict after).
#[derive(Clone, Debug)]
pub(super) struct Pinger {
    next: Instant,
    verdict: pbxha_telephony::Hysteresis,
}

impl Pinger {
    fn new(first: Instant) -> Pinger {
        Pinger { next: first, verdict: pbxha_telephony::Hysteresis::new(PING_RISE, PING_FALL) }
    }

    /// A sample taken at its time; the verdict when it changed.
    fn sample(&mut self, ok: bool) -> Option<bool> {
        self.verdict.observe(ok).and_then(pbxha_telephony::Health::up)
    }
}

/// The simulated wall clock at the start, unix seconds: what boot counters are seeded from.
const EPOCH_SECS: u64 = 1_790_000_000;

/// Heartbeats between the two nodes go through the membership layer's own replay rules:
/// each node's boot counter comes from `boot::next` (the stored counter and its wall clock,
/// which may be set wrong), and each receiver's `Tracker` judges every packet.
pub(super) struct Membership {
    /// The counter each node's current start sends, and the one it stored.
    boot: [u64; 2],
    stored: [Option<u64>; 2],
    /// Seconds each node's wall clock is off.
    pub clock_offset: [i64; 2],
    /// Next sequence per node and link.
    sequence: [Vec<u64>; 2],
    /// Node n's tracker of the packets it receives.
    trackers: [crate::membership::tracker::Tracker; 2],
    /// Packets the trackers dropped, per receiving node.
    pub dropped: [u64; 2],
}

impl Membership {
    fn new(links: usize) -> Membership {
        let boot = [EPOCH_SECS, EPOCH_SECS];
        Membership {
            boot,
            stored: [Some(boot[0]), Some(boot[1])],
            clock_offset: [0, 0],
            sequence: [vec![0; links], vec![0; links]],
            trackers: [0, 1]
                .map(|n| crate::membership::tracker::Tracker::new(n as u16 + 1, boot[n], 2 - n as u16, links)),
            dropped: [0, 0],
        }
    }

    /// Node n starts again at `elapsed` into the run: a new counter, stored, and a fresh
    /// tracker of its own; its peer's tracker keeps what it knew.
    fn restart(&mut self, n: usize, elapsed: Duration) {
        let wall = (EPOCH_SECS + elapsed.as_secs()).saturating_add_signed(self.clock_offset[n]);
        self.boot[n] = crate::membership::boot::next(self.stored[n], wall);
        self.stored[n] = Some(self.boot[n]);
        let links = self.sequence[n].len();
        self.sequence[n] = vec![0; links];
        self.trackers[n] = crate::membership::tracker::Tracker::new(n as u16 + 1, self.boot[n], 2 - n as u16, links);
    }

    /// Whether node `to` accepts the next packet `from` sends on `link`.
    fn deliver(&mut self, from: usize, link: usize, now: Instant) -> bool {
        self.sequence[from][link] += 1;
        let header = crate::membership::packet::Header {
            cluster_id: 1,
            node_id: from as u16 + 1,
            link: link as u8,
            boot: self.boot[from],
            sequence: self.sequence[from][link],
            echo: Default::default(),
        };
        let to = 1 - from;
        let accepted =
            matches!(self.trackers[to].check(link, &header, now), crate::membership::tracker::Verdict::Accepted { .. });
        if !accepted {
            self.dropped[to] += 1;
        }
        accepted
    }
}

pub(super) struct Sim {
    pub now: Instant,
    /// When the run began, for the simulated wall clock.
    began: Instant,
    pub membership: Membership,
    pub nodes: [Node; 2],
    /// The daemon runs (sends heartbeats, receives events).
    pub alive: [bool; 2],
    /// A frozen daemon (SIGSTOP) handles nothing until then; its kernel still answers
    /// ARP for what it holds, and packets for it wait in its socket.
    pub frozen_until: [Option<Instant>; 2],
    /// link_up[link][from]: packets from `from` on `link` are delivered.
    pub link_up: Vec<[bool; 2]>,
    /// The node's cables are in: ARP between two nodes works when both are.
    pub cabled: [bool; 2],
    /// The node reaches the ping target (simulated only where `pinger` is set).
    pub gw_ok: [bool; 2],
    pub pinger: [Option<Pinger>; 2],
    /// Failed pings end at once instead of at their timeout.
    pub pings_fail_fast: bool,
    /// The VIP is on the node's interface: from the group's start until it stopped, and
    /// after a crash until `vip_left_until`.
    pub vip_on: [bool; 2],
    pub vip_left_until: [Option<Instant>; 2],
    /// How long a crashed daemon's address stays behind (the sentinel's or systemd's
    /// clean-up time).
    pub leftover: Duration,
    /// Another host answers ARP for the VIP.
    pub external_vip: bool,
    /// The group has a VIP whose ARP probe guards takeovers from a silent peer.
    pub guard: bool,
    /// A restart of the node's failed member fails again.
    pub member_broken: [bool; 2],
    next_beat: [Instant; 2],
    /// (when, node, event) waiting to be delivered.
    pub pending: VecDeque<(Instant, usize, Event)>,
    pub start_time: Duration,
    pub stop_time: Duration,
    /// Scripted answer for the next group start on a node.
    pub start_result: [Option<GroupEvent>; 2],
    pub drain_time: Duration,
    /// How many `drbdadm outdate` runs a node's DRBD refuses before one succeeds (it has not
    /// seen the disconnect yet); `u32::MAX`: it never does.
    pub outdate_refusals: [u32; 2],
    /// When each node's disk was last outdated for the peer (an outdate not refused).
    pub disk_outdated: [Option<Instant>; 2],
    /// The group counts as held from StartGroup until Stopped is delivered.
    pub held: [bool; 2],
    pub both_held_steps: u32,
    pub allow_both: bool,
    pub log: Vec<(usize, Action)>,
}

impl Sim {
    pub fn new(pa: Params, pb: Params) -> Sim {
        let now = Instant::now();
        let links = pa.link_names.len();
        Sim {
            now,
            began: now,
            membership: Membership::new(links),
            nodes: [Node::new(pa, now), Node::new(pb, now)],
            alive: [true, true],
            frozen_until: [None, None],
            link_up: vec![[true, true]; 2],
            cabled: [true, true],
            gw_ok: [true, true],
            pinger: [None, None],
            pings_fail_fast: false,
            vip_on: [false, false],
            vip_left_until: [None, None],
            leftover: ms(800),
            external_vip: false,
            guard: true,
            member_broken: [false, false],
            next_beat: [now, now],
            pending: VecDeque::new(),
            start_time: ms(50),
            stop_time: ms(40),
            start_result: [None, None],
            drain_time: ms(300),
            outdate_refusals: [0, 0],
            disk_outdated: [None, None],
            held: [false, false],
            both_held_steps: 0,
            allow_both: false,
            log: Vec::new(),
        }
    }

    pub fn pair() -> Sim {
        Sim::new(params(1), params(2))
    }

    /// A pair that has settled with `a` primary.
    pub fn settled() -> Sim {
        let mut s = Sim::pair();
        s.run(ms(2000));
        assert_eq!(s.roles(), [Role::Primary, Role::Secondary]);
        s.log.clear();
        s
    }

    /// Both nodes ping a simulated gateway, their rounds `phase` apart.
    pub fn with_pingers(mut self, phase: Duration) -> Sim {
        for n in 0..2 {
            self.nodes[n].p.ping_targets = 1;
            self.nodes[n] = Node::new(self.nodes[n].p.clone(), self.now);
            self.pinger[n] = Some(Pinger::new(self.now + ms(100) + phase * n as u32));
        }
        self
    }

    pub fn runs(&self, n: usize) -> bool {
        self.alive[n] && self.frozen_until[n].is_none()
    }

    pub fn feed(&mut self, n: usize, ev: Event) {
        if !self.runs(n) {
            return;
        }
        let actions = self.nodes[n].handle(ev, self.now);
        for a in actions {
            self.act(n, a.clone());
            self.log.push((n, a));
        }
    }

    /// Someone else answers ARP for the VIP, as node `n`'s probe sees it.
    fn vip_answered_for(&self, n: usize) -> bool {
        let other = 1 - n;
        self.guard && (self.external_vip || (self.vip_on[other] && self.cabled[n] && self.cabled[other]))
    }

    /// SIP answers on the VIP that answered: the other node's PBX runs (a frozen daemon's
    /// PBX still does; a crashed one's address has nothing behind it).
    fn vip_sip_for(&self, n: usize) -> bool {
        let other = 1 - n;
        !self.external_vip && self.alive[other] && self.held[other]
    }

    fn act(&mut self, n: usize, a: Action) {
        match a {
            Action::StartGroup { released } => {
                self.held[n] = true;
                let scripted = self.start_result[n].take();
                let ev = if !released && self.vip_answered_for(n) {
                    GroupEvent::StartFailed {
                        resource: "vip".into(),
                        reason: "198.51.100.100 answered by 02:00:00:00:00:09".into(),
                        conflict: true,
                        held: false,
                    }
                } else {
                    scripted.unwrap_or(GroupEvent::Started)
                };
                if matches!(ev, GroupEvent::StartFailed { held: false, .. }) {
                    self.held[n] = false;
                } else {
                    self.vip_on[n] = true;
                }
                self.pending.push_back((self.now + self.start_time, n, Event::Group(ev)));
            }
            Action::StopGroup => {
                self.pending.push_back((self.now + self.stop_time, n, Event::Group(GroupEvent::Stopped)))
            }
            Action::Drain { .. } => {
                self.pending.push_back((self.now + self.drain_time, n, Event::DrainFinished { calls_left: Some(0) }))
            }
            Action::Announce => self.beat(n),
            Action::Exit => self.alive[n] = false,
            Action::Reannounce
            | Action::Record(_)
            | Action::Notify(_)
            | Action::FenceAnswer { .. }
            | Action::MissedFence { .. } => {}
            Action::Outdate { .. } => {
                let refused = self.outdate_refusals[n] > 0;
                if refused && self.outdate_refusals[n] != u32::MAX {
                    self.outdate_refusals[n] -= 1;
                }
                let failure = refused
                    .then(|| "r0: State change failed: (-6) Refusing to be Outdated while Connected".to_string());
                if !refused {
                    self.disk_outdated[n] = Some(self.now);
                }
                self.pending.push_back((self.now + ms(20), n, Event::Outdated { failure }));
            }
            Action::CancelDrain => {
                self.pending.retain(|(_, m, e)| !(*m == n && matches!(e, Event::DrainFinished { .. })))
            }
            Action::RestartFailed => {
                let ev = if self.member_broken[n] {
                    GroupEvent::ResourceFailed { resource: "sip".into(), reason: "exited again".into() }
                } else {
                    GroupEvent::Recovered { resource: "sip".into() }
                };
                self.pending.push_back((self.now + self.start_time, n, Event::Group(ev)));
            }
            Action::ProbeVip => {
                let answered = self.vip_answered_for(n);
                let sip = answered.then(|| self.vip_sip_for(n));
                self.pending.push_back((self.now + ms(100), n, Event::VipProbed { answered, sip }));
            }
        }
    }

    fn beat(&mut self, from: usize) {
        if !self.runs(from) {
            return;
        }
        let summary = self.nodes[from].summary();
        for link in 0..self.link_up.len() {
            if self.link_up[link][from] && self.membership.deliver(from, link, self.now) {
                let hears_us = self.nodes[from].hears_peer_on(link, self.now);
                // Delivered on the next step, like a packet on a LAN.
                self.pending.push_back((self.now, 1 - from, Event::Heartbeat { link, summary, hears_us }));
            }
        }
    }

    pub fn step(&mut self) {
        self.now += STEP;
        for n in 0..2 {
            if self.frozen_until[n].is_some_and(|t| self.now >= t) {
                self.frozen_until[n] = None;
            }
            if self.vip_left_until[n].is_some_and(|t| self.now >= t) {
                self.vip_left_until[n] = None;
                self.vip_on[n] = false;
            }
        }
        let due: Vec<_> = {
            let now = self.now;
            let frozen = [!self.runs(0) && self.alive[0], !self.runs(1) && self.alive[1]];
            let (due, rest): (Vec<_>, Vec<_>) = self.pending.drain(..).partition(|(t, n, _)| *t <= now && !frozen[*n]);
            self.pending = rest.into();
            due
        };
        for (_, n, ev) in due {
            if let Event::Group(GroupEvent::Stopped) = ev {
                if self.alive[n] {
                    self.held[n] = false;
                    self.vip_on[n] = false;
                }
            }
            self.feed(n, ev);
        }
        for n in 0..2 {
            self.ping(n);
            if self.runs(n) && self.now >= self.next_beat[n] {
                self.next_beat[n] = self.now + self.nodes[n].p.interval;
                // As the daemon does: the fsm sees the clock before each heartbeat.
                self.feed(n, Event::Tick);
                self.beat(n);
            }
            self.feed(n, Event::Tick);
        }
        if self.held[0] && self.held[1] {
            self.both_held_steps += 1;
            assert!(self.allow_both, "both nodes hold the group at {:?}", self.now);
        }
    }

    fn ping(&mut self, n: usize) {
        let ok = self.gw_ok[n] && self.cabled[n];
        let (now, runs) = (self.now, self.runs(n));
        let Some(p) = self.pinger[n].as_mut() else { return };
        if now < p.next || !runs {
            return;
        }
        p.next += PING_INTERVAL;
        if let Some(up) = p.sample(ok) {
            // The verdict arrives when the failing probe's timeout ran out, or at once where
            // failed pings are refused (a firewall's EPERM, an unreachable route).
            let at = if up || self.pings_fail_fast { self.now } else { self.now + PING_TIMEOUT };
            self.pending.push_back((at, n, Event::Connectivity { reachable: u8::from(up), total: 1 }));
        }
    }

    pub fn run(&mut self, d: Duration) {
        for _ in 0..(d.as_millis() / STEP.as_millis()) {
            self.step();
        }
    }

    /// Runs until `cond` holds; returns how long it took. Panics after `limit`.
    pub fn run_until(&mut self, limit: Duration, cond: impl Fn(&Sim) -> bool) -> Duration {
        let start = self.now;
        while !cond(self) {
            assert!(self.now - start < limit, "condition not reached within {limit:?}; roles {:?}", self.roles());
            self.step();
        }
        self.now - start
    }

    pub fn roles(&self) -> [Role; 2] {
        [self.nodes[0].role(), self.nodes[1].role()]
    }

    /// The daemon dies (kill -9); its address stays behind for `leftover`.
    pub fn kill(&mut self, n: usize) {
        self.alive[n] = false;
        self.held[n] = false;
        self.frozen_until[n] = None;
        if self.vip_on[n] {
            self.vip_left_until[n] = Some(self.now + self.leftover);
        }
        self.pending.retain(|(_, m, _)| *m != n);
    }

    pub fn revive(&mut self, n: usize, p: Params) {
        self.membership.restart(n, self.now - self.began);
        self.nodes[n] = Node::new(p, self.now);
        self.alive[n] = true;
        if let Some(pinger) = self.pinger[n].as_mut() {
            *pinger = Pinger::new(self.now + ms(100));
            self.nodes[n].p.ping_targets = 1;
            self.nodes[n] = Node::new(self.nodes[n].p.clone(), self.now);
        }
    }

    pub fn freeze(&mut self, n: usize, d: Duration) {
        if self.alive[n] {
            self.frozen_until[n] = Some(self.now + d);
        }
    }

    pub fn cut_all_links(&mut self, cut: bool) {
        for l in &mut self.link_up {
            *l = [!cut, !cut];
        }
    }

    /// A true partition: the heartbeat links and the ARP path between the two.
    pub fn partition(&mut self, cut: bool) {
        self.cut_all_links(cut);
        self.cabled[0] = !cut;
    }

    pub fn records(&self, n: usize, kind: RecordKind) -> Vec<String> {
        self.log
            .iter()
            .filter_map(|(m, a)| match a {
                Action::Record(r) if *m == n && r.kind == kind => Some(r.message.clone()),
                _ => None,
            })
            .collect()
    }

    pub fn count(&self, n: usize, f: impl Fn(&Action) -> bool) -> usize {
        self.log.iter().filter(|(m, a)| *m == n && f(a)).count()
    }

    pub fn starts(&self, n: usize) -> usize {
        self.count(n, |a| matches!(a, Action::StartGroup { .. }))
    }

    /// DRBD's fence-peer handler on node `n`: polls every 200 ms, as `pbxha replica
    /// fence-peer` does, until a verdict with an exit code; returns it and how long it took.
    pub fn fence_peer(&mut self, n: usize, limit: Duration) -> (FenceVerdict, Duration) {
        let start = self.now;
        while self.now - start < limit {
            self.feed(n, Event::FencePeer);
            let verdict = self.log.iter().rev().find_map(|(m, a)| match a {
                Action::FenceAnswer { verdict, .. } if *m == n => Some(*verdict),
                _ => None,
            });
            match verdict {
                Some(v) if v.exit_code().is_some() => return (v, self.now - start),
                _ => self.run(ms(200)),
            }
        }
        panic!("no fence verdict within {limit:?}");
    }
}

#[test]
fn cold_start_elects_exactly_one_primary_by_lower_id() {
    let mut s = Sim::pair();
    s.run(ms(2000));
    assert_eq!(s.roles(), [Role::Primary, Role::Secondary]);
    assert_eq!(s.starts(1), 0);
}

#[test]
fn preferred_node_wins_the_cold_start_tie() {
    let mut pa = params(1);
    let mut pb = params(2);
    pa.preferred = Some(false);
    pb.preferred = Some(true);
    let mut s = Sim::new(pa, pb);
    s.run(ms(2000));
    assert_eq!(s.roles(), [Role::Secondary, Role::Primary]);
}

#[test]
fn a_lone_node_takes_the_group_after_initdead_not_before() {
    let mut s = Sim::pair();
    s.kill(1);
    s.run(ms(2900));
    assert_eq!(s.nodes[0].role(), Role::Starting);
    let took = s.run_until(ms(1000), |s| s.nodes[0].role() == Role::Primary);
    assert!(took <= ms(200));
    assert!(s.records(0, RecordKind::FailoverBegin)[0].contains("initdead"));
}

#[test]
fn peer_death_leads_to_takeover_after_deadtime_with_a_timeline() {
    let mut s = Sim::settled();
    s.kill(0);
    let took = s.run_until(ms(3000), |s| s.nodes[1].group == GroupPhase::Running);
    // Deadtime runs from the last heartbeat, up to one interval before the kill.
    assert!(took > ms(800) && took < ms(1400), "took {took:?}");
    assert_eq!(s.records(1, RecordKind::Suspicion).len(), 1);
    assert!(s.records(1, RecordKind::FailoverBegin)[0].contains("peer a is dead"));
    assert_eq!(s.records(1, RecordKind::FailoverEnd).len(), 1);
    let order: Vec<RecordKind> = s
        .log
        .iter()
        .filter_map(|(n, a)| match a {
            Action::Record(r)
                if *n == 1
                    && matches!(
                        r.kind,
                        RecordKind::Suspicion | RecordKind::FailoverBegin | RecordKind::FailoverEnd
                    ) =>
            {
                Some(r.kind)
            }
            _ => None,
        })
        .collect();
    assert_eq!(order, [RecordKind::Suspicion, RecordKind::FailoverBegin, RecordKind::FailoverEnd]);
}

#[test]
fn one_silent_link_is_not_a_dead_peer() {
    let mut s = Sim::settled();
    s.link_up[0] = [false, false];
    s.run(ms(5000));
    assert_eq!(s.roles(), [Role::Primary, Role::Secondary]);
    assert_eq!(s.starts(1), 0);
    assert_eq!(s.records(1, RecordKind::Link).len(), 1, "{:?}", s.records(1, RecordKind::Link));
}

#[test]
fn flapping_links_never_cause_a_failover() {
    let mut s = Sim::settled();
    // Each link goes down for 1.5 s in turn; never both at once for longer than deadtime.
    for round in 0..6 {
        let l = round % 2;
        s.link_up[l] = [false, false];
        s.run(ms(1500));
        s.link_up[l] = [true, true];
        s.run(ms(300));
    }
    // And both links dropping for less than deadtime.
    for _ in 0..5 {
        s.cut_all_links(true);
        s.run(ms(700));
        s.cut_all_links(false);
        s.run(ms(500));
    }
    assert_eq!(s.starts(1), 0);
    assert_eq!(s.roles(), [Role::Primary, Role::Secondary]);
}

#[test]
fn partition_heal_keeps_one_primary_deterministically_and_reannounces() {
    let mut s = Sim::settled();
    s.allow_both = true;
    s.partition(true);
    s.run_until(ms(3000), |s| s.nodes[1].group == GroupPhase::Running);
    assert_eq!(s.roles(), [Role::Primary, Role::Primary]);
    s.partition(false);
    s.run_until(ms(2000), |s| s.roles() == [Role::Primary, Role::Secondary]);
    s.allow_both = false;
    s.run(ms(3000));
    assert_eq!(s.roles(), [Role::Primary, Role::Secondary]);
    assert_eq!(s.count(0, |a| matches!(a, Action::Reannounce)), 1);
    assert_eq!(s.count(1, |a| matches!(a, Action::Reannounce)), 0);
    for n in 0..2 {
        assert_eq!(s.records(n, RecordKind::SplitBrain).len(), 1, "node {n}");
        assert!(s.count(n, |a| matches!(a, Action::Notify(x) if x.severity == Severity::Critical)) >= 1);
    }
}

#[test]
fn partition_heal_prefers_the_node_that_kept_connectivity() {
    let mut pa = params(1);
    let mut pb = params(2);
    pa.ping_targets = 1;
    pb.ping_targets = 1;
    let mut s = Sim::new(pa, pb);
    s.feed(0, Event::Connectivity { reachable: 1, total: 1 });
    s.feed(1, Event::Connectivity { reachable: 1, total: 1 });
    s.run(ms(2000));
    assert_eq!(s.roles(), [Role::Primary, Role::Secondary]);
    s.allow_both = true;
    s.partition(true);
    s.run_until(ms(3000), |s| s.nodes[1].group == GroupPhase::Running);
    // While apart, a loses its ping target but keeps the group: its peer looks dead.
    s.feed(0, Event::Connectivity { reachable: 0, total: 1 });
    s.partition(false);
    s.run_until(ms(2000), |s| s.nodes[0].group == GroupPhase::Stopped);
    assert_eq!(s.nodes[1].role(), Role::Primary);
}

#[test]
fn switchover_drains_then_moves_without_overlap() {
    let mut s = Sim::settled();
    s.feed(0, Event::Admin(Admin::Switchover { now: false }));
    assert_eq!(s.count(0, |a| matches!(a, Action::Drain { .. })), 1);
    let took = s.run_until(ms(3000), |s| s.nodes[1].group == GroupPhase::Running);
    assert!(took >= s.drain_time, "moved before the drain finished");
    s.run(ms(2000));
    assert_eq!(s.roles(), [Role::Secondary, Role::Primary]);
    // And back, skipping the drain.
    s.log.clear();
    s.feed(1, Event::Admin(Admin::Switchover { now: true }));
    assert_eq!(s.count(1, |a| matches!(a, Action::Drain { .. })), 0);
    let took = s.run_until(ms(3000), |s| s.nodes[0].group == GroupPhase::Running);
    assert!(took < ms(300), "planned move took {took:?}");
    s.run(ms(2000));
    assert_eq!(s.roles(), [Role::Primary, Role::Secondary]);
}

#[test]
fn switchover_is_refused_where_it_cannot_work() {
    let mut s = Sim::settled();
    assert!(s.nodes[1]
        .refuse(&Admin::Switchover { now: true })
        .unwrap()
        .contains("run the switchover on the primary (a)"));
    s.feed(1, Event::Admin(Admin::Standby));
    s.run(ms(500));
    let why = s.nodes[0].refuse(&Admin::Switchover { now: true }).unwrap();
    assert!(why.contains("peer b cannot take over (standby)"), "{why}");
    s.feed(0, Event::Admin(Admin::Switchover { now: true }));
    s.run(ms(2000));
    assert_eq!(s.roles(), [Role::Primary, Role::Standby]);
}

#[test]
fn a_drain_that_never_reports_back_still_moves() {
    let mut s = Sim::settled();
    s.drain_time = ms(60_000);
    s.feed(0, Event::Admin(Admin::Switchover { now: false }));
    s.run_until(ms(5000), |s| s.nodes[1].group == GroupPhase::Running);
}

#[test]
fn standby_moves_the_group_and_stays_out_until_online() {
    let mut s = Sim::settled();
    s.feed(0, Event::Admin(Admin::Standby));
    s.run_until(ms(4000), |s| s.roles() == [Role::Standby, Role::Primary]);
    // The peer dies: a standby node still does not take over.
    s.kill(1);
    s.run(ms(4000));
    assert_eq!(s.nodes[0].role(), Role::Standby);
    assert_eq!(s.starts(0), 0);
    s.feed(0, Event::Admin(Admin::Online));
    s.run_until(ms(1000), |s| s.nodes[0].group == GroupPhase::Running);
}

/// A failing check (already debounced by its own rise/fall) is a fault: the primary hands
/// over, and the node returns to service when the check recovers.
#[test]
fn a_failing_check_hands_over_and_its_recovery_ends_the_fault() {
    let mut s = Sim::settled();
    s.feed(0, Event::Check { name: "sip".into(), ok: true });
    s.run(ms(500));
    assert_eq!(s.roles(), [Role::Primary, Role::Secondary], "a passing check changes nothing");
    s.feed(0, Event::Check { name: "sip".into(), ok: false });
    s.run_until(ms(2000), |s| s.nodes[1].group == GroupPhase::Running);
    assert_eq!(s.nodes[0].role(), Role::Fault);
    assert!(s.nodes[0].status(s.now).faults.iter().any(|f| f.contains("check `sip` failing")));
    s.feed(0, Event::Check { name: "sip".into(), ok: true });
    assert_eq!(s.nodes[0].role(), Role::Secondary);
    s.run(ms(2000));
    assert_eq!(s.roles(), [Role::Secondary, Role::Primary], "no failback without auto-failback");
}

#[test]
fn an_unhealthy_primary_keeps_the_group_when_the_peer_is_unhealthy_too() {
    let mut s = Sim::settled();
    for _ in 0..3 {
        s.feed(1, Event::Check { name: "disk".into(), ok: false });
    }
    s.run(ms(500));
    for _ in 0..3 {
        s.feed(0, Event::Check { name: "sip".into(), ok: false });
    }
    s.run(ms(3000));
    assert_eq!(s.nodes[0].group, GroupPhase::Running);
    assert_eq!(s.nodes[1].role(), Role::Fault);
    // The peer recovers: now the unhealthy primary hands over.
    for _ in 0..2 {
        s.feed(1, Event::Check { name: "disk".into(), ok: true });
    }
    s.run_until(ms(2000), |s| s.nodes[1].group == GroupPhase::Running);
}

#[test]
fn lost_connectivity_hands_over_and_blocks_takeover() {
    let mut pa = params(1);
    let mut pb = params(2);
    pa.ping_targets = 1;
    pb.ping_targets = 1;
    let mut s = Sim::new(pa, pb);
    s.run(ms(5000));
    assert_eq!(s.roles(), [Role::Starting, Role::Starting], "no verdict from the pinger yet: nobody takes");
    assert_eq!(s.starts(0) + s.starts(1), 0);
    s.feed(0, Event::Connectivity { reachable: 1, total: 1 });
    s.feed(1, Event::Connectivity { reachable: 1, total: 1 });
    s.run(ms(1000));
    assert_eq!(s.roles(), [Role::Primary, Role::Secondary]);
    s.feed(0, Event::Connectivity { reachable: 0, total: 1 });
    // Not at once: b must keep its own ping targets for the dampen window first.
    s.run(ms(3000));
    assert_eq!(s.nodes[0].group, GroupPhase::Running);
    s.run_until(ms(2000), |s| s.nodes[1].group == GroupPhase::Running);
    // b is cut off too and a dies: b keeps the group (it holds it) ...
    s.feed(1, Event::Connectivity { reachable: 0, total: 1 });
    s.run(ms(500));
    assert_eq!(s.nodes[1].group, GroupPhase::Running);
    // ... but a cut-off node never takes over.
    s.kill(1);
    s.run(ms(3000));
    assert_eq!(s.nodes[0].group, GroupPhase::Stopped);
}

#[test]
fn exhausted_restarts_hand_over_and_the_failure_expires() {
    let mut s = Sim::settled();
    s.feed(0, Event::Group(GroupEvent::ResourceFailed { resource: "pbx".into(), reason: "exited".into() }));
    s.run_until(ms(2000), |s| s.nodes[1].group == GroupPhase::Running);
    assert_eq!(s.nodes[0].role(), Role::Fault);
    s.run(ms(10_500));
    assert_eq!(s.nodes[0].role(), Role::Secondary);
}

#[test]
fn a_vip_conflict_refuses_the_takeover_reprobes_and_takes_over_when_it_falls_silent() {
    let mut s = Sim::settled();
    s.external_vip = true;
    s.kill(0);
    s.run(ms(5000));
    assert_eq!(s.nodes[1].role(), Role::Fault);
    assert_eq!(s.nodes[1].group, GroupPhase::Stopped);
    assert_eq!(s.starts(1), 1, "re-probes look at the VIP without starting the group");
    assert!(s.count(1, |a| matches!(a, Action::ProbeVip)) >= 3, "probed again every second");
    assert_eq!(s.records(1, RecordKind::SplitBrain).len(), 2, "the refusal and, once, the diagnosis");
    let critical = s.count(1, |a| matches!(a, Action::Notify(n) if n.severity == Severity::Critical));
    assert_eq!(critical, 1, "one alert, saying the VIP answers ARP but not SIP");
    assert!(s.records(1, RecordKind::SplitBrain)[1].contains("answers ARP but not SIP"));
    s.external_vip = false;
    let took = s.run_until(ms(3000), |s| s.nodes[1].group == GroupPhase::Running);
    assert!(took <= VIP_REPROBE + ms(300), "taken over {took:?} after the VIP fell silent");
}

#[test]
fn auto_failback_returns_the_group_to_the_preferred_node() {
    let mut pa = params(1);
    let mut pb = params(2);
    pa.preferred = Some(true);
    pb.preferred = Some(false);
    pa.auto_failback = true;
    pb.auto_failback = true;
    let mut s = Sim::new(pa.clone(), pb);
    s.run(ms(2000));
    s.kill(0);
    s.run_until(ms(3000), |s| s.nodes[1].group == GroupPhase::Running);
    s.revive(0, pa);
    s.run_until(ms(8000), |s| s.nodes[0].group == GroupPhase::Running);
    s.run(ms(1000));
    assert_eq!(s.roles(), [Role::Primary, Role::Secondary]);
}

#[test]
fn without_auto_failback_a_revived_node_stays_secondary() {
    let mut s = Sim::settled();
    s.kill(0);
    s.run_until(ms(3000), |s| s.nodes[1].group == GroupPhase::Running);
    s.revive(0, params(1));
    s.run(ms(10_000));
    assert_eq!(s.roles(), [Role::Secondary, Role::Primary]);
    assert_eq!(s.starts(0), 0);
}

#[test]
fn shutdown_hands_over_before_deadtime_and_exits() {
    let mut s = Sim::settled();
    s.feed(0, Event::Admin(Admin::Shutdown));
    let took = s.run_until(ms(2000), |s| s.nodes[1].group == GroupPhase::Running);
    assert!(took < ms(500), "hand-over on shutdown took {took:?}");
    assert!(s.nodes[0].exited());
}

#[test]
fn a_stop_failure_keeps_the_peer_from_starting() {
    let mut s = Sim::settled();
    s.feed(0, Event::Admin(Admin::Switchover { now: true }));
    // Replace the queued Stopped with a stop failure.
    s.pending.retain(|(_, n, _)| *n != 0);
    s.feed(0, Event::Group(GroupEvent::StopFailed { resource: "vip".into(), reason: "EBUSY".into() }));
    s.run(ms(5000));
    assert_eq!(s.nodes[0].group, GroupPhase::Running);
    assert_eq!(s.nodes[1].group, GroupPhase::Stopped);
    assert_eq!(s.starts(1), 0);
}

/// Random operator actions, link cuts (never both links at once), check failures and node
/// deaths over simulated hours: the group is never held twice, and once things calm down
/// exactly one node holds it.
#[test]
fn random_trouble_never_puts_the_group_on_both_nodes() {
    let mut seed: u64 = 0x5eed_0f9b_3a00;
    let mut rnd = move |n: u64| {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (seed >> 33) % n
    };
    for _round in 0..20 {
        let mut s = Sim::pair();
        s.run(ms(2000));
        for _ in 0..60 {
            let n = rnd(2) as usize;
            match rnd(9) {
                0 => s.feed(n, Event::Admin(Admin::Switchover { now: rnd(2) == 0 })),
                1 => s.feed(n, Event::Admin(Admin::Standby)),
                2 | 3 => s.feed(n, Event::Admin(Admin::Online)),
                4 => {
                    let l = rnd(2) as usize;
                    s.link_up[l] = [false, false];
                    s.link_up[1 - l] = [true, true];
                }
                5 => s.cut_all_links(false),
                6 => {
                    for _ in 0..3 {
                        s.feed(n, Event::Check { name: "sip".into(), ok: rnd(3) == 0 });
                    }
                }
                7 if s.alive[1 - n] => s.kill(n),
                _ => {
                    if !s.alive[n] {
                        s.revive(n, params(n as u16 + 1));
                    }
                }
            }
            s.run(ms(rnd(3000) + 10));
        }
        // Calm: everything back, both online and healthy.
        s.cut_all_links(false);
        for n in 0..2 {
            if !s.alive[n] {
                s.revive(n, params(n as u16 + 1));
            }
            for _ in 0..2 {
                s.feed(n, Event::Check { name: "sip".into(), ok: true });
            }
            s.feed(n, Event::Admin(Admin::Online));
        }
        s.run(ms(15_000));
        let holders = s.nodes.iter().filter(|n| n.group == GroupPhase::Running).count();
        assert_eq!(holders, 1, "roles after calm: {:?}", s.roles());
    }
}

/// At a cold start one node's pinger may answer before the other's: the slower node is
/// still starting, not in fault, and the preferred node still wins.
#[test]
fn a_late_first_ping_result_does_not_hand_the_cold_start_to_the_other_node() {
    for (late, delay) in [(0usize, 400u64), (0, 900), (1, 400)] {
        let mut pa = params(1);
        let mut pb = params(2);
        pa.ping_targets = 1;
        pb.ping_targets = 1;
        pa.preferred = Some(true);
        pb.preferred = Some(false);
        let mut s = Sim::new(pa, pb);
        s.feed(1 - late, Event::Connectivity { reachable: 1, total: 1 });
        s.run(ms(delay));
        assert_eq!(s.nodes[late].role(), Role::Starting, "without a ping verdict a node is starting, not in fault");
        s.feed(late, Event::Connectivity { reachable: 1, total: 1 });
        s.run(ms(3000));
        assert_eq!(s.roles(), [Role::Primary, Role::Secondary], "late node {late} after {delay} ms");
    }
}

/// A peer that stays `Starting` (its pinger never answers) is waited for only up to initdead.
#[test]
fn a_peer_stuck_starting_is_waited_for_only_until_initdead() {
    let mut pa = params(1);
    let mut pb = params(2);
    pb.ping_targets = 1;
    pa.preferred = Some(false);
    pb.preferred = Some(true);
    let mut s = Sim::new(pa, pb);
    s.run(ms(2500));
    assert_eq!(s.roles(), [Role::Secondary, Role::Starting]);
    s.run_until(ms(3000), |s| s.nodes[0].group == GroupPhase::Running);
}

/// Only a takeover from a dead or never-heard peer probes for a previous VIP holder; a
/// peer that said it released the group is believed.
#[test]
fn only_takeovers_from_a_silent_peer_probe_for_the_vip() {
    let mut s = Sim::settled();
    s.feed(0, Event::Admin(Admin::Switchover { now: true }));
    s.run_until(ms(2000), |s| s.nodes[1].group == GroupPhase::Running);
    assert_eq!(s.count(1, |a| matches!(a, Action::StartGroup { released: true })), 1);
    s.log.clear();
    s.kill(1);
    s.run_until(ms(3000), |s| s.nodes[0].group == GroupPhase::Running);
    assert_eq!(s.count(0, |a| matches!(a, Action::StartGroup { released: false })), 1);
}

#[test]
fn drbd_split_brain_keeps_the_group_where_it_is_until_an_operator_resolves_it() {
    let mut s = Sim::settled();
    for n in 0..2 {
        let report = format!("local: r0 on node {n}");
        s.feed(n, Event::SplitBrain { resource: "r0".into(), report });
    }
    let critical = |s: &Sim, n| {
        s.count(n, |a| matches!(a, Action::Notify(x) if x.severity == Severity::Critical && x.subject.contains("split brain on r0") && x.body.contains("local: r0")))
    };
    assert_eq!((critical(&s, 0), critical(&s, 1)), (1, 1));
    assert!(s.nodes[1].split_brain() && !s.nodes[1].summary().healthy);
    s.run(ms(3000));
    // Neither copy is better than the other: the holder keeps it, nobody moves it.
    assert_eq!(s.roles(), [Role::Primary, Role::Fault]);
    assert_eq!(s.starts(1), 0);
    s.kill(0);
    s.run(ms(3000));
    assert_eq!((s.roles()[1], s.starts(1)), (Role::Fault, 0), "a split-brain copy is not promoted when the peer dies");
    // The failure timeout does not clear it either; only the operator does.
    s.run(ms(11_000));
    assert_eq!(s.starts(1), 0);
    s.feed(1, Event::Admin(Admin::Online));
    s.run_until(ms(3000), |s| s.nodes[1].role() == Role::Primary);
    assert!(!s.nodes[1].split_brain());
}

/// A start whose clean-up stop failed may have left the VIP behind: the node keeps
/// reporting the group as its own, so the peer never starts beside it.
#[test]
fn a_failed_start_that_could_not_clean_up_keeps_the_peer_out() {
    let mut s = Sim::settled();
    s.start_result[1] = Some(GroupEvent::StartFailed {
        resource: "sip".into(),
        reason: "exited; stopping `vip` afterwards also failed".into(),
        conflict: false,
        held: true,
    });
    s.feed(0, Event::Admin(Admin::Switchover { now: true }));
    s.run(ms(3000));
    assert_eq!(s.nodes[1].group, GroupPhase::Running, "b must still claim what it may hold");
    assert_eq!(s.nodes[0].group, GroupPhase::Stopped);
    assert_eq!(s.starts(0), 0, "a must not start beside b's leftovers");
}

/// A stopping daemon whose stop failed keeps retrying instead of leaving resources held.
#[test]
fn shutdown_retries_a_failed_stop() {
    let mut s = Sim::settled();
    s.feed(0, Event::Admin(Admin::Shutdown));
    s.pending.retain(|(_, n, _)| *n != 0);
    s.feed(0, Event::Group(GroupEvent::StopFailed { resource: "vip".into(), reason: "EBUSY".into() }));
    assert!(!s.nodes[0].exited());
    s.run_until(ms(3000), |s| s.nodes[0].exited());
    assert_eq!(s.count(0, |a| matches!(a, Action::StopGroup)), 2);
}

#[test]
fn a_peer_that_refuses_the_first_outdate_then_succeeds_is_outdated() {
    let mut s = Sim::settled();
    s.outdate_refusals[1] = 1;
    let (verdict, took) = s.fence_peer(0, ms(5000));
    assert_eq!((verdict, verdict.exit_code()), (FenceVerdict::Outdated, Some(4)), "after {took:?}");
    assert_eq!(s.count(1, |a| matches!(a, Action::Outdate { .. })), 2, "retried once");
    assert!(took < ms(3000), "before the deadline: {took:?}");
    assert_eq!(s.count(1, |a| matches!(a, Action::MissedFence { .. })), 0);
    // The answer is dropped with the request.
    s.run(ms(1000));
    assert!(!s.nodes[0].summary().fence_request && !s.nodes[1].summary().fenced);
}

#[test]
fn a_dead_peer_is_unreachable_only_once_declared_dead() {
    let mut s = Sim::settled();
    s.kill(1);
    let (verdict, took) = s.fence_peer(0, ms(5000));
    assert_eq!((verdict, verdict.exit_code()), (FenceVerdict::Unreachable, Some(5)));
    assert!(took >= ms(1000) - ms(200) && took < ms(3000), "after deadtime, not before: {took:?}");
    // A peer already dead: at once, nothing asked.
    let (verdict, took) = s.fence_peer(0, ms(1000));
    assert_eq!((verdict, took), (FenceVerdict::Unreachable, Duration::ZERO));
}

#[test]
fn a_peer_holding_the_group_keeps_its_disk() {
    let mut s = Sim::settled();
    let (verdict, took) = s.fence_peer(1, ms(5000));
    assert_eq!((verdict, verdict.exit_code(), took), (FenceVerdict::PeerPrimary, Some(6), Duration::ZERO));
    s.run(ms(1000));
    assert_eq!(s.count(0, |a| matches!(a, Action::Outdate { .. })), 0, "a primary never outdates");
}

#[test]
fn a_live_peer_that_never_confirms_is_a_failure_not_unreachable() {
    let mut s = Sim::settled();
    s.outdate_refusals[1] = u32::MAX;
    let (verdict, took) = s.fence_peer(0, ms(10_000));
    assert_eq!((verdict, verdict.exit_code()), (FenceVerdict::Unconfirmed, Some(1)));
    assert!(took >= ms(3000) && took < ms(3500), "at FENCE_DEADTIMES dead times: {took:?}");
    let tries = s.count(1, |a| matches!(a, Action::Outdate { .. }));
    assert!((8..=12).contains(&tries), "every 300 ms while asked: {tries}");
    // The request lapsed: the peer stops retrying and keeps its disk from promotion.
    s.run(ms(3000));
    assert_eq!(s.count(1, |a| matches!(a, Action::MissedFence { .. })), 1);
    assert!(s.count(1, |a| matches!(a, Action::Outdate { .. })) - tries <= 8);
    assert_eq!(s.roles(), [Role::Primary, Role::Secondary]);
}

/// The explorer's seed 859: b retries a refused outdate for a; a dies, and b takes the group
/// over. No heartbeat of a's ends the retries, so they must end with b's start, or b
/// outdates the disk it is about to serve from.
#[test]
fn a_node_that_takes_over_stops_outdating_for_the_dead_asker() {
    let mut s = Sim::settled();
    s.outdate_refusals[1] = u32::MAX;
    s.feed(0, Event::FencePeer);
    s.run_until(ms(2000), |s| s.count(1, |a| matches!(a, Action::Outdate { .. })) >= 2);
    s.kill(0);
    s.run_until(ms(5000), |s| s.nodes[1].group == GroupPhase::Running);
    let started = s.log.iter().rposition(|(n, a)| *n == 1 && matches!(a, Action::StartGroup { .. })).unwrap();
    s.run(ms(3000));
    let late: Vec<_> =
        s.log[started..].iter().filter(|(n, a)| *n == 1 && matches!(a, Action::Outdate { .. })).collect();
    assert!(late.is_empty(), "outdated after starting the group: {late:?}");
    assert_eq!(s.count(1, |a| matches!(a, Action::MissedFence { .. })), 1, "the missed fence is reported");
}
