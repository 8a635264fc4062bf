//! The `mysql` resource kind, for MySQL/MariaDB whose datadir lives on the replicated
//! filesystem (the `replica` MySQL mode): its systemd unit is started and
//! stopped like a `service`, but only once the datadir is on the mounted replica — started on
//! the bare mount point or on local disk, the server would initialise or serve a stale
//! database that the next failover silently hides — and it is monitored with a real query.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use pbxha_conf::Reader;
use pbxha_replica::filesystem::{parse_mountinfo, MountEntry};
use pbxha_replica::mysql::client::{select_one, Credentials};
use pbxha_runner::Runner;
use serde::Serialize;

use super::engine::Timeouts;
use super::service::{self, ServiceConfig};
use super::{Kind, Parts, Report, Resource, ResourceState};
use crate::config::{Config, ResourceKind};
use crate::Error;

/// MySQL/MariaDB whose datadir lives on the replicated filesystem (`kind = "mysql"`): started
/// and stopped through its systemd unit, only once the datadir is on the mounted replica, and
/// monitored with a real query.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MysqlResourceConfig {
    pub unit: String,
    /// Resolved through symlinks (a migrated datadir is one) before the mount check.
    pub datadir: PathBuf,
    /// Where the `filesystem` resource mounts the replica.
    pub replica_mount: PathBuf,
    /// Where the monitor logs in: the socket when set, TCP otherwise.
    pub server: pbxha_replica::mysql::Endpoint,
    pub user: String,
    /// Holds `user`'s password (mode 0600); `None` means socket authentication.
    pub password_file: Option<PathBuf>,
}

/// Debian's `mariadb-server` unit, datadir and socket.
pub const DEFAULT_MYSQL_UNIT: &str = "mariadb";
pub const DEFAULT_MYSQL_DATADIR: &str = "/var/lib/mysql";
pub const DEFAULT_MYSQL_SOCKET: &str = "/run/mysqld/mysqld.sock";
/// The replica mount point (docs/ARCHITECTURE.md, "Storage of its own").
pub const DEFAULT_REPLICA_MOUNT: &str = "/replica";

impl Kind for MysqlResourceConfig {
    fn read(s: &mut Reader) -> Option<Self> {
        let socket = s.opt_string("socket");
        let host = s.opt_string("host");
        let port = s.int_or("port", 1, 65535, pbxha_replica::mysql::config::DEFAULT_PORT);
        let password_file = s.opt_path("password-file");
        let unit = s.opt_string("unit").unwrap_or_else(|| DEFAULT_MYSQL_UNIT.into());
        let datadir = s.path_or("datadir", DEFAULT_MYSQL_DATADIR);
        let replica_mount = s.path_or("replica-mount", DEFAULT_REPLICA_MOUNT);
        let user = s.opt_string("user").unwrap_or_else(|| "root".into());
        let server = match (socket, host) {
            (Some(_), Some(_)) => {
                return s.problem("host", "set either `socket` or `host`/`port`, not both".into(), None)
            }
            (None, Some(_)) if password_file.is_none() => {
                return s.problem(
                    "password-file",
                    "a login over TCP needs a password".into(),
                    Some("a file of mode 0600 holding the password of `user`, or socket = \"/run/mysqld/mysqld.sock\""),
                )
            }
            (None, Some(host)) => pbxha_replica::mysql::Endpoint { host, port, socket: None },
            (socket, None) => pbxha_replica::mysql::Endpoint {
                host: "localhost".into(),
                port,
                socket: Some(socket.unwrap_or_else(|| DEFAULT_MYSQL_SOCKET.into()).into()),
            },
        };
        Some(MysqlResourceConfig { unit, datadir, replica_mount, server, user, password_file })
    }

    fn validate(&self, config: &Config, index: usize, problem: Report) {
        // Members start in order: an earlier one must mount the replica.
        let mounted = config.resources[..index]
            .iter()
            .any(|r| matches!(&r.kind, ResourceKind::Filesystem(f) if self.replica_mount.starts_with(&f.mount_point)));
        if !mounted {
            problem(
                "replica-mount",
                format!(
                    "no filesystem resource before `{}` mounts {}",
                    config.resources[index].name,
                    self.replica_mount.display()
                ),
                "list the filesystem resource that mounts the replica before the mysql resource",
            );
        }
    }

    fn describe(&self) -> String {
        format!("systemd unit {}, datadir {} on {}", self.unit, self.datadir.display(), self.replica_mount.display())
    }

