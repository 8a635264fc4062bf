//! Pure text producers: pbxha.toml from the answers, the PBX's SIP bind rewritten to the
//! VIP, and the line diffs the plan shows.

use std::path::Path;

use toml::Value;

use crate::answers::{Answers, Mysql, Pbx, Storage};

/// One member of the resource group, started in this order and stopped in reverse.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resource {
    Drbd { resource: String, syntax: pbxha_replica::drbd::conf::Syntax },
    Filesystem { device: String, mount_point: String, fstype: String },
    Vip { address: String, interface: String },
    Mysql,
    Pbx(Pbx),
    Service { name: String, unit: String },
}

/// Where the replicated filesystem is mounted (the seed recipes' `/replica`).
pub const REPLICA_MOUNT: &str = "/replica";
pub const CONFIG_PATH: &str = "/etc/pbxha/pbxha.toml";
pub const AUTH_KEY_PATH: &str = "/etc/pbxha/authkey";
pub const ANSWERS_PATH: &str = "/etc/pbxha/answers.toml";

/// The group the answers call for: storage, then the address, then the services on it.
pub fn group(a: &Answers) -> Vec<Resource> {
    let mut g = Vec::new();
    if let Storage::Drbd(d) = &a.storage {
        g.push(Resource::Drbd { resource: d.resource.clone(), syntax: d.syntax });
        g.push(Resource::Filesystem {
            device: d.drbd_device.clone(),
            mount_point: REPLICA_MOUNT.into(),
            fstype: "ext4".into(),
        });
    }
    g.push(Resource::Vip { address: a.public.vip.to_string(), interface: a.public.interface.clone() });
    if a.mysql == Mysql::Replica {
        g.push(Resource::Mysql);
    }
    g.push(Resource::Pbx(a.pbx));
    g
}

fn q(s: &str) -> String {
    Value::String(s.to_string()).to_string()
}

/// A path as the config names it: below `root` when installing into a tree, so a daemon
/// started from that tree (the bare lab) reads its own files and not the host's.
pub fn at(root: &Path, path: &str) -> String {
    match root == Path::new("/") {
        true => path.to_string(),
        false => root.join(path.trim_start_matches('/')).display().to_string(),
    }
}

/// This node's id, also its MySQL server-id: the first node is 1, the one that joined it 2.
fn server_id(a: &Answers) -> u32 {
    match a.first_node {
        None => 1,
        Some(_) => 2,
    }
}

