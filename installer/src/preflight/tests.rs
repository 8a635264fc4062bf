use super::*;
use crate::answers::{parse, DrbdAnswers, Pbx};
use crate::facts::Device;

fn answers() -> Answers {
    let mut a = parse(include_str!("../../../examples/answers.toml")).unwrap().complete().unwrap();
    a.mail = None;
    a
}

/// A machine on which the example answers pass.
fn good() -> Facts {
    Facts {
        euid: 0,
        os: Some(("Debian GNU/Linux 12 (bookworm)".into(), "debian".into(), "12".into())),
        uname: "pbx1".into(),
        etc_hostname: Some("pbx1".into()),
        interfaces: crate::facts::example_interfaces(),
        vip_answered_by: Some(None),
        peer_answers: vec![
            ("eth1".into(), "10.1.1.2".parse().unwrap(), true),
            ("eth0".into(), "192.168.0.101".parse().unwrap(), true),
        ],
        time_sync: Some("chronyd".into()),
        device: Some(Device { path: "/dev/sdb1".into(), block: true, ..Device::default() }),
        drbd_utils: Some("9.22.0".into()),
        drbd_module: true,
        mysql_server: Some("mariadbd  Ver 10.11.6-MariaDB-0+deb12u1 for debian-linux-gnu on x86_64 (Debian 12)".into()),
        pbx_found: vec![(Pbx::Asterisk, "/etc/asterisk".into())],
        ..Facts::default()
    }
}

fn failing(a: &Answers, f: &Facts) -> Vec<Row> {
    check(a, f).into_iter().filter(|r| r.status == Status::Fail).collect()
}

#[test]
fn a_good_machine_passes_and_every_non_pass_row_has_a_fix() {
    let rows = check(&answers(), &good());
    assert_eq!(failures(&rows), 0, "{}", table(&rows));
    let mut bad = good();
    bad.euid = 1000;
    bad.time_sync = None;
    bad.other_ha = vec!["/etc/ha.d/ha.cf".into()];
    bad.interfaces[1].up = false;
    for r in check(&answers(), &bad) {
        assert_eq!(r.fix.is_some(), r.status != Status::Pass, "{r:?}");
    }
    let t = table(&check(&answers(), &bad));
    assert!(t.contains("FAIL  root") && t.contains("WARN  time-sync") && t.contains("WARN  other-ha"), "{t}");
}

#[test]
fn a_vip_already_answered_fails_naming_who_answers() {
    let mut f = good();
    f.vip_answered_by = Some(Some("F6:7B:BA:00:12:BC".into()));
    let rows = failing(&answers(), &f);
    assert_eq!(rows.len(), 1, "{rows:#?}");
    assert!(rows[0].detail.contains("192.168.0.105 is already answered by F6:7B:BA:00:12:BC"), "{rows:#?}");
}

#[test]
fn a_vip_outside_the_subnet_fails() {
    let mut a = answers();
    a.public.vip = "10.9.9.9/24".parse().unwrap();
    let rows = failing(&a, &good());
    assert_eq!(rows.len(), 1, "{rows:#?}");
    assert!(rows[0].detail.contains("outside eth0's subnet 192.168.0.100/24"), "{rows:#?}");
}

#[test]
fn a_mounted_or_formatted_drbd_device_fails_unless_wipe_is_answered() {
    let mut f = good();
    f.device.as_mut().unwrap().mounted_at = Some("/srv".into());
    assert!(failing(&answers(), &f)[0].detail.contains("/dev/sdb1 is mounted on /srv"));
    let mut f = good();
    f.device.as_mut().unwrap().signature = Some("ext4".into());
    let rows = failing(&answers(), &f);
    assert!(rows[0].detail.contains("/dev/sdb1 holds a ext4 signature"), "{rows:#?}");
    assert!(rows[0].fix.as_deref().unwrap().contains("storage.wipe = true"));
    let mut a = answers();
    if let Storage::Drbd(DrbdAnswers { wipe, .. }) = &mut a.storage {
        *wipe = true;
    }
    assert!(failing(&a, &f).is_empty());
    let mut f = good();
    f.device.as_mut().unwrap().holders = vec!["dm-0".into()];
    assert!(failing(&answers(), &f)[0].detail.contains("in use by dm-0"));
    let mut f = good();
    f.drbd_module = false;
    assert_eq!(failing(&answers(), &f)[0].check, "drbd-module");
}

#[test]
fn names_peer_secrets_and_pbx() {
    let mut f = good();
    f.uname = "localhost".into();
    f.peer_answers[0].2 = false;
    f.secrets = vec![("mail.password-file".into(), "/etc/pbxha/smtp-password".into(), Some(0o644))];
    f.pbx_found.clear();
    let checks: Vec<String> = failing(&answers(), &f).iter().map(|r| format!("{} {}", r.check, r.detail)).collect();
    assert_eq!(
        checks,
        [
            "hostname node = `pbx1` but `uname -n` is `localhost`",
            "peer 10.1.1.2 does not answer ping on eth1",
            "pbx asterisk is not installed",
            "secret mail.password-file: /etc/pbxha/smtp-password has mode 644",
        ]
    );
}

#[test]
fn the_joining_node_compares_versions_and_disk_sizes_with_its_peer() {
    let a = answers();
    let mut own = good();
    own.drbd_bytes = Some(1_000_000);
    let mut peer = crate::join::PeerFacts {
        mysql_server: own.mysql_server.clone(),
        pbx_version: Some("Asterisk 20.5.0".into()),
        drbd_bytes: Some(1_009_000),
    };
    own.pbx_version = Some("Asterisk 20.5.0".into());
    let status = |rows: &[Row]| rows.iter().map(|r| (r.check.clone(), r.status)).collect::<Vec<_>>();
    let names = ["peer-pbx", "peer-mysql", "drbd-size"].map(String::from);
    assert_eq!(status(&peer_rows(&a, &own, &peer)), names.clone().map(|n| (n, Status::Pass)));
    peer.drbd_bytes = Some(1_011_000);
    peer.pbx_version = Some("Asterisk 18.2.0".into());
    peer.mysql_server = Some("mysqld  Ver 8.0.36".into());
    assert_eq!(
        status(&peer_rows(&a, &own, &peer)),
        [(names[0].clone(), Status::Warn), (names[1].clone(), Status::Fail), (names[2].clone(), Status::Fail)]
    );
}
