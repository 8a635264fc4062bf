//! The answers file (`/etc/pbxha/answers.toml`): the typed model, the reader that reports
//! every problem at once with its key path, and the text it is saved as.
//!
//! A file may leave questions unanswered ([`Partial`]); `--yes` refuses such a file and lists
//! every missing key, because a silently filled-in default is how a wizard formats the wrong
//! disk. Secrets are never answers: only paths of 0600 files are, and a password written
//! inline is an error.

use std::cell::RefCell;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;

use toml::{Table, Value};

/// One problem in the answers file: where, what, and how to fix it. The same type as the
/// `[mail]` reader's, whose problems the answers file adopts as they are.
pub use pbxha_conf::Problem;

/// An address with its prefix length, e.g. `198.51.100.100/24`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    /// Whether `ip` is inside this address's subnet.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(a) & mask == u32::from(b) & mask
            }
            (IpAddr::V6(a), IpAddr::V6(b)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(a) & mask == u128::from(b) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, prefix) = s.split_once('/').ok_or_else(|| format!("`{s}` has no /prefix"))?;
        let addr: IpAddr = addr.parse().map_err(|_| format!("`{addr}` is not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        match prefix.parse::<u8>() {
            Ok(prefix) if prefix <= max => Ok(Cidr { addr, prefix }),
            _ => Err(format!("`/{prefix}` is not a prefix length (0 to {max})")),
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// The PBX on this pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Pbx {
    Asterisk,
    Freeswitch,
}

impl Pbx {
    pub fn name(self) -> &'static str {
        match self {
            Pbx::Asterisk => "asterisk",
            Pbx::Freeswitch => "freeswitch",
        }
    }
}

/// Where the PBX's data lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Storage {
    /// Local disks only (MySQL master-master can still keep the databases in step).
    None,
    Drbd(DrbdAnswers),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DrbdAnswers {
    /// The backing partition or LV, the same path on both nodes.
    pub device: String,
    /// The operator's consent to destroy a filesystem found on `device`.
    pub wipe: bool,
    pub resource: String,
    pub drbd_device: String,
    pub syntax: pbxha_replica::drbd::conf::Syntax,
}

/// How MySQL/MariaDB is made highly available.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mysql {
    None,
    /// The datadir moves onto /replica; MySQL runs on the primary only.
    Replica,
    /// Both servers run and replicate both ways; setup logs in to the peer over TCP.
    MasterMaster {
        admin_password_file: PathBuf,
    },
}

/// Heartbeat timing: a named profile, or the values imported from ha.cf.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timing {
    /// interval 200 ms, deadtime 1000 ms (the daemon's defaults).
    Default,
    /// interval 50 ms, deadtime 250 ms, for a dedicated quiet heartbeat link.
    Fast,
    /// Milliseconds, from an imported ha.cf (`keepalive`, `deadtime`, `warntime`, `initdead`).
    Custom { interval: u64, deadtime: u64, warntime: u64, initdead: u64 },
}

impl Timing {
    /// (interval, deadtime, warntime, initdead) in ms. The profiles match `pbxha lab`'s,
    /// whose failover figures the README measures; initdead leaves room for a peer's boot.
    pub fn millis(self) -> (u64, u64, u64, u64) {
        match self {
            Timing::Default => (200, 1000, 500, 10_000),
            Timing::Fast => (50, 250, 150, 5000),
            Timing::Custom { interval, deadtime, warntime, initdead } => (interval, deadtime, warntime, initdead),
        }
    }
}

/// The public network: where the VIP lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Public {
    pub interface: String,
    /// This node's own address there; detected from the interface when not given.
    pub address: Option<Cidr>,
    pub peer_address: IpAddr,
    pub vip: Cidr,
}

/// One heartbeat link besides the public network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeartbeatLink {
    pub interface: String,
    pub address: Option<Cidr>,
    pub peer_address: IpAddr,
    /// heartbeat's `bcast IFACE` instead of unicast to the peer.
    pub bcast: bool,
}

