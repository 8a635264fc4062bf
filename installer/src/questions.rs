//! The wizard's questions: at most twelve, each with a default detected from the facts (or
//! an imported heartbeat config), and each answer checked at once so a wrong one is asked
//! again with its reason. Pure: the terminal loop lives in the CLI.

use std::net::IpAddr;
use std::path::PathBuf;

use crate::answers::{Cidr, DrbdAnswers, HeartbeatLink, Mysql, Partial, Pbx, Storage, Timing};
use crate::facts::Facts;

/// One question: the key it answers (as in answers.toml) and what the operator reads.
pub struct Question {
    pub key: &'static str,
    pub prompt: &'static str,
}

pub const QUESTIONS: &[Question] = &[
    Question { key: "node", prompt: "This node's name (uname -n)" },
    Question { key: "peer", prompt: "The peer's name (its uname -n)" },
    Question { key: "public.interface", prompt: "Public interface (where the VIP lives)" },
    Question { key: "public.vip", prompt: "VIP with prefix, e.g. 192.168.0.105/24" },
    Question { key: "public.peer-address", prompt: "The peer's address on the public interface" },
    Question { key: "heartbeat", prompt: "Heartbeat links as IFACE PEER-ADDRESS, comma-separated (or none)" },
    Question { key: "ping", prompt: "Ping targets (tie-breakers), space-separated (or none)" },
    Question { key: "pbx", prompt: "PBX: asterisk or freeswitch" },
    Question { key: "storage", prompt: "Storage: none, or drbd DEVICE" },
    Question { key: "mysql", prompt: "MySQL: none, replica, or master-master ADMIN-PASSWORD-FILE" },
    Question { key: "mail", prompt: "Alert mail: none, or SERVER PORT starttls|tls|none TO [USER PASSWORD-FILE]" },
    Question { key: "timing", prompt: "Timing profile: default, fast, or INTERVAL/DEADTIME/WARNTIME/INITDEAD in ms" },
];

/// A second interface with an address, offered first for the heartbeat.
fn other_nics<'a>(p: &Partial, f: &'a Facts) -> impl Iterator<Item = &'a crate::facts::Interface> {
    let public = p.public_interface.clone();
    f.interfaces.iter().filter(move |i| i.name != "lo" && Some(&i.name) != public.as_ref() && !i.addresses.is_empty())
}

/// The default offered for `key`, when one can be detected.
pub fn default(key: &str, p: &Partial, f: &Facts) -> Option<String> {
    match key {
        "node" => Some(f.uname.clone()),
        "public.interface" => f
            .interfaces
            .iter()
            .find(|i| f.default_gateway.is_some_and(|g| i.addresses.iter().any(|a| a.contains(g))))
            .or_else(|| f.interfaces.iter().find(|i| i.name != "lo" && !i.addresses.is_empty()))
            .map(|i| i.name.clone()),
        "ping" => Some(f.default_gateway.map_or("none".into(), |g| g.to_string())),
        "pbx" => f.pbx_found.first().map(|(p, _)| p.name().to_string()),
        "storage" => Some("none".into()),
        "mysql" => Some(
            if f.mysql_server.is_some() && matches!(p.storage, Some(Storage::Drbd(_))) { "replica" } else { "none" }
                .into(),
        ),
        "mail" => Some("none".into()),
        "timing" => Some("default".into()),
        _ => None,
    }
}

/// An answer `p` already holds (from an imported heartbeat cluster), written as the line
/// [`answer`] reads back: offered as the default instead of a detected one.
pub fn shown(key: &str, p: &Partial) -> Option<String> {
    let ips = |v: &[IpAddr]| {
        if v.is_empty() {
            "none".to_string()
        } else {
            v.iter().map(ToString::to_string).collect::<Vec<_>>().join(" ")
        }
    };
    match key {
        "node" => p.node.clone(),
        "peer" => p.peer.clone(),
        "public.interface" => p.public_interface.clone(),
        "public.vip" => p.vip.map(|v| v.to_string()),
        "public.peer-address" => p.peer_address.map(|a| a.to_string()),
        // A bcast link names no peer address: nothing to offer.
        "heartbeat" => {
            p.heartbeat.as_ref().filter(|links| links.iter().all(|l| !l.peer_address.is_unspecified())).map(|links| {
                links.iter().map(|l| format!("{} {}", l.interface, l.peer_address)).collect::<Vec<_>>().join(", ")
            })
        }
        "ping" => p.ping.as_deref().map(ips),
        "pbx" => p.pbx.map(|x| x.name().to_string()),
        "timing" => p.timing.map(|t| match t {
            Timing::Default => "default".into(),
            Timing::Fast => "fast".into(),
            Timing::Custom { interval, deadtime, warntime, initdead } => {
                format!("{interval}/{deadtime}/{warntime}/{initdead}")
            }
        }),
        _ => None,
    }
}

