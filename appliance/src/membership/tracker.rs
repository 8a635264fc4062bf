//! Which authenticated packets to believe: replay protection, sender identity and per-link
//! liveness. Pure: the caller passes the receive time in.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::packet::{Drop, Echo, Header};

/// Dropped packets per reason, as shown by `pbxha status`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct DropCounters {
    pub truncated: u64,
    pub oversized: u64,
    pub malformed: u64,
    pub foreign_cluster: u64,
    pub forged: u64,
    pub replayed: u64,
    pub unknown_node: u64,
    pub wrong_link: u64,
}

impl DropCounters {
    pub fn count(&mut self, reason: Drop) {
        *self.slot(reason) += 1;
    }

    pub fn get(&self, reason: Drop) -> u64 {
        let mut copy = *self;
        *copy.slot(reason)
    }

    pub fn total(&self) -> u64 {
        Drop::ALL.iter().map(|r| self.get(*r)).sum()
    }

    fn slot(&mut self, reason: Drop) -> &mut u64 {
        match reason {
            Drop::Truncated => &mut self.truncated,
            Drop::Oversized => &mut self.oversized,
            Drop::Malformed => &mut self.malformed,
            Drop::ForeignCluster => &mut self.foreign_cluster,
            Drop::Forged => &mut self.forged,
            Drop::Replayed => &mut self.replayed,
            Drop::UnknownNode => &mut self.unknown_node,
            Drop::WrongLink => &mut self.wrong_link,
        }
    }
}

/// The last packet accepted on a link, the point replays are judged against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Accepted {
    boot: u64,
    sequence: u64,
}

/// What is known about one link.
#[derive(Clone, Debug, Default)]
pub struct LinkRecord {
    last: Option<Accepted>,
    /// When the last packet was accepted here (the receiver's monotonic clock).
    pub last_seen: Option<Instant>,
    pub accepted: u64,
    pub drops: DropCounters,
}

/// The tracker's judgement on one decoded packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// From the peer and new. `gap` is the time since the previous packet accepted on the
    /// same link (none for the first), for warntime logging.
    Accepted { gap: Option<Duration> },
    /// Our own packet looped back (broadcast, multicast): ignored, not counted.
    Own,
    /// Authentic, from the peer, but from a boot before the newest one seen: a replay, or a
    /// peer that lost its boot counter (see [`super::boot`]). Counted as replayed; told
    /// apart so the log can say what to do.
    EarlierBoot { boot: u64, newest: u64 },
    /// Not believed; already counted.
    Dropped(Drop),
}

/// Per-link replay and liveness state for the one peer of the pair.
#[derive(Clone, Debug)]
pub struct Tracker {
    local_node: u16,
    local_boot: u64,
    peer_node: u16,
    links: Vec<LinkRecord>,
    /// The peer's highest boot counter accepted on any link. Kept across links because a
    /// restarted peer shows up on one link before the others.
    newest: Option<u64>,
}

impl Tracker {
    pub fn new(local_node: u16, local_boot: u64, peer_node: u16, links: usize) -> Tracker {
        Tracker { local_node, local_boot, peer_node, links: vec![LinkRecord::default(); links], newest: None }
    }

    /// The peer's boot counter as last heard, for addressing an ask to this boot of it.
    pub fn peer_boot(&self) -> Option<u64> {
        self.newest
    }

    pub fn peer_node(&self) -> u16 {
        self.peer_node
    }

    /// Judges a packet that decoded and authenticated, received on link `link` at `now`,
    /// and counts it. Panics if `link` is not one of the links the tracker was made for.
    ///
    /// Replay rules, by the peer's boot counter ([`super::boot`]): a counter higher than any
    /// accepted from the peer is a restart, and its sequences start over; on the newest
    /// counter, a sequence at or below the last one accepted on this link is a replay (a
    /// reordered packet is too late to matter anyway); a lower counter is an earlier boot,
    /// so packets recorded from it cannot be played back. No clock is involved.
    pub fn check(&mut self, link: usize, header: &Header, now: Instant) -> Verdict {
        if header.node_id == self.local_node && header.boot == self.local_boot {
            return Verdict::Own;
        }
        let verdict = self.judge(link, header);
        let record = &mut self.links[link];
        match verdict {
            Err(v) => {
                // judge returns only Dropped and EarlierBoot, which counts as a replay.
                let reason = match v {
                    Verdict::Dropped(reason) => reason,
                    _ => Drop::Replayed,
                };
                record.drops.count(reason);
                v
            }
            Ok(()) => {
                record.last = Some(Accepted { boot: header.boot, sequence: header.sequence });
                let gap = record.last_seen.map(|t| now.saturating_duration_since(t));
                record.last_seen = Some(now);
                record.accepted += 1;
                self.newest = Some(self.newest.map_or(header.boot, |n| n.max(header.boot)));
                Verdict::Accepted { gap }
            }
        }
    }

