//! The lab's fixed design as data and pure functions: who lives in which namespace with
//! which addresses, the `ip` commands that build it, the iptables rules of a partition, the
//! config each node's daemon gets, and the reader of `ip -j addr` output.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The virtual IP the cluster moves between a and b.
pub const VIP: &str = "198.51.100.100";
/// The public gateway, which is also the nodes' ping target.
pub const GATEWAY: &str = "198.51.100.1";
/// The heartbeat port of every lab link (heartbeat's well-known port 694).
pub const HEARTBEAT_PORT: u16 = 694;
/// The VIP's SIP port (RFC 3261 §19.1.2 default).
pub const SIP_PORT: u16 = 5060;
/// The namespace name prefix of the real lab; tests use their own.
pub const DEFAULT_PREFIX: &str = "pbxha-";
/// Where the real lab keeps configs, keys, logs and PID files.
pub const DEFAULT_STATE_DIR: &str = "/run/pbxha-lab";
/// Marks a state directory as the lab's; `down` removes only a directory holding it.
pub const RECORD_FILE: &str = "lab.json";
/// The heartbeat key file in the state directory.
pub const AUTH_KEY_FILE: &str = "authkey";
/// The pair's `[[node]]` tables: `a` (id 1) and `b` (id 2), in every config the lab writes
/// and the tests' too.
pub const PAIR_NODES: &str = r#"[[node]]
name = "a"
id = 1

[[node]]
name = "b"
id = 2
"#;

/// One namespace of the lab besides the switch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Member {
    A,
    B,
    Client,
    Gw,
}

impl Member {
    pub const ALL: [Member; 4] = [Member::A, Member::B, Member::Client, Member::Gw];
    /// The two cluster nodes.
    pub const NODES: [Member; 2] = [Member::A, Member::B];

    /// The name used in namespaces, node configs and the CLI.
    pub fn name(self) -> &'static str {
        match self {
            Member::A => "a",
            Member::B => "b",
            Member::Client => "client",
            Member::Gw => "gw",
        }
    }

    /// Whether this member runs a pbxha daemon.
    pub fn is_node(self) -> bool {
        matches!(self, Member::A | Member::B)
    }

    /// This member's links to the bridges.
    pub fn ports(self) -> impl Iterator<Item = &'static Port> {
        PORTS.iter().filter(move |p| p.member == self)
    }
}

impl std::fmt::Display for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Member {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Member::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| format!("unknown lab member `{s}` (one of a, b, client, gw)"))
    }
}

/// The two segments, each a bridge in the switch namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bridge {
    /// 198.51.100.0/24: clients, the gateway and the VIP.
    Public,
    /// 203.0.113.0/24: the dedicated heartbeat link (the crossover cable).
    Heartbeat,
}

impl Bridge {
    pub fn name(self) -> &'static str {
        match self {
            Bridge::Public => "br-pub",
            Bridge::Heartbeat => "br-hb",
        }
    }
}

/// One veth pair: `ifname` inside the member, `switch_ifname` enslaved to the bridge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Port {
    pub member: Member,
    pub bridge: Bridge,
    pub ifname: &'static str,
    pub switch_ifname: &'static str,
    /// Address with prefix length.
    pub address: &'static str,
}

pub const PORTS: [Port; 6] = [
    Port {
        member: Member::A,
        bridge: Bridge::Public,
        ifname: "pub0",
        switch_ifname: "a-pub",
        address: "198.51.100.11/24",
    },
    Port {
        member: Member::A,
        bridge: Bridge::Heartbeat,
        ifname: "hb0",
        switch_ifname: "a-hb",
        address: "203.0.113.11/24",
    },
    Port {
        member: Member::B,
        bridge: Bridge::Public,
        ifname: "pub0",
        switch_ifname: "b-pub",
        address: "198.51.100.12/24",
    },
    Port {
        member: Member::B,
        bridge: Bridge::Heartbeat,
        ifname: "hb0",
        switch_ifname: "b-hb",
        address: "203.0.113.12/24",
    },
    Port {
        member: Member::Client,
        bridge: Bridge::Public,
        ifname: "pub0",
        switch_ifname: "client-pub",
        address: "198.51.100.20/24",
    },
    Port {
        member: Member::Gw,
        bridge: Bridge::Public,
        ifname: "pub0",
        switch_ifname: "gw-pub",
        address: "198.51.100.1/24",
    },
];

