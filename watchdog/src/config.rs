//! The `[mail]` and `[[check]]` sections, read from a TOML table the appliance hands over.
//!
//! Read with pbxha-conf's [`Reader`], like the rest of the file: every problem is collected
//! with its key path, a message and a hint, and keys nobody asked for are reported as unknown,
//! so `pbxha check-config` lists them all in one run.
//!
//! ```toml
//! [mail]
//! server = "smtp.gmail.com"
//! port = 587                       # default: 587 starttls, 465 tls, 25 none
//! security = "starttls"            # starttls | tls | none
//! username = "alerts@example.org"
//! password-file = "/etc/pbxha/smtp-password"   # mode 0600
//! from = "pbxha <alerts@example.org>"
//! reply-to = "noc@example.org"
//! to = ["noc@example.org", "oncall@example.org"]
//! flood-limit = 10                 # mails a minute before the rest go out as one digest
//!
//! [[check]]
//! name = "uplink"
//! kind = "ping"                    # ping tcp sip http disk drbd mysql-replication command
//! schedule = "*/1 * * * *"         # or: every = "30s"
//! host = "198.51.100.1"
//! ```

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use lettre::message::Mailbox;
use pbxha_conf::{parse_duration, Problem, Reader};
use toml::{Table, Value};

use crate::schedule::Schedule;

/// How the SMTP connection is protected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Security {
    /// Plain connection upgraded with STARTTLS, which is then required (RFC 3207; port 587).
    StartTls,
    /// TLS from the first byte (RFC 8314 "implicit TLS"; port 465).
    Tls,
    /// No encryption: only for a relay on the same host or a test server.
    None,
}

/// The `[mail]` section.
#[derive(Clone, Debug, PartialEq)]
pub struct MailConfig {
    pub server: String,
    pub port: u16,
    pub security: Security,
    /// AUTH PLAIN/LOGIN user; no AUTH when unset.
    pub username: Option<String>,
    /// Where the password lives (mode 0600, read at each send so a rotated password needs no
    /// reload).
    pub password_file: Option<PathBuf>,
    /// An extra CA certificate (PEM) to trust, for a relay with a private CA.
    pub ca_file: Option<PathBuf>,
    pub from: Mailbox,
    pub reply_to: Option<Mailbox>,
    pub to: Vec<Mailbox>,
    /// Mails a minute sent one by one; beyond it the waiting ones go out as one digest.
    pub flood_limit: u32,
    /// Per SMTP step (connect, each command); a silent server must not hold the queue.
    pub timeout: Duration,
    /// First retry delay, doubled per failed attempt up to `retry_max`.
    pub retry_min: Duration,
    pub retry_max: Duration,
}

/// Defaults for `[mail]`: a minute's worth of alerts in a failover storm is rarely above ten.
pub const DEFAULT_FLOOD_LIMIT: u32 = 10;
pub const DEFAULT_SMTP_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_RETRY_MIN: Duration = Duration::from_secs(10);
pub const DEFAULT_RETRY_MAX: Duration = Duration::from_secs(600);

/// One `[[check]]` table.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckConfig {
    pub name: String,
    pub schedule: Schedule,
    pub timeout: Duration,
    /// Good results in a row before a down check is up again (keepalived's `rise`).
    pub rise: u32,
    /// Bad results in a row before an up check is down (keepalived's `fall`).
    pub fall: u32,
    /// A down check is also a fault of this node: it hands the group to a healthy peer and
    /// may not take it (keepalived's `track_script`). Off: the check only alerts.
    pub failover: bool,
    pub kind: CheckKind,
}

/// What a check looks at.
#[derive(Clone, Debug, PartialEq)]
pub enum CheckKind {
    /// ICMP echo through `ping`.
    Ping { host: IpAddr },
    /// A TCP connect.
    Tcp { address: SocketAddr },
    /// SIP OPTIONS; any final answer but 408/500/503 is up.
    Sip { target: SocketAddr, tcp: bool },
    /// HTTP GET `http://host:port/path`; 2xx and 3xx are up.
    Http { address: SocketAddr, host: String, path: String },
    /// Free space on the filesystem holding `path`.
    Disk { path: PathBuf, min_free_percent: u8 },
    /// A DRBD resource is Connected and UpToDate on both sides.
    Drbd { resource: String },
    /// Both replication threads run (argv prints `SHOW SLAVE STATUS\G`).
    MysqlReplication { argv: Vec<String> },
    /// Any command; exit 0 is up.
    Command { argv: Vec<String> },
    /// `pbxha drill` on the node holding the group (the other node's run says so and passes):
    /// `argv` is the pbxha command line from `drill` on; the daemon puts its own program and
    /// config in front ([`CheckKind::drill_argv`]).
    Drill { argv: Vec<String> },
}

