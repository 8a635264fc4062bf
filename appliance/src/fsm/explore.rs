//! Faults that combine. The two-node simulation (`sim.rs`) tests each rule alone; the
//! failures that reach operators are combinations — a gateway blip both nodes see, a
//! failure with no peer to take over, a one-way link, a crash that leaves the VIP behind, a
//! freeze. Each such case found in the lab is a named scenario here, and a seeded explorer
//! throws random schedules of the same troubles at the pair, checking the invariants after
//! every simulated step. A failing seed prints its schedule; `PBXHA_EXPLORE_SEED=N` replays
//! one seed, `PBXHA_EXPLORE_SCHEDULES=N` runs more.
//!
//! The fsm reads no clock (time is the `now` it is handed, monotonic), so a sender's wall
//! clock matters only where packets are judged: the simulation sends every heartbeat
//! through the membership layer's real boot counter and tracker, and the explorer restarts
//! crashed daemons with their clocks an hour behind or ahead. DRBD fencing
//! (`fsm/fence.rs`) has its exchanges in `sim.rs`, and the explorer mixes them into its
//! schedules: a fence-peer handler polling on one node while the peer refuses some outdates,
//! checked for a verdict in time and for a disk outdated only where no group runs.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use super::fence::{FenceVerdict, FENCE_DEADTIMES, STALE_AFTER};
use super::sim::{ms, params, Sim, PING_INTERVAL, STEP};
use super::*;

/// Who holds the group, step by step: moves, gaps and double holders.
#[derive(Default)]
struct Watch {
    /// The last node that held the group alone.
    sole: Option<usize>,
    moves: u32,
    /// Since when nobody holds the group while some node could.
    unserved_since: Option<Instant>,
    longest_unserved: Duration,
    /// Since when both hold it.
    both_since: Option<Instant>,
}

impl Watch {
    fn observe(&mut self, s: &Sim) {
        if !s.alive[0] && !s.alive[1] {
            // Both daemons gone: whoever starts next is a cold start, not a move.
            self.sole = None;
        }
        let holds = |n: usize| s.alive[n] && s.nodes[n].group == GroupPhase::Running;
        let holders: Vec<usize> = (0..2).filter(|&n| holds(n)).collect();
        if let [only] = holders[..] {
            if self.sole.is_some_and(|was| was != only) {
                self.moves += 1;
            }
            self.sole = Some(only);
        }
        let anyone_could = (0..2).any(|n| fit(s, n));
        let starting = (0..2).any(|n| s.alive[n] && s.nodes[n].group != GroupPhase::Stopped);
        if holders.is_empty() && !starting && anyone_could {
            let since = *self.unserved_since.get_or_insert(s.now);
            self.longest_unserved = self.longest_unserved.max(s.now - since);
        } else {
            self.unserved_since = None;
        }
        if holders.len() == 2 {
            self.both_since.get_or_insert(s.now);
        } else {
            self.both_since = None;
        }
    }

    fn both_for(&self, s: &Sim) -> Duration {
        self.both_since.map_or(Duration::ZERO, |t| s.now - t)
    }
}

/// The node could serve: its daemon runs, it reaches the gateway, its members work, and
/// nobody took it out of service.
fn fit(s: &Sim, n: usize) -> bool {
    let node = &s.nodes[n];
    s.runs(n)
        && s.cabled[n]
        && s.gw_ok[n]
        && !s.member_broken[n]
        && !node.admin_standby
        && node.faults.keys().all(|f| matches!(f, Fault::NoConnectivity | Fault::VipConflict(_) | Fault::Resource(_)))
}

/// Runs `d`, observing every step.
fn run(s: &mut Sim, w: &mut Watch, d: Duration) {
    for _ in 0..(d.as_millis() / STEP.as_millis()) {
        s.step();
        w.observe(s);
    }
}

/// A pair with both pingers on one gateway, settled with `a` primary.
fn pinged_pair(phase: Duration) -> Sim {
    let mut s = Sim::pair().with_pingers(phase);
    s.run(ms(4000));
    assert_eq!(s.roles(), [Role::Primary, Role::Secondary]);
    s.log.clear();
    s
}

fn notices(s: &Sim, n: usize, severity: Severity) -> Vec<String> {
    s.log
        .iter()
        .filter_map(|(m, a)| match a {
            Action::Notify(x) if *m == n && x.severity == severity => Some(x.subject.clone()),
            _ => None,
        })
        .collect()
}

// ---- 1. A gateway blip both nodes see -------------------------------------------------

