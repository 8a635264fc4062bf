//! `pbxha lab bench`: what a SIP client sees during a failover, measured on the live lab.
//!
//! A prober inside the client namespace sends SIP OPTIONS to the VIP every 10 ms, each probe
//! its own UDP transaction, and records who answered (the `X-Pbxha-Node` header). One run's
//! outage is the gap the client saw: from the last answer before the new node's first
//! answer to that first answer. Unplanned runs kill the holder (`lab kill`), planned runs
//! ask it for `switchover --now` over its control socket. The soak counts false failovers
//! (any change of VIP holder or role) while the heartbeat link loses 20% of its packets and
//! both cores are kept busy. A fault run (`--kind gateway-blip` and the other faults of
//! issue 10) injects the fault, undoes it after its duration, waits for the cluster to
//! settle, and reports how often the answering node changed (moves) and the client's
//! longest time without an answer.
//!
//! [`outage`], [`client_view`], [`Stats::of`], [`changes`], [`loss_rules`] and [`render`]
//! are pure; the rest drives the lab and cleans up after itself on every exit path: busy
//! loops and iptables rules through drop guards, a killed node is revived, a frozen daemon
//! resumed, cut links healed, and a lab the bench brought up goes down again.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::plan::{Bridge, NodeFiles, PORTS, SIP_PORT, VIP};
use super::{lab_err, Daemons, Error, Lab, Member, NodeView, OnIsolation, Partition, Pbx, Profile, UpOptions};

/// A new probe this often: the resolution of every outage figure.
const PROBE_EVERY: Duration = Duration::from_millis(10);
/// A probe unanswered after this is a miss. Below T1 (RFC 3261 §17.1.1.1, 500 ms), so a
/// probe is never retransmitted; probes overlap, so the timeout does not coarsen the
/// resolution.
const PROBE_TIMEOUT: Duration = Duration::from_millis(100);
/// Answers from the old holder before each event, so the run has a clear "before".
const LEAD_IN: Duration = Duration::from_millis(500);
/// Probing goes on this long after the new node's first answer, so a relapse would show.
const TAIL: Duration = Duration::from_millis(300);
/// A run whose new node has not answered by then has failed (deadtime is 1 s at most).
const RUN_LIMIT: Duration = Duration::from_secs(30);
/// Hard cap on one prober's life, whatever the caller does.
const PROBER_LIMIT: Duration = Duration::from_secs(60);
/// How long the cluster may take to settle (a revived node: daemon start, initdead).
const SETTLE_LIMIT: Duration = Duration::from_secs(60);
/// The settled state must hold this long before the next run, so a revived node has
/// finished joining and the client's neighbour entry is past its locktime (1 s).
const SETTLE_HOLD: Duration = Duration::from_secs(3);
/// Soak: how often holder and roles are read.
const SOAK_SAMPLE_EVERY: Duration = Duration::from_millis(500);
/// Soak: packet loss on the heartbeat link (issue 3's acceptance test).
pub const SOAK_LOSS: f64 = 0.2;
/// Soak: one busy loop per core of this 2-core machine.
const BUSY_LOOPS: usize = 2;
/// Gateway blip: how long the gateway is gone (issue 10's reproduction).
pub const GATEWAY_BLIP: Duration = Duration::from_secs(5);
/// One-way loss: how long the secondary hears nothing. Several VIP re-probes of the
/// refused node, and time for the primary to react to what its peer says.
pub const ONE_WAY_HOLD: Duration = Duration::from_secs(10);
/// Isolation: how long the holder is cut off. Longer than deadtime + the ping fall window
/// (2.9 s in the default profile), so `release` and `keep` differ.
pub const ISOLATION_HOLD: Duration = Duration::from_secs(8);
/// Crash of a daemon with an exec PBX: how long the bench waits for the peer to serve
/// before it gives up and counts the run unrecovered.
pub const CRASH_WATCH: Duration = Duration::from_secs(20);
/// Freeze: how long, in deadtimes.
const FREEZE_DEADTIMES: u32 = 3;
/// No-peer failure: the most crashes of the PBX before the bench gives up on seeing its
/// restart budget spent (max-restarts is 2 in the lab).
const MAX_PBX_CRASHES: usize = 5;

/// Which measurements to take.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    Unplanned,
    Planned,
    Soak,
    /// unplanned, planned and soak; not the faults, each of which is its own run.
    All,
    Fault(Fault),
}

/// The faults of issue 10, each measured as moves of the group and the client's longest
/// gap in SIP answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fault {
    /// (1) The gateway both nodes ping goes away for [`GATEWAY_BLIP`].
    GatewayBlip,
    /// (2) The peer is dead and the holder's PBX crashes until its restart budget is spent;
    /// the run ends when the PBX answers again (the failure-timeout restart).
    NoPeerFailure,
    /// (3) The secondary stops receiving heartbeats for [`ONE_WAY_HOLD`] and still sends.
    OneWay,
    /// (4) The holder's daemon is SIGKILLed alone; its exec PBX dies with it, its VIP stays.
    /// Watched for [`CRASH_WATCH`].
    CrashExec,
    /// (8) The holder loses every link and its ping target for [`ISOLATION_HOLD`], with
    /// `on-isolation = "release"`.
    IsolationRelease,
    /// (8) The same with `on-isolation = "keep"`.
    IsolationKeep,
    /// (9) The holder's daemon is frozen (SIGSTOP) for 3 × deadtime.
    Freeze,
}

impl Fault {
    pub const ALL: [Fault; 7] = [
        Fault::GatewayBlip,
        Fault::NoPeerFailure,
        Fault::OneWay,
        Fault::CrashExec,
        Fault::IsolationRelease,
        Fault::IsolationKeep,
        Fault::Freeze,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Fault::GatewayBlip => "gateway-blip",
            Fault::NoPeerFailure => "no-peer-failure",
            Fault::OneWay => "one-way",
            Fault::CrashExec => "crash-exec",
            Fault::IsolationRelease => "isolation-release",
            Fault::IsolationKeep => "isolation-keep",
            Fault::Freeze => "freeze",
        }
    }

    /// The `[ping] on-isolation` the lab must run for this fault.
    pub fn on_isolation(self) -> OnIsolation {
        if self == Fault::IsolationKeep {
            OnIsolation::Keep
        } else {
            OnIsolation::Release
        }
    }
}