/// The address of `member` on `bridge`, without prefix length.
pub fn address_of(member: Member, bridge: Bridge) -> Option<&'static str> {
    PORTS.iter().find(|p| p.member == member && p.bridge == bridge).and_then(|p| p.address.split('/').next())
}

/// Namespace names under one prefix, so tests never collide with a real lab.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Names {
    pub prefix: String,
}

impl Names {
    /// The namespace holding the bridges, so the host's own network is never touched.
    pub fn switch(&self) -> String {
        format!("{}sw", self.prefix)
    }

    pub fn ns(&self, member: Member) -> String {
        format!("{}{}", self.prefix, member.name())
    }

    /// Every namespace of the lab, switch first.
    pub fn all(&self) -> Vec<String> {
        std::iter::once(self.switch()).chain(Member::ALL.map(|m| self.ns(m))).collect()
    }
}

fn argv(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| s.to_string()).collect()
}

/// The `ip` argvs that build the topology, in order. No default route anywhere: the lab
/// is two subnets and nothing else.
pub fn topology(names: &Names) -> Vec<Vec<String>> {
    let sw = names.switch();
    let mut cmds = Vec::new();
    for ns in names.all() {
        cmds.push(argv(&["ip", "netns", "add", &ns]));
        cmds.push(argv(&["ip", "-n", &ns, "link", "set", "lo", "up"]));
    }
    for bridge in [Bridge::Public, Bridge::Heartbeat] {
        cmds.push(argv(&["ip", "-n", &sw, "link", "add", bridge.name(), "type", "bridge"]));
        cmds.push(argv(&["ip", "-n", &sw, "link", "set", bridge.name(), "up"]));
    }
    for port in &PORTS {
        let ns = names.ns(port.member);
        // Created inside the member with the peer moved straight into the switch, so no
        // interface ever appears in the host's namespace.
        cmds.push(argv(&[
            "ip",
            "-n",
            &ns,
            "link",
            "add",
            port.ifname,
            "type",
            "veth",
            "peer",
            "name",
            port.switch_ifname,
            "netns",
            &sw,
        ]));
        cmds.push(argv(&["ip", "-n", &sw, "link", "set", port.switch_ifname, "master", port.bridge.name()]));
        cmds.push(argv(&["ip", "-n", &sw, "link", "set", port.switch_ifname, "up"]));
        cmds.push(argv(&["ip", "-n", &ns, "addr", "add", port.address, "dev", port.ifname]));
        cmds.push(argv(&["ip", "-n", &ns, "link", "set", port.ifname, "up"]));
    }
    cmds
}

/// Which links a partition cuts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Partition {
    Hb,
    Public,
    All,
    /// Heartbeats in are dropped on every link while the node still sends its own: the
    /// one-way loss of issue 10 (3), where the node thinks its peer dead and the peer
    /// still hears it.
    OneWay,
}

impl FromStr for Partition {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "hb" => Ok(Partition::Hb),
            "public" => Ok(Partition::Public),
            "all" => Ok(Partition::All),
            "one-way" => Ok(Partition::OneWay),
            _ => Err(format!("unknown partition `{s}` (one of hb, public, all, one-way)")),
        }
    }
}

/// The iptables rule specs (without `-A`/`-C`) that cut `which` links of `member`: DROP in
/// and out on each interface, so neither heartbeats nor ARP-answering traffic pass; for
/// [`Partition::OneWay`], only heartbeats coming in.
pub fn partition_rules(which: Partition, member: Member) -> Result<Vec<Vec<String>>, String> {
    let ports: Vec<&Port> = member
        .ports()
        .filter(|p| match which {
            Partition::Hb => p.bridge == Bridge::Heartbeat,
            Partition::Public => p.bridge == Bridge::Public,
            Partition::All => true,
            Partition::OneWay => member.is_node(),
        })
        .collect();
    if ports.is_empty() {
        return Err(format!("{member} has no interface on the {which:?} link"));
    }
    let heartbeat_port = HEARTBEAT_PORT.to_string();
    Ok(ports
        .iter()
        .flat_map(|p| match which {
            Partition::OneWay => {
                vec![argv(&["INPUT", "-i", p.ifname, "-p", "udp", "--dport", &heartbeat_port, "-j", "DROP"])]
            }
            _ => vec![argv(&["INPUT", "-i", p.ifname, "-j", "DROP"]), argv(&["OUTPUT", "-o", p.ifname, "-j", "DROP"])],
        })
        .collect())
}

