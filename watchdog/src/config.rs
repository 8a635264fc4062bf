//! The `[mail]` and `[[check]]` sections, read from a TOML table the appliance hands over.
//!
//! Like the appliance's own reader, every problem is collected with its key path, a message
//! and a hint, and keys nobody asked for are reported as unknown, so `pbxha check-config`
//! lists them all in one run.
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
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use lettre::message::Mailbox;
use toml::{Table, Value};

use crate::schedule::Schedule;

/// One problem in the config: where, what, and how to fix it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The key path, e.g. `mail.to[1]` or `check[2].schedule`.
    pub key: String,
    pub message: String,
    pub hint: Option<String>,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, " (hint: {hint})")?;
        }
        Ok(())
    }
}

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
}

const KINDS: &str = "ping, tcp, sip, http, disk, drbd, mysql-replication, command";

/// Reads `[mail]` from `table` (the section itself); `prefix` is its key path (`mail`).
pub fn parse_mail(table: &Table, prefix: &str) -> Result<MailConfig, Vec<Problem>> {
    let mut r = Reader::new(table, prefix.to_string());
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
    let password_file = r.opt_string("password-file").map(PathBuf::from);
    if username.is_some() != password_file.is_some() {
        r.problem::<()>(
            if username.is_some() { "password-file" } else { "username" },
            "`username` and `password-file` go together".into(),
            Some("AUTH needs both; leave both out for a relay without AUTH"),
        );
    }
    let ca_file = r.opt_string("ca-file").map(PathBuf::from);
    let from = r.mailbox("from", true);
    let reply_to = r.mailbox("reply-to", false);
    let to = r.mailboxes("to");
    let flood_limit = r.int_or("flood-limit", 1, 10_000, DEFAULT_FLOOD_LIMIT.into());
    let timeout = r.duration_or("timeout", DEFAULT_SMTP_TIMEOUT);
    let retry_min = r.duration_or("retry-min", DEFAULT_RETRY_MIN);
    let retry_max = r.duration_or("retry-max", DEFAULT_RETRY_MAX);
    if retry_min.is_zero() || retry_max < retry_min {
        r.problem::<()>("retry-min", "retry-min must be above zero and not above retry-max".into(), None);
    }
    r.finish();
    match (server, from) {
        (Some(server), Some(from)) if r.problems.is_empty() => Ok(MailConfig {
            server,
            port: port as u16,
            security,
            username,
            password_file,
            ca_file,
            from,
            reply_to,
            to,
            flood_limit: flood_limit as u32,
            timeout,
            retry_min,
            retry_max,
        }),
        _ => Err(r.problems),
    }
}

/// Reads the `[[check]]` array (`value` is what the root table holds under `check`); check
/// names must be unique because history and notifications are keyed by them.
pub fn parse_checks(value: &Value, prefix: &str) -> Result<Vec<CheckConfig>, Vec<Problem>> {
    let Some(items) = value.as_array() else {
        return Err(vec![Problem {
            key: prefix.into(),
            message: format!("expected [[{prefix}]] tables, found {}", value.type_str()),
            hint: None,
        }]);
    };
    let mut problems = Vec::new();
    let mut checks = Vec::new();
    let mut names = BTreeSet::new();
    for (i, item) in items.iter().enumerate() {
        let path = format!("{prefix}[{i}]");
        let Some(table) = item.as_table() else {
            problems.push(Problem {
                key: path,
                message: format!("expected a table, found {}", item.type_str()),
                hint: None,
            });
            continue;
        };
        match parse_check(table, path.clone()) {
            Ok(c) if !names.insert(c.name.clone()) => problems.push(Problem {
                key: format!("{path}.name"),
                message: format!("check `{}` is defined twice", c.name),
                hint: Some("check names must be unique".into()),
            }),
            Ok(c) => checks.push(c),
            Err(p) => problems.extend(p),
        }
    }
    if problems.is_empty() {
        Ok(checks)
    } else {
        Err(problems)
    }
}

