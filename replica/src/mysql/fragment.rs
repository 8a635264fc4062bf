//! The server config fragment pbxha owns: one file in the `conf.d` directory, never the main
//! my.cnf, so a package upgrade and the operator's own settings stay untouched.

use std::path::{Path, PathBuf};

use super::{Flavor, MysqlConfig};
use crate::error::{Error, Result};

/// Sorts after Debian's `50-server.cnf`, so these settings win over its defaults.
pub const FRAGMENT_NAME: &str = "60-pbxha-replication.cnf";

/// The binary log's base name, as in Debian's commented `log_bin` example in 50-server.cnf.
pub const LOG_BIN_BASENAME: &str = "mysql-bin";

/// The two writers interleave auto-increment ids: the seed takes odd ones, the other even
/// ones (the Pacemaker how-to's master-master recipe).
pub const AUTO_INCREMENT_INCREMENT: u32 = 2;

/// This node's `auto_increment_offset`.
pub fn auto_increment_offset(cfg: &MysqlConfig) -> u32 {
    if cfg.seed {
        1
    } else {
        2
    }
}

/// The fragment's text for this node.
pub fn render(cfg: &MysqlConfig, flavor: Flavor) -> String {
    let mut s = String::new();
    s.push_str("# Written by `pbxha mysql setup` from the [mysql] section of pbxha.toml;\n");
    s.push_str("# it is rewritten by every setup run: change the config, not this file.\n");
    s.push_str("[mysqld]\n");
    s.push_str(&format!("server-id = {}\n", cfg.server_id));
    match flavor {
        Flavor::MariaDb => s.push_str(&format!("gtid-domain-id = {}\n", cfg.gtid_domain_id)),
        Flavor::Mysql8 => s.push_str("gtid-mode = ON\nenforce-gtid-consistency = ON\n"),
    }
    s.push_str(&format!("log-bin = {LOG_BIN_BASENAME}\n"));
    s.push_str("binlog-format = ROW\n");
    s.push_str("log-slave-updates = ON\n");
    s.push_str(&format!("auto-increment-increment = {AUTO_INCREMENT_INCREMENT}\n"));
    s.push_str(&format!("auto-increment-offset = {}\n", auto_increment_offset(cfg)));
    s
}

/// What [`write`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Written {
    Created(PathBuf),
    Updated(PathBuf),
    Unchanged(PathBuf),
}

/// Writes `text` as the fragment in `dir` unless it is already there, replacing it
/// atomically (a server starting meanwhile never reads half a file).
pub fn write(dir: &Path, text: &str) -> Result<Written> {
    let path = dir.join(FRAGMENT_NAME);
    let old = match std::fs::read_to_string(&path) {
        Ok(old) => Some(old),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(Error::io(format!("reading {}", path.display()), e)),
    };
    if old.as_deref() == Some(text) {
        return Ok(Written::Unchanged(path));
    }
    let tmp = dir.join(format!(".{FRAGMENT_NAME}.tmp"));
    std::fs::write(&tmp, text).map_err(|e| Error::io(format!("writing {} (mysql.conf-dir)", tmp.display()), e))?;
    std::fs::rename(&tmp, &path)
        .map_err(|e| Error::io(format!("renaming {} to {}", tmp.display(), path.display()), e))?;
    Ok(if old.is_some() { Written::Updated(path) } else { Written::Created(path) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mysql::config::{Endpoint, Mode};

    fn cfg(seed: bool) -> MysqlConfig {
        MysqlConfig {
            mode: Mode::MasterMaster,
            server_id: 7,
            gtid_domain_id: 9,
            local: Endpoint { host: "198.51.100.11".into(), port: 3306, socket: None },
            peer: Some(Endpoint { host: "198.51.100.12".into(), port: 3306, socket: None }),
            peer_tls: None,
            admin_user: "root".into(),
            admin_password_file: None,
            replication_user: "pbxha_repl".into(),
            databases: vec![],
            conf_dir: "/etc/mysql/mariadb.conf.d".into(),
            seed,
        }
    }

    #[test]
    fn mariadb_fragment_byte_for_byte() {
        assert_eq!(
            render(&cfg(true), Flavor::MariaDb),
            "# Written by `pbxha mysql setup` from the [mysql] section of pbxha.toml;\n\
             # it is rewritten by every setup run: change the config, not this file.\n\
             [mysqld]\n\
             server-id = 7\n\
             gtid-domain-id = 9\n\
             log-bin = mysql-bin\n\
             binlog-format = ROW\n\
             log-slave-updates = ON\n\
             auto-increment-increment = 2\n\
             auto-increment-offset = 1\n"
        );
    }

    #[test]
    fn mysql8_fragment_uses_gtid_mode_and_the_second_offset() {
        let text = render(&cfg(false), Flavor::Mysql8);
        assert!(
            text.contains("\nserver-id = 7\ngtid-mode = ON\nenforce-gtid-consistency = ON\nlog-bin = mysql-bin\n"),
            "{text}"
        );
        assert!(text.ends_with("auto-increment-increment = 2\nauto-increment-offset = 2\n"), "{text}");
        assert!(!text.contains("gtid-domain-id"), "{text}");
    }

    #[test]
    fn write_creates_then_leaves_then_updates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FRAGMENT_NAME);
        assert_eq!(write(dir.path(), "a\n").unwrap(), Written::Created(path.clone()));
        assert_eq!(write(dir.path(), "a\n").unwrap(), Written::Unchanged(path.clone()));
        assert_eq!(write(dir.path(), "b\n").unwrap(), Written::Updated(path.clone()));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "b\n");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temp file left");
    }

    #[test]
    fn write_into_a_missing_dir_names_it() {
        let err = write(Path::new("/nonexistent/pbxha-conf.d"), "a\n").unwrap_err().to_string();
        assert!(err.contains("/nonexistent/pbxha-conf.d") && err.contains("mysql.conf-dir"), "{err}");
    }
}