/// Heartbeat timing presets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Profile {
    /// The product's defaults: interval 200 ms, deadtime 1 s, warntime 500 ms.
    #[default]
    Default,
    /// Quick failovers for demos and tests: 50/250/150 ms.
    Fast,
}

impl FromStr for Profile {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "default" => Ok(Profile::Default),
            "fast" => Ok(Profile::Fast),
            _ => Err(format!("unknown profile `{s}` (one of default, fast)")),
        }
    }
}

/// The heartbeat timing of a [`Profile`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    pub interval: Duration,
    pub deadtime: Duration,
    pub warntime: Duration,
    /// Leaves room for both daemons of a freshly built lab to start.
    pub initdead: Duration,
}

impl Profile {
    /// A `const fn`, so the end-to-end tests can name the lab's timing in their constants.
    pub const fn timing(self) -> Timing {
        // (interval, deadtime, warntime, initdead) in ms.
        let (interval, deadtime, warntime, initdead) = match self {
            Profile::Default => (200, 1000, 500, 3000),
            Profile::Fast => (50, 250, 150, 1000),
        };
        Timing {
            interval: Duration::from_millis(interval),
            deadtime: Duration::from_millis(deadtime),
            warntime: Duration::from_millis(warntime),
            initdead: Duration::from_millis(initdead),
        }
    }
}

/// `[ping] on-isolation` of both nodes, the policy the daemon reads back by its name.
pub use pbxha_conf::OnIsolation;

/// What stands in for the PBX on the VIP.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Pbx {
    /// `pbxha lab sip-responder`.
    #[default]
    Builtin,
    /// kamailio with a generated config, answering OPTIONS with 200.
    Kamailio,
}

impl FromStr for Pbx {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "builtin" => Ok(Pbx::Builtin),
            "kamailio" => Ok(Pbx::Kamailio),
            _ => Err(format!("unknown pbx `{s}` (one of builtin, kamailio)")),
        }
    }
}

/// Where one node's files live in the state directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeFiles {
    pub config: PathBuf,
    pub log: PathBuf,
    pub pid: PathBuf,
    pub control_socket: PathBuf,
    pub state_db: PathBuf,
    pub kamailio_config: PathBuf,
    /// kamailio's runtime directory (`-Y`), which must exist before it starts.
    pub kamailio_run: PathBuf,
    /// The Asterisk double of `up --asterisk-double`: `bin/` (put first on the daemon's
    /// PATH), the call count it reports (`calls`), its unit state and every command it got.
    pub asterisk_double: PathBuf,
}

impl NodeFiles {
    pub fn new(state_dir: &Path, node: Member) -> Self {
        let n = node.name();
        NodeFiles {
            config: state_dir.join(format!("{n}.toml")),
            log: state_dir.join(format!("{n}.log")),
            pid: state_dir.join(format!("{n}.pid")),
            control_socket: state_dir.join(format!("{n}.sock")),
            state_db: state_dir.join(format!("{n}.db")),
            kamailio_config: state_dir.join(format!("kamailio-{n}.cfg")),
            kamailio_run: state_dir.join(format!("kamailio-{n}")),
            asterisk_double: state_dir.join(format!("asterisk-{n}")),
        }
    }
}

