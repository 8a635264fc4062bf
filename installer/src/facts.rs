//! What the wizard knows about this machine, gathered at the edge: commands through the
//! runner seam, files below `--root`, and the running kernel's /proc and /sys. Everything
//! that judges these facts ([`crate::preflight`], [`crate::questions`]) is pure.

use std::net::IpAddr;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use pbxha_runner::Cmd;

use crate::answers::{Cidr, Partial, Pbx, Storage};
use crate::Env;

/// One network interface, as `ip -j addr` reports it (iproute2 reads it over netlink).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    /// Administratively up with a carrier (`UP` flag, operstate UP or UNKNOWN).
    pub up: bool,
    pub addresses: Vec<Cidr>,
}

/// The DRBD backing device.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Device {
    pub path: String,
    pub block: bool,
    pub mounted_at: Option<String>,
    /// LVM, md or dm users (`/sys/class/block/NAME/holders`), and swap.
    pub holders: Vec<String>,
    /// A filesystem or partition-table signature found by `blkid -p`.
    pub signature: Option<String>,
}

/// The host firewall the pair's traffic must be let in through, by the tool that owns the
/// rules. ufw and firewalld keep rule sets of their own and rewrite the kernel's tables from
/// them, so their rules go through their own commands, never straight into nftables.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Firewall {
    Ufw,
    Firewalld,
    /// A plain nftables ruleset whose input chain drops by default.
    Nftables(NftChain),
}

/// Whether `ufw status` says the firewall is on (its first line; inactive is the package's
/// state until an operator runs `ufw enable`).
pub fn ufw_active(status: &str) -> bool {
    status.lines().next().map(str::trim) == Some("Status: active")
}

/// An nftables chain on the input hook that drops by default: the pair's traffic must be
/// let in through it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NftChain {
    pub family: String,
    pub table: String,
    pub chain: String,
}

/// The comment pbxha's own firewall rules carry, so they can be found and removed again.
pub const NFT_COMMENT: &str = "pbxha";

/// Parses `nft -j list chains`: the first input chain whose policy is drop.
pub fn parse_nft_chains(json: &str) -> Option<NftChain> {
    let v: serde_json::Value = serde_json::from_str(json).ok()?;
    v.get("nftables")?.as_array()?.iter().filter_map(|i| i.get("chain")).find_map(|c| {
        let field = |k: &str| c.get(k).and_then(|v| v.as_str()).map(str::to_string);
        if field("hook")? != "input" || field("policy")? != "drop" {
            return None;
        }
        Some(NftChain { family: field("family")?, table: field("table")?, chain: field("name")? })
    })
}

/// The handles of pbxha's rules in `nft -a list chain ...` output.
pub fn parse_nft_handles(text: &str) -> Vec<u64> {
    let ours = format!("comment \"{NFT_COMMENT}\" # handle ");
    text.lines().filter_map(|l| l.split_once(&ours)?.1.trim().parse().ok()).collect()
}

/// Everything the preflight judges.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Facts {
    pub euid: u32,
    /// `PRETTY_NAME`, `ID` and `VERSION_ID` of os-release.
    pub os: Option<(String, String, String)>,
    /// `uname -n`.
    pub uname: String,
    /// /etc/hostname below the root.
    pub etc_hostname: Option<String>,
    pub interfaces: Vec<Interface>,
    pub default_gateway: Option<IpAddr>,
    /// `None`: not probed; `Some(None)`: nobody answered ARP for the VIP; `Some(Some(who))`.
    pub vip_answered_by: Option<Option<String>>,
    /// Each heartbeat peer address, with the interface and whether it answered ping.
    pub peer_answers: Vec<(String, IpAddr, bool)>,
    /// The running time-sync daemon, if any.
    pub time_sync: Option<String>,
    pub device: Option<Device>,
    /// drbdadm's version.
    pub drbd_utils: Option<String>,
    pub drbd_module: bool,
    /// Listening sockets on the ports the pair needs, as `ss` printed them.
    pub busy_ports: Vec<String>,
    /// The MySQL/MariaDB server's `--version` line.
    pub mysql_server: Option<String>,
    /// The PBX's own version line (`asterisk -V`, `freeswitch -version`).
    pub pbx_version: Option<String>,
    /// The DRBD backing device's size in bytes (`blockdev --getsize64`).
    pub drbd_bytes: Option<u64>,
    /// PBXs found, each with what gave it away.
    pub pbx_found: Vec<(Pbx, String)>,
    /// Other cluster stacks' config files found (heartbeat, corosync, keepalived).
    pub other_ha: Vec<String>,
    pub systemd_pid1: bool,
    /// Secret files named by the answers: key, path, mode (`None`: missing).
    pub secrets: Vec<(String, PathBuf, Option<u32>)>,
    /// Units enabled at boot that pbxha will start itself.
    pub enabled_units: Vec<String>,
    /// `net.ipv4.ip_nonlocal_bind` now.
    pub nonlocal_bind: Option<String>,
    /// An active host firewall that would drop the pair's traffic.
    pub firewall: Option<Firewall>,
}