    fn outlives_daemon(&self) -> bool {
        true
    }

    fn build(&self, name: &str, parts: &Parts) -> Result<Arc<dyn Resource>, Error> {
        build(name, self, parts.timeouts, parts.runner.clone())
    }
}

const MOUNTINFO: &str = "/proc/self/mountinfo";

/// Builds a `mysql` resource named `name`; its unit is driven by a `service` resource.
pub fn build(
    name: &str,
    config: &MysqlResourceConfig,
    timeouts: Timeouts,
    runner: Arc<dyn Runner>,
) -> Result<Arc<dyn Resource>, Error> {
    let unit = service::build(name, &ServiceConfig::Unit(config.unit.clone()), timeouts, runner)?;
    Ok(Arc::new(MysqlResource { name: name.to_string(), config: config.clone(), unit }))
}

/// MySQL on the replica: the unit's start/stop, a datadir check, a `SELECT 1` monitor.
pub struct MysqlResource {
    name: String,
    config: MysqlResourceConfig,
    /// `systemctl start|stop|is-active UNIT`.
    unit: Arc<dyn Resource>,
}

impl MysqlResource {
    fn error(&self, message: String) -> Error {
        Error::Resource { resource: self.name.clone(), message }
    }

    /// Refuses unless the datadir, followed through symlinks, is on a filesystem mounted at
    /// or below the replica mount point.
    fn check_datadir(&self) -> Result<(), Error> {
        let c = &self.config;
        let resolved = std::fs::canonicalize(&c.datadir).map_err(|e| {
            self.error(format!(
                "datadir {} cannot be resolved ({e}); it must lie on the mounted replica {}",
                c.datadir.display(),
                c.replica_mount.display()
            ))
        })?;
        // The mount point as the kernel lists it, should the configured path hold a symlink.
        let replica_mount = std::fs::canonicalize(&c.replica_mount).unwrap_or_else(|_| c.replica_mount.clone());
        let mountinfo =
            std::fs::read_to_string(MOUNTINFO).map_err(|e| self.error(format!("cannot read {MOUNTINFO}: {e}")))?;
        match datadir_problem(&c.datadir, &resolved, &replica_mount, &parse_mountinfo(&mountinfo)) {
            None => Ok(()),
            Some(problem) => Err(self.error(problem)),
        }
    }

    /// Logs in as the configured user and runs `SELECT 1`.
    async fn select_one(&self) -> Result<(), Error> {
        let c = &self.config;
        let creds = Credentials::from_file(&c.user, c.password_file.as_deref(), ("user", "password-file"))
            .map_err(|e| self.error(e.to_string()))?;
        select_one(&c.server, &creds).await.map_err(|e| self.error(e.to_string()))
    }
}

/// Why MySQL must not start with its datadir at `resolved` (the configured `datadir`
/// followed through symlinks), given the mounts of /proc/self/mountinfo; `None` when the
/// filesystem holding it is mounted at or below `replica_mount`.
pub fn datadir_problem(datadir: &Path, resolved: &Path, replica_mount: &Path, mounts: &[MountEntry]) -> Option<String> {
    let shown = match datadir == resolved {
        true => datadir.display().to_string(),
        false => format!("{} (resolves to {})", datadir.display(), resolved.display()),
    };
    if !resolved.starts_with(replica_mount) {
        return Some(format!(
            "datadir {shown} is not under the replica mount {}: MySQL would run on local disk; \
             move the datadir into {} and leave a symlink, or fix `datadir`",
            replica_mount.display(),
            replica_mount.display()
        ));
    }
    // The last of the longest matches: a later mount on the same point hides the earlier.
    let holder = mounts
        .iter()
        .filter(|m| resolved.starts_with(&m.mount_point))
        .max_by_key(|m| m.mount_point.components().count());
    let on = match holder {
        Some(m) if m.mount_point.starts_with(replica_mount) => return None,
        Some(m) => format!("{} ({}) mounted at {}", m.source, m.fstype, m.mount_point.display()),
        None => "no mounted filesystem".into(),
    };
    Some(format!(
        "the replica {} is not mounted: datadir {shown} is on {on}; \
         the filesystem resource must start before MySQL",
        replica_mount.display()
    ))
}

#[async_trait]
impl Resource for MysqlResource {
    fn name(&self) -> &str {
        &self.name
    }

