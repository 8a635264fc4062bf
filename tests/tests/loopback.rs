//! Two real `pbxha run` daemons on 127.0.0.1 and 127.0.0.2 exchanging authenticated
//! heartbeats. Killing the primary makes the secondary start its `service` resource, a real
//! process, and `pbxha status --json` shows it.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use pbxha_tests::*;

struct Pair {
    dir: tempfile::TempDir,
}

impl Pair {
    fn new(port: u16) -> Pair {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display().to_string();
        // The service writes its own PID so the test can see the very process pbxha runs.
        write_loopback_pair(dir.path(), "loop", port, |node| {
            format!(
                r#"
[[resource]]
name = "worker"
kind = "service"
exec = ["sh", "-c", "echo $$ > {d}/{node}.worker.pid; exec sleep 600"]
"#
            )
        });
        Pair { dir }
    }

    fn config(&self, node: &str) -> PathBuf {
        self.dir.path().join(format!("{node}.toml"))
    }

    fn start(&self, node: &str) -> Guard {
        let log = std::fs::File::create(self.dir.path().join(format!("{node}.log"))).unwrap();
        Guard::spawn(
            node,
            Command::new(pbxha())
                .arg("--config")
                .arg(self.config(node))
                .args(["run", "--node", node])
                .stdout(Stdio::null())
                .stderr(log),
        )
    }

    fn worker_pid(&self, node: &str) -> Option<u32> {
        std::fs::read_to_string(self.dir.path().join(format!("{node}.worker.pid"))).ok()?.trim().parse().ok()
    }
}

fn role(status: &serde_json::Value) -> &str {
    status["role"].as_str().unwrap_or("")
}

fn resource_state<'a>(status: &'a serde_json::Value, name: &str) -> &'a str {
    status["resources"]
        .as_array()
        .and_then(|rs| rs.iter().find(|r| r["name"] == name))
        .and_then(|r| r["state"].as_str())
        .unwrap_or("")
}