/// Ports the pair uses: heartbeat (UDP, heartbeat's registered 694) and DRBD (TCP).
pub const DRBD_PORT: u16 = 7788;

/// Units pbxha starts itself, so they must not also start at boot.
pub fn managed_units(pbx: Pbx, mysql_replica: bool) -> Vec<&'static str> {
    let mut units = vec![pbx.name()];
    if mysql_replica {
        units.push("mariadb");
    }
    units
}

impl Facts {
    pub fn interface(&self, name: &str) -> Option<&Interface> {
        self.interfaces.iter().find(|i| i.name == name)
    }

    /// The first IPv4 address of an interface, falling back to any.
    pub fn address_of(&self, name: &str) -> Option<Cidr> {
        let i = self.interface(name)?;
        i.addresses.iter().find(|a| a.addr.is_ipv4()).or(i.addresses.first()).copied()
    }
}

/// Parses `ip -j addr show`.
pub fn parse_ip_addr(json: &str) -> Result<Vec<Interface>, String> {
    let v: serde_json::Value = serde_json::from_str(json).map_err(|e| format!("ip -j addr: {e}"))?;
    let items = v.as_array().ok_or("ip -j addr: not a list")?;
    Ok(items
        .iter()
        .filter_map(|i| {
            let name = i.get("ifname")?.as_str()?.to_string();
            let flags: Vec<&str> = i.get("flags")?.as_array()?.iter().filter_map(|f| f.as_str()).collect();
            let oper = i.get("operstate").and_then(|o| o.as_str()).unwrap_or("UNKNOWN");
            let addresses = i
                .get("addr_info")
                .and_then(|a| a.as_array())
                .map(|a| {
                    a.iter()
                        .filter_map(|x| {
                            Some(Cidr {
                                addr: x.get("local")?.as_str()?.parse().ok()?,
                                prefix: x.get("prefixlen")?.as_u64()? as u8,
                            })
                        })
                        .collect()
                })
                .unwrap_or_default();
            Some(Interface { name, up: flags.contains(&"UP") && matches!(oper, "UP" | "UNKNOWN"), addresses })
        })
        .collect())
}

/// Parses `ip -j route show default`: the first gateway.
pub fn parse_default_route(json: &str) -> Option<IpAddr> {
    let v: serde_json::Value = serde_json::from_str(json).ok()?;
    v.as_array()?.iter().find_map(|r| r.get("gateway")?.as_str()?.parse().ok())
}

/// Who answered an `arping -D` duplicate-address probe: the MAC in "reply from IP [MAC]".
pub fn parse_arping_reply(stdout: &str) -> Option<String> {
    let line = stdout.lines().find(|l| l.contains("reply from"))?;
    let mac = line.split('[').nth(1)?.split(']').next()?;
    Some(mac.to_string())
}

/// `KEY=value` lines of os-release, quotes removed.
fn os_release(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix('=')).map(|v| v.trim_matches('"').to_string())
}

async fn stdout(env: &Env, argv: &[&str]) -> Option<String> {
    let cmd = Cmd::new(argv.iter().copied()).timeout(Duration::from_secs(10));
    env.runner.run(&cmd).await.ok().filter(|o| o.success()).map(|o| o.stdout)
}