/// A complete set of answers: every question has one.
#[derive(Clone, Debug, PartialEq)]
pub struct Answers {
    pub cluster: String,
    pub cluster_id: u32,
    pub node: String,
    pub peer: String,
    pub public: Public,
    pub heartbeat: Vec<HeartbeatLink>,
    pub ping: Vec<IpAddr>,
    pub pbx: Pbx,
    /// Rebind the PBX's SIP transport to the VIP (shown as a diff in the plan).
    pub bind_pbx: bool,
    pub storage: Storage,
    pub mysql: Mysql,
    /// The `[mail]` table as written (checked by the watchdog crate's reader); `None` = no mail.
    pub mail: Option<Table>,
    pub timing: Timing,
    pub auto_failback: bool,
    /// UDP port of the heartbeat (heartbeat's `udpport`).
    pub port: u16,
}

/// Answers as read from a file or gathered so far: `None` is a question not answered yet.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Partial {
    pub cluster: Option<String>,
    pub cluster_id: Option<u32>,
    pub node: Option<String>,
    pub peer: Option<String>,
    pub public_interface: Option<String>,
    pub public_address: Option<Cidr>,
    pub peer_address: Option<IpAddr>,
    pub vip: Option<Cidr>,
    pub heartbeat: Option<Vec<HeartbeatLink>>,
    pub ping: Option<Vec<IpAddr>>,
    pub pbx: Option<Pbx>,
    pub bind_pbx: Option<bool>,
    pub storage: Option<Storage>,
    pub mysql: Option<Mysql>,
    /// `Some(None)` is an explicit `mail = "none"`.
    pub mail: Option<Option<Table>>,
    pub timing: Option<Timing>,
    pub auto_failback: Option<bool>,
    pub port: Option<u16>,
}

/// Defaults of the keys that are not questions (documented in examples/answers.toml).
pub const DEFAULT_CLUSTER: &str = "pbx";
pub const DEFAULT_RESOURCE: &str = "r0";
pub const DEFAULT_DRBD_DEVICE: &str = "/dev/drbd0";
/// heartbeat's registered port (ha.cf `udpport 694`).
pub const DEFAULT_PORT: u16 = 694;

impl Partial {
    /// The question keys without an answer, in question order.
    pub fn missing(&self) -> Vec<&'static str> {
        let answered = [
            ("node", self.node.is_some()),
            ("peer", self.peer.is_some()),
            ("public.peer-address", self.peer_address.is_some()),
            ("public.interface", self.public_interface.is_some()),
            ("public.vip", self.vip.is_some()),
            ("heartbeat", self.heartbeat.is_some()),
            ("ping", self.ping.is_some()),
            ("pbx", self.pbx.is_some()),
            ("storage", self.storage.is_some()),
            ("mysql", self.mysql.is_some()),
            ("mail", self.mail.is_some()),
            ("timing", self.timing.is_some()),
        ];
        answered.into_iter().filter(|(_, a)| !a).map(|(k, _)| k).collect()
    }

    /// The complete answers, or every missing key.
    pub fn complete(&self) -> Result<Answers, Vec<&'static str>> {
        let missing = self.missing();
        let (
            Some(node),
            Some(peer),
            Some(interface),
            Some(peer_address),
            Some(vip),
            Some(heartbeat),
            Some(ping),
            Some(pbx),
            Some(storage),
            Some(mysql),
            Some(mail),
            Some(timing),
        ) = (
            &self.node,
            &self.peer,
            &self.public_interface,
            self.peer_address,
            self.vip,
            &self.heartbeat,
            &self.ping,
            self.pbx,
            &self.storage,
            &self.mysql,
            &self.mail,
            self.timing,
        )
        else {
            return Err(missing);
        };
        Ok(Answers {
            cluster: self.cluster.clone().unwrap_or_else(|| DEFAULT_CLUSTER.into()),
            cluster_id: self.cluster_id.unwrap_or(1),
            node: node.clone(),
            peer: peer.clone(),
            public: Public { interface: interface.clone(), address: self.public_address, peer_address, vip },
            heartbeat: heartbeat.clone(),
            ping: ping.clone(),
            pbx,
            bind_pbx: self.bind_pbx.unwrap_or(true),
            storage: storage.clone(),
            mysql: mysql.clone(),
            mail: mail.clone(),
            timing,
            auto_failback: self.auto_failback.unwrap_or(false),
            port: self.port.unwrap_or(DEFAULT_PORT),
        })
    }
}

