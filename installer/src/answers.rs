//! The answers file (`/etc/pbxha/answers.toml`): the typed model, the reader that reports
//! every problem at once with its key path, and the text it is saved as.
//!
//! A file may leave questions unanswered ([`Partial`]); `--yes` refuses such a file and lists
//! every missing key, because a silently filled-in default is how a wizard formats the wrong
//! disk. Secrets are never answers: only paths of 0600 files are, and a password written
//! inline is an error.

use std::net::IpAddr;
use std::path::PathBuf;

use pbxha_conf::{Problems, Reader};
use toml::{Table, Value};

/// One problem in the answers file: where, what, and how to fix it; the answers file is read
/// with the same reader as pbxha.toml, and adopts the `[mail]` reader's problems as they are.
pub use pbxha_conf::{Cidr, Problem};

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
    /// Set on a node that joined: the first node's name. That node keeps id 1 and seeds
    /// MySQL; this one is id 2.
    pub first_node: Option<String>,
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
    pub first_node: Option<String>,
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
            first_node: self.first_node.clone(),
        })
    }
}

/// Keys that would hold a secret; each is refused with the file key to use instead.
const INLINE_SECRETS: &[(&str, &str)] =
    &[("password", "password-file"), ("admin-password", "admin-password-file"), ("secret", "secret-file")];

/// Parses answers text, returning every problem found.
pub fn parse(text: &str) -> Result<Partial, Vec<Problem>> {
    let root = pbxha_conf::parse_toml(text).map_err(|p| vec![p])?;
    let problems = Problems::new();
    let mut r = Reader::root(&root, &problems);
    let p = read(&mut r);
    finish(&mut r);
    problems.result(Some(p))
}

