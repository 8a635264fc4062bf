use std::io::Write;
use std::os::unix::fs::PermissionsExt;

use super::*;

/// A key file with `mode`, for configs under test.
pub(crate) fn key_file(mode: u32) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(b"0123456789abcdef0123456789abcdef\n").unwrap();
    std::fs::set_permissions(f.path(), std::fs::Permissions::from_mode(mode)).unwrap();
    f
}

/// The smallest valid config: nodes `a` and `b` on one link.
pub(crate) fn minimal(key: &std::path::Path) -> String {
    format!(
        r#"
[cluster]
name = "t"
id = 7
auth-key-file = "{}"

{}
[[link]]
name = "hb"
[link.addresses]
a = "203.0.113.11/24"
b = "203.0.113.12/24"
"#,
        key.display(),
        pbxha_lab::plan::PAIR_NODES,
    )
}

fn problems(text: &str) -> Vec<Problem> {
    parse(text).expect_err("config should be rejected")
}

fn keys(problems: &[Problem]) -> Vec<&str> {
    problems.iter().map(|p| p.key.as_str()).collect()
}

#[test]
fn minimal_config_gets_the_default_profile() {
    let key = key_file(0o600);
    let c = parse(&minimal(key.path())).unwrap();
    assert_eq!(c.heartbeat.interval, DEFAULT_INTERVAL);
    assert_eq!(c.heartbeat.deadtime, Duration::from_millis(1000));
    assert_eq!(c.links[0].mode, LinkMode::Ucast);
    assert_eq!(c.links[0].port, DEFAULT_PORT);
    assert!(!c.cluster.auto_failback);
    assert_eq!(c.paths.state_db, PathBuf::from(DEFAULT_STATE_DB));
}

#[test]
fn the_example_config_parses_when_its_key_exists() {
    let key = key_file(0o600);
    let text =
        include_str!("../../../examples/pbxha.toml").replace("/etc/pbxha/authkey", &key.path().display().to_string());
    let c = parse(&text).unwrap_or_else(|p| panic!("{p:#?}"));
    assert_eq!(c.links.len(), 2);
    assert_eq!(c.group.restart_window, Duration::from_secs(300));
    assert!(matches!(&c.resources[1].kind, ResourceKind::Service(ServiceConfig::Unit(u)) if u == "asterisk"));
    assert_eq!(c.ping.targets.len(), 2);
}

#[test]
fn every_problem_is_reported_in_one_run() {
    let key = key_file(0o644);
    let text = format!(
        r#"
[cluster]
name = "t"
auth-key-file = "{}"
colour = "blue"

[heartbeat]
interval = 400
deadtime = 700
warntime = 900
intervall = 3

[[node]]
name = "a"
id = 1
[[node]]
name = "a"
id = 1

[[link]]
name = "hb"
mode = "bcast"
[link.addresses]
a = "203.0.113.300/24"

[[resource]]
name = "vip"
kind = "vip"
address = "198.51.100.100/33"
interface = "pub0"
"#,
        key.path().display()
    );
    let p = problems(&text);
    let k = keys(&p);
    for expected in [
        "cluster.id",
        "cluster.colour",
        "heartbeat.deadtime",
        "heartbeat.warntime",
        "heartbeat.intervall",
        "node[1].name",
        "node[1].id",
        "link[0].addresses.a",
        "link[0].interface",
        "resource[0].address",
        "cluster.auth-key-file",
    ] {
        assert!(k.contains(&expected), "missing {expected} in {p:#?}");
    }
    let typo = p.iter().find(|p| p.key == "heartbeat.intervall").unwrap();
    assert_eq!(typo.hint.as_deref(), Some("did you mean `interval`?"));
    let mode = p.iter().find(|p| p.key == "cluster.auth-key-file").unwrap();
    assert!(mode.message.contains("0644"), "{mode:?}");
}