/// Keys that would hold a secret; each is refused with the file key to use instead.
const INLINE_SECRETS: &[(&str, &str)] =
    &[("password", "password-file"), ("admin-password", "admin-password-file"), ("secret", "secret-file")];

/// Parses answers text, returning every problem found.
pub fn parse(text: &str) -> Result<Partial, Vec<Problem>> {
    let root: Table = text.parse().map_err(|e: toml::de::Error| {
        let line = e.span().map(|s| 1 + text[..s.start.min(text.len())].matches('\n').count());
        vec![Problem {
            key: line.map_or("(syntax)".into(), |l| format!("(line {l})")),
            message: e.message().to_string(),
            hint: Some("this is not valid TOML".into()),
        }]
    })?;
    let problems = RefCell::new(Vec::new());
    let mut r = Reader { path: String::new(), table: &root, asked: Vec::new(), problems: &problems };
    let p = read(&mut r);
    r.finish();
    let problems = problems.into_inner();
    if problems.is_empty() {
        Ok(p)
    } else {
        Err(problems)
    }
}

fn read(r: &mut Reader) -> Partial {
    let mut p = Partial {
        cluster: r.word("cluster"),
        cluster_id: r.int("cluster-id", 1, u32::MAX.into()).map(|i| i as u32),
        node: r.word("node"),
        peer: r.word("peer"),
        auto_failback: r.bool("auto-failback"),
        port: r.int("port", 1, 65535).map(|i| i as u16),
        bind_pbx: r.bool("bind-pbx"),
        ..Partial::default()
    };
    if let Some(mut s) = r.table("public") {
        p.public_interface = s.word("interface");
        p.public_address = s.parsed("address");
        p.peer_address = s.parsed("peer-address");
        p.vip = s.parsed("vip");
        s.finish();
    }
    p.heartbeat = r.tables("heartbeat").map(|links| {
        links
            .into_iter()
            .filter_map(|mut s| {
                let bcast = match s.string("mode").as_deref() {
                    None | Some("ucast") => false,
                    Some("bcast") => true,
                    Some(other) => {
                        s.problem::<()>("mode", format!("unknown mode `{other}`"), Some("ucast or bcast"));
                        false
                    }
                };
                let link = (s.required_word("interface"), s.parsed("address"), s.required("peer-address"));
                s.finish();
                Some(HeartbeatLink { interface: link.0?, address: link.1, peer_address: link.2?, bcast })
            })
            .collect()
    });
    p.ping = r.list("ping");
    p.pbx = match r.string("pbx").as_deref() {
        None => None,
        Some("asterisk") => Some(Pbx::Asterisk),
        Some("freeswitch") => Some(Pbx::Freeswitch),
        Some(other) => r.problem("pbx", format!("unknown PBX `{other}`"), Some("\"asterisk\" or \"freeswitch\"")),
    };
    p.storage = r.table("storage").and_then(|mut s| {
        let storage = match s.string("kind").as_deref() {
            Some("none") => Some(Storage::None),
            Some("drbd") => {
                let syntax = match s.string("syntax").as_deref() {
                    None | Some("9") => pbxha_replica::drbd::conf::Syntax::V9,
                    Some("8.4") => pbxha_replica::drbd::conf::Syntax::V84,
                    Some(other) => {
                        s.problem::<()>("syntax", format!("unknown DRBD syntax `{other}`"), Some("\"9\" or \"8.4\""));
                        pbxha_replica::drbd::conf::Syntax::V9
                    }
                };
                let device = s.required_path("device");
                device.map(|device| {
                    Storage::Drbd(DrbdAnswers {
                        device,
                        wipe: s.bool("wipe").unwrap_or(false),
                        resource: s.word("resource").unwrap_or_else(|| DEFAULT_RESOURCE.into()),
                        drbd_device: s.path("drbd-device").unwrap_or_else(|| DEFAULT_DRBD_DEVICE.into()),
                        syntax,
                    })
                })
            }
            Some(other) => s.problem("kind", format!("unknown storage `{other}`"), Some("\"drbd\" or \"none\"")),
            None => s.problem("kind", "missing required key".into(), Some("kind = \"drbd\" or kind = \"none\"")),
        };
        s.finish();
        storage
    });
    p.mysql = r.table("mysql").and_then(|mut s| {
        let mysql = match s.string("mode").as_deref() {
            Some("none") => Some(Mysql::None),
            Some("replica") => Some(Mysql::Replica),
            Some("master-master") => {
                s.required_path("admin-password-file").map(|f| Mysql::MasterMaster { admin_password_file: f.into() })
            }
            Some(other) => s.problem(
                "mode",
                format!("unknown MySQL mode `{other}`"),
                Some("\"replica\", \"master-master\" or \"none\""),
            ),
            None => s.problem("mode", "missing required key".into(), None),
        };
        s.finish();
        mysql
    });
    p.mail = match r.get("mail") {
        None => None,
        Some(Value::String(s)) if s == "none" => Some(None),
        Some(Value::Table(t)) => {
            r.refuse_inline_secrets(t, "mail");
            match pbxha_watchdog::config::parse_mail(t, "mail") {
                Ok(_) => Some(Some(t.clone())),
                Err(problems) => {
                    r.problems.borrow_mut().extend(problems);
                    None
                }
            }
        }
        Some(_) => r.problem("mail", "expected a [mail] table or \"none\"".into(), None),
    };
    p.timing = match r.get("timing") {
        None => None,
        Some(Value::String(s)) if s == "default" => Some(Timing::Default),
        Some(Value::String(s)) if s == "fast" => Some(Timing::Fast),
        Some(Value::Table(_)) => r.table("timing").and_then(|mut s| {
            let t = (
                s.int("interval", 1, 600_000),
                s.int("deadtime", 1, 600_000),
                s.int("warntime", 1, 600_000),
                s.int("initdead", 1, 3_600_000),
            );
            s.finish();
            match t {
                (Some(i), Some(d), Some(w), Some(n)) => Some(Timing::Custom {
                    interval: i as u64,
                    deadtime: d as u64,
                    warntime: w as u64,
                    initdead: n as u64,
                }),
                _ => s.problem(
                    "interval",
                    "a custom timing needs interval, deadtime, warntime and initdead (ms)".into(),
                    None,
                ),
            }
        }),
        Some(_) => r.problem("timing", "expected \"default\", \"fast\" or a table".into(), None),
    };
    p
}

