//! The plan: numbered steps, each with what it changes (every file with its diff, every
//! command, every directory moved with its size). It is built from the answers, the facts
//! and the current contents of the files it would write, and changes nothing itself.
//! `/etc/pbxha/pbxha.toml` is always the last step: the commit point.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::answers::{Answers, Mysql, Storage};
use crate::facts::{managed_units, Facts, Firewall};
use crate::render;
use crate::Env;

/// One thing a step does. Paths are the real ones (below `--root`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "do", rename_all = "kebab-case")]
pub enum Action {
    /// Writes a file atomically; its original (or its absence) is journaled first.
    Write {
        path: PathBuf,
        contents: String,
        mode: u32,
    },
    /// A new random heartbeat key (mode 0600) unless one is there: the peer may share it.
    NewKey {
        path: PathBuf,
    },
    Mkdir {
        path: PathBuf,
    },
    /// A command through the runner, with the command that reverses it, or why none can.
    Run {
        argv: Vec<String>,
        undo: Option<Vec<String>>,
        cannot_undo: Option<String>,
    },
    /// Mounts `device` unless it is mounted there already (the filesystem resource's own
    /// start and stop, so a resumed step or undo finds its work done instead of failing).
    Mount {
        device: PathBuf,
        mount_point: PathBuf,
        fstype: String,
    },
    /// nftables rules letting the peer's traffic in, each marked with [`facts::NFT_COMMENT`];
    /// pbxha's earlier rules in the chain are removed first, so a rerun adds no duplicates.
    Nft {
        chain: crate::facts::NftChain,
        rules: Vec<String>,
    },
    /// `pbxha replica migrate` of these directories: their data moves onto /replica on the
    /// first node; on the joining (`secondary`) node they only become the symlinks.
    Migrate {
        dirs: Vec<PathBuf>,
        replica_root: PathBuf,
        #[serde(default)]
        secondary: bool,
    },
    /// On the joining node: follows DRBD's initial sync from the first node until this
    /// node's disk is UpToDate, saying the percent as it grows. Changes nothing.
    DrbdSync {
        resource: String,
        syntax: pbxha_replica::drbd::conf::Syntax,
        minor: u32,
    },
    /// `pbxha mysql setup` with the `[mysql]` section of this config text (not yet written:
    /// the config is the commit point).
    MysqlSetup {
        config: String,
    },
    /// The config, checked with check-config's code, then written: the commit point.
    Commit {
        path: PathBuf,
        contents: String,
        node: String,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    pub id: String,
    pub title: String,
    /// What the operator is shown: diffs, commands, sizes.
    pub shows: String,
    pub actions: Vec<Action>,
    /// A device this step destroys: the operator must type its name.
    pub wipes: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub steps: Vec<Step>,
    /// systemd is not PID 1 (a container, the lab): pbxha starts `pbxha run` itself after
    /// the commit. Below a root too: the unit is enabled in that tree for its next boot.
    pub start_daemon: bool,
}

/// Reads the current text of a file (by its real path), for diffs.
pub type Read<'a> = &'a dyn Fn(&Path) -> Option<String>;
/// The size in bytes of a directory tree, for the migration line.
pub type Size<'a> = &'a dyn Fn(&Path) -> Option<u64>;

/// Fills in this node's addresses the answers left out, from the interfaces.
pub fn resolve(a: &mut Answers, f: &Facts) -> Result<(), Vec<String>> {
    let mut missing = Vec::new();
    if a.public.address.is_none() {
        a.public.address = f.address_of(&a.public.interface);
        if a.public.address.is_none() {
            missing.push(format!("public.address: {} has no address to use", a.public.interface));
        }
    }
    for (i, l) in a.heartbeat.iter_mut().enumerate() {
        if l.address.is_none() {
            l.address = f.address_of(&l.interface);
            if l.address.is_none() {
                missing.push(format!("heartbeat[{i}].address: {} has no address to use", l.interface));
            }
        }
    }
    match missing.is_empty() {
        true => Ok(()),
        false => Err(missing),
    }
}

fn run(argv: &[&str], undo: Option<&[&str]>, cannot_undo: Option<&str>) -> Action {
    let own = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
    Action::Run { argv: own(argv), undo: undo.map(own), cannot_undo: cannot_undo.map(str::to_string) }
}

fn shown_run(argv: &[&str]) -> String {
    format!("  runs: {}\n", argv.join(" "))
}

/// A write step's display: a diff against what is there, or the whole new file.
fn write_shows(path: &Path, old: Option<&str>, new: &str) -> String {
    match old {
        Some(old) if old == new => format!("  {} is already as planned\n", path.display()),
        Some(old) => format!("  {} (diff):\n{}", path.display(), render::diff(old, new)),
        None => {
            let body: String = new.lines().map(|l| format!("  +{l}\n")).collect();
            format!("  {} (new file):\n{body}", path.display())
        }
    }
}

fn write_step(id: &str, title: &str, path: PathBuf, contents: String, mode: u32, read: Read) -> Step {
    let shows = write_shows(&path, read(&path).as_deref(), &contents);
    Step {
        id: id.into(),
        title: title.into(),
        shows,
        actions: vec![Action::Write { path, contents, mode }],
        wipes: None,
    }
}

/// The plan for the first node. `a` must be resolved; a DRBD resource the answers cannot
/// make is refused here, before any change.
pub fn plan(a: &Answers, f: &Facts, env: &Env, read: Read, size: Size) -> crate::Result<Plan> {
    let root = env.root.as_path();
    let mut steps = Vec::new();
    let key = env.path(render::AUTH_KEY_PATH);
    steps.push(Step {
        id: "authkey".into(),
        title: "heartbeat key".into(),
        shows: match key.exists() {
            true => format!("  {} exists and is kept (the peer may already share it)\n", key.display()),
            false => format!("  {}: a new random key, mode 0600 (as `pbxha keygen`)\n", key.display()),
        },
        actions: vec![Action::NewKey { path: key }],
        wipes: None,
    });
    steps.push(write_step("answers", "save the answers", env.path(render::ANSWERS_PATH), a.to_toml(), 0o644, read));
    if let Storage::Drbd(d) = &a.storage {
        steps.extend(drbd_steps(a, d, f, env, read)?);
    }
    if a.bind_pbx {
        let vip = a.public.vip.addr.to_string();
        for (file, rewrite) in render::bind_files(a.pbx) {
            let path = env.path(file);
            if let Some(old) = read(&path) {
                let new = rewrite(&old, &vip);
                if new != old {
                    steps.push(write_step(
                        "pbx-bind",
                        &format!("bind {} to the VIP", a.pbx.name()),
                        path,
                        new,
                        0o644,
                        read,
                    ));
                }
            }
        }
    }
    if matches!(a.storage, Storage::Drbd(_)) {
        let mut profiles = vec![a.pbx.name()];
        if a.mysql == Mysql::Replica {
            profiles.push("mysql");
        }
        let dirs: Vec<PathBuf> = profiles
            .iter()
            .filter_map(|p| pbxha_replica::migrate::profile_dirs(p))
            .flat_map(|dirs| dirs.iter().map(|d| env.path(d)))
            .filter(|d| d.is_dir())
            .collect();
        let mut shows = String::new();
        for d in &dirs {
            let bytes = size(d).map_or("size unknown".into(), |b| format!("{b} bytes"));
            let _ = writeln!(
                shows,
                "  {} -> {} ({bytes}), replaced by a symlink",
                d.display(),
                pbxha_replica::migrate::target_path(&env.path(render::REPLICA_MOUNT), d).display()
            );
        }
        if !dirs.is_empty() {
            steps.push(Step {
                id: "migrate".into(),
                title: "move the PBX's directories onto /replica".into(),
                shows,
                actions: vec![Action::Migrate {
                    dirs,
                    replica_root: env.path(render::REPLICA_MOUNT),
                    secondary: a.first_node.is_some(),
                }],
                wipes: None,
            });
        }
    }
    let sysctl = env.path(render::SYSCTL_PATH);
    let old = f.nonlocal_bind.clone().unwrap_or_else(|| "0".into());
    let mut step = write_step(
        "sysctl",
        "allow binding the VIP before holding it",
        sysctl.clone(),
        render::SYSCTL.into(),
        0o644,
        read,
    );
    let sysctl_s = sysctl.display().to_string();
    let apply = ["sysctl", "-q", "-p", sysctl_s.as_str()];
    let restore = format!("net.ipv4.ip_nonlocal_bind={old}");
    step.shows += &shown_run(&apply);
    step.actions.push(run(&apply, Some(&["sysctl", "-q", "-w", &restore]), None));
    steps.push(step);
    if let Some(fw) = &f.firewall {
        steps.push(firewall_step(fw, &openings(a)));
    }
    let systemctl = env.systemctl();
    let sc = |verb: &str, unit: &str| -> Vec<String> {
        systemctl.iter().cloned().chain([verb.to_string(), format!("{unit}.service")]).collect()
    };
    for unit in managed_units(a.pbx, a.mysql == Mysql::Replica) {
        if f.enabled_units.iter().any(|u| u == unit) {
            let (disable, enable) = (sc("disable", unit), sc("enable", unit));
            steps.push(Step {
                id: format!("boot-{unit}"),
                title: format!("{unit} no longer starts at boot: pbxha starts it on the primary"),
                shows: format!("  runs: {}\n", disable.join(" ")),
                actions: vec![Action::Run { argv: disable, undo: Some(enable), cannot_undo: None }],
                wipes: None,
            });
        }
    }
    let mut step = write_step(
        "unit",
        "the pbxha service",
        env.path("/etc/systemd/system/pbxha.service"),
        render::unit(root),
        0o644,
        read,
    );
    let rooted = root != Path::new("/");
    if rooted || f.systemd_pid1 {
        let (enable, disable) = (sc("enable", "pbxha"), sc("disable", "pbxha"));
        step.shows += &format!("  runs: {}\n", enable.join(" "));
        step.actions.push(Action::Run { argv: enable, undo: Some(disable), cannot_undo: None });
    } else {
        step.shows +=
            "  systemd is not PID 1 here: the unit is installed but not enabled, and pbxha starts `pbxha run` itself\n";
    }
    steps.push(step);
    let config = render::config(a, &render::group(a), root);
    let path = env.path(render::CONFIG_PATH);
    let mut commit =
        write_step("config", "the config, last: the commit point", path.clone(), config.clone(), 0o644, read);
    commit.actions = vec![Action::Commit { path, contents: config, node: a.node.clone() }];
    steps.push(commit);
    Ok(Plan { steps, start_daemon: !f.systemd_pid1 })
}

/// One hole the pair needs in a host firewall: the peer's address to a local port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Opening {
    pub from: std::net::IpAddr,
    pub proto: &'static str,
    pub port: u16,
}

