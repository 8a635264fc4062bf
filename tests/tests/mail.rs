//! Mail from real `pbxha run` daemons (on 127.0.0.1 and 127.0.0.2) to a real SMTP server,
//! Debian's python3-aiosmtpd: a switchover and a failover each produce exactly one report
//! with its timeline; mail queued while the server is down arrives once it is back, also
//! across a restart of the daemon that queued it; a wrong password is a clear error in
//! `pbxha mail test` and `pbxha status` and the mail stays queued; a state database another
//! process locks delays no heartbeat and loses no mail. Without aiosmtpd (and openssl for the
//! AUTH test, sqlite3 for the lock test) the tests fail when CI=true and are skipped otherwise.

use std::collections::BTreeSet;
use std::io::Write;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use pbxha_tests::*;

const PYTHON: &str = "/usr/bin/python3";
const USER: &str = "alerts@example.org";
const PASSWORD: &str = "right horse battery staple";

fn aiosmtpd() -> bool {
    let ok =
        Command::new(PYTHON).args(["-c", "import aiosmtpd"]).stderr(Stdio::null()).status().is_ok_and(|s| s.success());
    require(ok, "/usr/bin/python3 with aiosmtpd (Debian python3-aiosmtpd)")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn wait_listening(port: u16) {
    wait_for(Duration::from_secs(20), "the SMTP server to listen", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok().map(|_| ())
    });
}

/// A plain aiosmtpd delivering into `maildir`.
fn smtp_server(port: u16, maildir: &Path) -> Guard {
    let server = Guard::spawn(
        "aiosmtpd",
        Command::new(PYTHON)
            .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}"), "-c", "aiosmtpd.handlers.Mailbox"])
            .arg(maildir)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    wait_listening(port);
    server
}

/// Every mail in the Maildir as (decoded subject, decoded body), read with Python's
/// `mailbox.Maildir`, an independent reader.
fn mails(maildir: &Path) -> Vec<(String, String)> {
    let script = "import json, mailbox, sys\n\
        from email.header import decode_header, make_header\n\
        out = []\n\
        for m in mailbox.Maildir(sys.argv[1], create=False):\n\
        \x20   subject = str(make_header(decode_header(m['Subject'] or '')))\n\
        \x20   out.append([subject, m.get_payload(decode=True).decode('utf-8', 'replace')])\n\
        print(json.dumps(out))\n";
    if !maildir.join("new").exists() {
        return Vec::new();
    }
    let out = Command::new(PYTHON).args(["-c", script]).arg(maildir).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Waits until `n` mails arrived, then a while longer to catch a duplicate.
fn settle(maildir: &Path, n: usize) -> Vec<(String, String)> {
    wait_for(Duration::from_secs(30), &format!("{n} mail(s)"), || (mails(maildir).len() >= n).then_some(()));
    std::thread::sleep(Duration::from_secs(3));
    mails(maildir)
}

struct Pair {
    dir: tempfile::TempDir,
}

impl Pair {
    /// Two nodes mailing through 127.0.0.1:`smtp`; `mail_extra` is appended to `[mail]`
    /// and `extra` to the file.
    fn new(port: u16, smtp: u16, mail_extra: &str, extra: &str) -> Pair {
        let dir = tempfile::tempdir().unwrap();
        write_loopback_pair(dir.path(), "mailtest", port, |_| {
            format!(
                r#"
[[resource]]
name = "worker"
kind = "service"
exec = ["sleep", "600"]
[mail]
server = "127.0.0.1"
port = {smtp}
from = "pbxha <{USER}>"
to = ["noc@example.org"]
timeout = "5s"
retry-min = "300ms"
retry-max = "1s"
{mail_extra}
{extra}
"#
            )
        });
        Pair { dir }
    }

    fn config(&self, node: &str) -> PathBuf {
        self.dir.path().join(format!("{node}.toml"))
    }

    fn arg(&self, node: &str) -> String {
        self.config(node).display().to_string()
    }

    fn start(&self, node: &str) -> Guard {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("{node}.log")))
            .unwrap();
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

    fn wait_role(&self, node: &str, role: &str) -> serde_json::Value {
        wait_for(Duration::from_secs(30), &format!("{node} {role}"), || {
            status_json(&self.config(node)).filter(|s| s["role"] == role && s["group"] != "starting")
        })
    }
}