/// A TOML basic string, escaped.
fn q(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn path_str(p: &Path) -> String {
    q(&p.to_string_lossy())
}

/// The PBX's argv for `node`.
pub fn pbx_argv(pbx: Pbx, node: Member, state_dir: &Path, exe: &Path) -> Vec<String> {
    let vip = format!("{VIP}:{SIP_PORT}");
    match pbx {
        Pbx::Builtin => {
            let exe = exe.to_string_lossy().into_owned();
            vec![exe, "lab".into(), "sip-responder".into(), "--bind".into(), vip, "--node".into(), node.name().into()]
        }
        Pbx::Kamailio => {
            let files = NodeFiles::new(state_dir, node);
            // -DD -E: stay in the foreground and log to stderr, so pbxha owns the process
            // and its log ends up in the node's log.
            let mut argv =
                vec!["kamailio".to_string(), "-f".into(), files.kamailio_config.to_string_lossy().into_owned()];
            argv.extend(["-DD", "-E", "-m", "32", "-M", "4"].map(String::from));
            argv.extend(["-P".to_string(), files.kamailio_run.join("kamailio.pid").to_string_lossy().into_owned()]);
            argv.extend(["-Y".to_string(), files.kamailio_run.to_string_lossy().into_owned()]);
            argv
        }
    }
}

/// kamailio's config for `node`: answers OPTIONS on the VIP with 200 and names the node.
pub fn kamailio_config(node: Member) -> String {
    format!(
        r#"#!KAMAILIO
# Generated by pbxha lab for node {node}.
log_stderror=yes
children=1
disable_tcp=yes
listen=udp:{VIP}:{SIP_PORT}
mpath="/usr/lib/x86_64-linux-gnu/kamailio/modules/"
loadmodule "sl.so"
loadmodule "textops.so"
request_route {{
  if (is_method("OPTIONS")) {{
    append_to_reply("X-Pbxha-Node: {node}\r\n");
    sl_send_reply("200", "OK");
    exit;
  }}
  if (!is_method("ACK")) sl_send_reply("501", "Not Implemented");
}}
"#
    )
}

/// `[group] failure-timeout` of both nodes: a member that ran out of restarts with no peer
/// to take over is tried again after it.
pub const FAILURE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a planned move waits for calls to end with the Asterisk double: long enough
/// that a test sees the drain under way and can break the peer meanwhile.
pub const DOUBLE_DRAIN_TIMEOUT_MS: u64 = 60_000;

/// The call count file, unit state file and command log of an Asterisk double in `dir`.
pub fn asterisk_double_files(dir: &Path) -> [PathBuf; 3] {
    [dir.join("calls"), dir.join("unit"), dir.join("commands.log")]
}

/// The `systemctl` and `asterisk` stand-ins of `up --asterisk-double`, as (file name,
/// script), for a `pbx` member whose drain has calls to wait for: neither Asterisk nor
/// systemd exists here. They answer the commands pbxha's Asterisk adapter runs with the
/// output the real tools print (`core show channels count`: Asterisk's main/cli.c
/// handle_chanlist; `dialplan set global`: pbx.c handle_set_global; `systemctl is-active`:
/// the state word, exit 3 when not active) and log each command they get.
pub fn asterisk_double_scripts(dir: &Path) -> [(&'static str, String); 2] {
    let [calls, unit, log] = asterisk_double_files(dir).map(|p| sh_quote(&p.to_string_lossy()));
    let systemctl = format!(
        r#"#!/bin/sh
# pbxha lab: systemctl for the Asterisk double (no systemd here).
echo "systemctl $*" >> {log}
case "$1" in
  start) echo active > {unit} ;;
  stop) echo inactive > {unit} ;;
  is-active)
    state=$(cat {unit} 2>/dev/null || echo inactive)
    echo "$state"
    [ "$state" = active ] || exit 3 ;;
  *) echo "lab systemctl double: unsupported: $*" >&2; exit 1 ;;
esac
"#
    );
    let asterisk = format!(
        r#"#!/bin/sh
# pbxha lab: `asterisk -rx` of the Asterisk double, answering as Asterisk does.
echo "asterisk $*" >> {log}
if [ "$1" != "-rx" ]; then echo "lab asterisk double: only -rx: $*" >&2; exit 1; fi
case "$2" in
  "core show channels count")
    n=$(cat {calls} 2>/dev/null || echo 0)
    if [ "$n" = 1 ]; then word=call; else word=calls; fi
    printf '%s active channels