/// pbxha.toml for this node. Addresses the answers left out must have been resolved from
/// the interfaces first ([`crate::plan::resolve`]).
pub fn config(a: &Answers, group: &[Resource], root: &Path) -> String {
    let (interval, deadtime, warntime, initdead) = a.timing.millis();
    let mut s = format!(
        "# Written by `pbxha install` from {answers}; check it with `pbxha check-config`.\n\n\
         [cluster]\nname = {name}\nid = {id}\nauth-key-file = {key}\nauto-failback = {fb}\n\n\
         [heartbeat]\ninterval = {interval}\ndeadtime = {deadtime}\nwarntime = {warntime}\ninitdead = {initdead}\nport = {port}\n\n\
         [[node]]\nname = {node}\nid = {node_id}\n\n[[node]]\nname = {peer}\nid = {peer_id}\n",
        answers = at(root, ANSWERS_PATH),
        name = q(&a.cluster),
        id = a.cluster_id,
        key = q(&at(root, AUTH_KEY_PATH)),
        fb = a.auto_failback,
        port = a.port,
        node = q(&a.node),
        peer = q(&a.peer),
        node_id = server_id(a),
        peer_id = 3 - server_id(a),
    );
    let mut links: Vec<(String, &str, bool, Option<crate::answers::Cidr>, std::net::IpAddr)> = a
        .heartbeat
        .iter()
        .enumerate()
        .map(|(i, l)| (format!("hb{i}"), l.interface.as_str(), l.bcast, l.address, l.peer_address))
        .collect();
    links.push(("public".into(), &a.public.interface, false, a.public.address, a.public.peer_address));
    for (name, interface, bcast, own, peer) in links {
        let own = own.map_or_else(String::new, |c| c.to_string());
        let prefix = own.split_once('/').map_or("32", |(_, p)| p).to_string();
        s += &format!(
            "\n[[link]]\nname = {}\nmode = {}\ninterface = {}\n[link.addresses]\n{} = {}\n{} = {}\n",
            q(&name),
            q(if bcast { "bcast" } else { "ucast" }),
            q(interface),
            q(&a.node),
            q(&own),
            q(&a.peer),
            q(&format!("{peer}/{prefix}")),
        );
    }
    let targets: Vec<String> = a.ping.iter().map(|t| q(&t.to_string())).collect();
    s += &format!("\n[ping]\ntargets = [{}]\n", targets.join(", "));
    s += &format!(
        "\n[paths]\nstate-db = {}\ncontrol-socket = {}\n",
        q(&at(root, "/var/lib/pbxha/state.db")),
        q(&at(root, "/run/pbxha/control.sock"))
    );
    for r in group {
        s += "\n[[resource]]\n";
        s += &match r {
            Resource::Drbd { resource, syntax } => format!(
                "name = \"drbd\"\nkind = \"drbd\"\nresource = {}\nsyntax = {}\n",
                q(resource),
                q(if *syntax == pbxha_replica::drbd::conf::Syntax::V84 { "8.4" } else { "9" })
            ),
            Resource::Filesystem { device, mount_point, fstype } => format!(
                "name = \"replica\"\nkind = \"filesystem\"\ndevice = {}\nmount-point = {}\nfstype = {}\n",
                q(device),
                q(&at(root, mount_point)),
                q(fstype)
            ),
            Resource::Vip { address, interface } => {
                format!("name = \"vip\"\nkind = \"vip\"\naddress = {}\ninterface = {}\n", q(address), q(interface))
            }
            Resource::Mysql => {
                format!("name = \"mysql\"\nkind = \"mysql\"\nreplica-mount = {}\n", q(&at(root, REPLICA_MOUNT)))
            }
            Resource::Pbx(p) => format!("name = {}\nkind = \"pbx\"\npbx = {}\n", q(p.name()), q(p.name())),
            Resource::Service { name, unit } => format!("name = {}\nkind = \"service\"\nunit = {}\n", q(name), q(unit)),
        };
    }
    if let Mysql::MasterMaster { admin_password_file } = &a.mysql {
        let own = a
            .heartbeat
            .first()
            .and_then(|l| l.address)
            .or(a.public.address)
            .map(|c| c.addr.to_string())
            .unwrap_or_default();
        let peer = a.heartbeat.first().map_or(a.public.peer_address, |l| l.peer_address);
        s += &format!(
            "\n[mysql]\nmode = \"master-master\"\nserver-id = {}\nseed = {}\nadmin-password-file = {}\n\
             local = {{ host = {}, socket = {} }}\npeer = {{ host = {} }}\n",
            server_id(a),
            a.first_node.is_none(),
            q(&at(root, &admin_password_file.display().to_string())),
            q(&own),
            q(&at(root, "/run/mysqld/mysqld.sock")),
            q(&peer.to_string())
        );
        if root != Path::new("/") {
            // `mysql setup` writes its server settings there: below the root, not the host's.
            s += &format!("conf-dir = {}\n", q(&at(root, pbxha_replica::mysql::config::DEFAULT_CONF_DIR)));
        }
    }
    if let Some(mail) = &a.mail {
        let mut mail = mail.clone();
        for key in ["password-file", "ca-file"] {
            if let Some(Value::String(p)) = mail.get(key) {
                let rooted = at(root, p);
                mail.insert(key.into(), Value::String(rooted));
            }
        }
        let mut t = toml::Table::new();
        t.insert("mail".into(), Value::Table(mail));
        s += &format!("\n{}", toml::to_string(&t).unwrap_or_default());
    }
    s
}

/// The unit file, from packaging/pbxha.service; below a root it names that root's config.
pub fn unit(root: &Path) -> String {
    let text = include_str!("../../packaging/pbxha.service");
    match root == Path::new("/") {
        true => text.to_string(),
        false => text.replace(
            "ExecStart=/usr/sbin/pbxha run",
            &format!("ExecStart=/usr/sbin/pbxha --config {} run", at(root, CONFIG_PATH)),
        ),
    }
}

/// The sysctl file: the PBX binds the VIP on both nodes, also while the peer holds it.
pub const SYSCTL_PATH: &str = "/etc/sysctl.d/60-pbxha.conf";
pub const SYSCTL: &str =
    "# Written by `pbxha install`: the PBX binds the VIP before this node holds it.\nnet.ipv4.ip_nonlocal_bind = 1\n";

/// Rewrites a config file's text so the PBX binds the VIP (text, VIP) -> new text.
pub type Rebind = fn(&str, &str) -> String;

