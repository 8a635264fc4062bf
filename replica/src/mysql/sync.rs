//! The first copy of the chosen databases from the seed's server to the other one:
//! `mariadb-dump --single-transaction --gtid` (`mysqldump --single-transaction
//! --set-gtid-purged=ON` for MySQL 8: a consistent snapshot and the GTID position it
//! corresponds to) into a private file, then `mariadb` (`mysql`) on the other server with
//! binary logging off for the session, so the copy is not replicated back.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pbxha_runner::{Cmd, Runner};

use super::client::Credentials;
use super::config::Endpoint;
use super::{sql, Flavor};
use crate::error::{Error, Result};

/// A dump or an import of a PBX's databases takes seconds; an hour means something hangs.
pub const SYNC_TIMEOUT: Duration = Duration::from_secs(3600);

/// Progress is shown once a step has taken this long, then this often.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// What the copy did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Synced {
    pub bytes: u64,
    /// The seed's GTID position at the snapshot: the other server replicates from here.
    pub gtid: String,
}

/// Options selecting a server for the `mariadb`/`mysql` command-line tools. `--no-defaults` keeps a
/// `~/.my.cnf` or debian.cnf from changing whom they log in as.
pub fn client_args(endpoint: &Endpoint, creds: &Credentials) -> Vec<String> {
    let mut args = vec!["--no-defaults".to_string(), format!("--user={}", creds.user)];
    match &endpoint.socket {
        Some(socket) => args.push(format!("--socket={}", socket.display())),
        None => {
            args.push("--protocol=TCP".into());
            args.push(format!("--host={}", endpoint.host));
            args.push(format!("--port={}", endpoint.port));
        }
    }
    args
}

fn with_password(cmd: Cmd, creds: &Credentials) -> Cmd {
    // MYSQL_PWD keeps the password out of argv (ps shows argv to every user).
    match &creds.password {
        Some(p) => cmd.env("MYSQL_PWD", p.clone()),
        None => cmd,
    }
}

/// The dump's argv. MariaDB: `--master-data=2` writes the position as a comment, which
/// pbxha reads and sets. MySQL 8: `--set-gtid-purged=ON` writes a `SET @@GLOBAL.GTID_PURGED`
/// that the import applies (and pbxha reads as well).
pub fn dump_cmd(flavor: Flavor, source: &Endpoint, creds: &Credentials, databases: &[String], out: &Path) -> Cmd {
    let (tool, position): (&str, &[&str]) = match flavor {
        Flavor::MariaDb => ("mariadb-dump", &["--gtid", "--master-data=2"]),
        Flavor::Mysql8 => ("mysqldump", &["--set-gtid-purged=ON"]),
    };
    let mut argv = vec![tool.to_string()];
    argv.extend(client_args(source, creds));
    argv.push("--single-transaction".into());
    argv.extend(position.iter().map(|s| s.to_string()));
    argv.extend(["--hex-blob", "--routines", "--triggers", "--databases"].map(String::from));
    argv.extend(databases.iter().cloned());
    argv.push(format!("--result-file={}", out.display()));
    with_password(Cmd::new(argv).timeout(SYNC_TIMEOUT), creds)
}

/// The import's argv; the dump arrives on stdin.
pub fn import_cmd(flavor: Flavor, target: &Endpoint, creds: &Credentials, dump: Vec<u8>) -> Cmd {
    let tool = match flavor {
        Flavor::MariaDb => "mariadb",
        Flavor::Mysql8 => "mysql",
    };
    let mut argv = vec![tool.to_string()];
    argv.extend(client_args(target, creds));
    argv.push("--init-command=SET SESSION sql_log_bin=0".into());
    with_password(Cmd::new(argv).timeout(SYNC_TIMEOUT).stdin(dump), creds)
}

