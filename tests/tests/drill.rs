//! Issue 14 (2): `pbxha drill` on the lab's default profile, run in the primary's namespace
//! as an operator would run it on the node: the health rows, a switchover there and back
//! measured by the receiving node's 20 ms SIP probe, `--json`, `--dry-run`, `--one-way`,
//! the journal, and a drill that must fail because the receiving node's SIP service is
//! stopped (SIGSTOP): the group goes back, the exit is non-zero.

use std::process::Output;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pbxha_tests::lab::*;
use pbxha_tests::*;
use serde_json::Value;

/// `pbxha drill ARGS...` in `node`'s namespace, with `node`'s config.
fn drill(lab: &TestLab, node: &str, args: &[&str]) -> Output {
    let exe = pbxha();
    let config = lab.config(node);
    let mut argv = vec![exe.to_str().expect("a UTF-8 path"), "-c", config.to_str().expect("a UTF-8 path"), "drill"];
    argv.extend_from_slice(args);
    lab.exec(node, &argv)
}

/// The one JSON object of `drill --json`.
fn report(out: &Output) -> Value {
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim()).unwrap_or_else(|e| {
        panic!("drill --json printed no JSON object ({e}):\n{text}\n{}", String::from_utf8_lossy(&out.stderr))
    })
}

fn row<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["rows"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["name"] == name))
        .unwrap_or_else(|| panic!("no row `{name}` in {report:#}"))
}

fn moves(report: &Value) -> Vec<(String, String, Option<u64>)> {
    report["moves"]
        .as_array()
        .unwrap_or_else(|| panic!("no moves in {report:#}"))
        .iter()
        .map(|m| {
            (
                m["from"].as_str().unwrap_or("").to_string(),
                m["to"].as_str().unwrap_or("").to_string(),
                m["outage_ms"].as_u64(),
            )
        })
        .collect()
}

#[test]
fn a_drill_moves_the_group_there_and_back_and_measures_both_outages() {
    if !prerequisites(&["ip", "iptables"]) {
        return;
    }
    let lab = TestLab::up();
    let (p, s) = (lab.p(), lab.s());
    let watch = SipWatch::start(&lab);
    let out = drill(&lab, p, &["--json"]);
    let r = report(&out);
    assert!(out.status.success(), "the drill failed: {r:#}{}", lab.logs());
    assert_eq!(r["passed"], true, "{r:#}");
    for name in ["heartbeats", "config", "sip on the vip", "outbox"] {
        let row = row(&r, name);
        assert_eq!(row["passed"], true, "{row}");
        assert!(row["detail"].as_str().is_some_and(|d| !d.is_empty()), "{row}");
    }
    assert!(row(&r, "config")["detail"].as_str().unwrap_or("").contains("identical"), "{r:#}");
    assert_eq!(row(&r, &format!("switchover {p} -> {s}"))["passed"], true);
    assert_eq!(row(&r, &format!("switchover {s} -> {p}"))["passed"], true);
    let m = moves(&r);
    assert_eq!(m.iter().map(|(f, t, _)| (f.as_str(), t.as_str())).collect::<Vec<_>>(), [(p, s), (s, p)], "{r:#}");
    for (from, to, outage) in &m {
        let ms = outage.unwrap_or_else(|| panic!("the move {from} -> {to} has no outage: {r:#}"));
        assert!(ms < 1000, "the move {from} -> {to} was out {ms} ms: {r:#}");
    }
    lab.wait_primary(p);
    // The asks crossed both links with nothing dropped: every copy but the first is ignored,
    // not counted as a replay.
    for node in ["a", "b"] {
        let status = lab.node(node).unwrap_or_else(|| panic!("{node}'s status"));
        for link in status["heartbeat"]["links"].as_array().into_iter().flatten() {
            let drops = link["drops"].as_object().unwrap_or_else(|| panic!("no drops in {link}"));
            assert!(drops.values().all(|v| v == 0), "{node}: {link}");
        }
    }
    // The client saw the other node answer, then the first again.
    let seen = watch.stop();
    let back = seen.answerers.windows(3).any(|w| w == [p, s, p]);
    assert!(back, "the client's SIP probe saw {:?}, not {p}, {s}, {p}", seen.answerers);
    // The journal has it, and `pbxha history` shows it.
    let history = pbxha_cmd(&["-c", lab.config(p).to_str().expect("a UTF-8 path"), "history"]);
    let text = String::from_utf8_lossy(&history.stdout);
    assert!(text.contains(&format!("drill on {p}")) && text.contains("PASS"), "{text}");
    // The text report names every row and the outages.
    let out = drill(&lab, p, &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains(&format!("move {p} -> {s}: outage")) && text.contains("PASS  heartbeats"), "{text}");
    lab.finish();
}

