//! TOML → [`Config`], collecting every problem instead of stopping at the first.
//!
//! The tree is walked by hand with pbxha-conf's [`Reader`], which collects every problem with
//! its key path and reports unknown keys with did-you-mean; `[mail]`, `[[check]]` and
//! `[mysql]` are read by their crates' readers into the same list.

use std::path::{Path, PathBuf};
use std::time::Duration;

use pbxha_conf::{Problems, Reader};
use toml::Table;

use super::*;
use crate::Error;

/// Reads and parses the config file. Problems are returned as [`Error::ConfigInvalid`] after
/// being logged; `check-config` uses [`parse`] to print them.
pub fn load(path: &Path) -> Result<Config, Error> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::ConfigFile { path: path.to_path_buf(), message: format!("cannot read: {e}") })?;
    parse(&text).map_err(|problems| {
        for p in &problems {
            tracing::error!(config = %path.display(), "{p}");
        }
        Error::ConfigInvalid { path: path.to_path_buf(), count: problems.len() }
    })
}

/// One `[section] key` path from a config file, read leniently: the CLI must find the
/// daemon's socket or journal even while the file on disk fails validation (that is when
/// an operator most needs `pbxha status`). Falls back to `default`.
pub fn lenient_path(config: &Path, section: &str, key: &str, default: &str) -> PathBuf {
    std::fs::read_to_string(config)
        .ok()
        .and_then(|text| text.parse::<Table>().ok())
        .and_then(|t| t.get(section)?.get(key)?.as_str().map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(default))
}

/// Parses config text and runs both checks, [`Config::validate`] and the filesystem's
/// [`Config::check_files`], returning every problem found.
pub fn parse(text: &str) -> Result<Config, Vec<Problem>> {
    let root = pbxha_conf::parse_toml(text).map_err(|p| vec![p])?;
    let problems = Problems::new();
    let config = read_config(&mut Reader::root(&root, &problems));
    let mut problems = problems.into_vec();
    if let Some(config) = &config {
        problems.extend(config.validate());
        problems.extend(config.check_files());
    }
    match config {
        Some(config) if problems.is_empty() => Ok(config),
        _ => Err(problems),
    }
}

fn read_config(root: &mut Reader) -> Option<Config> {
    let cluster = root.table("cluster").map(|mut s| {
        let c = ClusterConfig {
            name: s.string("name").unwrap_or_default(),
            id: s.int("id", 1, u32::MAX.into()).unwrap_or(0),
            auth_key_file: s.path_or("auth-key-file", DEFAULT_AUTH_KEY),
            auto_failback: s.bool_or("auto-failback", false),
            preferred_node: s.opt_string("preferred-node"),
        };
        s.finish();
        c
    });
    let heartbeat = root.table_or_empty("heartbeat", |s| HeartbeatConfig {
        interval: s.duration_or("interval", DEFAULT_INTERVAL),
        deadtime: s.duration_or("deadtime", DEFAULT_DEADTIME),
        warntime: s.duration_or("warntime", DEFAULT_WARNTIME),
        initdead: s.duration_or("initdead", DEFAULT_INITDEAD),
        port: s.int_or("port", 1, 65535, DEFAULT_PORT),
    });
    let nodes = root
        .tables("node")
        .into_iter()
        .map(|mut s| {
            let n = NodeConfig { name: s.string("name").unwrap_or_default(), id: s.int("id", 1, 65535).unwrap_or(0) };
            s.finish();
            n
        })
        .collect();
    let port = heartbeat.port;
    let links = root.tables("link").into_iter().map(|mut s| read_link(&mut s, port)).collect();
    let ping = root.table_or_empty("ping", |s| PingConfig {
        targets: s.list("targets", |v, key, s| match v.as_str().map(parse_ping_target) {
            Some(Ok(t)) => Some(t),
            Some(Err(m)) => s.problem_at(key, m, Some("write `198.51.100.1` for ICMP or `tcp:198.51.100.1:80`")),
            None => s.problem_at(key, "expected a string".into(), None),
        }),
        interval: s.duration_or("interval", Duration::from_millis(1000)),
        timeout: s.duration_or("timeout", Duration::from_millis(800)),
        rise: s.int_or("rise", 1, 100, 2),
        fall: s.int_or("fall", 1, 100, 3),
        on_isolation: match s.opt_string("on-isolation") {
            None => OnIsolation::default(),
            Some(other) => other.parse().unwrap_or_else(|_| {
                let message = format!("unknown on-isolation policy `{other}`");
                s.problem("on-isolation", message, Some("one of release, keep")).unwrap_or_default()
            }),
        },
    });
    let group = root.table_or_empty("group", |s| {
        let restart_window = s.duration_or("restart-window", Duration::from_secs(60));
        GroupConfig {
            max_restarts: s.int_or("max-restarts", 0, 1000, 3),
            restart_window,
            failure_timeout: s.duration_or("failure-timeout", restart_window),
            drain_timeout: s.duration_or("drain-timeout", DEFAULT_DRAIN_TIMEOUT),
        }
    });
    let resources =
        root.opt_tables("resource").unwrap_or_default().into_iter().filter_map(|mut s| read_resource(&mut s)).collect();
    let paths = root.table_or_empty("paths", |s| PathsConfig {
        state_db: s.path_or("state-db", DEFAULT_STATE_DB),
        control_socket: s.path_or("control-socket", DEFAULT_CONTROL_SOCKET),
        hooks: s.list("hooks", |v, key, s| s.argv_value(v, key)),
    });
    let mail = root.section("mail", pbxha_watchdog::config::read_mail).flatten();
    let checks = pbxha_watchdog::config::read_checks(root);
    let watchdog = root.section("watchdog", |s| {
        let w = WatchdogConfig {
            device: s.path_or("device", DEFAULT_WATCHDOG_DEVICE),
            timeout: s.duration_or("timeout", DEFAULT_WATCHDOG_TIMEOUT),
        };
        if w.timeout < Duration::from_secs(1) {
            s.problem::<()>("timeout", "must be at least 1s".into(), Some("the driver counts whole seconds"));
        }
        w
    });
    let probes =
        root.opt_tables("probe").unwrap_or_default().into_iter().filter_map(|mut s| read_probe(&mut s)).collect();
    let mysql = root.section("mysql", pbxha_replica::mysql::read_mysql).flatten();
    let http = root.section("http", read_http);
    root.finish();
    Some(Config {
        cluster: cluster?,
        heartbeat,
        nodes,
        links,
        ping,
        group,
        resources,
        paths,
        mail,
        checks,
        watchdog,
        probes,
        mysql,
        http,
    })
}

