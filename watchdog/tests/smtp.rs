//! Mail delivery against a real SMTP server (Debian's python3-aiosmtpd) on 127.0.0.1:
//! plain, STARTTLS + AUTH with a self-signed certificate, a wrong password, a server that is
//! down and comes back across a daemon restart, one that drops the connection mid-DATA, and
//! the flood digest. Without aiosmtpd or openssl the tests fail when CI=true and are skipped
//! otherwise.

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pbxha_watchdog::config::{MailConfig, Security};
use pbxha_watchdog::mailer::{deliver_due, Delivery, MailHandle};
use pbxha_watchdog::outbox::{NewMail, Outbox};
use pbxha_watchdog::smtp::{self, now_ms, Stage};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const PYTHON: &str = "/usr/bin/python3";
const USER: &str = "alerts@example.org";
const PASSWORD: &str = "abcd efgh ijkl mnop";

fn prerequisites() -> bool {
    let aiosmtpd =
        Command::new(PYTHON).args(["-c", "import aiosmtpd"]).stderr(Stdio::null()).status().is_ok_and(|s| s.success());
    let openssl = Command::new("openssl").arg("version").stdout(Stdio::null()).status().is_ok_and(|s| s.success());
    if aiosmtpd && openssl {
        return true;
    }
    let why = "needs /usr/bin/python3 with aiosmtpd (Debian python3-aiosmtpd) and openssl";
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{why}");
    eprintln!("skipped: {why}");
    false
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// An SMTP server process, killed (by PID) and reaped on drop.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_listening(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "SMTP server on port {port} did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn plain_server(port: u16, maildir: &Path) -> Server {
    let child = Command::new(PYTHON)
        .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}"), "-c", "aiosmtpd.handlers.Mailbox"])
        .arg(maildir)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let server = Server(child);
    wait_listening(port);
    server
}

/// A self-signed test CA and a server certificate for 127.0.0.1 signed by it (webpki refuses
/// a CA certificate used as the server's own). Returns (ca, cert, key).
fn certificate(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let script = r#"set -e
        ec="-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
        openssl req -x509 $ec -days 2 -subj /CN=pbxha-test-ca -keyout ca.key -out ca.pem
        openssl req $ec -subj /CN=127.0.0.1 -keyout key.pem -out req.csr
        printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' > ext
        openssl x509 -req -in req.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile ext -out cert.pem"#;
    let ok = Command::new("sh").args(["-c", script]).current_dir(dir).stderr(Stdio::null()).status().unwrap();
    assert!(ok.success(), "openssl could not make the test certificates");
    (dir.join("ca.pem"), dir.join("cert.pem"), dir.join("key.pem"))
}

fn tls_server(port: u16, maildir: &Path, cert: &Path, key: &Path) -> Server {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/smtp_tls_auth.py");
    let child = Command::new(PYTHON)
        .arg(fixture)
        .arg(port.to_string())
        .arg(maildir)
        .args([cert, key])
        .args([USER, PASSWORD])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let server = Server(child);
    wait_listening(port);
    server
}

fn config(port: u16) -> MailConfig {
    MailConfig {
        server: "127.0.0.1".into(),
        port,
        security: Security::None,
        username: None,
        password_file: None,
        ca_file: None,
        from: "pbxha <alerts@example.org>".parse().unwrap(),
        reply_to: Some("noc@example.org".parse().unwrap()),
        to: vec!["noc@example.org".parse().unwrap(), "oncall@example.org".parse().unwrap()],
        flood_limit: 10,
        timeout: Duration::from_secs(10),
        retry_min: Duration::from_millis(200),
        retry_max: Duration::from_secs(1),
    }
}

fn tls_config(port: u16, dir: &Path, ca: &Path, password: &str) -> MailConfig {
    let file = dir.join("password");
    std::fs::write(&file, format!("{password}\n")).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    MailConfig {
        security: Security::StartTls,
        username: Some(USER.into()),
        password_file: Some(file),
        ca_file: Some(ca.to_path_buf()),
        ..config(port)
    }
}

fn delivery(config: MailConfig) -> Delivery {
    Delivery { config, cluster: "pbx".into(), hostname: "node-a.example.org".into() }
}

fn mail(key: &str) -> NewMail {
    NewMail { dedup_key: key.into(), subject: format!("[pbx] test {key}"), body: format!("body of {key}\n") }
}

/// Every message in the Maildir, as text.
fn received(maildir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(maildir.join("new")) else { return Vec::new() };
    entries.map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap()).collect()
}

fn header<'a>(message: &'a str, name: &str) -> Vec<&'a str> {
    message.lines().filter_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(": "))).collect()
}