#[test]
fn a_typo_beside_a_missing_key_of_a_resource_is_named_too() {
    let key = key_file(0o600);
    let cases = [
        ("kind = \"vip\"\nadress = \"198.51.100.100/24\"\ninterface = \"pub0\"", "adress", "address"),
        ("kind = \"drbd\"\nresouce = \"r0\"", "resouce", "resource"),
        (
            "kind = \"filesystem\"\ndevice = \"/dev/drbd0\"\nmountpoint = \"/replica\"\nfstype = \"ext4\"",
            "mountpoint",
            "mount-point",
        ),
        ("kind = \"pbx\"\npbx = \"asterix\"\nami-usr = \"pbxha\"", "ami-usr", "ami-user"),
    ];
    for (body, typo, meant) in cases {
        let text = format!("{}\n[[resource]]\nname = \"r\"\n{body}\n", minimal(key.path()));
        let p = problems(&text);
        let found = p.iter().find(|p| p.key == format!("resource[0].{typo}"));
        let hint = found.and_then(|p| p.hint.clone());
        assert_eq!(hint, Some(format!("did you mean `{meant}`?")), "{body}: {p:#?}");
        // Only the typo: every key the kind takes was asked for, none is called unknown.
        let unknown: Vec<&str> = p.iter().filter(|p| p.message == "unknown key").map(|p| p.key.as_str()).collect();
        assert_eq!(unknown, [format!("resource[0].{typo}")], "{body}: {p:#?}");
    }
}

#[test]
fn a_link_must_name_every_node() {
    let key = key_file(0o600);
    let text = minimal(key.path()).replace("b = \"203.0.113.12/24\"", "c = \"203.0.113.12/24\"");
    let k = problems(&text);
    assert!(keys(&k).contains(&"link[0].addresses.b"), "{k:#?}");
    assert!(keys(&k).contains(&"link[0].addresses.c"), "{k:#?}");
}

#[test]
fn missing_key_file_is_named() {
    let text = minimal(std::path::Path::new("/nonexistent/pbxha/authkey"));
    let p = problems(&text);
    assert_eq!(keys(&p), ["cluster.auth-key-file"]);
    assert!(p[0].message.contains("/nonexistent/pbxha/authkey"));
}

#[test]
fn syntax_errors_name_the_line() {
    let p = problems("[cluster]\nname = \"x\"\nid = = 3\n");
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].key, "(line 3)");
}

#[test]
fn services_need_exactly_one_way_to_run() {
    let key = key_file(0o600);
    let base = minimal(key.path());
    let both = format!("{base}\n[[resource]]\nname = \"s\"\nkind = \"service\"\nunit = \"x\"\nexec = [\"y\"]\n");
    assert_eq!(keys(&problems(&both)), ["resource[0].kind"]);
    let half = format!("{base}\n[[resource]]\nname = \"s\"\nkind = \"service\"\nstart = [\"y\"]\n");
    assert_eq!(keys(&problems(&half)), ["resource[0].start"]);
    let exec = format!("{base}\n[[resource]]\nname = \"s\"\nkind = \"service\"\nexec = [\"sleep\", \"9\"]\nenv = {{ A = \"1\" }}\nstart-timeout = \"1.5s\"\n");
    let c = parse(&exec).unwrap();
    assert_eq!(c.resources[0].start_timeout, Duration::from_millis(1500));
    assert!(
        matches!(&c.resources[0].kind, ResourceKind::Service(ServiceConfig::Exec { argv, env }) if argv[0] == "sleep" && env["A"] == "1")
    );
    let unknown = format!("{base}\n[[resource]]\nname = \"s\"\nkind = \"lsb\"\n");
    assert_eq!(keys(&problems(&unknown)), ["resource[0].kind"]);
}

#[test]
fn ping_targets_and_durations_are_checked() {
    let key = key_file(0o600);
    let text = format!("{}\n[ping]\ntargets = [\"198.51.100.1\", \"tcp:198.51.100.1:80\", \"tcp:nowhere\", 5]\ninterval = \"3 parsecs\"\n", minimal(key.path()));
    let k = problems(&text);
    assert_eq!(keys(&k), ["ping.targets[2]", "ping.targets[3]", "ping.interval"], "{k:#?}");
}

#[test]
fn local_node_by_name_or_flag() {
    let key = key_file(0o600);
    let c = parse(&minimal(key.path())).unwrap();
    assert_eq!(local_node(&c, Some("b")).unwrap().id, 2);
    let err = local_node(&c, Some("zz")).unwrap_err();
    assert!(err.message.contains("zz") && err.message.contains("a, b"), "{err}");
}

#[test]
fn cidr_parsing_and_subnets() {
    let c: Cidr = "198.51.100.11/24".parse().unwrap();
    assert!(c.contains("198.51.100.100".parse().unwrap()));
    assert!(!c.contains("203.0.113.1".parse().unwrap()));
    assert_eq!(c.broadcast().unwrap().to_string(), "198.51.100.255");
    assert!("198.51.100.1/33".parse::<Cidr>().is_err());
    assert_eq!("2001:db8::1".parse::<Cidr>().unwrap().prefix, 128);
}