fn read_http(s: &mut Reader) -> HttpConfig {
    let listen = s.opt_string("listen").map_or(DEFAULT_HTTP_LISTEN, |text| match text.parse() {
        Ok(addr) => addr,
        Err(_) => s
            .problem(
                "listen",
                format!("`{text}` is not ADDRESS:PORT"),
                Some("e.g. \"127.0.0.1:9642\" or \"[::1]:9642\""),
            )
            .unwrap_or(DEFAULT_HTTP_LISTEN),
    });
    let allow = s.list("allow", |v, key, s| match v.as_str().map(str::parse::<Cidr>) {
        Some(Ok(c)) => Some(c),
        Some(Err(m)) => s.problem_at(key, m, Some("a network such as \"198.51.100.0/24\"")),
        None => s.problem_at(key, "expected a string".into(), None),
    });
    if !listen.ip().is_loopback() && allow.is_empty() {
        s.problem::<()>(
            "allow",
            format!("required when `listen` ({listen}) is not a loopback address"),
            Some("list the networks that may read the status, e.g. allow = [\"198.51.100.0/24\"], or listen on 127.0.0.1"),
        );
    }
    HttpConfig { listen, allow }
}

fn read_link(s: &mut Reader, default_port: u16) -> LinkConfig {
    let mode = match s.opt_string("mode").as_deref() {
        Some("ucast") | None => LinkMode::Ucast,
        Some("bcast") => LinkMode::Bcast,
        Some("mcast") => LinkMode::Mcast,
        Some(other) => {
            s.problem::<()>("mode", format!("unknown link mode `{other}`"), Some("one of ucast, bcast, mcast"));
            LinkMode::Ucast
        }
    };
    let addresses = s
        .table("addresses")
        .map(|mut a| {
            let map = a.all(|v, key, a| match v.as_str().map(str::parse::<Cidr>) {
                Some(Ok(c)) => Some(c),
                Some(Err(m)) => a.problem_at(key, m, Some("write an address with its prefix, e.g. 203.0.113.1/24")),
                None => a.problem_at(key, "expected a string".into(), None),
            });
            map
        })
        .unwrap_or_default();
    let link = LinkConfig {
        name: s.string("name").unwrap_or_default(),
        mode,
        interface: s.opt_string("interface"),
        port: s.int_or("port", 1, 65535, default_port),
        group: s.opt_string("group").and_then(|g| match g.parse() {
            Ok(ip) => Some(ip),
            Err(_) => s.problem("group", format!("`{g}` is not an IP address"), None),
        }),
        addresses,
    };
    s.finish();
    link
}

fn read_resource(s: &mut Reader) -> Option<ResourceConfig> {
    let name = s.string("name").unwrap_or_default();
    let kind_name = s.string("kind");
    let kind = kind_name.as_deref().and_then(|name| ResourceKind::read(name, s));
    let start_timeout = s.duration_or("start-timeout", Duration::from_secs(20));
    let stop_timeout = s.duration_or("stop-timeout", Duration::from_secs(20));
    let monitor_timeout = s.duration_or("monitor-timeout", Duration::from_secs(10));
    let monitor_interval = s.duration_or("monitor-interval", Duration::from_secs(2));
    // A known kind has asked for every key it takes, even when one was wrong, so whatever is
    // left is a typo; without a known kind there is nothing to judge the rest by.
    if kind_name.as_deref().is_some_and(|k| ResourceKind::NAMES.contains(&k)) {
        s.finish();
    }
    Some(ResourceConfig { name, start_timeout, stop_timeout, monitor_timeout, monitor_interval, kind: kind? })
}

