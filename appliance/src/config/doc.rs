//! pbxha.toml(5) against the reader: every key the reader accepts is documented, and nothing
//! else is.
//!
//! The reader's own list of what it accepts is asked for by planting an unknown key in each
//! section: its problem's hint names every key that section takes ("known keys here: ...").
//! So a key added to the reader without a line in the page fails here, whichever crate reads
//! that section.

use std::collections::{BTreeMap, BTreeSet};

use super::tests::{key_file, minimal};
use super::*;

const PAGE: &str = include_str!("../../../packaging/pbxha.toml.5");
const PLANTED: &str = "zzzz-not-a-key";

/// Keys per `.SS` section of the page: the `\fBkey\fR` right after each `.TP`.
fn documented() -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut section: Option<String> = None;
    let mut lines = PAGE.lines();
    while let Some(line) = lines.next() {
        if let Some(title) = line.strip_prefix(".SS ") {
            section = Some(title.trim().to_string());
            out.entry(title.trim().to_string()).or_default();
        } else if line.starts_with(".SH ") {
            section = None;
        } else if line == ".TP" {
            let (Some(section), Some(next)) = (&section, lines.next()) else { continue };
            if let Some(key) = next.strip_prefix("\\fB").and_then(|rest| rest.split("\\fR").next()) {
                out.entry(section.clone()).or_default().insert(key.to_string());
            }
        }
    }
    out
}

/// What the reader says the section holding the planted key accepts.
fn known_keys(text: &str) -> BTreeSet<String> {
    let problems = parse(text).expect_err("the planted key is unknown");
    let planted = problems
        .iter()
        .find(|p| p.key == PLANTED || p.key.ends_with(&format!(".{PLANTED}")))
        .unwrap_or_else(|| panic!("no problem for the planted key in {problems:#?}\n{text}"));
    let hint = planted.hint.as_deref().unwrap_or_default();
    let list = hint.strip_prefix("known keys here: ").unwrap_or_else(|| panic!("unexpected hint `{hint}`"));
    list.split(", ").map(str::to_string).collect()
}

/// The part of a hint after "one of ", as a set.
fn one_of(text: &str, key: &str) -> BTreeSet<String> {
    let problems = parse(text).expect_err("the kind is unknown");
    let p =
        problems.iter().find(|p| p.key.ends_with(key)).unwrap_or_else(|| panic!("no `{key}` problem in {problems:#?}"));
    let hint = p.hint.as_deref().unwrap_or_default();
    hint.strip_prefix("one of ")
        .unwrap_or_else(|| panic!("unexpected hint `{hint}`"))
        .split(", ")
        .map(str::to_string)
        .collect()
}

/// The minimal config with `line` inserted right after the first `anchor`.
fn after(base: &str, anchor: &str, line: &str) -> String {
    base.replacen(anchor, &format!("{anchor}{line}\n"), 1)
}

const RESOURCE_KINDS: [(&str, &str); 7] = [
    ("vip", "address = \"198.51.100.100/24\"\ninterface = \"eth0\""),
    ("service", "unit = \"asterisk\""),
    ("ocf", "agent = \"heartbeat/apache\""),
    ("pbx", "pbx = \"asterisk\"\nami-port = 5038\nami-user = \"pbxha\"\nami-secret-file = \"/etc/pbxha/ami\""),
    ("drbd", "resource = \"r0\""),
    ("filesystem", "device = \"/dev/drbd0\"\nmount-point = \"/replica\"\nfstype = \"ext4\""),
    ("mysql", ""),
];

const CHECK_KINDS: [(&str, &str); 9] = [
    ("ping", "host = \"198.51.100.1\""),
    ("tcp", "address = \"198.51.100.1:5060\""),
    ("sip", "target = \"198.51.100.1:5060\""),
    ("http", "url = \"http://198.51.100.1/\""),
    ("disk", "path = \"/\""),
    ("drbd", "resource = \"r0\""),
    ("mysql-replication", ""),
    ("command", "argv = [\"true\"]"),
    ("drill", ""),
];