impl FromStr for Kind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "unplanned" => Ok(Kind::Unplanned),
            "planned" => Ok(Kind::Planned),
            "soak" => Ok(Kind::Soak),
            "all" => Ok(Kind::All),
            _ => Fault::ALL.into_iter().find(|f| f.name() == s).map(Kind::Fault).ok_or_else(|| {
                let faults: Vec<&str> = Fault::ALL.iter().map(|f| f.name()).collect();
                format!("unknown bench kind `{s}` (one of unplanned, planned, soak, all, {})", faults.join(", "))
            }),
        }
    }
}

impl Kind {
    fn includes(self, other: Kind) -> bool {
        (self == Kind::All && !matches!(other, Kind::Fault(_))) || self == other
    }

    /// The `[ping] on-isolation` the lab must run.
    fn on_isolation(self) -> OnIsolation {
        match self {
            Kind::Fault(f) => f.on_isolation(),
            _ => OnIsolation::default(),
        }
    }
}

/// What `pbxha lab bench` measures and how often.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Runs per outage kind.
    pub runs: usize,
    /// The heartbeat profile the lab must run (a lab already up with another is refused).
    pub profile: Profile,
    pub kind: Kind,
    pub soak: Duration,
    /// The pbxha executable, for a lab the bench has to bring up.
    pub exe: PathBuf,
}

/// One probe's record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sample {
    pub sent: Instant,
    /// The node that answered with a 2xx; none for a timeout, an error or another status.
    pub node: Option<String>,
}

/// One run's figures from the client's probes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Outage {
    /// From the last answer before the new node's first answer to that answer.
    pub gap: Duration,
    /// From the event (kill or switchover request) to the new node's first answer.
    pub event_to_answer: Duration,
}

/// The outage seen in `samples` (sorted or not) around `event`, when the holder was `old`;
/// none when there is no answer before the event or none from another node after it.
pub fn outage(samples: &[Sample], event: Instant, old: &str) -> Option<Outage> {
    let first_new = samples
        .iter()
        .filter(|s| s.sent >= event && s.node.as_deref().is_some_and(|n| n != old))
        .map(|s| s.sent)
        .min()?;
    if !samples.iter().any(|s| s.sent <= event && s.node.is_some()) {
        return None;
    }
    let last_before = samples.iter().filter(|s| s.sent < first_new && s.node.is_some()).map(|s| s.sent).max()?;
    Some(Outage { gap: first_new - last_before, event_to_answer: first_new - event })
}

/// Minimum, median (mean of the middle two for an even count) and maximum.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Stats {
    pub min: f64,
    pub median: f64,
    pub max: f64,
}

impl Stats {
    /// None for no values.
    pub fn of(values: &[f64]) -> Option<Stats> {
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = match n {
            0 => return None,
            _ if n % 2 == 1 => v[n / 2],
            _ => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        };
        Some(Stats { min: v[0], median, max: v[n - 1] })
    }
}

/// One measured run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Run {
    pub from: Member,
    pub to: Member,
    pub outage_ms: f64,
    pub event_to_answer_ms: f64,
    pub probes: usize,
    pub misses: usize,
}

/// Runs of one kind with their summary.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Series {
    pub runs: Vec<Run>,
    pub outage_ms: Option<Stats>,
}

impl Series {
    fn new(runs: Vec<Run>) -> Series {
        let outages: Vec<f64> = runs.iter().map(|r| r.outage_ms).collect();
        Series { outage_ms: Stats::of(&outages), runs }
    }
}

/// What the soak sees at one moment. `None` fields could not be read and never count as
/// a change.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observation {
    /// Nodes with the VIP on an interface.
    pub holders: Option<Vec<Member>>,
    /// Each node's role from its control socket.
    pub roles: BTreeMap<Member, Option<String>>,
    /// Each node's last failover time (unix ms), from its control socket.
    pub last_failover: BTreeMap<Member, Option<u64>>,
}

/// Every difference between two observations, as text; unknown values are skipped.
pub fn changes(before: &Observation, after: &Observation) -> Vec<String> {
    let mut out = Vec::new();
    if let (Some(b), Some(a)) = (&before.holders, &after.holders) {
        if b != a {
            out.push(format!("VIP holder {} -> {}", members(b), members(a)));
        }
    }
    for node in Member::NODES {
        if let (Some(Some(b)), Some(Some(a))) = (before.roles.get(&node), after.roles.get(&node)) {
            if b != a {
                out.push(format!("{node}: {b} -> {a}"));
            }
        }
        if let (Some(Some(b)), Some(Some(a))) = (before.last_failover.get(&node), after.last_failover.get(&node)) {
            if b != a {
                out.push(format!("{node}: new failover recorded"));
            }
        }
    }
    out
}

fn members(list: &[Member]) -> String {
    if list.is_empty() {
        return "nobody".into();
    }
    list.iter().map(|m| m.name()).collect::<Vec<_>>().join("+")
}

/// The iptables rule specs (without `-A`/`-D`) that drop `probability` of the packets in
/// and out of node a's heartbeat interface.
pub fn loss_rules(probability: f64) -> Vec<Vec<String>> {
    let hb = PORTS.iter().find(|p| p.member == Member::A && p.bridge == Bridge::Heartbeat).map_or("hb0", |p| p.ifname);
    let p = format!("{probability}");
    [("INPUT", "-i"), ("OUTPUT", "-o")]
        .iter()
        .map(|(chain, dir)| {
            [chain, dir, hb, "-m", "statistic", "--mode", "random", "--probability", &p, "-j", "DROP"]
                .iter()
                .map(|s| s.to_string())
                .collect()
        })
        .collect()
}

/// One node's counters of one heartbeat link over the soak.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LinkDelta {
    pub node: Member,
    pub link: String,
    pub accepted: u64,
    /// What `interval` predicts for the soak's length.
    pub expected: u64,
    pub dropped: u64,
    pub send_errors: u64,
}