%s active %s
0 calls processed
' "$((n * 2))" "$n" "$word" ;;
  "dialplan set global PBXHA_DRAINING "*)
    printf "
    -- Global variable 'PBXHA_DRAINING' set to '%s'
" "${{2##* }}" ;;
  "core abort shutdown") ;;
  *) printf "No such command '%s' (type 'core show help %s' for other possible commands)
" "$2" "$2" ;;
esac
"#
    );
    [("systemctl", systemctl), ("asterisk", asterisk)]
}

/// A single-quoted sh word.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The daemon config for `node` (identical for a and b but for the node's own paths).
/// `asterisk_double` adds a `pbx` member driven through the Asterisk double and a call
/// drain of [`DOUBLE_DRAIN_TIMEOUT_MS`].
pub fn node_config(
    node: Member,
    state_dir: &Path,
    profile: Profile,
    pbx: Pbx,
    on_isolation: OnIsolation,
    asterisk_double: bool,
    exe: &Path,
) -> String {
    let timing = profile.timing();
    // (interval, timeout, rise, fall) of the gateway ping.
    let (ping_interval, ping_timeout, rise, fall) = match profile {
        Profile::Default => (500, 400, 2, 3),
        Profile::Fast => (200, 150, 1, 2),
    };
    // How long the VIP's split-brain ARP probe waits on an unplanned takeover. The lab's
    // bridge answers in well under a millisecond; the fast profile is for a dedicated,
    // quiet segment.
    let guard_wait = match profile {
        Profile::Default => 100,
        Profile::Fast => 30,
    };
    // (interval, timeout, fall) of the SIP OPTIONS probes of the PBX on the VIP.
    let (sip_interval, sip_timeout, sip_fall) = match profile {
        Profile::Default => (1000, 1000, 3),
        Profile::Fast => (500, 500, 2),
    };
    let http_listen = http_endpoint(node);
    let files = NodeFiles::new(state_dir, node);
    let addresses = |bridge: Bridge| {
        Member::NODES
            .iter()
            .filter_map(|m| PORTS.iter().find(|p| p.member == *m && p.bridge == bridge))
            .map(|p| format!("{} = {}", p.member.name(), q(p.address)))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let exec = pbx_argv(pbx, node, state_dir, exe).iter().map(|a| q(a)).collect::<Vec<_>>().join(", ");
    format!(
        r#"# Generated by `pbxha lab up` for node {node}.
[cluster]
name = "pbxha-lab"
id = 64500
auth-key-file = {auth}
auto-failback = false
preferred-node = "a"

[heartbeat]
interval = {interval}
deadtime = {deadtime}
warntime = {warntime}
initdead = {initdead}
port = {HEARTBEAT_PORT}

{PAIR_NODES}
[[link]]
name = "hb"
mode = "ucast"
interface = "hb0"
port = {HEARTBEAT_PORT}

[link.addresses]
{hb_addresses}

[[link]]
name = "pub"
mode = "ucast"
interface = "pub0"
port = {HEARTBEAT_PORT}

[link.addresses]
{pub_addresses}

[ping]
targets = [{gateway}]
interval = {ping_interval}
timeout = {ping_timeout}
rise = {rise}
fall = {fall}
on-isolation = "{on_isolation}"

# failure-timeout: a member that ran out of restarts is tried again after it when no peer
# takes over; short, so a test sees it happen.
[group]
max-restarts = 2
restart-window = 60000
failure-timeout = {failure_timeout}
{drain}
[[resource]]
name = "vip"
kind = "vip"
address = "{VIP}/24"
interface = "pub0"
garp-count = 3
garp-interval = 200
guard = true
guard-wait = {guard_wait}

# A hung PBX ignores SIGTERM until it is killed: keep the grace short.
[[resource]]
name = "sip"
kind = "service"
exec = [{exec}]
monitor-interval = 1000
stop-timeout = 4000

# SIP-aware: the PBX counts as failed when it stops answering OPTIONS on the VIP.
[[probe]]
name = "pbx"
role = "local-pbx"
resource = "sip"
target = "udp:{VIP}:{SIP_PORT}"
interval = {sip_interval}
timeout = {sip_timeout}
rise = 1
fall = {sip_fall}

# On the secondary: does the service the clients see answer?
[[probe]]
name = "vip"
role = "vip"
target = "udp:{VIP}:{SIP_PORT}"
interval = {sip_interval}
timeout = {sip_timeout}
rise = 1
fall = {sip_fall}

{double_member}[paths]
state-db = {state_db}
control-socket = {control_socket}

# The status page, /metrics and /status.json, for the lab's public segment (a browser or a
# scraper in the client namespace: `pbxha lab exec client -- curl http://{http_listen}/metrics`).
[http]
listen = "{http_listen}"
allow = ["{PUBLIC_NET}"]
"#,
        auth = path_str(&state_dir.join(AUTH_KEY_FILE)),
        failure_timeout = FAILURE_TIMEOUT.as_millis(),
        interval = timing.interval.as_millis(),
        deadtime = timing.deadtime.as_millis(),
        warntime = timing.warntime.as_millis(),
        initdead = timing.initdead.as_millis(),
        hb_addresses = addresses(Bridge::Heartbeat),
        pub_addresses = addresses(Bridge::Public),
        gateway = q(GATEWAY),
        state_db = path_str(&files.state_db),
        control_socket = path_str(&files.control_socket),
        on_isolation = on_isolation.as_str(),
        drain = if asterisk_double { format!("drain-timeout = {DOUBLE_DRAIN_TIMEOUT_MS}\n") } else { String::new() },
        double_member = if asterisk_double {
            "# Calls to drain: an Asterisk double (`pbxha lab up --asterisk-double`).\n\
             [[resource]]\nname = \"asterisk\"\nkind = \"pbx\"\npbx = \"asterisk\"\nunit = \"asterisk\"\n\n"
        } else {
            ""
        },
    )
}

/// The lab's public segment, which the nodes' HTTP endpoints let in.
pub const PUBLIC_NET: &str = "198.51.100.0/24";
/// The `[http]` port: the product's default (the appliance's config tests hold the two equal).
pub const HTTP_PORT: u16 = 9642;

/// Where `node`'s status page and `/metrics` listen: its public address, so a client on the
/// segment reaches them as an operator's browser or Prometheus would.
pub fn http_endpoint(node: Member) -> std::net::SocketAddr {
    let ip = address_of(node, Bridge::Public)
        .and_then(|a| a.parse().ok())
        .expect("every lab member has a public address in PORTS");
    std::net::SocketAddr::new(ip, HTTP_PORT)
}

/// One interface as `ip -j addr` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Interface {
    pub name: String,
    /// Administratively up (the `UP` flag).
    pub up: bool,
    /// Addresses with prefix length.
    pub addresses: Vec<String>,
}

