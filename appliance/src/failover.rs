//! A takeover from its decision to its end, and all that is reported of it: the timeline
//! (the failover mail; the journal keeps the same entries for `pbxha history` and the
//! page's SVG), the time until the group ran (`pbxha status`'s last failover), the VIP's
//! first SIP answer, the calls the old primary had, and the counts for `/metrics`.
//!
//! [`FailoverReport`] is fed typed events: the fsm's records, whose `FailoverEnd` says how
//! the takeover ended ([`TakeoverEnd`]), and the peer's heartbeats; never the text of a line.
//! [`Timeline`] collects, in memory, the entries the daemon journals from the suspicion to
//! the end of the takeover; collecting in memory rather than reading the journal back
//! avoids racing its writer thread.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use pbxha_telephony::{Policy, Probe};
use pbxha_watchdog::report::{Move, SwitchoverReport, TimelineEntry};

use crate::fsm::{RecordKind, TakeoverEnd};
use crate::journal::{Entry, Journal, Kind};
use crate::probes::{FirstAnswer, FIRST_ANSWER_WAIT};
use crate::status::{FailoverCounts, LastFailover};
use crate::summary::GroupPhase;

/// The failover bookkeeping of one daemon: the running takeover and the last one.
pub struct FailoverReport {
    local: String,
    journal: Arc<Journal>,
    timeline: Timeline,
    /// The last decision: when (the first answer's delay and `took_ms` count from it), and
    /// what `pbxha status` shows of it.
    last: Option<(Instant, LastFailover)>,
    /// Who held the group and why it moves, taken at the decision.
    context: Option<FailoverContext>,
    /// A takeover's `FailoverEnd`, held back until the VIP first answers SIP (see
    /// [`FailoverReport::release`]).
    held_end: Option<(FirstAnswer, Entry)>,
    /// The peer was seen holding the group since this node last took it: a takeover is then
    /// a failover or switchover to report, not a cold start.
    peer_held: bool,
    counts: FailoverCounts,
}

/// A takeover that ended and is worth a report: the daemon adds its members' states and
/// mails it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ended {
    pub entries: Vec<Entry>,
    pub context: FailoverContext,
    pub end: TakeoverEnd,
}

impl FailoverReport {
    pub fn new(local: &str, journal: Arc<Journal>) -> FailoverReport {
        FailoverReport {
            local: local.to_string(),
            journal,
            timeline: Timeline::default(),
            last: None,
            context: None,
            held_end: None,
            peer_held: false,
            counts: FailoverCounts::default(),
        }
    }

    /// What the resource group's reports feed, from the group's own task.
    pub fn timeline(&self) -> &Timeline {
        &self.timeline
    }

    pub fn last(&self) -> Option<LastFailover> {
        self.last.as_ref().map(|(_, lf)| lf.clone())
    }

    pub fn counts(&self) -> FailoverCounts {
        self.counts
    }

    pub fn switchover_refused(&mut self) {
        self.counts.switchovers_refused += 1;
    }

    /// A heartbeat from the peer, in `group`.
    pub fn peer_heard(&mut self, group: GroupPhase) {
        self.peer_held |= group != GroupPhase::Stopped;
    }

    /// Whether the peer held the group since this node last took it over.
    pub fn peer_held(&self) -> bool {
        self.peer_held
    }

    /// Journals `entry`, inside the running takeover's timeline if there is one. Not for
    /// the records that begin or end a takeover: [`FailoverReport::begin`], [`FailoverReport::end`].
    pub fn journal(&mut self, entry: Entry) {
        self.timeline.observe(&entry);
        self.journal.record(entry);
    }

    /// The fsm decided to take over: `entry` is its `FailoverBegin`, `context` how things
    /// stand (after [`FailoverReport::release`] ended the previous takeover).
    pub fn begin(&mut self, entry: Entry, context: FailoverContext) {
        let last = LastFailover { at_ms: entry.at_ms, message: entry.message.clone(), took_ms: None };
        self.last = Some((Instant::now(), last));
        let calls = calls_at_takeover(&context);
        self.context = Some(context);
        self.journal(entry);
        // Right after the decision, inside the failover it opens.
        if let Some(line) = calls {
            self.journal(Entry::now(&self.local, Kind::Record(RecordKind::Calls), line));
        }
    }