/// One TOML table being read, remembering which keys were asked for.
struct Reader<'a> {
    path: String,
    table: &'a Table,
    asked: Vec<&'static str>,
    problems: &'a RefCell<Vec<Problem>>,
}

impl<'a> Reader<'a> {
    fn key(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// Records a problem at `key` (relative to this table); `None` so it can be a value.
    fn problem<T>(&self, key: &str, message: String, hint: Option<&str>) -> Option<T> {
        self.problems.borrow_mut().push(Problem { key: self.key(key), message, hint: hint.map(str::to_string) });
        None
    }

    fn get(&mut self, key: &'static str) -> Option<&'a Value> {
        self.asked.push(key);
        self.table.get(key)
    }

    fn string(&mut self, key: &'static str) -> Option<String> {
        match self.get(key)? {
            Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
            Value::String(_) => self.problem(key, "must not be empty".into(), None),
            other => self.problem(key, format!("expected a string, found {}", other.type_str()), None),
        }
    }

    fn required(&mut self, key: &'static str) -> Option<IpAddr> {
        if !self.table.contains_key(key) {
            self.asked.push(key);
            return self.problem(key, "missing required key".into(), None);
        }
        self.parsed(key)
    }

    fn required_word(&mut self, key: &'static str) -> Option<String> {
        if !self.table.contains_key(key) {
            self.asked.push(key);
            return self.problem(key, "missing required key".into(), None);
        }
        self.word(key)
    }

    fn required_path(&mut self, key: &'static str) -> Option<String> {
        if !self.table.contains_key(key) {
            self.asked.push(key);
            return self.problem(key, "missing required key".into(), Some("an absolute path"));
        }
        self.path(key)
    }

    /// A name such as a node or interface: letters, digits, `-`, `_`, `.`.
    fn word(&mut self, key: &'static str) -> Option<String> {
        let s = self.string(key)?;
        if s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
            Some(s)
        } else {
            self.problem(key, format!("`{s}` may hold only letters, digits, `-`, `_` and `.`"), None)
        }
    }

    fn path(&mut self, key: &'static str) -> Option<String> {
        let s = self.string(key)?;
        if s.starts_with('/') {
            Some(s)
        } else {
            self.problem(key, format!("`{s}` is not an absolute path"), None)
        }
    }

    fn parsed<T: FromStr>(&mut self, key: &'static str) -> Option<T>
    where
        T::Err: fmt::Display,
    {
        let s = self.string(key)?;
        match s.parse() {
            Ok(v) => Some(v),
            Err(e) => self.problem(key, e.to_string(), None),
        }
    }

    fn bool(&mut self, key: &'static str) -> Option<bool> {
        match self.get(key)? {
            Value::Boolean(b) => Some(*b),
            other => self.problem(key, format!("expected true or false, found {}", other.type_str()), None),
        }
    }

    fn int(&mut self, key: &'static str, min: i64, max: i64) -> Option<i64> {
        match self.get(key)? {
            Value::Integer(i) if (min..=max).contains(i) => Some(*i),
            Value::Integer(i) => self.problem(key, format!("{i} is out of range ({min} to {max})"), None),
            other => self.problem(key, format!("expected an integer, found {}", other.type_str()), None),
        }
    }

    /// A list of IP addresses (`[]` is an answer: no ping targets).
    fn list(&mut self, key: &'static str) -> Option<Vec<IpAddr>> {
        let items = match self.get(key)? {
            Value::Array(items) => items,
            other => return self.problem(key, format!("expected a list, found {}", other.type_str()), None),
        };
        let mut out = Vec::new();
        for (i, v) in items.iter().enumerate() {
            match v.as_str().map(str::parse) {
                Some(Ok(ip)) => out.push(ip),
                _ => {
                    self.problem::<()>(&format!("{key}[{i}]"), format!("`{v}` is not an IP address"), None);
                }
            }
        }
        Some(out)
    }

    fn child(&self, path: String, table: &'a Table) -> Reader<'a> {
        Reader { path, table, asked: Vec::new(), problems: self.problems }
    }

    fn table(&mut self, key: &'static str) -> Option<Reader<'a>> {
        match self.get(key)? {
            Value::Table(t) => {
                let child = self.child(self.key(key), t);
                child.refuse_inline_secrets(t, &child.path);
                Some(child)
            }
            other => self.problem(key, format!("expected a table, found {}", other.type_str()), None),
        }
    }

    /// `[[key]]` tables, with paths like `heartbeat[1]`.
    fn tables(&mut self, key: &'static str) -> Option<Vec<Reader<'a>>> {
        match self.get(key)? {
            Value::Array(items) => Some(
                items
                    .iter()
                    .enumerate()
                    .filter_map(|(i, v)| match v {
                        Value::Table(t) => Some(self.child(format!("{}[{i}]", self.key(key)), t)),
                        _ => self.problem(&format!("{key}[{i}]"), "expected a table".into(), None),
                    })
                    .collect(),
            ),
            other => self.problem(key, format!("expected [[{key}]] tables, found {}", other.type_str()), None),
        }
    }

    /// An inline secret is an error of its own, not just an unknown key: say what to do.
    fn refuse_inline_secrets(&self, table: &Table, path: &str) {
        for (secret, file_key) in INLINE_SECRETS {
            if table.contains_key(*secret) {
                self.problems.borrow_mut().push(Problem {
                    key: format!("{path}.{secret}"),
                    message: "a password given inline is refused: answers files get copied and mailed".into(),
                    hint: Some(format!("put it in a file of mode 0600 and write {file_key} = \"/etc/pbxha/...\"")),
                });
            }
        }
    }

    /// Reports every key nobody asked for, with the nearest known key as a hint.
    fn finish(&mut self) {
        for key in self.table.keys() {
            if self.asked.contains(&key.as_str()) || INLINE_SECRETS.iter().any(|(s, _)| s == key) {
                continue;
            }
            let nearest = self.asked.iter().map(|k| (edit_distance(k, key), *k)).filter(|(d, _)| *d <= 3).min();
            let hint = match nearest {
                Some((_, k)) => format!("did you mean `{k}`?"),
                None => format!("known keys here: {}", self.asked.join(", ")),
            };
            self.problems.borrow_mut().push(Problem {
                key: self.key(key),
                message: "unknown key".into(),
                hint: Some(hint),
            });
        }
    }
}

/// Levenshtein distance, for "did you mean".
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (diagonal + usize::from(ca != *cb)).min(row[j] + 1).min(above + 1);
            diagonal = above;
        }
    }
    row[b.len()]
}

fn q(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

impl Answers {
    /// The answers as saved in /etc/pbxha/answers.toml: every question answered, no secret,
    /// readable by [`parse`] again.
    pub fn to_toml(&self) -> String {
        let mut s =
            String::from("# Written by `pbxha install`; rerun it with --answers this file to repeat the install.\n");
        s += &format!("cluster = {}\ncluster-id = {}\n", q(&self.cluster), self.cluster_id);
        s += &format!("node = {}\npeer = {}\n", q(&self.node), q(&self.peer));
        let ping: Vec<String> = self.ping.iter().map(|ip| q(&ip.to_string())).collect();
        s += &format!("ping = [{}]\npbx = {}\nbind-pbx = {}\n", ping.join(", "), q(self.pbx.name()), self.bind_pbx);
        s += &format!("auto-failback = {}\nport = {}\n", self.auto_failback, self.port);
        match self.timing {
            Timing::Default => s += "timing = \"default\"\n",
            Timing::Fast => s += "timing = \"fast\"\n",
            Timing::Custom { .. } => {}
        }
        if self.mail.is_none() {
            s += "mail = \"none\"\n";
        }
        let p = &self.public;
        s += &format!("\n[public]\ninterface = {}\n", q(&p.interface));
        if let Some(a) = p.address {
            s += &format!("address = {}\n", q(&a.to_string()));
        }
        s += &format!("peer-address = {}\nvip = {}\n", q(&p.peer_address.to_string()), q(&p.vip.to_string()));
        for l in &self.heartbeat {
            s += &format!("\n[[heartbeat]]\ninterface = {}\n", q(&l.interface));
            if let Some(a) = l.address {
                s += &format!("address = {}\n", q(&a.to_string()));
            }
            s += &format!(
                "peer-address = {}\nmode = {}\n",
                q(&l.peer_address.to_string()),
                q(if l.bcast { "bcast" } else { "ucast" })
            );
        }
        match &self.storage {
            Storage::None => s += "\n[storage]\nkind = \"none\"\n",
            Storage::Drbd(d) => {
                let syntax = match d.syntax {
                    pbxha_replica::drbd::conf::Syntax::V9 => "9",
                    pbxha_replica::drbd::conf::Syntax::V84 => "8.4",
                };
                s += &format!(
                    "\n[storage]\nkind = \"drbd\"\ndevice = {}\nwipe = {}\nresource = {}\ndrbd-device = {}\nsyntax = {}\n",
                    q(&d.device),
                    d.wipe,
                    q(&d.resource),
                    q(&d.drbd_device),
                    q(syntax)
                );
            }
        }
        match &self.mysql {
            Mysql::None => s += "\n[mysql]\nmode = \"none\"\n",
            Mysql::Replica => s += "\n[mysql]\nmode = \"replica\"\n",
            Mysql::MasterMaster { admin_password_file } => {
                s += &format!(
                    "\n[mysql]\nmode = \"master-master\"\nadmin-password-file = {}\n",
                    q(&admin_password_file.display().to_string())
                )
            }
        }
        if let Timing::Custom { interval, deadtime, warntime, initdead } = self.timing {
            s += &format!("\n[timing]\ninterval = {interval}\ndeadtime = {deadtime}\nwarntime = {warntime}\ninitdead = {initdead}\n");
        }
        if let Some(mail) = &self.mail {
            let mut root = Table::new();
            root.insert("mail".into(), Value::Table(mail.clone()));
            s += &format!("\n{}", toml::to_string(&root).unwrap_or_default());
        }
        s
    }

    /// Every secret file the answers name: each must exist with mode 0600.
    pub fn secret_files(&self) -> Vec<(String, PathBuf)> {
        let mut out = Vec::new();
        if let Mysql::MasterMaster { admin_password_file } = &self.mysql {
            out.push(("mysql.admin-password-file".to_string(), admin_password_file.clone()));
        }
        if let Some(file) = self.mail.as_ref().and_then(|m| m.get("password-file")).and_then(Value::as_str) {
            out.push(("mail.password-file".to_string(), PathBuf::from(file)));
        }
        out
    }
}

#[cfg(test)]
mod tests;
