//! `[http]` on two real daemons on 127.0.0.1 and 127.0.0.2: checks, a SIP trunk probe and
//! the outbox on `/metrics` (checked by `promtool`) and on the page, `/status.json`; then
//! hostile clients (a 1 MB header, 500 idle connections, a client that never reads) against
//! the primary, which must not delay one heartbeat. The page in a real browser and the
//! metrics across a failover are tested in the lab (tests/tests/lab.rs).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pbxha_tests::web::{metrics_when, sample};
use pbxha_tests::*;

struct Pair {
    dir: tempfile::TempDir,
    http: [SocketAddr; 2],
}

impl Pair {
    /// Heartbeats on UDP `port`, each node's endpoint on TCP `port` of its own address. Each
    /// node also has a check that passes, a SIP trunk probe of `port + 1` where nothing
    /// answers, and mail to a closed port, so those metrics have something to show.
    fn new(port: u16) -> Pair {
        let dir = tempfile::tempdir().unwrap();
        let http = [format!("127.0.0.1:{port}"), format!("127.0.0.2:{port}")].map(|a| a.parse().unwrap());
        write_loopback_pair(dir.path(), "web", port, |node| {
            let listen = if node == "a" { http[0] } else { http[1] };
            format!(
                r#"{SLEEPING_WORKER}
[[check]]
name = "always"
kind = "command"
argv = ["true"]
every = "1s"
[[probe]]
name = "trunk"
role = "trunk"
target = "udp:127.0.0.1:{closed}"
interval = "200ms"
timeout = "100ms"
fall = 1
[mail]
server = "127.0.0.1"
port = {closed}
security = "none"
from = "pbxha <pbxha@example.org>"
to = ["noc@example.org"]
[http]
listen = "{listen}"
"#,
                closed = port + 1
            )
        });
        Pair { dir, http }
    }

    fn config(&self, node: &str) -> PathBuf {
        self.dir.path().join(format!("{node}.toml"))
    }

    fn log(&self, node: &str) -> PathBuf {
        self.dir.path().join(format!("{node}.log"))
    }

    fn start(&self, node: &str) -> Guard {
        run_daemon(&self.config(node), node, &self.log(node))
    }

    fn addr(&self, node: &str) -> SocketAddr {
        self.http[usize::from(node == "b")]
    }

    /// Waits until `a` is primary with the worker running and `b` is its secondary.
    fn settled(&self) {
        wait_for(Duration::from_secs(20), "a primary with its worker, b secondary", || {
            let a = status_json(&self.config("a"))?;
            let b = status_json(&self.config("b"))?;
            (a["role"] == "primary" && a["resources"][0]["state"] == "running" && b["role"] == "secondary")
                .then_some(())
        });
    }
}

/// One GET; `None` while the endpoint does not answer.
fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

/// `/metrics` of `addr` once `until` reads its value, checked by promtool, with each of
/// `expect` at its value.
fn metrics_once(addr: SocketAddr, until: (&str, f64), expect: &[(&str, f64)]) -> String {
    metrics_when(|| get(addr, "/metrics").map(|(_, m)| m), until, expect)
}