/// A private directory for the dump, removed on drop (also when the copy fails).
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<TempDir> {
        use std::os::unix::fs::DirBuilderExt;
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("pbxha-mysql-sync-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(|e| Error::io(format!("creating {}", path.display()), e))?;
        Ok(TempDir(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Copies `databases` from `source` (`source_name` in messages) to `target`, both servers
/// of `flavor`, reporting progress in bytes through `progress` when a step takes more than a
/// second.
pub async fn copy(
    runner: &dyn Runner,
    flavor: Flavor,
    (source_name, source): (&str, &Endpoint),
    (target_name, target): (&str, &Endpoint),
    creds: &Credentials,
    databases: &[String],
    progress: &mut (dyn FnMut(&str) + Send),
) -> Result<Synced> {
    let dir = TempDir::new()?;
    let file = dir.0.join("dump.sql");
    let dump = dump_cmd(flavor, source, creds, databases, &file);
    let size = || std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
    let started = Instant::now();
    let out =
        with_progress(runner.run(&dump), progress, |p| p(&format!("dumping from {source_name}: {} bytes", size())))
            .await?;
    if !out.success() {
        return Err(Error::Mysql {
            server: source_name.to_string(),
            message: format!("`{}` exited with status {}: {}", dump.argv()[..3].join(" "), out.code, out.stderr.trim()),
        });
    }
    let bytes = std::fs::read(&file).map_err(|e| Error::io(format!("reading the dump {}", file.display()), e))?;
    let head = String::from_utf8_lossy(&bytes[..bytes.len().min(16 * 1024)]).into_owned();
    let gtid = sql::gtid_from_dump(flavor, &head).ok_or_else(|| Error::Mysql {
        server: source_name.to_string(),
        message: "the dump carries no GTID position (is log-bin on?)".into(),
    })?;
    let total = bytes.len() as u64;
    if started.elapsed() > PROGRESS_EVERY {
        progress(&format!("dumped {total} bytes from {source_name}"));
    }
    let import = import_cmd(flavor, target, creds, bytes);
    let started = Instant::now();
    let out = with_progress(runner.run(&import), progress, |p| {
        p(&format!("importing {total} bytes into {target_name}: {} s", started.elapsed().as_secs()))
    })
    .await?;
    if !out.success() {
        return Err(Error::Mysql {
            server: target_name.to_string(),
            message: format!(
                "importing the dump of {} failed (status {}): {}",
                source_name,
                out.code,
                out.stderr.trim()
            ),
        });
    }
    Ok(Synced { bytes: total, gtid })
}

/// Awaits `fut`, calling `tick` every second after the first.
async fn with_progress<T>(
    fut: impl std::future::Future<Output = T>,
    progress: &mut (dyn FnMut(&str) + Send),
    tick: impl Fn(&mut (dyn FnMut(&str) + Send)),
) -> T {
    tokio::pin!(fut);
    let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + PROGRESS_EVERY, PROGRESS_EVERY);
    loop {
        tokio::select! {
            out = &mut fut => return out,
            _ = interval.tick() => tick(progress),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds() -> Credentials {
        Credentials {
            user: "admin".into(),
            password: Some("s3cret".into()),
            keys: "mysql.admin-user / mysql.admin-password-file".into(),
        }
    }

    #[test]
    fn dump_over_a_socket_keeps_the_password_out_of_argv() {
        let ep = Endpoint { host: "198.51.100.11".into(), port: 3306, socket: Some("/run/mysqld/mysqld.sock".into()) };
        let cmd =
            dump_cmd(Flavor::MariaDb, &ep, &creds(), &["asterisk".into(), "cdr".into()], Path::new("/tmp/d/dump.sql"));
        assert_eq!(
            cmd.to_string(),
            "mariadb-dump --no-defaults --user=admin --socket=/run/mysqld/mysqld.sock --single-transaction --gtid \
             --master-data=2 --hex-blob --routines --triggers --databases asterisk cdr --result-file=/tmp/d/dump.sql"
        );
        assert_eq!(cmd.env, vec![("MYSQL_PWD".to_string(), "s3cret".to_string())]);
    }

    #[test]
    fn import_over_tcp_turns_binary_logging_off() {
        let ep = Endpoint { host: "198.51.100.12".into(), port: 3307, socket: None };
        let cmd = import_cmd(Flavor::MariaDb, &ep, &creds(), b"SELECT 1;".to_vec());
        assert_eq!(
            cmd.argv(),
            [
                "mariadb",
                "--no-defaults",
                "--user=admin",
                "--protocol=TCP",
                "--host=198.51.100.12",
                "--port=3307",
                "--init-command=SET SESSION sql_log_bin=0"
            ]
        );
        assert_eq!(cmd.stdin.as_deref(), Some(&b"SELECT 1;"[..]));
    }

    #[test]
    fn mysql8_dump_and_import_use_the_mysql_tools_and_gtid_purged() {
        let ep = Endpoint { host: "198.51.100.11".into(), port: 3306, socket: None };
        let cmd = dump_cmd(Flavor::Mysql8, &ep, &creds(), &["asterisk".into()], Path::new("/tmp/d/dump.sql"));
        assert_eq!(
            cmd.argv(),
            [
                "mysqldump",
                "--no-defaults",
                "--user=admin",
                "--protocol=TCP",
                "--host=198.51.100.11",
                "--port=3306",
                "--single-transaction",
                "--set-gtid-purged=ON",
                "--hex-blob",
                "--routines",
                "--triggers",
                "--databases",
                "asterisk",
                "--result-file=/tmp/d/dump.sql"
            ]
        );
        assert_eq!(cmd.env, vec![("MYSQL_PWD".to_string(), "s3cret".to_string())]);
        let cmd = import_cmd(Flavor::Mysql8, &ep, &creds(), b"SELECT 1;".to_vec());
        assert_eq!(
            cmd.argv(),
            [
                "mysql",
                "--no-defaults",
                "--user=admin",
                "--protocol=TCP",
                "--host=198.51.100.11",
                "--port=3306",
                "--init-command=SET SESSION sql_log_bin=0"
            ]
        );
        assert_eq!(cmd.stdin.as_deref(), Some(&b"SELECT 1;"[..]));
    }
}