    /// The takeover ended: `entry` is its `FailoverEnd`. With the group up and `sip` to ask
    /// (see [`crate::probes::vip_sip_probe`]), the end waits for the VIP's first answer.
    pub fn end(&mut self, entry: Entry, end: TakeoverEnd, sip: Option<(Probe, Policy)>) -> Option<Ended> {
        if end == TakeoverEnd::GroupUp {
            if let Some((at, lf)) = &mut self.last {
                lf.took_ms = Some(u64::try_from(at.elapsed().as_millis()).unwrap_or(u64::MAX));
            }
            if let Some((probe, policy)) = sip {
                let decision = self.last.as_ref().map_or_else(Instant::now, |(at, _)| *at);
                self.held_end = Some((FirstAnswer::spawn(probe, policy, decision, FIRST_ANSWER_WAIT), entry));
                return None;
            }
        }
        self.close(entry, end)
    }

    /// Journals a held `FailoverEnd` once the VIP answered SIP or the wait is over (`now`:
    /// at once, a new takeover begins or the daemon stops), after the SIP line. The group is
    /// up before its PBX answers SIP, and the journal gives entries after a `FailoverEnd` no
    /// failover id, so holding the end back is what keeps the first SIP answer in the
    /// failover's journal history and its one mail; the wait is bounded by `FIRST_ANSWER_WAIT`.
    pub fn release(&mut self, now: bool) -> Option<Ended> {
        let answer = self.held_end.as_ref()?.0.answer();
        if answer.is_none() && !now {
            return None;
        }
        let (_, end) = self.held_end.take()?;
        if let Some(answer) = answer {
            tracing::info!("{}", answer.line);
            let kind = if answer.answered { RecordKind::FirstAnswer } else { RecordKind::Health };
            self.journal(Entry::now(&self.local, Kind::Record(kind), answer.line));
        }
        // Stamped now, so the timeline reads in time order; `took_ms` keeps the group-up time.
        self.close(Entry { at_ms: crate::unix_ms(), ..end }, TakeoverEnd::GroupUp)
    }