/// Both nodes ping the same gateway; it goes away for 5 s. Whatever the phase between
/// the two pingers, the group stays where it is and someone serves throughout.
#[test]
fn regression_1_a_gateway_blip_both_nodes_see_moves_nothing() {
    for phase in [ms(0), ms(300), ms(700), ms(990)] {
        let mut s = pinged_pair(phase);
        let mut w = Watch::default();
        w.observe(&s);
        s.gw_ok = [false, false];
        run(&mut s, &mut w, ms(5000));
        s.gw_ok = [true, true];
        run(&mut s, &mut w, ms(15_000));
        assert_eq!(w.moves, 0, "phase {phase:?}: the group moved for a shared fault");
        assert_eq!(s.starts(1), 0, "phase {phase:?}: b started the group");
        assert_eq!(s.nodes[0].group, GroupPhase::Running, "phase {phase:?}");
    }
}

/// A fault of a's alone still moves the group, once the peer kept its gateway for the
/// dampen window.
#[test]
fn regression_1_a_gateway_loss_of_the_primary_alone_moves_the_group_once() {
    let mut s = pinged_pair(ms(400));
    let mut w = Watch::default();
    s.gw_ok[0] = false;
    run(&mut s, &mut w, ms(15_000));
    assert_eq!((w.moves, s.nodes[1].group), (1, GroupPhase::Running));
    s.gw_ok[0] = true;
    run(&mut s, &mut w, ms(10_000));
    assert_eq!(w.moves, 1, "no failback");
}

/// a lets the group go for its lost gateway; b cannot start it (its start fails). a takes
/// it back rather than leave nobody serving.
#[test]
fn regression_1_a_node_that_let_the_group_go_takes_it_back_when_nobody_took_it() {
    let mut s = pinged_pair(ms(400));
    let mut w = Watch::default();
    s.start_result[1] =
        Some(GroupEvent::StartFailed { resource: "sip".into(), reason: "exited".into(), conflict: false, held: false });
    s.gw_ok[0] = false;
    run(&mut s, &mut w, ms(8000));
    assert_eq!(s.starts(1), 1, "b was handed the group and failed to start it");
    assert_eq!(s.nodes[0].group, GroupPhase::Running, "a took it back");
    assert!(w.longest_unserved <= ms(2500), "unserved for {:?}", w.longest_unserved);
}

// ---- 2. A failure with no usable peer ------------------------------------------------

#[test]
fn regression_2_a_failed_member_is_restarted_after_failure_timeout_when_no_peer_can_take() {
    let mut s = Sim::settled();
    s.kill(1);
    s.run(ms(2000));
    s.feed(0, Event::Group(GroupEvent::ResourceFailed { resource: "sip".into(), reason: "exited".into() }));
    assert!(!s.nodes[0].summary().healthy, "a holder with a failed member is unhealthy to its peer");
    let took = s.run_until(ms(12_000), |s| s.nodes[0].faults.is_empty());
    assert!(took >= ms(9_900), "restarted after the failure timeout, not before ({took:?})");
    assert_eq!(s.count(0, |a| matches!(a, Action::RestartFailed)), 1);
    assert_eq!(s.nodes[0].group, GroupPhase::Running);
}

#[test]
fn regression_2_online_restarts_what_failed_and_a_returning_peer_takes_an_unhealthy_group() {
    let mut s = Sim::settled();
    s.kill(1);
    s.run(ms(2000));
    s.member_broken[0] = true;
    s.feed(0, Event::Group(GroupEvent::ResourceFailed { resource: "sip".into(), reason: "exited".into() }));
    s.feed(0, Event::Admin(Admin::Online));
    assert_eq!(s.count(0, |a| matches!(a, Action::RestartFailed)), 1, "online starts what failed");
    s.run(ms(500));
    assert!(!s.nodes[0].faults.is_empty(), "it failed again: the fault stands");
    s.revive(1, params(2));
    s.run_until(ms(5000), |s| s.nodes[1].group == GroupPhase::Running);
}

// ---- 3. One-way heartbeat loss --------------------------------------------------------

