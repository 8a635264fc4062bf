//! Replication health from `SHOW SLAVE STATUS` (MariaDB, MySQL before 8.0.22) or
//! `SHOW REPLICA STATUS` (MySQL 8.0.22+, which renamed the columns), and what of it is worth
//! an alert.

use std::fmt;

/// One column of a status row: its name and its text (NULL as `None`).
pub type Column = (String, Option<String>);

/// The replication IO thread: `Connecting` is a peer that cannot be reached (yet).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IoState {
    Yes,
    Connecting,
    No,
}

/// A thread's last error (`Last_IO_Errno`/`Last_IO_Error`, `Last_SQL_*`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ThreadError {
    pub errno: u32,
    pub message: String,
}

/// What one server says about its replication from the other.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReplicaStatus {
    /// `Master_Host:Master_Port` (`Source_*` in MySQL 8).
    pub source: String,
    pub io: IoState,
    pub sql_running: bool,
    /// `Seconds_Behind_Master`; NULL while a thread is stopped.
    pub seconds_behind: Option<u64>,
    pub io_error: Option<ThreadError>,
    pub sql_error: Option<ThreadError>,
    /// GTIDs received: MariaDB's `Gtid_IO_Pos`, MySQL's `Retrieved_Gtid_Set`.
    pub gtid_received: String,
    /// GTIDs applied: MariaDB's `Gtid_Slave_Pos` (10.5.1+), MySQL's `Executed_Gtid_Set`.
    pub gtid_applied: String,
}

/// Each field under its MariaDB and its MySQL 8 column name.
const SOURCE_HOST: [&str; 2] = ["Master_Host", "Source_Host"];
const SOURCE_PORT: [&str; 2] = ["Master_Port", "Source_Port"];
const IO_RUNNING: [&str; 2] = ["Slave_IO_Running", "Replica_IO_Running"];
const SQL_RUNNING: [&str; 2] = ["Slave_SQL_Running", "Replica_SQL_Running"];
const BEHIND: [&str; 2] = ["Seconds_Behind_Master", "Seconds_Behind_Source"];
const IO_ERRNO: [&str; 1] = ["Last_IO_Errno"];
const IO_ERROR: [&str; 1] = ["Last_IO_Error"];
const SQL_ERRNO: [&str; 1] = ["Last_SQL_Errno"];
const SQL_ERROR: [&str; 1] = ["Last_SQL_Error"];
const RECEIVED: [&str; 2] = ["Gtid_IO_Pos", "Retrieved_Gtid_Set"];
const APPLIED: [&str; 2] = ["Gtid_Slave_Pos", "Executed_Gtid_Set"];

/// Parses one row of the status statement. An empty result (no row) means replication is
/// not configured; callers map that to `None` before calling this.
pub fn parse_replica_status(row: &[Column]) -> Result<ReplicaStatus, String> {
    let get = |names: &[&str]| -> Option<&str> {
        row.iter().find(|(n, _)| names.contains(&n.as_str())).and_then(|(_, v)| v.as_deref())
    };
    let need =
        |names: &[&str]| get(names).ok_or_else(|| format!("the status row has no column {}", names.join(" or ")));
    let io = match need(&IO_RUNNING)? {
        "Yes" => IoState::Yes,
        "Connecting" => IoState::Connecting,
        _ => IoState::No,
    };
    let error = |errno: &[&str], message: &[&str]| -> Result<Option<ThreadError>, String> {
        let n = get(errno).unwrap_or("0");
        let errno: u32 = n.trim().parse().map_err(|_| format!("{} is `{n}`, not a number", errno[0]))?;
        Ok((errno != 0).then(|| ThreadError { errno, message: get(message).unwrap_or_default().to_string() }))
    };
    let seconds_behind = match get(&BEHIND) {
        None => None,
        Some(s) => Some(s.trim().parse().map_err(|_| format!("{} is `{s}`, not a number", BEHIND[0]))?),
    };
    Ok(ReplicaStatus {
        source: format!("{}:{}", need(&SOURCE_HOST)?, get(&SOURCE_PORT).unwrap_or("?")),
        io,
        sql_running: need(&SQL_RUNNING)? == "Yes",
        seconds_behind,
        io_error: error(&IO_ERRNO, &IO_ERROR)?,
        sql_error: error(&SQL_ERRNO, &SQL_ERROR)?,
        gtid_received: get(&RECEIVED).unwrap_or_default().replace('\n', ""),
        gtid_applied: get(&APPLIED).unwrap_or_default().replace('\n', ""),
    })
}

impl ReplicaStatus {
    /// Both threads running, no error.
    pub fn healthy(&self) -> bool {
        self.io == IoState::Yes && self.sql_running && self.io_error.is_none() && self.sql_error.is_none()
    }
}