/// A temp dir and the path, inside it, where aiosmtpd's Mailbox keeps the Maildir: it
/// creates the Maildir only when the directory does not exist yet.
fn new_maildir() -> (tempfile::TempDir, PathBuf) {
    let root = tempfile::tempdir().unwrap();
    let maildir = root.path().join("maildir");
    (root, maildir)
}

fn only<'a>(mails: &'a [(String, String)], word: &str) -> Vec<&'a (String, String)> {
    mails.iter().filter(|(s, _)| s.contains(word)).collect()
}

#[test]
fn a_switchover_and_a_failover_each_mail_one_report_with_its_timeline() {
    if !aiosmtpd() {
        return;
    }
    let (_mailroot, maildir) = new_maildir();
    let smtp = free_port();
    let _server = smtp_server(smtp, &maildir);
    let pair = Pair::new(free_udp_port(), smtp, "security = \"none\"", "");
    let mut a = pair.start("a");
    let b = pair.start("b");
    pair.wait_role("a", "primary");
    pair.wait_role("b", "secondary");

    // Planned: a hands over to b.
    let out = pbxha_cmd(&["--config", &pair.arg("a"), "switchover", "--now"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    pair.wait_role("b", "primary");
    let got = settle(&maildir, 1);
    assert_eq!(got.len(), 1, "a cold start mails nothing; one switchover is one mail: {got:#?}");
    let (subject, body) = &got[0];
    assert_eq!(subject, "[mailtest] switchover: a → b (peer a handed over)");
    for line in ["decision: b takes over: peer a handed over", "worker started", "done: b holds the group"] {
        assert!(body.contains(line), "{line} missing from\n{body}");
    }

    // Unplanned: b dies, a takes over.
    pair.wait_role("a", "secondary");
    drop(b);
    let s = pair.wait_role("a", "primary");
    assert_eq!(s["peer"]["alive"], false, "{s:#}");
    let got = settle(&maildir, 2);
    let failovers = only(&got, "failover:");
    assert_eq!((got.len(), failovers.len()), (2, 1), "{got:#?}");
    let (subject, body) = failovers[0];
    assert_eq!(subject, "[mailtest] failover: b → a (peer b is dead)");
    let order: Vec<usize> = [
        "suspicion: peer b silent",
        "decision: a takes over: peer b is dead",
        "worker started (",
        "done: a holds the group",
    ]
    .iter()
    .map(|w| body.find(w).unwrap_or_else(|| panic!("{w} missing from\n{body}")))
    .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "timeline out of order:\n{body}");
    let status = status_json(&pair.config("a")).unwrap();
    assert_eq!(status["mail"]["pending"], 0, "{status:#}");
    a.signal(libc::SIGTERM);
    assert!(a.wait_exit(Duration::from_secs(10)));
}

#[test]
fn mail_queued_while_smtp_is_down_arrives_once_after_a_daemon_restart() {
    if !aiosmtpd() {
        return;
    }
    let (_mailroot, maildir) = new_maildir();
    let smtp = free_port();
    let pair = Pair::new(free_udp_port(), smtp, "security = \"none\"", "");
    let mut a = pair.start("a");
    let mut b = pair.start("b");
    pair.wait_role("a", "primary");
    pair.wait_role("b", "secondary");

    a.signal(libc::SIGKILL);
    assert!(a.wait_exit(Duration::from_secs(5)));
    pair.wait_role("b", "primary");
    let s = wait_for(Duration::from_secs(20), "the report to fail at least once", || {
        status_json(&pair.config("b")).filter(|s| s["mail"]["pending"] == 1 && s["mail"]["last_error"].is_string())
    });
    let error = s["mail"]["last_error"].as_str().unwrap_or("");
    assert!(error.contains("TCP connect") && error.contains(&format!("127.0.0.1:{smtp}")), "{error}");
    let queue = pbxha_cmd(&["--config", &pair.arg("b"), "mail", "queue"]);
    let text = String::from_utf8_lossy(&queue.stdout);
    assert!(text.contains("failover: a → b") && text.contains("last error: TCP connect"), "{text}");

    // The daemon that queued it dies too; its successor (a cold start: no new report) sends it.
    b.signal(libc::SIGKILL);
    assert!(b.wait_exit(Duration::from_secs(5)));
    let _b = pair.start("b");
    pair.wait_role("b", "primary");
    let _server = smtp_server(smtp, &maildir);
    let got = settle(&maildir, 1);
    assert_eq!(got.len(), 1, "none lost, none duplicated: {got:#?}");
    assert_eq!(got[0].0, "[mailtest] failover: a → b (peer a is dead)");
    assert!(got[0].1.contains("decision: b takes over: peer a is dead"), "{}", got[0].1);
    let s = wait_for(Duration::from_secs(10), "an empty outbox", || {
        status_json(&pair.config("b")).filter(|s| s["mail"]["pending"] == 0)
    });
    assert!(s["mail"]["last_error"].is_null(), "{s:#}");
}

/// A self-signed test CA and a server certificate for 127.0.0.1 (as the watchdog crate's
/// SMTP tests make them). Returns (ca, cert, key).
fn certificate(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let script = r#"set -e
        ec="-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
        openssl req -x509 $ec -days 2 -subj /CN=pbxha-test-ca -keyout ca.key -out ca.pem
        openssl req $ec -subj /CN=127.0.0.1 -keyout key.pem -out req.csr
        printf 'subjectAltName=IP:127.0.0.1\n' > ext
        openssl x509 -req -in req.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile ext -out cert.pem"#;
    let ok = Command::new("sh").args(["-c", script]).current_dir(dir).stderr(Stdio::null()).status().unwrap();
    assert!(ok.success(), "openssl could not make the test certificates");
    (dir.join("ca.pem"), dir.join("cert.pem"), dir.join("key.pem"))
}

#[test]
fn a_wrong_password_is_a_clear_error_and_the_mail_stays_queued() {
    if !aiosmtpd() || !require(have("openssl"), "openssl") {
        return;
    }
    let certs = tempfile::tempdir().unwrap();
    let (ca, cert, key) = certificate(certs.path());
    let (_mailroot, maildir) = new_maildir();
    let smtp = free_port();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../watchdog/tests/fixtures/smtp_tls_auth.py");
    let _server = Guard::spawn(
        "aiosmtpd with AUTH",
        Command::new(PYTHON)
            .arg(fixture)
            .arg(smtp.to_string())
            .arg(&maildir)
            .args([&cert, &key])
            .args([USER, PASSWORD])
            .stdout(Stdio::null()),
    );
    wait_listening(smtp);
    let password = certs.path().join("smtp-password");
    std::fs::write(&password, "not the password\n").unwrap();
    std::fs::set_permissions(&password, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mail = format!(
        "security = \"starttls\"\nusername = \"{USER}\"\npassword-file = \"{}\"\nca-file = \"{}\"",
        password.display(),
        ca.display()
    );
    // A check that is down from its first run: its alert is the mail that cannot leave.
    let check = "[[check]]\nname = \"trunk\"\nkind = \"command\"\nevery = \"1s\"\nargv = [\"false\"]\n";
    let pair = Pair::new(free_udp_port(), smtp, &mail, check);

    let out = pbxha_cmd(&["--config", &pair.arg("a"), "mail", "test"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains(&format!("AUTH failed with 127.0.0.1:{smtp}")) && err.contains("535"), "{err}");

    let _a = pair.start("a");
    let s = wait_for(Duration::from_secs(30), "the check alert to fail at AUTH", || {
        status_json(&pair.config("a")).filter(|s| s["mail"]["last_error"].as_str().is_some_and(|e| e.contains("AUTH")))
    });
    assert_eq!(s["mail"]["pending"], 1, "{s:#}");
    assert_eq!(s["checks"][0]["state"], "down", "{s:#}");
    let text = pbxha_cmd(&["--config", &pair.arg("a"), "status"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("Mail    1 waiting in the outbox; last error: AUTH failed"), "{text}");
    assert!(text.contains("Checks  trunk DOWN"), "{text}");
    std::thread::sleep(Duration::from_secs(2));
    let queue = pbxha_cmd(&["--config", &pair.arg("a"), "mail", "queue"]);
    let queue = String::from_utf8_lossy(&queue.stdout);
    assert!(queue.contains("check trunk is DOWN") && queue.contains("last error: AUTH failed"), "{queue}");
    assert!(mails(&maildir).is_empty());
    let checks = pbxha_cmd(&["--config", &pair.arg("a"), "checks"]);
    assert!(String::from_utf8_lossy(&checks.stdout).contains("trunk: down"));
}

/// Issue 11: SIGHUP applies new mail settings without a restart. A check alert queued while
/// the configured SMTP server does not answer is delivered, once, through the server a
/// reload names; the next alert carries the reload's cluster name.
#[test]
fn a_reload_sends_the_queued_mail_through_the_new_server_with_the_new_cluster_name() {
    if !aiosmtpd() {
        return;
    }
    let (mailroot, maildir) = new_maildir();
    let (dead, live) = (free_port(), free_port());
    let flag = mailroot.path().join("trunk-ok");
    let check = format!(
        "[[check]]\nname = \"trunk\"\nkind = \"command\"\nevery = \"1s\"\nrise = 1\nfall = 1\nargv = [\"test\", \"-e\", \"{}\"]\n",
        flag.display()
    );
    let pair = Pair::new(free_udp_port(), dead, "security = \"none\"", &check);
    let a = pair.start("a");
    wait_for(Duration::from_secs(30), "the check alert to wait in the outbox", || {
        status_json(&pair.config("a")).filter(|s| s["mail"]["pending"] == 1 && s["mail"]["last_error"].is_string())
    });
    let _server = smtp_server(live, &maildir);
    let text = std::fs::read_to_string(pair.config("a")).unwrap();
    let old_server = format!("server = \"127.0.0.1\"\nport = {dead}\n");
    assert!(text.contains(&old_server), "{text}");
    let text = text
        .replace(&old_server, &format!("server = \"127.0.0.1\"\nport = {live}\n"))
        .replace("name = \"mailtest\"", "name = \"mailtest-renamed\"");
    std::fs::write(pair.config("a"), text).unwrap();
    a.signal(libc::SIGHUP);
    let log = pair.dir.path().join("a.log");
    wait_for(Duration::from_secs(10), "the reload to be applied", || {
        std::fs::read_to_string(&log)
            .ok()
            .filter(|l| l.lines().any(|l| l.contains("reload: applied") && l.contains(" mail")))
            .map(|_| ())
    });
    let got = settle(&maildir, 1);
    assert_eq!(got.len(), 1, "the queued mail, once: {got:#?}");
    assert_eq!(got[0].0, "[mailtest] check trunk is DOWN", "queued before the reload: {got:#?}");
    std::fs::write(&flag, "").unwrap();
    let got = settle(&maildir, 2);
    // A Maildir lists in no particular order.
    let subjects: BTreeSet<&str> = got.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(
        subjects,
        BTreeSet::from(["[mailtest] check trunk is DOWN", "[mailtest-renamed] check trunk is up again"]),
        "{got:#?}"
    );
}

/// Issue 12: another process (a real `sqlite3` in `BEGIN EXCLUSIVE`) holds the primary's
/// state database for 10 s while a check alert fires there. No heartbeat is late beyond
/// warntime either way, nothing moves, and the alert, held back meanwhile, is mailed once
/// the lock goes.
#[test]
fn a_locked_state_database_delays_no_heartbeat_and_its_mail_follows_the_lock() {
    if !aiosmtpd() || !require(have("sqlite3"), "the sqlite3 command (Debian sqlite3)") {
        return;
    }
    let (mailroot, maildir) = new_maildir();
    let smtp = free_port();
    let _server = smtp_server(smtp, &maildir);
    let flag = mailroot.path().join("trunk-ok");
    std::fs::write(&flag, "").unwrap();
    let check = format!(
        "[[check]]\nname = \"trunk\"\nkind = \"command\"\nevery = \"1s\"\nrise = 1\nfall = 1\nargv = [\"test\", \"-e\", \"{}\"]\n",
        flag.display()
    );
    let pair = Pair::new(free_udp_port(), smtp, "security = \"none\"", &check);
    let _a = pair.start("a");
    let _b = pair.start("b");
    pair.wait_role("a", "primary");
    pair.wait_role("b", "secondary");
    let check_state = |node: &str, state: &str| {
        status_json(&pair.config(node)).filter(|s| s["checks"][0]["state"] == state).map(|_| ())
    };
    wait_for(Duration::from_secs(10), "a's check up", || check_state("a", "up"));
    let logs = ["a", "b"].map(|node| pair.dir.path().join(format!("{node}.log")));
    let late_before = logs.clone().map(|l| late_heartbeats(&l));
    // The alert's mails from `node`.
    let from = |node: &str, got: &[(String, String)]| {
        let alert = |(s, b): &&(String, String)| {
            s == "[mailtest] check trunk is DOWN" && b.contains(&format!("Node:    {node}\n"))
        };
        got.iter().filter(alert).count()
    };

    let locked = mailroot.path().join("locked");
    let mut sqlite = Guard::spawn(
        "sqlite3",
        Command::new("sqlite3")
            .arg("-bail")
            .arg(pair.dir.path().join("a.db"))
            .stdin(Stdio::piped())
            .stdout(Stdio::null()),
    );
    let mut script = sqlite.child.stdin.take().unwrap();
    writeln!(script, ".timeout 5000\nBEGIN EXCLUSIVE;\n.shell touch '{}'", locked.display()).unwrap();
    wait_for(Duration::from_secs(10), "sqlite3 to hold the lock", || locked.exists().then_some(()));
    let since = std::time::Instant::now();
    // The check goes down on both nodes: b, whose database is free, mails at once.
    std::fs::remove_file(&flag).unwrap();
    wait_for(Duration::from_secs(9), "a's check down (its alert queued)", || check_state("a", "down"));
    let got = wait_for(Duration::from_secs(9), "b's alert", || Some(mails(&maildir)).filter(|m| from("b", m) == 1));
    assert!(
        since.elapsed() < Duration::from_secs(10),
        "a answered only after {:?} of the lock: its loop waited on the database",
        since.elapsed()
    );
    std::thread::sleep(Duration::from_secs(10).saturating_sub(since.elapsed()));
    assert_eq!(from("a", &got), 0, "a mailed while its database was locked: {got:#?}");
    assert_eq!(from("a", &mails(&maildir)), 0, "a mailed while its database was locked");
    writeln!(script, "COMMIT;\n.quit").unwrap();
    drop(script);
    assert!(sqlite.wait_exit(Duration::from_secs(5)), "sqlite3 did not finish");
    assert!(sqlite.child.try_wait().unwrap().is_some_and(|s| s.success()), "sqlite3 failed");

    let late_after = logs.map(|l| late_heartbeats(&l));
    assert_eq!(late_after, late_before, "late heartbeats (a, b) while a's database was locked");
    let b = status_json(&pair.config("b")).unwrap();
    assert!(b["role"] == "secondary" && b["last_failover"].is_null(), "b took over: {b:#}");
    assert_eq!(status_json(&pair.config("a")).unwrap()["role"], "primary");

    wait_for(Duration::from_secs(30), "a's alert", || (from("a", &mails(&maildir)) == 1).then_some(()));
    let got = settle(&maildir, 2);
    assert_eq!((from("a", &got), got.len()), (1, 2), "each node's alert once, nothing else: {got:#?}");
}
