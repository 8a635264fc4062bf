//! The connectivity monitor: probes the configured ping targets (ICMP echo or TCP connect)
//! every `interval`, applies per-target `rise`/`fall` hysteresis (`pbxha_telephony::Hysteresis`,
//! as for SIP probes and checks: a target is unknown until `rise` answers or `fall` failures
//! in a row), and tells the fsm how many
//! targets answer with [`Event::Connectivity`] whenever that number changes. It is the
//! tie-breaker between "the peer died" and "I am the one cut off".
//!
//! The packet building and parsing and the tally that decides when to send an event are pure
//! functions; [`PingMonitor::run`] does the I/O.

use std::io::{self, Read};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;

use pbxha_telephony::Hysteresis;

use crate::config::{PingConfig, PingTarget};
use crate::fsm::Event;

// ---- ICMP echo packets (RFC 792, RFC 4443 §4) ----

const ECHO_REQUEST_V4: u8 = 8;
const ECHO_REPLY_V4: u8 = 0;
const ECHO_REQUEST_V6: u8 = 128;
const ECHO_REPLY_V6: u8 = 129;
const IPPROTO_ICMP: u8 = 1;
/// Sent in every request so a capture shows who is pinging.
const PAYLOAD: &[u8] = b"pbxha connectivity probe";

