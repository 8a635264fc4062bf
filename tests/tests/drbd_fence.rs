//! DRBD fencing between two real `pbxha run` daemons on 127.0.0.1 and 127.0.0.2. There is no
//! DRBD kernel module here, so `drbdadm` and `drbdsetup` are small scripts first on each
//! daemon's PATH: they record their argv and print `drbdsetup status --json` in drbd-utils 9's
//! shape (see replica/src/drbd/status.rs), keeping each node's role in a file.
//! `pbxha replica fence-peer` on the primary must exit 4 (peer outdated) while the peer is
//! alive, and 5 (unreachable) once it is killed; on the secondary, 6 (the peer is Primary).
//! A peer whose DRBD refuses to outdate while it still sees the connection is retried until
//! it gives in; one that keeps refusing while its heartbeats arrive is never reported
//! unreachable (5), only as a failure (1), which makes DRBD change nothing.
//! `pbxha replica split-brain` puts its node in fault, and so does a split-brain helper call
//! seen by the daemon's `drbdsetup events2` follower; either alert shows both nodes' DRBD
//! state, the peer's as its heartbeat carries it.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use pbxha_tests::*;

/// Records argv in $FAKE_DRBD_DIR/argv and keeps the role in $FAKE_DRBD_DIR/role. While
/// $FAKE_DRBD_DIR/refusals holds a number above 0, `outdate` counts it down and fails as
/// drbdadm 9 does when DRBD still sees the peer: drbdsetup's message for
/// SS_CONNECTED_OUTDATES and its exit code 11 (drbdsetup.c maps no other code to it).
const FAKE_DRBDADM: &str = r#"#!/bin/sh
echo "drbdadm $*" >> "$FAKE_DRBD_DIR/argv"
if [ "$1" = outdate ]; then
  left=$(cat "$FAKE_DRBD_DIR/refusals" 2>/dev/null || echo 0)
  if [ "$left" -gt 0 ]; then
    echo $((left - 1)) > "$FAKE_DRBD_DIR/refusals"
    echo "$2: State change failed: (-6) Refusing to be Outdated while Connected" >&2
    exit 11
  fi
fi
case "$1" in
  primary) echo Primary > "$FAKE_DRBD_DIR/role" ;;
  secondary) echo Secondary > "$FAKE_DRBD_DIR/role" ;;
  outdate) echo Outdated > "$FAKE_DRBD_DIR/disk" ;;
esac
exit 0
"#;

/// `events2` ends its initial dump, then prints the helper call DRBD 9 makes on a split
/// brain (as in replica/src/drbd/events.rs's captured sample) whenever
/// $FAKE_DRBD_DIR/split-brain appears. It exits once its daemon is gone (a SIGKILLed daemon
/// cannot kill it) and after 60 s at most; the follower restarts it.
const FAKE_DRBDSETUP: &str = r#"#!/bin/sh
echo "drbdsetup $*" >> "$FAKE_DRBD_DIR/argv"
if [ "$1" = events2 ]; then
  echo "exists -"
  i=0
  while [ $i -lt 600 ] && kill -0 "$PPID" 2>/dev/null; do
    if [ -f "$FAKE_DRBD_DIR/split-brain" ]; then
      rm -f "$FAKE_DRBD_DIR/split-brain"
      echo "call helper name:r0 peer-node-id:0 conn-name:a helper:split-brain"
    fi
    sleep 0.1
    i=$((i+1))
  done
  exit 0
fi
role=$(cat "$FAKE_DRBD_DIR/role" 2>/dev/null || echo Secondary)
disk=$(cat "$FAKE_DRBD_DIR/disk" 2>/dev/null || echo UpToDate)
printf '[{"name":"r0","node-id":0,"role":"%s","suspended":false,"devices":[{"volume":0,"minor":0,"disk-state":"%s"}],"connections":[]}]\n' "$role" "$disk"
"#;

struct Pair {
    dir: tempfile::TempDir,
}