impl CheckKind {
    /// The argv a drill check runs, with `program` and its `config` in front.
    pub fn drill_argv(argv: &[String], program: &str, config: &str) -> Vec<String> {
        [program, "-c", config].into_iter().map(String::from).chain(argv.iter().cloned()).collect()
    }
}

const KINDS: &str = "ping, tcp, sip, http, disk, drbd, mysql-replication, command, drill";

/// A drill moves the group there and back, after any call drain: the default timeout leaves
/// room for the default drain (5 minutes) both ways.
const DRILL_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// Reads `[mail]` from `table` (the section itself); `prefix` is its key path (`mail`).
pub fn parse_mail(table: &Table, prefix: &str) -> Result<MailConfig, Vec<Problem>> {
    pbxha_conf::read_table(table, prefix, read_mail)
}

/// Reads the keys of the `[mail]` section `r`; the caller finishes it.
pub fn read_mail(r: &mut Reader) -> Option<MailConfig> {
    let server = r.string("server");
    let security = match r.opt_string("security").as_deref() {
        None | Some("starttls") => Security::StartTls,
        Some("tls") => Security::Tls,
        Some("none") => Security::None,
        Some(other) => {
            r.problem::<()>("security", format!("unknown security `{other}`"), Some("one of starttls, tls, none"));
            Security::StartTls
        }
    };
    let default_port = match security {
        Security::StartTls => 587,
        Security::Tls => 465,
        Security::None => 25,
    };
    let port = r.int_or("port", 1, 65535, default_port);
    let username = r.opt_string("username");
    let password_file = r.opt_path("password-file");
    if username.is_some() != password_file.is_some() {
        r.problem::<()>(
            if username.is_some() { "password-file" } else { "username" },
            "`username` and `password-file` go together".into(),
            Some("AUTH needs both; leave both out for a relay without AUTH"),
        );
    }
    let ca_file = r.opt_path("ca-file");
    let from = mailbox(r, "from", true);
    let reply_to = mailbox(r, "reply-to", false);
    let to = mailboxes(r, "to");
    let flood_limit = r.int_or("flood-limit", 1, 10_000, DEFAULT_FLOOD_LIMIT);
    let timeout = r.duration_or("timeout", DEFAULT_SMTP_TIMEOUT);
    let retry_min = r.duration_or("retry-min", DEFAULT_RETRY_MIN);
    let retry_max = r.duration_or("retry-max", DEFAULT_RETRY_MAX);
    if retry_min.is_zero() || retry_max < retry_min {
        r.problem::<()>("retry-min", "retry-min must be above zero and not above retry-max".into(), None);
    }
    Some(MailConfig {
        server: server?,
        port,
        security,
        username,
        password_file,
        ca_file,
        from: from?,
        reply_to,
        to,
        flood_limit,
        timeout,
        retry_min,
        retry_max,
    })
}

/// Reads the `[[check]]` tables of the file's root `r`; check names must be unique because
/// history and notifications are keyed by them.
pub fn read_checks(r: &mut Reader) -> Vec<CheckConfig> {
    let mut checks = Vec::new();
    let mut names = BTreeSet::new();
    for mut table in r.opt_tables("check").unwrap_or_default() {
        let check = read_check(&mut table);
        table.finish();
        match check {
            Some(c) if !names.insert(c.name.clone()) => {
                let message = format!("check `{}` is defined twice", c.name);
                table.problem::<()>("name", message, Some("check names must be unique"));
            }
            Some(c) => checks.push(c),
            None => {}
        }
    }
    checks
}