/// The active firewall: ufw or firewalld first, as both also show up in nftables (as
/// iptables-nft tables or a firewalld table) where rules of ours would be overwritten.
async fn firewall(env: &Env) -> Option<Firewall> {
    if stdout(env, &["ufw", "status"]).await.is_some_and(|o| ufw_active(&o)) {
        return Some(Firewall::Ufw);
    }
    // `firewall-cmd --state` exits 0 only while the daemon runs (252 when it does not).
    if stdout(env, &["firewall-cmd", "--state"]).await.is_some() {
        return Some(Firewall::Firewalld);
    }
    stdout(env, &["nft", "-j", "list", "chains"]).await.and_then(|o| parse_nft_chains(&o)).map(Firewall::Nftables)
}

/// Whether `systemctl [--root R] is-enabled UNIT` says enabled.
async fn enabled(env: &Env, unit: &str) -> bool {
    let mut argv = env.systemctl();
    argv.extend(["is-enabled".to_string(), format!("{unit}.service")]);
    let cmd = Cmd::new(argv).timeout(Duration::from_secs(10));
    env.runner.run(&cmd).await.is_ok_and(|o| o.stdout.trim() == "enabled")
}

/// Names of running processes (`/proc/*/comm`).
fn running() -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("comm")).ok())
        .map(|s| s.trim().to_string())
        .collect()
}

fn device(path: &str, blkid: Option<String>) -> Device {
    let meta = std::fs::metadata(path);
    let mut d = Device {
        path: path.to_string(),
        block: meta.as_ref().is_ok_and(|m| m.file_type().is_block_device()),
        ..Device::default()
    };
    let real = std::fs::canonicalize(path).unwrap_or_else(|_| PathBuf::from(path));
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    d.mounted_at = pbxha_replica::filesystem::parse_mountinfo(&mountinfo)
        .into_iter()
        .find(|m| Path::new(&m.source) == real || m.source == path)
        .map(|m| m.mount_point.display().to_string());
    if let Some(name) = real.file_name().and_then(|n| n.to_str()) {
        if let Ok(dir) = std::fs::read_dir(format!("/sys/class/block/{name}/holders")) {
            d.holders.extend(dir.filter_map(|e| e.ok()?.file_name().into_string().ok()));
        }
    }
    let swaps = std::fs::read_to_string("/proc/swaps").unwrap_or_default();
    if swaps.lines().skip(1).any(|l| l.split_whitespace().next() == Some(&real.display().to_string())) {
        d.holders.push("swap".into());
    }
    d.signature = blkid.map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
    d
}

/// What the peer's preflight compares with its own: the servers' versions and the disk size.
pub async fn versions(env: &Env, p: &Partial) -> crate::join::PeerFacts {
    let first_line = |out: Option<String>| out.and_then(|o| o.lines().next().map(str::to_string));
    let mut v = crate::join::PeerFacts::default();
    for server in ["mariadbd", "mysqld"] {
        if let Some(line) = first_line(stdout(env, &[server, "--version"]).await) {
            v.mysql_server = Some(line);
            break;
        }
    }
    v.pbx_version = match p.pbx {
        Some(Pbx::Asterisk) => first_line(stdout(env, &["asterisk", "-V"]).await),
        Some(Pbx::Freeswitch) => first_line(stdout(env, &["freeswitch", "-version"]).await),
        None => None,
    };
    if let Some(Storage::Drbd(d)) = &p.storage {
        v.drbd_bytes = stdout(env, &["blockdev", "--getsize64", &d.device]).await.and_then(|o| o.trim().parse().ok());
    }
    v
}

pub fn systemd_is_pid1() -> bool {
    std::fs::read_to_string("/proc/1/comm").is_ok_and(|c| c.trim() == "systemd")
}