/// The Internet checksum (RFC 1071): one's complement of the one's complement sum of the
/// data as big-endian 16-bit words, an odd last byte padded with zero.
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut words = data.chunks_exact(2);
    for w in &mut words {
        sum += u32::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = words.remainder() {
        sum += u32::from(*last) << 8;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An ICMP (or, with `v6`, ICMPv6) echo request. The IPv4 checksum is filled in; the ICMPv6
/// one covers a pseudo-header with addresses the kernel picks, so the kernel fills it in
/// (RFC 3542 §3.1).
pub fn echo_request(v6: bool, ident: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(8 + payload.len());
    p.push(if v6 { ECHO_REQUEST_V6 } else { ECHO_REQUEST_V4 });
    p.push(0);
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(&ident.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(payload);
    if !v6 {
        let sum = checksum(&p);
        p[2..4].copy_from_slice(&sum.to_be_bytes());
    }
    p
}

/// The identifier and sequence number of an echo reply as a raw socket delivers it: IPv4
/// raw sockets include the IP header, ICMPv6 ones do not. `None` for anything else,
/// including IPv4 replies with a bad checksum.
pub fn parse_echo_reply(packet: &[u8], v6: bool) -> Option<(u16, u16)> {
    let icmp = if v6 {
        packet
    } else {
        let first = *packet.first()?;
        let header_len = usize::from(first & 0x0f) * 4;
        if first >> 4 != 4 || header_len < 20 || *packet.get(9)? != IPPROTO_ICMP {
            return None;
        }
        let icmp = packet.get(header_len..)?;
        if checksum(icmp) != 0 {
            return None;
        }
        icmp
    };
    let header = icmp.get(..8)?;
    let reply = if v6 { ECHO_REPLY_V6 } else { ECHO_REPLY_V4 };
    if header[0] != reply || header[1] != 0 {
        return None;
    }
    Some((u16::from_be_bytes([header[4], header[5]]), u16::from_be_bytes([header[6], header[7]])))
}

// ---- the tally (pure) ----

/// One target as `pbxha status` shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TargetStatus {
    /// As written in the config (`198.51.100.1`, `tcp:198.51.100.1:80`).
    pub target: String,
    /// `None` until `rise` answers or `fall` failures in a row gave the first verdict.
    pub up: Option<bool>,
    pub last_rtt_ms: Option<f64>,
    pub consecutive_ok: u32,
    pub consecutive_fail: u32,
    /// Why the last failed probe failed.
    pub last_error: Option<String>,
}

/// Every target's state and what the fsm was last told.
#[derive(Debug)]
struct Tally {
    targets: Vec<(Hysteresis, TargetStatus)>,
    reported: Option<u8>,
}

fn count(n: usize) -> u8 {
    u8::try_from(n).unwrap_or(u8::MAX)
}

impl Tally {
    fn new(config: &PingConfig) -> Self {
        let targets = config
            .targets
            .iter()
            .map(|t| {
                let status = TargetStatus {
                    target: t.to_string(),
                    up: None,
                    last_rtt_ms: None,
                    consecutive_ok: 0,
                    consecutive_fail: 0,
                    last_error: None,
                };
                (Hysteresis::new(config.rise, config.fall), status)
            })
            .collect();
        Tally { targets, reported: None }
    }

    /// Records probe `outcome` (the round trip, or why it failed) for target `index` and
    /// returns the event to send, if any: the first once every target has a verdict, then
    /// one each time the number of targets up changes.
    fn record(&mut self, index: usize, outcome: Result<Duration, String>) -> Option<Event> {
        let (hysteresis, status) = self.targets.get_mut(index)?;
        hysteresis.observe(outcome.is_ok());
        status.up = hysteresis.health().up();
        match outcome {
            Ok(rtt) => {
                status.last_rtt_ms = Some(rtt.as_secs_f64() * 1000.0);
                status.consecutive_ok += 1;
                status.consecutive_fail = 0;
            }
            Err(why) => {
                status.last_error = Some(why);
                status.consecutive_fail += 1;
                status.consecutive_ok = 0;
            }
        }
        let mut reachable = 0;
        for (h, _) in &self.targets {
            match h.health().up() {
                None => return None,
                Some(true) => reachable += 1,
                Some(false) => {}
            }
        }
        let reachable = count(reachable);
        if self.reported == Some(reachable) {
            return None;
        }
        self.reported = Some(reachable);
        Some(Event::Connectivity { reachable, total: count(self.targets.len()) })
    }
}

// ---- probes (I/O) ----

/// Sends one echo request to `addr` and waits up to `timeout` for the matching reply.
async fn icmp_echo(addr: IpAddr, ident: u16, seq: u16, timeout: Duration) -> Result<Duration, String> {
    let v6 = addr.is_ipv6();
    let (domain, protocol) = if v6 { (Domain::IPV6, Protocol::ICMPV6) } else { (Domain::IPV4, Protocol::ICMPV4) };
    let open = || -> io::Result<AsyncFd<Socket>> {
        let socket = Socket::new(domain, Type::RAW, Some(protocol))?;
        socket.set_nonblocking(true)?;
        // A connected raw socket only receives packets from that address.
        socket.connect(&SockAddr::from(SocketAddr::new(addr, 0)))?;
        // SAFETY: the Socket owns its descriptor and keeps it open, unchanged, for as long as
        // the AsyncFd that owns it.
        Ok(unsafe { AsyncFd::register(socket) }?)
    };
    let socket = open().map_err(|e| {
        if e.raw_os_error() == Some(libc::EPERM) {
            format!("raw ICMP socket: {e} (needs root or CAP_NET_RAW)")
        } else {
            format!("raw ICMP socket: {e}")
        }
    })?;
    let sent = Instant::now();
    socket.get_ref().send(&echo_request(v6, ident, seq, PAYLOAD)).map_err(|e| format!("sending echo request: {e}"))?;
    let wait = async {
        let mut buf = [0u8; 1500];
        loop {
            let mut guard = socket.readable().await?;
            match guard.try_io(|s| s.get_ref().read(&mut buf)) {
                Ok(Ok(n)) => {
                    // Other pingers' replies and other ICMP messages come here too.
                    if buf.get(..n).and_then(|p| parse_echo_reply(p, v6)) == Some((ident, seq)) {
                        return Ok::<Duration, io::Error>(sent.elapsed());
                    }
                }
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => {}
            }
        }
    };
    match tokio::time::timeout(timeout, wait).await {
        Ok(Ok(rtt)) => Ok(rtt),
        Ok(Err(e)) => Err(format!("receiving echo reply: {e}")),
        Err(_) => Err(format!("no echo reply within {} ms", timeout.as_millis())),
    }
}

async fn tcp_connect(addr: SocketAddr, timeout: Duration) -> Result<Duration, String> {
    let start = Instant::now();
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(_stream)) => Ok(start.elapsed()),
        Ok(Err(e)) => Err(format!("connect: {e}")),
        Err(_) => Err(format!("no connection within {} ms", timeout.as_millis())),
    }
}

