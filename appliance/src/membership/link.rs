//! The heartbeat links on the wire: one UDP socket per configured link, a sender that signs
//! and sends the local summary on every link, and one receive task per link that decodes,
//! tracks and forwards the peer's heartbeats to the fsm's event channel.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};

use super::ask::{self, Answer, Ask, Body, Message, Take, Taken};
use super::authkey::AuthKey;
use super::packet::{self, Header, PACKET_LEN};
use super::tracker::{DropCounters, Tracker, Verdict};
use crate::config::{LinkConfig, LinkMode, NodeConfig};
use crate::fsm::Event;
use crate::summary::NodeSummary;
use crate::Error;

/// Receive buffer: larger than any valid packet or ask, so an oversized one is seen as such
/// rather than silently cut to a valid length by the kernel.
const RECV_BUF: usize = 2 * ask::MAX_BODY + 4 * PACKET_LEN;

/// Pause after a receive error so a persistent error cannot spin a core.
const RECV_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// Everything [`Links::open`] needs.
#[derive(Clone, Copy, Debug)]
pub struct LinkSetup<'a> {
    pub links: &'a [LinkConfig],
    pub cluster_id: u32,
    pub local: &'a NodeConfig,
    pub peer: &'a NodeConfig,
    /// This start's boot counter ([`super::boot::advance`]), stored before the first
    /// heartbeat; keep it when reopening links on reload, or the peer sees a restart.
    pub boot: u64,
    pub key: &'a AuthKey,
    /// A gap longer than this between two heartbeats on a link is logged as late.
    pub warntime: Duration,
    /// An echo of a heartbeat of ours sent longer ago than this does not count as the peer
    /// hearing us.
    pub deadtime: Duration,
}

/// Counters for one link, as `pbxha status` shows them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct LinkStats {
    pub name: String,
    /// Milliseconds since the last accepted heartbeat; none before the first.
    pub last_seen_ms: Option<u64>,
    pub accepted: u64,
    /// Sends that failed (interface down, no route); never fatal.
    pub send_errors: u64,
    pub drops: DropCounters,
}

/// A snapshot of every link's counters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinksStats {
    pub links: Vec<LinkStats>,
}

/// The sending side of one link.
struct Outgoing {
    name: String,
    /// A duplicate of the receive task's socket, used directly: tokio's `try_send_to` refuses
    /// until the reactor has seen the socket writable, and a UDP send does not wait anyway.
    socket: std::net::UdpSocket,
    dest: SocketAddr,
    /// Last sequence sent; sequences are per link so a lost link does not look like loss on
    /// the others.
    sequence: AtomicU64,
    send_errors: AtomicU64,
    /// Whether the last send failed, so a dead link logs once rather than every interval.
    failing: AtomicBool,
    /// When each recent sequence left, for dating the peer's echo of it.
    sent: Arc<SentLog>,
}

/// One link's recent sends: (sequence, when), the newest last. Bounded: an echo older than
/// every entry is older than any deadtime worth keeping (far more than a deadtime of
/// heartbeats and announcements).
#[derive(Default)]
struct SentLog(Mutex<std::collections::VecDeque<(u64, std::time::Instant)>>);

const SENT_LOG_LEN: usize = 512;

impl SentLog {
    fn record(&self, sequence: u64, at: std::time::Instant) {
        let mut log = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if log.len() == SENT_LOG_LEN {
            log.pop_front();
        }
        log.push_back((sequence, at));
    }

    /// When `sequence` was sent, if it is still remembered.
    fn sent_at(&self, sequence: u64) -> Option<std::time::Instant> {
        let log = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        log.iter().rev().find(|(s, _)| *s == sequence).map(|(_, t)| *t)
    }
}

/// Open heartbeat links. Their receive tasks end on the daemon's stop (see `crate::stopped`),
/// which closes the receiving sockets; dropping it closes the sending ones.
pub struct Links {
    outgoing: Vec<Outgoing>,
    asker: Arc<Asker>,
    /// The peer's asks, until the daemon takes the receiver ([`Links::incoming_asks`]).
    incoming: Option<mpsc::Receiver<IncomingAsk>>,
    tracker: Arc<Mutex<Tracker>>,
    cluster_id: u32,
    node_id: u16,
    boot: u64,
    key: AuthKey,
}

/// How one link's socket is set up, worked out from the config alone.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Plan {
    bind: SocketAddr,
    dest: SocketAddr,
    broadcast: bool,
    /// Multicast group to join and the local address whose interface joins it.
    join: Option<(IpAddr, IpAddr)>,
}