/// Gathers every fact the preflight and the questions need. Never fails: what cannot be
/// found out is left empty, and the preflight says so.
pub async fn gather(env: &Env, p: &Partial) -> Facts {
    let mut f = Facts {
        euid: nix::unistd::geteuid().as_raw(),
        uname: nix::sys::utsname::uname().map(|u| u.nodename().to_string_lossy().into_owned()).unwrap_or_default(),
        etc_hostname: std::fs::read_to_string(env.path("/etc/hostname")).ok().map(|s| s.trim().to_string()),
        systemd_pid1: systemd_is_pid1(),
        nonlocal_bind: std::fs::read_to_string("/proc/sys/net/ipv4/ip_nonlocal_bind")
            .ok()
            .map(|s| s.trim().to_string()),
        ..Facts::default()
    };
    if let Ok(text) = std::fs::read_to_string(env.path("/etc/os-release")) {
        let get = |k| os_release(&text, k).unwrap_or_default();
        f.os = Some((get("PRETTY_NAME"), get("ID"), get("VERSION_ID")));
    }
    if let Some(out) = stdout(env, &["ip", "-j", "addr", "show"]).await {
        f.interfaces = parse_ip_addr(&out).unwrap_or_default();
    }
    f.default_gateway =
        stdout(env, &["ip", "-j", "route", "show", "default"]).await.and_then(|o| parse_default_route(&o));
    // The network probes wait on the wire (arping's duplicate-address detection takes a
    // second or two): they run side by side.
    let mut probes = tokio::task::JoinSet::new();
    if let (Some(iface), Some(vip)) = (&p.public_interface, p.vip) {
        if f.interface(iface).is_some() {
            let cmd = Cmd::new(["arping", "-D", "-c", "2", "-w", "3", "-I", iface, &vip.addr.to_string()])
                .timeout(Duration::from_secs(10));
            let runner = env.runner.clone();
            probes.spawn(async move { (None, runner.run(&cmd).await) });
        }
    }
    let mut peers: Vec<(String, IpAddr)> =
        p.heartbeat.iter().flatten().map(|l| (l.interface.clone(), l.peer_address)).collect();
    if let (Some(i), Some(a)) = (&p.public_interface, p.peer_address) {
        peers.push((i.clone(), a));
    }
    for (iface, addr) in peers {
        let cmd = Cmd::new(["ping", "-n", "-q", "-c", "3", "-i", "0.2", "-W", "1", "-I", &iface, &addr.to_string()])
            .timeout(Duration::from_secs(10));
        let runner = env.runner.clone();
        probes.spawn(async move { (Some((iface, addr)), runner.run(&cmd).await) });
    }
    while let Some(Ok((peer, result))) = probes.join_next().await {
        match (peer, result) {
            (Some((iface, addr)), result) => f.peer_answers.push((iface, addr, result.is_ok_and(|o| o.success()))),
            (None, Ok(o)) if o.success() => f.vip_answered_by = Some(None),
            (None, Ok(o)) => {
                f.vip_answered_by =
                    Some(Some(parse_arping_reply(&o.stdout).unwrap_or_else(|| "an unknown host".into())))
            }
            (None, Err(_)) => f.vip_answered_by = None,
        }
    }
    // Reported in the order the links were given, whichever answered first.
    let order: Vec<(String, IpAddr)> = p
        .heartbeat
        .iter()
        .flatten()
        .map(|l| (l.interface.clone(), l.peer_address))
        .chain(p.public_interface.clone().zip(p.peer_address))
        .collect();
    f.peer_answers.sort_by_key(|(i, a, _)| order.iter().position(|o| o.0 == *i && o.1 == *a));
    let procs = running();
    f.time_sync = ["chronyd", "systemd-timesyncd", "ntpd", "openntpd"]
        .iter()
        .find(|n| procs.iter().any(|p| p == *n))
        .map(|n| n.to_string());
    if let Some(Storage::Drbd(d)) = &p.storage {
        let blkid = stdout(env, &["blkid", "-p", "-o", "value", "-s", "TYPE", &d.device]).await;
        f.device = Some(device(&d.device, blkid));
        f.drbd_utils = stdout(env, &["drbdadm", "--version"]).await.and_then(|o| os_release(&o, "DRBDADM_VERSION"));
        f.drbd_module = std::path::Path::new("/sys/module/drbd").exists()
            || env.runner.run(&Cmd::new(["modprobe", "-n", "-q", "drbd"])).await.is_ok_and(|o| o.success());
    }
    let port = p.port.unwrap_or(crate::answers::DEFAULT_PORT).to_string();
    for (proto, port) in [("-Hlnu", port.as_str()), ("-Hlnt", "7788")] {
        if let Some(out) = stdout(env, &["ss", proto, &format!("sport = :{port}")]).await {
            f.busy_ports.extend(
                out.lines()
                    .filter(|l| !l.trim().is_empty())
                    .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" ")),
            );
        }
    }
    f.firewall = firewall(env).await;
    let own = versions(env, p).await;
    (f.mysql_server, f.pbx_version, f.drbd_bytes) = (own.mysql_server, own.pbx_version, own.drbd_bytes);
    for (pbx, paths) in [
        (Pbx::Asterisk, ["/usr/sbin/asterisk", "/etc/asterisk"]),
        (Pbx::Freeswitch, ["/usr/bin/freeswitch", "/etc/freeswitch"]),
    ] {
        if let Some(found) = paths.iter().find(|p| env.path(p).exists()) {
            f.pbx_found.push((pbx, found.to_string()));
        }
    }
    for conf in ["/etc/ha.d/ha.cf", "/etc/corosync/corosync.conf", "/etc/keepalived/keepalived.conf"] {
        if env.path(conf).exists() {
            f.other_ha.push(conf.to_string());
        }
    }
    if let Ok(a) = p.complete() {
        for (key, path) in a.secret_files() {
            let mode =
                std::fs::metadata(env.path(&path.display().to_string())).ok().map(|m| m.permissions().mode() & 0o777);
            f.secrets.push((key, path, mode));
        }
        let replica = matches!(a.mysql, crate::answers::Mysql::Replica);
        for unit in managed_units(a.pbx, replica) {
            if enabled(env, unit).await {
                f.enabled_units.push(unit.to_string());
            }
        }
    }
    f
}