/// The soak's result.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SoakReport {
    pub secs: u64,
    pub loss: f64,
    pub busy_loops: usize,
    pub samples: usize,
    /// Samples at which a holder or role changed: each is a false failover (or part of one).
    pub false_failovers: usize,
    pub changes: Vec<String>,
    /// Status reads that failed (a control socket or `ip` did not answer).
    pub unread: usize,
    pub links: Vec<LinkDelta>,
    /// "late heartbeat" lines (gap above warntime) each node logged during the soak.
    pub late_heartbeats: BTreeMap<Member, u64>,
}

/// What the client saw during one fault run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FaultRun {
    /// The node holding the group when the fault began.
    pub holder: Member,
    /// How often the answering node changed.
    pub moves: usize,
    /// The longest time without a SIP answer, the end of the run included.
    pub longest_gap_ms: f64,
    /// Someone answered at the end of the run (false: the outage was still going on).
    pub recovered: bool,
    pub probes: usize,
    pub misses: usize,
}

/// Runs of one fault with their medians.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FaultSeries {
    pub fault: Fault,
    pub runs: Vec<FaultRun>,
    pub moves: Option<Stats>,
    pub longest_gap_ms: Option<Stats>,
}

impl FaultSeries {
    fn new(fault: Fault, runs: Vec<FaultRun>) -> FaultSeries {
        let moves: Vec<f64> = runs.iter().map(|r| r.moves as f64).collect();
        let gaps: Vec<f64> = runs.iter().map(|r| r.longest_gap_ms).collect();
        FaultSeries { fault, moves: Stats::of(&moves), longest_gap_ms: Stats::of(&gaps), runs }
    }
}

/// What the client saw in `samples` up to `end`: how often the answering node changed,
/// the longest time without an answer (from the first probe, and until `end`), and whether
/// the last probe was answered.
pub fn client_view(samples: &[Sample], end: Instant) -> (usize, Duration, bool) {
    let mut sorted: Vec<&Sample> = samples.iter().filter(|s| s.sent <= end).collect();
    sorted.sort_by_key(|s| s.sent);
    let Some(first) = sorted.first() else {
        return (0, Duration::ZERO, false);
    };
    let (mut moves, mut gap, mut last_answer) = (0, Duration::ZERO, first.sent);
    let mut last_node: Option<&str> = None;
    for s in &sorted {
        let Some(node) = s.node.as_deref() else { continue };
        gap = gap.max(s.sent - last_answer);
        last_answer = s.sent;
        if last_node.is_some_and(|n| n != node) {
            moves += 1;
        }
        last_node = Some(node);
    }
    gap = gap.max(end.saturating_duration_since(last_answer));
    let recovered = sorted.last().is_some_and(|s| s.node.is_some());
    (moves, gap, recovered)
}

/// Everything one `pbxha lab bench` measured.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    pub profile: Profile,
    pub pbx: Pbx,
    /// The bench brought the lab up (and took it down again).
    pub brought_up: bool,
    pub unplanned: Option<Series>,
    pub planned: Option<Series>,
    pub soak: Option<SoakReport>,
    pub fault: Option<FaultSeries>,
}

/// The report as a person reads it.
pub fn render(r: &Report) -> String {
    let mut o = String::new();
    let profile = match r.profile {
        Profile::Default => "default",
        Profile::Fast => "fast",
    };
    let pbx = match r.pbx {
        Pbx::Builtin => "builtin",
        Pbx::Kamailio => "kamailio",
    };
    let _ = writeln!(o, "profile {profile}, pbx {pbx}");
    for (name, series) in [("unplanned failover", &r.unplanned), ("planned switchover", &r.planned)] {
        let Some(series) = series else { continue };
        match series.outage_ms {
            Some(s) => {
                let _ = writeln!(
                    o,
                    "{name}: {} runs, client-observed outage min {:.0} ms, median {:.0} ms, max {:.0} ms",
                    series.runs.len(),
                    s.min,
                    s.median,
                    s.max
                );
            }
            None => {
                let _ = writeln!(o, "{name}: no runs");
            }
        }
    }
    if let Some(s) = &r.soak {
        let _ = writeln!(
            o,
            "soak: {} s, {:.0}% loss on a's heartbeat link, {} busy loops: {} false failovers ({} samples, {} unread)",
            s.secs,
            s.loss * 100.0,
            s.busy_loops,
            s.false_failovers,
            s.samples,
            s.unread
        );
        for c in &s.changes {
            let _ = writeln!(o, "  change: {c}");
        }
        for l in &s.links {
            let _ = writeln!(
                o,
                "  {} heard on {:<4} {:>6} of ~{:>6} heartbeats ({} dropped as invalid, {} send errors)",
                l.node, l.link, l.accepted, l.expected, l.dropped, l.send_errors
            );
        }
        for (node, n) in &s.late_heartbeats {
            let _ = writeln!(o, "  {node} logged {n} late heartbeats");
        }
    }
    if let Some(f) = &r.fault {
        for (i, run) in f.runs.iter().enumerate() {
            let _ = writeln!(
                o,
                "{} {}/{}: {} held; moves {}, longest gap {:.0} ms{}",
                f.fault.name(),
                i + 1,
                f.runs.len(),
                run.holder,
                run.moves,
                run.longest_gap_ms,
                if run.recovered { "" } else { " (still no answer at the end)" }
            );
        }
        if let (Some(m), Some(g)) = (f.moves, f.longest_gap_ms) {
            let _ = writeln!(
                o,
                "{}: {} runs, moves median {} (min {}, max {}), longest gap median {:.0} ms (min {:.0}, max {:.0})",
                f.fault.name(),
                f.runs.len(),
                m.median,
                m.min,
                m.max,
                g.median,
                g.min,
                g.max
            );
        }
    }
    o
}

