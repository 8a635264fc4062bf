//! Semantic checks: what TOML syntax and types cannot say.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;

use super::*;

/// A problem at `key`; an empty `hint` is none.
fn problem_at(key: &str, message: String, hint: &str) -> Problem {
    Problem { key: key.to_string(), message, hint: (!hint.is_empty()).then(|| hint.to_string()) }
}

impl Config {
    /// Every semantic problem, each with its key path. Empty means valid. Reads no files:
    /// those checks are [`check_files`](Self::check_files).
    pub fn validate(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        let mut problem = |key: &str, message: String, hint: &str| out.push(problem_at(key, message, hint));
        let hb = &self.heartbeat;
        if hb.interval.is_zero() {
            problem("heartbeat.interval", "must be greater than 0".into(), "200 ms is the default");
        }
        if hb.deadtime <= hb.interval * 2 {
            problem(
                "heartbeat.deadtime",
                format!(
                    "{} ms is not greater than 2 × interval ({} ms)",
                    hb.deadtime.as_millis(),
                    hb.interval.as_millis()
                ),
                "one lost packet must not kill the peer: use at least 3 × interval (default 1000 with interval 200)",
            );
        }
        if hb.warntime <= hb.interval || hb.warntime >= hb.deadtime {
            problem(
                "heartbeat.warntime",
                format!(
                    "{} ms is not between interval ({} ms) and deadtime ({} ms)",
                    hb.warntime.as_millis(),
                    hb.interval.as_millis(),
                    hb.deadtime.as_millis()
                ),
                "a late heartbeat is one slower than interval but not yet dead",
            );
        }
        if hb.initdead < hb.deadtime {
            problem(
                "heartbeat.initdead",
                "must be at least deadtime".into(),
                "it covers the peer's boot; heartbeat suggests 2 × deadtime or more",
            );
        }

        if self.group.restart_window.is_zero() {
            problem("group.restart-window", "must be greater than 0".into(), "it bounds local restarts (default 60 s)");
        }
        // A failure-timeout left to default follows restart-window, already reported above.
        if self.group.failure_timeout.is_zero() && !self.group.restart_window.is_zero() {
            problem(
                "group.failure-timeout",
                "must be greater than 0".into(),
                "how long a failed member keeps the node out, and when it is retried (default: restart-window)",
            );
        }
        if self.nodes.len() != 2 && !self.nodes.is_empty() {
            problem(
                "node",
                format!("{} nodes are configured; pbxha runs exactly two", self.nodes.len()),
                "add one [[node]] table per server",
            );
        }
        let mut names = BTreeSet::new();
        let mut ids = BTreeSet::new();
        for (i, n) in self.nodes.iter().enumerate() {
            if !n.name.is_empty() && !names.insert(n.name.as_str()) {
                problem(
                    &format!("node[{i}].name"),
                    format!("duplicate node name `{}`", n.name),
                    "each node needs its own `uname -n`",
                );
            }
            if n.id != 0 && !ids.insert(n.id) {
                problem(&format!("node[{i}].id"), format!("duplicate node id {}", n.id), "use 1 and 2");
            }
        }
        if let Some(p) = &self.cluster.preferred_node {
            if !names.contains(p.as_str()) {
                problem(
                    "cluster.preferred-node",
                    format!("`{p}` is not a configured node"),
                    "use one of the [[node]] names",
                );
            }
        }

        let mut link_names = BTreeSet::new();
        for (i, link) in self.links.iter().enumerate() {
            let key = |k: &str| format!("link[{i}].{k}");
            if !link.name.is_empty() && !link_names.insert(link.name.as_str()) {
                problem(&key("name"), format!("duplicate link name `{}`", link.name), "");
            }
            for node in &names {
                if !link.addresses.contains_key(*node) {
                    problem(
                        &key(&format!("addresses.{node}")),
                        format!("no address for node `{node}` on this link"),
                        "every node needs an address on every link",
                    );
                }
            }
            for (node, cidr) in &link.addresses {
                if !names.contains(node.as_str()) {
                    problem(&key(&format!("addresses.{node}")), format!("`{node}` is not a configured node"), "");
                }
                if cidr.addr.is_unspecified() || cidr.addr.is_multicast() {
                    problem(
                        &key(&format!("addresses.{node}")),
                        format!("{} cannot be a node's address", cidr.addr),
                        "",
                    );
                }
            }
            let families: BTreeSet<bool> = link.addresses.values().map(|c| c.addr.is_ipv4()).collect();
            if families.len() > 1 {
                problem(
                    &key("addresses"),
                    "mixes IPv4 and IPv6".into(),
                    "both nodes must use the same family on one link",
                );
            }
            match link.mode {
                LinkMode::Bcast => {
                    if link.interface.is_none() {
                        problem(
                            &key("interface"),
                            "a bcast link needs its interface".into(),
                            "e.g. interface = \"eth1\"",
                        );
                    }
                    if link.addresses.values().any(|c| !c.addr.is_ipv4() || c.prefix >= 31) {
                        problem(
                            &key("addresses"),
                            "bcast needs IPv4 addresses with a subnet prefix (e.g. /24)".into(),
                            "",
                        );
                    }
                }
                LinkMode::Mcast => match link.group {
                    Some(g) if g.is_multicast() => {}
                    Some(g) => problem(&key("group"), format!("{g} is not a multicast address"), "e.g. 239.0.0.43"),
                    None => {
                        problem(&key("group"), "an mcast link needs its group".into(), "e.g. group = \"239.0.0.43\"")
                    }
                },
                LinkMode::Ucast => {}
            }
        }

        let mut resource_names = BTreeSet::new();
        for (i, r) in self.resources.iter().enumerate() {
            let key = |k: &str| format!("resource[{i}].{k}");
            if !r.name.is_empty() && !resource_names.insert(r.name.as_str()) {
                problem(&key("name"), format!("duplicate resource name `{}`", r.name), "");
            }
            if r.monitor_interval.is_zero() {
                problem(&key("monitor-interval"), "must be greater than 0".into(), "");
            }
            r.kind.validate(self, i, &mut |k, message, hint| problem(&key(k), message, hint));
        }
        let mut probe_names = BTreeSet::new();
        for (i, p) in self.probes.iter().enumerate() {
            let key = |k: &str| format!("probe[{i}].{k}");
            if !probe_names.insert(p.name.as_str()) {
                problem(&key("name"), format!("duplicate probe name `{}`", p.name), "");
            }
            if p.interval.is_zero() || p.timeout.is_zero() {
                problem(&key("interval"), "interval and timeout must be greater than 0".into(), "");
            }
            if let ProbeRole::LocalPbx { resource } = &p.role {
                if !resource_names.contains(resource.as_str()) {
                    problem(
                        &key("resource"),
                        format!("`{resource}` is not a [[resource]] name"),
                        "a local-pbx probe watches one member of the group",
                    );
                }
            }
        }
        out
    }
}

