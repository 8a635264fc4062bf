//! `/etc/pbxha/pbxha.toml`: the typed model ([`Config`]), the reader that turns TOML into it
//! while collecting every problem with its key path ([`parse`]), and the semantic checks
//! ([`Config::validate`], which reads no files, and [`Config::check_files`], which does).

mod fingerprint;
mod parse;
mod validate;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

pub use crate::fsm::OnIsolation;

pub use fingerprint::Fingerprint;
pub use parse::{lenient_path, load, parse};
pub use validate::{local_node, private_file};

/// Where the config lives unless `--config` says otherwise.
pub const DEFAULT_PATH: &str = "/etc/pbxha/pbxha.toml";

/// One thing wrong with a config, at a key path such as `link[0].addresses.b`.
pub use pbxha_conf::Problem;

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Config {
    pub cluster: ClusterConfig,
    pub heartbeat: HeartbeatConfig,
    pub nodes: Vec<NodeConfig>,
    pub links: Vec<LinkConfig>,
    pub ping: PingConfig,
    pub group: GroupConfig,
    pub resources: Vec<ResourceConfig>,
    pub paths: PathsConfig,
    /// `[mail]`: alerts and switchover reports go out through the outbox only when set.
    #[serde(skip)]
    pub mail: Option<pbxha_watchdog::config::MailConfig>,
    /// `[[check]]`: scheduled checks whose state changes are notified.
    #[serde(skip)]
    pub checks: Vec<pbxha_watchdog::config::CheckConfig>,
    /// `[watchdog]`: the kernel watchdog device the main loop kicks; absent means none.
    pub watchdog: Option<WatchdogConfig>,
    /// `[[probe]]`: SIP OPTIONS probes of the local PBX, the VIP and trunks.
    pub probes: Vec<ProbeConfig>,
    /// `[mysql]`: master-master replication set up by `pbxha mysql setup` and watched by the
    /// daemon; in `replica` mode MySQL is a `kind = "mysql"` resource of the group instead.
    pub mysql: Option<pbxha_replica::mysql::MysqlConfig>,
    /// `[http]`: the read-only status endpoint; off unless the section is present.
    pub http: Option<HttpConfig>,
}

/// The `[http]` section: `/`, `/metrics` and `/status.json`, read-only.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HttpConfig {
    pub listen: std::net::SocketAddr,
    /// Client networks let in besides loopback. Required for a non-loopback `listen`: the
    /// page names nodes, addresses and faults, which not everyone on a LAN should read.
    pub allow: Vec<Cidr>,
}

/// Loopback, so turning the endpoint on exposes nothing; 9642 is unassigned by IANA and
/// clear of the exporters it sits beside (node_exporter 9100, drbd-reactor 9942).
pub const DEFAULT_HTTP_LISTEN: std::net::SocketAddr =
    std::net::SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9642);

/// The `[watchdog]` section (heartbeat's `watchdog /dev/watchdog` directive).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WatchdogConfig {
    pub device: PathBuf,
    /// Asked of the driver with `WDIOC_SETTIMEOUT` (whole seconds); kicked every third of it.
    pub timeout: Duration,
}

pub const DEFAULT_WATCHDOG_DEVICE: &str = "/dev/watchdog";
/// Long enough that a loaded 2-core box never misses it, short enough that a hung daemon
/// resets the node well before an operator would notice (softdog's own default is 60 s).
pub const DEFAULT_WATCHDOG_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ClusterConfig {
    /// Shown in status, alerts and mail subjects.
    pub name: String,
    /// Carried in every packet so two clusters sharing a segment ignore each other.
    pub id: u32,
    /// Shared HMAC key; must be mode 0600.
    pub auth_key_file: PathBuf,
    /// Move the group back to `preferred-node` when it returns (heartbeat's `auto_failback`).
    /// Off by default: every move drops calls, so a working primary stays where it is.
    pub auto_failback: bool,
    pub preferred_node: Option<String>,
}

/// Heartbeat timing, in the spirit of heartbeat's ha.cf (`keepalive`, `deadtime`,
/// `warntime`, `initdead`), but in milliseconds.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HeartbeatConfig {
    pub interval: Duration,
    /// The peer is dead after this long without a valid packet on every link.
    pub deadtime: Duration,
    /// A gap longer than this is logged as a late heartbeat.
    pub warntime: Duration,
    /// How long a starting node waits for its peer before taking the group alone.
    pub initdead: Duration,
    /// Default UDP port for links (heartbeat's `udpport 694`).
    pub port: u16,
}

pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(200);
pub const DEFAULT_DEADTIME: Duration = Duration::from_millis(1000);
pub const DEFAULT_WARNTIME: Duration = Duration::from_millis(500);
pub const DEFAULT_INITDEAD: Duration = Duration::from_millis(5000);
/// heartbeat's registered port (udpport 694 in ha.cf).
pub const DEFAULT_PORT: u16 = 694;

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NodeConfig {
    /// Matches `uname -n` on that node (as heartbeat's `node` lines do).
    pub name: String,
    pub id: u16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LinkMode {
    /// Sent to the peer's address on this link.
    Ucast,
    /// Sent to the broadcast address of the sender's subnet on this link.
    Bcast,
    /// Sent to `group`.
    Mcast,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LinkConfig {
    pub name: String,
    pub mode: LinkMode,
    /// Bound with SO_BINDTODEVICE when set; required for bcast and mcast.
    pub interface: Option<String>,
    pub port: u16,
    /// Multicast group (mcast only).
    pub group: Option<IpAddr>,
    /// Each node's address on this link, keyed by node name.
    pub addresses: BTreeMap<String, Cidr>,
}

/// An address with its prefix length, such as `203.0.113.1/24`.
pub use pbxha_conf::Cidr;

/// Ping nodes: the tie-breaker that tells "the peer died" from "I am cut off".
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PingConfig {
    pub targets: Vec<PingTarget>,
    pub interval: Duration,
    pub timeout: Duration,
    pub rise: u32,
    pub fall: u32,
    /// What a primary cut off from its peer and every ping target at once does.
    pub on_isolation: OnIsolation,
}

impl PingConfig {
    /// How long one target takes to be judged down: `fall` rounds and the last one's
    /// timeout (the fsm's dampen window for a connectivity loss).
    pub fn fall_window(&self) -> Duration {
        self.interval * self.fall + self.timeout
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum PingTarget {
    /// ICMP echo, written `198.51.100.1`.
    Icmp { addr: IpAddr },
    /// TCP connect, written `tcp:198.51.100.1:80`.
    Tcp { addr: std::net::SocketAddr },
}

impl std::fmt::Display for PingTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PingTarget::Icmp { addr } => write!(f, "{addr}"),
            PingTarget::Tcp { addr } => write!(f, "tcp:{addr}"),
        }
    }
}

/// A SIP OPTIONS probe (`[[probe]]`), with keepalived-style `rise`/`fall`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ProbeConfig {
    pub name: String,
    #[serde(flatten)]
    pub role: ProbeRole,
    pub transport: ProbeTransport,
    pub target: std::net::SocketAddr,
    pub interval: Duration,
    pub timeout: Duration,
    pub rise: u32,
    pub fall: u32,
    /// A 503 counts as alive (overloaded) rather than failed.
    pub overloaded_is_alive: bool,
}

/// What a probe's verdict is used for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "role", rename_all = "kebab-case")]
pub enum ProbeRole {
    /// Health of this node's PBX, group member `resource`: probed only while it runs here;
    /// `fall` failures count as a failed monitor (local restarts, then hand-over).
    LocalPbx { resource: String },
    /// The VIP, probed by the secondary: an end-to-end check and a split-brain signal that
    /// alerts but never moves the group.
    Vip,
    /// A trunk or peer: alerts on up/down only.
    Trunk,
}

impl ProbeRole {
    pub fn as_str(&self) -> &'static str {
        match self {
            ProbeRole::LocalPbx { .. } => "local-pbx",
            ProbeRole::Vip => "vip",
            ProbeRole::Trunk => "trunk",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProbeTransport {
    Udp,
    Tcp,
}

pub const DEFAULT_PROBE_INTERVAL: Duration = Duration::from_secs(2);
/// RFC 3261 Timer E sends at 0, 0.5 and 1.5 s within it (T1 = 500 ms, §17.1.2.2).
pub const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// RFC 3261 §19.1.2: SIP's default port over UDP and TCP.
pub const DEFAULT_SIP_PORT: u16 = 5060;

/// Local restart policy for the resource group.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GroupConfig {
    /// Local restarts of a failed resource allowed within `restart-window` before the node
    /// gives up and hands over.
    pub max_restarts: u32,
    pub restart_window: Duration,
    /// How long a member that ran out of restarts keeps this node out of the group, and how
    /// long a holder with nobody to hand over to waits before restarting it (Pacemaker's
    /// `failure-timeout`); `restart-window` when not set.
    pub failure_timeout: Duration,
    /// How long a planned switchover waits for calls to end before moving anyway.
    pub drain_timeout: Duration,
}

/// The issue's `drain-timeout` default (the telephony drain's own default deadline).
pub const DEFAULT_DRAIN_TIMEOUT: Duration = pbxha_telephony::drain::DEFAULT_DEADLINE;

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ResourceConfig {
    pub name: String,
    pub start_timeout: Duration,
    pub stop_timeout: Duration,
    pub monitor_timeout: Duration,
    pub monitor_interval: Duration,
    pub kind: ResourceKind,
}

pub use crate::resources::drbd::DrbdConfig;
pub use crate::resources::filesystem::FilesystemConfig;
pub use crate::resources::mysql::{
    MysqlResourceConfig, DEFAULT_MYSQL_DATADIR, DEFAULT_MYSQL_SOCKET, DEFAULT_MYSQL_UNIT, DEFAULT_REPLICA_MOUNT,
};
pub use crate::resources::ocf::OcfConfig;
pub use crate::resources::pbx::{AmiSettings, PbxConfig};
pub use crate::resources::service::ServiceConfig;
pub use crate::resources::vip::{VipConfig, DEFAULT_GARP_COUNT, DEFAULT_GARP_INTERVAL, DEFAULT_GUARD_WAIT};
/// The kinds' settings live with the rest of each kind, in its module of [`crate::resources`].
pub use crate::resources::ResourceKind;

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PathsConfig {
    pub state_db: PathBuf,
    pub control_socket: PathBuf,
    /// Scripts run on every notification (cleared environment, `PBXHA_*` variables).
    pub hooks: Vec<Vec<String>>,
}

pub const DEFAULT_STATE_DB: &str = "/var/lib/pbxha/state.db";
pub const DEFAULT_CONTROL_SOCKET: &str = "/run/pbxha/control.sock";
pub const DEFAULT_AUTH_KEY: &str = "/etc/pbxha/authkey";

impl Config {
    pub fn node(&self, name: &str) -> Option<&NodeConfig> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// The other node of the pair.
    pub fn peer_of(&self, name: &str) -> Option<&NodeConfig> {
        self.nodes.iter().find(|n| n.name != name)
    }
}

#[cfg(test)]
mod doc;
#[cfg(test)]
pub(crate) mod tests;
