//! SIP-aware failover in the lab, with kamailio as the PBX on the VIP: a hung PBX (its
//! process group stopped, so the process lives but SIP is silent) is restarted locally, and
//! when restarts do not help the group moves and the client's OPTIONS to the VIP is
//! answered by the other node; a PBX that answers OPTIONS with 404 is healthy.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use pbxha_tests::{have, is_root, pbxha, require, status_json, wait_for};

const VIP: &str = "198.51.100.100";
/// Generous: the box is shared with other builds.
const SETTLE: Duration = Duration::from_secs(60);

/// A lab under its own namespace prefix and state directory; `lab down` on drop, after
/// waking every stopped kamailio so nothing is left frozen.
struct Lab {
    prefix: String,
    dir: tempfile::TempDir,
}

impl Lab {
    fn up(tag: &str) -> Option<Lab> {
        if !require(is_root(), "root (network namespaces)")
            || !require(have("ip"), "iproute2 `ip`")
            || !require(have("kamailio"), "kamailio")
        {
            return None;
        }
        let lab = Lab {
            prefix: format!("sf{tag}{}", std::process::id() % 1000),
            dir: tempfile::tempdir().expect("temp dir"),
        };
        let out = lab.pbxha(&["lab", "up", "--pbx", "kamailio"]);
        assert!(out.status.success(), "lab up failed: {}", String::from_utf8_lossy(&out.stderr));
        Some(lab)
    }

    fn pbxha(&self, args: &[&str]) -> Output {
        Command::new(pbxha())
            .args(args)
            .env("PBXHA_LAB_PREFIX", &self.prefix)
            .env("PBXHA_LAB_DIR", self.dir.path())
            .output()
            .expect("running pbxha")
    }

    fn config(&self, node: &str) -> PathBuf {
        self.dir.path().join(format!("{node}.toml"))
    }