#[test]
fn mysql_section_and_resource_kind() {
    let key = key_file(0o600);
    let text = format!(
        "{}\n[mysql]\nmode = \"master-master\"\nserver-id = 1\nadmin-password-file = \"/etc/pbxha/mysql.pw\"\n\
         local = {{ host = \"198.51.100.11\" }}\npeer = {{ host = \"198.51.100.12\" }}\n\
         [[resource]]\nname = \"fs\"\nkind = \"filesystem\"\ndevice = \"/dev/drbd0\"\nmount-point = \"/replica\"\nfstype = \"ext4\"\n\
         [[resource]]\nname = \"db\"\nkind = \"mysql\"\n",
        minimal(key.path())
    );
    let c = parse(&text).unwrap();
    assert_eq!(c.mysql.as_ref().map(|m| m.mode), Some(pbxha_replica::mysql::Mode::MasterMaster));
    let ResourceKind::Mysql(m) = &c.resources[1].kind else { panic!("{:?}", c.resources[1]) };
    assert_eq!(
        (m.unit.as_str(), m.datadir.to_str(), m.replica_mount.to_str(), m.user.as_str()),
        ("mariadb", Some("/var/lib/mysql"), Some("/replica"), "root")
    );
    assert_eq!(m.server.socket.as_deref(), Some(std::path::Path::new(DEFAULT_MYSQL_SOCKET)));
}

#[test]
fn mysql_problems_keep_their_key_paths() {
    let key = key_file(0o600);
    let text = format!(
        "{}\n[mysql]\nmode = \"replica\"\nlocal = {{ host = \"127.0.0.1\", socket = \"/run/mysqld/mysqld.sock\" }}\nsed = true\n\
         [[resource]]\nname = \"db\"\nkind = \"mysql\"\nhost = \"127.0.0.1\"\nsocket = \"/run/mysqld/mysqld.sock\"\n\
         [[resource]]\nname = \"db2\"\nkind = \"mysql\"\nhost = \"127.0.0.1\"\n",
        minimal(key.path())
    );
    let k = problems(&text);
    assert_eq!(keys(&k), ["resource[0].host", "resource[1].password-file", "mysql.sed"], "{k:#?}");
    let unmounted =
        format!("{}\n[[resource]]\nname = \"db\"\nkind = \"mysql\"\nreplica-mount = \"/srv\"\n", minimal(key.path()));
    let k = problems(&unmounted);
    assert_eq!(keys(&k), ["resource[0].replica-mount"]);
    assert!(k[0].message.contains("before `db` mounts /srv"), "{k:#?}");
}

#[test]
fn empty_node_and_link_lists_and_a_zero_restart_window_are_rejected() {
    let key = key_file(0o600);
    let text = format!(
        "node = []\nlink = []\n[cluster]\nname = \"t\"\nid = 1\nauth-key-file = \"{}\"\n[group]\nrestart-window = 0\n",
        key.path().display()
    );
    let p = problems(&text);
    assert_eq!(keys(&p), ["node", "link", "group.restart-window"], "{p:#?}");
}

#[test]
fn http_is_off_unless_configured_and_loopback_by_default() {
    let key = key_file(0o600);
    let base = minimal(key.path());
    assert_eq!(parse(&base).unwrap().http, None);
    let c = parse(&format!("{base}[http]\n")).unwrap();
    assert_eq!(c.http, Some(HttpConfig { listen: DEFAULT_HTTP_LISTEN, allow: vec![] }));
    let c = parse(&format!("{base}[http]\nlisten = \"198.51.100.11:9642\"\nallow = [\"198.51.100.0/24\"]\n")).unwrap();
    let http = c.http.unwrap();
    assert_eq!(
        (http.listen.to_string(), http.allow[0].to_string()),
        ("198.51.100.11:9642".into(), "198.51.100.0/24".into())
    );
}

