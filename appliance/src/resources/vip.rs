//! The `vip` resource: the service address that moves with the group.
//!
//! Start: refuse if someone on the segment already answers for the address (when `guard` is
//! on: an ARP probe for IPv4, duplicate address detection for IPv6), add it over netlink, then tell the segment with gratuitous ARP (IPv4) or unsolicited
//! neighbour advertisements (IPv6): `garp-count` of them `garp-interval` apart, as
//! Pacemaker's IPaddr2 does, and again every `garp-refresh` while held. The first goes out
//! before `start` returns; the rest in the background so the group can go on starting.

use std::io;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use pbxha_conf::Reader;
use serde::Serialize;
use tokio::task::JoinHandle;

use crate::config::{Cidr, Config};
use crate::net::arp::{self, ArpSocket};
use crate::net::ndp::{self, NaSocket};
use crate::net::netlink::{Link, Netlink};
use crate::net::Mac;
use crate::resources::{Kind, Parts, Report, Resource, ResourceState};
use crate::Error;

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct VipConfig {
    pub address: Cidr,
    pub interface: String,
    /// Gratuitous ARPs (or unsolicited NAs) sent on takeover: Pacemaker's IPaddr2 sends 5.
    pub garp_count: u32,
    pub garp_interval: Duration,
    /// Re-announce the VIP this often while holding it; zero turns it off.
    pub garp_refresh: Duration,
    /// Probe the VIP with ARP before adding it and refuse if someone answers.
    pub guard: bool,
    /// How long the guard's probes wait for an answer. It is added to every unplanned
    /// takeover (a planned one skips the probe: the peer said it released the address).
    pub guard_wait: Duration,
}

pub const DEFAULT_GARP_COUNT: u32 = 5;
pub const DEFAULT_GARP_INTERVAL: Duration = Duration::from_millis(200);
/// A holder on the same segment answers an ARP probe within a millisecond or two; 100 ms
/// leaves room for a loaded host without doubling a fast failover.
pub const DEFAULT_GUARD_WAIT: Duration = Duration::from_millis(100);

impl Kind for VipConfig {
    fn read(s: &mut Reader) -> Option<Self> {
        // Every key is taken before any is judged, so a typo beside a missing key is named too.
        let address = s.cidr("address", "write an address with its prefix, e.g. 198.51.100.100/24");
        let interface = s.string("interface").unwrap_or_default();
        let garp_count = s.int_or("garp-count", 0, 100, DEFAULT_GARP_COUNT);
        let garp_interval = s.duration_or("garp-interval", DEFAULT_GARP_INTERVAL);
        let garp_refresh = s.duration_or("garp-refresh", Duration::ZERO);
        let guard = s.bool_or("guard", true);
        let guard_wait = s.duration_or("guard-wait", DEFAULT_GUARD_WAIT);
        Some(VipConfig { address: address?, interface, garp_count, garp_interval, garp_refresh, guard, guard_wait })
    }

    fn validate(&self, config: &Config, _: usize, problem: Report) {
        if self.interface.is_empty() {
            return;
        }
        // A VIP outside the subnet of the link on its interface would be unreachable.
        for link in config.links.iter().filter(|l| l.interface.as_deref() == Some(self.interface.as_str())) {
            if link.addresses.values().any(|c| !c.contains(self.address.addr)) {
                problem(
                    "address",
                    format!("{} is outside the subnet of link `{}` on {}", self.address, link.name, self.interface),
                    "the VIP must be in the same subnet as the nodes' addresses on that interface",
                );
            }
        }
    }

    fn describe(&self) -> String {
        format!("{} on {}", self.address, self.interface)
    }

    fn outlives_daemon(&self) -> bool {
        false
    }

    fn build(&self, name: &str, _: &Parts) -> Result<Arc<dyn Resource>, Error> {
        Ok(Arc::new(Vip::new(name.to_string(), self.clone())))
    }
}

/// A virtual IP address on one interface of this node.
pub struct Vip {
    name: String,
    config: VipConfig,
    /// The task sending the rest of the announcement burst and the periodic refreshes.
    /// Replaced by every new burst, aborted on stop so a node that gave the address away
    /// never announces it again.
    announcer: Mutex<Option<JoinHandle<()>>>,
}

/// One way of telling neighbours "this address is at this MAC".
enum Announcer {
    Arp { socket: ArpSocket, mac: Mac, ip: std::net::Ipv4Addr },
    Na(NaSocket),
}

