use std::sync::Arc;

use super::*;
use crate::answers::parse;

fn env(root: &Path) -> Env {
    Env { root: root.to_path_buf(), runner: Arc::new(pbxha_runner::ScriptedRunner::new()) }
}

fn answers() -> Answers {
    let mut a = parse(include_str!("../../../examples/answers.toml")).unwrap().complete().unwrap();
    let f = facts();
    resolve(&mut a, &f).unwrap();
    a
}

fn facts() -> Facts {
    Facts {
        interfaces: crate::facts::example_interfaces(),
        enabled_units: vec!["asterisk".into()],
        nonlocal_bind: Some("0".into()),
        ..Facts::default()
    }
}

#[test]
fn addresses_left_out_come_from_the_interfaces() {
    let a = answers();
    assert_eq!(a.public.address, Some("192.168.0.100/24".parse().unwrap()));
    assert_eq!(a.heartbeat[0].address, Some("10.1.1.1/24".parse().unwrap()));
    let mut b = parse(include_str!("../../../examples/answers.toml")).unwrap().complete().unwrap();
    let err = resolve(&mut b, &Facts::default()).unwrap_err();
    assert_eq!(err.len(), 2, "{err:?}");
}

#[test]
fn the_drbd_plan_in_order_with_the_config_last() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("etc/asterisk")).unwrap();
    std::fs::write(root.path().join("etc/asterisk/pjsip.conf"), "[t]\ntype=transport\nbind=0.0.0.0:5060\n").unwrap();
    std::fs::create_dir_all(root.path().join("var/lib/mysql")).unwrap();
    let read = |p: &Path| std::fs::read_to_string(p).ok();
    let size = |_: &Path| Some(4096);
    let plan = plan(&answers(), &facts(), &env(root.path()), &read, &size).unwrap();
    let ids: Vec<&str> = plan.steps.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "authkey",
            "answers",
            "drbd-config",
            "drbd-create-md",
            "drbd-up",
            "drbd-primary",
            "mkfs",
            "mount",
            "pbx-bind",
            "migrate",
            "sysctl",
            "boot-asterisk",
            "unit",
            "config"
        ]
    );
    let shown = show(&plan);
    let r = root.path().display();
    assert!(shown.contains(&format!("runs: drbdadm -c {r}/etc/drbd.d/r0.res primary --force r0")), "{shown}");
    assert!(shown.contains("  -bind=0.0.0.0:5060\n  +bind=192.168.0.105:5060\n"), "{shown}");
    assert!(shown.contains(&format!("{r}/etc/asterisk -> {r}/replica{r}/etc/asterisk (4096 bytes)")), "{shown}");
    assert!(shown.contains(&format!("{r}/var/lib/mysql -> ")), "replica mode moves the datadir too: {shown}");
    assert!(shown.contains(&format!("runs: systemctl --root {r} disable asterisk.service")), "{shown}");
    assert!(shown.contains("+net.ipv4.ip_nonlocal_bind = 1"), "{shown}");
    assert!(matches!(plan.steps.last().unwrap().actions[..], [Action::Commit { .. }]));
    assert!(plan.start_daemon, "systemd is not PID 1 in these facts: pbxha starts the daemon itself");
}

#[test]
fn without_storage_nothing_is_formatted_or_moved() {
    let root = tempfile::tempdir().unwrap();
    let mut a = answers();
    a.storage = crate::answers::Storage::None;
    a.mysql = crate::answers::Mysql::None;
    let read = |_: &Path| None;
    let size = |_: &Path| None;
    let plan = plan(&a, &Facts { systemd_pid1: false, ..facts() }, &env(root.path()), &read, &size).unwrap();
    let ids: Vec<&str> = plan.steps.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["authkey", "answers", "sysctl", "boot-asterisk", "unit", "config"]);
}

/// The plan for master-master answers on a machine with this firewall: its firewall step.
fn firewall_step(fw: crate::facts::Firewall) -> crate::plan::Step {
    let root = tempfile::tempdir().unwrap();
    let mut a = answers();
    a.mysql = crate::answers::Mysql::MasterMaster { admin_password_file: "/etc/pbxha/mysql-admin".into() };
    let f = Facts { firewall: Some(fw), ..facts() };
    let read = |_: &Path| None;
    let size = |_: &Path| None;
    let plan = plan(&a, &f, &env(root.path()), &read, &size).unwrap();
    plan.steps.into_iter().find(|s| s.id == "firewall").expect("a firewall step")
}

fn argvs(step: &crate::plan::Step) -> Vec<(String, String)> {
    step.actions
        .iter()
        .map(|action| match action {
            Action::Run { argv, undo: Some(undo), .. } => (argv.join(" "), undo.join(" ")),
            other => panic!("{other:?}"),
        })
        .collect()
}

