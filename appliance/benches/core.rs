//! Cost of the hot paths, with plain `std::time` (no bench framework, to keep the build
//! lean). Each section runs `RUNS` times over `N` items and prints min/median/max
//! throughput and nanoseconds per item.
//!
//! `cargo bench -p pbxha-appliance --bench core`; `PBXHA_BENCH_N` overrides N.

use std::hint::black_box;
use std::time::{Duration, Instant};

use pbxha_appliance::fsm::{Event, Node, Params};
use pbxha_appliance::membership::packet::{decode, encode, Header};
use pbxha_appliance::summary::{GroupPhase, NodeSummary, Role};

const RUNS: usize = 5;
const DEFAULT_N: usize = 200_000;

/// One measured thing: `run(n)` does it `n` times and returns the time taken.
struct Section {
    name: &'static str,
    /// What one item is, singular ("packet").
    unit: &'static str,
    run: fn(usize) -> Duration,
}

/// Every section the bench runs, in order.
fn sections() -> Vec<Section> {
    vec![
        Section { name: "heartbeat encode + decode + HMAC verify", unit: "packet", run: codec },
        Section { name: "fsm step: handle(Heartbeat) on a settled secondary", unit: "event", run: fsm_heartbeat },
        Section { name: "fsm step: handle(Tick)", unit: "event", run: fsm_tick },
    ]
}

fn fsm_params() -> Params {
    Params {
        node_id: 2,
        node_name: "b".into(),
        peer_id: 1,
        peer_name: "a".into(),
        link_names: vec!["hb".into(), "pub".into()],
        interval: Duration::from_millis(200),
        deadtime: Duration::from_millis(1000),
        warntime: Duration::from_millis(500),
        initdead: Duration::from_millis(5000),
        ping_targets: 1,
        auto_failback: false,
        preferred: None,
        failure_timeout: Duration::from_secs(60),
        drain_timeout: Duration::from_secs(300),
        // The config's default ping: fall 3 × interval 1 s + timeout 800 ms.
        ping_dampen: Duration::from_millis(3800),
        ping_interval: Duration::from_secs(1),
        ping_timeout: Duration::from_millis(800),
        on_isolation: Default::default(),
    }
}

fn primary_summary() -> NodeSummary {
    NodeSummary { reachable: 1, targets: 1, ..NodeSummary::plain(Role::Primary, GroupPhase::Running) }
}

/// A secondary that has heard its primary peer: the steady state of every heartbeat.
fn settled_secondary(now: Instant) -> Node {
    let mut node = Node::new(fsm_params(), now);
    node.handle(Event::Connectivity { reachable: 1, total: 1 }, now);
    node.handle(Event::Heartbeat { link: 0, summary: primary_summary(), hears_us: true }, now);
    node
}

fn fsm_heartbeat(n: usize) -> Duration {
    let t0 = Instant::now();
    let mut node = settled_secondary(t0);
    let summary = primary_summary();
    let start = Instant::now();
    for i in 0..n {
        // Fake clock: 100 ms apart on alternating links, as two links at interval 200 ms deliver.
        let now = t0 + Duration::from_millis(100 * i as u64);
        black_box(node.handle(black_box(Event::Heartbeat { link: i % 2, summary, hears_us: true }), now));
    }
    start.elapsed()
}

fn fsm_tick(n: usize) -> Duration {
    let t0 = Instant::now();
    let mut node = settled_secondary(t0);
    let start = Instant::now();
    for i in 0..n {
        // Ticks within deadtime of the last heartbeat: the common case, nothing happens.
        let now = t0 + Duration::from_micros(i as u64 % 900_000);
        black_box(node.handle(black_box(Event::Tick), now));
    }
    start.elapsed()
}

fn codec(n: usize) -> Duration {
    let key = b"bench-key-0123456789abcdef-0123456789";
    let summary = NodeSummary { reachable: 2, targets: 2, ..NodeSummary::plain(Role::Primary, GroupPhase::Running) };
    let mut header =
        Header { cluster_id: 7, node_id: 1, link: 0, boot: 1_714_564_800, sequence: 0, echo: Default::default() };
    let start = Instant::now();
    for seq in 1..=n as u64 {
        header.sequence = seq;
        let bytes = encode(black_box(&header), black_box(&summary), key);
        match decode(black_box(&bytes), key, 7) {
            Ok(packet) => {
                black_box(packet);
            }
            Err(reason) => panic!("a packet just encoded was dropped as {reason}"),
        }
    }
    start.elapsed()
}

fn report(section: &Section, n: usize, mut runs: Vec<Duration>) {
    runs.sort();
    let per_second = |d: Duration| n as f64 / d.as_secs_f64();
    let ns_per_item = |d: Duration| d.as_nanos() as f64 / n as f64;
    let (fastest, median, slowest) = (runs[0], runs[runs.len() / 2], runs[runs.len() - 1]);
    println!("{} ({RUNS} runs of {n} {}s):", section.name, section.unit);
    println!(
        "  {}s/s  min {:>12.0}   median {:>12.0}   max {:>12.0}",
        section.unit,
        per_second(slowest),
        per_second(median),
        per_second(fastest)
    );
    println!(
        "  ns per {}  min {:>8.0}   median {:>8.0}   max {:>8.0}",
        section.unit,
        ns_per_item(fastest),
        ns_per_item(median),
        ns_per_item(slowest)
    );
}

fn main() {
    let n = std::env::var("PBXHA_BENCH_N").ok().and_then(|v| v.parse().ok()).filter(|n| *n > 0).unwrap_or(DEFAULT_N);
    for section in sections() {
        // One untimed pass so the first run does not pay for cold caches.
        (section.run)(n / 10 + 1);
        let runs = (0..RUNS).map(|_| (section.run)(n)).collect();
        report(&section, n, runs);
    }
}