/// Reads `ip -j addr show` output.
pub fn parse_ip_addr(json: &str) -> Result<Vec<Interface>, String> {
    let value: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("`ip -j addr` output is not JSON: {e}"))?;
    let list = value.as_array().ok_or("`ip -j addr` output is not a JSON array")?;
    Ok(list
        .iter()
        .filter_map(|i| {
            let name = i.get("ifname")?.as_str()?.to_string();
            let up =
                i.get("flags").and_then(|f| f.as_array()).is_some_and(|f| f.iter().any(|x| x.as_str() == Some("UP")));
            let addresses = i
                .get("addr_info")
                .and_then(|a| a.as_array())
                .map(|infos| {
                    infos
                        .iter()
                        .filter_map(|a| {
                            Some(format!("{}/{}", a.get("local")?.as_str()?, a.get("prefixlen")?.as_u64()?))
                        })
                        .collect()
                })
                .unwrap_or_default();
            Some(Interface { name, up, addresses })
        })
        .collect())
}

/// Namespace names from `ip netns list` (`name (id: 3)` or just `name` per line).
pub fn parse_netns_list(text: &str) -> Vec<String> {
    text.lines().filter_map(|l| l.split_whitespace().next()).map(String::from).collect()
}

/// PIDs from `ip netns pids`, one per line.
pub fn parse_pids(text: &str) -> Vec<i32> {
    text.lines().filter_map(|l| l.trim().parse().ok()).filter(|p| *p > 1).collect()
}
