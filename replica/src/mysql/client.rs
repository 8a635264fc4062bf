//! An admin connection to one server of the pair (mysql_async; TLS through rustls), whose
//! every error names the server.

use std::path::Path;
use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder, Row, SslOpts, Value};

use super::config::{Endpoint, MysqlConfig, Tls};
use super::status::{parse_replica_status, Column, ReplicaStatus, ServerStatus};
use super::{sql, Flavor};
use crate::error::{Error, Result};

/// How long a login may take before the server counts as unreachable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Admin credentials, read once from the config's password file.
#[derive(Clone)]
pub struct Credentials {
    pub user: String,
    pub password: Option<String>,
    /// The config keys the user and password came from, named when a login is refused:
    /// `[mysql]`'s admin account and a `mysql` resource's own are set in different places.
    pub keys: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("user", &self.user).finish_non_exhaustive()
    }
}

impl Credentials {
    /// `admin-user` with the password from `admin-password-file`, which must be mode 0600
    /// (nobody else may read a database admin's password).
    pub fn load(cfg: &MysqlConfig) -> Result<Credentials> {
        Credentials::from_file(
            &cfg.admin_user,
            cfg.admin_password_file.as_deref(),
            ("mysql.admin-user", "mysql.admin-password-file"),
        )
    }

    /// `user` with the password from `password_file` (mode 0600), if any; `keys` are the
    /// config keys that named the user and the file, for error messages.
    pub fn from_file(user: &str, password_file: Option<&Path>, keys: (&str, &str)) -> Result<Credentials> {
        let password = match password_file {
            None => None,
            Some(path) => Some(read_secret(path, keys.1)?),
        };
        Ok(Credentials { user: user.to_string(), password, keys: format!("{} / {}", keys.0, keys.1) })
    }
}

fn read_secret(path: &Path, setting: &str) -> Result<String> {
    use std::os::unix::fs::PermissionsExt;
    let setting =
        |message: String| Error::MysqlSetting { server: "this node".into(), setting: setting.to_string(), message };
    let meta = std::fs::metadata(path).map_err(|e| setting(format!("cannot read {}: {e}", path.display())))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(setting(format!(
            "{} has mode {mode:04o}; it must be 0600 (chmod 600 {})",
            path.display(),
            path.display()
        )));
    }
    let text = std::fs::read_to_string(path).map_err(|e| setting(format!("cannot read {}: {e}", path.display())))?;
    Ok(text.trim_end_matches(['\n', '\r']).to_string())
}

/// One open admin connection.
pub struct Server {
    /// `local 198.51.100.11:3306` or `peer ...`, used in every message about this server.
    pub name: String,
    pub flavor: Flavor,
    pub version: String,
    conn: Conn,
}

impl Server {
    /// Logs in to `endpoint` (by its socket when it has one). `role` is `local` or `peer`.
    pub async fn connect(role: &str, endpoint: &Endpoint, creds: &Credentials, tls: Option<&Tls>) -> Result<Server> {
        let name = format!("{role} {endpoint}");
        let mut opts = OptsBuilder::default()
            .ip_or_hostname(endpoint.host.clone())
            .tcp_port(endpoint.port)
            .user(Some(creds.user.clone()))
            .pass(creds.password.clone())
            .prefer_socket(false)
            // One connection per run: no statement cache, no pool.
            .stmt_cache_size(0);
        if let Some(socket) = &endpoint.socket {
            opts = opts.socket(Some(socket.to_string_lossy().into_owned()));
        }
        if let Some(tls) = tls {
            let mut ssl = SslOpts::default();
            if let Some(ca) = &tls.ca_file {
                // Read here, so a missing file is named before any connection is tried.
                let pem = std::fs::read(ca).map_err(|e| Error::MysqlSetting {
                    server: name.clone(),
                    setting: format!("mysql.{role}.ca-file"),
                    message: format!("cannot read {}: {e}", ca.display()),
                })?;
                ssl = ssl.with_root_certs(vec![pem.into()]);
            }
            opts = opts.ssl_opts(ssl);
        }
        let conn = match tokio::time::timeout(CONNECT_TIMEOUT, Conn::new(opts)).await {
            Err(_) => {
                return Err(Error::MysqlSetting {
                    server: name,
                    setting: format!("mysql.{role}.host"),
                    message: format!("no answer within {CONNECT_TIMEOUT:?}{}", unreachable_hint(role)),
                })
            }
            Ok(Err(e)) => return Err(login_error(&name, role, creds, e)),
            Ok(Ok(conn)) => conn,
        };
        let mut server = Server { name, flavor: Flavor::MariaDb, version: String::new(), conn };
        server.version = server.scalar("SELECT VERSION()").await?.unwrap_or_default();
        server.flavor = Flavor::from_version(&server.version);
        Ok(server)
    }