#[test]
fn http_on_a_non_loopback_address_needs_allow() {
    let key = key_file(0o600);
    let base = minimal(key.path());
    let p = problems(&format!("{base}[http]\nlisten = \"0.0.0.0:9642\"\n"));
    assert_eq!(keys(&p), ["http.allow"], "{p:#?}");
    assert!(
        p[0].message.contains("0.0.0.0:9642") && p[0].hint.as_deref().unwrap_or("").contains("allow = ["),
        "{p:#?}"
    );
    let p = problems(&format!("{base}[http]\nlisten = \"9642\"\nallow = [\"nowhere\"]\n"));
    assert_eq!(keys(&p), ["http.listen", "http.allow[0]"], "{p:#?}");
}

// ---- the lab's node configs: `pbxha-lab` renders them as text, this reads them ----

#[test]
fn the_labs_node_configs_parse_and_validate() {
    use pbxha_lab::plan::{
        address_of, http_endpoint, node_config, Bridge, Member, Pbx, Profile, AUTH_KEY_FILE, DOUBLE_DRAIN_TIMEOUT_MS,
        FAILURE_TIMEOUT, HTTP_PORT,
    };
    assert_eq!(HTTP_PORT, DEFAULT_HTTP_LISTEN.port());
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join(AUTH_KEY_FILE);
    std::fs::write(&key, "0123456789abcdef0123456789abcdef\n").unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let exe = std::path::Path::new("/usr/local/bin/pbx ha");
    let isolation =
        [(pbxha_lab::OnIsolation::Release, OnIsolation::Release), (pbxha_lab::OnIsolation::Keep, OnIsolation::Keep)];
    for (profile, (on_isolation, policy)) in [Profile::Default, Profile::Fast].into_iter().zip(isolation) {
        for pbx in [Pbx::Builtin, Pbx::Kamailio] {
            for node in Member::NODES {
                // With the Asterisk double on the default profile, so both shapes are checked.
                let double = profile == Profile::Default;
                let text = node_config(node, dir.path(), profile, pbx, on_isolation, double, exe);
                let config = parse(&text).unwrap_or_else(|p| panic!("{p:?}\n{text}"));
                assert_eq!(config.validate(), vec![], "{text}");
                assert_eq!(config.ping.on_isolation, policy);
                let pbx_members = config.resources.iter().filter(|r| matches!(r.kind, ResourceKind::Pbx(_))).count();
                assert_eq!(pbx_members, usize::from(double), "{text}");
                assert_eq!(config.group.failure_timeout, FAILURE_TIMEOUT);
                if double {
                    assert_eq!(config.group.drain_timeout, Duration::from_millis(DOUBLE_DRAIN_TIMEOUT_MS));
                }
                let timing = profile.timing();
                let hb = &config.heartbeat;
                assert_eq!(
                    (hb.interval, hb.deadtime, hb.warntime, hb.initdead),
                    (timing.interval, timing.deadtime, timing.warntime, timing.initdead)
                );
                assert_eq!(timing.interval.as_millis(), if profile == Profile::Fast { 50 } else { 200 });
                assert_eq!(config.links.len(), 2);
                let hb = &config.links[0];
                assert_eq!((hb.name.as_str(), hb.interface.as_deref()), ("hb", Some("hb0")));
                assert_eq!(hb.addresses["b"], "203.0.113.12/24".parse::<Cidr>().unwrap());
                assert_eq!(config.links[1].addresses["a"], "198.51.100.11/24".parse::<Cidr>().unwrap());
                assert_eq!(config.paths.control_socket, dir.path().join(format!("{node}.sock")));
                let http = config.http.as_ref().expect("the lab's nodes serve [http]");
                assert_eq!(http.listen, http_endpoint(node));
                assert_eq!(http.listen.ip().to_string(), address_of(node, Bridge::Public).unwrap());
                assert_eq!(http.allow, ["198.51.100.0/24".parse::<Cidr>().unwrap()]);
                let sip = config.resources.iter().find(|r| r.name == "sip").unwrap();
                let ResourceKind::Service(ServiceConfig::Exec { argv, .. }) = &sip.kind else {
                    panic!("{:?}", sip.kind)
                };
                match pbx {
                    Pbx::Builtin => assert_eq!(
                        argv,
                        &[
                            "/usr/local/bin/pbx ha",
                            "lab",
                            "sip-responder",
                            "--bind",
                            "198.51.100.100:5060",
                            "--node",
                            node.name()
                        ]
                    ),
                    Pbx::Kamailio => {
                        assert_eq!(argv[0], "kamailio");
                        assert!(argv.contains(&format!("{}/kamailio-{node}.cfg", dir.path().display())), "{argv:?}");
                    }
                }
            }
        }
    }
}