#[test]
fn dry_run_moves_nothing_and_one_way_moves_once() {
    if !prerequisites(&["ip", "iptables"]) {
        return;
    }
    let lab = TestLab::up();
    let (p, s) = (lab.p(), lab.s());
    let sampler = lab.sampler();
    let out = drill(&lab, p, &["--dry-run", "--json"]);
    let r = report(&out);
    assert!(out.status.success(), "{r:#}");
    assert!(moves(&r).is_empty(), "{r:#}");
    assert!(r["rows"]
        .as_array()
        .is_some_and(|rows| rows.iter().all(|x| !x["name"].as_str().unwrap_or("").starts_with("switchover"))));
    lab.assert_roles_stay(p, s, Duration::from_secs(1));
    let out = drill(&lab, p, &["--one-way", "--json"]);
    let r = report(&out);
    assert!(out.status.success(), "{r:#}{}", lab.logs());
    let m = moves(&r);
    assert_eq!(m.len(), 1, "{r:#}");
    assert_eq!((m[0].0.as_str(), m[0].1.as_str()), (p, s));
    lab.wait_primary(s);
    let report = sampler.finish(&lab);
    assert_eq!(report.moves, 1, "the VIP moved {} times: {:?}", report.moves, report.timeline);
    lab.finish();
}

/// SIGSTOPs every process of `node` whose command line has `needle` until stopped, for at
/// most `limit`; returns what it stopped (to SIGCONT at the end).
fn keep_stopped(
    lab: &TestLab,
    node: &str,
    needle: &'static str,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Vec<i32>> {
    let ns = lab.ns(node);
    std::thread::spawn(move || {
        let until = Instant::now() + Duration::from_secs(120);
        let mut stopped = Vec::new();
        while !stop.load(Ordering::Relaxed) && Instant::now() < until {
            let pids = std::process::Command::new("ip").args(["netns", "pids", &ns]).output();
            let text = pids.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
            for pid in text.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                if !stopped.contains(&pid) && String::from_utf8_lossy(&cmdline).contains(needle) {
                    // SAFETY: kill(2) on a PID just read from the lab node's namespace.
                    unsafe { libc::kill(pid, libc::SIGSTOP) };
                    stopped.push(pid);
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        stopped
    })
}

#[test]
fn a_drill_whose_receiver_does_not_answer_moves_the_group_back_and_fails() {
    if !prerequisites(&["ip", "iptables"]) {
        return;
    }
    let lab = TestLab::up();
    let (p, s) = (lab.p(), lab.s());
    // The SIP service on the secondary runs only once it holds the group: each one it
    // starts is stopped as it appears, as a hung PBX would be.
    let stop = Arc::new(AtomicBool::new(false));
    let stopper = keep_stopped(&lab, s, "sip-responder", stop.clone());
    let out = drill(&lab, p, &["--json"]);
    stop.store(true, Ordering::Relaxed);
    let stopped = stopper.join().expect("the stopper thread panicked");
    for pid in &stopped {
        // SAFETY: kill(2) on the PIDs this test stopped.
        unsafe { libc::kill(*pid, libc::SIGCONT) };
    }
    let r = report(&out);
    assert!(!stopped.is_empty(), "no SIP service was stopped on {s}: {r:#}");
    assert!(!out.status.success(), "the drill passed though {s}'s SIP was stopped: {r:#}");
    assert_eq!(r["passed"], false);
    let there = row(&r, &format!("switchover {p} -> {s}"));
    assert_eq!(there["passed"], false, "{there}");
    assert!(there["detail"].as_str().unwrap_or("").contains("does not answer"), "{there}");
    assert_eq!(row(&r, &format!("switchover {s} -> {p}"))["passed"], true, "{r:#}");
    let m = moves(&r);
    assert_eq!(m.last().map(|(_, t, _)| t.as_str()), Some(p), "{r:#}");
    lab.wait_primary(p);
    lab.finish();
}