impl Config {
    /// The checks that look at the filesystem, a step of their own so that
    /// [`validate`](Self::validate) stays pure: every secret file the config names exists with
    /// mode 0600. [`parse`](super::parse) runs both.
    pub fn check_files(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        let key_file = &self.cluster.auth_key_file;
        if let Err(message) = private_file(key_file) {
            let hint = if key_file.exists() {
                format!("chmod 600 {}", key_file.display())
            } else {
                "create it on one node with `head -c 32 /dev/urandom | base64 > FILE; chmod 600 FILE` and copy it to the other".into()
            };
            out.push(problem_at("cluster.auth-key-file", message, &hint));
        }
        for (i, r) in self.resources.iter().enumerate() {
            r.kind.check_files(&mut |k, message, hint| {
                out.push(problem_at(&format!("resource[{i}].{k}"), message, hint))
            });
        }
        out
    }
}

/// Whether `path`, a file holding a secret, exists with no access for group and others.
/// The daemon refuses such files when it reads them; check-config says so first.
pub fn private_file(path: &std::path::Path) -> Result<(), String> {
    match std::fs::metadata(path) {
        Err(e) => Err(format!("{}: {e}", path.display())),
        Ok(meta) if meta.permissions().mode() & 0o077 != 0 => Err(format!(
            "{} has mode {:04o}; group and others must have no access",
            path.display(),
            meta.permissions().mode() & 0o7777
        )),
        Ok(_) => Ok(()),
    }
}

/// This host's node: `--node NAME` if given, otherwise the node named like `uname -n`.
pub fn local_node<'a>(config: &'a Config, name: Option<&str>) -> Result<&'a NodeConfig, Problem> {
    let hostname;
    let (wanted, source) = match name {
        Some(n) => (n, "--node"),
        None => {
            hostname = nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default();
            (hostname.as_str(), "this host's name (uname -n)")
        }
    };
    config.node(wanted).ok_or_else(|| Problem {
        key: "node".into(),
        message: format!(
            "{source} is `{wanted}`, which matches no node ({})",
            config.nodes.iter().map(|n| n.name.as_str()).collect::<Vec<_>>().join(", ")
        ),
        hint: Some("name the node with --node NAME, or make [[node]] name match `uname -n`".into()),
    })
}
