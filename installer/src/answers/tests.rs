use super::*;

const EXAMPLE: &str = include_str!("../../../examples/answers.toml");

fn keys(problems: &[Problem]) -> Vec<&str> {
    problems.iter().map(|p| p.key.as_str()).collect()
}

#[test]
fn the_annotated_example_answers_every_question() {
    let p = parse(EXAMPLE).unwrap();
    assert_eq!(p.missing(), Vec::<&str>::new());
    let a = p.complete().unwrap();
    assert_eq!((a.node.as_str(), a.peer.as_str()), ("pbx1", "pbx2"));
    assert_eq!(a.public.vip, "192.168.0.105/24".parse().unwrap());
    assert_eq!(a.heartbeat[0].peer_address, "10.1.1.2".parse::<IpAddr>().unwrap());
    assert!(matches!(&a.storage, Storage::Drbd(d) if d.device == "/dev/sdb1" && !d.wipe && d.resource == "r0"));
    assert_eq!(a.mysql, Mysql::Replica);
    assert_eq!(a.secret_files(), [("mail.password-file".to_string(), PathBuf::from("/etc/pbxha/smtp-password"))]);
}

#[test]
fn saved_answers_read_back_the_same() {
    let a = parse(EXAMPLE).unwrap().complete().unwrap();
    let again = parse(&a.to_toml()).unwrap().complete().unwrap();
    assert_eq!(again, a);
    let mut custom = a.clone();
    custom.timing = Timing::Custom { interval: 2000, deadtime: 30_000, warntime: 10_000, initdead: 120_000 };
    custom.mail = None;
    custom.mysql = Mysql::MasterMaster { admin_password_file: "/etc/pbxha/mysql-admin".into() };
    assert_eq!(parse(&custom.to_toml()).unwrap().complete().unwrap(), custom);
}

#[test]
fn unknown_keys_are_reported_with_the_nearest_known_key() {
    let text = EXAMPLE
        .replace("peer-address = \"192.168.0.101\"", "peer-adress = \"192.168.0.101\"")
        .replace("cluster-id", "clustr-id");
    let problems = parse(&text).unwrap_err();
    let unknown: Vec<(&str, Option<&str>)> =
        problems.iter().filter(|p| p.message == "unknown key").map(|p| (p.key.as_str(), p.hint.as_deref())).collect();
    assert!(unknown.contains(&("public.peer-adress", Some("did you mean `peer-address`?"))), "{problems:#?}");
    assert!(unknown.contains(&("clustr-id", Some("did you mean `cluster-id`?"))), "{problems:#?}");
}

#[test]
fn every_problem_is_reported_at_once_with_its_key_path() {
    let text = "node = \"pbx 1\"\nport = 70000\nping = [\"gateway\"]\npbx = \"3cx\"\n[public]\ninterface = \"eth0\"\nvip = \"192.168.0.105\"\npeer-address = \"x\"\n\
                [[heartbeat]]\ninterface = \"eth1\"\n[storage]\nkind = \"drbd\"\n[mysql]\nmode = \"galera\"\n";
    let problems = parse(text).unwrap_err();
    let k = keys(&problems);
    for key in [
        "node",
        "port",
        "ping[0]",
        "pbx",
        "public.vip",
        "public.peer-address",
        "heartbeat[0].peer-address",
        "storage.device",
        "mysql.mode",
    ] {
        assert!(k.contains(&key), "{key} missing from {problems:#?}");
    }
}

#[test]
fn a_password_given_inline_is_refused_with_what_to_do() {
    let text = EXAMPLE.replace("password-file = \"/etc/pbxha/smtp-password\"   # mode 0600", "password = \"hunter2\"");
    let problems = parse(&text).unwrap_err();
    let p = problems.iter().find(|p| p.key == "mail.password").expect("mail.password reported");
    assert!(p.message.contains("inline is refused"), "{p}");
    assert!(p.hint.as_deref().unwrap_or("").contains("password-file"), "{p}");
    // The file path never holds the secret either: nothing of it is echoed back.
    assert!(!problems.iter().any(|p| p.to_string().contains("hunter2")), "{problems:#?}");
    let text = EXAMPLE.replace("mode = \"replica\"", "mode = \"master-master\"\nadmin-password = \"s3cret\"");
    assert!(keys(&parse(&text).unwrap_err()).contains(&"mysql.admin-password"));
}

#[test]
fn missing_answers_are_listed_all_at_once() {
    let p = parse("node = \"pbx1\"\npbx = \"asterisk\"\n[public]\ninterface = \"eth0\"\n").unwrap();
    assert_eq!(
        p.missing(),
        ["peer", "public.peer-address", "public.vip", "heartbeat", "ping", "storage", "mysql", "mail", "timing"]
    );
    assert_eq!(p.complete().unwrap_err(), p.missing());
}

#[test]
fn bad_toml_names_its_line() {
    let problems = parse("node = \"a\"\npeer = \n").unwrap_err();
    assert_eq!(problems[0].key, "(line 2)");
}

#[test]
fn cidr_subnets() {
    let c: Cidr = "198.51.100.11/24".parse().unwrap();
    assert!(c.contains("198.51.100.100".parse().unwrap()));
    assert!(!c.contains("198.51.101.100".parse().unwrap()));
    assert!(!c.contains("2001:db8::1".parse().unwrap()));
    assert!("198.51.100.11/33".parse::<Cidr>().is_err());
    assert!("0.0.0.0/0".parse::<Cidr>().unwrap().contains("203.0.113.9".parse().unwrap()));
}
