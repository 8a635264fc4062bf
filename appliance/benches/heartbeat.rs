//! Cost of the hot paths, with plain `std::time` (no bench framework, to keep the build
//! lean). Each section runs `RUNS` times over `N` items and prints min/median/max
//! throughput and nanoseconds per item.
//!
//! `cargo bench -p pbxha-appliance --bench heartbeat`; `PBXHA_BENCH_N` overrides N.

use std::hint::black_box;
use std::time::{Duration, Instant};

use pbxha_appliance::membership::packet::{decode, encode, Header};
use pbxha_appliance::summary::{GroupPhase, NodeSummary, Role};

const RUNS: usize = 5;
const DEFAULT_N: usize = 200_000;

/// One measured thing: `run(n)` does it `n` times and returns the time taken.
struct Section {
    name: &'static str,
    unit: &'static str,
    run: fn(usize) -> Duration,
}

/// Every section the bench runs, in order. The fsm step cost (one `handle(event, now)` per
/// item) belongs here as another entry.
fn sections() -> Vec<Section> {
    vec![Section {
        name: "heartbeat encode + decode + HMAC verify",
        unit: "packets",
        run: codec,
    }]
}

fn codec(n: usize) -> Duration {
    let key = b"bench-key-0123456789abcdef-0123456789";
    let summary = NodeSummary {
        role: Role::Primary,
        group: GroupPhase::Running,
        healthy: true,
        reachable: 2,
        targets: 2,
        handover: false,
    };
    let mut header = Header {
        cluster_id: 7,
        node_id: 1,
        link: 0,
        boot_id: 0x5eed,
        sequence: 0,
        sent_ms: 1_714_564_800_000,
    };
    let start = Instant::now();
    for seq in 1..=n as u64 {
        header.sequence = seq;
        header.sent_ms += 200;
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
    println!("{} ({RUNS} runs of {n} {}):", section.name, section.unit);
    println!(
        "  {}/s   min {:>12.0}   median {:>12.0}   max {:>12.0}",
        section.unit,
        per_second(slowest),
        per_second(median),
        per_second(fastest)
    );
    println!(
        "  ns per item  min {:>8.0}   median {:>8.0}   max {:>8.0}",
        ns_per_item(fastest),
        ns_per_item(median),
        ns_per_item(slowest)
    );
}

fn main() {
    let n = std::env::var("PBXHA_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(DEFAULT_N);
    for section in sections() {
        // One untimed pass so the first run does not pay for cold caches.
        (section.run)(n / 10 + 1);
        let runs = (0..RUNS).map(|_| (section.run)(n)).collect();
        report(&section, n, runs);
    }
}