    async fn start(&self) -> Result<(), Error> {
        self.check_datadir()?;
        self.unit.start().await
    }

    /// No datadir check: a server started by hand on the wrong disk must still be stoppable.
    async fn stop(&self) -> Result<(), Error> {
        self.unit.stop().await
    }

    /// A unit that is not active is stopped; an active one must answer a query.
    async fn monitor(&self) -> Result<ResourceState, Error> {
        match self.unit.monitor().await? {
            ResourceState::Stopped => Ok(ResourceState::Stopped),
            ResourceState::Running => self.select_one().await.map(|()| ResourceState::Running),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::process::Command;
    use std::time::Duration;

    use pbxha_runner::{Output, ScriptedRunner};

    use super::*;

    /// /proc/self/mountinfo of a Debian 12 test machine, captured inside
    /// `unshare -m --propagation private` after `mount -t tmpfs tmpfs /replica` (trimmed to
    /// the root, the cgroup and netns noise kept out).
    const MOUNTED: &str = "\
58 56 254:0 / / rw,relatime - ext4 /dev/vda rw,discard,resv_strict,resuid=65534,resgid=65534
61 58 0:21 / /proc rw,relatime - proc proc rw
96 58 0:6 / /dev rw,relatime - devtmpfs devtmpfs rw,size=12334492k,nr_inodes=3083623,mode=755
101 58 254:0 /run/netns /run/netns rw,relatime - ext4 /dev/vda rw,discard,resv_strict,resuid=65534,resgid=65534
107 58 0:41 / /replica rw,relatime - tmpfs tmpfs rw,size=1024k
";

    fn decide(datadir: &str, resolved: &str, mountinfo: &str) -> Option<String> {
        datadir_problem(Path::new(datadir), Path::new(resolved), Path::new("/replica"), &parse_mountinfo(mountinfo))
    }

    #[test]
    fn datadir_on_the_mounted_replica_passes() {
        assert_eq!(decide("/var/lib/mysql", "/replica/var/lib/mysql", MOUNTED), None);
        assert_eq!(decide("/replica/mysql", "/replica/mysql", MOUNTED), None);
    }

    #[test]
    fn replica_not_mounted_names_both_paths() {
        // The same machine before the mount: the line for /replica is absent.
        let unmounted: String = MOUNTED.lines().filter(|l| !l.contains("/replica")).map(|l| format!("{l}\n")).collect();
        let problem = decide("/var/lib/mysql", "/replica/var/lib/mysql", &unmounted).unwrap();
        assert_eq!(
            problem,
            "the replica /replica is not mounted: datadir /var/lib/mysql (resolves to /replica/var/lib/mysql) \
             is on /dev/vda (ext4) mounted at /; the filesystem resource must start before MySQL"
        );
    }

    #[test]
    fn datadir_on_local_disk_or_a_lookalike_path_fails() {
        let problem = decide("/var/lib/mysql", "/var/lib/mysql", MOUNTED).unwrap();
        assert!(problem.starts_with("datadir /var/lib/mysql is not under the replica mount /replica"), "{problem}");
        // Path prefixes compare by component: /replica2 is not /replica.
        let lookalike = format!("{MOUNTED}108 58 0:42 / /replica2 rw,relatime - tmpfs tmpfs rw\n");
        assert!(decide("/replica2/mysql", "/replica2/mysql", &lookalike).is_some());
    }

    /// Requires root and util-linux `unshare`; under CI=true their absence fails the test.
    fn prerequisites() -> bool {
        let ok = nix::unistd::Uid::effective().is_root()
            && Command::new("unshare").arg("--version").output().is_ok_and(|o| o.status.success());
        assert!(ok || std::env::var("CI").as_deref() != Ok("true"), "needs root and unshare (CI=true)");
        if !ok {
            eprintln!("skipped: needs root and unshare");
        }
        ok
    }

    #[test]
    fn decision_on_a_real_mount_in_a_private_namespace() {
        if !prerequisites() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        // The namespace and its mount vanish with the shell; the symlink is a migrated datadir.
        let script = format!(
            "set -e; mkdir {d}/replica; ln -s {d}/replica/mysql {d}/datadir; mkdir {d}/replica/mysql; \
             readlink -f {d}/datadir; cat /proc/self/mountinfo; echo ===; \
             mount -t tmpfs -o size=1m tmpfs {d}/replica; mkdir {d}/replica/mysql; cat /proc/self/mountinfo"
        );
        let out =
            Command::new("unshare").args(["-m", "--propagation", "private", "sh", "-c", &script]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8(out.stdout).unwrap();
        let (resolved, rest) = text.split_once('\n').unwrap();
        let (before, after) = rest.split_once("===\n").unwrap();
        let (datadir, replica) = (dir.path().join("datadir"), dir.path().join("replica"));
        let decide =
            |mountinfo: &str| datadir_problem(&datadir, Path::new(resolved), &replica, &parse_mountinfo(mountinfo));
        let problem = decide(before).unwrap();
        assert!(problem.contains(&format!("the replica {d}/replica is not mounted")), "{problem}");
        assert_eq!(decide(after), None);
    }

    const TIMEOUTS: Timeouts = Timeouts {
        start: Duration::from_secs(90),
        stop: Duration::from_secs(60),
        monitor: Duration::from_secs(10),
        monitor_interval: Duration::from_secs(10),
    };

    fn resource(
        runner: &Arc<ScriptedRunner>,
        datadir: PathBuf,
        replica_mount: PathBuf,
        socket: PathBuf,
    ) -> Arc<dyn Resource> {
        let config = MysqlResourceConfig {
            unit: "mariadb".into(),
            datadir,
            replica_mount,
            server: pbxha_replica::mysql::Endpoint { host: "localhost".into(), port: 3306, socket: Some(socket) },
            user: "root".into(),
            password_file: None,
        };
        build("db", &config, TIMEOUTS, runner.clone()).unwrap()
    }

    /// `systemctl is-active` output as systemd 252 prints it (state on stdout, 0 or 3).
    fn is_active(state: &str, code: i32) -> Output {
        Output { code, stdout: format!("{state}\n"), stderr: String::new() }
    }

    #[tokio::test]
    async fn start_refuses_before_systemctl_when_the_replica_is_not_mounted() {
        let dir = tempfile::tempdir().unwrap();
        let datadir = dir.path().join("mysql");
        std::fs::create_dir(&datadir).unwrap();
        let runner = Arc::new(ScriptedRunner::new());
        runner.on(["systemctl"], Output::ok(""));
        // The temp dir is an ordinary directory, not a mount point: the replica is "not mounted".
        let db = resource(&runner, datadir.clone(), dir.path().to_path_buf(), dir.path().join("none.sock"));
        let err = db.start().await.unwrap_err().to_string();
        assert!(
            err.starts_with("resource `db`: the replica ")
                && err.contains(&dir.path().display().to_string())
                && err.contains(&datadir.display().to_string()),
            "{err}"
        );
        assert!(runner.argvs().is_empty(), "{:?}", runner.argvs());
        let gone =
            resource(&runner, dir.path().join("missing"), dir.path().to_path_buf(), dir.path().join("none.sock"));
        let err = gone.start().await.unwrap_err().to_string();
        assert!(err.contains("cannot be resolved") && err.contains("missing"), "{err}");
        db.stop().await.unwrap();
        assert_eq!(runner.argvs(), ["systemctl stop mariadb"]);
    }

    #[tokio::test]
    async fn start_runs_the_unit_when_the_datadir_is_under_a_mount() {
        let dir = tempfile::tempdir().unwrap();
        let runner = Arc::new(ScriptedRunner::new());
        runner.on(["systemctl"], Output::ok(""));
        // Every path lies on the root mount, so "/" as the replica mount point passes.
        let db = resource(&runner, dir.path().to_path_buf(), "/".into(), dir.path().join("none.sock"));
        db.start().await.unwrap();
        assert_eq!(runner.argvs(), ["systemctl start mariadb"]);
        assert_eq!(runner.calls()[0].timeout, TIMEOUTS.start);
    }

    #[tokio::test]
    async fn monitor_queries_only_an_active_unit_and_names_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("mysqld.sock");
        let runner = Arc::new(ScriptedRunner::new());
        let db = resource(&runner, dir.path().to_path_buf(), "/".into(), socket.clone());
        runner.on(["systemctl", "is-active", "mariadb"], is_active("inactive", 3));
        assert_eq!(db.monitor().await.unwrap(), ResourceState::Stopped);
        // Active, but nothing listens on the socket: a real login attempt fails.
        runner.on(["systemctl", "is-active", "mariadb"], is_active("active", 0));
        let err = db.monitor().await.unwrap_err().to_string();
        assert!(err.starts_with("resource `db`: ") && err.contains(&socket.display().to_string()), "{err}");
    }
}