    /// Journals the end and closes the timeline: the takeover to report, unless nobody held
    /// the group before (a cold start is not a failover).
    fn close(&mut self, entry: Entry, end: TakeoverEnd) -> Option<Ended> {
        let entries = self.timeline.end(&entry);
        self.journal.record(entry);
        let (entries, context) = (entries?, self.context.take()?);
        // A failed or refused takeover is always worth a report; it also leaves the old
        // primary the old primary, so the takeover that follows is reported as a failover.
        let failed = end != TakeoverEnd::GroupUp;
        if context.old_primary.is_none() && !failed {
            tracing::info!("cold start: the group was not held before, no switchover report");
            return None;
        }
        if !failed {
            self.peer_held = false;
        }
        self.counts.finished(context.planned, end, &entries);
        Some(Ended { entries, context, end })
    }
}

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
    /// Feeds one journal entry: a `FailoverBegin` opens the timeline, anything else joins
    /// the open one (or waits before a decision). Only [`Timeline::end`] closes it.
    pub fn observe(&self, e: &Entry) {
        let mut st = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if e.kind == Kind::Record(RecordKind::FailoverBegin) {
            // As the journal does: the timeline starts at the first recent suspicion.
            let since = e.at_ms.saturating_sub(SUSPICION_LOOKBACK_MS);
            let before = std::mem::take(&mut st.before);
            let first = before.iter().position(|b| b.kind == Kind::Record(RecordKind::Suspicion) && b.at_ms >= since);
            let mut entries: Vec<Entry> = first.map_or_else(Vec::new, |i| before.into_iter().skip(i).collect());
            entries.push(e.clone());
            st.open = Some(entries);
            return;
        }
        match &mut st.open {
            Some(entries) => entries.push(e.clone()),
            None => {
                if st.before.len() == BEFORE_KEEP {
                    st.before.pop_front();
                }
                st.before.push_back(e.clone());
            }
        }
    }

    /// Closes the open timeline with `e`, its `FailoverEnd`, and returns it whole.
    pub fn end(&self, e: &Entry) -> Option<Vec<Entry>> {
        let mut entries = self.0.lock().unwrap_or_else(|p| p.into_inner()).open.take()?;
        entries.push(e.clone());
        Some(entries)
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

/// The switchover report for an ended takeover.
pub fn switchover_report(cluster: &str, local: &str, ended: &Ended) -> SwitchoverReport {
    let Ended { entries, context: ctx, end } = ended;
    let begin = entries.iter().find(|e| e.kind == Kind::Record(RecordKind::FailoverBegin));
    let failed = *end != TakeoverEnd::GroupUp;
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
                // Labelled as before they had kinds of their own, so the mail reads the same.
                RecordKind::FirstAnswer => "health",
                RecordKind::Calls => "peer",
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
    use pbxha_watchdog::report;

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
            t.observe(e);
        }
        let done = t.end(&rec(t0 + 901, RecordKind::FailoverEnd, "b holds the group")).unwrap();
        assert_eq!(done.len(), 6, "from the recent suspicion on: {done:#?}");
        assert_eq!(done[0].message, "peer a silent on all links for 310 ms");
        t.observe(&rec(t0 + 950, RecordKind::Health, "later"));
        assert_eq!(t.end(&rec(t0 + 960, RecordKind::FailoverEnd, "again")), None, "closed");

        let context = FailoverContext { old_primary: Some("a".into()), garp: vec!["vip".into()], ..Default::default() };
        let r = switchover_report("pbx", "b", &Ended { entries: done, context, end: TakeoverEnd::GroupUp });
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
        let entries = t.end(&rec(30, RecordKind::FailoverEnd, "takeover failed")).unwrap();
        let context = FailoverContext { planned: true, garp: vec!["vip".into()], ..Default::default() };
        let r = switchover_report("pbx", "b", &Ended { entries, context, end: TakeoverEnd::Failed });
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
    fn a_report_follows_the_typed_end_not_the_text() {
        let mut r = FailoverReport::new("b", Arc::new(Journal::disabled()));
        let end = |message: &str| rec(2, RecordKind::FailoverEnd, message);
        // A cold start: nobody held the group, so no report, whatever the end says.
        r.begin(rec(1, RecordKind::FailoverBegin, "b takes over: peer a silent"), FailoverContext::default());
        assert_eq!(r.end(end("b holds the group"), TakeoverEnd::GroupUp, None), None);
        assert!(r.last().is_some_and(|l| l.took_ms.is_some()));

        r.peer_heard(GroupPhase::Running);
        let context = || FailoverContext { old_primary: Some("a".into()), active_calls: Some(2), ..Default::default() };
        r.begin(rec(10, RecordKind::FailoverBegin, "b takes over: peer a is dead"), context());
        let refused = r.end(end("whatever it says"), TakeoverEnd::Refused, None).unwrap();
        assert_eq!(refused.end, TakeoverEnd::Refused);
        let kinds: Vec<_> = refused.entries.iter().map(|e| e.kind.clone()).collect();
        let calls = Kind::Record(RecordKind::Calls);
        assert_eq!(kinds, [Kind::Record(RecordKind::FailoverBegin), calls, Kind::Record(RecordKind::FailoverEnd)]);
        assert_eq!((r.counts().refused, r.counts().unplanned), (1, 0));
        assert!(r.peer_held(), "a refused takeover leaves the old primary the old primary");

        r.begin(rec(20, RecordKind::FailoverBegin, "b takes over: peer a is dead"), context());
        assert!(r.end(end("b holds the group"), TakeoverEnd::GroupUp, None).is_some());
        assert_eq!((r.counts().refused, r.counts().unplanned), (1, 1));
        assert!(!r.peer_held());
    }
}