/// b holds the group; a stops hearing b but b still hears a. a believes b dead and its
/// takeover is refused by the VIP guard; b never yields to a claim that is not running.
#[test]
fn regression_3_a_one_way_link_moves_nothing_and_loops_nowhere() {
    let mut s = Sim::settled();
    s.feed(0, Event::Admin(Admin::Switchover { now: true }));
    s.run_until(ms(3000), |s| s.nodes[1].group == GroupPhase::Running);
    s.run(ms(1000));
    s.log.clear();
    let mut w = Watch::default();
    w.observe(&s);
    for l in &mut s.link_up {
        l[1] = false;
    }
    run(&mut s, &mut w, ms(130_000));
    assert_eq!(w.moves, 0);
    assert_eq!(s.count(1, |a| matches!(a, Action::StopGroup)), 0, "b never stopped");
    assert_eq!(s.starts(0), 1, "a tried once, then only probed");
    let critical: Vec<String> = (0..2).flat_map(|n| notices(&s, n, Severity::Critical)).collect();
    assert!(critical.len() <= 1, "at most the one refusal alert, got {critical:?}");
}

/// The explorer's seed 302: a partition heals into a one-way link. The node that hears
/// its peer, but whose peer does not hear it, is the only one that can settle the
/// both-primary tie, so it yields whatever the tie rule says; and it reports the link.
#[test]
fn regression_3_a_partition_that_heals_into_a_one_way_link_leaves_one_holder() {
    let mut s = Sim::settled();
    s.allow_both = true;
    s.partition(true);
    s.run_until(ms(3000), |s| s.nodes[1].group == GroupPhase::Running);
    for l in &mut s.link_up {
        *l = [false, true];
    }
    s.cabled[0] = true;
    s.run(ms(1500));
    assert_eq!((s.nodes[0].group, s.nodes[1].group), (GroupPhase::Stopped, GroupPhase::Running));
    assert!(
        s.records(0, RecordKind::Link).iter().any(|m| m.contains("is one-way")),
        "{:?}",
        s.records(0, RecordKind::Link)
    );
}

// ---- 4. A crashed daemon that leaves its VIP behind ----------------------------------

#[test]
fn regression_4_a_crash_that_leaves_the_vip_is_taken_over_once_the_vip_falls_silent() {
    let mut s = Sim::settled();
    s.leftover = ms(6000);
    s.kill(0);
    let took = s.run_until(ms(10_000), |s| s.nodes[1].group == GroupPhase::Running);
    assert!(took <= ms(6000) + VIP_REPROBE + ms(400), "took over {took:?} after the crash");
    let diagnosis = s.records(1, RecordKind::SplitBrain);
    assert!(diagnosis.iter().any(|m| m.contains("answers ARP but not SIP")), "{diagnosis:?}");
    assert_eq!(notices(&s, 1, Severity::Critical).len(), 1, "one alert with the diagnosis");
    let begins = s.records(1, RecordKind::FailoverBegin);
    assert_eq!(begins.len(), 2, "the refused takeover and the real one: {begins:?}");
    assert!(begins.iter().all(|m| m.contains("is dead")), "{begins:?}");
}

// ---- 5. A peer that restarts with its clock wrong ---------------------------------------

/// The heartbeats go through the real tracker and boot counter: a node that restarts with
/// its clock an hour behind (or ahead, then right again) is heard at once, not refused as a
/// replay until its clock catches up.
#[test]
fn regression_5_a_peer_restarting_with_its_clock_behind_or_ahead_is_heard() {
    for clocks in [[-3600, 0], [3600, 0]] {
        let mut s = Sim::settled();
        for clock in clocks {
            s.kill(1);
            s.run(ms(3000));
            s.membership.clock_offset[1] = clock;
            let dropped = s.membership.dropped[0];
            s.revive(1, params(2));
            let heard = s.run_until(ms(2000), |s| s.nodes[0].peer_alive);
            assert!(heard <= ms(300), "clock {clock:+} s: heard after {heard:?}");
            assert_eq!(s.membership.dropped[0], dropped, "clock {clock:+} s: packets refused as replays");
            s.run_until(ms(5000), |s| s.roles() == [Role::Primary, Role::Secondary]);
        }
    }
}

// ---- 7. A drain that outlives the peer ------------------------------------------------

#[test]
fn regression_7_a_drain_is_cancelled_when_the_peer_dies_or_faults() {
    for (standby, peer_dies) in [(false, true), (true, true), (false, false), (true, false)] {
        let mut s = Sim::settled();
        s.drain_time = ms(60_000);
        let admin = if standby { Admin::Standby } else { Admin::Switchover { now: false } };
        s.feed(0, Event::Admin(admin));
        s.run(ms(500));
        assert!(s.nodes[0].draining.is_some());
        if peer_dies {
            s.kill(1);
        } else {
            s.feed(1, Event::Check { name: "sip".into(), ok: false });
        }
        s.run(ms(3000));
        let case = format!("standby {standby}, peer dies {peer_dies}");
        assert!(s.nodes[0].draining.is_none(), "{case}");
        assert_eq!(s.count(0, |a| matches!(a, Action::CancelDrain)), 1, "{case}");
        assert_eq!(s.count(0, |a| matches!(a, Action::StopGroup)), 0, "{case}");
        assert_eq!(s.nodes[0].group, GroupPhase::Running, "{case}");
        assert!(!s.nodes[0].admin_standby, "{case}: a cancelled standby is not left pending");
        assert!(notices(&s, 0, Severity::Warning).iter().any(|n| n.contains("cancelled")), "{case}");
    }
}