/// What the lab test (tests/tests/lab.rs, `the_status_page_and_metrics_follow_a_failover`)
/// does not show, as the lab has no checks, trunk probes or mail: those on /metrics and the
/// page; and /status.json against `pbxha status --json`, and `status --watch` frames.
#[test]
fn checks_probes_the_outbox_and_status_json_are_served() {
    if !require(have("promtool"), "promtool (Debian package prometheus)") {
        return;
    }
    let pair = Pair::new(free_udp_port());
    let _a = pair.start("a");
    let _b = pair.start("b");
    pair.settled();

    // /status.json is what `pbxha status --json` prints, as of the last snapshot (the daemon
    // publishes one a second).
    let http = wait_for(Duration::from_secs(10), "a's /status.json showing it primary", || {
        let (code, json) = get(pair.addr("a"), "/status.json")?;
        assert_eq!(code, 200, "{json}");
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        (v["role"] == "primary" && v["resources"][0]["state"] == "running").then_some(v)
    });
    let cli = status_json(&pair.config("a")).unwrap();
    let keys = |v: &serde_json::Value| v.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>()).unwrap_or_default();
    assert_eq!(keys(&http), keys(&cli));
    assert_eq!(
        (&http["node"], &http["role"], &http["resources"][0]["state"]),
        (&cli["node"], &cli["role"], &cli["resources"][0]["state"])
    );

    let metrics = metrics_once(
        pair.addr("a"),
        ("pbxha_check_up{check=\"always\"}", 1.0),
        &[("pbxha_sip_probe_up{probe=\"trunk\"}", 0.0)],
    );
    assert!(sample(&metrics, "pbxha_mail_outbox_pending").is_some(), "{metrics}");
    assert!(sample(&metrics, "pbxha_heartbeats_received_total{link=\"lo\"}").is_some_and(|n| n > 0.0), "{metrics}");

    let (code, page) = get(pair.addr("a"), "/").expect("a's status page");
    assert_eq!(code, 200, "{page}");
    assert!(page.contains("<tr class=\"check\"><td>always</td><td>up"), "{page}");
    let probe = page.split("<tr class=\"probe\">").find(|r| r.starts_with("<td>SIP trunk ("));
    assert!(probe.is_some_and(|r| r.contains("</td><td>down</td>")), "{page}");
    assert!(page.contains("<p id=\"outbox\">"), "{page}");

    // `status --watch` redraws in place: two frames, each starting at the cursor's home.
    let mut watch = Guard::spawn(
        "status --watch",
        Command::new(pbxha())
            .arg("--config")
            .arg(pair.config("a"))
            .args(["status", "--watch", "--interval", "1"])
            .stdout(Stdio::piped()),
    );
    let mut stdout = watch.child.stdout.take().unwrap();
    // Read on a thread, so a silent child cannot block the test past its deadline.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                return;
            }
        }
    });
    let mut text = String::new();
    let until = Instant::now() + Duration::from_secs(10);
    while text.matches("\x1b[H").count() < 3 && Instant::now() < until {
        if let Ok(chunk) = rx.recv_timeout(Duration::from_millis(200)) {
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
    // The second frame, whole: from its cursor-home to the next one.
    let frames: Vec<&str> = text.split("\x1b[H").collect();
    assert!(frames.len() >= 4, "fewer than three frames in 10 s: {text:?}");
    assert!(frames[2].contains("node a is primary") && frames[2].ends_with("\x1b[J"), "{:?}", frames[2]);
}

/// VmRSS and VmHWM (peak) of a process, in kB.
fn memory_kb(pid: u32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        text.lines().find_map(|l| l.strip_prefix(name)?.trim().strip_suffix(" kB")?.parse().ok()).unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

#[test]
fn hostile_clients_never_delay_a_heartbeat() {
    let pair = Pair::new(free_udp_port());
    let a = pair.start("a");
    let _b = pair.start("b");
    pair.settled();
    let addr = pair.addr("a");
    wait_for(Duration::from_secs(10), "a's endpoint", || get(addr, "/").filter(|(c, _)| *c == 200));
    let (rss_before, _) = memory_kb(a.pid());
    let late_before = [late_heartbeats(&pair.log("a")), late_heartbeats(&pair.log("b"))];
    let started = Instant::now();

    // 500 connections that never send a byte: the first ones hold every slot until the head
    // timeout, the rest are answered 503 at once without being read.
    let idle: Vec<TcpStream> =
        (0..500).filter_map(|_| TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()).collect();
    assert!(idle.len() >= 450, "only {} of 500 connections were accepted", idle.len());

    // A 1 MB header: refused with 431 after 8 KiB (or reset, if the refusal lands while the
    // rest is still being sent); never buffered.
    let big = std::thread::spawn(move || {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        let mut head = b"GET / HTTP/1.1\r\nX-Big: ".to_vec();
        head.resize(head.len() + 1024 * 1024, b'a');
        let _ = s.write_all(&head);
        let mut reply = String::new();
        let _ = s.read_to_string(&mut reply);
        reply
    });

    // A client that sends requests and never reads an answer, with a tiny receive window.
    let mut sluggards = Vec::new();
    for _ in 0..20 {
        if let Ok(s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            let _ = s.set_nodelay(true);
            let _ = (&s).write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
            sluggards.push(s);
        }
    }

    // The server closes idle connections itself at its head timeout (5 s); every one of
    // them has been answered (503) or closed within that, plus margin.
    let deadline = Instant::now() + Duration::from_secs(20);
    for mut s in idle {
        s.set_read_timeout(Some(deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(10))))
            .unwrap();
        let mut buf = [0u8; 256];
        // Ok: the 503, or end of stream from the server closing it; a timeout fails.
        let got = s.read(&mut buf);
        let closed = got.is_ok() || got.as_ref().is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset);
        assert!(closed, "an idle connection was still open after 20 s: {got:?}");
    }
    let reply = big.join().unwrap();
    assert!(reply.is_empty() || reply.starts_with("HTTP/1.1 431") || reply.starts_with("HTTP/1.1 503"), "{reply}");

    // While all that went on, the heartbeats kept their schedule both ways.
    let busy_for = started.elapsed();
    eprintln!("hostile clients for {busy_for:?}");
    let late_after = [late_heartbeats(&pair.log("a")), late_heartbeats(&pair.log("b"))];
    assert_eq!(late_after, late_before, "late heartbeats during {busy_for:?} of hostile clients");
    let s = status_json(&pair.config("b")).unwrap();
    assert!(s["role"] == "secondary" && s["last_failover"].is_null(), "b took over: {s:#}");
    assert_eq!(status_json(&pair.config("a")).unwrap()["role"], "primary");

    // Memory stayed bounded: a handful of 8 KiB head buffers, not 500 of them or the 1 MB
    // header (about 0.2 MB of growth was measured; 2 MB leaves ten times that).
    let (rss_after, peak) = memory_kb(a.pid());
    eprintln!("a's RSS {rss_before} kB before, {rss_after} kB after, peak {peak} kB");
    assert!(peak < rss_before + 2 * 1024, "peak RSS {peak} kB against {rss_before} kB before (now {rss_after} kB)");

    // And the endpoint serves again once they are gone.
    drop(sluggards);
    let (code, _) = wait_for(Duration::from_secs(15), "a's endpoint answering again", || get(addr, "/metrics"));
    assert_eq!(code, 200);
}