/// What to show beside a question that has no default: for the heartbeat, the second
/// interfaces, offered first because a link apart from the public LAN is what survives a
/// switch failure.
pub fn hint(key: &str, p: &Partial, f: &Facts) -> Option<String> {
    match key {
        "heartbeat" => {
            let nics: Vec<String> = other_nics(p, f).map(|i| format!("{} ({})", i.name, i.addresses[0])).collect();
            (!nics.is_empty()).then(|| format!("second interfaces here: {}", nics.join(", ")))
        }
        _ => None,
    }
}

/// Records the operator's answer to `key`, or says what is wrong with it.
pub fn answer(key: &str, line: &str, p: &mut Partial, f: &Facts) -> Result<(), String> {
    let line = line.trim();
    let words: Vec<&str> = line.split_whitespace().collect();
    let word = |w: &str| -> Result<String, String> {
        match !w.is_empty() && w.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
            true => Ok(w.to_string()),
            false => Err(format!("`{w}` is not a name (letters, digits, -, _, .)")),
        }
    };
    let ip = |w: &str| w.parse::<IpAddr>().map_err(|_| format!("`{w}` is not an IP address"));
    match key {
        "node" => p.node = Some(word(line)?),
        "peer" => {
            let peer = word(line)?;
            if p.node.as_deref() == Some(&peer) {
                return Err("the peer needs its own name".into());
            }
            p.peer = Some(peer);
        }
        "public.interface" => {
            let nic = word(line)?;
            let known = f.interface(&nic).ok_or_else(|| format!("{nic} does not exist here"))?;
            p.public_address = known.addresses.iter().find(|a| a.addr.is_ipv4()).copied();
            p.public_interface = Some(nic);
        }
        "public.vip" => {
            let vip = Cidr::with_prefix(line)?;
            if let Some(own) = p.public_address {
                if !own.contains(vip.addr) {
                    return Err(format!(
                        "{} is outside {}'s subnet {own}",
                        vip.addr,
                        p.public_interface.as_deref().unwrap_or("the interface")
                    ));
                }
                if own.addr == vip.addr {
                    return Err("that is this node's own address; the VIP must be unused".into());
                }
            }
            p.vip = Some(vip);
        }
        "public.peer-address" => {
            let addr = ip(line)?;
            if p.public_address.is_some_and(|own| !own.contains(addr)) {
                return Err(format!("{addr} is outside the public subnet"));
            }
            p.peer_address = Some(addr);
        }
        "heartbeat" => {
            let mut links = Vec::new();
            for part in line.split(',').map(str::trim).filter(|s| !s.is_empty() && *s != "none") {
                let w: Vec<&str> = part.split_whitespace().collect();
                let [nic, peer] = w[..] else { return Err(format!("`{part}` is not IFACE PEER-ADDRESS")) };
                let iface = f.interface(nic).ok_or_else(|| format!("{nic} does not exist here"))?;
                let peer = ip(peer)?;
                let own = iface.addresses.iter().find(|a| a.contains(peer)).copied();
                if own.is_none() {
                    return Err(format!("{peer} is not in a subnet of {nic}"));
                }
                links.push(HeartbeatLink {
                    interface: nic.to_string(),
                    address: own,
                    peer_address: peer,
                    bcast: false,
                });
            }
            p.heartbeat = Some(links);
        }
        "ping" => p.ping = Some(words.iter().filter(|w| **w != "none").map(|w| ip(w)).collect::<Result<_, _>>()?),
        "pbx" => {
            p.pbx = Some(match line {
                "asterisk" => Pbx::Asterisk,
                "freeswitch" => Pbx::Freeswitch,
                other => return Err(format!("`{other}`: answer asterisk or freeswitch")),
            })
        }
        "storage" => {
            p.storage = Some(match words[..] {
                ["none"] => Storage::None,
                ["drbd", device] if device.starts_with("/dev/") => Storage::Drbd(DrbdAnswers {
                    device: device.into(),
                    wipe: false,
                    resource: crate::answers::DEFAULT_RESOURCE.into(),
                    drbd_device: crate::answers::DEFAULT_DRBD_DEVICE.into(),
                    syntax: pbxha_replica::drbd::conf::Syntax::V9,
                }),
                _ => return Err("answer `none` or `drbd /dev/DEVICE`".into()),
            })
        }
        "mysql" => {
            p.mysql = Some(match words[..] {
                ["none"] => Mysql::None,
                ["replica"] if !matches!(p.storage, Some(Storage::Drbd(_))) => {
                    return Err(
                        "replica mode keeps the datadir on DRBD: answer storage drbd first, or master-master".into()
                    )
                }
                ["replica"] => Mysql::Replica,
                ["master-master", file] if file.starts_with('/') => {
                    Mysql::MasterMaster { admin_password_file: PathBuf::from(file) }
                }
                _ => return Err("answer none, replica, or master-master /path/of/a/0600/password-file".into()),
            })
        }
        "mail" => {
            p.mail = Some(match words[..] {
                ["none"] => None,
                [server, port, security, to, ref auth @ ..] if auth.is_empty() || auth.len() == 2 => {
                    let mut t = toml::Table::new();
                    t.insert("server".into(), server.into());
                    t.insert(
                        "port".into(),
                        toml::Value::Integer(port.parse().map_err(|_| format!("`{port}` is not a port"))?),
                    );
                    t.insert("security".into(), security.into());
                    t.insert("from".into(), format!("pbxha <{to}>").into());
                    t.insert("to".into(), toml::Value::Array(vec![to.into()]));
                    if let [user, file] = auth {
                        t.insert("username".into(), (*user).into());
                        t.insert("password-file".into(), (*file).into());
                    }
                    pbxha_watchdog::config::parse_mail(&t, "mail")
                        .map_err(|p| p.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))?;
                    Some(t)
                }
                _ => return Err("answer none, or SERVER PORT SECURITY TO [USER PASSWORD-FILE]".into()),
            })
        }
        "timing" => {
            p.timing = Some(match line {
                "default" => Timing::Default,
                "fast" => Timing::Fast,
                custom => match custom.split('/').map(str::parse::<u64>).collect::<Result<Vec<_>, _>>().as_deref() {
                    Ok(&[interval, deadtime, warntime, initdead]) => {
                        Timing::Custom { interval, deadtime, warntime, initdead }
                    }
                    _ => {
                        return Err(format!(
                            "`{custom}`: answer default, fast, or four numbers of ms like 2000/30000/10000/120000"
                        ))
                    }
                },
            })
        }
        other => return Err(format!("no question `{other}`")),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> Facts {
        Facts {
            uname: "pbx1".into(),
            interfaces: crate::facts::example_interfaces(),
            default_gateway: Some("192.168.0.1".parse().unwrap()),
            pbx_found: vec![(Pbx::Asterisk, "/etc/asterisk".into())],
            ..Facts::default()
        }
    }

    #[test]
    fn defaults_come_from_the_facts() {
        let f = facts();
        let p = Partial::default();
        assert_eq!(default("node", &p, &f).as_deref(), Some("pbx1"));
        assert_eq!(default("public.interface", &p, &f).as_deref(), Some("eth0"));
        assert_eq!(default("ping", &p, &f).as_deref(), Some("192.168.0.1"));
        assert_eq!(default("pbx", &p, &f).as_deref(), Some("asterisk"));
        assert!(QUESTIONS.len() <= 12);
    }

    #[test]
    fn a_vip_outside_the_subnet_is_refused_with_the_reason() {
        let f = facts();
        let mut p = Partial::default();
        answer("public.interface", "eth0", &mut p, &f).unwrap();
        let err = answer("public.vip", "10.9.9.9/24", &mut p, &f).unwrap_err();
        assert!(err.contains("outside eth0's subnet 192.168.0.100/24"), "{err}");
        assert!(p.vip.is_none());
        answer("public.vip", "192.168.0.105/24", &mut p, &f).unwrap();
        assert_eq!(p.vip, Some("192.168.0.105/24".parse().unwrap()));
    }

    #[test]
    fn imported_answers_are_offered_as_lines_that_read_back() {
        let f = facts();
        let im = crate::import::import(
            "keepalive 2\ndeadtime 30\nucast eth1 10.1.1.2\nnode pbx1 pbx2\n",
            Some("pbx1 IPaddr::192.168.0.105/24/eth0 asterisk\n"),
            None,
            "pbx1",
        );
        let mut p = Partial::default();
        for key in ["node", "peer", "public.interface", "public.vip", "heartbeat", "timing"] {
            let line = shown(key, &im.answers).unwrap_or_else(|| panic!("nothing offered for {key}"));
            answer(key, &line, &mut p, &f).unwrap_or_else(|e| panic!("{key} = {line}: {e}"));
        }
        assert_eq!((p.node.as_deref(), p.peer.as_deref(), p.vip), (Some("pbx1"), Some("pbx2"), im.answers.vip));
        assert_eq!(p.timing, im.answers.timing);
        assert_eq!(p.heartbeat.unwrap()[0].peer_address, "10.1.1.2".parse::<IpAddr>().unwrap());
        let bcast = crate::import::import("bcast eth1\n", None, None, "pbx1");
        assert_eq!(shown("heartbeat", &bcast.answers), None, "a bcast link has no peer address to offer");
    }

    #[test]
    fn heartbeat_links_take_their_own_address_from_the_interface() {
        let f = facts();
        let mut p = Partial::default();
        answer("heartbeat", "eth1 10.1.1.2", &mut p, &f).unwrap();
        let l = &p.heartbeat.as_ref().unwrap()[0];
        assert_eq!(
            (l.interface.as_str(), l.address, l.peer_address),
            ("eth1", Some("10.1.1.1/24".parse().unwrap()), "10.1.1.2".parse().unwrap())
        );
        assert!(answer("heartbeat", "eth1 10.2.2.2", &mut p, &f).unwrap_err().contains("not in a subnet of eth1"));
        assert!(answer("heartbeat", "eth7 10.1.1.2", &mut p, &f).unwrap_err().contains("eth7 does not exist"));
    }
}