fn plan(link: &LinkConfig, local: &str, peer: &str) -> Result<Plan, String> {
    let address_of = |node: &str| {
        link.addresses.get(node).copied().ok_or_else(|| format!("no address for node `{node}` on this link"))
    };
    let here = address_of(local)?;
    let port = link.port;
    Ok(match link.mode {
        LinkMode::Ucast => Plan {
            bind: SocketAddr::new(here.addr, port),
            dest: SocketAddr::new(address_of(peer)?.addr, port),
            broadcast: false,
            join: None,
        },
        LinkMode::Bcast => {
            let Some(broadcast) = here.broadcast() else {
                return Err(format!("bcast needs an IPv4 address, {here} is not one"));
            };
            // Broadcasts are only delivered to sockets bound to the wildcard (or the
            // broadcast address); SO_BINDTODEVICE keeps other interfaces out.
            Plan {
                bind: SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), port),
                dest: SocketAddr::new(broadcast.into(), port),
                broadcast: true,
                join: None,
            }
        }
        LinkMode::Mcast => {
            let group = link.group.ok_or("mcast needs a `group`")?;
            if !group.is_multicast() || group.is_ipv4() != here.addr.is_ipv4() {
                return Err(format!("group {group} is not a multicast address of the same family as {here}"));
            }
            // Bound to the group so unicast and other groups on this port stay out.
            Plan {
                bind: SocketAddr::new(group, port),
                dest: SocketAddr::new(group, port),
                broadcast: false,
                join: Some((group, here.addr)),
            }
        }
    })
}

fn open_socket(plan: &Plan, interface: Option<&str>) -> Result<std::net::UdpSocket, String> {
    let socket = Socket::new(Domain::for_address(plan.bind), Type::DGRAM, Some(Protocol::UDP))
        .map_err(|e| format!("cannot create a UDP socket: {e}"))?;
    // Both nodes' links may share a port on one host (the lab) and a restarted daemon must
    // not wait for the old socket.
    socket.set_reuse_address(true).map_err(|e| format!("SO_REUSEADDR: {e}"))?;
    if let Some(dev) = interface {
        socket.bind_device(Some(dev.as_bytes())).map_err(|e| format!("SO_BINDTODEVICE {dev}: {e}"))?;
    }
    if plan.broadcast {
        socket.set_broadcast(true).map_err(|e| format!("SO_BROADCAST: {e}"))?;
    }
    socket.bind(&plan.bind.into()).map_err(|e| format!("cannot bind {}: {e}", plan.bind))?;
    match plan.join {
        Some((IpAddr::V4(group), IpAddr::V4(local))) => {
            socket.join_multicast_v4(&group, &local).map_err(|e| format!("cannot join {group} on {local}: {e}"))?;
            socket.set_multicast_if_v4(&local).map_err(|e| format!("IP_MULTICAST_IF {local}: {e}"))?;
            // Our own packets would only be ignored on arrival.
            socket.set_multicast_loop_v4(false).map_err(|e| format!("IP_MULTICAST_LOOP: {e}"))?;
        }
        Some((IpAddr::V6(group), _)) => join_v6(&socket, group, interface)?,
        Some((IpAddr::V4(_), IpAddr::V6(_))) | None => {}
    }
    socket.set_nonblocking(true).map_err(|e| format!("O_NONBLOCK: {e}"))?;
    Ok(socket.into())
}

fn join_v6(socket: &Socket, group: Ipv6Addr, interface: Option<&str>) -> Result<(), String> {
    // IPv6 names the interface by index; 0 lets the kernel pick by route.
    let index = match interface {
        Some(dev) => nix::net::if_::if_nametoindex(dev).map_err(|e| format!("interface {dev}: {e}"))?,
        None => 0,
    };
    socket.join_multicast_v6(&group, index).map_err(|e| format!("cannot join {group}: {e}"))?;
    socket.set_multicast_if_v6(index).map_err(|e| format!("IPV6_MULTICAST_IF: {e}"))?;
    socket.set_multicast_loop_v6(false).map_err(|e| format!("IPV6_MULTICAST_LOOP: {e}"))
}