impl Announcer {
    fn send(&self) -> io::Result<()> {
        match self {
            Announcer::Arp { socket, mac, ip } => socket.announce(*mac, *ip),
            Announcer::Na(socket) => socket.send(),
        }
    }
}

/// An OS error in words, with the capability to grant when the kernel said EPERM.
fn describe(err: &io::Error, capability: &str) -> String {
    if err.raw_os_error() == Some(libc::EPERM) {
        format!("{err} (needs root or {capability})")
    } else {
        err.to_string()
    }
}

impl Vip {
    pub fn new(name: impl Into<String>, config: VipConfig) -> Self {
        Vip { name: name.into(), config, announcer: Mutex::new(None) }
    }

    fn fail(&self, message: String) -> Error {
        Error::Resource { resource: self.name.clone(), message }
    }

    fn netlink(&self) -> Result<Netlink, Error> {
        Netlink::open().map_err(|e| self.fail(format!("opening a netlink socket: {}", describe(&e, "CAP_NET_ADMIN"))))
    }

    /// The configured interface; `None` when it does not exist.
    async fn find_link(&self, netlink: &Netlink) -> Result<Option<Link>, Error> {
        match netlink.link_by_name(&self.config.interface).await {
            Ok(link) => Ok(Some(link)),
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(self.fail(format!(
                "looking up interface `{}`: {}",
                self.config.interface,
                describe(&e, "CAP_NET_ADMIN")
            ))),
        }
    }

    async fn link(&self, netlink: &Netlink) -> Result<Link, Error> {
        self.find_link(netlink).await?.ok_or_else(|| {
            self.fail(format!("interface `{}` does not exist (VIP {})", self.config.interface, self.config.address))
        })
    }

    /// Whether `link` carries the VIP. It being on any other interface is an error: adding
    /// it a second time would leave the node answering for it twice, and stopping would then
    /// leave it behind.
    async fn held_on(&self, netlink: &Netlink, link: &Link) -> Result<bool, Error> {
        let ip = self.config.address.addr;
        let indexes = netlink
            .interfaces_with(ip)
            .await
            .map_err(|e| self.fail(format!("listing addresses for {ip}: {}", describe(&e, "CAP_NET_ADMIN"))))?;
        if let Some(&other) = indexes.iter().find(|&&i| i != link.index) {
            let other = match netlink.link_by_index(other).await {
                Ok(l) => l.name,
                Err(_) => format!("#{other}"),
            };
            return Err(self.fail(format!(
                "VIP {ip} is already on interface `{other}`, not `{}`; remove it there first",
                link.name
            )));
        }
        Ok(!indexes.is_empty())
    }

    /// Whether another host answers for the VIP now: the guard's probe alone, adding
    /// nothing. A refused takeover looks again with this until the address falls silent.
    pub async fn answered(&self) -> Result<bool, Error> {
        let netlink = self.netlink()?;
        let link = self.link(&netlink).await?;
        if self.held_on(&netlink, &link).await? {
            return Ok(false);
        }
        let mac = self.mac(&link)?;
        match self.guard(&link, mac).await {
            Ok(()) => Ok(false),
            Err(Error::VipConflict { .. }) => Ok(true),
            Err(e) => Err(e),
        }
    }

    /// The split-brain guard: refuse the address when another host answers for it, to an
    /// ARP probe (IPv4) or a duplicate address detection probe (IPv6).
    async fn guard(&self, link: &Link, mac: Mac) -> Result<(), Error> {
        let (ip, window) = (self.config.address.addr, self.config.guard_wait);
        let (probe, holder) = match ip {
            IpAddr::V4(v4) => ("ARP probe", arp::probe(link.index, mac, v4, window).await),
            IpAddr::V6(v6) => ("duplicate address detection", ndp::dad(link.index, mac, v6, window).await),
        };
        let holder = holder
            .map_err(|e| self.fail(format!("{probe} for {ip} on `{}`: {}", link.name, describe(&e, "CAP_NET_RAW"))))?;
        match holder {
            None => Ok(()),
            Some(holder) => {
                Err(Error::VipConflict { resource: self.name.clone(), vip: ip.to_string(), holder: holder.to_string() })
            }
        }
    }

    fn mac(&self, link: &Link) -> Result<Mac, Error> {
        link.mac.filter(|m| *m != Mac::ZERO).ok_or_else(|| {
            self.fail(format!(
                "interface `{}` has no Ethernet address to announce {} with",
                link.name, self.config.address.addr
            ))
        })
    }

