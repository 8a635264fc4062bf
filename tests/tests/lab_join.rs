//! The second node joins the first with the line the first printed, in the bare lab: node a
//! installed from an answers file (storage none, MySQL master-master), a real MariaDB in both
//! namespaces, each install under its node's own host name (see `pbxha_tests::bare`).
//!
//! Before the join succeeds, every refusal is tried on b: a's daemon stopped, a mistyped
//! token, a wrong token (an older one of the same cluster), the token that wrong guess
//! burnt, an expired token. Each ends in one line, and b's root is byte for byte as it was.
//! The join itself is captured with tcpdump in a's namespace on the heartbeat link: neither
//! the token nor the cluster's key nor the MySQL password is in the capture, raw, in hex or
//! in base64. Then b's daemon runs, each node sees the other, and a row written on either
//! MariaDB is read on the other (waited for, never a snapshot).

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use pbxha_tests::bare::{text, BareLab, ADMIN_PASSWORD};
use pbxha_tests::lab::SipWatch;
use pbxha_tests::{alive, have, is_root, pbxha, require, status_json, wait_for, Guard};

/// Every path below `root` with its kind, mode and contents.
fn tree(root: &Path) -> BTreeMap<String, (String, u32, Vec<u8>)> {
    let mut out = BTreeMap::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let mode = meta.permissions().mode();
            let name = path.strip_prefix(root).unwrap().display().to_string();
            let (kind, bytes) = if meta.is_dir() {
                todo.push(path.clone());
                ("dir", Vec::new())
            } else if meta.is_symlink() {
                ("link", std::fs::read_link(&path).unwrap().into_os_string().into_encoded_bytes())
            } else if meta.is_file() {
                ("file", std::fs::read(&path).unwrap())
            } else {
                ("other", Vec::new())
            };
            out.insert(name, (kind.to_string(), mode, bytes));
        }
    }
    out
}

/// The token of the `pbxha install --join … --token T` line in `said`.
fn token_in(said: &str) -> String {
    let line = said.lines().find(|l| l.contains("pbxha install --join 203.0.113.11 --token ")).unwrap_or_else(|| {
        panic!("no join line in:\n{said}");
    });
    line.rsplit(' ').next().unwrap().to_string()
}

