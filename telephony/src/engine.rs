//! The probe engine: many SIP OPTIONS targets at once, each with its own interval, timeout,
//! `rise`/`fall` hysteresis and verdict policy, in one tokio task.
//!
//! UDP targets share one socket per address family: every probe has a fresh Via branch, and
//! responses are demultiplexed by it (and then checked in full by
//! [`options::match_response`]), so a thousand targets cost one socket and one task rather
//! than a thousand of each. Retransmissions follow RFC 3261 §17.1.2.2 (Timer E) as the
//! one-shot client does. TCP targets reuse [`options::probe`], one connection per probe,
//! because a stream cannot be shared between targets anyway.
//!
//! Every finished probe becomes a [`Sample`] sent to the caller's channel, and the
//! [`EngineHandle`] keeps a snapshot per target (health, last RTT, recent verdicts). The
//! channel is fed with `try_send`: a slow consumer loses samples, never stalls probing; the
//! snapshot is always current.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rsipstack::rsip::{HasHeaders, SipMessage};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::hysteresis::{Health, Hysteresis};
use crate::options::{self, build_request, match_response, Matched, Probe, TransactionId, Transport};
use crate::verdict::{verdict, verdict_for_status, Policy, Verdict};
use crate::wire::{self, MAX_MESSAGE};
use crate::Error;

/// Verdicts kept per target for status.
pub const HISTORY: usize = 10;

/// One target to probe.
#[derive(Clone, Debug)]
pub struct TargetSpec {
    /// Unique among the engine's targets; samples and status carry it.
    pub name: String,
    pub target: SocketAddr,
    pub transport: Transport,
    /// From the start of one probe to the start of the next (never overlapping: a probe that
    /// runs longer delays the next).
    pub interval: Duration,
    /// Whole-transaction deadline of one probe.
    pub timeout: Duration,
    /// Consecutive healthy samples that make the target up.
    pub rise: u32,
    /// Consecutive failed samples that make the target down.
    pub fall: u32,
    pub policy: Policy,
    /// Probed from the start; otherwise only after [`EngineHandle::activate`].
    pub active: bool,
}

/// One finished probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sample {
    pub target: Arc<str>,
    pub verdict: Verdict,
    /// Until the final response; `None` when there was none.
    pub rtt: Option<Duration>,
    /// The health after this sample.
    pub health: Health,
    /// This sample changed the health.
    pub changed: bool,
}

/// A target as status shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetStatus {
    pub name: String,
    pub target: SocketAddr,
    pub transport: Transport,
    pub active: bool,
    pub health: Health,
    /// Failed samples in a row, up to the latest.
    pub failures_in_row: u32,
    pub last_rtt: Option<Duration>,
    /// The latest [`HISTORY`] verdicts, oldest first.
    pub recent: Vec<Verdict>,
    /// Samples since the target was last (re)activated.
    pub samples: u64,
}

struct Shared {
    targets: Vec<TargetStatus>,
}

enum Command {
    Activate(usize),
    Deactivate(usize),
}

/// The caller's handle: status snapshots and activation. Cloning shares the engine; it stops
/// when every handle is dropped.
#[derive(Clone)]
pub struct EngineHandle {
    commands: mpsc::UnboundedSender<Command>,
    shared: Arc<Mutex<Shared>>,
    index: Arc<HashMap<String, usize>>,
}

impl EngineHandle {
    /// Every target, in the order given to [`start`].
    pub fn status(&self) -> Vec<TargetStatus> {
        lock(&self.shared).targets.clone()
    }

    /// One target by name.
    pub fn target(&self, name: &str) -> Option<TargetStatus> {
        let i = *self.index.get(name)?;
        lock(&self.shared).targets.get(i).cloned()
    }

    /// (Re)starts probing `name` from a clean slate: health back to unknown, an in-flight
    /// probe forgotten, the first probe now. Returns false for an unknown name.
    pub fn activate(&self, name: &str) -> bool {
        let Some(&i) = self.index.get(name) else {
            return false;
        };
        // Applied to the snapshot at once too, so a caller that activates and then reads
        // status does not see the verdicts from before.
        lock(&self.shared).targets[i].reset(true);
        self.commands.send(Command::Activate(i)).is_ok()
    }

