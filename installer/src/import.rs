//! Import of a heartbeat v1 cluster (`/etc/ha.d/ha.cf`, `haresources`, `authkeys`): its
//! settings become the wizard's defaults and its resource line becomes the group.
//!
//! Directive meanings follow heartbeat's ha.cf(5): times are seconds unless suffixed `ms`,
//! `node` lines list `uname -n` names, haresources' first word is the preferred node and
//! the rest are started left to right (`type::arg::arg`).

use std::net::{IpAddr, Ipv4Addr};

use crate::answers::{Cidr, HeartbeatLink, Partial, Timing};
use crate::render::Resource;

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Imported {
    pub answers: Partial,
    pub group: Vec<Resource>,
    /// Every node name of the `node` lines.
    pub nodes: Vec<String>,
    /// What was not carried over, and why.
    pub notes: Vec<String>,
}

/// The placeholder for an address heartbeat never needed (a `bcast` link names no peer):
/// check-config rejects it, so an imported config cannot be used before it is filled in.
pub const UNKNOWN: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);

/// heartbeat times: `2` is seconds, `500ms` milliseconds.
fn millis(v: &str) -> Option<u64> {
    match v.strip_suffix("ms") {
        Some(ms) => ms.parse().ok(),
        None => v.parse::<f64>().ok().map(|s| (s * 1000.0) as u64),
    }
}

/// Reads the three files' texts (`haresources` and `authkeys` may be absent). `this_node`
/// (`uname -n`) picks which `node` is this one when it is among them.
pub fn import(ha_cf: &str, haresources: Option<&str>, authkeys: Option<&str>, this_node: &str) -> Imported {
    let mut im = Imported::default();
    let (mut keepalive, mut deadtime, mut warntime, mut initdead) = (None, None, None, None);
    let mut links = Vec::new();
    for raw in ha_cf.lines() {
        let line = raw.split('#').next().unwrap_or("").trim();
        let mut words = line.split_whitespace();
        let Some(directive) = words.next() else {
            continue;
        };
        let args: Vec<&str> = words.collect();
        let first = args.first().copied().unwrap_or("");
        match directive {
            "keepalive" => keepalive = millis(first),
            "deadtime" => deadtime = millis(first),
            "warntime" => warntime = millis(first),
            "initdead" => initdead = millis(first),
            "udpport" => im.answers.port = first.parse().ok(),
            "auto_failback" => im.answers.auto_failback = Some(first == "on"),
            "node" => im.nodes.extend(args.iter().map(|s| s.to_string())),
            "bcast" => links.extend(args.iter().map(|i| HeartbeatLink {
                interface: i.to_string(),
                address: None,
                peer_address: UNKNOWN,
                bcast: true,
            })),
            "ucast" => match (args.first(), args.get(1).and_then(|a| a.parse().ok())) {
                (Some(i), Some(peer)) => links.push(HeartbeatLink {
                    interface: i.to_string(),
                    address: None,
                    peer_address: peer,
                    bcast: false,
                }),
                _ => im.notes.push(format!("ha.cf: `{line}` is not `ucast IFACE ADDRESS`")),
            },
            "mcast" => {
                im.notes.push(format!("ha.cf: `{line}`: mcast links are not imported; pbxha uses ucast or bcast"))
            }
            other => im.notes.push(format!("ha.cf: `{other}` has no pbxha equivalent and was left out")),
        }
    }
    if let (Some(interval), Some(deadtime)) = (keepalive, deadtime) {
        im.answers.timing = Some(Timing::Custom {
            interval,
            deadtime,
            // heartbeat's own defaults when the directive is absent: warntime = deadtime/2
            // (ha.cf(5) recommends it well below deadtime), initdead = 2 × deadtime.
            warntime: warntime.unwrap_or(deadtime / 2),
            initdead: initdead.unwrap_or(deadtime * 2),
        });
    }
    if !links.is_empty() {
        im.answers.heartbeat = Some(links);
    }
    let node = im.nodes.iter().find(|n| *n == this_node).or(im.nodes.first()).cloned();
    im.answers.peer = im.nodes.iter().find(|n| Some(*n) != node.as_ref()).cloned();
    im.answers.node = node;
    if let Some(text) = haresources {
        import_haresources(text, &mut im);
    }
    if let Some(text) = authkeys {
        let method = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.starts_with('#'))
            .find_map(|l| l.split_whitespace().nth(1).filter(|_| !l.starts_with("auth")))
            .unwrap_or("unknown");
        im.notes.push(format!(
            "authkeys ({method}) is not reused: pbxha signs heartbeats with HMAC-SHA256 and a new random key in /etc/pbxha/authkey"
        ));
    }
    im
}

fn import_haresources(text: &str, im: &mut Imported) {
    let Some(line) = text.lines().map(|l| l.split('#').next().unwrap_or("").trim()).find(|l| !l.is_empty()) else {
        return;
    };
    let mut words = line.split_whitespace();
    let preferred = words.next().unwrap_or_default();
    if im.answers.auto_failback == Some(true) && !preferred.is_empty() && im.nodes.iter().all(|n| n != preferred) {
        im.notes.push(format!("haresources: preferred node `{preferred}` is not a `node` of ha.cf"));
    }
    for word in words {
        let mut parts = word.split("::");
        let kind = parts.next().unwrap_or_default();
        let args: Vec<&str> = parts.collect();
        match kind {
            "drbddisk" => im.group.push(Resource::Drbd {
                resource: args.first().unwrap_or(&"r0").to_string(),
                syntax: pbxha_replica::drbd::conf::Syntax::V9,
            }),
            "Filesystem" if args.len() >= 2 => im.group.push(Resource::Filesystem {
                device: args[0].to_string(),
                mount_point: args[1].to_string(),
                fstype: args.get(2).unwrap_or(&"ext4").to_string(),
            }),
            "IPaddr" | "IPaddr2" => {
                // IPaddr::ADDRESS[/PREFIX[/IFACE]]
                let mut p = args.first().unwrap_or(&"").split('/');
                let addr = p.next().unwrap_or_default();
                let prefix = p.next().unwrap_or("24");
                let interface = p.next().map(str::to_string).or_else(|| im.answers.public_interface.clone());
                match format!("{addr}/{prefix}").parse::<Cidr>() {
                    Ok(vip) => {
                        im.answers.vip = Some(vip);
                        im.answers.public_interface = interface.clone();
                        im.group
                            .push(Resource::Vip { address: vip.to_string(), interface: interface.unwrap_or_default() });
                    }
                    Err(e) => im.notes.push(format!("haresources: `{word}`: {e}")),
                }
            }
            name => {
                // Unit names cannot carry the script's dots; `kava.py` becomes `kava-py`.
                let clean: String = name
                    .chars()
                    .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '-' })
                    .collect();
                im.group.push(Resource::Service { name: clean.clone(), unit: name.to_string() });
            }
        }
    }
}

#[cfg(test)]
mod tests;