fn lock(tracker: &Mutex<Tracker>) -> MutexGuard<'_, Tracker> {
    // The tracker never panics while locked, and its counters stay usable if it did.
    tracker.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Links {
    /// Opens every link and starts its receive task, which sends
    /// [`Event::Heartbeat`] for each accepted packet into `events` until `stop`. Must be
    /// called from within a Tokio runtime. Fails naming the first link that cannot be opened.
    pub fn open(
        setup: &LinkSetup<'_>,
        events: mpsc::Sender<Event>,
        stop: &watch::Receiver<bool>,
    ) -> Result<Links, Error> {
        let tracker = Arc::new(Mutex::new(Tracker::new(setup.local.id, setup.boot, setup.peer.id, setup.links.len())));
        if setup.links.len() > usize::from(u8::MAX) + 1 {
            return Err(Error::Link {
                link: "*".into(),
                message: "at most 256 links fit the packet's link index".into(),
            });
        }
        // Every socket first: the asker sends on all of them and each receive task holds it.
        let mut opened = Vec::new();
        for link in setup.links {
            let fail = |message: String| Error::Link { link: link.name.clone(), message };
            let plan = plan(link, &setup.local.name, &setup.peer.name).map_err(fail)?;
            let std_socket = open_socket(&plan, link.interface.as_deref()).map_err(fail)?;
            let dup = || std_socket.try_clone().map_err(|e| fail(format!("cannot duplicate the socket: {e}")));
            let (send_socket, ask_socket, reply_socket) = (dup()?, dup()?, dup()?);
            let socket =
                UdpSocket::from_std(std_socket).map_err(|e| fail(format!("cannot register the socket: {e}")))?;
            tracing::info!(link = %link.name, bind = %plan.bind, dest = %plan.dest, "heartbeat link open");
            opened.push((link.name.clone(), plan.dest, socket, send_socket, ask_socket, reply_socket));
        }
        let mut ask_sockets = Vec::new();
        let opened: Vec<_> = opened
            .into_iter()
            .map(|(name, dest, socket, send_socket, ask_socket, reply_socket)| {
                ask_sockets.push((ask_socket, dest));
                (name, dest, socket, send_socket, reply_socket)
            })
            .collect();
        let asker = Arc::new(Asker {
            sockets: ask_sockets,
            cluster_id: setup.cluster_id,
            node_id: setup.local.id,
            boot: setup.boot,
            key: setup.key.clone(),
            tracker: tracker.clone(),
            pending: Default::default(),
            taken: Default::default(),
            next_id: AtomicU64::new(0),
        });
        let (asks_tx, asks_rx) = mpsc::channel(8);
        let mut links = Links {
            outgoing: Vec::new(),
            asker: asker.clone(),
            incoming: Some(asks_rx),
            tracker: tracker.clone(),
            cluster_id: setup.cluster_id,
            node_id: setup.local.id,
            boot: setup.boot,
            key: setup.key.clone(),
        };
        for (index, (name, dest, socket, send_socket, reply_socket)) in opened.into_iter().enumerate() {
            let sent = Arc::new(SentLog::default());
            let receiver = Receiver {
                link: index,
                name: name.clone(),
                socket,
                reply_socket: Arc::new(reply_socket),
                key: setup.key.clone(),
                cluster_id: setup.cluster_id,
                warntime: setup.warntime,
                deadtime: setup.deadtime,
                boot: setup.boot,
                sent: sent.clone(),
                tracker: tracker.clone(),
                events: events.clone(),
                asks: asks_tx.clone(),
                asker: asker.clone(),
            };
            tokio::spawn(receiver.run(stop.clone()));
            links.outgoing.push(Outgoing {
                name,
                socket: send_socket,
                dest,
                sequence: AtomicU64::new(0),
                send_errors: AtomicU64::new(0),
                failing: AtomicBool::new(false),
                sent,
            });
        }
        Ok(links)
    }

    /// The peer's asks, each to be answered with [`IncomingAsk::answer`]; `None` after the
    /// first call.
    pub fn incoming_asks(&mut self) -> Option<mpsc::Receiver<IncomingAsk>> {
        self.incoming.take()
    }

    /// The sending side of asks, for a task that waits on the peer's answer.
    pub fn asker(&self) -> Arc<Asker> {
        self.asker.clone()
    }

    /// Sends `summary` once on every link, each packet with that link's next sequence. A
    /// failure on one link is logged (once per outage) and counted, never returned: the other
    /// links carry on.
    pub fn send(&self, summary: &NodeSummary) {
        let now = tokio::time::Instant::now().into_std();
        for (index, out) in self.outgoing.iter().enumerate() {
            let header = Header {
                cluster_id: self.cluster_id,
                node_id: self.node_id,
                // Open refuses more links than fit in a u8.
                link: index as u8,
                boot: self.boot,
                sequence: out.sequence.fetch_add(1, Ordering::Relaxed) + 1,
                echo: lock(&self.tracker).echo(index),
            };
            out.sent.record(header.sequence, now);
            let bytes = packet::encode(&header, summary, self.key.as_bytes());
            match out.socket.send_to(&bytes, out.dest) {
                Ok(_) => {
                    if out.failing.swap(false, Ordering::Relaxed) {
                        tracing::info!(link = %out.name, dest = %out.dest, "heartbeat sends work again");
                    }
                }
                Err(e) => {
                    out.send_errors.fetch_add(1, Ordering::Relaxed);
                    if !out.failing.swap(true, Ordering::Relaxed) {
                        tracing::warn!(link = %out.name, dest = %out.dest, error = %e, "cannot send heartbeat");
                    }
                }
            }
        }
    }

    /// Every link's counters now.
    pub fn stats(&self) -> LinksStats {
        // The same clock as the receive tasks, so paused test time stays consistent.
        let now = tokio::time::Instant::now().into_std();
        let tracker = lock(&self.tracker);
        let links = self
            .outgoing
            .iter()
            .zip(tracker.links())
            .map(|(out, record)| LinkStats {
                name: out.name.clone(),
                last_seen_ms: record
                    .last_seen
                    .map(|t| u64::try_from(now.saturating_duration_since(t).as_millis()).unwrap_or(u64::MAX)),
                accepted: record.accepted,
                send_errors: out.send_errors.load(Ordering::Relaxed),
                drops: record.drops,
            })
            .collect();
        LinksStats { links }
    }
}