/// What the peer sends this node: heartbeats (UDP) on every link, DRBD (TCP 7788) and MySQL
/// replication (TCP 3306, master-master) over the first heartbeat link.
pub fn openings(a: &Answers) -> Vec<Opening> {
    let mut all: Vec<Opening> = a
        .heartbeat
        .iter()
        .map(|l| l.peer_address)
        .chain([a.public.peer_address])
        .map(|from| Opening { from, proto: "udp", port: a.port })
        .collect();
    let replication_peer = a.heartbeat.first().map_or(a.public.peer_address, |l| l.peer_address);
    if matches!(a.storage, Storage::Drbd(_)) {
        all.push(Opening { from: replication_peer, proto: "tcp", port: crate::facts::DRBD_PORT });
    }
    if matches!(a.mysql, Mysql::MasterMaster { .. }) {
        all.push(Opening { from: replication_peer, proto: "tcp", port: 3306 });
    }
    all
}

/// The firewall step in the owning tool's own terms. ufw and firewalld commands are each
/// undone by their delete/remove twin, and both take a rule that is already there (or
/// already gone) as done, so a resumed step or undo goes through.
fn firewall_step(fw: &Firewall, openings: &[Opening]) -> Step {
    let (title, actions) = match fw {
        Firewall::Nftables(chain) => {
            let rules: Vec<String> = openings
                .iter()
                .map(|o| {
                    let family = if o.from.is_ipv4() { "ip" } else { "ip6" };
                    format!("{family} saddr {} {} dport {} accept", o.from, o.proto, o.port)
                })
                .collect();
            (
                format!("let the peer in through nftables chain {} {} {}", chain.family, chain.table, chain.chain),
                vec![Action::Nft { chain: chain.clone(), rules }],
            )
        }
        Firewall::Ufw => {
            let actions = openings
                .iter()
                .map(|o| {
                    let (from, port) = (o.from.to_string(), o.port.to_string());
                    let rule = ["allow", "proto", o.proto, "from", &from, "to", "any", "port", &port];
                    let add: Vec<&str> = ["ufw"].iter().chain(&rule).chain(&["comment", "pbxha"]).copied().collect();
                    let delete: Vec<&str> = ["ufw", "delete"].iter().chain(&rule).copied().collect();
                    run(&add, Some(&delete), None)
                })
                .collect();
            ("let the peer in through ufw".to_string(), actions)
        }
        Firewall::Firewalld => {
            let actions = openings
                .iter()
                .flat_map(|o| {
                    let family = if o.from.is_ipv4() { "ipv4" } else { "ipv6" };
                    let rule = format!(
                        "rule family=\"{family}\" source address=\"{}\" port port=\"{}\" protocol=\"{}\" accept",
                        o.from, o.port, o.proto
                    );
                    let (add, remove) = (format!("--add-rich-rule={rule}"), format!("--remove-rich-rule={rule}"));
                    // The running rules and the saved ones: a reload or reboot keeps the pair's.
                    [None, Some("--permanent")].map(|permanent| {
                        let argv = |change: &str| -> Vec<String> {
                            ["firewall-cmd", "--quiet"]
                                .into_iter()
                                .chain(permanent)
                                .chain([change])
                                .map(String::from)
                                .collect()
                        };
                        Action::Run { argv: argv(&add), undo: Some(argv(&remove)), cannot_undo: None }
                    })
                })
                .collect();
            ("let the peer in through firewalld (running and permanent rules)".to_string(), actions)
        }
    };
    let shows = actions
        .iter()
        .map(|action| match action {
            Action::Nft { chain, rules } => rules
                .iter()
                .map(|r| {
                    format!(
                        "  nft insert rule {} {} {} {r} comment {}\n",
                        chain.family,
                        chain.table,
                        chain.chain,
                        crate::facts::NFT_COMMENT
                    )
                })
                .collect(),
            Action::Run { argv, .. } => format!("  runs: {}\n", shell_words(argv)),
            _ => String::new(),
        })
        .collect();
    Step { id: "firewall".into(), title, shows, actions, wipes: None }
}