fn read_check(r: &mut Reader) -> Option<CheckConfig> {
    let name = r.string("name");
    let schedule = match (r.opt_string("schedule"), r.get("every")) {
        (Some(line), None) => match Schedule::cron(&line) {
            Ok(s) => Some(s),
            Err(m) => r.problem(
                "schedule",
                m,
                Some("five fields: minute hour day-of-month month day-of-week, e.g. \"*/1 * * * *\""),
            ),
        },
        (None, Some(v)) => match parse_duration(v) {
            Ok(d) if d >= Duration::from_secs(1) => Some(Schedule::Every(d)),
            Ok(_) => r.problem("every", "must be at least 1s".into(), None),
            Err(m) => r.problem("every", m, Some("e.g. every = \"30s\"")),
        },
        (Some(_), Some(_)) => r.problem("every", "give either `schedule` or `every`, not both".into(), None),
        (None, None) => r.problem(
            "schedule",
            "missing: a check needs `schedule` or `every`".into(),
            Some("schedule = \"*/1 * * * *\" or every = \"30s\""),
        ),
    };
    let drill = r.get("kind").and_then(|k| k.as_str()) == Some("drill");
    let timeout = r.duration_or("timeout", if drill { DRILL_TIMEOUT } else { Duration::from_secs(10) });
    let rise = r.int_or("rise", 1, 100, 1);
    let fall = r.int_or("fall", 1, 100, 1);
    let failover = r.bool_or("failover", false);
    let kind = match r.string("kind").as_deref() {
        Some("ping") => parsed(r, "host", "an IP address, e.g. 198.51.100.1").map(|host| CheckKind::Ping { host }),
        Some("tcp") => {
            parsed(r, "address", "ADDRESS:PORT, e.g. 198.51.100.10:5060").map(|address| CheckKind::Tcp { address })
        }
        Some("sip") => {
            let target = parsed(r, "target", "ADDRESS:PORT, e.g. 198.51.100.100:5060");
            let tcp = match r.opt_string("transport").as_deref() {
                None | Some("udp") => false,
                Some("tcp") => true,
                Some(other) => {
                    r.problem("transport", format!("unknown transport `{other}`"), Some("udp or tcp")).unwrap_or(false)
                }
            };
            target.map(|target| CheckKind::Sip { target, tcp })
        }
        Some("http") => r
            .string_as(
                "url",
                parse_http_url,
                Some("http://ADDRESS[:PORT]/PATH with an IP address; https is not supported"),
            )
            .map(|(address, host, path)| CheckKind::Http { address, host, path }),
        Some("disk") => {
            let path = r.string("path").map(PathBuf::from);
            let min = r.int_or("min-free-percent", 0, 100, 10);
            path.map(|path| CheckKind::Disk { path, min_free_percent: min })
        }
        Some("drbd") => r.string("resource").map(|resource| CheckKind::Drbd { resource }),
        Some("mysql-replication") => {
            let argv = r
                .opt_argv("argv")
                .unwrap_or_else(|| ["mariadb", "--batch", "-e", "SHOW SLAVE STATUS\\G"].map(String::from).to_vec());
            Some(CheckKind::MysqlReplication { argv })
        }
        Some("command") => match r.opt_argv("argv") {
            Some(argv) => Some(CheckKind::Command { argv }),
            None if r.contains("argv") => None,
            None => r.missing("argv", Some("argv = [\"/usr/local/bin/check-trunk\", \"--quiet\"]")),
        },
        Some("drill") => {
            let mut argv = vec!["drill".to_string(), "--if-holder".into()];
            for (key, flag) in [("now", "--now"), ("dry-run", "--dry-run")] {
                if r.bool_or(key, false) {
                    argv.push(flag.into());
                }
            }
            Some(CheckKind::Drill { argv })
        }
        Some(other) => r.problem("kind", format!("unknown check kind `{other}`"), Some(&format!("one of {KINDS}"))),
        None => None,
    };
    Some(CheckConfig { name: name?, schedule: schedule?, timeout, rise, fall, failover, kind: kind? })
}

/// A required string parsed with `FromStr`; `what` describes the expected form.
fn parsed<T: std::str::FromStr>(r: &mut Reader, key: &'static str, what: &str) -> Option<T> {
    let hint = format!("expected {what}");
    r.string_as(key, |text| text.parse().map_err(|_| format!("`{text}` is not valid here")), Some(&hint))
}