/// The receiving side of one link, run as its own task.
struct Receiver {
    link: usize,
    name: String,
    socket: UdpSocket,
    key: AuthKey,
    cluster_id: u32,
    warntime: Duration,
    deadtime: Duration,
    /// Our boot counter, for telling an echo of this boot from one of an earlier start.
    boot: u64,
    sent: Arc<SentLog>,
    tracker: Arc<Mutex<Tracker>>,
    events: mpsc::Sender<Event>,
    asks: mpsc::Sender<IncomingAsk>,
    asker: Arc<Asker>,
    /// The same socket, for answering an ask from another task.
    reply_socket: Arc<std::net::UdpSocket>,
}

impl Receiver {
    /// An ask rather than a heartbeat: a request goes to the daemon (or its answer again to
    /// a copy), an answer to the task waiting on it.
    async fn on_ask(&self, bytes: &[u8], from: SocketAddr) {
        let asker = &self.asker;
        let message = match ask::decode(bytes, self.key.as_bytes(), self.cluster_id) {
            Ok(m) if m.node_id == lock(&self.tracker).peer_node() => m,
            Ok(_) => return lock(&self.tracker).count_drop(self.link, super::Drop::UnknownNode),
            Err(reason) => {
                tracing::debug!(link = %self.name, %from, %reason, "ask dropped");
                return lock(&self.tracker).count_drop(self.link, reason);
            }
        };
        match &message.body {
            Body::Answer(answer) => {
                let waiting = asker.pending.lock().unwrap_or_else(PoisonError::into_inner).remove(&message.id);
                if let Some(waiting) = waiting {
                    let _ = waiting.send(answer.clone());
                }
            }
            Body::Request(request) => {
                let take = asker.taken.lock().unwrap_or_else(PoisonError::into_inner).take(&message, self.boot, from);
                let reply = Reply {
                    asker: asker.clone(),
                    socket: self.reply_socket.clone(),
                    to: from,
                    boot: message.boot,
                    id: message.id,
                };
                match take {
                    Take::New => {
                        let _ = self.asks.send(IncomingAsk { ask: request.clone(), reply }).await;
                    }
                    Take::Again(Some(answer)) => reply.send(&answer),
                    Take::Again(None) | Take::Copy => {}
                    Take::Replayed => lock(&self.tracker).count_drop(self.link, super::Drop::Replayed),
                }
            }
        }
    }

    async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut buf = vec![0u8; RECV_BUF];
        // The last earlier boot warned about, so a stream of its packets logs once.
        let mut warned_boot = None;
        loop {
            let received = tokio::select! {
                received = self.socket.recv_from(&mut buf) => received,
                () = crate::stopped(&mut stop) => return,
            };
            let (len, from) = match received {
                Ok(got) => got,
                Err(e) => {
                    tracing::debug!(link = %self.name, error = %e, "heartbeat receive error");
                    tokio::time::sleep(RECV_ERROR_PAUSE).await;
                    continue;
                }
            };
            if ask::is_ask(&buf[..len]) {
                self.on_ask(&buf[..len], from).await;
                continue;
            }
            let now = tokio::time::Instant::now().into_std();
            let packet = match packet::decode(&buf[..len], self.key.as_bytes(), self.cluster_id) {
                Ok(packet) => packet,
                Err(reason) => {
                    lock(&self.tracker).count_drop(self.link, reason);
                    tracing::debug!(link = %self.name, %from, %reason, len, "heartbeat dropped");
                    continue;
                }
            };
            // Bound first so the lock is released before the await below.
            let verdict = lock(&self.tracker).check(self.link, &packet.header, now);
            match verdict {
                Verdict::Accepted { gap } => {
                    if let Some(gap) = gap.filter(|g| *g > self.warntime) {
                        tracing::warn!(
                            link = %self.name,
                            gap_ms = gap.as_millis() as u64,
                            warntime_ms = self.warntime.as_millis() as u64,
                            "late heartbeat"
                        );
                    }
                    let echo = packet.header.echo;
                    let hears_us = echo.boot == self.boot
                        && self
                            .sent
                            .sent_at(echo.sequence)
                            .is_some_and(|t| now.saturating_duration_since(t) <= self.deadtime);
                    let event = Event::Heartbeat { link: self.link, summary: packet.summary, hears_us };
                    if self.events.send(event).await.is_err() {
                        // The daemon loop is gone; nobody is listening.
                        return;
                    }
                }
                Verdict::EarlierBoot { boot, newest } => {
                    if warned_boot.replace(boot) != Some(boot) {
                        tracing::warn!(
                            link = %self.name,
                            %from,
                            boot,
                            newest,
                            "dropping the peer's heartbeats of boot {boot} as replayed: boot {newest} was already heard \
                             from it. If the peer lost its state directory (reinstalled) and its clock is behind, it \
                             will not be heard until it restarts with its clock right, or with a number above {newest} \
                             written into its boot counter file (state-db path + `.boot-counter`), or until this \
                             daemon restarts"
                        );
                    }
                }
                Verdict::Dropped(reason) => {
                    tracing::debug!(link = %self.name, %from, %reason, len, "heartbeat dropped");
                }
                Verdict::Own => {}
            }
        }
    }
}