/// One probe of `target`: the round trip, or why it failed.
pub async fn probe(target: &PingTarget, ident: u16, seq: u16, timeout: Duration) -> Result<Duration, String> {
    match target {
        PingTarget::Icmp { addr } => icmp_echo(*addr, ident, seq, timeout).await,
        PingTarget::Tcp { addr } => tcp_connect(*addr, timeout).await,
    }
}

/// The running monitor. Cheap to clone: clones share the status.
#[derive(Clone)]
pub struct PingMonitor {
    config: Arc<PingConfig>,
    tally: Arc<Mutex<Tally>>,
}

impl PingMonitor {
    pub fn new(config: PingConfig) -> Self {
        let tally = Arc::new(Mutex::new(Tally::new(&config)));
        PingMonitor { config: Arc::new(config), tally }
    }

    /// A snapshot of every target, in config order.
    pub fn status(&self) -> Vec<TargetStatus> {
        self.lock().targets.iter().map(|(_, s)| s.clone()).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tally> {
        self.tally.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Probes until `events` is closed. With no targets it reports `0 of 0` once and returns.
    pub async fn run(&self, events: mpsc::Sender<Event>) {
        let total = self.config.targets.len();
        if total == 0 {
            let _ = events.send(Event::Connectivity { reachable: 0, total: 0 }).await;
            return;
        }
        // One identifier per monitor: raw sockets see every echo reply on the host.
        let ident: u16 = rand::random();
        let (results_tx, mut results) = mpsc::channel(total * 2);
        let mut probers = JoinSet::new();
        for (index, target) in self.config.targets.iter().cloned().enumerate() {
            let (interval, timeout) = (self.config.interval, self.config.timeout);
            let results_tx = results_tx.clone();
            probers.spawn(async move {
                let mut ticks = tokio::time::interval(interval);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut seq: u16 = 0;
                loop {
                    ticks.tick().await;
                    seq = seq.wrapping_add(1);
                    let outcome = probe(&target, ident, seq, timeout).await;
                    if results_tx.send((index, outcome)).await.is_err() {
                        return;
                    }
                }
            });
        }
        loop {
            let (index, outcome) = tokio::select! {
                received = results.recv() => match received {
                    Some(r) => r,
                    None => return,
                },
                () = events.closed() => return,
            };
            let (event, verdict) = {
                let mut tally = self.lock();
                let before = tally.targets.get(index).and_then(|(_, s)| s.up);
                let event = tally.record(index, outcome);
                let after = tally.targets.get(index).and_then(|(_, s)| s.up);
                (event, (before != after).then_some(after))
            };
            if let Some(up) = verdict {
                tracing::info!(target = %self.config.targets[index], ?up, "ping target verdict changed");
            }
            if let Some(event) = event {
                if events.send(event).await.is_err() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_matches_rfc1071_example() {
        // RFC 1071 §3: the words 0001 f203 f4f5 f6f7 sum to ddf2, complemented 220d.
        assert_eq!(checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]), 0x220d);
        // An odd byte is padded on the right.
        assert_eq!(checksum(&[0x01]), !0x0100);
    }

    #[test]
    fn echo_request_v4_is_byte_exact_and_self_checks() {
        let p = echo_request(false, 0x1234, 7, b"ab");
        assert_eq!(p, vec![8, 0, 0x84, 0x62, 0x12, 0x34, 0x00, 0x07, b'a', b'b']);
        assert_eq!(checksum(&p), 0);
    }

    #[test]
    fn echo_request_v6_leaves_checksum_to_the_kernel() {
        assert_eq!(echo_request(true, 0x1234, 7, b""), vec![128, 0, 0, 0, 0x12, 0x34, 0x00, 0x07]);
    }

    fn ipv4_packet(icmp: &[u8]) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, IPPROTO_ICMP, 0, 0, 198, 51, 100, 1, 198, 51, 100, 11];
        p.extend_from_slice(icmp);
        p
    }

    fn reply_v4(ident: u16, seq: u16) -> Vec<u8> {
        let mut icmp = echo_request(false, ident, seq, PAYLOAD);
        icmp[0] = ECHO_REPLY_V4;
        icmp[2..4].copy_from_slice(&[0, 0]);
        let sum = checksum(&icmp);
        icmp[2..4].copy_from_slice(&sum.to_be_bytes());
        icmp
    }

    #[test]
    fn parses_ipv4_echo_reply_after_the_ip_header() {
        assert_eq!(parse_echo_reply(&ipv4_packet(&reply_v4(0xbeef, 3)), false), Some((0xbeef, 3)));
        // Options make the header longer (IHL 6).
        let mut with_options = ipv4_packet(&[]);
        with_options[0] = 0x46;
        with_options.extend_from_slice(&[1, 1, 1, 0]);
        with_options.extend_from_slice(&reply_v4(1, 2));
        assert_eq!(parse_echo_reply(&with_options, false), Some((1, 2)));
    }

    #[test]
    fn ignores_what_is_not_a_good_ipv4_echo_reply() {
        // Our own request looped back.
        assert_eq!(parse_echo_reply(&ipv4_packet(&echo_request(false, 1, 2, PAYLOAD)), false), None);
        let mut corrupt = reply_v4(1, 2);
        corrupt[9] ^= 0xff;
        assert_eq!(parse_echo_reply(&ipv4_packet(&corrupt), false), None);
        let mut not_icmp = ipv4_packet(&reply_v4(1, 2));
        not_icmp[9] = 17;
        assert_eq!(parse_echo_reply(&not_icmp, false), None);
        assert_eq!(parse_echo_reply(&ipv4_packet(&reply_v4(1, 2))[..24], false), None);
        assert_eq!(parse_echo_reply(&[], false), None);
    }

    #[test]
    fn parses_icmpv6_echo_reply_without_ip_header() {
        assert_eq!(parse_echo_reply(&[129, 0, 0xab, 0xcd, 0, 9, 0, 4], true), Some((9, 4)));
        assert_eq!(parse_echo_reply(&[128, 0, 0xab, 0xcd, 0, 9, 0, 4], true), None);
        assert_eq!(parse_echo_reply(&[129, 0, 0xab, 0xcd, 0, 9, 0], true), None);
    }

    fn config(targets: usize, rise: u32, fall: u32) -> PingConfig {
        PingConfig {
            targets: (0..targets)
                .map(|i| PingTarget::Icmp { addr: IpAddr::from([198, 51, 100, 1 + i as u8]) })
                .collect(),
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(500),
            rise,
            fall,
            on_isolation: Default::default(),
        }
    }

    #[test]
    fn tally_reports_once_every_target_has_a_verdict_then_on_change() {
        let mut t = Tally::new(&config(2, 1, 2));
        let ok = || Ok(Duration::from_millis(3));
        let bad = || Err("timeout".to_string());
        assert_eq!(t.record(0, ok()), None, "target 1 has no verdict yet");
        assert_eq!(t.record(0, ok()), None);
        assert_eq!(t.record(1, bad()), None, "one failure is no verdict with fall 2");
        assert_eq!(t.record(1, bad()), Some(Event::Connectivity { reachable: 1, total: 2 }));
        assert_eq!(t.record(1, bad()), None, "same count");
        assert_eq!(t.record(0, bad()), None, "fall 2 not reached");
        assert_eq!(t.record(0, bad()), Some(Event::Connectivity { reachable: 0, total: 2 }));
        assert_eq!(t.record(1, ok()), Some(Event::Connectivity { reachable: 1, total: 2 }));
        assert_eq!(t.record(5, ok()), None, "unknown index is ignored");

        let s = &t.targets[0].1;
        assert_eq!(s.target, "198.51.100.1");
        assert_eq!((s.up, s.consecutive_ok, s.consecutive_fail), (Some(false), 0, 2));
        assert_eq!(s.last_error.as_deref(), Some("timeout"));
        assert_eq!(t.targets[1].1.last_rtt_ms, Some(3.0));
    }

    #[tokio::test]
    async fn tcp_target_up_when_listening_down_when_refused() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let open = listener.local_addr().unwrap();
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let timeout = Duration::from_secs(5);
        assert!(probe(&PingTarget::Tcp { addr: open }, 0, 0, timeout).await.is_ok());
        let err = probe(&PingTarget::Tcp { addr: closed }, 0, 0, timeout).await.unwrap_err();
        assert!(err.contains("connect"), "{err}");
    }

