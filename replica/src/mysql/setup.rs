//! `pbxha mysql setup`: master-master replication from scratch, idempotently.
//!
//! Order matters for "nothing half-configured": everything that can be refused (logins,
//! binary logging, server-id clash, a foreign account in the way) is checked on both servers
//! before anything changes there. What changes afterwards is ordered so that a rerun after a
//! failure starts over and completes it: replication is reset, the accounts are (re)created,
//! the seed's databases copied, positions set, and only then replication started.

use std::time::{Duration, Instant};

use pbxha_runner::Runner;

use super::client::{Credentials, Server};
use super::config::{Endpoint, Mode, MysqlConfig};
use super::fragment::{self, AUTO_INCREMENT_INCREMENT};
use super::status::ReplicaStatus;
use super::{sql, sync, Flavor};
use crate::error::{Error, Result};

/// How long both directions may take to report running threads after `START SLAVE`, and a
/// canary row to arrive: generous, the machines may be busy.
pub const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);

/// One step of a setup run, as reported to the operator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    pub what: String,
    /// `false`: found as wanted and left as is.
    pub changed: bool,
}

/// The settings one server must run with, read with [`read_settings`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    pub server_id: u32,
    pub log_bin: bool,
    pub log_slave_updates: bool,
    pub binlog_format: String,
    pub auto_increment_increment: u32,
    pub auto_increment_offset: u32,
    /// MariaDB only.
    pub gtid_domain_id: Option<u32>,
}

async fn read_settings(server: &mut Server) -> Result<Settings> {
    let domain = if server.flavor == Flavor::MariaDb { "@@GLOBAL.gtid_domain_id" } else { "NULL" };
    let query = format!(
        "SELECT @@GLOBAL.server_id, @@GLOBAL.log_bin, @@GLOBAL.log_slave_updates, @@GLOBAL.binlog_format, \
         @@GLOBAL.auto_increment_increment, @@GLOBAL.auto_increment_offset, {domain}"
    );
    let row = server.rows(&query).await?.into_iter().next().unwrap_or_default();
    let text = |i: usize| row.get(i).and_then(|(_, v)| v.clone()).unwrap_or_default();
    let num = |i: usize| -> Result<u32> {
        text(i).parse().map_err(|_| Error::Mysql {
            server: server.name.clone(),
            message: format!("`{query}` gave `{}` in column {i}", text(i)),
        })
    };
    Ok(Settings {
        server_id: num(0)?,
        log_bin: text(1) == "1",
        log_slave_updates: text(2) == "1",
        binlog_format: text(3),
        auto_increment_increment: num(4)?,
        auto_increment_offset: num(5)?,
        gtid_domain_id: match server.flavor {
            Flavor::MariaDb => Some(num(6)?),
            Flavor::Mysql8 => None,
        },
    })
}

/// Why this node's running server does not yet run with what the fragment says. All of
/// these need a restart: server_id, gtid_domain_id and the auto-increment settings have a
/// session scope in MariaDB, so a `SET GLOBAL` would leave open sessions (the PBX's) writing
/// with the old values.
pub fn local_problem(cfg: &MysqlConfig, have: &Settings) -> Option<(&'static str, String)> {
    let offset = fragment::auto_increment_offset(cfg);
    let differs = |setting: &'static str, running: String, wanted: String| {
        (running != wanted).then(|| (setting, format!("is {running}, the fragment says {wanted}")))
    };
    if !have.log_bin {
        return Some(("log_bin", "is off (binary logging), the fragment turns it on".into()));
    }
    if !have.log_slave_updates {
        return Some(("log_slave_updates", "is off, the fragment turns it on".into()));
    }
    differs("server_id", have.server_id.to_string(), cfg.server_id.to_string())
        .or_else(|| match have.gtid_domain_id {
            Some(d) => differs("gtid_domain_id", d.to_string(), cfg.gtid_domain_id.to_string()),
            None => None,
        })
        .or_else(|| differs("binlog_format", have.binlog_format.clone(), "ROW".into()))
        .or_else(|| {
            differs(
                "auto_increment_increment",
                have.auto_increment_increment.to_string(),
                AUTO_INCREMENT_INCREMENT.to_string(),
            )
        })
        .or_else(|| differs("auto_increment_offset", have.auto_increment_offset.to_string(), offset.to_string()))
}

