//! Issue 7 on `pbxha lab`: every node death in a real two-node cluster (network namespaces)
//! mails exactly one failover report, with its timeline, to aiosmtpd running in the lab's
//! gateway namespace; and the benchmark "takeover decision → SMTP 250". Issue 14: a
//! scheduled drill check mails its report there too.
//!
//! The decision's time is the report's id (`failover #<unix ms>`, the journal time of the
//! decision on the new primary); the 250's time is the mtime of the file aiosmtpd's Mailbox
//! handler writes just before it answers 250 to DATA. Both are this host's clock. The
//! numbers are printed (`cargo test -p pbxha-tests --test lab_mail -- --nocapture`), not
//! asserted: a loaded machine must slow the test, not fail it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use pbxha_tests::*;

const PYTHON: &str = "/usr/bin/python3";
/// The lab's gateway (`pbxha_lab::plan::GATEWAY`), where the SMTP server listens.
const SMTP: &str = "198.51.100.1:2525";
/// Failovers measured: alternately a → b and b → a.
const RUNS: usize = 5;
const SETTLE: Duration = Duration::from_secs(30);

/// A lab under its own prefix and state directory; `lab down` on drop, also on failure.
struct Lab {
    prefix: String,
    tmp: tempfile::TempDir,
}

impl Lab {
    fn state_dir(&self) -> PathBuf {
        self.tmp.path().join("lab")
    }

    fn config(&self, node: &str) -> PathBuf {
        self.state_dir().join(format!("{node}.toml"))
    }

    fn lab(&self, args: &[&str]) -> Output {
        Command::new(pbxha())
            .arg("lab")
            .args(args)
            .env("PBXHA_LAB_PREFIX", &self.prefix)
            .env("PBXHA_LAB_DIR", self.state_dir())
            .stdin(Stdio::null())
            .output()
            .expect("running pbxha lab")
    }