fn read(r: &mut Reader) -> Partial {
    let mut p = Partial {
        cluster: word(r, "cluster"),
        cluster_id: r.opt_int("cluster-id", 1, u32::MAX.into()),
        node: word(r, "node"),
        peer: word(r, "peer"),
        auto_failback: r.opt_bool("auto-failback"),
        port: r.opt_int("port", 1, 65535),
        bind_pbx: r.opt_bool("bind-pbx"),
        first_node: word(r, "first-node"),
        ..Partial::default()
    };
    if let Some(mut s) = section(r, "public") {
        p.public_interface = word(&mut s, "interface");
        p.public_address = s.opt_string_as("address", Cidr::with_prefix, None);
        p.peer_address = s.opt_string_as("peer-address", ip, None);
        p.vip = s.opt_string_as("vip", Cidr::with_prefix, None);
        finish(&mut s);
    }
    p.heartbeat = r.opt_tables("heartbeat").map(|links| {
        links
            .into_iter()
            .filter_map(|mut s| {
                let bcast = match s.opt_string("mode").as_deref() {
                    None | Some("ucast") => false,
                    Some("bcast") => true,
                    Some(other) => {
                        s.problem::<()>("mode", format!("unknown mode `{other}`"), Some("ucast or bcast"));
                        false
                    }
                };
                let link = (
                    s.string_as("interface", check_word, None),
                    s.opt_string_as("address", Cidr::with_prefix, None),
                    s.string_as("peer-address", ip, None),
                );
                finish(&mut s);
                Some(HeartbeatLink { interface: link.0?, address: link.1, peer_address: link.2?, bcast })
            })
            .collect()
    });
    p.ping = r.opt_list("ping", |v, key, r| match v.as_str().map(str::parse) {
        Some(Ok(ip)) => Some(ip),
        _ => r.problem_at(key, format!("`{v}` is not an IP address"), None),
    });
    p.pbx = match r.opt_string("pbx").as_deref() {
        None => None,
        Some("asterisk") => Some(Pbx::Asterisk),
        Some("freeswitch") => Some(Pbx::Freeswitch),
        Some(other) => r.problem("pbx", format!("unknown PBX `{other}`"), Some("\"asterisk\" or \"freeswitch\"")),
    };
    p.storage = section(r, "storage").and_then(|mut s| {
        let storage = match s.opt_string("kind").as_deref() {
            Some("none") => Some(Storage::None),
            Some("drbd") => {
                let syntax = match s.opt_string("syntax").as_deref() {
                    None | Some("9") => pbxha_replica::drbd::conf::Syntax::V9,
                    Some("8.4") => pbxha_replica::drbd::conf::Syntax::V84,
                    Some(other) => {
                        s.problem::<()>("syntax", format!("unknown DRBD syntax `{other}`"), Some("\"9\" or \"8.4\""));
                        pbxha_replica::drbd::conf::Syntax::V9
                    }
                };
                let device = required_path(&mut s, "device");
                device.map(|device| {
                    Storage::Drbd(DrbdAnswers {
                        device,
                        wipe: s.opt_bool("wipe").unwrap_or(false),
                        resource: word(&mut s, "resource").unwrap_or_else(|| DEFAULT_RESOURCE.into()),
                        drbd_device: s
                            .opt_string_as("drbd-device", absolute, None)
                            .unwrap_or_else(|| DEFAULT_DRBD_DEVICE.into()),
                        syntax,
                    })
                })
            }
            Some(other) => s.problem("kind", format!("unknown storage `{other}`"), Some("\"drbd\" or \"none\"")),
            None => s.missing("kind", Some("kind = \"drbd\" or kind = \"none\"")),
        };
        finish(&mut s);
        storage
    });
    p.mysql = section(r, "mysql").and_then(|mut s| {
        let mysql = match s.opt_string("mode").as_deref() {
            Some("none") => Some(Mysql::None),
            Some("replica") => Some(Mysql::Replica),
            Some("master-master") => required_path(&mut s, "admin-password-file")
                .map(|f| Mysql::MasterMaster { admin_password_file: f.into() }),
            Some(other) => s.problem(
                "mode",
                format!("unknown MySQL mode `{other}`"),
                Some("\"replica\", \"master-master\" or \"none\""),
            ),
            None => s.missing("mode", None),
        };
        finish(&mut s);
        mysql
    });
    p.mail = match r.get("mail") {
        None => None,
        Some(Value::String(s)) if s == "none" => Some(None),
        Some(Value::Table(t)) => {
            refuse_inline_secrets(r, t, "mail");
            match pbxha_watchdog::config::parse_mail(t, "mail") {
                Ok(_) => Some(Some(t.clone())),
                Err(problems) => {
                    r.adopt(problems);
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
        Some(Value::Table(_)) => section(r, "timing").and_then(|mut s| {
            let t = (
                s.opt_int("interval", 1, 600_000),
                s.opt_int("deadtime", 1, 600_000),
                s.opt_int("warntime", 1, 600_000),
                s.opt_int("initdead", 1, 3_600_000),
            );
            finish(&mut s);
            match t {
                (Some(interval), Some(deadtime), Some(warntime), Some(initdead)) => {
                    Some(Timing::Custom { interval, deadtime, warntime, initdead })
                }
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

/// A sub-table, its inline secrets refused first.
fn section<'a>(r: &mut Reader<'a>, key: &'static str) -> Option<Reader<'a>> {
    let value = r.get(key);
    let s = r.opt_table(key)?;
    if let Some(Value::Table(t)) = value {
        refuse_inline_secrets(&s, t, s.path());
    }
    Some(s)
}

/// Unknown keys, except the inline secrets refused on their own.
fn finish(r: &mut Reader) {
    let secrets: Vec<&str> = INLINE_SECRETS.iter().map(|(secret, _)| *secret).collect();
    r.finish_except(&secrets);
}

/// A name such as a node or interface: letters, digits, `-`, `_`, `.`.
fn check_word(s: &str) -> Result<String, String> {
    match s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
        true => Ok(s.to_string()),
        false => Err(format!("`{s}` may hold only letters, digits, `-`, `_` and `.`")),
    }
}

fn word(r: &mut Reader, key: &'static str) -> Option<String> {
    r.opt_string_as(key, check_word, None)
}

fn absolute(s: &str) -> Result<String, String> {
    match s.starts_with('/') {
        true => Ok(s.to_string()),
        false => Err(format!("`{s}` is not an absolute path")),
    }
}

fn required_path(r: &mut Reader, key: &'static str) -> Option<String> {
    match r.required(key, Some("an absolute path")) {
        true => r.opt_string_as(key, absolute, None),
        false => None,
    }
}

fn ip(s: &str) -> Result<IpAddr, String> {
    s.parse().map_err(|e: std::net::AddrParseError| e.to_string())
}

/// An inline secret is an error of its own, not just an unknown key: say what to do.
fn refuse_inline_secrets(r: &Reader, table: &Table, path: &str) {
    for (secret, file_key) in INLINE_SECRETS {
        if table.contains_key(*secret) {
            r.adopt([Problem {
                key: format!("{path}.{secret}"),
                message: "a password given inline is refused: answers files get copied and mailed".into(),
                hint: Some(format!("put it in a file of mode 0600 and write {file_key} = \"/etc/pbxha/...\"")),
            }]);
        }
    }
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
        if let Some(first) = &self.first_node {
            s += &format!("first-node = {}\n", q(first));
        }
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

    /// The joining node's answers, from the first node's: node and peer swapped, each link's
    /// peer address the first node's own, this node's addresses left to its interfaces.
    pub fn for_joining_node(&self) -> Result<Answers, String> {
        let own = |c: Option<Cidr>, what: &str| {
            c.map(|c| c.addr).ok_or_else(|| format!("the first node's answers hold no {what} address"))
        };
        let mut b = self.clone();
        b.node = self.peer.clone();
        b.peer = self.node.clone();
        b.public.address = None;
        b.public.peer_address = own(self.public.address, "public")?;
        for (l, theirs) in b.heartbeat.iter_mut().zip(&self.heartbeat) {
            l.address = None;
            l.peer_address = own(theirs.address, &format!("heartbeat ({})", theirs.interface))?;
        }
        if let Storage::Drbd(d) = &mut b.storage {
            // Consent to wipe a disk is given for one machine, never carried to another.
            d.wipe = false;
        }
        b.first_node = Some(self.node.clone());
        Ok(b)
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
