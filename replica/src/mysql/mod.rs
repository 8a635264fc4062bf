//! MySQL/MariaDB for the pair: master-master replication set up from scratch
//! ([`setup::setup`]), its health read from both servers ([`status`]), and the pieces they
//! are made of: the `[mysql]` config section ([`config`]), the server's config fragment
//! ([`fragment`]), SQL text and parsers of server output ([`sql`]), the admin connection
//! ([`client`]) and the initial copy of the seed's databases ([`sync`]).
//!
//! Setup is run on each node; the node whose server is the last to become ready configures
//! both servers (it holds admin credentials for the peer), so the pair needs no other channel
//! to exchange the generated replication passwords.

pub mod canary;
pub mod client;
pub mod config;
pub mod fragment;
pub mod setup;
pub mod sql;
pub mod status;
pub mod sync;

pub use config::{parse_mysql, read_mysql, Endpoint, Mode, MysqlConfig, Tls};

/// Which server family is at the other end: their replication SQL and status columns differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Flavor {
    MariaDb,
    /// MySQL 8.0.22 or later (`SHOW REPLICA STATUS`, `CHANGE REPLICATION SOURCE TO`).
    Mysql8,
}

impl Flavor {
    /// From `SELECT VERSION()`: MariaDB says so (`10.11.6-MariaDB-0+deb12u1`).
    pub fn from_version(version: &str) -> Flavor {
        if version.contains("MariaDB") {
            Flavor::MariaDb
        } else {
            Flavor::Mysql8
        }
    }
}