fn base64(bytes: &[u8]) -> String {
    const SET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            out.push(if i <= chunk.len() { char::from(SET[(n >> (18 - 6 * i) & 63) as usize]) } else { '=' });
        }
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Every form a test can grep for a secret: raw, hex both cases, base64.
fn forms(secret: &[u8]) -> Vec<Vec<u8>> {
    let h = hex(secret);
    vec![secret.to_vec(), h.clone().into_bytes(), h.to_uppercase().into_bytes(), base64(secret).into_bytes()]
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn the_second_node_joins_with_the_printed_token_and_mysql_replicates_both_ways() {
    if !require(is_root(), "root (network namespaces)")
        || !["ip", "arping", "ping", "losetup", "unshare", "tcpdump", "mariadb-install-db", "mariadbd", "mariadb"]
            .iter()
            .all(|t| require(have(t), t))
    {
        return;
    }
    assert_eq!(base64(b"pbxha"), "cGJ4aGE=");
    let lab = BareLab::up("pbxj");
    lab.prepare("a", 1);
    lab.prepare("b", 2);
    let answers = lab.first_answers();
    let out = lab.install("a", &["--answers", &answers.display().to_string(), "--yes"]);
    let said = text(&out);
    assert!(out.status.success(), "install a:\n{said}");
    let first_token = token_in(&said);
    let pid = pbxha_tests::started_daemon(&said);
    let (config_a, config_b) = (lab.config("a"), lab.config("b"));
    let role = |config: &Path, role: &'static str| {
        wait_for(Duration::from_secs(60), role, || status_json(config).filter(|s| s["role"].as_str() == Some(role)))
    };
    role(&config_a, "primary");

    let exe = pbxha().display().to_string();
    let join = |token: &str, root: &Path| -> Output {
        let root = root.display().to_string();
        lab.on_node("b", &[&exe, "install", "--root", &root, "--join", "203.0.113.11", "--token", token, "--yes"])
    };
    let b_root = lab.root("b");
    let refused = |token: &str, root: &Path, why: &str| {
        let before = tree(root);
        let out = join(token, root);
        let said = text(&out);
        assert!(!out.status.success(), "a join with {token} ({why}) went through:\n{said}");
        assert_eq!(said.trim().lines().count(), 1, "one line ({why}):\n{said}");
        assert!(said.contains(why), "{why}: {said}");
        assert!(tree(root) == before, "{why}: the root changed under {}", root.display());
    };
    let nobody = "nothing offers a join at 203.0.113.11:694";

    // a's daemon stopped: nobody listens, and the token it offered stays for its restart.
    // SAFETY: kill(2) on a PID this test read from the install's output.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGTERM) }, 0);
    wait_for(Duration::from_secs(30), "a's daemon to stop", || (!alive(pid)).then_some(()));
    refused(&first_token, &b_root, nobody);
    let log = lab.root("a").join("var/log/pbxha.log").display().to_string();
    let config = config_a.display().to_string();
    let out = lab.on_node(
        "a",
        &["sh", "-c", "setsid \"$0\" --config \"$1\" run >>\"$2\" 2>&1 </dev/null &", &exe, &config, &log],
    );
    assert!(out.status.success(), "restarting a's daemon: {}", text(&out));
    role(&config_a, "primary");

    // A typo is caught by the token's check character before any guess is made.
    let last = first_token.chars().last().unwrap();
    let typo = format!("{}{}", &first_token[..first_token.len() - 1], if last == 'Z' { 'Y' } else { 'Z' });
    refused(&typo, &b_root, "not made for cluster `pbx`");
    // A new token makes the first a wrong one: one guess, and the new one is burnt by it.
    let new_token = |expiry: &str| {
        let out = lab.install("a", &["--new-token", "--token-expiry", expiry]);
        assert!(out.status.success(), "--new-token: {}", text(&out));
        token_in(&text(&out))
    };
    let second = new_token("1800");
    refused(&first_token, &b_root, "refused the token: it is wrong");
    refused(&second, &b_root, nobody);
    let third = new_token("2");
    std::thread::sleep(Duration::from_secs(4));
    refused(&third, &b_root, nobody);

    // The join, captured on a's heartbeat link.
    let fourth = new_token("1800");
    let pcap = lab.tmp.path().join("join.pcap");
    let pidfile = lab.tmp.path().join("tcpdump.pid");
    let capture = format!(
        "tcpdump -U -n -i hb0 -w {} tcp port 694 2>/dev/null & echo $! > {}; wait",
        pcap.display(),
        pidfile.display()
    );
    let _tcpdump = Guard::spawn(
        "tcpdump",
        pbxha_tests::lab_command(&lab.prefix, &lab.state_dir(), &["exec", "a", "--", "sh", "-c", &capture])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let tcpdump: u32 = wait_for(Duration::from_secs(10), "tcpdump to start", || {
        std::fs::read_to_string(&pidfile).ok()?.trim().parse().ok().filter(|_| pcap.exists())
    });
    std::thread::sleep(Duration::from_secs(1));
    let watch = SipWatch::from_namespace(format!("{}client", lab.prefix));
    let out = join(&fourth, &b_root);
    // The drill ends when a answers its own probe; the client's next probe may be 50 ms on.
    let joined = std::time::Instant::now();
    wait_for(Duration::from_secs(10), "the client's SIP probe answered by a after the join", || {
        watch.answered_by_since("a", joined).then_some(())
    });
    let seen = watch.stop();
    let said = text(&out);
    assert!(out.status.success(), "join b:\n{said}");
    // The join ends with the drill: both moves, each outage under a second, the canary row
    // read on the other side each time, and the client saw b answer, then a again.
    assert!(said.contains("the pair is installed and its drill passed"), "{said}");
    for (from, to) in [("a", "b"), ("b", "a")] {
        let line = said
            .lines()
            .find(|l| l.contains(&format!("move {from} -> {to}: outage ")))
            .unwrap_or_else(|| panic!("no move {from} -> {to} with an outage in:\n{said}"));
        let ms: u64 = line
            .split("outage ")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no outage in `{line}`"));
        assert!(ms < 1000, "the move {from} -> {to} was out {ms} ms:\n{said}");
        assert!(said.contains(&format!("the row written before the move was read on {to}")), "{said}");
    }
    assert!(seen.answerers.windows(3).any(|w| w == ["a", "b", "a"]), "the client saw {:?}", seen.answerers);
    assert!(said.contains("joining cluster `pbx` as node `b`") && said.contains("PASS  peer-mysql"), "{said}");
    assert!(said.contains("mysql-setup") && said.contains("started `pbxha run` itself"), "{said}");
    std::thread::sleep(Duration::from_millis(500));
    // SAFETY: kill(2) on the PID tcpdump's shell wrote.
    unsafe { libc::kill(tcpdump as i32, libc::SIGTERM) };
    wait_for(Duration::from_secs(10), "tcpdump to stop", || (!alive(tcpdump)).then_some(()));
    let captured = std::fs::read(&pcap).unwrap();
    assert!(contains(&captured, b"\"Cluster\":\"pbx\""), "the capture saw the join's hello");
    let key = std::fs::read_to_string(lab.root("a").join("etc/pbxha/authkey")).unwrap();
    let key = key.trim();
    let key_bytes: Vec<u8> =
        (0..key.len() / 2).map(|i| u8::from_str_radix(&key[2 * i..2 * i + 2], 16).unwrap()).collect();
    let normalized = fourth.replace('-', "");
    let mut secrets = vec![fourth.clone(), normalized.clone(), fourth.to_lowercase(), normalized.to_lowercase()];
    secrets.extend([key.to_string(), ADMIN_PASSWORD.to_string()]);
    for secret in &secrets {
        for form in forms(secret.as_bytes()) {
            assert!(!contains(&captured, &form), "the capture holds {}", String::from_utf8_lossy(&form));
        }
    }
    for form in forms(&key_bytes) {
        assert!(!contains(&captured, &form), "the capture holds the key's bytes");
    }
    let got = std::fs::metadata(b_root.join("etc/pbxha/authkey")).unwrap();
    assert_eq!(got.permissions().mode() & 0o777, 0o600);
    assert_eq!(std::fs::read_to_string(b_root.join("etc/pbxha/authkey")).unwrap().trim(), key);

    // The used token, again, from a scratch root on b.
    let scratch = lab.tmp.path().join("scratch-root");
    std::fs::create_dir_all(&scratch).unwrap();
    refused(&fourth, &scratch, nobody);

    // Both daemons see each other.
    let b = role(&config_b, "secondary");
    assert_eq!(b["peer"]["name"].as_str(), Some("a"), "{b}");
    wait_for(Duration::from_secs(30), "each node to see the other", || {
        let (a, b) = (status_json(&config_a)?, status_json(&config_b)?);
        (a["peer"]["alive"].as_bool()? && b["peer"]["alive"].as_bool()?).then_some(())
    });

    // MySQL both ways.
    lab.sql("a", "CREATE DATABASE joined; CREATE TABLE joined.t (id INT PRIMARY KEY, node VARCHAR(8)) ENGINE=InnoDB; INSERT INTO joined.t VALUES (1, 'a')");
    let read = |node: &str, id: u32| {
        wait_for(Duration::from_secs(60), &format!("row {id} on {node}"), || {
            let out = lab.try_sql(node, &format!("SELECT node FROM joined.t WHERE id = {id}"))?;
            (!out.trim().is_empty()).then(|| out.trim().to_string())
        })
    };
    assert_eq!(read("b", 1), "a");
    lab.sql("b", "INSERT INTO joined.t VALUES (2, 'b')");
    assert_eq!(read("a", 2), "b");
}
