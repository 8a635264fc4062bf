//! The first node installed as an operator would: `pbxha lab up --bare`, a real MariaDB
//! started inside node a's namespace, then `pbxha lab exec a -- pbxha install --root …
//! --answers … --yes` (storage none, MySQL master-master). The daemon the installer starts
//! (systemd is not PID 1 here) takes the VIP, `pbxha status` shows it, and the client's
//! SIP OPTIONS to the VIP are answered.
//!
//! Asterisk exists in no reachable registry, so its unit is played at the command boundary:
//! a `systemctl` on the daemon's PATH starts pbxha's builtin SIP responder for
//! `start asterisk` and reports it for `is-active`; every other `systemctl` call (the
//! installer's `--root` ones) goes to the real systemctl.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use pbxha_tests::{have, is_root, pbxha, require, wait_for};

struct BareLab {
    prefix: String,
    tmp: tempfile::TempDir,
}

impl BareLab {
    fn state_dir(&self) -> PathBuf {
        self.tmp.path().join("lab")
    }

    fn lab(&self, args: &[&str]) -> Output {
        pbxha_tests::lab_cmd(&self.prefix, &self.state_dir(), args)
    }
}

impl Drop for BareLab {
    fn drop(&mut self) {
        // Kills every process in the lab's namespaces (the daemon, MariaDB, the responder),
        // removes them and detaches the bare nodes' disks.
        let out = self.lab(&["down"]);
        if !out.status.success() {
            eprintln!("lab down: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

fn write(path: &Path, text: &str, mode: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn the_first_node_installed_in_the_bare_lab_holds_the_vip_and_answers_sip() {
    if !require(is_root(), "root (network namespaces)")
        || !["ip", "arping", "ping", "losetup", "mariadb-install-db", "mariadbd", "mariadb-admin"]
            .iter()
            .all(|t| require(have(t), t))
    {
        return;
    }
    let lab = BareLab { prefix: format!("pbxi{}-", std::process::id() % 100_000), tmp: tempfile::tempdir().unwrap() };
    let out = lab.lab(&["up", "--bare"]);
    assert!(out.status.success(), "lab up --bare: {}", text(&out));
    let root = lab.state_dir().join("a-root");
    assert!(root.is_dir() && text(&out).contains("a: root") && text(&out).contains("disk /dev/loop"), "{}", text(&out));

    // What an operator's node a has before the install: Asterisk's config, MariaDB running.
    write(
        &root.join("etc/asterisk/pjsip.conf"),
        "[transport-udp]\ntype=transport\nprotocol=udp\nbind=0.0.0.0:5060\n",
        0o644,
    );
    write(&root.join("etc/pbxha/mysql-admin"), "not-used-before-the-join\n", 0o600);
    let db = lab.tmp.path().join("mysql");
    let d = db.display();
    let sock = root.join("run/mysqld/mysqld.sock");
    std::fs::create_dir_all(sock.parent().unwrap()).unwrap();
    write(
        &db.join("my.cnf"),
        &format!(
            "[mysqld]\nuser = root\ndatadir = {d}/data\nsocket = {}\npid-file = {d}/mysqld.pid\nport = 3306\n\
             bind-address = 203.0.113.11\nskip-name-resolve\nlog-error = {d}/error.log\ninnodb-buffer-pool-size = 32M\ninnodb-log-file-size = 8M\n",
            sock.display()
        ),
        0o644,
    );
    let cnf = format!("--defaults-file={d}/my.cnf");
    let out = lab.lab(&["exec", "a", "--", "mariadb-install-db", &cnf, "--skip-test-db"]);
    assert!(out.status.success(), "mariadb-install-db: {}", text(&out));
    let out = lab.lab(&["exec", "a", "--", "sh", "-c", &format!("setsid mariadbd {cnf} </dev/null >/dev/null 2>&1 &")]);
    assert!(out.status.success(), "{}", text(&out));
    wait_for(Duration::from_secs(60), "MariaDB in node a's namespace", || {
        let out = lab.lab(&["exec", "a", "--", "mariadb-admin", &format!("--socket={}", sock.display()), "ping"]);
        out.status.success().then_some(())
    });

    let fake = lab.tmp.path().join("bin");
    write(
        &fake.join("systemctl"),
        &format!(
            "#!/bin/sh\ncase \"$1\" in --root) exec /usr/bin/systemctl \"$@\";; esac\n\
             pid={dir}/asterisk.pid\n\
             case \"$1 ${{2%.service}}\" in\n\
             \"start asterisk\") setsid {exe} lab sip-responder --bind 198.51.100.100:5060 --node a </dev/null >/dev/null 2>&1 & echo $! > $pid; exit 0;;\n\
             \"stop asterisk\") [ -f $pid ] && kill $(cat $pid); rm -f $pid; exit 0;;\n\
             \"is-active asterisk\") [ -f $pid ] && kill -0 $(cat $pid) 2>/dev/null && {{ echo active; exit 0; }}; echo inactive; exit 3;;\n\
             esac\nexec /usr/bin/systemctl \"$@\"\n",
            dir = lab.tmp.path().display(),
            exe = pbxha().display()
        ),
        0o755,
    );
    let uname = String::from_utf8(Command::new("uname").arg("-n").output().unwrap().stdout).unwrap().trim().to_string();
    let answers = root.join("answers.toml");
    write(
        &answers,
        &format!(
            "node = \"{uname}\"\npeer = \"b\"\nping = [\"198.51.100.1\"]\npbx = \"asterisk\"\ntiming = \"fast\"\nmail = \"none\"\n\
             [public]\ninterface = \"pub0\"\npeer-address = \"198.51.100.12\"\nvip = \"198.51.100.100/24\"\n\
             [[heartbeat]]\ninterface = \"hb0\"\npeer-address = \"203.0.113.12\"\n\
             [storage]\nkind = \"none\"\n[mysql]\nmode = \"master-master\"\nadmin-password-file = \"/etc/pbxha/mysql-admin\"\n"
        ),
        0o644,
    );
    let path = format!("PATH={}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", fake.display());
    let out = lab.lab(&[
        "exec",
        "a",
        "--",
        "env",
        &path,
        &pbxha().display().to_string(),
        "install",
        "--root",
        &root.display().to_string(),
        "--answers",
        &answers.display().to_string(),
        "--yes",
    ]);
    let said = text(&out);
    assert!(out.status.success(), "install:\n{said}");
    assert!(said.contains("PASS  mysql") && said.contains("MariaDB"), "the real server is found: {said}");
    assert!(said.contains("systemd is not PID 1 here: started `pbxha run` itself"), "{said}");

    let config = root.join("etc/pbxha/pbxha.toml");
    let status = wait_for(Duration::from_secs(60), "node a to be primary", || {
        pbxha_tests::status_json(&config).filter(|s| s["role"].as_str() == Some("primary"))
    });
    assert!(status.to_string().contains(&uname), "{status}");
    let shown = Command::new(pbxha()).arg("--config").arg(&config).arg("status").output().unwrap();
    assert!(shown.status.success() && text(&shown).contains("primary"), "{}", text(&shown));
    let log = root.join("var/log/pbxha.log");
    let held = (0..300).any(|_| {
        let vip = lab.lab(&["exec", "a", "--", "ip", "-o", "addr", "show", "dev", "pub0"]);
        let held = text(&vip).contains("198.51.100.100/24");
        if !held {
            std::thread::sleep(Duration::from_millis(100));
        }
        held
    });
    assert!(held, "the VIP never came up on a; daemon log:\n{}", std::fs::read_to_string(&log).unwrap_or_default());
    let probe = wait_for(Duration::from_secs(30), "SIP OPTIONS on the VIP answered from the client", || {
        let out = lab.lab(&["exec", "client", "--", &pbxha().display().to_string(), "sip-probe", "198.51.100.100"]);
        out.status.success().then(|| text(&out))
    });
    assert!(probe.contains("200"), "{probe}");
}
