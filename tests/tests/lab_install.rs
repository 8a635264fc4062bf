//! The first node installed as an operator would: `pbxha lab up --bare`, a real MariaDB
//! started inside node a's namespace, then `pbxha install --root … --answers … --yes` inside
//! node a (storage none, MySQL master-master), under node a's own host name (see
//! `pbxha_tests::bare` for why and how, and for the played Asterisk unit). The daemon the
//! installer starts (systemd is not PID 1 here) takes the VIP, `pbxha status` shows it, the
//! client's SIP OPTIONS to the VIP are answered, and the install ends with the line to run
//! on the second node.

use std::process::Command;
use std::time::Duration;

use pbxha_tests::bare::{text, BareLab};
use pbxha_tests::{have, is_root, pbxha, require, wait_for};

#[test]
fn the_first_node_installed_in_the_bare_lab_holds_the_vip_and_answers_sip() {
    if !require(is_root(), "root (network namespaces)")
        || !["ip", "arping", "ping", "losetup", "unshare", "mariadb-install-db", "mariadbd", "mariadb-admin"]
            .iter()
            .all(|t| require(have(t), t))
    {
        return;
    }
    let lab = BareLab::up("pbxi");
    let root = lab.root("a");
    assert!(root.is_dir());
    lab.prepare("a", 1);
    let answers = lab.first_answers();
    let out = lab.install("a", &["--answers", &answers.display().to_string(), "--yes"]);
    let said = text(&out);
    assert!(out.status.success(), "install:\n{said}");
    assert!(said.contains("PASS  mysql") && said.contains("MariaDB"), "the real server is found: {said}");
    assert!(said.contains("systemd is not PID 1 here: started `pbxha run` itself"), "{said}");
    assert!(said.contains("pbxha install --join 203.0.113.11 --token "), "the join line: {said}");

    let config = lab.config("a");
    let status = wait_for(Duration::from_secs(60), "node a to be primary", || {
        pbxha_tests::status_json(&config).filter(|s| s["role"].as_str() == Some("primary"))
    });
    assert!(status.to_string().contains("\"a\""), "{status}");
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