/// Why the peer's server is not ready to pair with this node's configuration.
pub fn peer_problem(cfg: &MysqlConfig, peer: &Settings) -> Option<(&'static str, String)> {
    let later = "run `pbxha mysql setup` on the peer node (and restart its server if it says so)";
    if peer.server_id == cfg.server_id {
        return Some((
            "server_id",
            format!("{} is also this node's mysql.server-id; the two must differ", peer.server_id),
        ));
    }
    if peer.gtid_domain_id == Some(cfg.gtid_domain_id) {
        return Some((
            "gtid_domain_id",
            format!("{} is also this node's mysql.gtid-domain-id; the two must differ", cfg.gtid_domain_id),
        ));
    }
    if !peer.log_bin {
        return Some(("log_bin", format!("binary logging is off; {later}")));
    }
    if !peer.log_slave_updates {
        return Some(("log_slave_updates", format!("is off; {later}")));
    }
    if peer.auto_increment_increment != AUTO_INCREMENT_INCREMENT
        || peer.auto_increment_offset == fragment::auto_increment_offset(cfg)
    {
        return Some((
            "auto_increment_offset",
            format!(
                "increment {} offset {} collides with this node's offset {} (is `seed` true on both nodes?); {later}",
                peer.auto_increment_increment,
                peer.auto_increment_offset,
                fragment::auto_increment_offset(cfg)
            ),
        ));
    }
    None
}

/// A freshly generated replication password: 144 random bits as hex.
pub(crate) fn generate_password() -> Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 18];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| Error::io("reading /dev/urandom for a replication password", e))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Whether the replication account exists; refuses one that has more than replication rights.
async fn check_account(server: &mut Server, user: &str, host: &str) -> Result<bool> {
    let exists = server
        .scalar(&format!(
            "SELECT COUNT(*) FROM mysql.user WHERE User = {} AND Host = {}",
            sql::quote(user),
            sql::quote(host)
        ))
        .await?;
    if exists.as_deref() == Some("0") {
        return Ok(false);
    }
    let grants: Vec<String> = server
        .rows(&format!("SHOW GRANTS FOR {}", sql::account(user, host)))
        .await?
        .into_iter()
        .filter_map(|row| row.into_iter().next().and_then(|(_, v)| v))
        .collect();
    match sql::replication_only_grants(&grants) {
        Ok(()) => Ok(true),
        Err(other) => Err(Error::MysqlSetting {
            server: server.name.clone(),
            setting: "mysql.replication-user".into(),
            message: format!(
                "account {} already exists with other grants ({}); pbxha will not take it over: choose another replication-user or drop that account",
                sql::account(user, host),
                other.join(", ")
            ),
        }),
    }
}

/// (Re)creates the replication account with `password`, outside the binary log so it does
/// not replicate to the other server (where the same name belongs to the other direction).
async fn ensure_account(server: &mut Server, user: &str, host: &str, exists: bool, password: &str) -> Result<()> {
    let acct = sql::account(user, host);
    let create = match exists {
        true => format!("ALTER USER {acct} IDENTIFIED BY {}", sql::quote(password)),
        false => format!("CREATE USER {acct} IDENTIFIED BY {}", sql::quote(password)),
    };
    let grant = format!("GRANT REPLICATION SLAVE ON *.* TO {acct}");
    let result = server.exec(&["SET SESSION sql_log_bin = 0", &create, &grant]).await;
    server.exec(&["SET SESSION sql_log_bin = 1"]).await?;
    result
}