fn read_probe(s: &mut Reader) -> Option<ProbeConfig> {
    let name = s.string("name");
    let role = match s.string("role").as_deref() {
        Some("local-pbx") => s.string("resource").map(|resource| ProbeRole::LocalPbx { resource }),
        Some("vip") => Some(ProbeRole::Vip),
        Some("trunk") => Some(ProbeRole::Trunk),
        Some(other) => s.problem("role", format!("unknown probe role `{other}`"), Some("one of local-pbx, vip, trunk")),
        None => None,
    };
    let target = s.string("target").and_then(|t| match parse_sip_target(&t) {
        Ok(t) => Some(t),
        Err(m) => s.problem("target", m, Some("write `udp:198.51.100.100:5060` or `tcp:198.51.100.100:5060`")),
    });
    let interval = s.duration_or("interval", DEFAULT_PROBE_INTERVAL);
    let timeout = s.duration_or("timeout", DEFAULT_PROBE_TIMEOUT);
    let rise = s.int_or("rise", 1, 100, 2);
    let fall = s.int_or("fall", 1, 100, 3);
    let overloaded_is_alive = s.bool_or("overloaded-is-alive", false);
    s.finish();
    let (transport, target) = target?;
    Some(ProbeConfig {
        name: name?,
        role: role?,
        transport,
        target,
        interval,
        timeout,
        rise,
        fall,
        overloaded_is_alive,
    })
}

/// `udp:ADDR:PORT`, `tcp:ADDR:PORT`, or `ADDR[:PORT]` (UDP); the port defaults to 5060.
pub(super) fn parse_sip_target(text: &str) -> Result<(ProbeTransport, std::net::SocketAddr), String> {
    let (transport, rest) = match text.split_once(':') {
        Some(("udp", rest)) => (ProbeTransport::Udp, rest),
        Some(("tcp", rest)) => (ProbeTransport::Tcp, rest),
        _ => (ProbeTransport::Udp, text),
    };
    if let Ok(addr) = rest.parse() {
        return Ok((transport, addr));
    }
    let ip: IpAddr = rest
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .map_err(|_| format!("`{text}` is not [udp:|tcp:]ADDRESS[:PORT]"))?;
    Ok((transport, std::net::SocketAddr::new(ip, DEFAULT_SIP_PORT)))
}

fn parse_ping_target(s: &str) -> Result<PingTarget, String> {
    match s.strip_prefix("tcp:") {
        Some(rest) => {
            rest.parse().map(|addr| PingTarget::Tcp { addr }).map_err(|_| format!("`{rest}` is not ADDRESS:PORT"))
        }
        None => s.parse().map(|addr| PingTarget::Icmp { addr }).map_err(|_| format!("`{s}` is not an IP address")),
    }
}

#[cfg(test)]
mod watchdog_sections {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn config(extra: &str) -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("authkey");
        std::fs::write(&key, "0123456789abcdef0123456789abcdef\n").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let text = format!(
            "[cluster]\nname = \"t\"\nid = 7\nauth-key-file = \"{}\"\n[[node]]\nname = \"a\"\nid = 1\n[[node]]\nname = \"b\"\nid = 2\n\
             [[link]]\nname = \"hb\"\n[link.addresses]\na = \"203.0.113.11/24\"\nb = \"203.0.113.12/24\"\n{extra}",
            key.display()
        );
        (dir, text)
    }

    #[test]
    fn mail_checks_and_watchdog_are_read_and_not_unknown() {
        let (_dir, text) = config(
            "[mail]\nserver = \"127.0.0.1\"\nsecurity = \"none\"\nfrom = \"pbxha <a@example.org>\"\nto = [\"noc@example.org\"]\n\
             [[check]]\nname = \"uplink\"\nkind = \"ping\"\nevery = \"30s\"\nhost = \"198.51.100.1\"\n\
             [watchdog]\ntimeout = \"15s\"\n",
        );
        let c = parse(&text).unwrap();
        assert_eq!(c.mail.as_ref().map(|m| (m.server.as_str(), m.port)), Some(("127.0.0.1", 25)));
        assert_eq!(c.checks.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["uplink"]);
        let w = c.watchdog.unwrap();
        assert_eq!((w.device.to_str(), w.timeout), (Some(DEFAULT_WATCHDOG_DEVICE), Duration::from_secs(15)));
        let (_dir, bare) = config("");
        let c = parse(&bare).unwrap();
        assert!(c.mail.is_none() && c.checks.is_empty() && c.watchdog.is_none());
    }

    #[test]
    fn their_problems_keep_key_paths() {
        let (_dir, text) = config(
            "[mail]\nserver = \"127.0.0.1\"\nfrom = \"not an address\"\n\
             [[check]]\nname = \"x\"\nkind = \"ping\"\nevery = \"30s\"\nhost = \"nowhere\"\n\
             [watchdog]\ntimeout = 500\ndevise = \"/dev/watchdog0\"\n",
        );
        let problems = parse(&text).unwrap_err();
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        for key in ["mail.from", "check[0].host", "watchdog.timeout", "watchdog.devise"] {
            assert!(keys.contains(&key), "{key} missing from {problems:#?}");
        }
    }
}