/// Runs the benchmark on `lab`, bringing it up first when it is down (and down again at
/// the end). `interrupt` (Ctrl-C, SIGTERM) stops it with the same cleanup as a failure.
pub async fn run(
    lab: &Lab,
    daemons: &dyn Daemons,
    opts: &BenchOptions,
    interrupt: impl Future<Output = ()>,
    progress: &(dyn Fn(&str) + Send + Sync),
) -> Result<Report, Error> {
    tokio::pin!(interrupt);
    let status = lab.status().await?;
    let brought_up = if status.is_up() {
        let record = lab.record()?;
        if record.profile != opts.profile {
            return Err(lab_err(format!(
                "the lab is up with profile {:?} but the bench asks for {:?}; run `pbxha lab down` first (the bench then brings it up itself) or pass the lab's profile",
                record.profile, opts.profile
            )));
        }
        let running = record.on_isolation;
        if running != opts.kind.on_isolation() {
            return Err(lab_err(format!(
                "the lab is up with on-isolation = \"{}\" but this bench needs \"{}\"; run `pbxha lab down` first (the bench then brings it up itself)",
                running.as_str(),
                opts.kind.on_isolation().as_str()
            )));
        }
        if !record.start_daemons {
            return Err(lab_err("the lab is up without daemons; nothing to measure"));
        }
        progress("using the lab that is up; it stays up");
        false
    } else if status.members.iter().any(|m| m.present) || status.switch_present {
        return Err(lab_err("the lab is half up (some namespaces missing); run `pbxha lab down` first"));
    } else {
        progress("the lab is not up: bringing it up; it goes down again at the end");
        let mut up = UpOptions::new(opts.exe.clone());
        up.profile = opts.profile;
        up.on_isolation = opts.kind.on_isolation();
        let interrupted = tokio::select! {
            r = lab.up(&up, progress) => { r?; false }
            () = &mut interrupt => true,
        };
        if interrupted {
            lab.down().await?;
            return Err(lab_err("interrupted while bringing the lab up; it is down again"));
        }
        true
    };
    let pbx = lab.record()?.pbx;
    let mut bench = Bench { lab, daemons, profile: opts.profile, killed: None, frozen: None, cut: false, progress };
    let result = tokio::select! {
        r = bench.measure(opts) => r,
        () = &mut interrupt => Err(lab_err("interrupted")),
    };
    if let Some(node) = bench.frozen.take() {
        progress(&format!("resuming {node}'s daemon, frozen by the bench"));
        if let Err(e) = lab.signal_daemon(node, nix::sys::signal::Signal::SIGCONT) {
            progress(&format!("resuming {node} failed: {e}"));
        }
    }
    if let Some(node) = bench.killed.take() {
        progress(&format!("reviving {node}, killed by the bench"));
        if let Err(e) = lab.revive(node).await {
            progress(&format!("reviving {node} failed: {e}"));
        }
    }
    if bench.cut {
        progress("healing the links the bench cut");
        if let Err(e) = lab.heal().await {
            progress(&format!("healing failed: {e}"));
        }
    }
    if brought_up {
        progress("taking the lab down again");
        if let Err(e) = lab.down().await {
            // The measurement's own failure, if any, is the one to report.
            if result.is_ok() {
                return Err(e);
            }
            progress(&format!("taking the lab down failed: {e}"));
        }
    }
    let (unplanned, planned, soak, fault) = result?;
    Ok(Report { profile: opts.profile, pbx, brought_up, unplanned, planned, soak, fault })
}

struct Bench<'a> {
    lab: &'a Lab,
    daemons: &'a dyn Daemons,
    /// The profile the lab runs (`run` checked it).
    profile: Profile,
    /// A node the bench killed and has not revived yet.
    killed: Option<Member>,
    /// A node whose daemon the bench froze and has not resumed yet.
    frozen: Option<Member>,
    /// The bench cut links (a partition, the gateway) and has not healed them yet.
    cut: bool,
    progress: &'a (dyn Fn(&str) + Send + Sync),
}

fn other(node: Member) -> Member {
    if node == Member::A {
        Member::B
    } else {
        Member::A
    }
}