fn parse_check(table: &Table, path: String) -> Result<CheckConfig, Vec<Problem>> {
    let mut r = Reader::new(table, path);
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
    let timeout = r.duration_or("timeout", Duration::from_secs(10));
    let rise = r.int_or("rise", 1, 100, 1) as u32;
    let fall = r.int_or("fall", 1, 100, 1) as u32;
    let failover = r.bool_or("failover", false);
    let kind = match r.string("kind").as_deref() {
        Some("ping") => r.parsed("host", "an IP address, e.g. 198.51.100.1").map(|host| CheckKind::Ping { host }),
        Some("tcp") => {
            r.parsed("address", "ADDRESS:PORT, e.g. 198.51.100.10:5060").map(|address| CheckKind::Tcp { address })
        }
        Some("sip") => {
            let target = r.parsed("target", "ADDRESS:PORT, e.g. 198.51.100.100:5060");
            let tcp = match r.opt_string("transport").as_deref() {
                None | Some("udp") => false,
                Some("tcp") => true,
                Some(other) => {
                    r.problem("transport", format!("unknown transport `{other}`"), Some("udp or tcp")).unwrap_or(false)
                }
            };
            target.map(|target| CheckKind::Sip { target, tcp })
        }
        Some("http") => r.string("url").and_then(|url| match parse_http_url(&url) {
            Ok((address, host, path)) => Some(CheckKind::Http { address, host, path }),
            Err(m) => {
                r.problem("url", m, Some("http://ADDRESS[:PORT]/PATH with an IP address; https is not supported"))
            }
        }),
        Some("disk") => {
            let path = r.string("path").map(PathBuf::from);
            let min = r.int_or("min-free-percent", 0, 100, 10) as u8;
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
            None => r.problem(
                "argv",
                "missing required key".into(),
                Some("argv = [\"/usr/local/bin/check-trunk\", \"--quiet\"]"),
            ),
        },
        Some(other) => r.problem("kind", format!("unknown check kind `{other}`"), Some(&format!("one of {KINDS}"))),
        None => None,
    };
    r.finish();
    match (name, schedule, kind) {
        (Some(name), Some(schedule), Some(kind)) if r.problems.is_empty() => {
            Ok(CheckConfig { name, schedule, timeout, rise, fall, failover, kind })
        }
        _ => Err(r.problems),
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

/// Parses `200`, `"200ms"`, `"30s"` or `"2m"`; bare integers are milliseconds, as in the
/// appliance's config.
pub fn parse_duration(v: &Value) -> Result<Duration, String> {
    match v {
        Value::Integer(ms) if *ms >= 0 => Ok(Duration::from_millis(*ms as u64)),
        Value::Integer(_) => Err("must not be negative".into()),
        Value::String(s) => {
            let s = s.trim();
            let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
            let (num, unit) = s.split_at(split);
            let num: f64 = num.parse().map_err(|_| format!("`{s}` is not a duration"))?;
            let ms = match unit.trim() {
                "ms" | "" => num,
                "s" => num * 1000.0,
                "m" | "min" => num * 60_000.0,
                "h" => num * 3_600_000.0,
                other => return Err(format!("unknown unit `{other}` in `{s}`")),
            };
            Ok(Duration::from_millis(ms.round() as u64))
        }
        other => Err(format!("expected milliseconds or a string such as \"30s\", found {}", other.type_str())),
    }
}

/// One table being read: remembers which keys were asked for and collects problems.
struct Reader<'a> {
    table: &'a Table,
    path: String,
    asked: Vec<&'static str>,
    problems: Vec<Problem>,
}

impl<'a> Reader<'a> {
    fn new(table: &'a Table, path: String) -> Self {
        Reader { table, path, asked: Vec::new(), problems: Vec::new() }
    }

    fn key(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// Records a problem at `key` (relative to this table); `None` so it can stand as a value.
    fn problem<T>(&mut self, key: &str, message: String, hint: Option<&str>) -> Option<T> {
        self.problems.push(Problem { key: self.key(key), message, hint: hint.map(str::to_string) });
        None
    }

    fn get(&mut self, key: &'static str) -> Option<&'a Value> {
        self.asked.push(key);
        self.table.get(key)
    }

    fn opt_string(&mut self, key: &'static str) -> Option<String> {
        match self.get(key)? {
            Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
            Value::String(_) => self.problem(key, "must not be empty".into(), None),
            other => self.problem(key, format!("expected a string, found {}", other.type_str()), None),
        }
    }

    fn string(&mut self, key: &'static str) -> Option<String> {
        if self.table.contains_key(key) {
            self.opt_string(key)
        } else {
            self.asked.push(key);
            self.problem(key, "missing required key".into(), None)
        }
    }

    /// A required string parsed with `FromStr`; `what` describes the expected form.
    fn parsed<T: std::str::FromStr>(&mut self, key: &'static str, what: &str) -> Option<T> {
        let text = self.string(key)?;
        match text.parse() {
            Ok(v) => Some(v),
            Err(_) => self.problem(key, format!("`{text}` is not valid here"), Some(&format!("expected {what}"))),
        }
    }

    fn int_or(&mut self, key: &'static str, min: i64, max: i64, default: i64) -> i64 {
        match self.get(key) {
            None => default,
            Some(Value::Integer(i)) if (min..=max).contains(i) => *i,
            Some(Value::Integer(i)) => {
                self.problem(key, format!("{i} is out of range ({min} to {max})"), None).unwrap_or(default)
            }
            Some(other) => {
                self.problem(key, format!("expected an integer, found {}", other.type_str()), None).unwrap_or(default)
            }
        }
    }

    fn bool_or(&mut self, key: &'static str, default: bool) -> bool {
        match self.get(key) {
            None => default,
            Some(Value::Boolean(b)) => *b,
            Some(other) => self
                .problem(key, format!("expected true or false, found {}", other.type_str()), None)
                .unwrap_or(default),
        }
    }

    fn duration_or(&mut self, key: &'static str, default: Duration) -> Duration {
        match self.get(key).map(parse_duration) {
            None => default,
            Some(Ok(d)) => d,
            Some(Err(m)) => self.problem(key, m, Some("bare numbers are milliseconds")).unwrap_or(default),
        }
    }

    fn opt_argv(&mut self, key: &'static str) -> Option<Vec<String>> {
        let hint = Some("an argv is a list of strings, e.g. [\"/usr/local/bin/check\", \"--quiet\"]");
        match self.get(key)? {
            Value::Array(items) if !items.is_empty() => {
                let argv: Option<Vec<String>> = items.iter().map(|i| i.as_str().map(str::to_string)).collect();
                argv.or_else(|| self.problem(key, "every argv item must be a string".into(), hint))
            }
            Value::Array(_) => self.problem(key, "an argv must not be empty".into(), hint),
            other => self.problem(key, format!("expected a list of strings, found {}", other.type_str()), hint),
        }
    }

    fn mailbox_at(&mut self, key_path: String, v: &Value) -> Option<Mailbox> {
        let hint = Some("write `name@example.org` or `Name <name@example.org>`".to_string());
        let problem = |message| Problem { key: key_path.clone(), message, hint: hint.clone() };
        match v.as_str().map(|s| (s, s.parse::<Mailbox>())) {
            Some((_, Ok(m))) => Some(m),
            Some((s, Err(e))) => {
                self.problems.push(problem(format!("`{s}` is not an e-mail address: {e}")));
                None
            }
            None => {
                self.problems.push(problem(format!("expected a string, found {}", v.type_str())));
                None
            }
        }
    }

    fn mailbox(&mut self, key: &'static str, required: bool) -> Option<Mailbox> {
        match self.get(key) {
            Some(v) => self.mailbox_at(self.key(key), v),
            None if required => self.problem(key, "missing required key".into(), None),
            None => None,
        }
    }

    fn mailboxes(&mut self, key: &'static str) -> Vec<Mailbox> {
        match self.get(key) {
            Some(Value::Array(items)) if !items.is_empty() => items
                .iter()
                .enumerate()
                .filter_map(|(i, v)| self.mailbox_at(format!("{}[{i}]", self.key(key)), v))
                .collect(),
            // One address as a plain string is what people write first.
            Some(v @ Value::String(_)) => self.mailbox_at(self.key(key), v).into_iter().collect(),
            Some(_) => self
                .problem(key, "expected a list of addresses".into(), Some("to = [\"noc@example.org\"]"))
                .unwrap_or_default(),
            None => self
                .problem(key, "missing required key: whom to mail".into(), Some("to = [\"noc@example.org\"]"))
                .unwrap_or_default(),
        }
    }

    /// Reports every key nobody asked for.
    fn finish(&mut self) {
        let unknown: Vec<String> = self.table.keys().filter(|k| !self.asked.contains(&k.as_str())).cloned().collect();
        for key in unknown {
            let hint = format!("known keys here: {}", self.asked.join(", "));
            self.problem::<()>(&key, "unknown key".into(), Some(&hint));
        }
    }
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
        parse_checks(&root["check"], "check")
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