fn mailbox_at(r: &Reader, key: String, v: &Value) -> Option<Mailbox> {
    let hint = Some("write `name@example.org` or `Name <name@example.org>`");
    match v.as_str() {
        Some(s) => {
            s.parse().map_or_else(|e| r.problem_at(key, format!("`{s}` is not an e-mail address: {e}"), hint), Some)
        }
        None => r.problem_at(key, format!("expected a string, found {}", v.type_str()), hint),
    }
}

fn mailbox(r: &mut Reader, key: &'static str, required: bool) -> Option<Mailbox> {
    match r.get(key) {
        Some(v) => mailbox_at(r, r.key(key), v),
        None if required => r.missing(key, None),
        None => None,
    }
}

fn mailboxes(r: &mut Reader, key: &'static str) -> Vec<Mailbox> {
    let hint = Some("to = [\"noc@example.org\"]");
    match r.get(key) {
        Some(Value::Array(items)) if !items.is_empty() => {
            items.iter().enumerate().filter_map(|(i, v)| mailbox_at(r, format!("{}[{i}]", r.key(key)), v)).collect()
        }
        // One address as a plain string is what people write first.
        Some(v @ Value::String(_)) => mailbox_at(r, r.key(key), v).into_iter().collect(),
        Some(_) => r.problem(key, "expected a list of addresses".into(), hint).unwrap_or_default(),
        None => r.problem(key, "missing required key: whom to mail".into(), hint).unwrap_or_default(),
    }
}