#[tokio::test]
async fn plain_send_reaches_every_recipient_with_headers() {
    if !prerequisites() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _server = plain_server(port, &dir.path().join("mail"));
    let mut outbox = Outbox::open(&dir.path().join("state.db"), "node-a").unwrap();
    outbox.enqueue(&mail("one"), now_ms()).unwrap();
    let pass = deliver_due(&mut outbox, &delivery(config(port)), now_ms()).await.unwrap();
    assert_eq!((pass.sent, pass.failed), (1, 0));
    let got = received(&dir.path().join("mail"));
    assert_eq!(got.len(), 1);
    assert_eq!(header(&got[0], "Subject"), ["[pbx] test one"]);
    assert_eq!(header(&got[0], "Reply-To"), ["noc@example.org"]);
    assert_eq!(header(&got[0], "X-RcptTo"), ["noc@example.org, oncall@example.org"]);
    assert!(header(&got[0], "Message-ID")[0].contains("one@node-a"), "{}", got[0]);
    assert!(outbox.pending().unwrap().is_empty());
}

#[tokio::test]
async fn starttls_and_auth_with_a_private_ca() {
    if !prerequisites() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = certificate(dir.path());
    let port = free_port();
    let _server = tls_server(port, &dir.path().join("mail"), &cert, &key);
    let cfg = tls_config(port, dir.path(), &ca, PASSWORD);
    let outbox = Outbox::open(&dir.path().join("state.db"), "node-a").unwrap();
    let message = smtp::build_message(
        &cfg,
        &{
            outbox.enqueue(&mail("tls"), now_ms()).unwrap();
            outbox.pending().unwrap().remove(0)
        },
        "pbx",
    )
    .unwrap();
    let answer = smtp::send(&cfg, &message, "node-a").await.unwrap();
    assert!(answer.starts_with("250"), "{answer}");
    assert_eq!(received(&dir.path().join("mail")).len(), 1);

    // Without the private CA the certificate is refused, at the TLS step.
    let untrusted = MailConfig { ca_file: None, ..cfg };
    let err = smtp::send(&untrusted, &message, "node-a").await.unwrap_err();
    assert_eq!(err.stage, Stage::Tls, "{err}");
    assert!(err.to_string().contains("127.0.0.1:"), "{err}");
}

#[tokio::test]
async fn wrong_password_is_an_auth_error_and_the_mail_stays_queued() {
    if !prerequisites() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = certificate(dir.path());
    let port = free_port();
    let _server = tls_server(port, &dir.path().join("mail"), &cert, &key);
    let cfg = tls_config(port, dir.path(), &ca, "wrong password");
    let mut outbox = Outbox::open(&dir.path().join("state.db"), "node-a").unwrap();
    outbox.enqueue(&mail("auth"), now_ms()).unwrap();
    let pass = deliver_due(&mut outbox, &delivery(cfg), now_ms()).await.unwrap();
    assert_eq!((pass.sent, pass.failed), (0, 1));
    let pending = outbox.pending().unwrap();
    assert_eq!(pending.len(), 1);
    let error = pending[0].last_error.clone().unwrap();
    assert!(error.starts_with("AUTH failed with 127.0.0.1:") && error.contains("535"), "{error}");
    assert!(received(&dir.path().join("mail")).is_empty());
}

#[tokio::test]
async fn a_password_file_others_can_read_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pw");
    std::fs::write(&file, "secret").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = smtp::read_password(&file).unwrap_err().to_string();
    assert!(err.contains("pw") && err.contains("0644") && err.contains("chmod 600"), "{err}");
}

#[tokio::test]
async fn unreachable_and_unresolvable_servers_name_the_step() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = Outbox::open(&dir.path().join("state.db"), "node-a").unwrap();
    outbox.enqueue(&mail("x"), now_ms()).unwrap();
    let message = smtp::build_message(&config(1), &outbox.pending().unwrap()[0], "pbx").unwrap();
    let err = smtp::send(&config(free_port()), &message, "a").await.unwrap_err();
    assert_eq!(err.stage, Stage::Tcp, "{err}");
    let nowhere = MailConfig { server: "smtp.invalid".into(), timeout: Duration::from_secs(5), ..config(25) };
    let err = smtp::send(&nowhere, &message, "a").await.unwrap_err();
    assert_eq!(err.stage, Stage::Dns, "{err}");
    assert!(err.to_string().contains("smtp.invalid"), "{err}");
}

/// Runs the delivery loop on `db` until dropped (shutdown sent, task awaited).
struct Daemon {
    stop: tokio::sync::watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Daemon {
    fn start(db: &Path, d: Delivery) -> (Daemon, MailHandle) {
        let handle = MailHandle::open(db, "node-a").unwrap();
        let (stop, rx) = tokio::sync::watch::channel(false);
        let h = handle.clone();
        let db = db.to_path_buf();
        let task = tokio::spawn(async move { h.run(db, d, rx).await.unwrap() });
        (Daemon { stop, task: Some(task) }, handle)
    }

    async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.task.take() {
            t.await.unwrap();
        }
    }
}

async fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_down_mail_arrives_once_after_restart_and_recovery() {
    if !prerequisites() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state.db");
    let maildir = dir.path().join("mail");
    let port = free_port();
    let (daemon, handle) = Daemon::start(&db, delivery(config(port)));
    handle.queue(mail("failover:1"));
    handle.queue(mail("failover:1"));
    let failed = || Outbox::open_read_only(&db).unwrap().pending().unwrap().first().is_some_and(|m| m.attempts >= 2);
    wait_for("two failed attempts", failed).await;
    let queued = Outbox::open_read_only(&db).unwrap().pending().unwrap();
    assert_eq!(queued.len(), 1, "dedup: one mail");
    assert!(queued[0].last_error.as_deref().unwrap().starts_with("TCP connect failed"), "{queued:?}");
    daemon.stop().await;

    let _server = plain_server(port, &maildir);
    let (daemon, handle) = Daemon::start(&db, delivery(config(port)));
    handle.queue(mail("failover:1")); // the restarted daemon re-reports the same event
    wait_for("delivery", || received(&maildir).len() == 1).await;
    wait_for("empty queue", || Outbox::open_read_only(&db).unwrap().pending().unwrap().is_empty()).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    daemon.stop().await;
    assert_eq!(received(&maildir).len(), 1, "exactly one mail");
}

/// A front that plays SMTP up to the middle of DATA and hangs up on its first `drops`
/// connections, then forwards to the real server.
async fn flaky_front(real: u16, drops: usize) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        for n in 0.. {
            let Ok((mut client, _)) = listener.accept().await else { return };
            if n >= drops {
                tokio::spawn(async move {
                    if let Ok(mut upstream) = tokio::net::TcpStream::connect(("127.0.0.1", real)).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                    }
                });
                continue;
            }
            let (read, mut write) = client.split();
            let mut lines = BufReader::new(read).lines();
            let _ = write.write_all(b"220 flaky ESMTP\r\n").await;
            let mut in_data = false;
            while let Ok(Some(line)) = lines.next_line().await {
                if in_data {
                    // The first line of the message itself: hang up mid-DATA, unanswered.
                    break;
                }
                let reply: &[u8] = match line.get(..4).map(str::to_ascii_uppercase).as_deref() {
                    Some("EHLO") => b"250-flaky\r\n250 8BITMIME\r\n",
                    Some("DATA") => {
                        in_data = true;
                        b"354 go ahead\r\n"
                    }
                    _ => b"250 ok\r\n",
                };
                let _ = write.write_all(reply).await;
            }
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_dropped_mid_data_is_retried_not_lost_not_duplicated() {
    if !prerequisites() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let maildir = dir.path().join("mail");
    let real = free_port();
    let _server = plain_server(real, &maildir);
    let front = flaky_front(real, 1).await;
    let d = delivery(config(front));
    let mut outbox = Outbox::open(&dir.path().join("state.db"), "node-a").unwrap();
    outbox.enqueue(&mail("mid-data"), now_ms()).unwrap();
    let pass = deliver_due(&mut outbox, &d, now_ms()).await.unwrap();
    assert_eq!((pass.sent, pass.failed), (0, 1));
    let error = outbox.pending().unwrap()[0].last_error.clone().unwrap();
    assert!(error.starts_with("DATA failed"), "{error}");
    let pass = deliver_due(&mut outbox, &d, now_ms() + 60_000).await.unwrap();
    assert_eq!((pass.sent, pass.failed), (1, 0));
    assert_eq!(deliver_due(&mut outbox, &d, now_ms() + 120_000).await.unwrap().sent, 0);
    let got = received(&maildir);
    assert_eq!(got.len(), 1);
    assert_eq!(header(&got[0], "Subject"), ["[pbx] test mid-data"]);
}

#[tokio::test]
async fn a_flood_becomes_one_digest() {
    if !prerequisites() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let maildir = dir.path().join("mail");
    let port = free_port();
    let _server = plain_server(port, &maildir);
    let d = delivery(MailConfig { flood_limit: 2, ..config(port) });
    let mut outbox = Outbox::open(&dir.path().join("state.db"), "node-a").unwrap();
    for i in 0..5 {
        outbox.enqueue(&mail(&format!("check:{i}")), now_ms()).unwrap();
    }
    let pass = deliver_due(&mut outbox, &d, now_ms()).await.unwrap();
    assert_eq!((pass.sent, pass.digested, pass.failed), (2, 4, 0));
    outbox.enqueue(&mail("late"), now_ms()).unwrap();
    let pass = deliver_due(&mut outbox, &d, now_ms()).await.unwrap();
    assert_eq!((pass.sent, pass.held), (0, 1), "the minute's budget is spent");
    let got = received(&maildir);
    assert_eq!(got.len(), 2);
    let digest = got.iter().find(|m| header(m, "Subject") == ["4 notifications (flood limit reached)"]).unwrap();
    for i in 1..5 {
        assert!(digest.contains(&format!("body of check:{i}")), "{digest}");
    }
}