// ---- 8. The isolated primary ----------------------------------------------------------

#[test]
fn regression_8_an_isolated_primary_releases_or_keeps_as_configured() {
    // Failed pings that time out and ones refused at once (a firewall) give the ping verdict
    // at different times after the cut; so does the phase between the two pingers.
    let mut cases = Vec::new();
    for (policy, fast) in [(OnIsolation::Release, false), (OnIsolation::Release, true), (OnIsolation::Keep, false)] {
        for phase in [0, 300, 700, 990] {
            cases.push((policy, fast, phase));
        }
    }
    for (policy, fast, phase) in cases {
        let mut s = pinged_pair(ms(phase));
        s.pings_fail_fast = fast;
        s.nodes[0].p.on_isolation = policy;
        s.allow_both = true;
        let mut w = Watch::default();
        s.partition(true);
        s.cabled[0] = false;
        let cut = s.now;
        run(&mut s, &mut w, ms(8000));
        assert_eq!(
            s.nodes[1].group,
            GroupPhase::Running,
            "{policy:?} (fast-failing pings {fast}, phase {phase} ms): b takes over"
        );
        let released = s.nodes[0].group == GroupPhase::Stopped;
        assert_eq!(
            released,
            policy == OnIsolation::Release,
            "{policy:?} (fast-failing pings {fast}, phase {phase} ms)"
        );
        if released {
            let stop = s.log.iter().position(|(n, a)| *n == 0 && matches!(a, Action::StopGroup));
            assert!(stop.is_some());
            let bound = s.nodes[0].p.deadtime + s.nodes[0].p.ping_dampen;
            assert!(
                s.now - cut >= bound || w.both_for(&s).is_zero(),
                "{policy:?} (fast-failing pings {fast}, phase {phase} ms)"
            );
        }
        s.partition(false);
        s.cabled[0] = true;
        let mut w = Watch::default();
        let mut longest_both = Duration::ZERO;
        for _ in 0..500 {
            s.step();
            w.observe(&s);
            longest_both = longest_both.max(w.both_for(&s));
        }
        assert!(
            longest_both <= s.nodes[0].p.interval + ms(100),
            "{policy:?} (fast-failing pings {fast}, phase {phase} ms): both held {longest_both:?} after the heal"
        );
        assert_eq!(
            s.roles(),
            [Role::Secondary, Role::Primary],
            "{policy:?} (fast-failing pings {fast}, phase {phase} ms)"
        );
    }
}

/// A primary whose peer was already gone keeps the group through a gateway reboot:
/// nobody could take over, so letting go would only add an outage.
#[test]
fn regression_8_a_lone_primary_keeps_the_group_through_a_gateway_reboot() {
    let mut s = pinged_pair(ms(300));
    s.kill(1);
    s.run(ms(5000));
    s.gw_ok[0] = false;
    s.run(ms(10_000));
    assert_eq!(s.nodes[0].group, GroupPhase::Running);
}

// ---- 9. A frozen primary --------------------------------------------------------------

#[test]
fn regression_9_a_frozen_primary_is_not_duplicated_and_the_peer_recovers_at_once() {
    let mut s = Sim::settled();
    let mut w = Watch::default();
    s.freeze(0, ms(3000));
    run(&mut s, &mut w, ms(3000));
    assert_eq!(s.nodes[1].role(), Role::Fault, "b's takeover was refused: a's kernel answers the VIP");
    run(&mut s, &mut w, ms(1500));
    assert_eq!(s.roles(), [Role::Primary, Role::Secondary], "b is back to secondary at once, not after a minute");
    assert_eq!((w.moves, s.starts(1)), (0, 1));
}