/// Files that carry the PBX's SIP bind, and how to rewrite each to the VIP.
pub fn bind_files(pbx: Pbx) -> &'static [(&'static str, Rebind)] {
    match pbx {
        Pbx::Asterisk => &[("/etc/asterisk/pjsip.conf", pjsip_bind), ("/etc/asterisk/sip.conf", chan_sip_bind)],
        Pbx::Freeswitch => &[
            ("/etc/freeswitch/sip_profiles/internal.xml", sofia_bind),
            ("/etc/freeswitch/sip_profiles/external.xml", sofia_bind),
        ],
    }
}

/// Rewrites `key=VALUE` lines inside the sections `in_section` accepts. `value` turns the
/// old value into the new one. Comments, spacing and every other line stay as they are.
fn rewrite_ini(text: &str, in_section: impl Fn(&[&str]) -> bool, key: &str, value: impl Fn(&str) -> String) -> String {
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let mut out = String::new();
    let mut start = 0;
    while start < lines.len() {
        let end = (start + 1..lines.len()).find(|&i| lines[i].trim_start().starts_with('[')).unwrap_or(lines.len());
        let section = &lines[start..end];
        let rewrite = in_section(section);
        for line in section {
            let body = line.trim_end_matches(['\n', '\r']);
            let (k, v) = body.split_once('=').unwrap_or((body, ""));
            if rewrite && k.trim() == key && !body.trim_start().starts_with(';') {
                let sep = &body[k.len()..k.len() + 1 + (v.len() - v.trim_start().len())];
                out += &format!("{k}{sep}{}{}", value(v.trim()), &line[body.len()..]);
            } else {
                out += line;
            }
        }
        start = end;
    }
    out
}

fn is_transport(section: &[&str]) -> bool {
    section.iter().any(|l| l.split_once('=').is_some_and(|(k, v)| k.trim() == "type" && v.trim() == "transport"))
}

/// Asterisk pjsip.conf: every transport's `bind=ADDR[:PORT]` becomes the VIP, port kept.
pub fn pjsip_bind(text: &str, vip: &str) -> String {
    rewrite_ini(text, is_transport, "bind", |old| match old.rsplit_once(':') {
        Some((_, port)) if !old.starts_with('[') || old.contains("]:") => {
            format!("{vip}:{port}")
        }
        _ => vip.to_string(),
    })
}

/// Asterisk chan_sip sip.conf: `bindaddr` in `[general]`.
pub fn chan_sip_bind(text: &str, vip: &str) -> String {
    rewrite_ini(text, |s| s.first().is_some_and(|l| l.trim().starts_with("[general]")), "bindaddr", |_| vip.to_string())
}

/// FreeSWITCH sofia profile: `sip-ip` and `rtp-ip` params.
pub fn sofia_bind(text: &str, vip: &str) -> String {
    text.split_inclusive('\n')
        .map(|line| {
            let is_param = ["\"sip-ip\"", "\"rtp-ip\""].iter().any(|n| line.contains(&format!("name={n}")));
            match (is_param, line.find("value=\"")) {
                (true, Some(at)) if !line.trim_start().starts_with("<!--") => {
                    let from = at + "value=\"".len();
                    let to = line[from..].find('"').map_or(line.len(), |e| from + e);
                    format!("{}{vip}{}", &line[..from], &line[to..])
                }
                _ => line.to_string(),
            }
        })
        .collect()
}

/// A line diff in unified style (`-` old, `+` new, two lines of context), for the plan.
pub fn diff(old: &str, new: &str) -> String {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    if a.len() * b.len() > 4_000_000 {
        return format!("  ({} lines replaced by {} lines)\n", a.len(), b.len());
    }
    // Longest common subsequence table, from the ends.
    let mut lcs = vec![vec![0u32; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] { lcs[i + 1][j + 1] + 1 } else { lcs[i + 1][j].max(lcs[i][j + 1]) };
        }
    }
    let mut ops: Vec<(char, &str)> = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            ops.push((' ', a[i]));
            i += 1;
            j += 1;
        } else if j < b.len() && (i == a.len() || lcs[i][j + 1] > lcs[i + 1][j]) {
            ops.push(('+', b[j]));
            j += 1;
        } else {
            ops.push(('-', a[i]));
            i += 1;
        }
    }
    let near = |k: usize| ops[k.saturating_sub(2)..(k + 3).min(ops.len())].iter().any(|(c, _)| *c != ' ');
    let mut out = String::new();
    let mut skipped = false;
    for (k, (c, line)) in ops.iter().enumerate() {
        if near(k) {
            out += &format!("  {c}{line}\n");
            skipped = false;
        } else if !skipped {
            out += "  ...\n";
            skipped = true;
        }
    }
    out
}

#[cfg(test)]
mod tests;