#[test]
fn killing_the_primary_starts_the_service_on_the_secondary() {
    let pair = Pair::new(free_udp_port());
    let mut a = pair.start("a");
    let _b = pair.start("b");

    let s = wait_for(Duration::from_secs(20), "a primary with the worker running", || {
        status_json(&pair.config("a")).filter(|s| role(s) == "primary" && resource_state(s, "worker") == "running")
    });
    assert_eq!(s["peer"]["alive"], true, "{s:#}");
    let a_worker = wait_for(Duration::from_secs(5), "a's worker pid", || pair.worker_pid("a"));
    assert!(alive(a_worker));
    let b = status_json(&pair.config("b")).expect("b answers");
    assert_eq!(role(&b), "secondary", "{b:#}");
    assert_eq!(resource_state(&b, "worker"), "stopped");

    // Node death: SIGKILL, no goodbye. Its worker dies with it (PR_SET_PDEATHSIG).
    a.signal(libc::SIGKILL);
    assert!(a.wait_exit(Duration::from_secs(5)));
    wait_for(Duration::from_secs(5), "a's worker to die with its daemon", || (!alive(a_worker)).then_some(()));

    let s = wait_for(Duration::from_secs(20), "b primary with the worker running", || {
        status_json(&pair.config("b")).filter(|s| role(s) == "primary" && resource_state(s, "worker") == "running")
    });
    assert_eq!(s["peer"]["alive"], false, "{s:#}");
    assert!(s["last_failover"]["message"].as_str().unwrap_or("").contains("peer a is dead"), "{s:#}");
    let b_worker = wait_for(Duration::from_secs(5), "b's worker pid", || pair.worker_pid("b"));
    assert!(alive(b_worker), "the worker pbxha reports running is a live process");

    // The failover is in the journal, readable without the daemon. The journal's writer
    // thread may commit it a moment after the status shows the worker running.
    wait_for(Duration::from_secs(10), "the failover in b's journal (`pbxha history`)", || {
        let out = pbxha_cmd(&["--config", pair.config("b").to_str().unwrap(), "history", "--last", "1"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        (text.contains("peer a is dead") && text.contains("resource worker started")).then_some(())
    });
}

#[test]
fn sigterm_hands_over_before_deadtime_and_status_says_not_running() {
    let pair = Pair::new(free_udp_port());
    let mut a = pair.start("a");
    let _b = pair.start("b");
    wait_for(Duration::from_secs(20), "a primary", || status_json(&pair.config("a")).filter(|s| role(s) == "primary"));
    wait_for(Duration::from_secs(20), "b secondary", || {
        status_json(&pair.config("b")).filter(|s| role(s) == "secondary")
    });

    a.signal(libc::SIGTERM);
    assert!(a.wait_exit(Duration::from_secs(10)), "a stops on SIGTERM");
    let s = wait_for(Duration::from_secs(10), "b primary", || {
        status_json(&pair.config("b")).filter(|s| role(s) == "primary" && resource_state(s, "worker") == "running")
    });
    let why = s["last_failover"]["message"].as_str().unwrap_or("");
    assert!(why.contains("handed over"), "b took over because a handed over, not after deadtime: {why}");

    let out = pbxha_cmd(&["--config", pair.config("a").to_str().unwrap(), "status"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("pbxha is not running"), "{err}");
}

#[test]
fn a_readable_key_file_stops_the_daemon_naming_the_file_and_mode() {
    let pair = Pair::new(free_udp_port());
    let key = pair.dir.path().join("authkey");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out =
        Command::new(pbxha()).arg("--config").arg(pair.config("a")).args(["run", "--node", "a"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&key.display().to_string()) && err.contains("0644"), "{err}");
}

#[test]
fn check_config_reports_every_problem_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[cluster]\nname = \"x\"\nid = 1\nauth-key-file = \"/nonexistent/key\"\nfoo = 1\n[heartbeat]\ninterval = 500\ndeadtime = 900\n[[node]]\nname = \"a\"\nid = 1\n[[node]]\nname = \"a\"\nid = 2\n[[link]]\nname = \"l\"\n[link.addresses]\na = \"203.0.113.1/24\"\n",
    )
    .unwrap();
    let out = pbxha_cmd(&["check-config", "--config", path.to_str().unwrap(), "--node", "a"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    for key in ["cluster.foo", "cluster.auth-key-file", "heartbeat.deadtime", "heartbeat.warntime", "node[1].name"] {
        assert!(err.contains(key), "{key} missing from:\n{err}");
    }
    let ok = pbxha_cmd(&[
        "check-config",
        "--config",
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/pbxha.toml").to_str().unwrap(),
    ]);
    // The example's key file does not exist here: exactly that one problem.
    let err = String::from_utf8_lossy(&ok.stderr);
    assert!(err.contains("1 problem(s)") && err.contains("cluster.auth-key-file"), "{err}");
}

#[test]
fn a_corrupt_journal_is_reported_and_the_daemon_keeps_managing_the_cluster() {
    let pair = Pair::new(free_udp_port());
    std::fs::write(pair.dir.path().join("a.db"), b"this is not an SQLite database, it is a text file\n".repeat(100))
        .unwrap();
    let _a = pair.start("a");
    let _b = pair.start("b");
    let s = wait_for(Duration::from_secs(20), "a primary without its journal", || {
        status_json(&pair.config("a")).filter(|s| role(s) == "primary")
    });
    assert_eq!(s["journal"], false, "{s:#}");
    let log = std::fs::read_to_string(pair.dir.path().join("a.log")).unwrap();
    assert!(log.contains("a.db") && log.contains("not an SQLite database"), "{log}");
    let text = String::from_utf8_lossy(&pbxha_cmd(&["--config", pair.config("a").to_str().unwrap(), "status"]).stdout)
        .into_owned();
    assert!(text.contains("JOURNAL DISABLED"), "{text}");
}

#[test]
fn readiness_is_signalled_to_systemd_and_sighup_reloads_by_diff() {
    let pair = Pair::new(free_udp_port());
    let sock_path = pair.dir.path().join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    notify.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let log = std::fs::File::create(pair.dir.path().join("a.log")).unwrap();
    let a = Guard::spawn(
        "a",
        Command::new(pbxha())
            .arg("--config")
            .arg(pair.config("a"))
            .args(["run", "--node", "a"])
            .env("NOTIFY_SOCKET", &sock_path)
            .stdout(Stdio::null())
            .stderr(log),
    );
    let mut buf = [0u8; 256];
    let n = notify.recv(&mut buf).expect("a datagram on NOTIFY_SOCKET");
    assert_eq!(&buf[..n], b"READY=1");

    // A valid change is applied; an invalid file is refused and the running config kept.
    let config = pair.config("a");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace("warntime = 300", "warntime = 400")).unwrap();
    a.signal(libc::SIGHUP);
    let a_log = pair.dir.path().join("a.log");
    wait_for(Duration::from_secs(10), "the reload to be applied", || {
        std::fs::read_to_string(&a_log).ok().filter(|l| l.contains("reload: applied heartbeat")).map(|_| ())
    });
    std::fs::write(&config, text.replace("deadtime = 600", "deadtime = 150")).unwrap();
    a.signal(libc::SIGHUP);
    wait_for(Duration::from_secs(10), "the bad reload to be refused", || {
        std::fs::read_to_string(&a_log).ok().filter(|l| l.contains("keeping the running config")).map(|_| ())
    });
    let log = std::fs::read_to_string(&a_log).unwrap();
    assert!(log.contains("heartbeat.deadtime"), "the refused reload names the key at fault:\n{log}");
    assert!(status_json(&config).is_some(), "still running after a bad reload");
}

#[test]
fn a_failing_check_marked_failover_moves_the_group() {
    let pair = Pair::new(free_udp_port());
    let flag = pair.dir.path().join("a.healthy");
    std::fs::write(&flag, "").unwrap();
    let config = pair.config("a");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!(
        "\n[[check]]\nname = \"disk-ok\"\nkind = \"command\"\nargv = [\"test\", \"-e\", \"{}\"]\nevery = \"1s\"\nfall = 1\nfailover = true\n",
        flag.display()
    ));
    std::fs::write(&config, text).unwrap();
    let _a = pair.start("a");
    let _b = pair.start("b");
    wait_for(Duration::from_secs(20), "a primary", || status_json(&pair.config("a")).filter(|s| role(s) == "primary"));
    wait_for(Duration::from_secs(20), "b secondary", || {
        status_json(&pair.config("b")).filter(|s| role(s) == "secondary")
    });
    std::fs::remove_file(&flag).unwrap();
    let b = wait_for(Duration::from_secs(20), "b to take over from a failing check", || {
        status_json(&pair.config("b")).filter(|s| role(s) == "primary" && resource_state(s, "worker") == "running")
    });
    assert!(b["last_failover"]["message"].as_str().unwrap_or("").contains("handed over"), "{b:#}");
    let a = status_json(&pair.config("a")).unwrap();
    assert_eq!(role(&a), "fault", "{a:#}");
    assert!(a["faults"].to_string().contains("check `disk-ok` failing"), "{a:#}");
}

/// Issue 11: SIGHUP reaches the notifier clone the probe task was given at start. A trunk
/// probe's alert before the reload runs the old hook with the old cluster name; after a
/// reload that changes both, the next alert runs only the new hook, with the new name.
#[test]
fn sighup_gives_the_probe_alerts_the_new_hooks_and_cluster_name() {
    let pair = Pair::new(free_udp_port());
    let d = pair.dir.path().to_path_buf();
    let sip = free_udp_port();
    let hook =
        |n: u32| format!(r#"["sh", "-c", "echo \"$PBXHA_CLUSTER: $PBXHA_SUBJECT\" >> {}/hook{n}.out"]"#, d.display());
    let config = pair.config("a");
    let base = std::fs::read_to_string(&config).unwrap();
    let with = |cluster: &str, hook: &str| {
        base.replace("name = \"loop\"", &format!("name = \"{cluster}\""))
            .replace("[paths]\n", &format!("[paths]\nhooks = [{hook}]\n"))
            + &format!(
                "\n[[probe]]\nname = \"carrier\"\nrole = \"trunk\"\ntarget = \"udp:127.0.0.1:{sip}\"\ninterval = \"200ms\"\ntimeout = \"150ms\"\nrise = 1\nfall = 1\n"
            )
    };
    std::fs::write(&config, with("loop", &hook(1))).unwrap();
    let responder = |node: &str| {
        Guard::spawn(
            "sip responder",
            Command::new(pbxha())
                .args(["lab", "sip-responder", "--bind", &format!("127.0.0.1:{sip}"), "--node", node])
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )
    };
    let read = |n: u32| std::fs::read_to_string(d.join(format!("hook{n}.out"))).unwrap_or_default();
    let trunk = |s: &serde_json::Value| {
        s["probes"]
            .as_array()
            .and_then(|p| p.iter().find(|p| p["name"] == "carrier"))
            .map(|p| p["state"].as_str().unwrap_or("").to_string())
    };
    let mut carrier = responder("carrier");
    let a = pair.start("a");
    wait_for(Duration::from_secs(20), "the trunk up", || {
        status_json(&config).filter(|s| trunk(s).as_deref() == Some("up"))
    });
    carrier.child.kill().unwrap();
    carrier.child.wait().unwrap();
    let before = wait_for(Duration::from_secs(20), "the old hook to hear the trunk go down", || {
        Some(read(1)).filter(|t| t.contains("stopped answering"))
    });
    assert!(before.starts_with("loop: "), "{before}");

    std::fs::write(&config, with("loop-renamed", &hook(2))).unwrap();
    a.signal(libc::SIGHUP);
    let a_log = d.join("a.log");
    wait_for(Duration::from_secs(10), "the reload to be applied", || {
        std::fs::read_to_string(&a_log)
            .ok()
            .filter(|l| l.contains("reload: applied") && l.contains("hooks / cluster name"))
            .map(|_| ())
    });
    let _carrier = responder("carrier");
    let after = wait_for(Duration::from_secs(20), "the new hook to hear the trunk come back", || {
        Some(read(2)).filter(|t| t.contains("answers again"))
    });
    assert!(after.starts_with("loop-renamed: "), "{after}");
    assert_eq!(read(1), before, "the old hook ran after the reload");
}

/// Issue 11: a drbd resource's status reader and events2 follower start with the daemon, so
/// a reload that adds one says a restart is needed, in the log and the journal, and keeps
/// the running config whole.
#[test]
fn sighup_adding_a_drbd_resource_says_a_restart_is_needed() {
    if !require(Path::new("/usr/bin/python3").exists(), "/usr/bin/python3 (reads the journal)") {
        return;
    }
    let pair = Pair::new(free_udp_port());
    let config = pair.config("a");
    let a = pair.start("a");
    wait_for(Duration::from_secs(20), "a primary", || status_json(&config).filter(|s| role(s) == "primary"));
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text + "\n[[resource]]\nname = \"data\"\nkind = \"drbd\"\nresource = \"r0\"\n").unwrap();
    a.signal(libc::SIGHUP);
    let a_log = pair.dir.path().join("a.log");
    let line = wait_for(Duration::from_secs(10), "the reload to be refused", || {
        std::fs::read_to_string(&a_log)
            .ok()?
            .lines()
            .find(|l| l.contains("reload:") && l.contains("drbd"))
            .map(String::from)
    });
    assert!(line.contains("drbd resources changed; that needs a restart"), "{line}");
    let s = status_json(&config).unwrap();
    let names: Vec<&str> = s["resources"].as_array().unwrap().iter().filter_map(|r| r["name"].as_str()).collect();
    assert_eq!(names, ["worker"], "the running group is kept: {s:#}");
    // The journal's own table, read with Python's sqlite3 (pbxha history shows failovers only).
    let read = "import sqlite3, sys\nfor (m,) in sqlite3.connect(sys.argv[1]).execute('SELECT message FROM journal'): print(m)";
    let db = pair.dir.path().join("a.db");
    let journal = wait_for(Duration::from_secs(10), "the refusal in the journal", || {
        let out = Command::new("/usr/bin/python3").args(["-c", read]).arg(&db).output().ok()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.contains("config not reloaded: drbd resources changed").then_some(text)
    });
    assert!(!journal.contains("config reloaded"), "{journal}");
}

/// Issue 10, item 5: a restarted peer is heard whatever its clock says, because boots are
/// ordered by the boot counter stored beside its journal and not by send times. b restarts
/// with its clock an hour behind, an hour ahead, then put right (the test-only
/// PBXHA_TEST_CLOCK_OFFSET_SECS shifts the clock its counter is seeded from), and a hears
/// every start. Then b loses its counter file while its clock is behind the one it last ran
/// with: a refuses its heartbeats as replays and its log names the counter b needs; writing
/// a higher one into b's counter file and restarting b, the operator's way out, lets it join.
#[test]
fn a_peer_restarting_with_its_clock_behind_or_ahead_is_heard() {
    let pair = Pair::new(free_udp_port());
    let _a = pair.start("a");
    let a_status = || status_json(&pair.config("a"));
    let counter_file = pair.dir.path().join("b.db.boot-counter");
    let counter =
        || -> u64 { std::fs::read_to_string(&counter_file).ok().and_then(|t| t.trim().parse().ok()).unwrap_or(0) };
    let replayed = || a_status().map_or(0, |s| s["heartbeat"]["links"][0]["drops"]["replayed"].as_u64().unwrap_or(0));
    let start_b = |offset: i64| {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(pair.dir.path().join("b.log")).unwrap();
        Guard::spawn(
            "b",
            Command::new(pbxha())
                .arg("--config")
                .arg(pair.config("b"))
                .args(["run", "--node", "b"])
                .env("PBXHA_TEST_CLOCK_OFFSET_SECS", offset.to_string())
                .stdout(Stdio::null())
                .stderr(log),
        )
    };
    let heard = |what: &str| {
        wait_for(Duration::from_secs(20), what, || {
            a_status().filter(|s| s["peer"]["alive"] == true && s["peer"]["last"]["role"] == "secondary")
        })
    };
    let stop = |mut b: Guard| {
        b.signal(libc::SIGKILL);
        assert!(b.wait_exit(Duration::from_secs(5)));
        wait_for(Duration::from_secs(10), "a to declare b dead", || a_status().filter(|s| s["peer"]["alive"] == false));
    };

    let mut b = start_b(0);
    heard("a to hear b's first start");
    let mut last = counter();
    for offset in [-3600, 3600, 0] {
        stop(b);
        b = start_b(offset);
        heard(&format!("a to hear b restarted with its clock {offset:+} s off"));
        let now = counter();
        assert!(now > last, "b's counter grew across the restart ({last} -> {now}, clock {offset:+} s)");
        last = now;
    }
    assert_eq!(replayed(), 0, "no heartbeat of a new boot was taken for a replay");

    // Lost state, clock behind what it last ran with: refused, and a says what to do.
    stop(b);
    std::fs::remove_file(&counter_file).unwrap();
    b = start_b(-60);
    wait_for(Duration::from_secs(10), "a to drop b's heartbeats as replayed", || (replayed() >= 3).then_some(()));
    let a_log = pair.dir.path().join("a.log");
    let warning = wait_for(Duration::from_secs(5), "a's warning", || {
        std::fs::read_to_string(&a_log).ok()?.lines().find(|l| l.contains("as replayed: boot")).map(str::to_string)
    });
    assert!(
        warning.contains(&format!("boot {last} was already heard")) && warning.contains(".boot-counter"),
        "{warning}"
    );
    assert_eq!(a_status().expect("a answers")["peer"]["alive"], false, "b's refused heartbeats keep it dead");
    let b_log = std::fs::read_to_string(pair.dir.path().join("b.log")).unwrap();
    assert!(b_log.contains("boot counter seeded from the clock") && b_log.contains("does not exist"), "{b_log}");

    b.signal(libc::SIGKILL);
    assert!(b.wait_exit(Duration::from_secs(5)));
    std::fs::write(&counter_file, format!("{}\n", last + 1)).unwrap();
    let _b = start_b(-60);
    heard("a to hear b after its counter file was set above the last boot heard");
    assert_eq!(counter(), last + 2);
}