    #[tokio::test]
    async fn monitor_reports_initial_count_and_status() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let open = listener.local_addr().unwrap();
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let monitor = PingMonitor::new(PingConfig {
            targets: vec![PingTarget::Tcp { addr: open }, PingTarget::Tcp { addr: closed }],
            interval: Duration::from_millis(50),
            timeout: Duration::from_secs(5),
            rise: 2,
            fall: 2,
            on_isolation: Default::default(),
        });
        let (tx, mut rx) = mpsc::channel(4);
        let task = tokio::spawn({
            let monitor = monitor.clone();
            async move { monitor.run(tx).await }
        });
        let first = tokio::time::timeout(Duration::from_secs(20), rx.recv()).await.unwrap();
        assert_eq!(first, Some(Event::Connectivity { reachable: 1, total: 2 }));
        let status = monitor.status();
        assert_eq!(status[0].up, Some(true));
        assert!(status[0].last_rtt_ms.is_some());
        assert_eq!(status[1].up, Some(false));
        assert_eq!(status[1].target, format!("tcp:{closed}"));
        // Closing the channel ends the monitor.
        drop(rx);
        tokio::time::timeout(Duration::from_secs(20), task).await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn monitor_without_targets_reports_zero_of_zero() {
        let monitor = PingMonitor::new(config(0, 1, 1));
        let (tx, mut rx) = mpsc::channel(1);
        monitor.run(tx).await;
        assert_eq!(rx.recv().await, Some(Event::Connectivity { reachable: 0, total: 0 }));
    }

