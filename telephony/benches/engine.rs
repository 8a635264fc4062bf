//! Probe engine cost and probe round-trip, on 127.0.0.1.
//!
//! 1. CPU: 1,000 UDP targets × 1 probe/s against the builtin responder, which runs in a
//!    child process (this binary re-executed) so only the engine's cost is counted: process
//!    user+sys time (getrusage) over wall time, median of 3 runs.
//! 2. RTT: pbxha's OPTIONS client against a kamailio started here, next to `sipsak -s`
//!    against the same kamailio, median of 15 probes each (skipped, saying so, when kamailio
//!    or sipsak is missing).
//!
//! `cargo bench -p pbxha-telephony --bench engine` (PBXHA_BENCH_SECS sets the run length,
//! default 10).

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pbxha_telephony::engine::{self, TargetSpec};
use pbxha_telephony::{probe, Policy, Probe, Responder, ResponderConfig, Transport};
use tokio::sync::mpsc;

const TARGETS: usize = 1000;
const RUNS: usize = 3;
const RTT_PROBES: usize = 15;
/// Set in the re-executed child, which then serves SIP and prints its port.
const CHILD_ENV: &str = "PBXHA_BENCH_RESPONDER";

/// Kills a child's whole process group (kamailio forks workers) and reaps it on drop, also
/// when the bench panics. Every child here is started as its own group leader.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the process group of a child this bench started.
        unsafe { libc::kill(-(self.0.id() as i32), libc::SIGKILL) };
        let _ = self.0.wait();
    }
}

fn cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(u.ru_utime) + tv(u.ru_stime)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn serve_as_child() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let r = Responder::bind(any, None, ResponderConfig::new("bench")).await.unwrap();
        println!("{}", r.udp_addr());
        std::io::stdout().flush().unwrap();
        // Serves until the parent closes our stdin (or kills us).
        let stdin_closed = tokio::task::spawn_blocking(|| {
            let _ = std::io::stdin().lines().count();
        });
        r.run(async {
            let _ = stdin_closed.await;
        })
        .await
        .unwrap();
    });
}

fn start_responder() -> (Reaped, SocketAddr) {
    let child = Command::new(std::env::current_exe().unwrap())
        .env(CHILD_ENV, "1")
        .process_group(0)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = Reaped(child);
    let mut line = String::new();
    BufReader::new(child.0.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
    (child, line.trim().parse().unwrap())
}

/// One run: returns (CPU % of one core, samples per second, failed samples).
fn cpu_run(addr: SocketAddr, secs: u64) -> (f64, f64, usize) {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let specs = (0..TARGETS)
            .map(|i| TargetSpec {
                name: format!("t{i}"),
                target: addr,
                transport: Transport::Udp,
                interval: Duration::from_secs(1),
                timeout: Duration::from_secs(1),
                rise: 2,
                fall: 3,
                policy: Policy::default(),
                active: true,
            })
            .collect();
        let (tx, mut rx) = mpsc::channel(4096);
        let handle = engine::start(specs, tx).await.unwrap();
        let consumer = tokio::spawn(async move {
            let (mut n, mut failed) = (0usize, 0usize);
            while let Some(s) = rx.recv().await {
                n += 1;
                failed += usize::from(!s.verdict.is_healthy());
            }
            (n, failed)
        });
        // One interval of warm-up: the first probes are spread over it.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (cpu0, wall0) = (cpu_seconds(), Instant::now());
        let before: u64 = handle.status().iter().map(|t| t.samples).sum();
        tokio::time::sleep(Duration::from_secs(secs)).await;
        let after: u64 = handle.status().iter().map(|t| t.samples).sum();
        let (cpu, wall) = (cpu_seconds() - cpu0, wall0.elapsed().as_secs_f64());
        drop(handle);
        let (_, failed) = consumer.await.unwrap();
        (100.0 * cpu / wall, (after - before) as f64 / wall, failed)
    })
}

/// A kamailio answering OPTIONS on 127.0.0.1:`port`, as TESTING.md describes it.
fn start_kamailio(dir: &std::path::Path, port: u16) -> Option<Reaped> {
    let cfg = dir.join("kamailio.cfg");
    std::fs::write(
        &cfg,
        format!(
            "#!KAMAILIO\nlog_stderror=yes\nchildren=1\ndisable_tcp=yes\nlisten=udp:127.0.0.1:{port}\n\
             mpath=\"/usr/lib/x86_64-linux-gnu/kamailio/modules/\"\nloadmodule \"sl.so\"\nloadmodule \"textops.so\"\n\
             request_route {{\n  if (is_method(\"OPTIONS\")) {{ sl_send_reply(\"200\",\"OK\"); exit; }}\n\
             if (!is_method(\"ACK\")) sl_send_reply(\"501\",\"Not Implemented\");\n}}\n"
        ),
    )
    .ok()?;
    let child = Command::new("kamailio")
        .arg("-f")
        .arg(&cfg)
        .args(["-DD", "-E", "-m", "32", "-M", "4", "-P"])
        .arg(dir.join("k.pid"))
        .arg("-Y")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .ok()?;
    Some(Reaped(child))
}

fn sipsak_ms(port: u16) -> Option<f64> {
    let out = Command::new("sipsak").args(["-vv", "-s", &format!("sip:127.0.0.1:{port}")]).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let at = text.find("reply received after ")? + "reply received after ".len();
    text[at..].split_whitespace().next()?.parse().ok()
}

fn rtt_comparison() {
    let tool = |t: &str| {
        Command::new("sh").args(["-c", &format!("command -v {t}")]).output().is_ok_and(|o| o.status.success())
    };
    if !tool("kamailio") || !tool("sipsak") {
        println!("rtt: kamailio or sipsak missing; comparison skipped");
        return;
    }
    let dir = std::env::temp_dir().join(format!("pbxha-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let Some(_kamailio) = start_kamailio(&dir, port) else {
        println!("rtt: kamailio did not start; comparison skipped");
        return;
    };
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let ours: Vec<f64> = rt.block_on(async {
        // Up to 5 s for kamailio to start listening.
        let mut ready = false;
        for _ in 0..50 {
            if probe(&Probe::udp(addr, Duration::from_millis(100))).await.is_ok() {
                ready = true;
                break;
            }
        }
        assert!(ready, "kamailio on {addr} never answered");
        let mut v = Vec::new();
        for _ in 0..RTT_PROBES {
            let r = probe(&Probe::udp(addr, Duration::from_secs(2))).await.unwrap();
            v.push(r.rtt.as_secs_f64() * 1e3);
        }
        v
    });
    let theirs: Vec<f64> = (0..RTT_PROBES).filter_map(|_| sipsak_ms(port)).collect();
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "rtt against kamailio on {addr}: pbxha median {:.3} ms, sipsak -s median {:.3} ms ({} / {} probes)",
        median(ours.clone()),
        if theirs.is_empty() { f64::NAN } else { median(theirs.clone()) },
        ours.len(),
        theirs.len()
    );
}

fn main() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return serve_as_child();
    }
    let secs = std::env::var("PBXHA_BENCH_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(10);
    let (_responder, addr) = start_responder();
    let mut cpu = Vec::new();
    for run in 1..=RUNS {
        let (pct, rate, failed) = cpu_run(addr, secs);
        println!("engine run {run}: {TARGETS} targets, {rate:.0} probes/s, {failed} failed, CPU {pct:.2}% of one core");
        cpu.push(pct);
    }
    println!("engine: median CPU {:.2}% of one core over {RUNS} runs of {secs} s", median(cpu));
    rtt_comparison();
}