/// `http://198.51.100.10:8080/health` → (address, Host header, path).
fn parse_http_url(url: &str) -> Result<(SocketAddr, String, String), String> {
    let rest = url.strip_prefix("http://").ok_or_else(|| format!("`{url}` does not start with http://"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let address = match authority.parse::<SocketAddr>() {
        Ok(a) => a,
        Err(_) => {
            let ip: IpAddr = authority
                .trim_matches(['[', ']'])
                .parse()
                .map_err(|_| format!("`{authority}` is not ADDRESS[:PORT]"))?;
            SocketAddr::new(ip, 80)
        }
    };
    Ok((address, authority.to_string(), path.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> Table {
        text.parse().unwrap()
    }

    fn keys(problems: &[Problem]) -> Vec<&str> {
        problems.iter().map(|p| p.key.as_str()).collect()
    }

    #[test]
    fn gmail_style_relay() {
        let t = table(
            r#"
            server = "smtp.gmail.com"
            username = "alerts@example.org"
            password-file = "/etc/pbxha/smtp-password"
            from = "pbxha <alerts@example.org>"
            reply-to = "noc@example.org"
            to = ["noc@example.org", "Oncall <oncall@example.org>"]
            "#,
        );
        let m = parse_mail(&t, "mail").unwrap();
        assert_eq!((m.port, m.security), (587, Security::StartTls));
        assert_eq!(m.to.len(), 2);
        assert_eq!(m.from.email.to_string(), "alerts@example.org");
        assert_eq!(m.flood_limit, DEFAULT_FLOOD_LIMIT);
    }

    #[test]
    fn every_mail_problem_is_reported_with_its_key() {
        let t = table(
            r#"
            security = "ssl"
            username = "x"
            from = "not an address"
            to = ["ok@example.org", "bad@", 3]
            flood-limit = 0
            colour = "red"
            "#,
        );
        let p = parse_mail(&t, "mail").unwrap_err();
        assert_eq!(
            keys(&p),
            [
                "mail.server",
                "mail.security",
                "mail.password-file",
                "mail.from",
                "mail.to[1]",
                "mail.to[2]",
                "mail.flood-limit",
                "mail.colour"
            ]
        );
        assert!(p[1].hint.as_deref().unwrap().contains("starttls"));
        assert!(p[3].message.contains("`not an address`"), "{}", p[3]);
    }

    #[test]
    fn implicit_tls_defaults_to_465() {
        let t = table(
            r#"server = "198.51.100.5"
            security = "tls"
            from = "a@example.org"
            to = "b@example.org""#,
        );
        let m = parse_mail(&t, "mail").unwrap();
        assert_eq!((m.port, m.security, m.to.len()), (465, Security::Tls, 1));
    }

    fn checks(text: &str) -> Result<Vec<CheckConfig>, Vec<Problem>> {
        let root = table(text);
        let problems = pbxha_conf::Problems::new();
        let checks = read_checks(&mut Reader::root(&root, &problems));
        problems.result(Some(checks))
    }

    #[test]
    fn checks_of_every_kind() {
        let c = checks(
            r#"
            [[check]]
            name = "uplink"
            kind = "ping"
            schedule = "*/1 * * * *"
            host = "198.51.100.1"
            fall = 3
            [[check]]
            name = "pbx"
            kind = "sip"
            every = "30s"
            target = "198.51.100.100:5060"
            transport = "tcp"
            [[check]]
            name = "web"
            kind = "http"
            every = "1m"
            url = "http://198.51.100.10:8080/health"
            [[check]]
            name = "replica"
            kind = "disk"
            every = "5m"
            path = "/replica"
            min-free-percent = 15
            [[check]]
            name = "trunk"
            kind = "command"
            every = "30s"
            argv = ["/usr/local/bin/check-trunk"]
            timeout = "5s"
            "#,
        )
        .unwrap();
        assert_eq!(c.len(), 5);
        assert_eq!(c[0].fall, 3);
        assert!(matches!(c[0].schedule, Schedule::Cron { .. }));
        assert_eq!(c[1].kind, CheckKind::Sip { target: "198.51.100.100:5060".parse().unwrap(), tcp: true });
        assert_eq!(c[1].schedule, Schedule::Every(Duration::from_secs(30)));
        assert_eq!(
            c[2].kind,
            CheckKind::Http {
                address: "198.51.100.10:8080".parse().unwrap(),
                host: "198.51.100.10:8080".into(),
                path: "/health".into()
            }
        );
        assert_eq!(c[4].timeout, Duration::from_secs(5));
    }

    #[test]
    fn a_drill_check_runs_pbxha_drill_on_the_holder_with_a_long_timeout() {
        let c = checks(
            r#"
            [[check]]
            name = "weekly-drill"
            kind = "drill"
            schedule = "0 4 * * 0"
            now = true
            [[check]]
            name = "health"
            kind = "drill"
            every = "1h"
            dry-run = true
            timeout = "1m"
            "#,
        )
        .unwrap();
        let argv = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(c[0].kind, CheckKind::Drill { argv: argv(&["drill", "--if-holder", "--now"]) });
        assert_eq!(c[0].timeout, DRILL_TIMEOUT);
        assert_eq!(c[1].kind, CheckKind::Drill { argv: argv(&["drill", "--if-holder", "--dry-run"]) });
        assert_eq!(c[1].timeout, Duration::from_secs(60));
        assert_eq!(
            CheckKind::drill_argv(&argv(&["drill"]), "/usr/sbin/pbxha", "/etc/pbxha/pbxha.toml"),
            argv(&["/usr/sbin/pbxha", "-c", "/etc/pbxha/pbxha.toml", "drill"])
        );
    }

    #[test]
    fn bad_checks_are_all_reported() {
        let p = checks(
            r#"
            [[check]]
            name = "a"
            kind = "smoke-signal"
            schedule = "* * * *"
            [[check]]
            name = "b"
            kind = "tcp"
            every = "30s"
            address = "nowhere"
            [[check]]
            name = "c"
            kind = "ping"
            host = "198.51.100.1"
            "#,
        )
        .unwrap_err();
        assert_eq!(keys(&p), ["check[0].schedule", "check[0].kind", "check[1].address", "check[2].schedule"]);
        assert!(p[1].message.contains("unknown check kind `smoke-signal`"));
        assert!(p[0].message.contains("4 field(s)"));
    }

    #[test]
    fn duplicate_check_names_are_refused() {
        let p = checks(
            r#"
            [[check]]
            name = "a"
            kind = "tcp"
            every = "30s"
            address = "127.0.0.1:22"
            [[check]]
            name = "a"
            kind = "tcp"
            every = "30s"
            address = "127.0.0.1:22"
            "#,
        )
        .unwrap_err();
        assert_eq!(keys(&p), ["check[1].name"]);
    }
}