    /// Sends the first announcement now and hands the rest of the burst, then the periodic
    /// refresh, to a background task that replaces any earlier one.
    fn announce(&self, link: &Link, mac: Mac) -> Result<(), Error> {
        let announcer = match self.config.address.addr {
            IpAddr::V4(ip) => ArpSocket::open(link.index).map(|socket| Announcer::Arp { socket, mac, ip }),
            IpAddr::V6(ip) => NaSocket::open(link.index, ip, mac).map(Announcer::Na),
        }
        .map_err(|e| {
            self.fail(format!("opening a socket on `{}` to announce: {}", link.name, describe(&e, "CAP_NET_RAW")))
        })?;
        let count = self.config.garp_count;
        if count > 0 {
            announcer
                .send()
                .map_err(|e| self.fail(format!("announcing {} on `{}`: {e}", self.config.address.addr, link.name)))?;
        }
        let (interval, refresh) = (self.config.garp_interval, self.config.garp_refresh);
        let (resource, address) = (self.name.clone(), self.config.address.addr);
        let task = tokio::spawn(async move {
            let send = |what: &str| {
                if let Err(e) = announcer.send() {
                    tracing::warn!(%resource, %address, error = %e, "{what} failed");
                }
            };
            for _ in 1..count {
                tokio::time::sleep(interval).await;
                send("announcement");
            }
            if refresh > Duration::ZERO {
                loop {
                    tokio::time::sleep(refresh).await;
                    send("announcement refresh");
                }
            }
        });
        self.replace_announcer(Some(task));
        Ok(())
    }

    fn replace_announcer(&self, task: Option<JoinHandle<()>>) {
        let mut slot = self.announcer.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(old) = std::mem::replace(&mut *slot, task) {
            old.abort();
        }
    }
}

impl Vip {
    /// Adds and announces the address; with `guard`, first makes sure nobody else answers
    /// for it.
    async fn start_with(&self, guard: bool) -> Result<(), Error> {
        let netlink = self.netlink()?;
        let link = self.link(&netlink).await?;
        let mac = self.mac(&link)?;
        // Holding it already (a restart of the daemon, a repeated start): probing would
        // only find ourselves, so skip straight to announcing.
        if !self.held_on(&netlink, &link).await? {
            if guard {
                self.guard(&link, mac).await?;
            }
            netlink.add_address(link.index, self.config.address, self.config.address.addr.is_ipv6()).await.map_err(
                |e| {
                    self.fail(format!(
                        "adding {} to `{}`: {}",
                        self.config.address,
                        link.name,
                        describe(&e, "CAP_NET_ADMIN")
                    ))
                },
            )?;
        }
        self.announce(&link, mac)
    }
}

impl Drop for Vip {
    fn drop(&mut self) {
        self.replace_announcer(None);
    }
}

#[async_trait]
impl Resource for Vip {
    fn name(&self) -> &str {
        &self.name
    }

    async fn start(&self) -> Result<(), Error> {
        self.start_with(self.config.guard).await
    }

    async fn start_released(&self) -> Result<(), Error> {
        // The peer has told us (authenticated) that it released the group: an ARP probe
        // could only come back empty, and would cost the whole probe window.
        self.start_with(false).await
    }

    async fn stop(&self) -> Result<(), Error> {
        self.replace_announcer(None);
        let netlink = self.netlink()?;
        // No interface, no address: stopped is what the caller wants.
        let Some(link) = self.find_link(&netlink).await? else {
            return Ok(());
        };
        netlink.remove_address(link.index, self.config.address.addr).await.map_err(|e| {
            self.fail(format!(
                "removing {} from `{}`: {}",
                self.config.address.addr,
                link.name,
                describe(&e, "CAP_NET_ADMIN")
            ))
        })
    }

    async fn monitor(&self) -> Result<ResourceState, Error> {
        let netlink = self.netlink()?;
        let Some(link) = self.find_link(&netlink).await? else {
            return Ok(ResourceState::Stopped);
        };
        let indexes = netlink.interfaces_with(self.config.address.addr).await.map_err(|e| {
            self.fail(format!("listing addresses for {}: {}", self.config.address.addr, describe(&e, "CAP_NET_ADMIN")))
        })?;
        Ok(if indexes.contains(&link.index) { ResourceState::Running } else { ResourceState::Stopped })
    }