    fn lab_ok(&self, args: &[&str]) {
        let out = self.lab(args);
        assert!(
            out.status.success(),
            "`pbxha lab {}` failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn wait_role(&self, node: &str, role: &str) {
        wait_for(SETTLE, &format!("{node} {role} with its group settled"), || {
            status_json(&self.config(node))
                .filter(|s| s["role"] == role && (s["group"] == "running" || s["group"] == "stopped"))
                .map(|_| ())
        });
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = self.lab(&["down"]);
    }
}

/// Every mail as (subject, body, when the server wrote it), oldest first.
fn mails(maildir: &Path) -> Vec<(String, String, u64)> {
    // Read straight from new/ (nothing moves mails to cur/) so each file's mtime is at hand.
    let script = "import json, os, sys\n\
        from email import message_from_binary_file\n\
        from email.header import decode_header, make_header\n\
        new = os.path.join(sys.argv[1], 'new')\n\
        out = []\n\
        for name in os.listdir(new):\n\
        \x20   path = os.path.join(new, name)\n\
        \x20   with open(path, 'rb') as f:\n\
        \x20       m = message_from_binary_file(f)\n\
        \x20   subject = str(make_header(decode_header(m['Subject'] or '')))\n\
        \x20   body = m.get_payload(decode=True).decode('utf-8', 'replace')\n\
        \x20   out.append([subject, body, os.stat(path).st_mtime_ns // 1000000])\n\
        print(json.dumps(sorted(out, key=lambda m: m[2])))\n";
    if !maildir.join("new").exists() {
        return Vec::new();
    }
    let out = Command::new(PYTHON).args(["-c", script]).arg(maildir).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn decision_ms(body: &str) -> u64 {
    body.split("failover #")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("no `failover #<ms>` in\n{body}"))
}

/// A lab (its prefix made of `tag`) with a running primary and aiosmtpd in its gateway namespace, writing to the
/// maildir returned; the `[mail]` table that sends there. `None` when a prerequisite is
/// missing (outside CI).
fn lab_with_smtp(tag: &str) -> Option<(Lab, Guard, PathBuf, String)> {
    let aiosmtpd =
        Command::new(PYTHON).args(["-c", "import aiosmtpd"]).stderr(Stdio::null()).status().is_ok_and(|s| s.success());
    if !require(is_root(), "root (network namespaces)")
        || !require(have("ip"), "ip")
        || !require(aiosmtpd, "/usr/bin/python3 with aiosmtpd (Debian python3-aiosmtpd)")
    {
        return None;
    }
    let lab = Lab { prefix: format!("wd{tag}{}-", std::process::id() % 100_000), tmp: tempfile::tempdir().unwrap() };
    lab.lab_ok(&["up"]);
    lab.wait_role("a", "primary");
    let maildir = lab.tmp.path().join("maildir");
    let gw = format!("{}gw", lab.prefix);
    let (host, port) = SMTP.split_once(':').unwrap();
    let smtp = Guard::spawn(
        "aiosmtpd",
        Command::new("ip")
            .args(["netns", "exec", &gw, PYTHON, "-m", "aiosmtpd", "-n", "-l", SMTP, "-c", "aiosmtpd.handlers.Mailbox"])
            .arg(&maildir)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    wait_for(SETTLE, "aiosmtpd in the gateway namespace", || {
        let probe = format!("exec 3<>/dev/tcp/{host}/{port}");
        let ok = Command::new("ip").args(["netns", "exec", &gw, "bash", "-c", &probe]).stderr(Stdio::null()).status();
        ok.is_ok_and(|s| s.success()).then_some(())
    });
    let mail = format!(
        "\n[mail]\nserver = \"{host}\"\nport = {port}\nsecurity = \"none\"\nfrom = \"pbxha <alerts@example.org>\"\n\
         to = [\"noc@example.org\"]\nretry-min = \"1s\"\nretry-max = \"5s\"\n"
    );
    Some((lab, smtp, maildir, mail))
}

#[test]
fn every_node_death_mails_one_report_and_the_decision_to_250_time() {
    let Some((lab, _smtp, maildir, mail)) = lab_with_smtp("m") else {
        return;
    };
    for node in ["a", "b"] {
        let mut text = std::fs::read_to_string(lab.config(node)).unwrap();
        text.push_str(&mail);
        std::fs::write(lab.config(node), text).unwrap();
    }
    // The secondary restarts with the mail config; the primary does as each run kills it.
    lab.lab_ok(&["kill", "b"]);
    lab.lab_ok(&["revive", "b"]);
    lab.wait_role("b", "secondary");

    let mut samples = Vec::new();
    let mut primary = "a";
    for run in 0..RUNS {
        let other = if primary == "a" { "b" } else { "a" };
        lab.lab_ok(&["kill", primary]);
        lab.wait_role(other, "primary");
        let got = wait_for(SETTLE, &format!("report {}", run + 1), || {
            let m = mails(&maildir);
            (m.len() > run).then_some(m)
        });
        let (subject, body, at) = &got[run];
        assert_eq!(subject, &format!("[pbxha-lab] failover: {primary} → {other} (peer {primary} is dead)"), "{body}");
        let order: Vec<usize> = [
            format!("suspicion: peer {primary} silent"),
            format!("decision: {other} takes over: peer {primary} is dead"),
            "vip started; gratuitous ARP sent (".into(),
            "sip started (".into(),
            format!("done: {other} holds the group"),
        ]
        .iter()
        .map(|w| body.find(w.as_str()).unwrap_or_else(|| panic!("{w} missing from\n{body}")))
        .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "timeline out of order:\n{body}");
        samples.push(at.saturating_sub(decision_ms(body)));
        lab.lab_ok(&["revive", primary]);
        lab.wait_role(primary, "secondary");
        primary = other;
    }
    std::thread::sleep(Duration::from_secs(3));
    let got = mails(&maildir);
    assert_eq!(got.len(), RUNS, "exactly one mail per failover, none for a revival: {got:#?}");

    let mut sorted = samples.clone();
    sorted.sort_unstable();
    println!(
        "decision → SMTP 250 over {RUNS} lab failovers (ms): min {} / median {} / max {}; samples {samples:?}",
        sorted[0],
        sorted[RUNS / 2],
        sorted[RUNS - 1]
    );
    let out = lab.lab(&["down"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Issue 14: `[[check]] kind = "drill"` on both nodes drills on the holder only (the other
/// node's run sees the peer holding and passes), journals the report and mails it through
/// the outbox to the real SMTP server.
#[test]
fn a_scheduled_drill_check_drills_on_the_holder_and_mails_its_report() {
    let Some((lab, _smtp, maildir, mail)) = lab_with_smtp("d") else {
        return;
    };
    let check = "\n[[check]]\nname = \"drill\"\nkind = \"drill\"\nevery = \"5s\"\ndry-run = true\n";
    for node in ["a", "b"] {
        let mut text = std::fs::read_to_string(lab.config(node)).unwrap();
        text.push_str(&mail);
        text.push_str(check);
        std::fs::write(lab.config(node), text).unwrap();
    }
    // Cold start of both with the new config; a, the preferred node, holds the group.
    for node in ["a", "b"] {
        lab.lab_ok(&["kill", node]);
    }
    for node in ["a", "b"] {
        lab.lab_ok(&["revive", node]);
    }
    lab.wait_role("a", "primary");
    lab.wait_role("b", "secondary");
    let got = wait_for(Duration::from_secs(90), "the drill's report mail", || {
        let m = mails(&maildir);
        m.into_iter().find(|(subject, _, _)| subject.contains("drill on"))
    });
    let (subject, body, _) = &got;
    assert_eq!(subject, "[pbxha-lab] drill on a passed", "{body}");
    assert!(body.contains("PASS  heartbeats") && body.contains("PASS  config"), "{body}");
    let history = |node: &str| {
        let out = Command::new(pbxha()).arg("-c").arg(lab.config(node)).arg("history").output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(history("a").contains("drill on a"), "{}", history("a"));
    assert!(!history("b").contains("drill on"), "b does not hold the group and drills not: {}", history("b"));
    assert!(mails(&maildir).iter().all(|(s, _, _)| !s.contains("drill on b")), "{:#?}", mails(&maildir));
    let out = lab.lab(&["down"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}