    /// The node that answers the client's OPTIONS on the VIP, with the status code.
    fn vip_answer(&self) -> Option<(String, String)> {
        let exe = pbxha();
        let exe = exe.to_string_lossy();
        let out = self.pbxha(&["lab", "exec", "client", "--", &exe, "sip-probe", "--timeout-ms", "1500", VIP]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let first = text.lines().next()?;
        let node = first.rsplit_once("answered by node ")?.1.trim().to_string();
        let code = first.split_whitespace().next()?.to_string();
        Some((node, code))
    }

    /// kamailio processes in `node`'s namespace: (pid, pgid, stopped).
    fn kamailios(&self, node: &str) -> Vec<(i32, i32, bool)> {
        let out = Command::new("ip").args(["netns", "pids", &format!("{}{node}", self.prefix)]).output();
        let Ok(out) = out else { return Vec::new() };
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
            .filter_map(|pid| {
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
                if !cmdline.starts_with(b"kamailio\0") {
                    return None;
                }
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
                // Fields after the parenthesised command: state, ppid, pgrp.
                let rest: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
                let stopped = rest.first().is_some_and(|s| *s == "T");
                Some((pid, rest.get(2)?.parse().ok()?, stopped))
            })
            .collect()
    }

    /// Sends `sig` to every kamailio process group in `node` (by PGID only).
    fn signal_groups(&self, node: &str, sig: i32, only_running: bool) -> usize {
        let mut groups: Vec<i32> = self
            .kamailios(node)
            .into_iter()
            .filter(|(_, _, stopped)| !(only_running && *stopped))
            .map(|(_, pgid, _)| pgid)
            .collect();
        groups.sort_unstable();
        groups.dedup();
        for pgid in &groups {
            // SAFETY: kill(2) on a process group this test's lab started.
            unsafe {
                libc::kill(-pgid, sig);
            }
        }
        groups.len()
    }

    fn log(&self, node: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{node}.log"))).unwrap_or_default()
    }

    /// Waits until `a` is primary with the `pbx` probe up and the VIP answered by a.
    fn wait_ready(&self) {
        wait_for(SETTLE, "a primary with its PBX probe up", || {
            let s = status_json(&self.config("a"))?;
            let pbx = s["probes"].as_array()?.iter().find(|p| p["name"] == "pbx")?.clone();
            (s["role"] == "primary" && pbx["state"] == "up").then_some(())
        });
        wait_for(SETTLE, "the VIP answered by a", || (self.vip_answer()?.0 == "a").then_some(()));
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for node in ["a", "b"] {
            self.signal_groups(node, libc::SIGCONT, false);
        }
        let out = self.pbxha(&["lab", "down"]);
        if !out.status.success() {
            eprintln!("lab down failed: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
}

#[test]
fn a_hung_pbx_is_restarted_then_handed_over_and_the_peer_answers_the_vip() {
    let Some(lab) = Lab::up("h") else { return };
    lab.wait_ready();
    // Keep the PBX on a hung: every kamailio a local restart brings up is stopped too, as a
    // PBX that hangs again on every start would be.
    let until = Instant::now() + Duration::from_secs(180);
    let mut stopped = 0;
    let answer = loop {
        assert!(Instant::now() < until, "b never answered the VIP; a's log:\n{}", lab.log("a"));
        stopped += lab.signal_groups("a", libc::SIGSTOP, true);
        if let Some(answer) = lab.vip_answer().filter(|(node, _)| node == "b") {
            break answer;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(answer.1, "200");
    let log = lab.log("a");
    assert!(log.contains("runs but its SIP stack does not answer"), "{log}");
    // [group] max-restarts = 2 in the lab: each restart is a stop and a start line.
    let restarts = log.matches("action=\"restart\"").count() / 2;
    assert!((1..=2).contains(&restarts), "{restarts} restarts:\n{log}");
    assert!(stopped > restarts, "the restarted PBX was not hung again ({stopped} stops)");
    let b = status_json(&lab.config("b")).expect("b's status");
    assert_eq!(b["role"], "primary", "{b:#}");
    let a = status_json(&lab.config("a")).expect("a's status");
    assert_ne!(a["role"], "primary", "{a:#}");
}

#[test]
fn a_pbx_answering_404_to_options_stays_primary() {
    let Some(lab) = Lab::up("n") else { return };
    lab.wait_ready();
    // Same kamailio, now answering OPTIONS with 404; the exec service restarts it once.
    let cfg = lab.dir.path().join("kamailio-a.cfg");
    let text = std::fs::read_to_string(&cfg).expect("kamailio config");
    assert!(text.contains("sl_send_reply(\"200\", \"OK\")"), "{text}");
    std::fs::write(&cfg, text.replace("sl_send_reply(\"200\", \"OK\")", "sl_send_reply(\"404\", \"Not Found\")"))
        .unwrap();
    assert!(lab.signal_groups("a", libc::SIGTERM, true) > 0);
    wait_for(SETTLE, "a's kamailio answering 404 on the VIP", || {
        (lab.vip_answer()? == ("a".to_string(), "404".to_string())).then_some(())
    });
    // Longer than the probe's fall (3 × 1 s) plus a monitor interval, several times over.
    let until = Instant::now() + Duration::from_secs(12);
    while Instant::now() < until {
        let s = status_json(&lab.config("a")).expect("a's status");
        assert_eq!(s["role"], "primary", "{s:#}");
        let pbx = s["probes"].as_array().and_then(|p| p.iter().find(|p| p["name"] == "pbx")).cloned();
        let pbx = pbx.expect("pbx probe in status");
        assert_ne!(pbx["state"], "down", "{pbx:#}");
        std::thread::sleep(Duration::from_millis(500));
    }
    let s = status_json(&lab.config("a")).expect("a's status");
    let pbx = s["probes"].as_array().and_then(|p| p.iter().find(|p| p["name"] == "pbx")).cloned().unwrap();
    assert_eq!(pbx["state"], "up", "{pbx:#}");
    assert!(pbx["recent"].as_array().unwrap().iter().any(|v| v == "404"), "{pbx:#}");
    assert_eq!(lab.vip_answer(), Some(("a".to_string(), "404".to_string())));
    let b = status_json(&lab.config("b")).expect("b's status");
    assert_eq!(b["role"], "secondary", "{b:#}");
}