impl Bench<'_> {
    fn say(&self, line: &str) {
        (self.progress)(line)
    }

    /// One node's daemon status, or none when its control socket does not answer.
    async fn node_status(&self, node: Member) -> Option<NodeView> {
        let socket = NodeFiles::new(self.lab.state_dir(), node).control_socket;
        self.daemons.status(&socket).await.ok().flatten()
    }

    /// Whether `node`'s group member `resource` is failed (its restart budget spent).
    async fn member_failed(&self, node: Member, resource: &str) -> bool {
        self.node_status(node).await.is_some_and(|s| s.failed_members.iter().any(|m| m == resource))
    }

    #[allow(clippy::type_complexity)]
    async fn measure(
        &mut self,
        opts: &BenchOptions,
    ) -> Result<(Option<Series>, Option<Series>, Option<SoakReport>, Option<FaultSeries>), Error> {
        let mut unplanned = None;
        let mut planned = None;
        let mut soak = None;
        let mut fault = None;
        if let Kind::Fault(f) = opts.kind {
            fault = Some(self.fault_series(f, opts.runs).await?);
        }
        if opts.kind.includes(Kind::Unplanned) {
            unplanned = Some(self.series(opts.runs, false).await?);
        }
        if opts.kind.includes(Kind::Planned) {
            planned = Some(self.series(opts.runs, true).await?);
        }
        if opts.kind.includes(Kind::Soak) {
            soak = Some(self.soak(opts.soak).await?);
        }
        Ok((unplanned, planned, soak, fault))
    }

    async fn fault_series(&mut self, fault: Fault, runs: usize) -> Result<FaultSeries, Error> {
        let name = fault.name();
        let mut done = Vec::new();
        for i in 1..=runs {
            let holder = self.settled().await?;
            let run = self.fault_run(fault, holder).await?;
            self.say(&format!(
                "{name} {i}/{runs}: {holder} held; moves {}, longest gap {:.0} ms{} ({} probes, {} missed)",
                run.moves,
                run.longest_gap_ms,
                if run.recovered { "" } else { ", still no answer at the end" },
                run.probes,
                run.misses
            ));
            done.push(run);
        }
        self.settled().await?;
        let series = FaultSeries::new(fault, done);
        if let (Some(m), Some(g)) = (series.moves, series.longest_gap_ms) {
            self.say(&format!(
                "{name}: moves median {}, longest gap median {:.0} ms (min {:.0}, max {:.0})",
                m.median, g.median, g.min, g.max
            ));
        }
        Ok(series)
    }

    /// One fault run: probe, inject the fault (and undo it after its duration), wait for
    /// the cluster to settle again, and read the client's view up to the end of the run.
    async fn fault_run(&mut self, fault: Fault, holder: Member) -> Result<FaultRun, Error> {
        let peer = other(holder);
        let prober = Prober::start(self.lab.namespace(Member::Client));
        tokio::time::sleep(LEAD_IN).await;
        let end = match fault {
            Fault::GatewayBlip => {
                self.cut = true;
                self.lab.set_links(Member::Gw, "down").await?;
                tokio::time::sleep(GATEWAY_BLIP).await;
                self.lab.set_links(Member::Gw, "up").await?;
                self.cut = false;
                self.settle_end().await?
            }
            Fault::OneWay | Fault::IsolationRelease | Fault::IsolationKeep => {
                let (cut, node, hold) = match fault {
                    Fault::OneWay => (Partition::OneWay, peer, ONE_WAY_HOLD),
                    _ => (Partition::All, holder, ISOLATION_HOLD),
                };
                self.cut = true;
                self.lab.partition(cut, node).await?;
                tokio::time::sleep(hold).await;
                self.lab.heal().await?;
                self.cut = false;
                self.settle_end().await?
            }
            Fault::Freeze => {
                let deadtime = self.profile.timing().deadtime;
                self.frozen = Some(holder);
                self.lab.signal_daemon(holder, nix::sys::signal::Signal::SIGSTOP)?;
                tokio::time::sleep(deadtime * FREEZE_DEADTIMES).await;
                self.lab.signal_daemon(holder, nix::sys::signal::Signal::SIGCONT)?;
                self.frozen = None;
                self.settle_end().await?
            }
            Fault::CrashExec => {
                let event = Instant::now();
                self.lab.signal_daemon(holder, nix::sys::signal::Signal::SIGKILL)?;
                // The daemon is gone; what it left behind goes with a revive.
                self.killed = Some(holder);
                while !prober.answered_by(peer.name(), event) && event.elapsed() < CRASH_WATCH {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                tokio::time::sleep(TAIL).await;
                Instant::now()
            }
            Fault::NoPeerFailure => self.no_peer_failure(holder, &prober).await?,
        };
        let samples = prober.finish().await?;
        if let Some(node) = self.killed.take() {
            self.lab.revive(node).await?;
        }
        let (moves, gap, recovered) = client_view(&samples, end);
        Ok(FaultRun {
            holder,
            moves,
            longest_gap_ms: gap.as_secs_f64() * 1000.0,
            recovered,
            probes: samples.iter().filter(|s| s.sent <= end).count(),
            misses: samples.iter().filter(|s| s.sent <= end && s.node.is_none()).count(),
        })
    }

    /// Kills the peer, then crashes the holder's PBX until its member is failed, and waits
    /// for the holder to serve again (the failure-timeout restart); the run ends there.
    async fn no_peer_failure(&mut self, holder: Member, prober: &Prober) -> Result<Instant, Error> {
        let peer = other(holder);
        self.killed = Some(peer);
        self.lab.kill(peer).await?;
        let deadline = Instant::now() + RUN_LIMIT;
        while self.node_status(holder).await.is_none_or(|s| s.peer_alive) {
            if Instant::now() >= deadline {
                return Err(lab_err(format!("{holder} did not declare {peer} dead")));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for _ in 0..MAX_PBX_CRASHES {
            self.lab.kill_pbx(holder).await?;
            let killed = Instant::now();
            loop {
                if self.member_failed(holder, "sip").await {
                    let failed = Instant::now();
                    while !prober.answered_by(holder.name(), failed) {
                        if failed.elapsed() >= RUN_LIMIT {
                            return Err(lab_err(format!(
                                "{holder} did not restart its failed PBX within {} s",
                                RUN_LIMIT.as_secs()
                            )));
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    tokio::time::sleep(TAIL).await;
                    return Ok(Instant::now());
                }
                if prober.answered_by(holder.name(), killed) {
                    break;
                }
                if killed.elapsed() >= RUN_LIMIT {
                    return Err(lab_err(format!("{holder}'s PBX neither came back nor failed")));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Err(lab_err(format!(
            "{holder}'s PBX was restarted after each of {MAX_PBX_CRASHES} crashes; is max-restarts still 2?"
        )))
    }

    /// Waits for the cluster to settle after a fault; the run ends then.
    async fn settle_end(&self) -> Result<Instant, Error> {
        self.settled().await?;
        Ok(Instant::now())
    }

    /// Waits until one node holds the VIP as a running primary and the other is a
    /// secondary hearing it, continuously for [`SETTLE_HOLD`]; returns the holder.
    async fn settled(&self) -> Result<Member, Error> {
        let deadline = Instant::now() + SETTLE_LIMIT;
        let mut since: Option<(Member, Instant)> = None;
        let mut last = String::new();
        while Instant::now() < deadline {
            let holder = self.settled_now().await?;
            match (holder, since) {
                (Some(h), Some((s, t))) if h == s => {
                    if t.elapsed() >= SETTLE_HOLD {
                        return Ok(h);
                    }
                }
                (Some(h), _) => since = Some((h, Instant::now())),
                (None, _) => since = None,
            }
            last = self.describe().await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(lab_err(format!("the cluster did not settle within {} s ({last})", SETTLE_LIMIT.as_secs())))
    }

    async fn settled_now(&self) -> Result<Option<Member>, Error> {
        let holders = self.lab.status().await?.vip_holders;
        let [holder] = holders[..] else {
            return Ok(None);
        };
        let (Some(p), Some(s)) = (self.node_status(holder).await, self.node_status(other(holder)).await) else {
            return Ok(None);
        };
        let ok = p.role == "primary" && p.group == "running" && p.peer_alive && s.role == "secondary" && s.peer_alive;
        Ok(ok.then_some(holder))
    }

    async fn describe(&self) -> String {
        let mut parts = Vec::new();
        for node in Member::NODES {
            parts.push(match self.node_status(node).await {
                Some(s) => format!("{node}: {} (group {})", s.role, s.group),
                None => format!("{node}: daemon not answering"),
            });
        }
        parts.join(", ")
    }

    async fn series(&mut self, runs: usize, planned: bool) -> Result<Series, Error> {
        let what = if planned { "planned" } else { "unplanned" };
        let mut done = Vec::new();
        for i in 1..=runs {
            let holder = self.settled().await?;
            let run = self.one(holder, planned).await?;
            self.say(&format!(
                "{what} {i}/{runs}: {} -> {}: outage {:.0} ms (event to first answer {:.0} ms; {} probes, {} missed)",
                run.from, run.to, run.outage_ms, run.event_to_answer_ms, run.probes, run.misses
            ));
            done.push(run);
        }
        self.settled().await?;
        let series = Series::new(done);
        if let Some(s) = series.outage_ms {
            self.say(&format!("{what}: min {:.0} ms, median {:.0} ms, max {:.0} ms", s.min, s.median, s.max));
        }
        Ok(series)
    }

    /// One run: probe, trigger, wait for the other node's answer, put the old holder back
    /// as a secondary.
    async fn one(&mut self, holder: Member, planned: bool) -> Result<Run, Error> {
        let new = other(holder);
        let prober = Prober::start(self.lab.namespace(Member::Client));
        tokio::time::sleep(LEAD_IN).await;
        let event = Instant::now();
        if planned {
            let socket = NodeFiles::new(self.lab.state_dir(), holder).control_socket;
            if let Err(reason) = self.daemons.switchover_now(&socket).await.map_err(Error::Unreachable)? {
                return Err(lab_err(format!("switchover on {holder} refused: {reason}")));
            }
        } else {
            self.killed = Some(holder);
            self.lab.kill(holder).await?;
        }
        let deadline = event + RUN_LIMIT;
        while !prober.answered_by(new.name(), event) {
            if Instant::now() >= deadline {
                return Err(lab_err(format!(
                    "{new} did not answer SIP on {VIP} within {} s of the {}",
                    RUN_LIMIT.as_secs(),
                    if planned { "switchover" } else { "kill" }
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(TAIL).await;
        let samples = prober.finish().await?;
        if !planned {
            self.lab.revive(holder).await?;
            self.killed = None;
        }
        let o = outage(&samples, event, holder.name()).ok_or_else(|| {
            lab_err(format!("no SIP answer from {holder} on {VIP} before the event; is the client reaching the VIP?"))
        })?;
        Ok(Run {
            from: holder,
            to: new,
            outage_ms: o.gap.as_secs_f64() * 1000.0,
            event_to_answer_ms: o.event_to_answer.as_secs_f64() * 1000.0,
            probes: samples.len(),
            misses: samples.iter().filter(|s| s.node.is_none()).count(),
        })
    }

    async fn observe(&self) -> Observation {
        let mut obs =
            Observation { holders: self.lab.status().await.ok().map(|s| s.vip_holders), ..Observation::default() };
        for node in Member::NODES {
            let status = self.node_status(node).await;
            obs.roles.insert(node, status.as_ref().map(|s| s.role.clone()));
            obs.last_failover.insert(node, status.as_ref().and_then(|s| s.last_failover_at_ms));
        }
        obs
    }

    async fn soak(&mut self, length: Duration) -> Result<SoakReport, Error> {
        self.settled().await?;
        let start_counters = self.link_counters().await?;
        let log_offsets: BTreeMap<Member, u64> = Member::NODES.iter().map(|n| (*n, log_len(self.lab, *n))).collect();
        let mut busy = BusyLoops::spawn(BUSY_LOOPS)?;
        let mut loss = LossRules { ns: self.lab.namespace(Member::A), added: Vec::new() };
        for rule in loss_rules(SOAK_LOSS) {
            self.lab
                .runner
                .run_ok(&self.lab.iptables(Member::A, &[vec!["-A".to_string()], rule.clone()].concat()))
                .await
                .map_err(|e| lab_err(e.to_string()))?;
            loss.added.push(rule);
        }
        self.say(&format!(
            "soak: {} s with {:.0}% loss on a's heartbeat link and {BUSY_LOOPS} busy loops",
            length.as_secs(),
            SOAK_LOSS * 100.0
        ));
        let started = Instant::now();
        let mut previous = self.observe().await;
        let (mut samples, mut unread, mut found) = (1usize, 0usize, Vec::new());
        let mut false_failovers = 0;
        let mut next_note = Duration::from_secs(30);
        while started.elapsed() < length {
            tokio::time::sleep(SOAK_SAMPLE_EVERY).await;
            let now = self.observe().await;
            samples += 1;
            if now.holders.is_none() || now.roles.values().any(Option::is_none) {
                unread += 1;
            }
            let diff = changes(&previous, &now);
            if !diff.is_empty() {
                false_failovers += 1;
                let at = started.elapsed().as_secs_f64();
                for d in diff {
                    self.say(&format!("soak: at {at:.1} s: {d}"));
                    found.push(format!("at {at:.1} s: {d}"));
                }
            }
            // Unknown values keep the last known ones, so one failed read is not a change.
            merge(&mut previous, now);
            if started.elapsed() >= next_note {
                self.say(&format!("soak: {} s, {false_failovers} false failovers so far", started.elapsed().as_secs()));
                next_note += Duration::from_secs(30);
            }
        }
        let secs = started.elapsed();
        drop(loss);
        busy.stop();
        let end_counters = self.link_counters().await?;
        let interval = self.profile.timing().interval;
        let expected = (secs.as_millis() / interval.as_millis().max(1)) as u64;
        let links = end_counters
            .iter()
            .filter_map(|((node, link), end)| {
                let start = start_counters.get(&(*node, link.clone()))?;
                Some(LinkDelta {
                    node: *node,
                    link: link.clone(),
                    accepted: end.0.saturating_sub(start.0),
                    expected,
                    dropped: end.1.saturating_sub(start.1),
                    send_errors: end.2.saturating_sub(start.2),
                })
            })
            .collect();
        let late_heartbeats = log_offsets.iter().map(|(n, off)| (*n, late_lines(self.lab, *n, *off))).collect();
        Ok(SoakReport {
            secs: secs.as_secs(),
            loss: SOAK_LOSS,
            busy_loops: BUSY_LOOPS,
            samples,
            false_failovers,
            changes: found,
            unread,
            links,
            late_heartbeats,
        })
    }

    /// (accepted, dropped, send errors) per node and link.
    async fn link_counters(&self) -> Result<BTreeMap<(Member, String), (u64, u64, u64)>, Error> {
        let mut out = BTreeMap::new();
        for node in Member::NODES {
            let status = self
                .node_status(node)
                .await
                .ok_or_else(|| lab_err(format!("{node}'s daemon does not answer on its control socket")))?;
            for link in status.links {
                out.insert((node, link.name), (link.accepted, link.dropped, link.send_errors));
            }
        }
        Ok(out)
    }
}

fn merge(previous: &mut Observation, now: Observation) {
    if now.holders.is_some() {
        previous.holders = now.holders;
    }
    for (node, role) in now.roles {
        if role.is_some() {
            previous.roles.insert(node, role);
        }
    }
    for (node, at) in now.last_failover {
        if at.is_some() {
            previous.last_failover.insert(node, at);
        }
    }
}

fn log_len(lab: &Lab, node: Member) -> u64 {
    std::fs::metadata(NodeFiles::new(lab.state_dir(), node).log).map_or(0, |m| m.len())
}

/// "late heartbeat" lines the node logged after byte `offset` of its log.
fn late_lines(lab: &Lab, node: Member, offset: u64) -> u64 {
    let Ok(bytes) = std::fs::read(NodeFiles::new(lab.state_dir(), node).log) else {
        return 0;
    };
    let tail = bytes.get(offset as usize..).unwrap_or_default();
    String::from_utf8_lossy(tail).lines().filter(|l| l.contains("late heartbeat")).count() as u64
}

/// The client-side prober: a thread inside the client namespace, probing until stopped.
struct Prober {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<Sample>>>,
    thread: Option<std::thread::JoinHandle<Result<(), String>>>,
}

impl Prober {
    fn start(ns: String) -> Prober {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let (flag, sink) = (stop.clone(), samples.clone());
        let thread = std::thread::spawn(move || crate::testns::run_in(&ns, move || probe_loop(flag, sink))?);
        Prober { stop, samples, thread: Some(thread) }
    }

    /// Whether `node` has answered a probe sent at or after `since`.
    fn answered_by(&self, node: &str, since: Instant) -> bool {
        self.samples
            .lock()
            .map(|s| s.iter().any(|x| x.sent >= since && x.node.as_deref() == Some(node)))
            .unwrap_or(false)
    }

    /// Stops probing, waits for the probes in flight and returns every record.
    async fn finish(mut self) -> Result<Vec<Sample>, Error> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let joined = tokio::task::spawn_blocking(move || thread.join())
                .await
                .map_err(|e| lab_err(format!("the client prober: {e}")))?;
            match joined {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(lab_err(format!("the client prober: {e}"))),
                Err(_) => return Err(lab_err("the client prober panicked")),
            }
        }
        let mut samples = self
            .samples
            .lock()
            .map(|mut s| std::mem::take(&mut *s))
            .map_err(|_| lab_err("the client prober panicked"))?;
        samples.sort_by_key(|s| s.sent);
        Ok(samples)
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        // The thread ends on its own within one probe timeout.
        self.stop.store(true, Ordering::SeqCst);
    }
}

async fn probe_loop(stop: Arc<AtomicBool>, sink: Arc<Mutex<Vec<Sample>>>) -> Result<(), String> {
    let ip: std::net::IpAddr = VIP.parse().map_err(|e| format!("VIP {VIP}: {e}"))?;
    let target = SocketAddr::new(ip, SIP_PORT);
    let started = Instant::now();
    let mut tick = tokio::time::interval(PROBE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut in_flight = Vec::new();
    while !stop.load(Ordering::SeqCst) && started.elapsed() < PROBER_LIMIT {
        tick.tick().await;
        let sink = sink.clone();
        in_flight.push(tokio::spawn(async move {
            let sent = Instant::now();
            let answer = pbxha_telephony::probe(&pbxha_telephony::Probe::udp(target, PROBE_TIMEOUT)).await;
            let node = answer
                .ok()
                .filter(|r| (200..300).contains(&r.status))
                .map(|r| r.header("X-Pbxha-Node").unwrap_or("?").to_string());
            if let Ok(mut s) = sink.lock() {
                s.push(Sample { sent, node });
            }
        }));
    }
    for task in in_flight {
        let _ = task.await;
    }
    Ok(())
}

/// Processes that keep the cores busy, killed by PID and reaped when dropped.
struct BusyLoops(Vec<std::process::Child>);

impl BusyLoops {
    fn spawn(n: usize) -> Result<BusyLoops, Error> {
        let mut loops = BusyLoops(Vec::new());
        for _ in 0..n {
            let child = std::process::Command::new("sh")
                .args(["-c", "while :; do :; done"])
                .stdin(std::process::Stdio::null())
                .spawn()
                .map_err(|e| Error::io("starting a busy loop (`sh -c 'while :; do :; done'`)", e))?;
            loops.0.push(child);
        }
        Ok(loops)
    }

    fn stop(&mut self) {
        for mut child in self.0.drain(..) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for BusyLoops {
    fn drop(&mut self) {
        self.stop();
    }
}

/// iptables rules added in namespace `ns`, deleted again when dropped. Drop cannot await,
/// so deletion runs `ip netns exec NS iptables -D` synchronously.
struct LossRules {
    ns: String,
    added: Vec<Vec<String>>,
}

impl Drop for LossRules {
    fn drop(&mut self) {
        for rule in self.added.drain(..) {
            let out = std::process::Command::new("ip")
                .args(["netns", "exec", &self.ns, "iptables", "-w", "5", "-D"])
                .args(&rule)
                .output();
            match out {
                Ok(o) if o.status.success() => {}
                Ok(o) => eprintln!(
                    "lab bench: removing iptables rule `{}` in {}: {}",
                    rule.join(" "),
                    self.ns,
                    String::from_utf8_lossy(&o.stderr).trim()
                ),
                Err(e) => eprintln!("lab bench: removing iptables rule `{}` in {}: {e}", rule.join(" "), self.ns),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(base: Instant, list: &[(u64, Option<&str>)]) -> Vec<Sample> {
        list.iter()
            .map(|(ms, n)| Sample { sent: base + Duration::from_millis(*ms), node: n.map(String::from) })
            .collect()
    }

    #[test]
    fn outage_runs_from_the_last_answer_to_the_new_nodes_first() {
        let t = Instant::now();
        // Event at 100 ms; a still answers at 110 (planned: it stops its service later).
        let s = samples(
            t,
            &[
                (80, Some("a")),
                (90, Some("a")),
                (100, Some("a")),
                (110, Some("a")),
                (120, None),
                (130, None),
                (140, Some("b")),
                (150, Some("b")),
            ],
        );
        let o = outage(&s, t + Duration::from_millis(100), "a").unwrap();
        assert_eq!(o.gap, Duration::from_millis(30));
        assert_eq!(o.event_to_answer, Duration::from_millis(40));
    }

    #[test]
    fn a_miss_before_the_event_is_not_part_of_the_outage_but_order_does_not_matter() {
        let t = Instant::now();
        let mut s = samples(t, &[(0, Some("a")), (10, None), (20, Some("a")), (30, None), (1020, Some("b"))]);
        s.reverse();
        let o = outage(&s, t + Duration::from_millis(25), "a").unwrap();
        assert_eq!(o.gap, Duration::from_millis(1000));
        assert_eq!(o.event_to_answer, Duration::from_millis(995));
    }

    #[test]
    fn no_outage_without_an_answer_before_or_from_the_new_node() {
        let t = Instant::now();
        let event = t + Duration::from_millis(50);
        assert_eq!(outage(&samples(t, &[(10, None), (60, Some("b"))]), event, "a"), None);
        assert_eq!(outage(&samples(t, &[(10, Some("a")), (60, Some("a"))]), event, "a"), None);
        assert_eq!(outage(&[], event, "a"), None);
    }

    #[test]
    fn stats_take_the_middle_two_of_an_even_count() {
        assert_eq!(Stats::of(&[]), None);
        assert_eq!(Stats::of(&[5.0, 1.0, 3.0]), Some(Stats { min: 1.0, median: 3.0, max: 5.0 }));
        assert_eq!(Stats::of(&[4.0, 1.0, 2.0, 10.0]).map(|s| s.median), Some(3.0));
    }

    fn obs(holders: Option<&[Member]>, a: Option<&str>, b: Option<&str>) -> Observation {
        Observation {
            holders: holders.map(<[Member]>::to_vec),
            roles: [(Member::A, a.map(String::from)), (Member::B, b.map(String::from))].into(),
            last_failover: BTreeMap::new(),
        }
    }

    #[test]
    fn changes_name_holder_and_role_moves_and_skip_unknowns() {
        let steady = obs(Some(&[Member::A]), Some("primary"), Some("secondary"));
        assert!(changes(&steady, &steady).is_empty());
        assert!(changes(&steady, &obs(None, None, None)).is_empty());
        let moved = obs(Some(&[Member::A, Member::B]), Some("primary"), Some("primary"));
        assert_eq!(changes(&steady, &moved), ["VIP holder a -> a+b", "b: secondary -> primary"]);
        let mut failed_over = steady.clone();
        failed_over.last_failover.insert(Member::B, Some(2));
        let mut before = steady.clone();
        before.last_failover.insert(Member::B, Some(1));
        assert_eq!(changes(&before, &failed_over), ["b: new failover recorded"]);
    }

    #[test]
    fn merge_keeps_known_values_over_failed_reads() {
        let mut previous = obs(Some(&[Member::A]), Some("primary"), Some("secondary"));
        merge(&mut previous, obs(None, None, Some("fault")));
        assert_eq!(previous, obs(Some(&[Member::A]), Some("primary"), Some("fault")));
    }

    #[test]
    fn loss_rules_drop_a_share_of_hb0_both_ways() {
        let rules = loss_rules(0.2);
        assert_eq!(rules[0].join(" "), "INPUT -i hb0 -m statistic --mode random --probability 0.2 -j DROP");
        assert_eq!(rules[1].join(" "), "OUTPUT -o hb0 -m statistic --mode random --probability 0.2 -j DROP");
    }

    #[test]
    fn kinds_parse_and_all_includes_each() {
        assert_eq!("soak".parse::<Kind>(), Ok(Kind::Soak));
        assert!("fast".parse::<Kind>().unwrap_err().contains("fast"));
        assert!(Kind::All.includes(Kind::Planned) && !Kind::Planned.includes(Kind::Soak));
        for f in Fault::ALL {
            assert_eq!(f.name().parse::<Kind>(), Ok(Kind::Fault(f)));
            assert!(!Kind::All.includes(Kind::Fault(f)));
        }
        assert!("freez".parse::<Kind>().unwrap_err().contains("isolation-keep"));
        assert_eq!(Kind::Fault(Fault::IsolationKeep).on_isolation(), OnIsolation::Keep);
        assert_eq!(Kind::Fault(Fault::IsolationRelease).on_isolation(), OnIsolation::Release);
    }

    #[test]
    fn client_view_counts_changes_of_the_answering_node_and_the_longest_silence() {
        let t = Instant::now();
        // a answers, goes silent, b answers, a again: two moves, 300 ms the longest gap.
        let mut s =
            samples(t, &[(0, Some("a")), (10, Some("a")), (20, None), (310, Some("b")), (320, None), (330, Some("a"))]);
        s.reverse();
        let (moves, gap, recovered) = client_view(&s, t + Duration::from_millis(340));
        assert_eq!((moves, gap, recovered), (2, Duration::from_millis(300), true));
        // An outage still going on at the end counts to the end; later samples are ignored.
        let (moves, gap, recovered) = client_view(&s, t + Duration::from_millis(15));
        assert_eq!((moves, gap, recovered), (0, Duration::from_millis(10), true));
        let silent = samples(t, &[(0, Some("a")), (10, None), (20, None)]);
        let (_, gap, recovered) = client_view(&silent, t + Duration::from_millis(1000));
        assert_eq!((gap, recovered), (Duration::from_millis(1000), false));
        assert_eq!(client_view(&[], t), (0, Duration::ZERO, false));
    }
}