    /// Stops probing `name`; its status keeps the last verdicts.
    pub fn deactivate(&self, name: &str) -> bool {
        let Some(&i) = self.index.get(name) else {
            return false;
        };
        lock(&self.shared).targets[i].active = false;
        self.commands.send(Command::Deactivate(i)).is_ok()
    }
}

impl TargetStatus {
    fn reset(&mut self, active: bool) {
        self.active = active;
        self.health = Health::Unknown;
        self.failures_in_row = 0;
        self.samples = 0;
    }
}

/// The lock guards plain field updates only; a poisoned one still holds consistent data.
fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(|p| p.into_inner())
}

/// Binds the shared sockets and starts the engine task. Fails on duplicate names or when a
/// socket cannot be bound.
pub async fn start(targets: Vec<TargetSpec>, samples: mpsc::Sender<Sample>) -> Result<EngineHandle, Error> {
    let mut index = HashMap::new();
    for (i, t) in targets.iter().enumerate() {
        if index.insert(t.name.clone(), i).is_some() {
            return Err(Error::io(
                format!("probe target `{}`", t.name),
                std::io::Error::new(std::io::ErrorKind::InvalidInput, "name used twice"),
            ));
        }
    }
    let udp = |v6: bool| targets.iter().any(|t| t.transport == Transport::Udp && t.target.is_ipv6() == v6);
    let v4 = if udp(false) { Some(bind(IpAddr::V4(Ipv4Addr::UNSPECIFIED)).await?) } else { None };
    let v6 = if udp(true) { Some(bind(IpAddr::V6(Ipv6Addr::UNSPECIFIED)).await?) } else { None };
    let shared = Arc::new(Mutex::new(Shared {
        targets: targets
            .iter()
            .map(|t| TargetStatus {
                name: t.name.clone(),
                target: t.target,
                transport: t.transport,
                active: t.active,
                health: Health::Unknown,
                failures_in_row: 0,
                last_rtt: None,
                recent: Vec::new(),
                samples: 0,
            })
            .collect(),
    }));
    let (tx, rx) = mpsc::unbounded_channel();
    let now = Instant::now();
    let n = targets.len().max(1) as u32;
    let mut timers = BinaryHeap::new();
    let states: Vec<State> = targets
        .into_iter()
        .enumerate()
        .map(|(i, spec)| {
            let gen = 0;
            if spec.active {
                // Spread the first probes over one interval so a thousand targets do not
                // all fire in the same millisecond.
                timers.push(Reverse((now + spec.interval / n * i as u32, i, gen, Timer::Probe)));
            }
            State {
                name: Arc::from(spec.name.as_str()),
                hysteresis: Hysteresis::new(spec.rise, spec.fall),
                spec,
                gen,
                local: None,
                started: None,
                inflight: None,
            }
        })
        .collect();
    let engine = Engine {
        states,
        v4,
        v6,
        timers,
        branches: HashMap::new(),
        tcp: JoinSet::new(),
        samples,
        shared: shared.clone(),
        dropped: 0,
    };
    tokio::spawn(engine.run(rx));
    Ok(EngineHandle { commands: tx, shared, index: Arc::new(index) })
}

async fn bind(ip: IpAddr) -> Result<UdpSocket, Error> {
    UdpSocket::bind(SocketAddr::new(ip, 0))
        .await
        .map_err(|e| Error::io(format!("binding the probe engine's UDP socket on {ip}"), e))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    /// Start the next probe.
    Probe,
    /// Retransmit the in-flight request (Timer E).
    Resend,
    /// The in-flight probe's deadline.
    Expire,
}

/// (when, target, generation, what). Entries of an older generation are stale and skipped,
/// which is cheaper than removing them from the heap.
type TimerEntry = Reverse<(Instant, usize, u64, Timer)>;

struct InFlight {
    id: TransactionId,
    request: Vec<u8>,
    started: Instant,
    interval: Duration,
}

struct State {
    spec: TargetSpec,
    name: Arc<str>,
    hysteresis: Hysteresis,
    /// Bumped on (de)activation and when a probe ends, so stale timers and late TCP results
    /// are recognised.
    gen: u64,
    /// Our address towards the target, for Via; found again after a failure in case routing
    /// changed (a VIP moving here or away).
    local: Option<IpAddr>,
    /// When the current (or last) probe began: the next one begins `interval` after it.
    started: Option<Instant>,
    inflight: Option<InFlight>,
}