/// Without a VIP guard the peer does take over while a is frozen; a resumed a finds the
/// peer holding the group and releases it within one interval.
#[test]
fn regression_9_a_resumed_primary_yields_to_the_peer_that_took_over() {
    let mut s = Sim::settled();
    s.log.clear();
    s.guard = false;
    s.allow_both = true;
    s.freeze(0, ms(3000));
    s.run_until(ms(3000), |s| s.nodes[1].group == GroupPhase::Running);
    s.run_until(ms(5000), |s| s.runs(0));
    let resumed = s.now;
    s.run_until(ms(2000), |s| s.nodes[0].group == GroupPhase::Stopped);
    let took = s.now - resumed;
    assert!(took <= s.nodes[0].p.interval + s.stop_time + STEP * 2, "released {took:?} after resuming");
    assert_eq!(s.nodes[1].group, GroupPhase::Running);
}

// ---- The explorer ---------------------------------------------------------------------

/// One trouble the explorer can inject, with how long it lasts where that applies.
#[derive(Clone, Copy, Debug)]
enum Trouble {
    /// The gateway is gone for these nodes.
    Gateway {
        a: bool,
        b: bool,
        secs: u64,
    },
    /// Heartbeats from `from` are lost on `links` (bit 0 hb, bit 1 pub): one-way.
    OneWay {
        from: usize,
        links: u8,
        secs: u64,
    },
    /// Every heartbeat link, both ways (the ARP path stays).
    Heartbeats {
        secs: u64,
    },
    /// The node's cables are out: links, ARP and gateway.
    Unplug {
        node: usize,
        secs: u64,
    },
    /// The holder's member fails past its local restarts; `broken`: its restarts fail too.
    MemberFails {
        node: usize,
        broken: bool,
        secs: u64,
    },
    /// kill -9 of the daemon, restarted after `secs` (0: not restarted in the episode) with
    /// its wall clock `clock` seconds off (an RTC behind, a start before NTP).
    Crash {
        node: usize,
        secs: u64,
        clock: i64,
    },
    Freeze {
        node: usize,
        ms: u64,
    },
    Admin {
        node: usize,
        admin: Admin,
    },
    /// DRBD's fence-peer handler runs on `node` (its replication link broke); the peer's
    /// `drbdadm outdate` refuses its next `refusals` attempts (`u32::MAX`: every one).
    FencePeer {
        node: usize,
        refusals: u32,
    },
}

impl Trouble {
    fn random(rnd: &mut Rng) -> Trouble {
        let node = rnd.below(2) as usize;
        let secs = 1 + rnd.below(12);
        match rnd.below(10) {
            0 | 1 => {
                let who = rnd.below(3);
                Trouble::Gateway { a: who != 1, b: who != 0, secs }
            }
            2 => Trouble::OneWay { from: node, links: 1 + rnd.below(3) as u8, secs },
            3 => Trouble::Heartbeats { secs },
            4 => Trouble::Unplug { node, secs },
            5 => Trouble::MemberFails { node, broken: rnd.below(3) == 0, secs },
            6 => Trouble::Crash { node, secs: rnd.below(2) * secs, clock: [0, -3600, 3600][rnd.below(3) as usize] },
            7 => Trouble::Freeze { node, ms: 200 + rnd.below(4000) },
            8 => Trouble::FencePeer { node, refusals: [0, 1, 3, u32::MAX][rnd.below(4) as usize] },
            _ => {
                let admin = match rnd.below(4) {
                    0 => Admin::Standby,
                    1 => Admin::Online,
                    _ => Admin::Switchover { now: rnd.below(2) == 0 },
                };
                Trouble::Admin { node, admin }
            }
        }
    }

    /// Whether it may move the group at most once (a fault both nodes share moves it never).
    /// A heartbeat partition is not one of those: beside a gateway loss within a ping round,
    /// it is exactly what each node sees of its own isolation.
    fn moves_allowed(self) -> u32 {
        match self {
            Trouble::Gateway { a: true, b: true, .. } | Trouble::OneWay { .. } => 0,
            Trouble::Admin { admin: Admin::Online, .. } => 0,
            // Fencing only asks and answers; it moves nothing.
            Trouble::FencePeer { .. } => 0,
            _ => 1,
        }
    }

