//! The `[mysql]` section of pbxha.toml, read from a parsed TOML table into [`MysqlConfig`],
//! collecting every problem with its key path through pbxha-conf's [`Reader`].

use std::path::PathBuf;

use pbxha_conf::{Problem, Reader};
use toml::Table;

/// Debian's MariaDB packages read every `*.cnf` here (`/etc/mysql/mariadb.cnf` includes it).
pub const DEFAULT_CONF_DIR: &str = "/etc/mysql/mariadb.conf.d";
/// The replication account pbxha creates on each server for its peer.
pub const DEFAULT_REPLICATION_USER: &str = "pbxha_repl";
/// MariaDB's and MySQL's default TCP port.
pub const DEFAULT_PORT: u16 = 3306;

/// How MySQL is made highly available.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// MySQL runs on both nodes on local disk and replicates both ways.
    MasterMaster,
    /// The datadir lives on the replicated filesystem; MySQL runs only on the primary as a
    /// resource of the group.
    Replica,
}

/// Where a server listens.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Endpoint {
    /// For the local server: the address the peer reaches it on (also the address its
    /// replication account on the peer is limited to). For the peer: where this node reaches it.
    pub host: String,
    pub port: u16,
    /// Unix socket for this node's own admin connection; only the local server has one.
    pub socket: Option<PathBuf>,
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.socket {
            Some(s) => write!(f, "{} (socket {})", self.host, s.display()),
            None => write!(f, "{}:{}", self.host, self.port),
        }
    }
}

/// TLS on the admin connection to the peer's server.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Tls {
    /// `peer.ca-file`: PEM certificate(s) of a private CA that signed the peer's
    /// certificate, trusted besides the public roots.
    pub ca_file: Option<PathBuf>,
}

/// The `[mysql]` section.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct MysqlConfig {
    pub mode: Mode,
    /// This node's `server-id`; must differ from the peer's.
    pub server_id: u32,
    /// MariaDB's `gtid-domain-id`: one domain per writer keeps two masters' GTIDs apart.
    pub gtid_domain_id: u32,
    pub local: Endpoint,
    /// Only in master-master mode.
    pub peer: Option<Endpoint>,
    /// Talk to the peer's server over TLS (rustls): `peer.tls = true`.
    pub peer_tls: Option<Tls>,
    pub admin_user: String,
    /// Holds the admin password (mode 0600); `None` means socket authentication locally.
    pub admin_password_file: Option<PathBuf>,
    pub replication_user: String,
    /// The databases copied from the seed node on the first setup.
    pub databases: Vec<String>,
    /// Where the server reads extra `*.cnf` files; pbxha writes only its own file there.
    pub conf_dir: PathBuf,
    /// This node's data wins the initial sync.
    pub seed: bool,
}

/// Reads the `[mysql]` table (the value of the `mysql` key, not the whole file).
pub fn parse_mysql(table: &Table) -> Result<MysqlConfig, Vec<Problem>> {
    pbxha_conf::read_table(table, "mysql", read_mysql)
}

/// Reads the keys of the `[mysql]` section `r`; the caller finishes it.
pub fn read_mysql(r: &mut Reader) -> Option<MysqlConfig> {
    let mode = match r.string("mode").as_deref() {
        Some("master-master") => Some(Mode::MasterMaster),
        Some("replica") => Some(Mode::Replica),
        Some(other) => r.problem("mode", format!("unknown mode `{other}`"), Some("\"master-master\" or \"replica\"")),
        None => None,
    };
    let master_master = mode != Some(Mode::Replica);
    let server_id = match master_master {
        true => r.int("server-id", 1, u32::MAX.into()),
        false => Some(r.int_or("server-id", 1, u32::MAX.into(), 1)),
    };
    let gtid_domain_id = r.opt_int("gtid-domain-id", 0, u32::MAX.into()).or(server_id);
    let (local, _) = endpoint(r, "local", true);
    let (peer, peer_tls) = match master_master {
        true => endpoint(r, "peer", false),
        false => (None, None),
    };
    let admin_user = r.opt_string("admin-user").unwrap_or_else(|| "root".into());
    let admin_password_file = r.opt_path("admin-password-file");
    let replication_user = r.opt_string("replication-user").unwrap_or_else(|| DEFAULT_REPLICATION_USER.into());
    let databases = r.strings_list("databases");
    let conf_dir = r.path_or("conf-dir", DEFAULT_CONF_DIR);
    let seed = r.bool_or("seed", false);
    if let Some(local) = &local {
        if admin_password_file.is_none() && local.socket.is_none() {
            r.problem::<()>(
                "admin-password-file",
                "without a password file pbxha logs in by socket authentication, but `mysql.local.socket` is not set"
                    .into(),
                Some("set local.socket = \"/run/mysqld/mysqld.sock\" or admin-password-file"),
            );
        }
    }
    if master_master && admin_password_file.is_none() {
        r.problem::<()>(
            "admin-password-file",
            "master-master setup logs in to the peer's server over TCP and needs a password".into(),
            Some("a file of mode 0600 holding the password of `admin-user`"),
        );
    }
    if replication_user.len() > 80 || replication_user.contains(['\'', '`', '\\']) {
        r.problem::<()>(
            "replication-user",
            format!("`{replication_user}` is not a usable account name"),
            Some("letters, digits and _"),
        );
    }
    for (i, db) in databases.iter().enumerate() {
        if db.is_empty() || db.len() > 64 || db.contains(['`', '/', '\\', '.']) {
            r.problem::<()>(&format!("databases[{i}]"), format!("`{db}` is not a database name"), None);
        }
    }
    Some(MysqlConfig {
        mode: mode?,
        server_id: server_id?,
        gtid_domain_id: gtid_domain_id?,
        local: local?,
        peer,
        peer_tls,
        admin_user,
        admin_password_file,
        replication_user,
        databases,
        conf_dir,
        seed,
    })
}