impl Pair {
    fn new(port: u16) -> Pair {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("bin")).unwrap();
        for (name, text) in [("drbdadm", FAKE_DRBDADM), ("drbdsetup", FAKE_DRBDSETUP)] {
            let path = d.join("bin").join(name);
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        for node in ["a", "b"] {
            std::fs::create_dir(d.join(node)).unwrap();
        }
        write_loopback_pair(d, "fence", port, |_| {
            r#"
[[resource]]
name = "data"
kind = "drbd"
resource = "r0"
"#
            .to_string()
        });
        Pair { dir }
    }

    fn config(&self, node: &str) -> PathBuf {
        self.dir.path().join(format!("{node}.toml"))
    }

    fn path_env(&self) -> String {
        format!("{}:{}", self.dir.path().join("bin").display(), std::env::var("PATH").unwrap_or_default())
    }

    fn start(&self, node: &str) -> Guard {
        let log = std::fs::File::create(self.dir.path().join(format!("{node}.log"))).unwrap();
        Guard::spawn(
            node,
            Command::new(pbxha())
                .arg("--config")
                .arg(self.config(node))
                .args(["run", "--node", node])
                .env("PATH", self.path_env())
                .env("FAKE_DRBD_DIR", self.dir.path().join(node))
                .stdout(Stdio::null())
                .stderr(log),
        )
    }

    /// What DRBD would run: the handler with DRBD_RESOURCE set.
    fn fence_peer(&self, node: &str) -> (Option<i32>, String) {
        let out = Command::new(pbxha())
            .arg("--config")
            .arg(self.config(node))
            .args(["replica", "fence-peer"])
            .env("DRBD_RESOURCE", "r0")
            .output()
            .expect("running pbxha replica fence-peer");
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        (out.status.code(), text)
    }

    fn argv(&self, node: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(node).join("argv")).unwrap_or_default()
    }

    fn log(&self, node: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{node}.log"))).unwrap_or_default()
    }
}

fn role(status: &serde_json::Value) -> &str {
    status["role"].as_str().unwrap_or("")
}

fn settled(pair: &Pair) {
    wait_for(Duration::from_secs(20), "a primary", || status_json(&pair.config("a")).filter(|s| role(s) == "primary"));
    wait_for(Duration::from_secs(20), "b secondary", || {
        status_json(&pair.config("b")).filter(|s| role(s) == "secondary")
    });
}