const MYSQL: &str = "[mysql]\nmode = \"master-master\"\nserver-id = 1\nadmin-password-file = \"/etc/pbxha/mysql\"\n";

#[test]
fn every_key_the_reader_accepts_is_documented() {
    let key = key_file(0o600);
    let base = minimal(key.path());
    let z = format!("{PLANTED} = 1");
    let mut cases: Vec<(String, String)> = vec![
        ("[top level]".into(), format!("{z}\n{base}")),
        ("[cluster]".into(), after(&base, "[cluster]\n", &z)),
        ("[[node]]".into(), after(&base, "[[node]]\n", &z)),
        ("[[link]]".into(), after(&base, "[[link]]\n", &z)),
        ("[mail]".into(), format!("{base}[mail]\nserver = \"127.0.0.1\"\nfrom = \"a@example.org\"\nto = [\"b@example.org\"]\n{z}\n")),
        ("[[probe]]".into(), format!("{base}[[probe]]\nname = \"p\"\nrole = \"local-pbx\"\nresource = \"pbx\"\ntarget = \"198.51.100.1\"\n{z}\n")),
        ("[mysql]".into(), format!("{base}{MYSQL}local = {{ host = \"127.0.0.1\" }}\n{z}\n")),
        ("[mysql.local]".into(), format!("{base}{MYSQL}local = {{ host = \"127.0.0.1\", {z} }}\n")),
        ("[mysql.peer]".into(), format!("{base}{MYSQL}local = {{ host = \"127.0.0.1\" }}\npeer = {{ host = \"198.51.100.2\", {z} }}\n")),
    ];
    for section in ["heartbeat", "ping", "group", "paths", "watchdog", "http"] {
        cases.push((format!("[{section}]"), format!("{base}[{section}]\n{z}\n")));
    }
    for (kind, keys) in RESOURCE_KINDS {
        let text = format!("{base}[[resource]]\nname = \"r\"\nkind = \"{kind}\"\n{keys}\n{z}\n");
        cases.push((format!("[[resource]] kind = {kind}"), text));
    }
    for (kind, keys) in CHECK_KINDS {
        let text = format!("{base}[[check]]\nname = \"c\"\nevery = \"30s\"\nkind = \"{kind}\"\n{keys}\n{z}\n");
        cases.push((format!("[[check]] kind = {kind}"), text));
    }

    let page = documented();
    let mut problems = Vec::new();
    let mut covered = BTreeSet::new();
    for (section, text) in &cases {
        let known = known_keys(text);
        // A kind's section documents only what it adds to the keys every member takes.
        let common = section.split_once(" kind = ").map(|(s, _)| s.to_string());
        let mut doc = page.get(section).cloned().unwrap_or_else(|| {
            problems.push(format!("{section}: not in pbxha.toml(5)"));
            BTreeSet::new()
        });
        if let Some(common) = &common {
            doc.extend(page.get(common).cloned().unwrap_or_default());
            covered.insert(common.clone());
        }
        covered.insert(section.clone());
        for k in known.difference(&doc) {
            problems.push(format!("{section}: `{k}` is read but not documented"));
        }
        for k in doc.difference(&known) {
            problems.push(format!("{section}: `{k}` is documented but not read"));
        }
    }
    for section in page.keys().filter(|s| !covered.contains(*s)) {
        problems.push(format!("{section}: documented, but this test does not check it"));
    }
    assert!(problems.is_empty(), "pbxha.toml(5) and the reader disagree:\n{}", problems.join("\n"));
}

#[test]
fn every_kind_the_reader_accepts_is_checked_above() {
    let key = key_file(0o600);
    let base = minimal(key.path());
    let resources = one_of(&format!("{base}[[resource]]\nname = \"r\"\nkind = \"nope\"\n"), ".kind");
    assert_eq!(resources, RESOURCE_KINDS.iter().map(|(k, _)| k.to_string()).collect());
    let checks = one_of(&format!("{base}[[check]]\nname = \"c\"\nevery = \"30s\"\nkind = \"nope\"\n"), ".kind");
    assert_eq!(checks, CHECK_KINDS.iter().map(|(k, _)| k.to_string()).collect());
}