/// A command as an operator would type it: words with spaces or quotes in single quotes.
fn shell_words(argv: &[String]) -> String {
    let word = |w: &String| {
        if w.contains([' ', '"']) {
            format!("'{w}'")
        } else {
            w.clone()
        }
    };
    argv.iter().map(word).collect::<Vec<_>>().join(" ")
}

fn drbd_steps(
    a: &Answers,
    d: &crate::answers::DrbdAnswers,
    f: &Facts,
    env: &Env,
    read: Read,
) -> crate::Result<Vec<Step>> {
    let hb = a.heartbeat.first();
    let own = match hb {
        Some(l) => l.address,
        None => a.public.address,
    }
    .map(|c| c.addr)
    .ok_or_else(|| {
        crate::Error::Refused(
            "DRBD: this node has no address on the replication link (resolve the answers first)".into(),
        )
    })?;
    let peer = hb.map_or(a.public.peer_address, |l| l.peer_address);
    let mut steps = Vec::new();
    let res_path = env.path(&format!("/etc/drbd.d/{}.res", d.resource));
    let conf = pbxha_replica::drbd::conf::DrbdResourceConfig {
        resource: d.resource.clone(),
        device: d.drbd_device.clone(),
        disk: d.device.clone(),
        port: crate::facts::DRBD_PORT,
        hosts: [
            pbxha_replica::drbd::conf::DrbdHost { hostname: a.node.clone(), address: own },
            pbxha_replica::drbd::conf::DrbdHost { hostname: a.peer.clone(), address: peer },
        ],
        after_split_brain: Default::default(),
        fence_peer_handler: pbxha_replica::drbd::conf::DEFAULT_FENCE_PEER.into(),
        split_brain_handler: pbxha_replica::drbd::conf::DEFAULT_SPLIT_BRAIN.into(),
    };
    let text = conf.render(d.syntax)?;
    steps.push(write_step(
        "drbd-config",
        &format!("DRBD resource {}", d.resource),
        res_path.clone(),
        text,
        0o644,
        read,
    ));
    // Below a root, drbdadm reads that tree's resource file, not the host's /etc/drbd.conf.
    let mut drbdadm = vec!["drbdadm".to_string()];
    if env.root != Path::new("/") {
        drbdadm.extend(["-c".to_string(), res_path.display().to_string()]);
    }
    let cmd =
        |args: &[&str]| -> Vec<String> { drbdadm.iter().cloned().chain(args.iter().map(|s| s.to_string())).collect() };
    let r = d.resource.as_str();
    if d.wipe && f.device.as_ref().is_some_and(|x| x.signature.is_some()) {
        steps.push(Step {
            id: "wipe".into(),
            title: format!("WIPE {}", d.device),
            shows: format!(
                "  runs: wipefs -a {}  (destroys its {})\n",
                d.device,
                f.device.as_ref().and_then(|x| x.signature.clone()).unwrap_or_default()
            ),
            actions: vec![run(
                &["wipefs", "-a", &d.device],
                None,
                Some(&format!("the old signature of {} is gone", d.device)),
            )],
            wipes: Some(d.device.clone()),
        });
    }
    let mut push = |id: &str, title: &str, argv: Vec<String>, undo: Option<Vec<String>>, cannot: Option<String>| {
        steps.push(Step {
            id: id.into(),
            title: title.into(),
            shows: format!("  runs: {}\n", argv.join(" ")),
            actions: vec![Action::Run { argv, undo, cannot_undo: cannot }],
            wipes: None,
        })
    };
    push(
        "drbd-create-md",
        "DRBD metadata",
        cmd(&["create-md", "--force", r]),
        None,
        Some(format!("DRBD metadata stays on {} (`drbdadm wipe-md {r}` removes it)", d.device)),
    );
    push("drbd-up", "DRBD up", cmd(&["up", r]), Some(cmd(&["down", r])), None);
    if a.first_node.is_some() {
        // The joining node stays secondary: it takes the first node's data over the wire
        // (no --force, no filesystem of its own, nothing mounted), and waits for it here.
        steps.push(Step {
            id: "drbd-sync".into(),
            title: format!("DRBD initial sync from {}", a.peer),
            shows: format!("  waits: until {r} is UpToDate on this node, showing the percent\n"),
            actions: vec![Action::DrbdSync {
                resource: r.to_string(),
                syntax: d.syntax,
                minor: drbd_minor(&d.drbd_device),
            }],
            wipes: None,
        });
        return Ok(steps);
    }
    push(
        "drbd-primary",
        "DRBD primary on the first node (--force: no peer data yet)",
        cmd(&["primary", "--force", r]),
        Some(cmd(&["secondary", r])),
        None,
    );
    push(
        "mkfs",
        "ext4 on the replicated device",
        vec!["mkfs.ext4".into(), "-q".into(), "-L".into(), "replica".into(), d.drbd_device.clone()],
        None,
        Some(format!("the filesystem on {} stays", d.drbd_device)),
    );
    let mount_point = env.path(render::REPLICA_MOUNT);
    let mp = mount_point.display().to_string();
    steps.push(Step {
        id: "mount".into(),
        title: format!("mount {} on {}", d.drbd_device, render::REPLICA_MOUNT),
        shows: format!("  creates {mp}\n  runs: mount -t ext4 {} {mp}\n", d.drbd_device),
        actions: vec![
            Action::Mkdir { path: mount_point.clone() },
            Action::Mount { device: d.drbd_device.clone().into(), mount_point, fstype: "ext4".into() },
        ],
        wipes: None,
    });
    Ok(steps)
}