#[test]
fn fence_peer_outdates_a_live_secondary_and_reports_a_dead_one_unreachable() {
    let pair = Pair::new(free_udp_port());
    let _a = pair.start("a");
    let mut b = pair.start("b");
    settled(&pair);
    assert!(pair.argv("a").contains("drbdadm primary r0"), "a promoted its disk: {}", pair.argv("a"));

    let (code, text) = pair.fence_peer("a");
    assert_eq!(code, Some(4), "{text}\n--- b's log:\n{}", pair.log("b"));
    assert!(text.contains("outdated"), "{text}");
    assert!(pair.argv("b").contains("drbdadm outdate r0"), "b outdated its disk: {}", pair.argv("b"));

    // The secondary asking about the primary: refused, the primary keeps its disk.
    let (code, text) = pair.fence_peer("b");
    assert_eq!(code, Some(6), "{text}");
    assert!(!pair.argv("a").contains("outdate"), "{}", pair.argv("a"));

    // DRBD's split-brain handler on b: b goes to fault with the reason, a keeps the group.
    let out = Command::new(pbxha())
        .arg("--config")
        .arg(pair.config("b"))
        .args(["replica", "split-brain"])
        .env("DRBD_RESOURCE", "r0")
        .env("PATH", pair.path_env())
        .env("FAKE_DRBD_DIR", pair.dir.path().join("b"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let s = wait_for(Duration::from_secs(10), "b in fault", || {
        status_json(&pair.config("b")).filter(|s| role(s) == "fault")
    });
    assert!(s["faults"].to_string().contains("DRBD split brain on `r0`"), "{s:#}");
    assert_eq!(role(&status_json(&pair.config("a")).expect("a answers")), "primary");

    b.signal(libc::SIGKILL);
    assert!(b.wait_exit(Duration::from_secs(5)));
    wait_for(Duration::from_secs(10), "a to declare b dead", || {
        status_json(&pair.config("a")).filter(|s| s["peer"]["alive"] == false)
    });
    let (code, text) = pair.fence_peer("a");
    assert_eq!(code, Some(5), "{text}");
    assert!(text.contains("dead"), "{text}");
}

#[test]
fn an_events2_split_brain_faults_the_node_and_reports_both_sides() {
    let pair = Pair::new(free_udp_port());
    let _a = pair.start("a");
    let _b = pair.start("b");
    settled(&pair);
    // a's heartbeat carries its DRBD role and disk (read every few seconds).
    wait_for(Duration::from_secs(20), "b to hear a's DRBD state", || {
        status_json(&pair.config("b"))
            .filter(|s| s["peer"]["last"]["drbd"] == serde_json::json!({"role": "primary", "disk": "up-to-date"}))
    });

    std::fs::write(pair.dir.path().join("b").join("split-brain"), "").unwrap();
    let s = wait_for(Duration::from_secs(20), "b in fault", || {
        status_json(&pair.config("b")).filter(|s| role(s) == "fault")
    });
    assert!(s["faults"].to_string().contains("DRBD split brain on `r0`"), "{s:#}");
    let log = pair.log("b");
    assert!(
        log.contains("local: r0 role:Secondary disk:UpToDate") && log.contains("peer: r0 role:Primary disk:UpToDate"),
        "the split-brain record shows both sides:\n{log}"
    );
    assert_eq!(role(&status_json(&pair.config("a")).expect("a answers")), "primary");
}

#[test]
fn fence_peer_without_a_daemon_refuses() {
    let pair = Pair::new(free_udp_port());
    let (code, text) = pair.fence_peer("a");
    // Not 4 or 5: DRBD takes any other code as a broken handler and refuses the change.
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("not running"), "{text}");
}

fn outdate_attempts(pair: &Pair, node: &str) -> usize {
    pair.argv(node).lines().filter(|l| *l == "drbdadm outdate r0").count()
}

/// A settled pair whose b refuses its first `refusals` outdates, with both daemons.
fn refusing_pair(port: u16, refusals: u32) -> (Pair, [Guard; 2]) {
    let pair = Pair::new(port);
    std::fs::write(pair.dir.path().join("b").join("refusals"), format!("{refusals}\n")).unwrap();
    let daemons = [pair.start("a"), pair.start("b")];
    settled(&pair);
    (pair, daemons)
}

#[test]
fn an_outdate_refused_while_connected_is_retried_until_it_succeeds() {
    let (pair, _daemons) = refusing_pair(28594, 1);
    let (code, text) = pair.fence_peer("a");
    assert_eq!(code, Some(4), "{text}\n--- b's log:\n{}", pair.log("b"));
    assert_eq!(outdate_attempts(&pair, "b"), 2, "refused once, then outdated: {}", pair.argv("b"));
    assert!(pair.log("b").contains("Refusing to be Outdated while Connected"), "{}", pair.log("b"));
}

#[test]
fn a_live_peer_that_keeps_refusing_is_not_reported_unreachable() {
    let (pair, _daemons) = refusing_pair(28694, 1000);
    let (code, text) = pair.fence_peer("a");
    assert_ne!(code, Some(5), "a live peer reported dead: {text}");
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("did not confirm"), "{text}");
    assert_eq!(
        status_json(&pair.config("a")).expect("a answers")["peer"]["alive"],
        true,
        "b's heartbeats arrived throughout"
    );
    // 3 dead times of 600 ms at one attempt every 300 ms.
    let tries = outdate_attempts(&pair, "b");
    assert!(tries >= 3, "b retried while asked: {}", pair.argv("b"));
    let log = pair.log("b");
    assert!(log.contains("retrying every 300 ms while the peer asks"), "{log}");
    let stopped = wait_for(Duration::from_secs(10), "b to stop retrying once a stops asking", || {
        let n = outdate_attempts(&pair, "b");
        std::thread::sleep(Duration::from_secs(1));
        (outdate_attempts(&pair, "b") == n).then_some(n)
    });
    assert!(stopped < 30, "retries are bounded by the request: {stopped}");
    assert!(pair.log("b").contains("stopped retrying"), "{}", pair.log("b"));
}
