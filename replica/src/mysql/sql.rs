//! SQL text pbxha sends and parsers for what servers answer: pure functions, tested on
//! output captured from MariaDB 10.11.

use super::Flavor;

/// A single-quoted SQL string literal (backslash and quote escaped, as the server's default
/// `sql_mode` without NO_BACKSLASH_ESCAPES reads them).
pub fn quote(s: &str) -> String {
    let mut q = String::with_capacity(s.len() + 2);
    q.push('\'');
    for c in s.chars() {
        match c {
            '\'' => q.push_str("''"),
            '\\' => q.push_str("\\\\"),
            '\0' => q.push_str("\\0"),
            c => q.push(c),
        }
    }
    q.push('\'');
    q
}

/// `'user'@'host'`.
pub fn account(user: &str, host: &str) -> String {
    format!("{}@{}", quote(user), quote(host))
}

/// Points a server at its peer. MariaDB resumes from `gtid_slave_pos` (the position pbxha
/// sets explicitly, MariaDB KB "CHANGE MASTER TO": MASTER_USE_GTID); MySQL 8 uses GTID
/// auto-positioning.
pub fn change_source(flavor: Flavor, host: &str, port: u16, user: &str, password: &str) -> String {
    match flavor {
        Flavor::MariaDb => format!(
            "CHANGE MASTER TO MASTER_HOST={}, MASTER_PORT={port}, MASTER_USER={}, MASTER_PASSWORD={}, \
             MASTER_CONNECT_RETRY=10, MASTER_USE_GTID=slave_pos",
            quote(host),
            quote(user),
            quote(password)
        ),
        Flavor::Mysql8 => format!(
            "CHANGE REPLICATION SOURCE TO SOURCE_HOST={}, SOURCE_PORT={port}, SOURCE_USER={}, SOURCE_PASSWORD={}, \
             SOURCE_CONNECT_RETRY=10, SOURCE_AUTO_POSITION=1, GET_SOURCE_PUBLIC_KEY=1",
            quote(host),
            quote(user),
            quote(password)
        ),
    }
}

/// `START SLAVE` / `START REPLICA` and their `STOP` and `RESET ... ALL` twins.
pub fn replication(flavor: Flavor, verb: &str) -> String {
    match (flavor, verb) {
        (Flavor::MariaDb, "RESET") => "RESET SLAVE ALL".into(),
        (Flavor::Mysql8, "RESET") => "RESET REPLICA ALL".into(),
        (Flavor::MariaDb, v) => format!("{v} SLAVE"),
        (Flavor::Mysql8, v) => format!("{v} REPLICA"),
    }
}

/// The status statement: MySQL 8.0.22 renamed it (and its columns).
pub fn status_query(flavor: Flavor) -> &'static str {
    match flavor {
        Flavor::MariaDb => "SHOW SLAVE STATUS",
        Flavor::Mysql8 => "SHOW REPLICA STATUS",
    }
}

/// Whether `SHOW GRANTS FOR` lines give exactly what pbxha grants its replication account:
/// `REPLICATION SLAVE` (spelled `REPLICATION REPLICA` by MariaDB 10.5.1+ on request) on
/// `*.*` and nothing else. Returns the privileges found when they differ.
pub fn replication_only_grants(lines: &[String]) -> Result<(), Vec<String>> {
    let mut privileges = Vec::new();
    for line in lines {
        let Some(rest) = line.strip_prefix("GRANT ") else {
            continue;
        };
        let Some((privs, on)) = rest.split_once(" ON ") else {
            continue;
        };
        let on = on.split(" TO ").next().unwrap_or(on).trim();
        for p in privs.split(',').map(str::trim) {
            let usage_only = p == "USAGE";
            let replication =
                on == "*.*" && (p == "REPLICATION SLAVE" || p == "REPLICATION REPLICA");
            if !usage_only && !replication {
                privileges.push(format!("{p} ON {on}"));
            }
        }
    }
    if privileges.is_empty() {
        Ok(())
    } else {
        Err(privileges)
    }
}