    /// Runs statements, in order, on this connection.
    pub async fn exec(&mut self, statements: &[&str]) -> Result<()> {
        for s in statements {
            self.conn.query_drop(*s).await.map_err(|e| self.query_error(s, e))?;
        }
        Ok(())
    }

    /// Every row of a query as (column, text) pairs.
    pub async fn rows(&mut self, query: &str) -> Result<Vec<Vec<Column>>> {
        let rows: Vec<Row> = self.conn.query(query).await.map_err(|e| self.query_error(query, e))?;
        Ok(rows.into_iter().map(row_columns).collect())
    }

    /// The first column of the first row.
    pub async fn scalar(&mut self, query: &str) -> Result<Option<String>> {
        Ok(self.rows(query).await?.into_iter().next().and_then(|row| row.into_iter().next()).and_then(|(_, v)| v))
    }

    /// This server's replication from the other one; `None` when not configured.
    pub async fn replica_status(&mut self) -> Result<Option<ReplicaStatus>> {
        let rows = self.rows(sql::status_query(self.flavor)).await?;
        let Some(row) = rows.into_iter().next() else {
            return Ok(None);
        };
        parse_replica_status(&row).map(Some).map_err(|message| Error::Mysql {
            server: self.name.clone(),
            message: format!("{}: {message}", sql::status_query(self.flavor)),
        })
    }

    /// The status monitoring shows for this server.
    pub async fn status(&mut self) -> Result<ServerStatus> {
        let gtid_query = match self.flavor {
            Flavor::MariaDb => "SELECT @@GLOBAL.gtid_binlog_pos",
            Flavor::Mysql8 => "SELECT @@GLOBAL.gtid_executed",
        };
        let gtid_binlog = self.scalar(gtid_query).await?.unwrap_or_default().replace('\n', "");
        let mut replica = self.replica_status().await?;
        if let Some(r) = replica.as_mut().filter(|r| r.gtid_applied.is_empty() && self.flavor == Flavor::MariaDb) {
            // MariaDB shows Gtid_Slave_Pos only in SHOW ALL SLAVES STATUS.
            r.gtid_applied = self.scalar("SELECT @@GLOBAL.gtid_slave_pos").await?.unwrap_or_default();
        }
        Ok(ServerStatus { server: self.name.clone(), version: self.version.clone(), gtid_binlog, replica })
    }

    /// Closes the connection politely (the server logs aborted connections otherwise).
    pub async fn close(self) {
        let _ = self.conn.disconnect().await;
    }

    fn query_error(&self, query: &str, e: mysql_async::Error) -> Error {
        // Never echo a password that a statement carries.
        let shown = match query.find("PASSWORD") {
            Some(i) => format!("{} ...", &query[..i]),
            None => query.to_string(),
        };
        Error::Mysql { server: self.name.clone(), message: format!("`{shown}` failed: {e}") }
    }
}

/// Logs in to this node's server at `endpoint` and runs `SELECT 1`: the liveness check of
/// the `mysql` resource, shared with the test that runs it against a real server.
pub async fn select_one(endpoint: &Endpoint, creds: &Credentials) -> Result<()> {
    let mut server = Server::connect("local", endpoint, creds, None).await?;
    let answer = server.scalar("SELECT 1").await;
    let name = server.name.clone();
    server.close().await;
    match answer? {
        Some(one) if one == "1" => Ok(()),
        other => Err(Error::Mysql { server: name, message: format!("`SELECT 1` answered {other:?}") }),
    }
}