    /// Starts what happens once; returns how long the trouble lasts, if it lasts.
    fn inject(self, s: &mut Sim) -> Option<Duration> {
        match self {
            Trouble::Gateway { secs, .. }
            | Trouble::OneWay { secs, .. }
            | Trouble::Heartbeats { secs }
            | Trouble::Unplug { secs, .. } => Some(Duration::from_secs(secs)),
            Trouble::MemberFails { node, broken, secs } => {
                if s.nodes[node].group == GroupPhase::Running {
                    s.feed(
                        node,
                        Event::Group(GroupEvent::ResourceFailed { resource: "sip".into(), reason: "exited".into() }),
                    );
                }
                broken.then(|| Duration::from_secs(secs))
            }
            Trouble::Crash { node, secs, .. } => {
                s.kill(node);
                (secs > 0).then(|| Duration::from_secs(secs))
            }
            Trouble::Freeze { node, ms: m } => {
                s.freeze(node, ms(m));
                None
            }
            Trouble::Admin { node, admin } => {
                s.feed(node, Event::Admin(admin));
                None
            }
            // The handler's polls are the explorer's ([`Handler`]).
            Trouble::FencePeer { node, refusals } => {
                s.outdate_refusals[1 - node] = refusals;
                None
            }
        }
    }

    /// Undoes what does not follow from the active set (a crashed daemon restarts).
    fn end(self, s: &mut Sim) {
        if let Trouble::Crash { node, clock, .. } = self {
            if !s.alive[node] {
                s.membership.clock_offset[node] = clock;
                s.revive(node, params(node as u16 + 1));
            }
        }
    }
}

/// A true partition: a node's cables are out, no heartbeat crosses in either direction, or
/// a daemon is frozen (it can neither hear nor let go). A one-way loss is not one: one
/// side still hears the other.
fn partitioned(s: &Sim) -> bool {
    let frozen = (0..2).any(|n| s.alive[n] && !s.runs(n));
    frozen || !s.cabled[0] || !s.cabled[1] || s.link_up.iter().all(|l| !l[0] && !l[1])
}

/// The network and members as the troubles still active make them.
fn apply(active: &[Trouble], s: &mut Sim) {
    s.gw_ok = [true, true];
    s.cabled = [true, true];
    s.member_broken = [false, false];
    let mut links = vec![[true, true]; s.link_up.len()];
    for t in active {
        match *t {
            Trouble::Gateway { a, b, .. } => {
                s.gw_ok[0] &= !a;
                s.gw_ok[1] &= !b;
            }
            Trouble::OneWay { from, links: which, .. } => {
                for (i, l) in links.iter_mut().enumerate() {
                    if which & (1 << i) != 0 {
                        l[from] = false;
                    }
                }
            }
            Trouble::Heartbeats { .. } => links.iter_mut().for_each(|l| *l = [false, false]),
            Trouble::Unplug { node, .. } => {
                s.cabled[node] = false;
                links.iter_mut().for_each(|l| *l = [false, false]);
            }
            Trouble::MemberFails { node, broken: true, .. } => s.member_broken[node] = true,
            _ => {}
        }
    }
    s.link_up = links;
}

/// A fence-peer handler on `node`, polling as `pbxha replica fence-peer` does (every
/// [`HANDLER_POLL`]) until a verdict with an exit code, or until its daemon stops answering.
struct Handler {
    node: usize,
    began: Instant,
}

const HANDLER_POLL: Duration = Duration::from_millis(200);

/// Where fencing can go wrong, watched step by step: a node that outdates its disk while its
/// group is not stopped (it may be the one that must serve), an `outdated` verdict without
/// the peer having outdated since the handler asked and kept its group stopped since, and a
/// handler left without a verdict past the exchange's deadline.
#[derive(Default)]
struct FenceWatch {
    handlers: Vec<Handler>,
    /// Per node: when it last started the group.
    started: [Option<Instant>; 2],
}

impl FenceWatch {
    /// The group phases of both nodes before the step, for judging its actions in order.
    fn before(s: &Sim) -> [GroupPhase; 2] {
        [s.nodes[0].group, s.nodes[1].group]
    }

    /// Polls the handlers due, then judges the actions of the step just taken.
    fn poll(&mut self, s: &mut Sim) {
        // A handler whose daemon is gone or frozen gets no answer and fails on its own.
        self.handlers.retain(|h| s.runs(h.node));
        for h in &self.handlers {
            if (s.now - h.began).as_millis().is_multiple_of(HANDLER_POLL.as_millis()) {
                s.feed(h.node, Event::FencePeer);
            }
        }
    }

