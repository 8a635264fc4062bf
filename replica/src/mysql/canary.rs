//! The drill's MySQL canary: a row written on the group holder's server before a move, read
//! on the new holder's server after it (it came over by replication), then removed there,
//! which replicates the removal back. The table is `pbxha.drill_canary`, beside setup's own
//! `pbxha.canary`.

use std::time::{Duration, Instant};

use super::client::{Credentials, Server};
use super::config::MysqlConfig;
use super::sql;
use crate::error::{Error, Result};

/// Which server of `[mysql]`: this node's or the peer's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Local,
    Peer,
}

/// A written canary row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Canary {
    pub token: String,
}

const SCHEMA: [&str; 2] = [
    "CREATE DATABASE IF NOT EXISTS pbxha",
    "CREATE TABLE IF NOT EXISTS pbxha.drill_canary (token VARCHAR(64) PRIMARY KEY, \
     written TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP) ENGINE=InnoDB",
];

async fn connect(cfg: &MysqlConfig, side: Side) -> Result<Server> {
    let creds = Credentials::load(cfg)?;
    match side {
        Side::Local => Server::connect("local", &cfg.local, &creds, None).await,
        Side::Peer => match &cfg.peer {
            Some(peer) => Server::connect("peer", peer, &creds, cfg.peer_tls.as_ref()).await,
            None => Err(Error::Mysql {
                server: "peer".into(),
                message: "no peer configured (mysql.mode is not master-master)".into(),
            }),
        },
    }
}

/// Writes a new canary row on `side`'s server.
pub async fn write(cfg: &MysqlConfig, side: Side) -> Result<Canary> {
    let token = super::setup::generate_password()?;
    let mut server = connect(cfg, side).await?;
    let insert = format!("INSERT INTO pbxha.drill_canary (token) VALUES ({})", sql::quote(&token));
    let result = server.exec(&[SCHEMA[0], SCHEMA[1], &insert]).await;
    server.close().await;
    result.map(|()| Canary { token })
}

/// Waits up to `wait` for `canary` on `side`'s server, then removes it there; how long it
/// took to be seen.
pub async fn read_and_remove(cfg: &MysqlConfig, side: Side, canary: &Canary, wait: Duration) -> Result<Duration> {
    let started = Instant::now();
    let mut server = connect(cfg, side).await?;
    let quoted = sql::quote(&canary.token);
    let query = format!("SELECT COUNT(*) FROM pbxha.drill_canary WHERE token = {quoted}");
    let found = loop {
        // The table itself may still be on its way.
        if server.scalar(&query).await.ok().flatten().as_deref() == Some("1") {
            break true;
        }
        if started.elapsed() >= wait {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let seen = started.elapsed();
    let result = if found {
        server.exec(&[&format!("DELETE FROM pbxha.drill_canary WHERE token = {quoted}")]).await.map(|()| seen)
    } else {
        Err(Error::Mysql {
            server: server.name.clone(),
            message: format!("the canary row written before the move is not there after {} ms", wait.as_millis()),
        })
    };
    server.close().await;
    result
}