/// One server's side of the pair as monitoring sees it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ServerStatus {
    /// `local 198.51.100.11:3306` or `peer ...`: names the side in every message.
    pub server: String,
    pub version: String,
    /// `@@gtid_binlog_pos` (MariaDB) or `@@gtid_executed` (MySQL): what this server wrote.
    pub gtid_binlog: String,
    /// `None`: replication from the other side is not configured here.
    pub replica: Option<ReplicaStatus>,
}

/// Both sides, or why a side could not be asked.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PairStatus {
    pub local: Result<ServerStatus, String>,
    pub peer: Result<ServerStatus, String>,
}

/// Something an operator must hear about, naming the failing side.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Alert {
    pub server: String,
    pub message: String,
}

impl fmt::Display for Alert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.server, self.message)
    }
}

/// Lag above this many seconds is reported; replication itself still counts as running.
pub const DEFAULT_MAX_LAG_SECS: u64 = 60;

/// Everything wrong with one side's replication.
pub fn alerts(status: &ServerStatus, max_lag_secs: u64) -> Vec<Alert> {
    let alert = |message: String| Alert { server: status.server.clone(), message };
    let Some(r) = &status.replica else {
        return vec![alert("replication from the peer is not configured (run `pbxha mysql setup`)".into())];
    };
    let mut out = Vec::new();
    if let Some(e) = &r.io_error {
        out.push(alert(format!("IO thread error {} (from {}): {}", e.errno, r.source, e.message)));
    }
    if let Some(e) = &r.sql_error {
        out.push(alert(format!("SQL thread error {}: {}", e.errno, e.message)));
    }
    match r.io {
        IoState::No if r.io_error.is_none() => out.push(alert(format!("IO thread from {} is stopped", r.source))),
        IoState::Connecting if r.io_error.is_none() => {
            out.push(alert(format!("IO thread is still connecting to {}", r.source)))
        }
        _ => {}
    }
    if !r.sql_running && r.sql_error.is_none() {
        out.push(alert("SQL thread is stopped".into()));
    }
    if let Some(lag) = r.seconds_behind.filter(|lag| *lag > max_lag_secs) {
        out.push(alert(format!("{lag} s behind {}", r.source)));
    }
    out
}

impl PairStatus {
    /// Every alert for both sides; a side that cannot be asked is one.
    pub fn alerts(&self, max_lag_secs: u64) -> Vec<Alert> {
        [(&self.local, "local"), (&self.peer, "peer")]
            .into_iter()
            .flat_map(|(side, name)| match side {
                Ok(s) => alerts(s, max_lag_secs),
                Err(e) => vec![Alert { server: name.to_string(), message: e.clone() }],
            })
            .collect()
    }
}

impl fmt::Display for ServerStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} ({}), wrote GTIDs {}", self.server, self.version, or_none(&self.gtid_binlog))?;
        let Some(r) = &self.replica else {
            return writeln!(f, "  replication: not configured");
        };
        let io = match r.io {
            IoState::Yes => "Yes",
            IoState::Connecting => "Connecting",
            IoState::No => "No",
        };
        let behind = r.seconds_behind.map_or_else(|| "-".to_string(), |s| format!("{s} s"));
        writeln!(f, "  from {}: IO {io}, SQL {}, behind {behind}", r.source, if r.sql_running { "Yes" } else { "No" })?;
        writeln!(f, "  GTID received {}, applied {}", or_none(&r.gtid_received), or_none(&r.gtid_applied))?;
        if let Some(e) = &r.io_error {
            writeln!(f, "  last IO error {}: {}", e.errno, e.message)?;
        }
        if let Some(e) = &r.sql_error {
            writeln!(f, "  last SQL error {}: {}", e.errno, e.message)?;
        }
        Ok(())
    }
}

fn or_none(s: &str) -> &str {
    if s.is_empty() {
        "(none)"
    } else {
        s
    }
}