#[test]
fn a_dropping_firewall_gets_one_rule_per_link_and_replication() {
    let chain = crate::facts::NftChain { family: "inet".into(), table: "filter".into(), chain: "input".into() };
    let step = firewall_step(crate::facts::Firewall::Nftables(chain));
    let Action::Nft { rules, .. } = &step.actions[0] else { panic!("{step:?}") };
    assert_eq!(
        rules,
        &[
            "ip saddr 10.1.1.2 udp dport 694 accept",
            "ip saddr 192.168.0.101 udp dport 694 accept",
            "ip saddr 10.1.1.2 tcp dport 7788 accept",
            "ip saddr 10.1.1.2 tcp dport 3306 accept",
        ]
    );
    assert!(
        step.shows.contains("nft insert rule inet filter input ip saddr 10.1.1.2 tcp dport 7788 accept comment pbxha"),
        "{}",
        step.shows
    );
}

#[test]
fn ufw_gets_the_same_openings_each_with_its_delete() {
    let step = firewall_step(crate::facts::Firewall::Ufw);
    let runs = argvs(&step);
    assert_eq!(runs.len(), 4, "{runs:?}");
    assert_eq!(
        runs[0],
        (
            "ufw allow proto udp from 10.1.1.2 to any port 694 comment pbxha".to_string(),
            "ufw delete allow proto udp from 10.1.1.2 to any port 694".to_string()
        )
    );
    assert_eq!(runs[3].0, "ufw allow proto tcp from 10.1.1.2 to any port 3306 comment pbxha");
    assert!(step.shows.contains("runs: ufw allow proto tcp from 10.1.1.2 to any port 7788 comment pbxha"));
}

#[test]
fn firewalld_gets_running_and_permanent_rich_rules() {
    let step = firewall_step(crate::facts::Firewall::Firewalld);
    let runs = argvs(&step);
    let rule = r#"rule family="ipv4" source address="10.1.1.2" port port="694" protocol="udp" accept"#;
    assert_eq!(runs.len(), 8, "{runs:?}");
    assert_eq!(
        runs[0],
        (
            format!("firewall-cmd --quiet --add-rich-rule={rule}"),
            format!("firewall-cmd --quiet --remove-rich-rule={rule}")
        )
    );
    assert_eq!(runs[1].0, format!("firewall-cmd --quiet --permanent --add-rich-rule={rule}"));
    assert!(step.shows.contains(&format!("runs: firewall-cmd --quiet '--add-rich-rule={rule}'")), "{}", step.shows);
}

#[test]
fn the_joining_node_plans_the_received_files_a_secondary_drbd_and_mysql_setup_before_the_commit() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("var/lib/asterisk")).unwrap();
    let mut first = answers();
    first.mysql = Mysql::MasterMaster { admin_password_file: "/etc/pbxha/mysql-admin".into() };
    let mut a = first.for_joining_node().unwrap();
    assert_eq!((a.node.as_str(), a.peer.as_str(), a.first_node.as_deref()), ("pbx2", "pbx1", Some("pbx1")));
    assert_eq!(a.heartbeat[0].peer_address, first.heartbeat[0].address.unwrap().addr);
    let mut f = facts();
    for (i, addr) in f.interfaces.iter_mut().zip(["192.168.0.101/24", "10.1.1.2/24"]) {
        i.addresses = vec![addr.parse().unwrap()];
    }
    resolve(&mut a, &f).unwrap();
    let got = crate::join::Payload {
        answers: first.to_toml(),
        auth_key: "k".repeat(64) + "\n",
        secrets: vec![("/etc/pbxha/mysql-admin".into(), "pw-in-the-file\n".into())],
        peer: Default::default(),
    };
    let read = |p: &Path| std::fs::read_to_string(p).ok();
    let size = |_: &Path| Some(4096);
    let plan = join_plan(&a, &f, &env(root.path()), &read, &size, &got).unwrap();
    let ids: Vec<&str> = plan.steps.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "authkey",
            "secret",
            "answers",
            "drbd-config",
            "drbd-create-md",
            "drbd-up",
            "drbd-sync",
            "migrate",
            "sysctl",
            "boot-asterisk",
            "unit",
            "mysql-setup",
            "config"
        ]
    );
    let shown = show(&plan);
    assert!(!shown.contains("kkkk") && !shown.contains("pw-in-the-file"), "secrets are never shown:\n{shown}");
    let made_primary = shown.lines().any(|l| l.contains("drbdadm") && l.contains(" primary "));
    assert!(!made_primary && !shown.contains("mkfs"), "the joining node is never made primary:\n{shown}");
    assert_eq!(
        plan.steps[0].actions,
        [Action::Write { path: root.path().join("etc/pbxha/authkey"), contents: got.auth_key.clone(), mode: 0o600 }]
    );
    assert!(matches!(&plan.steps[6].actions[0], Action::DrbdSync { .. }));
    assert!(matches!(&plan.steps[7].actions[0], Action::Migrate { secondary: true, .. }));
    let Action::Commit { contents, .. } = &plan.steps[12].actions[0] else { panic!("the config is last") };
    assert_eq!(plan.steps[11].actions, [Action::MysqlSetup { config: contents.clone() }]);
    for line in ["name = \"pbx2\"\nid = 2", "name = \"pbx1\"\nid = 1", "server-id = 2\nseed = false"] {
        assert!(contents.contains(line), "{line}:\n{contents}");
    }
}