/// `local = { host, port, socket }` or `peer = { host, port, tls, ca-file }`; returns the
/// endpoint and the peer's TLS settings.
fn endpoint(r: &mut Reader, key: &'static str, local: bool) -> (Option<Endpoint>, Option<Tls>) {
    let hint = Some("e.g. { host = \"198.51.100.11\", port = 3306 }");
    let Some(mut sub) = r.required(key, hint).then(|| r.opt_table(key)).flatten() else {
        return (None, None);
    };
    let host = sub.string("host");
    let port = sub.int_or("port", 1, 65535, DEFAULT_PORT);
    let socket = if local { sub.opt_path("socket") } else { None };
    let tls = !local && sub.bool_or("tls", false);
    let ca_file = if local { None } else { sub.opt_path("ca-file") };
    if ca_file.is_some() && !tls {
        sub.problem::<()>(
            "ca-file",
            "a CA file is only used over TLS, and `tls` is not true".into(),
            Some("add tls = true next to ca-file"),
        );
    }
    let tls = tls.then_some(Tls { ca_file });
    sub.finish();
    (host.map(|host| Endpoint { host, port, socket }), tls)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<MysqlConfig, Vec<Problem>> {
        parse_mysql(&text.parse::<Table>().unwrap())
    }

    #[test]
    fn master_master_with_defaults() {
        let c = parse(
            "mode = \"master-master\"\nserver-id = 1\nseed = true\nadmin-password-file = \"/etc/pbxha/mysql.pw\"\n\
             local = { host = \"198.51.100.11\", socket = \"/run/mysqld/mysqld.sock\" }\n\
             peer = { host = \"198.51.100.12\", port = 3307, tls = true }\ndatabases = [\"asterisk\", \"asteriskcdrdb\"]\n",
        )
        .unwrap();
        assert_eq!(c.mode, Mode::MasterMaster);
        assert_eq!((c.server_id, c.gtid_domain_id), (1, 1), "the domain defaults to the server-id");
        assert_eq!(
            c.local,
            Endpoint { host: "198.51.100.11".into(), port: 3306, socket: Some("/run/mysqld/mysqld.sock".into()) }
        );
        assert_eq!(c.peer, Some(Endpoint { host: "198.51.100.12".into(), port: 3307, socket: None }));
        assert!(c.peer_tls == Some(Tls { ca_file: None }) && c.seed);
        assert_eq!((c.admin_user.as_str(), c.replication_user.as_str()), ("root", "pbxha_repl"));
        assert_eq!(c.conf_dir, PathBuf::from("/etc/mysql/mariadb.conf.d"));
        assert_eq!(c.databases, ["asterisk", "asteriskcdrdb"]);
    }

    #[test]
    fn a_private_ca_for_the_peer_needs_tls() {
        let base = "mode = \"master-master\"\nserver-id = 1\nadmin-password-file = \"/p\"\nlocal = { host = \"198.51.100.11\" }\n";
        let c = parse(&format!(
            "{base}peer = {{ host = \"198.51.100.12\", tls = true, ca-file = \"/etc/pbxha/mysql-ca.pem\" }}\n"
        ))
        .unwrap();
        assert_eq!(c.peer_tls, Some(Tls { ca_file: Some("/etc/pbxha/mysql-ca.pem".into()) }));
        let problems =
            parse(&format!("{base}peer = {{ host = \"198.51.100.12\", ca-file = \"/ca.pem\" }}\n")).unwrap_err();
        assert!(
            problems.len() == 1 && problems[0].key == "mysql.peer.ca-file" && problems[0].message.contains("tls"),
            "{problems:#?}"
        );
        // The local server is reached by socket or loopback: no CA there.
        let problems = parse(
            "mode = \"master-master\"\nserver-id = 1\nadmin-password-file = \"/p\"\n\
             local = { host = \"198.51.100.11\", ca-file = \"/ca.pem\" }\npeer = { host = \"198.51.100.12\" }\n",
        )
        .unwrap_err();
        assert_eq!(problems[0].key, "mysql.local.ca-file", "{problems:#?}");
    }

    #[test]
    fn replica_mode_needs_no_peer_and_may_use_socket_auth() {
        let c = parse("mode = \"replica\"\nlocal = { host = \"127.0.0.1\", socket = \"/run/mysqld/mysqld.sock\" }\n")
            .unwrap();
        assert_eq!((c.mode, c.peer, c.admin_password_file), (Mode::Replica, None, None));
    }

    #[test]
    fn every_problem_with_its_key_path() {
        let problems = parse(
            "mode = \"multi\"\nserver-id = 0\nlocal = { host = \"198.51.100.11\", prot = 3306 }\n\
             peer = { port = \"x\" }\ndatabases = [\"a.b\", 3]\nsed = true\n",
        )
        .unwrap_err();
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "mysql.mode",
                "mysql.server-id",
                "mysql.local.prot",
                "mysql.peer.host",
                "mysql.peer.port",
                "mysql.databases[1]",
                "mysql.admin-password-file",
                "mysql.admin-password-file",
                "mysql.databases[0]",
                "mysql.sed",
            ],
            "{problems:#?}"
        );
        assert_eq!(
            problems[0].to_string(),
            "mysql.mode: unknown mode `multi` (hint: \"master-master\" or \"replica\")"
        );
        assert_eq!(problems[1].message, "0 is out of range (1 to 4294967295)");
    }
}