    fn judge(&self, link: usize, header: &Header) -> Result<(), Verdict> {
        if header.node_id != self.peer_node {
            return Err(Verdict::Dropped(Drop::UnknownNode));
        }
        if usize::from(header.link) != link {
            return Err(Verdict::Dropped(Drop::WrongLink));
        }
        match self.newest {
            Some(newest) if header.boot < newest => {
                return Err(Verdict::EarlierBoot { boot: header.boot, newest });
            }
            _ => {}
        }
        match self.links[link].last {
            Some(last) if last.boot == header.boot && header.sequence <= last.sequence => {
                Err(Verdict::Dropped(Drop::Replayed))
            }
            _ => Ok(()),
        }
    }

    /// Counts a packet the decoder rejected on link `link`.
    pub fn count_drop(&mut self, link: usize, reason: Drop) {
        self.links[link].drops.count(reason);
    }

    /// What our next packet on `link` echoes: the peer's last packet accepted there.
    pub fn echo(&self, link: usize) -> Echo {
        self.links
            .get(link)
            .and_then(|r| r.last)
            .map_or(Echo::default(), |a| Echo { boot: a.boot, sequence: a.sequence })
    }

    pub fn links(&self) -> &[LinkRecord] {
        &self.links
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCAL: u16 = 1;
    const PEER: u16 = 2;
    const OUR_BOOT: u64 = 111;

    fn h(link: u8, boot: u64, sequence: u64) -> Header {
        Header { cluster_id: 9, node_id: PEER, link, boot, sequence, echo: Default::default() }
    }

    fn accepted(v: Verdict) -> bool {
        matches!(v, Verdict::Accepted { .. })
    }

    #[test]
    fn in_order_packets_are_accepted_with_their_gap() {
        let mut t = Tracker::new(LOCAL, OUR_BOOT, PEER, 1);
        let t0 = Instant::now();
        assert_eq!(t.check(0, &h(0, 5, 1), t0), Verdict::Accepted { gap: None });
        let later = t0 + Duration::from_millis(700);
        assert_eq!(t.check(0, &h(0, 5, 2), later), Verdict::Accepted { gap: Some(Duration::from_millis(700)) });
        assert_eq!(t.links()[0].accepted, 2);
        assert_eq!(t.links()[0].last_seen, Some(later));
        assert_eq!(t.links()[0].drops.total(), 0);
    }

    #[test]
    fn repeated_and_older_sequences_are_replays() {
        let mut t = Tracker::new(LOCAL, OUR_BOOT, PEER, 1);
        let now = Instant::now();
        assert!(accepted(t.check(0, &h(0, 5, 10), now)));
        assert_eq!(t.check(0, &h(0, 5, 10), now), Verdict::Dropped(Drop::Replayed));
        // Reordered: 9 arrives after 10.
        assert_eq!(t.check(0, &h(0, 5, 9), now), Verdict::Dropped(Drop::Replayed));
        // A gap in sequences (lost packets) is fine.
        assert!(accepted(t.check(0, &h(0, 5, 15), now)));
        assert_eq!(t.links()[0].drops.replayed, 2);
        assert_eq!(t.links()[0].accepted, 2);
    }

    #[test]
    fn a_restarted_peer_is_accepted_and_its_old_boot_is_not() {
        let mut t = Tracker::new(LOCAL, OUR_BOOT, PEER, 1);
        let now = Instant::now();
        assert!(accepted(t.check(0, &h(0, 5, 900), now)));
        // Restart: a higher counter, sequence starts over.
        assert!(accepted(t.check(0, &h(0, 6, 1), now)));
        assert!(accepted(t.check(0, &h(0, 6, 2), now)));
        // Recorded packets of the old boot, even with higher sequences, are replays.
        assert_eq!(t.check(0, &h(0, 5, 901), now), Verdict::EarlierBoot { boot: 5, newest: 6 });
        assert_eq!(t.check(0, &h(0, 5, 5000), now), Verdict::EarlierBoot { boot: 5, newest: 6 });
        // And so are recordings of the new boot's own packets.
        assert_eq!(t.check(0, &h(0, 6, 2), now), Verdict::Dropped(Drop::Replayed));
        assert_eq!(t.links()[0].drops.replayed, 3);
        assert_eq!(t.links()[0].accepted, 3);
    }

    /// Boot counters as [`super::super::boot::next`] makes them for a peer restarting with its
    /// clock an hour behind, then an hour ahead, then put right: every start is heard at once,
    /// and every earlier boot's packets stay refused.
    #[test]
    fn restarts_with_the_clock_behind_or_ahead_are_accepted_and_replays_are_not() {
        use super::super::boot::next;
        const NOW: u64 = 1_790_000_000;
        let mut t = Tracker::new(LOCAL, OUR_BOOT, PEER, 1);
        let now = Instant::now();
        let mut boots = vec![next(None, NOW)];
        for clock in [NOW - 3600, NOW + 3600, NOW + 5] {
            boots.push(next(boots.last().copied(), clock));
        }
        for (i, &boot) in boots.iter().enumerate() {
            assert!(accepted(t.check(0, &h(0, boot, 1), now)), "start {i} (boot {boot}) refused");
            assert!(accepted(t.check(0, &h(0, boot, 2), now)));
            assert_eq!(t.check(0, &h(0, boot, 2), now), Verdict::Dropped(Drop::Replayed));
            for &earlier in &boots[..i] {
                assert_eq!(
                    t.check(0, &h(0, earlier, 1_000), now),
                    Verdict::EarlierBoot { boot: earlier, newest: boot }
                );
            }
        }
        assert_eq!(t.links()[0].accepted, 2 * boots.len() as u64);
    }

    #[test]
    fn a_restart_seen_first_on_one_link_is_accepted_on_the_other() {
        let mut t = Tracker::new(LOCAL, OUR_BOOT, PEER, 2);
        let now = Instant::now();
        assert!(accepted(t.check(0, &h(0, 5, 100), now)));
        assert!(accepted(t.check(1, &h(1, 5, 100), now)));
        // The new boot is heard on link 0 first, then on link 1.
        assert!(accepted(t.check(0, &h(0, 6, 1), now)));
        assert!(accepted(t.check(1, &h(1, 6, 1), now)));
        // And the old boot is dead on both links.
        assert_eq!(t.check(1, &h(1, 5, 101), now), Verdict::EarlierBoot { boot: 5, newest: 6 });
        // Sequences are per link: link 1's sequence 2 does not depend on link 0's.
        assert!(accepted(t.check(0, &h(0, 6, 7), now)));
        assert!(accepted(t.check(1, &h(1, 6, 2), now)));
    }

    #[test]
    fn own_packets_are_ignored_without_counting() {
        let mut t = Tracker::new(LOCAL, OUR_BOOT, PEER, 1);
        let own = Header { node_id: LOCAL, boot: OUR_BOOT, ..h(0, 0, 1) };
        assert_eq!(t.check(0, &own, Instant::now()), Verdict::Own);
        assert_eq!(t.links()[0].drops.total(), 0);
        assert_eq!(t.links()[0].accepted, 0);
        assert_eq!(t.links()[0].last_seen, None);
    }

    #[test]
    fn other_node_ids_are_unknown_including_our_id_from_an_earlier_start() {
        let mut t = Tracker::new(LOCAL, OUR_BOOT, PEER, 1);
        let now = Instant::now();
        let third = Header { node_id: 3, ..h(0, 5, 1) };
        assert_eq!(t.check(0, &third, now), Verdict::Dropped(Drop::UnknownNode));
        let ours_old = Header { node_id: LOCAL, boot: OUR_BOOT + 1, ..h(0, 0, 1) };
        assert_eq!(t.check(0, &ours_old, now), Verdict::Dropped(Drop::UnknownNode));
        assert_eq!(t.links()[0].drops.unknown_node, 2);
    }

    #[test]
    fn a_packet_for_another_link_is_dropped_and_counted_where_it_arrived() {
        let mut t = Tracker::new(LOCAL, OUR_BOOT, PEER, 2);
        assert_eq!(t.check(1, &h(0, 5, 1), Instant::now()), Verdict::Dropped(Drop::WrongLink));
        assert_eq!(t.links()[1].drops.wrong_link, 1);
        assert_eq!(t.links()[0].drops.total(), 0);
    }

    #[test]
    fn decoder_drops_are_counted_per_reason() {
        let mut t = Tracker::new(LOCAL, OUR_BOOT, PEER, 1);
        for reason in Drop::ALL {
            t.count_drop(0, reason);
        }
        t.count_drop(0, Drop::Forged);
        let d = t.links()[0].drops;
        assert_eq!(d.total(), Drop::ALL.len() as u64 + 1);
        assert_eq!(d.get(Drop::Forged), 2);
        assert_eq!(d.get(Drop::Truncated), 1);
    }
}