    fn check(&mut self, s: &Sim, seen: usize, mut phase: [GroupPhase; 2]) -> Result<(), String> {
        for (n, a) in &s.log[seen..] {
            let n = *n;
            match a {
                Action::StartGroup { .. } => {
                    phase[n] = GroupPhase::Starting;
                    self.started[n] = Some(s.now);
                }
                Action::Outdate { .. }
                    if phase[n] != GroupPhase::Stopped && s.nodes[n].group != GroupPhase::Stopped =>
                {
                    return Err(format!("node {n} outdates its disk while its group is {}", phase[n].as_str()));
                }
                Action::FenceAnswer { verdict, .. } if verdict.exit_code().is_some() => {
                    let Some(at) = self.handlers.iter().position(|h| h.node == n) else { continue };
                    let handler = self.handlers.remove(at);
                    let peer = 1 - n;
                    if *verdict != FenceVerdict::Outdated {
                        continue;
                    }
                    match s.disk_outdated[peer] {
                        Some(t) if t >= handler.began && self.started[peer].is_none_or(|st| st < t) => {}
                        Some(t) if t >= handler.began => {
                            return Err(format!("node {n} heard `outdated` from a peer that started the group since"))
                        }
                        _ => return Err(format!("node {n} heard `outdated` but the peer did not outdate for it")),
                    }
                }
                _ => {}
            }
        }
        let deadline = params(1).deadtime * FENCE_DEADTIMES + STALE_AFTER + ms(1000);
        if let Some(h) = self.handlers.iter().find(|h| s.now - h.began > deadline) {
            return Err(format!(
                "the fence-peer handler on node {} has no verdict after {:?}",
                h.node,
                s.now - h.began
            ));
        }
        Ok(())
    }
}

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// A schedule: troubles at offsets from the start of the episode.
fn schedule(seed: u64) -> Vec<(Duration, Trouble)> {
    let mut rnd = Rng(seed ^ 0x9e37_79b9_7f4a_7c15);
    let n = 1 + rnd.below(3);
    let mut at = Duration::ZERO;
    (0..n)
        .map(|_| {
            at += ms(rnd.below(6000));
            (at, Trouble::random(&mut rnd))
        })
        .collect()
}

/// Runs one seed's schedule and checks the invariants; the error names the broken one.
fn explore(seed: u64, verbose: bool) -> Result<(), String> {
    let plan = schedule(seed);
    let mut s = Sim::pair().with_pingers(ms(seed % 1000));
    s.pings_fail_fast = seed % 2 == 1;
    s.allow_both = true;
    s.leftover = ms(800 + (seed % 3) * 1500);
    s.run(ms(4000));
    let mut w = Watch::default();
    let start = s.now;
    let mut active: Vec<(Instant, Trouble)> = Vec::new();
    let mut next = 0;
    let allowed: u32 = plan.iter().map(|(_, t)| t.moves_allowed()).sum();
    // Faults that each move nothing may combine into one that does: a one-way loss beside a
    // gateway loss within a ping round is, to the node that hears nothing, its isolation.
    let one_way_and_gateway = plan.iter().any(|(_, t)| matches!(t, Trouble::OneWay { .. }))
        && plan.iter().any(|(_, t)| matches!(t, Trouble::Gateway { .. }));
    let shared_only = plan.iter().all(|(_, t)| t.moves_allowed() == 0) && !one_way_and_gateway;
    let p = params(1);
    // Time for a fit node to serve after the last obstacle: a restart's initdead, a
    // peer's deadtime, the ping window, a refused takeover's leftover and re-probe.
    let serve_bound = p.initdead + p.deadtime + p.ping_dampen + PING_INTERVAL * 3 + s.leftover + VIP_REPROBE + ms(1000);
    // Two holders are allowed only while a true partition stands, and briefly after it.
    let heal_grace = p.interval * 3 + s.stop_time + s.start_time + ms(100);
    let mut partition_ended: Option<Instant> = None;
    let mut fencing = FenceWatch::default();
    let end = start + plan.last().map_or(Duration::ZERO, |(at, _)| *at) + ms(15_000) + serve_bound;
    while s.now < end {
        while next < plan.len() && s.now >= start + plan[next].0 {
            let t = plan[next].1;
            if let Some(d) = t.inject(&mut s) {
                active.push((s.now + d, t));
            }
            if let Trouble::FencePeer { node, .. } = t {
                // One handler a node at a time, as DRBD runs it.
                if fencing.handlers.iter().all(|h| h.node != node) {
                    fencing.handlers.push(Handler { node, began: s.now });
                }
            }
            next += 1;
        }
        active.retain(|(until, t)| {
            let on = s.now < *until;
            if !on {
                t.end(&mut s);
            }
            on
        });
        let troubles: Vec<Trouble> = active.iter().map(|(_, t)| *t).collect();
        let was_partitioned = partitioned(&s);
        apply(&troubles, &mut s);
        let partitioned = partitioned(&s);
        if was_partitioned && !partitioned {
            partition_ended = Some(s.now);
        }
        let seen = s.log.len();
        let phase = FenceWatch::before(&s);
        fencing.poll(&mut s);
        s.step();
        w.observe(&s);
        fencing.check(&s, seen, phase)?;
        if verbose {
            for (n, a) in &s.log[seen..] {
                match a {
                    Action::Announce => {}
                    a => eprintln!("{:>7} {} {a:?}", (s.now - start).as_millis(), ["a", "b"][*n]),
                }
            }
        }
        let both = match (w.both_since, partition_ended) {
            (Some(since), Some(healed)) => s.now - since.max(healed),
            _ => w.both_for(&s),
        };
        if !partitioned && both > heal_grace {
            return Err(format!("both nodes hold the group for {both:?} outside a true partition"));
        }
        if w.longest_unserved > serve_bound {
            return Err(format!("nobody served for {:?} while a node was fit to", w.longest_unserved));
        }
    }
    // Calm: everything healed, both daemons running.
    for (_, t) in active.drain(..) {
        t.end(&mut s);
    }
    apply(&[], &mut s);
    for n in 0..2 {
        if !s.alive[n] {
            s.revive(n, params(n as u16 + 1));
        }
    }
    let moves_before_calm = w.moves;
    run(&mut s, &mut w, ms(20_000));
    if w.moves > moves_before_calm {
        return Err(format!("the group kept moving after every fault healed ({} more)", w.moves - moves_before_calm));
    }
    let admin_moves = plan.iter().any(|(_, t)| matches!(t, Trouble::Admin { .. }));
    if shared_only && !admin_moves && w.moves > 0 {
        return Err(format!("{} move(s) for faults both nodes share", w.moves));
    }
    // At most one move per fault: a shared fault alone allows none; in a combination
    // every trouble may move the group once (a shared gateway loss beside an unplugged
    // node is, to the other node, isolation).
    let allowed = if shared_only { allowed } else { plan.len() as u32 };
    if w.moves > allowed {
        return Err(format!("{} moves for {} fault(s) that allow {allowed}", w.moves, plan.len()));
    }
    let holders = (0..2).filter(|&n| s.nodes[n].group == GroupPhase::Running).count();
    let someone_fit = (0..2).any(|n| fit(&s, n) && !s.nodes[n].admin_standby);
    if someone_fit && holders != 1 {
        return Err(format!("{holders} holder(s) after the calm; roles {:?}", s.roles()));
    }
    for n in 0..2 {
        if s.nodes[n].group == GroupPhase::Running && s.nodes[n].faults.keys().any(|f| matches!(f, Fault::Resource(_)))
        {
            return Err(format!("node {n} still has a failed member after its failure timeout"));
        }
    }
    Ok(())
}