fn login_error(name: &str, role: &str, creds: &Credentials, e: mysql_async::Error) -> Error {
    match &e {
        // ER_ACCESS_DENIED_ERROR (1045) and ER_DBACCESS_DENIED_ERROR (1044).
        mysql_async::Error::Server(s) if s.code == 1045 || s.code == 1044 => Error::MysqlSetting {
            server: name.to_string(),
            setting: creds.keys.clone(),
            message: format!("login as `{}` refused: {}", creds.user, s.message),
        },
        _ => Error::MysqlSetting {
            server: name.to_string(),
            setting: format!("mysql.{role}"),
            message: format!("cannot connect: {e}{}", unreachable_hint(role)),
        },
    }
}

/// Why a peer's server may not answer although it runs: Debian's MariaDB and MySQL
/// packages ship `bind-address = 127.0.0.1` (50-server.cnf, mysqld.cnf), which refuses
/// every other host.
fn unreachable_hint(role: &str) -> &'static str {
    match role {
        "peer" => "; if its server runs, check that its `bind-address` is not 127.0.0.1 (Debian's default), which refuses other hosts",
        _ => "",
    }
}

fn row_columns(row: Row) -> Vec<Column> {
    let names: Vec<String> = row.columns_ref().iter().map(|c| c.name_str().into_owned()).collect();
    let values = row.unwrap();
    names.into_iter().zip(values).map(|(n, v)| (n, value_text(v))).collect()
}

/// The text protocol sends every value as bytes; other variants are formatted for safety.
fn value_text(v: Value) -> Option<String> {
    match v {
        Value::NULL => None,
        Value::Bytes(b) => Some(String::from_utf8_lossy(&b).into_owned()),
        Value::Int(i) => Some(i.to_string()),
        Value::UInt(u) => Some(u.to_string()),
        other => Some(other.as_sql(true)),
    }
}

/// Asks both servers of the pair how their replication is doing; a side that cannot be
/// asked (down, unreachable, refused login) carries the reason instead.
pub async fn pair_status(cfg: &MysqlConfig) -> super::status::PairStatus {
    async fn ask(
        role: &str,
        endpoint: &Endpoint,
        creds: &Result<Credentials>,
        tls: Option<&Tls>,
    ) -> Result<ServerStatus, String> {
        let creds = creds.as_ref().map_err(ToString::to_string)?;
        let mut server = Server::connect(role, endpoint, creds, tls).await.map_err(|e| e.to_string())?;
        let status = server.status().await.map_err(|e| e.to_string());
        server.close().await;
        status
    }
    let creds = Credentials::load(cfg);
    let local = ask("local", &cfg.local, &creds, None).await;
    let peer = match &cfg.peer {
        Some(peer) => ask("peer", peer, &creds, cfg.peer_tls.as_ref()).await,
        None => Err("no peer configured (mysql.mode is not master-master)".into()),
    };
    super::status::PairStatus { local, peer }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_missing_peer_ca_file_is_named_before_any_connection() {
        let ep = Endpoint { host: "127.0.0.1".into(), port: 1, socket: None };
        let creds = Credentials {
            user: "pbxha_admin".into(),
            password: Some("pw".into()),
            keys: "mysql.admin-user / mysql.admin-password-file".into(),
        };
        let tls = Tls { ca_file: Some("/nonexistent/pbxha-ca.pem".into()) };
        let Err(err) = Server::connect("peer", &ep, &creds, Some(&tls)).await else {
            panic!("connected to port 1");
        };
        let err = err.to_string();
        assert!(
            err.contains("mysql.peer.ca-file")
                && err.contains("/nonexistent/pbxha-ca.pem")
                && !err.contains("bind-address"),
            "{err}"
        );
    }
}
