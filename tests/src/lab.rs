//! The harness of the lab end-to-end tests (`lab.rs`, `lab_faults.rs`): a [`TestLab`] is one
//! `pbxha lab` under a unique namespace prefix and state directory, taken down on drop also
//! when a test panics; a [`Sampler`] watches who holds the VIP on both nodes; a
//! [`SipWatch`] sends SIP OPTIONS to the VIP from the client namespace and records who
//! answered.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::*;

pub use pbxha_lab::plan::{Bridge, GATEWAY, VIP};

/// The address of lab member `member` ("a", "b", "client", "gw") on `bridge`.
pub fn address(member: &str, bridge: Bridge) -> &'static str {
    let member = member.parse().unwrap_or_else(|e: String| panic!("{e}"));
    pbxha_lab::plan::address_of(member, bridge).unwrap_or_else(|| panic!("{member} is not on {bridge:?}"))
}

/// The client's address on the public segment, where the tests' SIP and heartbeat
/// packets come from.
pub fn client_pub() -> Ipv4Addr {
    address("client", Bridge::Public).parse().expect("the lab's addresses are IPv4")
}
/// The lab's default profile: dead after 1 s, gateway ping failing after 3 × 500 ms. Every
/// wait below is many times that, so a loaded machine slows the test down but does not fail it.
pub const SETTLE: Duration = Duration::from_secs(30);
/// How long "nothing happens" is watched: five deadtimes and three ping fall windows.
pub const QUIET: Duration = Duration::from_secs(5);

/// Root and the tools (pbxha() itself fails when the binary is not built); under `CI=true` a
/// missing one fails the test.
pub fn prerequisites(tools: &[&str]) -> bool {
    if !require(is_root(), "root (network namespaces)") {
        return false;
    }
    tools.iter().all(|t| require(have(t), &format!("`{t}` on PATH")))
}

/// One lab of one test. Dropping it runs `pbxha lab down` with the same prefix and state
/// directory, so a failed assertion never leaves namespaces or daemons behind.
pub struct TestLab {
    prefix: String,
    /// Parent of the state directory; removed on drop after `lab down` removed the lab's part.
    pub tmp: tempfile::TempDir,
    /// Every PID `lab status` showed in the lab's namespaces, for the `lab down` check.
    seen_pids: std::cell::RefCell<BTreeSet<u32>>,
    /// The node `up` found primary.
    primary: &'static str,
    finished: bool,
}

impl TestLab {
    /// Builds a lab with the default profile and waits until one node is primary, the other
    /// secondary, the VIP on the primary alone and the client's SIP OPTIONS answered by it.
    pub fn up() -> TestLab {
        TestLab::up_with(&[])
    }

    /// [`Self::up`] with more `pbxha lab up` options (`--on-isolation keep`).
    pub fn up_with(options: &[&str]) -> TestLab {
        static COUNT: AtomicU32 = AtomicU32::new(0);
        // Short: the prefix goes in front of every namespace name.
        let prefix = format!("pbxe{}{}-", std::process::id() % 100_000, COUNT.fetch_add(1, Ordering::Relaxed));
        let mut lab = TestLab {
            prefix,
            tmp: tempfile::tempdir().expect("creating a temp dir"),
            seen_pids: Default::default(),
            primary: "a",
            finished: false,
        };
        lab.lab_ok(&[&["up"], options].concat());
        // Not necessarily a, the preferred node: see cold_start_gives_the_group_to_the_preferred_node.
        lab.primary =
            wait_for(SETTLE, "a node to become primary", || ["a", "b"].into_iter().find(|n| lab.role(n) == "primary"));
        lab.wait_primary(lab.primary);
        lab
    }