fn describe(seed: u64) -> String {
    let mut out = format!("seed {seed} (replay: PBXHA_EXPLORE_SEED={seed} PBXHA_EXPLORE_VERBOSE=1 cargo test -p pbxha-appliance explorer -- --nocapture):\n");
    for (at, t) in schedule(seed) {
        let _ = writeln!(out, "  +{:>6} ms  {t:?}", at.as_millis());
    }
    out
}

/// How many schedules one test run explores (the CI figure is this default).
const SCHEDULES: u64 = 2000;

#[test]
fn explorer_random_schedules_keep_every_invariant() {
    let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<u64>().ok());
    let seeds: Vec<u64> = match env("PBXHA_EXPLORE_SEED") {
        Some(seed) => vec![seed],
        None => (0..env("PBXHA_EXPLORE_SCHEDULES").unwrap_or(SCHEDULES)).collect(),
    };
    // With one seed, `PBXHA_EXPLORE_VERBOSE=1` prints every action as it happens.
    let verbose = seeds.len() == 1 && env("PBXHA_EXPLORE_VERBOSE") == Some(1);
    let began = std::time::Instant::now();
    let mut failures = Vec::new();
    let mut ran = 0;
    for &seed in &seeds {
        if let Err(why) = explore(seed, verbose) {
            failures.push(format!("{why}\n{}", describe(seed)));
        }
        ran += 1;
        // Bounded in time whatever the machine: a slow runner explores fewer.
        if began.elapsed() > Duration::from_secs(240) {
            break;
        }
    }
    eprintln!("explorer: {ran} schedules in {:.1} s", began.elapsed().as_secs_f64());
    assert!(
        failures.is_empty(),
        "{} of {ran} schedules broke an invariant:\n{}",
        failures.len(),
        failures.iter().take(12).cloned().collect::<Vec<_>>().join("\n")
    );
}