/// Sends asks to the peer and takes its answers; shared by the receive tasks and whoever
/// waits on an answer.
pub struct Asker {
    /// Each link's socket and the peer's address on it.
    sockets: Vec<(std::net::UdpSocket, SocketAddr)>,
    cluster_id: u32,
    node_id: u16,
    boot: u64,
    key: AuthKey,
    tracker: Arc<Mutex<Tracker>>,
    pending: Mutex<std::collections::HashMap<u64, tokio::sync::oneshot::Sender<Answer>>>,
    taken: Mutex<Taken>,
    next_id: AtomicU64,
}

impl Asker {
    /// Asks the peer, on every link at once, `tries` times `wait` apart until it answers.
    pub async fn ask(&self, ask: &Ask, tries: u32, wait: Duration) -> Result<Answer, String> {
        let responder_boot = lock(&self.tracker).peer_boot().ok_or("the peer has not been heard since this start")?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let (tx, mut rx) = tokio::sync::oneshot::channel();
        self.pending.lock().unwrap_or_else(PoisonError::into_inner).insert(id, tx);
        let message =
            Message { node_id: self.node_id, boot: self.boot, id, responder_boot, body: Body::Request(ask.clone()) };
        let bytes = ask::encode(self.cluster_id, &message, self.key.as_bytes());
        for _ in 0..tries.max(1) {
            for (socket, dest) in &self.sockets {
                // A link that is down fails its send; the others carry the ask.
                let _ = socket.send_to(&bytes, dest);
            }
            if let Ok(Ok(answer)) = tokio::time::timeout(wait, &mut rx).await {
                return Ok(answer);
            }
        }
        self.pending.lock().unwrap_or_else(PoisonError::into_inner).remove(&id);
        Err(format!("the peer did not answer in {tries} tries, {} ms apart", wait.as_millis()))
    }
}

/// A request from the peer, on its way to the daemon.
pub struct IncomingAsk {
    pub ask: Ask,
    pub reply: Reply,
}

/// Where the answer to one request goes.
pub struct Reply {
    asker: Arc<Asker>,
    socket: Arc<std::net::UdpSocket>,
    to: SocketAddr,
    boot: u64,
    id: u64,
}

impl Reply {
    /// Sends `answer` and keeps it for a retry of the same request.
    pub fn answer(self, answer: Answer) {
        self.asker.taken.lock().unwrap_or_else(PoisonError::into_inner).answered(self.boot, self.id, &answer);
        self.send(&answer);
    }