    /// The primary once `up` settled.
    pub fn p(&self) -> &'static str {
        self.primary
    }

    /// The secondary once `up` settled.
    pub fn s(&self) -> &'static str {
        other(self.primary)
    }

    /// Every PID `lab status` has shown so far.
    pub fn seen_pids(&self) -> BTreeSet<u32> {
        self.seen_pids.borrow().clone()
    }

    pub fn state_dir(&self) -> PathBuf {
        self.tmp.path().join("lab")
    }

    pub fn config(&self, node: &str) -> PathBuf {
        self.state_dir().join(format!("{node}.toml"))
    }

    pub fn ns(&self, member: &str) -> String {
        format!("{}{member}", self.prefix)
    }

    /// `pbxha lab ARGS...` on this test's lab.
    pub fn lab(&self, args: &[&str]) -> Output {
        self.lab_command(args).output().expect("running pbxha lab")
    }

    /// The command `pbxha lab ARGS...` on this test's lab, for running it in the background.
    pub fn lab_command(&self, args: &[&str]) -> Command {
        crate::lab_command(&self.prefix, &self.state_dir(), args)
    }

    pub fn lab_ok(&self, args: &[&str]) -> String {
        let out = self.lab(args);
        assert!(
            out.status.success(),
            "`pbxha lab {}` failed ({}):\n{}{}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.logs()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `lab status --json`, remembering the PIDs it shows.
    pub fn status(&self) -> Value {
        let text = self.lab_ok(&["status", "--json"]);
        let status: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("`lab status --json`: {e}: {text}"));
        let pids =
            status["members"].as_array().into_iter().flatten().flat_map(|m| m["pids"].as_array().into_iter().flatten());
        self.seen_pids.borrow_mut().extend(pids.filter_map(|p| p.as_u64()).filter_map(|p| u32::try_from(p).ok()));
        status
    }

    /// A node's `pbxha status --json`, or `None` while its daemon does not answer.
    pub fn node(&self, node: &str) -> Option<Value> {
        status_json(&self.config(node))
    }

    /// Waits for `node` to report `role`; on timeout, says what it reported last and shows
    /// the end of its log.
    pub fn wait_role(&self, node: &str, role: &str) {
        let until = std::time::Instant::now() + SETTLE;
        let mut last = String::new();
        while std::time::Instant::now() < until {
            last = self.role(node);
            if last == role {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let tails: Vec<String> = ["a", "b"]
            .iter()
            .map(|n| {
                let log = self.config(n).with_extension("log");
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                let tail: Vec<&str> = text.lines().filter(|l| !l.contains("late heartbeat")).collect();
                format!("{}:\n{}", log.display(), tail[tail.len().saturating_sub(25)..].join("\n"))
            })
            .collect();
        panic!("{node} is still {last} after {SETTLE:?}, not {role}\n{}", tails.join("\n\n"));
    }

    pub fn role(&self, node: &str) -> String {
        self.node(node).and_then(|s| s["role"].as_str().map(String::from)).unwrap_or_else(|| "down".into())
    }

    /// Runs `argv` in `member`'s namespace.
    pub fn exec(&self, member: &str, argv: &[&str]) -> Output {
        Command::new("ip").args(["netns", "exec", &self.ns(member)]).args(argv).output().expect("running ip netns exec")
    }

    /// Cuts `node` off from the gateway, its only ping target, with iptables DROP of gw's
    /// address alone: it still reaches the client and its peer on the same link. `lab heal`
    /// undoes it.
    pub fn cut_from_gateway(&self, node: &str) {
        for rule in [["INPUT", "-s"], ["OUTPUT", "-d"]] {
            let out = self.exec(node, &["iptables", "-w", "5", "-A", rule[0], rule[1], GATEWAY, "-j", "DROP"]);
            assert!(out.status.success(), "iptables in {node}: {}", String::from_utf8_lossy(&out.stderr));
        }
    }

    /// Which node answers the client's SIP OPTIONS to the VIP, through `lab exec` as a user would.
    pub fn sip_answer(&self) -> Option<String> {
        let exe = pbxha();
        let exe = exe.to_string_lossy();
        let out = self.lab(&["exec", "client", "--", &exe, "sip-probe", "--timeout-ms", "1500", VIP]);
        let text = String::from_utf8_lossy(&out.stdout);
        let node = text.lines().find_map(|l| l.split_once("answered by node ").map(|(_, n)| n.trim().to_string()));
        node.filter(|_| out.status.success())
    }

    /// Waits until `node` is primary, its peer secondary, the VIP on `node` alone and the
    /// client's SIP reaching `node`; on timeout, fails with what was seen and the logs.
    pub fn wait_primary(&self, node: &str) {
        self.wait_holder(node, "secondary");
    }

    /// [`Self::wait_primary`] with another role expected of the peer.
    pub fn wait_holder(&self, node: &str, peer_role: &str) {
        let peer = other(node);
        let until = Instant::now() + SETTLE;
        loop {
            let seen = (self.role(node), self.role(peer), vip_on(&self.ns(node)), vip_on(&self.ns(peer)));
            if seen.0 == "primary" && seen.1 == peer_role && seen.2 == Some(true) && seen.3 == Some(false) {
                break;
            }
            assert!(
                Instant::now() < until,
                "timed out waiting for {node} primary, {peer} {peer_role}, VIP on {node} alone; last seen \
                 (role {node}, role {peer}, VIP on {node}, VIP on {peer}) = {seen:?}{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let answered = wait_for(SETTLE, &format!("the client's SIP OPTIONS to the VIP answered by {node}"), || {
            self.sip_answer().filter(|n| n == node)
        });
        assert_eq!(answered, node);
    }

    /// Asserts for `how_long` that `primary` stays primary and `secondary` secondary.
    pub fn assert_roles_stay(&self, primary: &str, secondary: &str, how_long: Duration) {
        let until = Instant::now() + how_long;
        while Instant::now() < until {
            let roles = (self.role(primary), self.role(secondary));
            assert_eq!((roles.0.as_str(), roles.1.as_str()), ("primary", "secondary"), "roles changed{}", self.logs());
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Both nodes' logs, for failure messages.
    pub fn logs(&self) -> String {
        ["a", "b"]
            .iter()
            .map(|n| {
                let path = self.state_dir().join(format!("{n}.log"));
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(30).collect();
                format!(
                    "\n--- last lines of {} ---\n{}",
                    path.display(),
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            })
            .collect()
    }

    /// Starts watching who holds the VIP.
    pub fn sampler(&self) -> Sampler {
        Sampler::start(self.ns("a"), self.ns("b"))
    }

    /// Issue 3 (h): `lab down` leaves no namespace with the prefix, no process the lab ran,
    /// and no state directory.
    pub fn finish(mut self) {
        self.status();
        let seen = self.seen_pids.borrow().clone();
        assert!(!seen.is_empty(), "lab status never showed a process, so the check below would prove nothing");
        let out = self.lab_ok(&["down"]);
        self.finished = true;
        assert!(out.contains("down"), "unexpected `lab down` output: {out}");
        let netns = Command::new("ip").args(["netns", "list"]).output().expect("ip netns list");
        let left: Vec<String> = String::from_utf8_lossy(&netns.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|n| n.starts_with(&self.prefix))
            .map(String::from)
            .collect();
        assert!(left.is_empty(), "namespaces left after lab down: {left:?}");
        let running: Vec<u32> = seen.into_iter().filter(|p| alive(*p)).collect();
        assert!(running.is_empty(), "processes of the lab still running after lab down: {running:?}");
        assert!(!self.state_dir().exists(), "{} left after lab down", self.state_dir().display());
    }
}

impl Drop for TestLab {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let out = self.lab(&["down"]);
        if !out.status.success() {
            eprintln!(
                "cleanup: `pbxha lab down` with prefix {} failed: {}",
                self.prefix,
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

pub fn other(node: &str) -> &'static str {
    if node == "a" {
        "b"
    } else {
        "a"
    }
}

/// Whether the node in `ns` holds the VIP: the address on pub0 while pub0 is up. A killed
/// node keeps its addresses on interfaces that are down, where they answer nobody.
pub fn vip_on(ns: &str) -> Option<bool> {
    let out = Command::new("ip").args(["-n", ns, "-j", "addr", "show", "dev", "pub0"]).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    let iface = v.as_array()?.first()?;
    let up = iface["flags"].as_array()?.iter().any(|f| f == "UP");
    let has = iface["addr_info"].as_array()?.iter().any(|a| a["local"] == VIP);
    Some(up && has)
}

/// Watches the VIP on both nodes from a thread, reading a, b, a, b, ... about every 25 ms.
pub struct Sampler {
    stop: Arc<AtomicBool>,
    /// Taken by [`Sampler::stop`]; a sampler dropped by a failing test stops on its own.
    thread: Option<JoinHandle<SampleReport>>,
}

#[derive(Debug, Default)]
pub struct SampleReport {
    pub samples: usize,
    /// Nodes seen holding the VIP at some sample.
    pub holders: BTreeSet<&'static str>,
    /// Moments both held it: "at 3.2 s".
    pub both: Vec<String>,
    /// How often the VIP went to another node than the one that held it last (a release
    /// and a take-back by the same node is no move).
    pub moves: usize,
    /// Each change of who holds the VIP: "1.2 s: b", "3.4 s: nobody".
    pub timeline: Vec<String>,
    /// The longest stretch in which neither node held the VIP.
    pub longest_nobody: Duration,
    /// The longest stretch in which the last reads of both nodes saw the VIP (a clean
    /// hand-over between two reads shows as up to one read interval).
    pub longest_both: Duration,
}

impl SampleReport {
    /// Folds in the latest reads of both nodes (`None` until a node was read once).
    fn note(&mut self, at: Duration, reads: [Option<bool>; 2], state: &mut HoldState) {
        let [Some(a), Some(b)] = reads else { return };
        let now = match (a, b) {
            (true, true) => "a+b",
            (true, false) => "a",
            (false, true) => "b",
            (false, false) => "nobody",
        };
        // The state seen so far lasted at least until this read.
        let stretch = at - state.since;
        match state.current {
            Some("nobody") => self.longest_nobody = self.longest_nobody.max(stretch),
            Some("a+b") => self.longest_both = self.longest_both.max(stretch),
            _ => {}
        }
        if state.current != Some(now) {
            self.timeline.push(format!("{:.2} s: {now}", at.as_secs_f64()));
            state.current = Some(now);
            state.since = at;
            if matches!(now, "a" | "b") {
                if state.last_sole.is_some_and(|n| n != now) {
                    self.moves += 1;
                }
                state.last_sole = Some(now);
            }
        }
    }
}

/// Who held the VIP by the last reads, since when, and who held it alone last.
#[derive(Default)]
struct HoldState {
    current: Option<&'static str>,
    since: Duration,
    last_sole: Option<&'static str>,
}

impl Sampler {
    /// The longest a sampler runs even if nobody stops it.
    const LIMIT: Duration = Duration::from_secs(240);

    pub fn start(ns_a: String, ns_b: String) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let started = Instant::now();
            let mut report = SampleReport::default();
            // The last three reads, each (node, holds). Reads of two namespaces are never
            // simultaneous, so "both hold" is claimed only for a read of one node bracketed by
            // two reads of the other that both saw it hold: a clean hand-over between two
            // reads (release, then take) is not a dual holding, a real one is seen.
            let mut window: Vec<(&str, bool)> = Vec::new();
            let mut reads = [None, None];
            let mut state = HoldState::default();
            let nodes = [("a", ns_a), ("b", ns_b)];
            let mut i = 0;
            while !flag.load(Ordering::Relaxed) && started.elapsed() < Self::LIMIT {
                std::thread::sleep(Duration::from_millis(25));
                let (name, ns) = &nodes[i % 2];
                let slot = i % 2;
                i += 1;
                let Some(holds) = vip_on(ns) else { continue };
                reads[slot] = Some(holds);
                report.samples += 1;
                if holds {
                    report.holders.insert(name);
                }
                report.note(started.elapsed(), reads, &mut state);
                window.push((name, holds));
                if window.len() > 3 {
                    window.remove(0);
                }
                if let [(x0, true), (y, true), (x1, true)] = window.as_slice() {
                    if x0 == x1 && x0 != y {
                        report.both.push(format!("at {:.1} s", started.elapsed().as_secs_f64()));
                    }
                }
            }
            report
        });
        Sampler { stop, thread: Some(thread) }
    }

    /// Stops sampling and returns what was seen, asserting nothing.
    pub fn stop(mut self) -> SampleReport {
        self.stop.store(true, Ordering::Relaxed);
        let thread = self.thread.take().expect("a sampler is stopped once");
        thread.join().expect("sampler thread panicked")
    }

    /// Issue 3 (g): stops sampling and asserts that no sample saw both nodes with the VIP.
    pub fn finish(self, lab: &TestLab) -> SampleReport {
        let report = self.stop();
        assert!(report.samples >= 20, "too few VIP samples to judge ({})", report.samples);
        assert!(report.both.is_empty(), "both nodes held the VIP {:?}{}", report.both, lab.logs());
        report
    }
}

/// A test that fails mid-way drops its sampler: its `ip -n` reads run inside the lab's
/// namespaces, so one left running would keep `lab down` from ever finding them empty.
impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Runs `f` on a new thread inside the network namespace `ns` (setns(2) changes only the
/// calling thread's namespace, so the thread is used for nothing else).
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> JoinHandle<T> {
    let path = Path::new("/run/netns").join(ns);
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
        // SAFETY: setns(2) on a namespace file we opened; it affects this thread only.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns into {}: {}", path.display(), std::io::Error::last_os_error());
        f()
    })
}

/// One SIP OPTIONS probe of the [`SipWatch`].
#[derive(Clone, Debug)]
pub struct SipSample {
    pub sent: Instant,
    /// The node named by a 200 answer's `X-Pbxha-Node`; none for no or another answer.
    pub node: Option<String>,
}

/// What the client saw over a [`SipWatch`].
#[derive(Debug)]
pub struct SipReport {
    pub probes: usize,
    pub answered: usize,
    /// The longest time without an answer: between two answers, or from the last answer
    /// to the end of the watch.
    pub longest_gap: Duration,
    /// The answering nodes in order, each run of answers from one node once: ["a", "b"]
    /// is one move.
    pub answerers: Vec<String>,
}

impl SipReport {
    pub fn moves(&self) -> usize {
        self.answerers.len().saturating_sub(1)
    }
}

/// SIP OPTIONS to the VIP from the client namespace every 50 ms, each waited for up to
/// 250 ms, recording who answered.
pub struct SipWatch {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<SipSample>>>,
    thread: JoinHandle<()>,
    started: Instant,
}

impl SipWatch {
    const EVERY: Duration = Duration::from_millis(50);
    /// Below SIP's T1 (500 ms), so the responder never sees a retransmission.
    const TIMEOUT: Duration = Duration::from_millis(250);
    /// The longest a watch runs even if nobody stops it.
    const LIMIT: Duration = Duration::from_secs(240);

    pub fn start(lab: &TestLab) -> SipWatch {
        SipWatch::from_namespace(lab.ns("client"))
    }

    /// The same from the client namespace named `client` (a bare lab's).
    pub fn from_namespace(client: String) -> SipWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let (flag, sink) = (stop.clone(), samples.clone());
        let started = Instant::now();
        let namespace = client;
        let client = client_pub();
        let thread = in_netns(&namespace, move || {
            let socket = UdpSocket::bind(SocketAddrV4::new(client, 0))
                .unwrap_or_else(|e| panic!("binding {client} in the client namespace: {e}"));
            socket.set_read_timeout(Some(Duration::from_millis(20))).expect("setting a read timeout");
            let port = socket.local_addr().map(|a| a.port()).unwrap_or(0);
            let vip = SocketAddrV4::new(VIP.parse().expect("VIP address"), 5060);
            let mut n = 0u64;
            while !flag.load(Ordering::Relaxed) && started.elapsed() < Self::LIMIT {
                n += 1;
                let call_id = format!("watch-{n}-{port}@{client}");
                let request = format!(
                    "OPTIONS sip:{VIP}:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {client}:{port};branch=z9hG4bK-w{n}\r\n\
                     Max-Forwards: 70\r\nFrom: <sip:watch@{client}>;tag=w{n}\r\nTo: <sip:{VIP}>\r\n\
                     Call-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
                );
                let sent = Instant::now();
                // A send error (no route while an interface is down) is a probe unanswered.
                let node = match socket.send_to(request.as_bytes(), vip) {
                    Ok(_) => await_answer(&socket, &call_id, sent + Self::TIMEOUT),
                    Err(_) => None,
                };
                if let Ok(mut s) = sink.lock() {
                    s.push(SipSample { sent, node });
                }
                if let Some(rest) = (sent + Self::EVERY).checked_duration_since(Instant::now()) {
                    std::thread::sleep(rest);
                }
            }
        });
        SipWatch { stop, samples, thread, started }
    }

    /// Whether `node` answered a probe sent at or after `since`.
    pub fn answered_by_since(&self, node: &str, since: Instant) -> bool {
        self.samples.lock().is_ok_and(|s| s.iter().any(|x| x.sent >= since && x.node.as_deref() == Some(node)))
    }

    /// Stops probing and sums up what the client saw.
    pub fn stop(self) -> SipReport {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("SIP watch thread panicked");
        let ended = Instant::now();
        let samples = self.samples.lock().map(|s| s.clone()).unwrap_or_default();
        let answers: Vec<&SipSample> = samples.iter().filter(|s| s.node.is_some()).collect();
        let mut longest_gap = Duration::ZERO;
        let mut last = self.started;
        for a in &answers {
            longest_gap = longest_gap.max(a.sent - last);
            last = a.sent;
        }
        longest_gap = longest_gap.max(ended - last);
        let mut answerers: Vec<String> = Vec::new();
        for node in answers.iter().filter_map(|a| a.node.clone()) {
            if answerers.last() != Some(&node) {
                answerers.push(node);
            }
        }
        SipReport { probes: samples.len(), answered: answers.len(), longest_gap, answerers }
    }
}

/// Reads answers on `socket` until one for `call_id` arrives or `until` passes; the node of
/// a 200 answer, or none.
fn await_answer(socket: &UdpSocket, call_id: &str, until: Instant) -> Option<String> {
    let mut buf = [0u8; 2048];
    while Instant::now() < until {
        let Ok(len) = socket.recv(&mut buf) else {
            continue;
        };
        let text = String::from_utf8_lossy(&buf[..len]);
        // A late answer to an earlier probe is not this probe's.
        if !text.lines().any(|l| l.trim_end() == format!("Call-ID: {call_id}")) {
            continue;
        }
        if !text.starts_with("SIP/2.0 200") {
            return None;
        }
        return text.lines().find_map(|l| l.strip_prefix("X-Pbxha-Node:").map(|n| n.trim().to_string()));
    }
    None
}