const CANARY_SCHEMA: [&str; 2] = [
    "CREATE DATABASE IF NOT EXISTS pbxha",
    "CREATE TABLE IF NOT EXISTS pbxha.canary (server_id INT UNSIGNED PRIMARY KEY, token VARCHAR(64) NOT NULL, \
     written TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP) ENGINE=InnoDB",
];

/// Writes a canary row on `from` and waits for it on `to`: proof that this direction works.
async fn canary(from: &mut Server, to: &mut Server) -> Result<()> {
    let id = from.scalar("SELECT @@GLOBAL.server_id").await?.unwrap_or_default();
    let token = generate_password()?;
    from.exec(&[&format!("REPLACE INTO pbxha.canary (server_id, token) VALUES ({id}, {})", sql::quote(&token))])
        .await?;
    let query = format!("SELECT token FROM pbxha.canary WHERE server_id = {id}");
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    while Instant::now() < deadline {
        if to.scalar(&query).await?.as_deref() == Some(token.as_str()) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let status = to.replica_status().await?.map(|s| format!("{s:?}")).unwrap_or_else(|| "not configured".into());
    Err(Error::Mysql {
        server: to.name.clone(),
        message: format!(
            "a canary row written on {} did not arrive within {SETTLE_TIMEOUT:?}; replication status: {status}",
            from.name
        ),
    })
}

/// Waits until `server` replicates from its source with both threads running.
async fn wait_running(server: &mut Server) -> Result<()> {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    loop {
        let status = server.replica_status().await?;
        match &status {
            Some(s) if s.healthy() => return Ok(()),
            Some(s) if s.io_error.is_some() || s.sql_error.is_some() || Instant::now() >= deadline => {
                return Err(Error::Mysql {
                    server: server.name.clone(),
                    message: format!("replication does not run: {s:?}"),
                })
            }
            None => {
                return Err(Error::Mysql {
                    server: server.name.clone(),
                    message: "replication vanished while starting".into(),
                })
            }
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// What each server's replication looks like before setup touches it.
enum Found {
    /// Configured from the right source and running: left as is.
    Running,
    /// Not configured, or configured but stopped without an error: set up (again).
    Absent,
}

fn classify(server: &Server, status: Option<&ReplicaStatus>, source: &Endpoint) -> Result<Found> {
    classify_status(&server.name, server.flavor, status, source)
}

/// [`classify`] on what the server said; its advice uses the flavor's own statements.
fn classify_status(server: &str, flavor: Flavor, status: Option<&ReplicaStatus>, source: &Endpoint) -> Result<Found> {
    let Some(s) = status else {
        return Ok(Found::Absent);
    };
    let want = format!("{}:{}", source.host, source.port);
    if let Some(e) = s.sql_error.as_ref().or(s.io_error.as_ref()) {
        return Err(Error::Mysql {
            server: server.to_string(),
            message: format!(
                "replication from {} is configured but failing (error {}: {}); setup will not overwrite data on a broken pair: \
                 fix it and {}, or {} there to have setup copy the seed's databases again",
                s.source,
                e.errno,
                e.message,
                sql::replication(flavor, "START"),
                sql::replication(flavor, "RESET"),
            ),
        });
    }
    Ok(if s.healthy() && s.source == want { Found::Running } else { Found::Absent })
}

/// What starts replication on a server from `source` once the server holds the data: skip
/// `skip` (MariaDB: the GTID position to resume after, set as `gtid_slave_pos`; MySQL 8: GTIDs
/// the server lacks but must not fetch, added to `gtid_purged`, nothing when empty), point it
/// at `source`, start.
pub fn start_statements(flavor: Flavor, skip: &str, source: &Endpoint, user: &str, password: &str) -> Vec<String> {
    let mut statements = Vec::with_capacity(3);
    match flavor {
        Flavor::MariaDb => statements.push(format!("SET GLOBAL gtid_slave_pos = {}", sql::quote(skip))),
        Flavor::Mysql8 if skip.is_empty() => {}
        Flavor::Mysql8 => statements.push(sql::add_gtid_purged(skip)),
    }
    statements.push(sql::change_source(flavor, &source.host, source.port, user, password));
    statements.push(sql::replication(flavor, "START"));
    statements
}

/// Sets up master-master replication between this node's server and the peer's, reporting
/// each step; `progress` gets the initial copy's byte counts.
pub async fn setup(
    cfg: &MysqlConfig,
    runner: &dyn Runner,
    progress: &mut (dyn FnMut(&str) + Send),
) -> Result<Vec<Step>> {
    let peer_ep = match (cfg.mode, &cfg.peer) {
        (Mode::MasterMaster, Some(peer)) => peer,
        _ => {
            return Err(Error::MysqlSetting {
                server: "this node".into(),
                setting: "mysql.mode".into(),
                message: "setup configures master-master replication; in replica mode MySQL is a resource of the group"
                    .into(),
            })
        }
    };
    let mut steps = Vec::new();
    let creds = Credentials::load(cfg)?;
    let mut local = Server::connect("local", &cfg.local, &creds, None).await?;
    let written = fragment::write(&cfg.conf_dir, &fragment::render(cfg, local.flavor))?;
    let (fragment_path, changed) = match &written {
        fragment::Written::Unchanged(p) => (p.clone(), false),
        fragment::Written::Created(p) | fragment::Written::Updated(p) => (p.clone(), true),
    };
    steps.push(Step { what: format!("server settings in {}", fragment_path.display()), changed });

    let mut peer = Server::connect("peer", peer_ep, &creds, cfg.peer_tls.as_ref()).await?;
    if local.flavor != peer.flavor {
        return Err(Error::Mysql {
            server: peer.name.clone(),
            message: format!(
                "{} cannot pair with this node's {}: both servers must be MariaDB, or both MySQL 8",
                peer.version, local.version
            ),
        });
    }
    let flavor = local.flavor;
    let have = read_settings(&mut local).await?;
    if let Some((setting, running)) = local_problem(cfg, &have) {
        return Err(Error::MysqlSetting {
            server: local.name.clone(),
            setting: setting.into(),
            message: format!(
                "{running} ({}): restart this server, then run `pbxha mysql setup` again",
                fragment_path.display()
            ),
        });
    }
    let peer_settings = read_settings(&mut peer).await?;
    if let Some((setting, message)) = peer_problem(cfg, &peer_settings) {
        return Err(Error::MysqlSetting { server: peer.name.clone(), setting: setting.into(), message });
    }
    // Checked before anything changes on either server.
    let user = &cfg.replication_user;
    let local_account = check_account(&mut local, user, &peer_ep.host).await?;
    let peer_account = check_account(&mut peer, user, &cfg.local.host).await?;
    let local_status = local.replica_status().await?;
    let local_found = classify(&local, local_status.as_ref(), peer_ep)?;
    let peer_status = peer.replica_status().await?;
    let peer_found = classify(&peer, peer_status.as_ref(), &cfg.local)?;

    steps.push(Step { what: format!("running settings of {}", local.name), changed: false });

    if let (Found::Running, Found::Running) = (&local_found, &peer_found) {
        steps.push(Step { what: format!("replication accounts {user} on both servers"), changed: false });
        steps.push(Step { what: "initial copy of the seed's databases (done before)".into(), changed: false });
        steps.push(Step { what: "replication both ways".into(), changed: false });
    } else {
        for server in [&mut local, &mut peer] {
            if server.replica_status().await?.is_some() {
                let flavor = server.flavor;
                server.exec(&[&sql::replication(flavor, "STOP"), &sql::replication(flavor, "RESET")]).await?;
            }
        }
        let local_password = generate_password()?;
        let peer_password = generate_password()?;
        ensure_account(&mut local, user, &peer_ep.host, local_account, &local_password).await?;
        ensure_account(&mut peer, user, &cfg.local.host, peer_account, &peer_password).await?;
        steps.push(Step { what: format!("replication accounts {user} on both servers, new passwords"), changed: true });
        for server in [&mut local, &mut peer] {
            let mut statements = vec!["SET SESSION sql_log_bin = 0"];
            statements.extend(CANARY_SCHEMA);
            statements.push("SET SESSION sql_log_bin = 1");
            server.exec(&statements).await?;
        }

        let (seed, other, seed_ep, other_ep) = match cfg.seed {
            true => (&mut local, &mut peer, &cfg.local, peer_ep),
            false => (&mut peer, &mut local, peer_ep, &cfg.local),
        };
        let seed_gtid = if cfg.databases.is_empty() {
            steps.push(Step { what: "initial copy: no databases chosen".into(), changed: false });
            seed.scalar(sql::gtid_executed_query(flavor)).await?.unwrap_or_default()
        } else {
            let synced = sync::copy(
                runner,
                flavor,
                (&seed.name, seed_ep),
                (&other.name, other_ep),
                &creds,
                &cfg.databases,
                progress,
            )
            .await?;
            steps.push(Step {
                what: format!(
                    "initial copy of {} from {} to {} ({} bytes)",
                    cfg.databases.join(", "),
                    seed.name,
                    other.name,
                    synced.bytes
                ),
                changed: true,
            });
            synced.gtid
        };
        let other_gtid = other.scalar(sql::gtid_executed_query(flavor)).await?.unwrap_or_default();
        // Each side starts after what it already has: the other from the snapshot it was
        // given, the seed after everything the other wrote before (its data lost the copy).
        // The other server replicates from the seed with the seed's account on it, and back.
        let (seed_password, other_password) = match cfg.seed {
            true => (&local_password, &peer_password),
            false => (&peer_password, &local_password),
        };
        for (server, gtid, source, password) in
            [(&mut *other, &seed_gtid, seed_ep, seed_password), (&mut *seed, &other_gtid, other_ep, other_password)]
        {
            // MySQL 8 may already have some of it (the import applied the dump's
            // GTID_PURGED); gtid_purged takes only what is not executed yet.
            let skip = match flavor {
                Flavor::MariaDb => gtid.clone(),
                Flavor::Mysql8 => server.scalar(&sql::gtids_missing(gtid)).await?.unwrap_or_default(),
            };
            let statements = start_statements(flavor, &skip, source, user, password);
            let statements: Vec<&str> = statements.iter().map(String::as_str).collect();
            server.exec(&statements).await?;
        }
        wait_running(&mut local).await?;
        wait_running(&mut peer).await?;
        steps.push(Step {
            what: match flavor {
                Flavor::MariaDb => "replication both ways (MASTER_USE_GTID=slave_pos)",
                Flavor::Mysql8 => "replication both ways (SOURCE_AUTO_POSITION=1)",
            }
            .into(),
            changed: true,
        });
    }
    canary(&mut local, &mut peer).await?;
    canary(&mut peer, &mut local).await?;
    steps.push(Step { what: "canary rows written on each side and read on the other".into(), changed: true });
    local.close().await;
    peer.close().await;
    Ok(steps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_pair_is_refused_with_the_flavors_own_statements() {
        let broken = ReplicaStatus {
            source: "198.51.100.12:3306".into(),
            io: crate::mysql::status::IoState::Yes,
            sql_running: false,
            seconds_behind: None,
            io_error: None,
            sql_error: Some(crate::mysql::status::ThreadError { errno: 1062, message: "Duplicate entry".into() }),
            gtid_received: String::new(),
            gtid_applied: String::new(),
        };
        let source = Endpoint { host: "198.51.100.12".into(), port: 3306, socket: None };
        for (flavor, start, reset) in [
            (Flavor::MariaDb, "START SLAVE", "RESET SLAVE ALL"),
            (Flavor::Mysql8, "START REPLICA", "RESET REPLICA ALL"),
        ] {
            let Err(e) = classify_status("peer x", flavor, Some(&broken), &source) else {
                panic!("{flavor:?}: a failing pair was accepted");
            };
            let e = e.to_string();
            assert!(e.contains("error 1062") && e.contains(start) && e.contains(reset), "{flavor:?}: {e}");
            let other = if flavor == Flavor::Mysql8 { "SLAVE" } else { "REPLICA" };
            assert!(!e.contains(other), "{flavor:?}: {e}");
        }
    }

    fn cfg() -> MysqlConfig {
        let text = "mode = \"master-master\"\nserver-id = 1\nseed = true\nadmin-password-file = \"/p\"\n\
                    local = { host = \"198.51.100.11\" }\npeer = { host = \"198.51.100.12\" }\n";
        super::super::parse_mysql(&text.parse().unwrap()).unwrap()
    }

    fn settings(server_id: u32, offset: u32) -> Settings {
        Settings {
            server_id,
            log_bin: true,
            log_slave_updates: true,
            binlog_format: "ROW".into(),
            auto_increment_increment: 2,
            auto_increment_offset: offset,
            gtid_domain_id: Some(server_id),
        }
    }

    #[test]
    fn local_settings_that_need_a_restart() {
        assert_eq!(local_problem(&cfg(), &settings(1, 1)), None);
        assert_eq!(local_problem(&cfg(), &settings(3, 1)), Some(("server_id", "is 3, the fragment says 1".into())));
        let off = Settings { log_bin: false, ..settings(1, 1) };
        assert_eq!(local_problem(&cfg(), &off).map(|p| p.0), Some("log_bin"));
        let mixed = Settings { binlog_format: "MIXED".into(), ..settings(1, 1) };
        assert_eq!(local_problem(&cfg(), &mixed), Some(("binlog_format", "is MIXED, the fragment says ROW".into())));
    }

    #[test]
    fn statements_that_start_replication_for_both_flavors() {
        let source = Endpoint { host: "198.51.100.11".into(), port: 3306, socket: None };
        assert_eq!(
            start_statements(Flavor::MariaDb, "1-1-4", &source, "pbxha_repl", "pw"),
            [
                "SET GLOBAL gtid_slave_pos = '1-1-4'",
                "CHANGE MASTER TO MASTER_HOST='198.51.100.11', MASTER_PORT=3306, MASTER_USER='pbxha_repl', \
                 MASTER_PASSWORD='pw', MASTER_CONNECT_RETRY=10, MASTER_USE_GTID=slave_pos",
                "START SLAVE",
            ]
        );
        let change = "CHANGE REPLICATION SOURCE TO SOURCE_HOST='198.51.100.11', SOURCE_PORT=3306, \
                      SOURCE_USER='pbxha_repl', SOURCE_PASSWORD='pw', SOURCE_CONNECT_RETRY=10, \
                      SOURCE_AUTO_POSITION=1, GET_SOURCE_PUBLIC_KEY=1";
        assert_eq!(
            start_statements(
                Flavor::Mysql8,
                "2b31c066-c297-11f0-b65a-52663f90e7a2:1-1665",
                &source,
                "pbxha_repl",
                "pw"
            ),
            ["SET GLOBAL gtid_purged = '+2b31c066-c297-11f0-b65a-52663f90e7a2:1-1665'", change, "START REPLICA",]
        );
        // Nothing to skip (the import applied the dump's GTID_PURGED already).
        assert_eq!(start_statements(Flavor::Mysql8, "", &source, "pbxha_repl", "pw"), [change, "START REPLICA"]);
    }

    #[test]
    fn peer_clash_and_readiness() {
        assert_eq!(peer_problem(&cfg(), &settings(2, 2)), None);
        let (setting, message) = peer_problem(&cfg(), &settings(1, 2)).unwrap();
        assert_eq!(setting, "server_id");
        assert!(message.contains("mysql.server-id"), "{message}");
        assert_eq!(peer_problem(&cfg(), &settings(2, 1)).map(|p| p.0), Some("auto_increment_offset"));
        let off = Settings { log_bin: false, ..settings(2, 2) };
        assert_eq!(peer_problem(&cfg(), &off).map(|p| p.0), Some("log_bin"));
    }
}