struct Engine {
    states: Vec<State>,
    v4: Option<UdpSocket>,
    v6: Option<UdpSocket>,
    timers: BinaryHeap<TimerEntry>,
    /// Via branch of each in-flight UDP probe → target index.
    branches: HashMap<String, usize>,
    tcp: JoinSet<(usize, u64, Result<options::OptionsResponse, Error>)>,
    samples: mpsc::Sender<Sample>,
    shared: Arc<Mutex<Shared>>,
    dropped: u64,
}

impl Engine {
    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        let mut buf4 = vec![0u8; MAX_MESSAGE];
        let mut buf6 = vec![0u8; MAX_MESSAGE];
        loop {
            let due = self.timers.peek().map(|Reverse((at, ..))| *at);
            tokio::select! {
                command = commands.recv() => match command {
                    Some(Command::Activate(i)) => self.activate(i),
                    Some(Command::Deactivate(i)) => self.deactivate(i),
                    None => break,
                },
                received = recv(self.v4.as_ref(), &mut buf4) => self.on_datagram(received, &buf4),
                received = recv(self.v6.as_ref(), &mut buf6) => self.on_datagram(received, &buf6),
                Some(joined) = self.tcp.join_next(), if !self.tcp.is_empty() => {
                    if let Ok((i, gen, outcome)) = joined {
                        if self.states[i].gen == gen {
                            self.finish(i, outcome);
                        }
                    }
                }
                () = sleep_until(due) => self.fire_due().await,
            }
        }
        self.tcp.abort_all();
        tracing::debug!("probe engine stopped: every handle was dropped");
    }

    fn activate(&mut self, i: usize) {
        self.forget(i);
        // Again here: a probe that finished between the handle's reset and this command
        // wrote its old verdict to the snapshot.
        lock(&self.shared).targets[i].reset(true);
        self.states[i].spec.active = true;
        self.states[i].hysteresis = Hysteresis::new(self.states[i].spec.rise, self.states[i].spec.fall);
        self.states[i].local = None;
        let gen = self.states[i].gen;
        self.timers.push(Reverse((Instant::now(), i, gen, Timer::Probe)));
    }

    fn deactivate(&mut self, i: usize) {
        self.forget(i);
        self.states[i].spec.active = false;
    }

    /// Drops any in-flight probe of target `i` and invalidates its timers.
    fn forget(&mut self, i: usize) {
        let s = &mut self.states[i];
        s.gen += 1;
        if let Some(f) = s.inflight.take() {
            self.branches.remove(&f.id.branch);
        }
    }

    async fn fire_due(&mut self) {
        let now = Instant::now();
        while let Some(Reverse((at, i, gen, timer))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            if self.states[i].gen != gen || !self.states[i].spec.active {
                continue;
            }
            match timer {
                Timer::Probe => self.begin(i).await,
                Timer::Resend => self.resend(i).await,
                Timer::Expire => {
                    let spec = &self.states[i].spec;
                    let err =
                        Error::Timeout { target: spec.target, transport: spec.transport.as_str(), after: spec.timeout };
                    self.finish(i, Err(err));
                }
            }
        }
    }

    async fn begin(&mut self, i: usize) {
        let started = Instant::now();
        self.states[i].started = Some(started);
        let gen = self.states[i].gen;
        let spec = self.states[i].spec.clone();
        if spec.transport == Transport::Tcp {
            let probe = Probe::tcp(spec.target, spec.timeout);
            self.tcp.spawn(async move { (i, gen, options::probe(&probe).await) });
            return;
        }
        let prepared = match self.prepare_udp(i).await {
            Ok(p) => p,
            Err(e) => return self.finish(i, Err(e)),
        };
        let (id, request) = prepared;
        self.branches.insert(id.branch.clone(), i);
        self.states[i].inflight = Some(InFlight { id, request, started, interval: options::T1 });
        self.timers.push(Reverse((started + spec.timeout, i, gen, Timer::Expire)));
        self.resend(i).await;
    }

    async fn prepare_udp(&mut self, i: usize) -> Result<(TransactionId, Vec<u8>), Error> {
        let target = self.states[i].spec.target;
        let socket = if target.is_ipv6() { self.v6.as_ref() } else { self.v4.as_ref() };
        let port = socket
            .and_then(|s| s.local_addr().ok())
            .map(|a| a.port())
            .ok_or_else(|| Error::io(format!("probing {target}"), std::io::ErrorKind::NotConnected.into()))?;
        let local = match self.states[i].local {
            Some(ip) => ip,
            None => {
                let ip = options::local_ip_towards(target).await?;
                self.states[i].local = Some(ip);
                ip
            }
        };
        let id = TransactionId::random();
        let probe = Probe::udp(target, self.states[i].spec.timeout);
        let request = build_request(&id, SocketAddr::new(local, port), &probe)?;
        Ok((id, request))
    }

    /// Sends (or re-sends) the in-flight request and schedules the next retransmission.
    async fn resend(&mut self, i: usize) {
        let s = &mut self.states[i];
        let Some(f) = s.inflight.as_mut() else { return };
        let target = s.spec.target;
        let socket = if target.is_ipv6() { self.v6.as_ref() } else { self.v4.as_ref() };
        let Some(socket) = socket else { return };
        if let Err(e) = socket.send_to(&f.request, target).await {
            let err = Error::io(format!("sending OPTIONS to {target} over UDP"), e);
            return self.finish(i, Err(err));
        }
        let next = Instant::now() + f.interval;
        f.interval = options::next_interval(f.interval);
        let gen = s.gen;
        self.timers.push(Reverse((next, i, gen, Timer::Resend)));
    }

    fn on_datagram(&mut self, received: std::io::Result<(usize, SocketAddr)>, buf: &[u8]) {
        let (len, source) = match received {
            Ok(r) => r,
            Err(e) => {
                // ICMP port unreachable shows up here on some kernels; the probe times out.
                tracing::debug!(error = %e, "probe engine receive error");
                return;
            }
        };
        let bytes = &buf[..len];
        let Some(i) = wire::parse(bytes)
            .and_then(|m| match m {
                SipMessage::Response(r) => wire::top_branch(r.headers()),
                SipMessage::Request(_) => None,
            })
            .and_then(|branch| self.branches.get(&branch).copied())
        else {
            tracing::trace!(%source, len, "ignoring a datagram that answers no probe");
            return;
        };
        let Some(f) = self.states[i].inflight.as_mut() else {
            return;
        };
        match match_response(bytes, &f.id) {
            Matched::Ignore => {
                tracing::debug!(%source, "ignoring a response with our branch but not our transaction")
            }
            Matched::Provisional => {
                // §17.1.2.2: in Proceeding, retransmit every T2.
                f.interval = options::T2;
            }
            Matched::Final { status, reason, headers } => {
                let resp = options::OptionsResponse { status, reason, rtt: f.started.elapsed(), source, headers };
                self.finish(i, Ok(resp));
            }
        }
    }

    /// Ends the current probe of target `i`: hysteresis, status, sample, next probe.
    fn finish(&mut self, i: usize, outcome: Result<options::OptionsResponse, Error>) {
        self.forget(i);
        let s = &mut self.states[i];
        let rtt = outcome.as_ref().ok().map(|r| r.rtt);
        let v = match &outcome {
            Ok(r) => verdict_for_status(r.status, &r.reason, s.spec.policy),
            Err(_) => verdict(&outcome, s.spec.policy),
        };
        if !v.is_healthy() {
            s.local = None;
        }
        let change = s.hysteresis.observe(v.is_healthy());
        let health = s.hysteresis.health();
        {
            let mut shared = lock(&self.shared);
            let t = &mut shared.targets[i];
            t.health = health;
            t.failures_in_row = s.hysteresis.bad_run();
            t.samples += 1;
            if rtt.is_some() {
                t.last_rtt = rtt;
            }
            if t.recent.len() >= HISTORY {
                t.recent.remove(0);
            }
            t.recent.push(v.clone());
        }
        if let Some(h) = change {
            tracing::info!(target = %s.name, health = h.as_str(), verdict = ?v, "probe target changed state");
        }
        let sample = Sample { target: s.name.clone(), verdict: v, rtt, health, changed: change.is_some() };
        if self.samples.try_send(sample).is_err() {
            self.dropped += 1;
            if self.dropped.is_power_of_two() {
                tracing::warn!(dropped = self.dropped, "probe samples dropped: the consumer is slow or gone");
            }
        }
        let now = Instant::now();
        let next = s.started.map_or(now + s.spec.interval, |st| (st + s.spec.interval).max(now));
        self.timers.push(Reverse((next, i, s.gen, Timer::Probe)));
    }
}

async fn recv(socket: Option<&UdpSocket>, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr)> {
    match socket {
        Some(s) => s.recv_from(buf).await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