    async fn reannounce(&self) -> Result<(), Error> {
        let netlink = self.netlink()?;
        let link = self.link(&netlink).await?;
        if !self.held_on(&netlink, &link).await? {
            return Err(self.fail(format!("not announcing {}: it is not on `{}`", self.config.address.addr, link.name)));
        }
        let mac = self.mac(&link)?;
        self.announce(&link, mac)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use pbxha_lab::testns::{prerequisites_met, TestNet, HOST_IF};

    const NODE: &str = "node";
    const CLIENT: &str = "client";
    const OTHER: &str = "other";
    /// What the client believed before the takeover: some other, now gone, holder.
    const OLD_MAC: &str = "02:00:00:00:00:99";

    fn config(address: &str, guard: bool) -> VipConfig {
        VipConfig {
            address: address.parse().unwrap(),
            interface: HOST_IF.to_string(),
            garp_count: 3,
            garp_interval: Duration::from_millis(200),
            garp_refresh: Duration::ZERO,
            guard,
            guard_wait: crate::config::DEFAULT_GUARD_WAIT,
        }
    }

    fn net(prefix: &str) -> TestNet {
        TestNet::new(prefix, &[(NODE, "198.51.100.11/24"), (OTHER, "198.51.100.12/24"), (CLIENT, "198.51.100.20/24")])
            .unwrap()
    }

    fn mac_of(net: &TestNet, host: &str) -> Mac {
        let out = net.ip(host, &["-o", "link", "show", HOST_IF]).unwrap();
        let mut words = out.split_whitespace().skip_while(|w| *w != "link/ether");
        words.nth(1).and_then(|m| m.parse().ok()).unwrap_or_else(|| panic!("no MAC in `{out}`"))
    }

    /// Polls the client's neighbour entry for `ip` until it shows `mac`, for up to 10 s.
    fn wait_for_neighbour(net: &TestNet, ip: &str, mac: Mac) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let entry = net.ip(CLIENT, &["neigh", "show", ip, "dev", HOST_IF]).unwrap();
            if entry.contains(&mac.to_string()) || Instant::now() > deadline {
                return entry;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    #[test]
    fn add_and_remove_are_idempotent_and_visible() {
        if !prerequisites_met("add_and_remove_are_idempotent_and_visible") {
            return;
        }
        let net = net("vipidem");
        let vip = std::sync::Arc::new(Vip::new("vip", config("198.51.100.50/24", false)));
        let states = net
            .run_in(NODE, {
                let vip = vip.clone();
                move || async move {
                    let before = vip.monitor().await.unwrap();
                    vip.start().await.unwrap();
                    vip.start().await.unwrap();
                    (before, vip.monitor().await.unwrap())
                }
            })
            .unwrap();
        assert_eq!(states, (ResourceState::Stopped, ResourceState::Running));
        let shown = net.ip(NODE, &["-o", "addr", "show", "dev", HOST_IF]).unwrap();
        assert_eq!(shown.matches("198.51.100.50/24").count(), 1, "{shown}");

        let after = net
            .run_in(NODE, {
                let vip = vip.clone();
                move || async move {
                    vip.stop().await.unwrap();
                    vip.stop().await.unwrap();
                    vip.monitor().await.unwrap()
                }
            })
            .unwrap();
        assert_eq!(after, ResourceState::Stopped);
        let shown = net.ip(NODE, &["-o", "addr", "show", "dev", HOST_IF]).unwrap();
        assert!(!shown.contains("198.51.100.50"), "{shown}");

        // The address on another interface of the node: refuse, naming it.
        net.ip(NODE, &["addr", "add", "198.51.100.50/32", "dev", "lo"]).unwrap();
        let err = net
            .run_in(NODE, {
                let vip = vip.clone();
                move || async move { vip.start().await }
            })
            .unwrap()
            .unwrap_err()
            .to_string();
        assert!(err.contains("`vip`") && err.contains("198.51.100.50") && err.contains("`lo`"), "{err}");
    }

    #[test]
    fn gratuitous_arp_moves_the_clients_neighbour_entry() {
        if !prerequisites_met("gratuitous_arp_moves_the_clients_neighbour_entry") {
            return;
        }
        let net = net("vipgarp");
        // With arp_accept=0 a gratuitous ARP only updates an entry that exists; and an entry
        // changed less than locktime (1 s) ago may ignore it. Prime it, then wait that out.
        net.ip(CLIENT, &["neigh", "replace", "198.51.100.50", "lladdr", OLD_MAC, "dev", HOST_IF, "nud", "stale"])
            .unwrap();
        std::thread::sleep(Duration::from_millis(1500));
        let node_mac = mac_of(&net, NODE);
        let start_took = net
            .run_in(NODE, || async {
                let vip = Vip::new("vip", config("198.51.100.50/24", false));
                let started = Instant::now();
                vip.start().await.unwrap();
                let start_took = started.elapsed();
                // Let the background part of the burst go out before the runtime ends.
                tokio::time::sleep(Duration::from_millis(700)).await;
                start_took
            })
            .unwrap();
        eprintln!("start() with the first gratuitous ARP took {start_took:?}");
        let entry = wait_for_neighbour(&net, "198.51.100.50", node_mac);
        assert!(entry.contains(&node_mac.to_string()), "client still has `{entry}`, expected {node_mac}");
    }

    #[test]
    fn guard_refuses_a_vip_another_host_holds() {
        if !prerequisites_met("guard_refuses_a_vip_another_host_holds") {
            return;
        }
        let net = net("vipguard");
        net.ip(OTHER, &["addr", "add", "198.51.100.50/24", "dev", HOST_IF]).unwrap();
        let other_mac = mac_of(&net, OTHER);
        let (taken, free) = net
            .run_in(NODE, || async {
                let taken = Vip::new("vip", config("198.51.100.50/24", true)).start().await;
                let free = Vip::new("vip2", config("198.51.100.51/24", true)).start().await;
                (taken, free)
            })
            .unwrap();
        match taken {
            Err(Error::VipConflict { resource, vip, holder }) => {
                assert_eq!((resource.as_str(), vip.as_str()), ("vip", "198.51.100.50"));
                assert_eq!(holder, other_mac.to_string());
            }
            other => panic!("expected a VIP conflict, got {other:?}"),
        }
        free.unwrap();
        let shown = net.ip(NODE, &["-o", "addr", "show", "dev", HOST_IF]).unwrap();
        assert!(!shown.contains("198.51.100.50/24") && shown.contains("198.51.100.51/24"), "{shown}");
        // After an explicit hand-over the peer has released the address: no probe, no wait.
        let (released, took) = net
            .run_in(NODE, || async {
                let began = std::time::Instant::now();
                let r = Vip::new("vip", config("198.51.100.50/24", true)).start_released().await;
                (r, began.elapsed())
            })
            .unwrap();
        released.unwrap();
        assert!(took < crate::config::DEFAULT_GUARD_WAIT, "start_released probed: took {took:?}");
    }

    #[test]
    fn ipv6_vip_is_usable_at_once_and_advertised() {
        if !prerequisites_met("ipv6_vip_is_usable_at_once_and_advertised") {
            return;
        }
        let net = net("vip6");
        // RFC 3849 documentation prefix, inside the test's own namespaces.
        let vip = "2001:db8::50";
        net.ip(CLIENT, &["-6", "neigh", "replace", vip, "lladdr", OLD_MAC, "dev", HOST_IF, "nud", "stale"]).unwrap();
        let node_mac = mac_of(&net, NODE);
        net.run_in(NODE, move || async move {
            let vip = Vip::new("vip6", config(&format!("{vip}/64"), true));
            vip.start().await.unwrap();
            assert_eq!(vip.monitor().await.unwrap(), ResourceState::Running);
            tokio::time::sleep(Duration::from_millis(700)).await;
        })
        .unwrap();
        let shown = net.ip(NODE, &["-6", "-o", "addr", "show", "dev", HOST_IF]).unwrap();
        let line = shown.lines().find(|l| l.contains(vip)).unwrap_or_else(|| panic!("{vip} missing: {shown}"));
        assert!(line.contains("nodad") && !line.contains("tentative"), "{line}");
        let entry = wait_for_neighbour(&net, vip, node_mac);
        assert!(entry.contains(&node_mac.to_string()), "client still has `{entry}`, expected {node_mac}");
    }

    #[test]
    fn guard_refuses_an_ipv6_vip_another_host_holds() {
        if !prerequisites_met("guard_refuses_an_ipv6_vip_another_host_holds") {
            return;
        }
        let net = net("vipguard6");
        // RFC 3849 documentation prefix, inside the test's own namespaces. `nodad` makes
        // the other host's address usable at once, as a holder's is.
        net.ip(OTHER, &["-6", "addr", "add", "2001:db8::50/64", "dev", HOST_IF, "nodad"]).unwrap();
        let other_mac = mac_of(&net, OTHER);
        let (taken, took, free) = net
            .run_in(NODE, || async {
                let began = Instant::now();
                let taken = Vip::new("vip6", config("2001:db8::50/64", true)).start().await;
                let took = began.elapsed();
                let free = Vip::new("vip6b", config("2001:db8::51/64", true)).start().await;
                (taken, took, free)
            })
            .unwrap();
        match taken {
            Err(Error::VipConflict { resource, vip, holder }) => {
                assert_eq!((resource.as_str(), vip.as_str()), ("vip6", "2001:db8::50"));
                assert_eq!(holder, other_mac.to_string());
            }
            other => panic!("expected a VIP conflict, got {other:?}"),
        }
        // Answered within the probe window (`guard-wait`), not after RFC 4862's second.
        assert!(took < crate::config::DEFAULT_GUARD_WAIT * 3, "took {took:?}");
        free.unwrap();
        let shown = net.ip(NODE, &["-6", "-o", "addr", "show", "dev", HOST_IF]).unwrap();
        assert!(!shown.contains("2001:db8::50/64") && shown.contains("2001:db8::51/64"), "{shown}");
    }

    #[test]
    fn refresh_repeats_announcements_until_stop() {
        if !prerequisites_met("refresh_repeats_announcements_until_stop") {
            return;
        }
        let net = std::sync::Arc::new(net("viprefresh"));
        let vip_ip = std::net::Ipv4Addr::new(198, 51, 100, 50);
        // The client records when each announcement of the VIP arrives.
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let listener = std::thread::spawn({
            let net = net.clone();
            move || {
                net.run_in(CLIENT, move || async move {
                    let link = Netlink::open().unwrap().link_by_name(HOST_IF).await.unwrap();
                    let socket = ArpSocket::open(link.index).unwrap();
                    ready_tx.send(()).unwrap();
                    let mut arrivals = Vec::new();
                    let mut buf = [0u8; 1514];
                    let listen = async {
                        loop {
                            let n = socket.recv(&mut buf).await.unwrap();
                            if let Some(arp) = arp::Arp::parse(&buf[..n]) {
                                if arp.sender_ip == vip_ip && arp.target_ip == vip_ip {
                                    arrivals.push(Instant::now());
                                }
                            }
                        }
                    };
                    let _ = tokio::time::timeout(Duration::from_secs(4), listen).await;
                    arrivals
                })
            }
        });
        ready_rx.recv_timeout(Duration::from_secs(20)).unwrap();
        let stopped_at = net
            .run_in(NODE, || async {
                let mut cfg = config("198.51.100.50/24", false);
                cfg.garp_count = 2;
                cfg.garp_interval = Duration::from_millis(100);
                cfg.garp_refresh = Duration::from_millis(300);
                let vip = Vip::new("vip", cfg);
                vip.start().await.unwrap();
                tokio::time::sleep(Duration::from_millis(1300)).await;
                vip.stop().await.unwrap();
                let stopped_at = Instant::now();
                // Would the refresh task survive stop, it would keep sending here.
                tokio::time::sleep(Duration::from_millis(1000)).await;
                stopped_at
            })
            .unwrap();
        let arrivals = listener.join().unwrap().unwrap();
        let before = arrivals.iter().filter(|t| **t <= stopped_at).count();
        // Slack for a frame sent just before stop whose arrival was recorded late.
        let late = arrivals.iter().filter(|t| **t > stopped_at + Duration::from_millis(250)).count();
        // 2 in the burst, then one every 300 ms for about a second.
        assert!(before >= 4, "only {before} announcements while held");
        assert_eq!(late, 0, "announcements after stop");
    }

    #[test]
    fn permission_errors_name_the_capability() {
        let eperm = io::Error::from_raw_os_error(libc::EPERM);
        assert!(describe(&eperm, "CAP_NET_RAW").ends_with("(needs root or CAP_NET_RAW)"));
        let enodev = io::Error::from_raw_os_error(libc::ENODEV);
        assert_eq!(describe(&enodev, "CAP_NET_RAW"), enodev.to_string());
    }

    #[tokio::test]
    async fn missing_interface_is_a_clear_error_and_stop_succeeds() {
        // Read-only netlink queries in the test's own namespace: no root needed.
        let mut cfg = config("198.51.100.50/24", true);
        cfg.interface = "pbxhanosuch0".to_string();
        let vip = Vip::new("vip", cfg);
        let err = vip.start().await.unwrap_err().to_string();
        assert!(
            err.contains("`vip`") && err.contains("`pbxhanosuch0` does not exist") && err.contains("198.51.100.50"),
            "{err}"
        );
        assert_eq!(vip.monitor().await.unwrap(), ResourceState::Stopped);
        vip.stop().await.unwrap();
    }
}