impl fmt::Display for PairStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (side, name) in [(&self.local, "local"), (&self.peer, "peer")] {
            match side {
                Ok(s) => write!(f, "{s}")?,
                Err(e) => writeln!(f, "{name}: cannot ask: {e}")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(pairs: &[(&str, Option<&str>)]) -> Vec<Column> {
        pairs.iter().map(|(n, v)| (n.to_string(), v.map(str::to_string))).collect()
    }

    // Captured from MariaDB 10.11.19 (Debian 12) by the mysql_pair test: SHOW SLAVE STATUS
    // on the second server, trimmed to the columns that matter plus some neighbours.
    fn mariadb_row(sql_errno: &str, sql_error: &str, sql_running: &str) -> Vec<Column> {
        row(&[
            ("Slave_IO_State", Some("Waiting for master to send event")),
            ("Master_Host", Some("127.0.0.1")),
            ("Master_User", Some("pbxha_repl")),
            ("Master_Port", Some("3347")),
            ("Slave_IO_Running", Some("Yes")),
            ("Slave_SQL_Running", Some(sql_running)),
            ("Last_Errno", Some(sql_errno)),
            ("Seconds_Behind_Master", if sql_running == "Yes" { Some("0") } else { None }),
            ("Last_IO_Errno", Some("0")),
            ("Last_IO_Error", Some("")),
            ("Last_SQL_Errno", Some(sql_errno)),
            ("Last_SQL_Error", Some(sql_error)),
            ("Master_Server_Id", Some("1")),
            ("Using_Gtid", Some("Slave_Pos")),
            ("Gtid_IO_Pos", Some("1-1-1,2-2-1")),
            ("SQL_Remaining_Delay", None),
        ])
    }

    const DUP: &str = "Could not execute Write_rows_v1 event on table pbx.calls; Duplicate entry '1001' for key 'PRIMARY', \
                       Error_code: 1062; handler error HA_ERR_FOUND_DUPP_KEY; the event's master log mysql-bin.000001, end_log_pos 3115";

    #[test]
    fn mariadb_running() {
        let s = parse_replica_status(&mariadb_row("0", "", "Yes")).unwrap();
        assert_eq!(s.source, "127.0.0.1:3347");
        assert_eq!((s.io, s.sql_running, s.seconds_behind), (IoState::Yes, true, Some(0)));
        assert_eq!(s.gtid_received, "1-1-1,2-2-1");
        assert!(s.healthy());
        let server = ServerStatus {
            server: "local x".into(),
            version: "10.11.19-MariaDB".into(),
            gtid_binlog: "".into(),
            replica: Some(s),
        };
        assert_eq!(alerts(&server, 60), vec![]);
    }

    #[test]
    fn mariadb_conflict_names_the_side_and_the_error() {
        let s = parse_replica_status(&mariadb_row("1062", DUP, "No")).unwrap();
        assert_eq!(s.sql_error, Some(ThreadError { errno: 1062, message: DUP.into() }));
        assert_eq!(s.seconds_behind, None);
        let server = ServerStatus {
            server: "local 127.0.0.1:3348".into(),
            version: "v".into(),
            gtid_binlog: "1-1-5".into(),
            replica: Some(s),
        };
        let a = alerts(&server, 60);
        assert_eq!(a.len(), 1, "{a:?}");
        assert_eq!(a[0].to_string(), format!("local 127.0.0.1:3348: SQL thread error 1062: {DUP}"));
        assert!(server.to_string().contains("  from 127.0.0.1:3347: IO Yes, SQL No, behind -\n"), "{server}");
    }

    // MySQL 8.0.22+ column names, as in the MySQL 8.0 reference manual's SHOW REPLICA STATUS
    // example (section 15.7.7.35).
    #[test]
    fn mysql8_replica_columns() {
        let r = row(&[
            ("Replica_IO_State", Some("Waiting for source to send event")),
            ("Source_Host", Some("source2.example.com")),
            ("Source_Port", Some("3306")),
            ("Replica_IO_Running", Some("Connecting")),
            ("Replica_SQL_Running", Some("Yes")),
            ("Seconds_Behind_Source", None),
            ("Last_IO_Errno", Some("2003")),
            ("Last_IO_Error", Some("error connecting to source 'repl@source2.example.com:3306'")),
            ("Last_SQL_Errno", Some("0")),
            ("Last_SQL_Error", Some("")),
            ("Retrieved_Gtid_Set", Some("3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5")),
            ("Executed_Gtid_Set", Some("3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5")),
        ]);
        let s = parse_replica_status(&r).unwrap();
        assert_eq!(s.source, "source2.example.com:3306");
        assert_eq!(s.io, IoState::Connecting);
        assert_eq!(s.io_error.as_ref().map(|e| e.errno), Some(2003));
        assert_eq!(s.gtid_applied, "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5");
        let server = ServerStatus {
            server: "peer p".into(),
            version: "8.0.36".into(),
            gtid_binlog: "".into(),
            replica: Some(s),
        };
        assert_eq!(alerts(&server, 60).len(), 1);
    }

    #[test]
    fn lag_unconfigured_and_unreachable_are_alerts() {
        let mut r = mariadb_row("0", "", "Yes");
        r[7].1 = Some("600".into());
        let s = parse_replica_status(&r).unwrap();
        let lagging =
            ServerStatus { server: "peer p".into(), version: "v".into(), gtid_binlog: "".into(), replica: Some(s) };
        assert_eq!(alerts(&lagging, 60)[0].message, "600 s behind 127.0.0.1:3347");
        let bare = ServerStatus { replica: None, ..lagging };
        let pair = PairStatus { local: Ok(bare), peer: Err("cannot connect".into()) };
        let all: Vec<String> = pair.alerts(60).iter().map(ToString::to_string).collect();
        assert_eq!(all.len(), 2, "{all:?}");
        assert!(all[0].contains("not configured") && all[1] == "peer: cannot connect", "{all:?}");
    }

    #[test]
    fn a_row_without_the_thread_columns_is_an_error() {
        let err = parse_replica_status(&row(&[("Master_Host", Some("h"))])).unwrap_err();
        assert!(err.contains("Slave_IO_Running or Replica_IO_Running"), "{err}");
    }
}
