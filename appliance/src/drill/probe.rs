//! The drill's caller's-eye view of a move: SIP OPTIONS to the VIP every 20 ms, each waited
//! for up to 100 ms, from the node that receives the group. Its probes cross the wire to
//! the old holder until this node takes the VIP, then are answered here.
//!
//! A probe not answered within 100 ms counts as missed: a longer wait would let a probe sent
//! into the gap be answered by the new holder and hide the gap. So every stretch without
//! service of 100 ms or more is seen, to within one probe interval.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use pbxha_telephony::options::{self, Probe};
use serde::{Deserialize, Serialize};

/// How often a probe leaves.
pub const EVERY: Duration = Duration::from_millis(20);
/// How long each probe waits; well below SIP's T1 (500 ms), so a probe is never retransmitted.
pub const TIMEOUT: Duration = Duration::from_millis(100);
/// A prober nobody stops (the drill died) ends after this.
pub const LIMIT: Duration = Duration::from_secs(300);

/// One probe: when it left and, once settled, whether it was answered.
#[derive(Clone, Copy, Debug)]
struct Sample {
    sent: Instant,
    answered: Option<bool>,
}

/// What the probes saw so far, as the drill reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeReport {
    /// Probes settled (answered or timed out).
    pub probes: u64,
    pub answered: u64,
    /// From the first unanswered probe to the first answered one after the last unanswered;
    /// 0 when none was missed; up to the last settled probe while none is answered again.
    pub outage_ms: u64,
    /// Whether the latest settled probe was answered.
    pub answering: bool,
}

/// The report of settled samples in the order they left (an unsettled one ends the run:
/// what came after it is not judged yet).
fn summarize(samples: &[Sample]) -> ProbeReport {
    let settled: Vec<(Instant, bool)> = samples.iter().map_while(|s| s.answered.map(|a| (s.sent, a))).collect();
    let answered = settled.iter().filter(|(_, a)| *a).count();
    let first_miss = settled.iter().position(|(_, a)| !a);
    let last_miss = settled.iter().rposition(|(_, a)| !a);
    let outage = match (first_miss, last_miss) {
        (Some(f), Some(l)) => {
            let end = settled[l + 1..].first().map_or(settled[l].0, |(t, _)| *t);
            end.saturating_duration_since(settled[f].0)
        }
        _ => Duration::ZERO,
    };
    ProbeReport {
        probes: settled.len() as u64,
        answered: answered as u64,
        outage_ms: outage.as_millis() as u64,
        answering: settled.last().is_some_and(|(_, a)| *a),
    }
}

/// A running prober; dropping it stops the probes.
pub struct Prober {
    samples: Arc<Mutex<Vec<Sample>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Prober {
    /// Starts probing `target` over UDP every `every` (at least 10 ms).
    pub fn start(target: SocketAddr, every: Duration) -> Prober {
        let samples: Arc<Mutex<Vec<Sample>>> = Arc::default();
        let sink = samples.clone();
        let task = tokio::spawn(async move {
            let started = Instant::now();
            let mut tick = tokio::time::interval(every.max(Duration::from_millis(10)));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            while started.elapsed() < LIMIT {
                tick.tick().await;
                let index = {
                    let mut s = sink.lock().unwrap_or_else(PoisonError::into_inner);
                    s.push(Sample { sent: Instant::now(), answered: None });
                    s.len() - 1
                };
                let sink = sink.clone();
                tokio::spawn(async move {
                    let answered = options::probe(&Probe::udp(target, TIMEOUT)).await.is_ok_and(|r| r.status == 200);
                    sink.lock().unwrap_or_else(PoisonError::into_inner)[index].answered = Some(answered);
                });
            }
        });
        Prober { samples, task }
    }

    pub fn report(&self) -> ProbeReport {
        summarize(&self.samples.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(pattern: &str) -> Vec<Sample> {
        let t0 = Instant::now();
        pattern
            .chars()
            .enumerate()
            .map(|(i, c)| Sample {
                sent: t0 + EVERY * i as u32,
                answered: match c {
                    'y' => Some(true),
                    'n' => Some(false),
                    _ => None,
                },
            })
            .collect()
    }

    #[test]
    fn the_outage_runs_from_the_first_miss_to_the_first_answer_after_the_last() {
        let r = summarize(&samples("yyynnnyyy"));
        assert_eq!((r.probes, r.answered, r.outage_ms, r.answering), (9, 6, 60, true));
        // Two gaps are one outage as a caller sees the move: first miss to the last recovery.
        assert_eq!(summarize(&samples("ynyny")).outage_ms, 60);
        assert_eq!(summarize(&samples("yyyy")).outage_ms, 0);
    }

    #[test]
    fn no_answer_again_is_not_answering_and_the_outage_grows() {
        let r = summarize(&samples("yynnnn"));
        assert!(!r.answering);
        assert_eq!(r.outage_ms, 60);
        // Probes still in flight are not judged, nor anything after them.
        let r = summarize(&samples("yyn?y"));
        assert_eq!((r.probes, r.answering), (3, false));
    }

    #[tokio::test]
    async fn a_silent_target_is_not_answered() {
        // A bound socket that never answers, on loopback.
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let prober = Prober::start(silent.local_addr().unwrap(), EVERY);
        tokio::time::sleep(TIMEOUT * 2).await;
        let r = prober.report();
        assert!(r.probes >= 1 && r.answered == 0 && !r.answering, "{r:?}");
    }
}