/// The example answers' machine (examples/answers.toml): eth0 public, eth1 heartbeat.
#[cfg(test)]
pub(crate) fn example_interfaces() -> Vec<Interface> {
    [("eth0", "192.168.0.100/24"), ("eth1", "10.1.1.1/24")]
        .into_iter()
        .map(|(name, addr)| Interface { name: name.into(), up: true, addresses: vec![addr.parse().expect("a CIDR")] })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Captured from `ip -j addr show` in a test namespace (iproute2 6.1, Debian 12): two veth
    /// pairs, `hb0`'s peer left down (one interface of the capture removed for brevity).
    const IP_ADDR: &str = r#"[{"ifindex":1,"ifname":"lo","flags":["LOOPBACK","UP","LOWER_UP"],"mtu":65536,"qdisc":"noqueue","operstate":"UNKNOWN","group":"default","txqlen":1000,"link_type":"loopback","address":"00:00:00:00:00:00","broadcast":"00:00:00:00:00:00","addr_info":[{"family":"inet","local":"127.0.0.1","prefixlen":8,"scope":"host","label":"lo","valid_life_time":4294967295,"preferred_life_time":4294967295},{"family":"inet6","local":"::1","prefixlen":128,"scope":"host","valid_life_time":4294967295,"preferred_life_time":4294967295}]},{"ifindex":2,"link":"pub0","ifname":"pub1","flags":["BROADCAST","MULTICAST","UP","LOWER_UP"],"mtu":1500,"qdisc":"noqueue","operstate":"UP","group":"default","txqlen":1000,"link_type":"ether","address":"f6:7b:ba:00:12:bc","broadcast":"ff:ff:ff:ff:ff:ff","addr_info":[{"family":"inet6","local":"fe80::f47b:baff:fe00:12bc","prefixlen":64,"scope":"link","tentative":true,"valid_life_time":4294967295,"preferred_life_time":4294967295}]},{"ifindex":3,"link":"pub1","ifname":"pub0","flags":["BROADCAST","MULTICAST","UP","LOWER_UP"],"mtu":1500,"qdisc":"noqueue","operstate":"UP","group":"default","txqlen":1000,"link_type":"ether","address":"ea:23:5f:c7:4f:ab","broadcast":"ff:ff:ff:ff:ff:ff","addr_info":[{"family":"inet","local":"198.51.100.11","prefixlen":24,"scope":"global","label":"pub0","valid_life_time":4294967295,"preferred_life_time":4294967295},{"family":"inet6","local":"fe80::e823:5fff:fec7:4fab","prefixlen":64,"scope":"link","tentative":true,"valid_life_time":4294967295,"preferred_life_time":4294967295}]},{"ifindex":5,"link":"hb1","ifname":"hb0","flags":["NO-CARRIER","BROADCAST","MULTICAST","UP","M-DOWN"],"mtu":1500,"qdisc":"noqueue","operstate":"LOWERLAYERDOWN","group":"default","txqlen":1000,"link_type":"ether","address":"6a:95:bf:18:01:83","broadcast":"ff:ff:ff:ff:ff:ff","addr_info":[{"family":"inet","local":"203.0.113.11","prefixlen":24,"scope":"global","label":"hb0","valid_life_time":4294967295,"preferred_life_time":4294967295}]}]"#;

    #[test]
    fn interfaces_addresses_and_carrier() {
        let ifs = parse_ip_addr(IP_ADDR).unwrap();
        let names: Vec<(&str, bool)> = ifs.iter().map(|i| (i.name.as_str(), i.up)).collect();
        assert_eq!(names, [("lo", true), ("pub1", true), ("pub0", true), ("hb0", false)]);
        assert_eq!(ifs[2].addresses[0], "198.51.100.11/24".parse().unwrap());
    }

    #[test]
    fn default_gateway_and_arping_reply() {
        let route = r#"[{"dst":"default","gateway":"198.51.100.1","dev":"pub0","flags":[]}]"#;
        assert_eq!(parse_default_route(route), Some("198.51.100.1".parse().unwrap()));
        assert_eq!(parse_default_route("[]"), None);
        // Captured: iputils arping -D (exit 1) when another host holds the address.
        let out = "ARPING 198.51.100.100 from 0.0.0.0 pub0\nUnicast reply from 198.51.100.100 [F6:7B:BA:00:12:BC]  0.521ms\nSent 1 probes (1 broadcast(s))\nReceived 1 response(s)\n";
        assert_eq!(parse_arping_reply(out).as_deref(), Some("F6:7B:BA:00:12:BC"));
    }

    #[test]
    fn nftables_drop_chains_and_our_rules() {
        // Captured from nft 1.0.6 in a test namespace.
        let chains = r#"{"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}}, {"chain": {"family": "inet", "table": "filter", "name": "input", "handle": 1, "type": "filter", "hook": "input", "prio": 0, "policy": "drop"}}]}"#;
        assert_eq!(
            parse_nft_chains(chains),
            Some(NftChain { family: "inet".into(), table: "filter".into(), chain: "input".into() })
        );
        assert_eq!(parse_nft_chains(&chains.replace("\"drop\"", "\"accept\"")), None);
        let listing = "table inet filter {\n\tchain input { # handle 1\n\t\ttype filter hook input priority filter; policy drop;\n\t\tip saddr 203.0.113.12 tcp dport 7788 accept comment \"pbxha\" # handle 3\n\t\tip saddr 203.0.113.12 udp dport 694 accept comment \"pbxha\" # handle 2\n\t\ticmp type echo-reply accept # handle 4\n\t}\n}\n";
        assert_eq!(parse_nft_handles(listing), [3, 2]);
    }

    #[test]
    fn ufw_status_first_line() {
        // Captured from ufw 0.36.2 in a test namespace.
        assert!(ufw_active("Status: active\n\nTo                         Action      From\n--                         ------      ----\n694/udp                    ALLOW       203.0.113.12               # pbxha\n\n"));
        assert!(!ufw_active("Status: inactive\n"));
        assert!(!ufw_active(""));
    }

    #[test]
    fn os_release_values() {
        let text = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_ID=\"12\"\n";
        assert_eq!(os_release(text, "ID").as_deref(), Some("debian"));
        assert_eq!(os_release(text, "VERSION_ID").as_deref(), Some("12"));
        assert_eq!(os_release("DRBDADM_VERSION=9.22.0\n", "DRBDADM_VERSION").as_deref(), Some("9.22.0"));
    }
}