/// A secret the first node sent, written 0600; its contents are never shown.
fn received_step(id: &str, what: &str, path: PathBuf, contents: &str) -> Step {
    Step {
        id: id.into(),
        title: format!("{what}, from the first node"),
        shows: format!("  {}: received over the join, mode 0600 (not shown)\n", path.display()),
        actions: vec![Action::Write { path, contents: contents.to_string(), mode: 0o600 }],
        wipes: None,
    }
}

/// The joining node's plan: the first node's plan for this side, with the key and secret
/// files it received instead of a new key, and MySQL's replication set up from this side
/// just before the commit.
pub fn join_plan(
    a: &Answers,
    f: &Facts,
    env: &Env,
    read: Read,
    size: Size,
    got: &crate::join::Payload,
) -> crate::Result<Plan> {
    let mut p = plan(a, f, env, read, size)?;
    let mut received =
        vec![received_step("authkey", "the heartbeat key", env.path(render::AUTH_KEY_PATH), &got.auth_key)];
    for (path, contents) in &got.secrets {
        let shown = path.display().to_string();
        received.push(received_step("secret", &shown, env.path(&shown), contents));
    }
    p.steps.splice(0..1, received);
    if matches!(a.mysql, Mysql::MasterMaster { .. }) {
        let config = p.steps.last().and_then(|s| s.actions.first()).and_then(|c| match c {
            Action::Commit { contents, .. } => Some(contents.clone()),
            _ => None,
        });
        if let Some(config) = config {
            let at = p.steps.len() - 1;
            p.steps.insert(
                at,
                Step {
                    id: "mysql-setup".into(),
                    title: "MySQL replication both ways, set up from this side (`pbxha mysql setup`)".into(),
                    shows: format!(
                        "  logs in to {} and to this server; the first node's databases seed this one\n",
                        a.peer
                    ),
                    actions: vec![Action::MysqlSetup { config }],
                    wipes: None,
                },
            );
        }
    }
    Ok(p)
}

/// The plan as shown before any change.
pub fn show(plan: &Plan) -> String {
    let mut out = format!("plan ({} steps)\n", plan.steps.len());
    for (i, s) in plan.steps.iter().enumerate() {
        let _ = writeln!(out, "{:>3}. {} [{}]", i + 1, s.title, s.id);
        out += &s.shows;
    }
    if plan.start_daemon {
        out += "then: systemd is not PID 1, so pbxha starts `pbxha run` itself\n";
    }
    out
}

#[cfg(test)]
mod tests;

/// The minor of a DRBD device path (`/dev/drbd0` is 0), which DRBD 8.4 reports its state by.
fn drbd_minor(device: &str) -> u32 {
    device.trim_start_matches("/dev/drbd").parse().unwrap_or(0)
}