/// The seed's GTID position at the dump's snapshot, from the header `mariadb-dump --gtid
/// --master-data=2` writes: `-- SET GLOBAL gtid_slave_pos='1-1-5';` (commented out, so the
/// import does not apply it; pbxha sets it itself).
pub fn gtid_from_dump(head: &str) -> Option<String> {
    head.lines().take(200).find_map(|line| {
        let rest = line
            .trim_start_matches(['-', ' '])
            .strip_prefix("SET GLOBAL gtid_slave_pos=")?;
        let rest = rest.trim_end().trim_end_matches(';');
        Some(rest.strip_prefix('\'')?.strip_suffix('\'')?.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_escapes_quotes_and_backslashes() {
        assert_eq!(quote("a'b\\c"), "'a''b\\\\c'");
        assert_eq!(
            account("pbxha_repl", "198.51.100.12"),
            "'pbxha_repl'@'198.51.100.12'"
        );
    }

    #[test]
    fn change_source_for_both_flavors_byte_for_byte() {
        assert_eq!(
            change_source(Flavor::MariaDb, "198.51.100.12", 3306, "pbxha_repl", "p'w"),
            "CHANGE MASTER TO MASTER_HOST='198.51.100.12', MASTER_PORT=3306, MASTER_USER='pbxha_repl', \
             MASTER_PASSWORD='p''w', MASTER_CONNECT_RETRY=10, MASTER_USE_GTID=slave_pos"
        );
        assert_eq!(
            change_source(Flavor::Mysql8, "198.51.100.12", 3307, "r", "x"),
            "CHANGE REPLICATION SOURCE TO SOURCE_HOST='198.51.100.12', SOURCE_PORT=3307, SOURCE_USER='r', \
             SOURCE_PASSWORD='x', SOURCE_CONNECT_RETRY=10, SOURCE_AUTO_POSITION=1, GET_SOURCE_PUBLIC_KEY=1"
        );
        assert_eq!(replication(Flavor::MariaDb, "START"), "START SLAVE");
        assert_eq!(replication(Flavor::Mysql8, "RESET"), "RESET REPLICA ALL");
    }

    // As MariaDB 10.11 prints SHOW GRANTS FOR 'pbxha_repl'@'127.0.0.1' after
    // CREATE USER ... IDENTIFIED BY ...; GRANT REPLICATION SLAVE ON *.* TO ...
    const REPL_GRANTS: &str = "GRANT REPLICATION SLAVE ON *.* TO `pbxha_repl`@`127.0.0.1` IDENTIFIED BY PASSWORD '*2470C0C06DEE42FD1618BB99005ADCA2EC9D1E19'";

    #[test]
    fn grants_of_a_replication_account_pass() {
        assert_eq!(replication_only_grants(&[REPL_GRANTS.to_string()]), Ok(()));
        assert_eq!(
            replication_only_grants(&["GRANT USAGE ON *.* TO `x`@`%`".to_string()]),
            Ok(())
        );
    }

    #[test]
    fn other_grants_are_listed() {
        let lines = vec![
            "GRANT SELECT, REPLICATION SLAVE ON *.* TO `pbxha_repl`@`127.0.0.1`".to_string(),
            "GRANT ALL PRIVILEGES ON `asterisk`.* TO `pbxha_repl`@`127.0.0.1`".to_string(),
        ];
        assert_eq!(
            replication_only_grants(&lines),
            Err(vec![
                "SELECT ON *.*".to_string(),
                "ALL PRIVILEGES ON `asterisk`.*".to_string()
            ])
        );
    }

    #[test]
    fn gtid_position_from_a_dump_header() {
        // The header `mariadb-dump --gtid --master-data=2 --single-transaction` writes (MariaDB 10.11).
        let head = "-- MariaDB dump 10.19  Distrib 10.11.6-MariaDB, for debian-linux-gnu (x86_64)\n--\n\
                    -- Position to start replication or point-in-time recovery from\n--\n\n\
                    -- CHANGE MASTER TO MASTER_LOG_FILE='mysql-bin.000002', MASTER_LOG_POS=1017;\n\n\
                    --\n-- GTID to start replication from\n--\n\n-- SET GLOBAL gtid_slave_pos='1-1-4';\n";
        assert_eq!(gtid_from_dump(head).as_deref(), Some("1-1-4"));
        assert_eq!(
            gtid_from_dump("-- SET GLOBAL gtid_slave_pos='';\n").as_deref(),
            Some("")
        );
        assert_eq!(gtid_from_dump("-- MariaDB dump\n"), None);
    }
}