    fn send(&self, answer: &Answer) {
        let message = Message {
            node_id: self.asker.node_id,
            boot: self.boot,
            id: self.id,
            responder_boot: self.asker.boot,
            body: Body::Answer(answer.clone()),
        };
        let bytes = ask::encode(self.asker.cluster_id, &message, self.asker.key.as_bytes());
        if let Err(e) = self.socket.send_to(&bytes, self.to) {
            tracing::debug!(to = %self.to, error = %e, "cannot send an ask's answer");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Instant;

    use super::*;
    use crate::config::Cidr;
    use crate::summary::{GroupPhase, Role};

    fn node(name: &str, id: u16) -> NodeConfig {
        NodeConfig { name: name.into(), id }
    }

    fn link(mode: LinkMode, port: u16, a: &str, b: &str, group: Option<IpAddr>) -> LinkConfig {
        let addresses =
            BTreeMap::from([("a".to_string(), a.parse().unwrap()), ("b".to_string(), b.parse::<Cidr>().unwrap())]);
        LinkConfig { name: "hb".into(), mode, interface: None, port, group, addresses }
    }

    #[test]
    fn ucast_binds_the_local_address_and_sends_to_the_peer() {
        let l = link(LinkMode::Ucast, 694, "203.0.113.1/24", "203.0.113.2/24", None);
        let p = plan(&l, "a", "b").unwrap();
        assert_eq!(p.bind, "203.0.113.1:694".parse().unwrap());
        assert_eq!(p.dest, "203.0.113.2:694".parse().unwrap());
        assert!(!p.broadcast && p.join.is_none());
        assert_eq!(plan(&l, "a", "c").unwrap_err(), "no address for node `c` on this link");
    }

    #[test]
    fn bcast_sends_to_the_subnet_broadcast() {
        let l = link(LinkMode::Bcast, 700, "198.51.100.17/28", "198.51.100.18/28", None);
        let p = plan(&l, "a", "b").unwrap();
        assert_eq!(p.bind, "0.0.0.0:700".parse().unwrap());
        assert_eq!(p.dest, "198.51.100.31:700".parse().unwrap());
        assert!(p.broadcast);
        let v6 = link(LinkMode::Bcast, 700, "2001:db8::1/64", "2001:db8::2/64", None);
        assert!(plan(&v6, "a", "b").unwrap_err().contains("IPv4"));
    }

    #[test]
    fn mcast_joins_the_group_on_the_local_address() {
        let group: IpAddr = "239.0.0.42".parse().unwrap();
        let l = link(LinkMode::Mcast, 694, "198.51.100.1/24", "198.51.100.2/24", Some(group));
        let p = plan(&l, "b", "a").unwrap();
        assert_eq!(p.dest, "239.0.0.42:694".parse().unwrap());
        assert_eq!(p.join, Some((group, "198.51.100.2".parse().unwrap())));
        let none = link(LinkMode::Mcast, 694, "198.51.100.1/24", "198.51.100.2/24", None);
        assert!(plan(&none, "a", "b").unwrap_err().contains("group"));
        let unicast =
            link(LinkMode::Mcast, 694, "198.51.100.1/24", "198.51.100.2/24", Some("198.51.100.9".parse().unwrap()));
        assert!(plan(&unicast, "a", "b").unwrap_err().contains("not a multicast address"));
    }

    const KEY: &[u8] = b"loopback-test-key-0123456789";
    const CLUSTER: u32 = 77;
    const BOOT_A: u64 = 1_790_000_000;
    const BOOT_B: u64 = 1_790_000_100;

    fn summary(role: Role) -> NodeSummary {
        NodeSummary::plain(role, GroupPhase::Stopped)
    }

    struct Node {
        links: Links,
        events: mpsc::Receiver<Event>,
        /// The daemon's stop: its receive tasks end when this is set or dropped.
        stop: watch::Sender<bool>,
    }

    fn open(
        cfg: &[LinkConfig],
        local: &NodeConfig,
        peer: &NodeConfig,
        boot: u64,
        key: &AuthKey,
    ) -> Result<Node, Error> {
        let (tx, events) = mpsc::channel(64);
        let setup = LinkSetup {
            links: cfg,
            cluster_id: CLUSTER,
            local,
            peer,
            boot,
            key,
            warntime: Duration::from_secs(5),
            deadtime: Duration::from_secs(10),
        };
        let (stop, stopped) = watch::channel(false);
        Ok(Node { links: Links::open(&setup, tx, &stopped)?, events, stop })
    }

    /// Two nodes on 127.0.0.1 and 127.0.0.2 sharing one port. The peer's port cannot be 0, so
    /// a free high port is looked for, bounded in attempts.
    fn open_pair() -> (LinkConfig, Node, Node) {
        let key = AuthKey::for_tests(KEY);
        let (a, b) = (node("a", 1), node("b", 2));
        let mut last_error = None;
        // Each call its own ports: SO_REUSEADDR would let two tests running at once bind the
        // same one, and a datagram for one test's node reach the other's.
        static CALLS: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
        let first = CALLS.fetch_add(20, Ordering::Relaxed);
        for attempt in first..first + 20 {
            let port = 40_000 + (std::process::id() as u16 % 10_000) + attempt * 97;
            let cfg = vec![link(LinkMode::Ucast, port, "127.0.0.1/8", "127.0.0.2/8", None)];
            match (open(&cfg, &a, &b, BOOT_A, &key), open(&cfg, &b, &a, BOOT_B, &key)) {
                (Ok(na), Ok(nb)) => return (cfg.into_iter().next().unwrap(), na, nb),
                (Err(e), _) | (_, Err(e)) => last_error = Some(e),
            }
        }
        panic!("no free port pair on 127.0.0.1/127.0.0.2: {last_error:?}");
    }

    async fn next_heartbeat(node: &mut Node) -> NodeSummary {
        match tokio::time::timeout(Duration::from_secs(10), node.events.recv()).await {
            Ok(Some(Event::Heartbeat { link: 0, summary, .. })) => summary,
            other => panic!("expected a heartbeat on link 0, got {other:?}"),
        }
    }

    async fn next_echo(node: &mut Node) -> bool {
        match tokio::time::timeout(Duration::from_secs(10), node.events.recv()).await {
            Ok(Some(Event::Heartbeat { link: 0, hears_us, .. })) => hears_us,
            other => panic!("expected a heartbeat on link 0, got {other:?}"),
        }
    }

    /// Issue 10, item 3: each heartbeat echoes the last one heard from the peer on its
    /// link, so the receiver knows whether its own heartbeats arrive.
    #[tokio::test]
    async fn the_echo_tells_a_node_whether_the_peer_hears_it() {
        let (cfg, mut a, mut b) = open_pair();
        // b has heard nothing from a yet: its first heartbeat echoes nothing.
        b.links.send(&summary(Role::Secondary));
        assert!(!next_echo(&mut a).await, "b had not heard a");
        a.links.send(&summary(Role::Primary));
        assert!(next_echo(&mut b).await, "a echoes b's first heartbeat");
        b.links.send(&summary(Role::Secondary));
        assert!(next_echo(&mut a).await, "b echoes a's heartbeat");
        // An echo of a previous start of a is no echo of this one.
        let forged_boot = Header {
            cluster_id: CLUSTER,
            node_id: 2,
            link: 0,
            boot: BOOT_B,
            sequence: 1_000,
            echo: packet::Echo { boot: BOOT_A - 1, sequence: 1 },
        };
        let bytes = packet::encode(&forged_boot, &summary(Role::Secondary), KEY);
        let to_a = SocketAddr::new("127.0.0.1".parse().unwrap(), cfg.port);
        std::net::UdpSocket::bind("127.0.0.3:0").unwrap().send_to(&bytes, to_a).unwrap();
        assert!(!next_echo(&mut a).await, "an echo of an earlier boot");
    }

    #[tokio::test]
    async fn the_receive_tasks_end_on_the_daemons_stop() {
        let (_, a, mut b) = open_pair();
        a.links.send(&summary(Role::Primary));
        assert_eq!(next_heartbeat(&mut b).await, summary(Role::Primary));
        b.stop.send_replace(true);
        // The receive task held the events' only sender: the channel closes as it ends.
        let ended = tokio::time::timeout(Duration::from_secs(10), b.events.recv()).await;
        assert!(matches!(ended, Ok(None)), "{ended:?}");
    }

    #[tokio::test]
    async fn two_nodes_exchange_summaries_and_drop_attacks() {
        let (cfg, mut a, mut b) = open_pair();
        a.links.send(&summary(Role::Primary));
        b.links.send(&summary(Role::Secondary));
        assert_eq!(next_heartbeat(&mut b).await, summary(Role::Primary));
        assert_eq!(next_heartbeat(&mut a).await, summary(Role::Secondary));

        let attacker = std::net::UdpSocket::bind("127.0.0.3:0").unwrap();
        let target = SocketAddr::new("127.0.0.2".parse().unwrap(), cfg.port);
        let from_a_boot = |boot, sequence, node_id, key: &[u8]| {
            let h = Header { cluster_id: CLUSTER, node_id, link: 0, boot, sequence, echo: Default::default() };
            packet::encode(&h, &summary(Role::Fault), key)
        };
        let from_a = |sequence, node_id, key: &[u8]| from_a_boot(BOOT_A, sequence, node_id, key);
        let good_len = from_a(1, 1, KEY);
        let attacks: Vec<Vec<u8>> = vec![
            from_a(99, 1, b"not-the-shared-key-at-all"),
            from_a(1, 1, KEY), // a's first sequence again
            good_len[..20].to_vec(),
            vec![0x55; RECV_BUF + 100],
            from_a(99, 9, KEY),
            from_a(99, 2, KEY), // b's own id with a foreign boot: a replay of an earlier b
            from_a_boot(BOOT_A - 1, 99, 1, KEY), // an earlier boot of a, higher sequence
        ];
        for bytes in &attacks {
            attacker.send_to(bytes, target).unwrap();
        }
        // Still listening after the garbage: a's next heartbeat arrives.
        a.links.send(&summary(Role::Standby));
        assert_eq!(next_heartbeat(&mut b).await, summary(Role::Standby));

        let deadline = Instant::now() + Duration::from_secs(10);
        let stats = loop {
            let stats = b.links.stats();
            if stats.links[0].drops.total() == attacks.len() as u64 || Instant::now() > deadline {
                break stats;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let hb = &stats.links[0];
        assert_eq!(hb.name, "hb");
        assert_eq!(hb.accepted, 2);
        assert_eq!(hb.send_errors, 0);
        assert!(hb.last_seen_ms.is_some());
        let want =
            DropCounters { forged: 1, replayed: 2, truncated: 1, oversized: 1, unknown_node: 2, ..Default::default() };
        assert_eq!(hb.drops, want);
        assert!(b.events.try_recv().is_err(), "an attack got through");
        assert_eq!(a.links.stats().links[0].drops.total(), 0);
    }

    /// An ask crosses the link and is answered; a recorded request sent again from another
    /// address, one for another boot of the responder and an older one are replays, never
    /// handled twice nor answered.
    #[tokio::test]
    async fn an_ask_is_answered_once_and_a_recorded_one_is_not_handled_again() {
        let (cfg, mut a, mut b) = open_pair();
        let mut asks = b.links.incoming_asks().unwrap();
        assert!(b.links.incoming_asks().is_none());
        let err = a.links.asker().ask(&Ask::Fingerprint, 1, Duration::from_millis(50)).await.unwrap_err();
        assert!(err.contains("not been heard"), "{err}");
        b.links.send(&summary(Role::Secondary));
        next_heartbeat(&mut a).await;
        let handled = Arc::new(AtomicU64::new(0));
        let count = handled.clone();
        tokio::spawn(async move {
            while let Some(incoming) = asks.recv().await {
                let n = count.fetch_add(1, Ordering::Relaxed) + 1;
                incoming.reply.answer(Answer::Done { ok: true, message: format!("handled {n}") });
            }
        });
        let answer = a.links.asker().ask(&Ask::Switchover { now: true }, 3, Duration::from_millis(500)).await;
        assert_eq!(answer, Ok(Answer::Done { ok: true, message: "handled 1".into() }));
        // The same request (a's boot, id 1) recorded and sent again, and two that must fail.
        let request = |id, responder_boot| Message {
            node_id: 1,
            boot: BOOT_A,
            id,
            responder_boot,
            body: Body::Request(Ask::Switchover { now: true }),
        };
        // A tokio socket: a blocking receive would keep b's receive task from running.
        let attacker = UdpSocket::bind("127.0.0.3:0").await.unwrap();
        let to_b = SocketAddr::new("127.0.0.2".parse().unwrap(), cfg.port);
        attacker.send_to(&ask::encode(CLUSTER, &request(1, BOOT_B), KEY), to_b).await.unwrap();
        let mut buf = vec![0u8; RECV_BUF];
        let answered = tokio::time::timeout(Duration::from_millis(300), attacker.recv(&mut buf)).await;
        assert!(answered.is_err(), "a recorded request from another address was answered");
        attacker.send_to(&ask::encode(CLUSTER, &request(2, BOOT_B + 1), KEY), to_b).await.unwrap();
        attacker.send_to(&ask::encode(CLUSTER, &request(0, BOOT_B), KEY), to_b).await.unwrap();
        let forged = ask::encode(CLUSTER, &request(3, BOOT_B), b"not-the-shared-key-at-all");
        attacker.send_to(&forged, to_b).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while b.links.stats().links[0].drops.total() < 3 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let drops = b.links.stats().links[0].drops;
        assert_eq!(drops, DropCounters { replayed: 2, forged: 1, ..Default::default() });
        assert_eq!(handled.load(Ordering::Relaxed), 1, "a recorded request was handled again");
    }

    #[tokio::test]
    async fn a_link_that_cannot_bind_is_named() {
        let key = AuthKey::for_tests(KEY);
        // Held without SO_REUSEADDR, so the link's bind must fail with "address in use".
        let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let cfg = vec![link(LinkMode::Ucast, port, "127.0.0.1/8", "127.0.0.2/8", None)];
        let err = open(&cfg, &node("a", 1), &node("b", 2), 1, &key).err().unwrap();
        let msg = err.to_string();
        assert!(msg.contains("link `hb`") && msg.contains(&format!("cannot bind 127.0.0.1:{port}")), "{msg}");
    }

    /// Broadcast heartbeats on a real bridge between two namespaces: each node hears the
    /// other and ignores its own broadcasts. (mcast is exercised as address planning only:
    /// test traffic may only go to the 198.51.100.0/24 and 203.0.113.0/24 ranges.)
    #[test]
    fn bcast_heartbeats_cross_a_real_bridge() {
        use pbxha_lab::testns::{prerequisites_met, TestNet, HOST_IF};
        if !prerequisites_met("bcast_heartbeats_cross_a_real_bridge") {
            return;
        }
        let net = TestNet::new("pbxbc", &[("a", "198.51.100.41/24"), ("b", "198.51.100.42/24")]).unwrap();
        let mut l = link(LinkMode::Bcast, 26694, "198.51.100.41/24", "198.51.100.42/24", None);
        l.interface = Some(HOST_IF.into());
        let heard: Vec<Result<Vec<Event>, String>> = std::thread::scope(|scope| {
            let handles: Vec<_> = [("a", 1u16, "b", 2u16), ("b", 2, "a", 1)]
                .into_iter()
                .map(|(me, my_id, peer, peer_id)| {
                    let (net, l) = (&net, l.clone());
                    scope.spawn(move || {
                        net.run_in(me, move || async move {
                            let key = AuthKey::for_tests(b"bcast-test-key-0123456789");
                            let (tx, mut rx) = mpsc::channel(64);
                            let links = [l];
                            let setup = LinkSetup {
                                links: &links,
                                cluster_id: 5,
                                local: &node(me, my_id),
                                peer: &node(peer, peer_id),
                                boot: u64::from(my_id),
                                key: &key,
                                warntime: Duration::from_millis(500),
                                deadtime: Duration::from_secs(2),
                            };
                            let (_stop, stop) = watch::channel(false);
                            let links = Links::open(&setup, tx, &stop).expect("open bcast link");
                            let summary = summary(Role::Secondary);
                            let mut got = Vec::new();
                            let until = Instant::now() + Duration::from_secs(3);
                            while Instant::now() < until && got.len() < 5 {
                                links.send(&summary);
                                if let Ok(Some(ev)) = tokio::time::timeout(Duration::from_millis(100), rx.recv()).await
                                {
                                    got.push(ev);
                                }
                            }
                            // Let the peer's last packets arrive before this side closes.
                            tokio::time::sleep(Duration::from_millis(300)).await;
                            got
                        })
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("namespace thread")).collect()
        });
        for (node, events) in ["a", "b"].iter().zip(heard) {
            let events = events.unwrap();
            assert!(events.len() >= 3, "{node} heard {} heartbeats", events.len());
            assert!(events.iter().all(|e| matches!(e, Event::Heartbeat { link: 0, .. })), "{events:?}");
        }
    }
}
