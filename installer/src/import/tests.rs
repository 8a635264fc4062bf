use super::*;

const HA_CF: &str = include_str!("../../tests/fixtures/seed-ha.d/ha.cf");
const HARESOURCES: &str = include_str!("../../tests/fixtures/seed-ha.d/haresources");
const AUTHKEYS: &str = include_str!("../../tests/fixtures/seed-ha.d/authkeys");

#[test]
fn the_seed_recipes_heartbeat_becomes_defaults_and_a_group() {
    let im = import(HA_CF, Some(HARESOURCES), Some(AUTHKEYS), "kava1");
    let a = &im.answers;
    assert_eq!(
        a.timing,
        Some(Timing::Custom { interval: 2000, deadtime: 30_000, warntime: 10_000, initdead: 120_000 })
    );
    assert_eq!((a.port, a.auto_failback), (Some(694), Some(true)));
    assert_eq!((a.node.as_deref(), a.peer.as_deref()), (Some("kava1"), Some("kava2")));
    let links = a.heartbeat.as_ref().unwrap();
    assert_eq!(links.len(), 1);
    assert!(links[0].bcast && links[0].interface == "eth1" && links[0].peer_address == UNKNOWN);
    assert_eq!(a.vip, Some("192.168.5.203/24".parse().unwrap()));
    assert_eq!(a.public_interface.as_deref(), Some("eth0"));
    let service = |n: &str| Resource::Service { name: n.into(), unit: n.into() };
    assert_eq!(
        im.group,
        [
            Resource::Drbd { resource: "r0".into(), syntax: pbxha_replica::drbd::conf::Syntax::V9 },
            Resource::Filesystem { device: "/dev/drbd0".into(), mount_point: "/replica".into(), fstype: "ext3".into() },
            Resource::Vip { address: "192.168.5.203/24".into(), interface: "eth0".into() },
            service("mysqld"),
            service("asterisk"),
            service("httpd"),
        ]
    );
    assert!(im.notes.iter().any(|n| n.contains("`respawn` has no pbxha equivalent")), "{:#?}", im.notes);
    assert!(im.notes.iter().any(|n| n.contains("authkeys (sha1) is not reused")), "{:#?}", im.notes);
    // The secret itself never leaves the file.
    assert!(!format!("{im:?}").contains("password"), "{im:?}");
}

#[test]
fn this_node_is_picked_by_uname_and_ucast_links_carry_their_peer() {
    let im = import("keepalive 500ms\ndeadtime 3\nucast eth1 10.1.1.1\nnode kava1 kava2\n", None, None, "kava2");
    assert_eq!((im.answers.node.as_deref(), im.answers.peer.as_deref()), (Some("kava2"), Some("kava1")));
    assert_eq!(
        im.answers.timing,
        Some(Timing::Custom { interval: 500, deadtime: 3000, warntime: 1500, initdead: 6000 })
    );
    let l = &im.answers.heartbeat.as_ref().unwrap()[0];
    assert!(!l.bcast && l.peer_address == "10.1.1.1".parse::<IpAddr>().unwrap());
}