    mod in_namespaces {
        use super::*;
        use pbxha_lab::testns::{prerequisites_met, TestNet};

        fn icmp(addr: [u8; 4]) -> PingTarget {
            PingTarget::Icmp { addr: IpAddr::from(addr) }
        }

        #[test]
        fn icmp_echo_answered_by_a_host_and_not_by_an_empty_address() {
            if !prerequisites_met("icmp_echo_answered_by_a_host_and_not_by_an_empty_address") {
                return;
            }
            let net = TestNet::new("pingicmp", &[("a", "198.51.100.11/24"), ("b", "198.51.100.12/24")]).unwrap();
            let (reachable, empty) = net
                .run_in("a", || async {
                    let timeout = Duration::from_secs(2);
                    let reachable = probe(&icmp([198, 51, 100, 12]), 0x5042, 1, timeout).await;
                    // Nobody has .99: ARP goes unanswered and no echo reply can come.
                    let empty = probe(&icmp([198, 51, 100, 99]), 0x5042, 2, timeout).await;
                    (reachable, empty)
                })
                .unwrap();
            let rtt = reachable.unwrap();
            assert!(rtt < Duration::from_secs(2), "{rtt:?}");
            let why = empty.unwrap_err();
            assert!(why.contains("no echo reply"), "{why}");
        }

        #[test]
        fn monitor_counts_icmp_targets_in_a_namespace() {
            if !prerequisites_met("monitor_counts_icmp_targets_in_a_namespace") {
                return;
            }
            let net = TestNet::new("pingmon", &[("a", "198.51.100.11/24"), ("b", "198.51.100.12/24")]).unwrap();
            let (event, status) = net
                .run_in("a", || async {
                    let monitor = PingMonitor::new(PingConfig {
                        targets: vec![icmp([198, 51, 100, 12]), icmp([198, 51, 100, 99])],
                        interval: Duration::from_millis(200),
                        timeout: Duration::from_secs(1),
                        rise: 1,
                        fall: 1,
                        on_isolation: Default::default(),
                    });
                    let (tx, mut rx) = mpsc::channel(4);
                    let running = monitor.clone();
                    let task = tokio::spawn(async move { running.run(tx).await });
                    let event = tokio::time::timeout(Duration::from_secs(20), rx.recv()).await;
                    task.abort();
                    (event, monitor.status())
                })
                .unwrap();
            assert_eq!(event, Ok(Some(Event::Connectivity { reachable: 1, total: 2 })));
            assert_eq!(status[0].up, Some(true));
            assert_eq!(status[1].up, Some(false));
        }
    }
}
