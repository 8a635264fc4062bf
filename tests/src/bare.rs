//! The bare lab as the install tests use it: `pbxha lab up --bare`, a node prepared as an
//! operator's server would be before `pbxha install` (Asterisk's config, a real MariaDB in
//! the node's namespace), and `pbxha install` run inside the node.
//!
//! Every namespace of the lab shares the host's UTS name, and the preflight (like the
//! daemon) takes the node's name from `uname -n`. So each node's install runs under
//! `unshare --uts` with `hostname a` or `hostname b`: the node then has its own name, as a
//! real server does, and the daemon the install starts inherits it.
//!
//! Asterisk exists in no reachable registry, so its unit is played at the command boundary:
//! a `systemctl` on the node's PATH starts pbxha's builtin SIP responder for `start
//! asterisk` and reports it for `is-active`; every other `systemctl` call (the installer's
//! `--root` ones) goes to the real systemctl.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use crate::{pbxha, wait_for};

/// The MariaDB admin password both nodes' servers accept (root, from the heartbeat subnet).
pub const ADMIN_PASSWORD: &str = "join-lab-admin-pw";

pub struct BareLab {
    pub prefix: String,
    pub tmp: tempfile::TempDir,
}

impl BareLab {
    /// `pbxha lab up --bare` with namespaces named after `tag` and this process.
    pub fn up(tag: &str) -> BareLab {
        let lab =
            BareLab { prefix: format!("{tag}{}-", std::process::id() % 100_000), tmp: tempfile::tempdir().unwrap() };
        let out = lab.lab(&["up", "--bare"]);
        assert!(out.status.success(), "lab up --bare: {}", text(&out));
        assert!(text(&out).contains("a: root") && text(&out).contains("disk /dev/loop"), "{}", text(&out));
        lab
    }

    pub fn state_dir(&self) -> PathBuf {
        self.tmp.path().join("lab")
    }

    pub fn lab(&self, args: &[&str]) -> Output {
        crate::lab_cmd(&self.prefix, &self.state_dir(), args)
    }

    /// The directory `pbxha install --root` is given on `node`.
    pub fn root(&self, node: &str) -> PathBuf {
        self.state_dir().join(format!("{node}-root"))
    }

    pub fn config(&self, node: &str) -> PathBuf {
        self.root(node).join("etc/pbxha/pbxha.toml")
    }

    fn socket(&self, node: &str) -> PathBuf {
        self.root(node).join("run/mysqld/mysqld.sock")
    }

    fn bin(&self, node: &str) -> PathBuf {
        self.tmp.path().join(format!("bin-{node}"))
    }

    /// Node `node` as an operator's server before the install: Asterisk's pjsip.conf, the
    /// played Asterisk unit, and MariaDB running in its namespace with the settings
    /// master-master replication needs (`mysql setup`'s fragment, as the node's server-id
    /// gives it), reachable as root with [`ADMIN_PASSWORD`] from the heartbeat subnet.
    pub fn prepare(&self, node: &str, server_id: u32) {
        let root = self.root(node);
        write(
            &root.join("etc/asterisk/pjsip.conf"),
            "[transport-udp]\ntype=transport\nprotocol=udp\nbind=0.0.0.0:5060\n",
            0o644,
        );
        std::fs::create_dir_all(root.join("etc/mysql/mariadb.conf.d")).unwrap();
        let db = self.tmp.path().join(format!("mysql-{node}"));
        let d = db.display();
        let sock = self.socket(node);
        std::fs::create_dir_all(sock.parent().unwrap()).unwrap();
        write(
            &db.join("my.cnf"),
            &format!(
                "[mysqld]\nuser = root\ndatadir = {d}/data\nsocket = {}\npid-file = {d}/mysqld.pid\nport = 3306\n\
                 bind-address = 203.0.113.{}\nskip-name-resolve\nlog-error = {d}/error.log\ninnodb-buffer-pool-size = 32M\n\
                 innodb-log-file-size = 8M\nserver-id = {server_id}\ngtid-domain-id = {server_id}\nlog-bin = mysql-bin\n\
                 binlog-format = ROW\nlog-slave-updates = ON\nauto-increment-increment = 2\nauto-increment-offset = {server_id}\n",
                sock.display(),
                10 + server_id
            ),
            0o644,
        );
        let cnf = format!("--defaults-file={d}/my.cnf");
        let out = self.lab(&["exec", node, "--", "mariadb-install-db", &cnf, "--skip-test-db"]);
        assert!(out.status.success(), "mariadb-install-db on {node}: {}", text(&out));
        let out =
            self.lab(&["exec", node, "--", "sh", "-c", &format!("setsid mariadbd {cnf} </dev/null >/dev/null 2>&1 &")]);
        assert!(out.status.success(), "{}", text(&out));
        wait_for(Duration::from_secs(60), &format!("MariaDB in node {node}'s namespace"), || {
            let out = self.lab(&["exec", node, "--", "mariadb-admin", &format!("--socket={}", sock.display()), "ping"]);
            out.status.success().then_some(())
        });
        let pw = ADMIN_PASSWORD;
        let out = self.lab(&[
            "exec",
            node,
            "--",
            "mariadb",
            &format!("--socket={}", sock.display()),
            "-uroot",
            "-e",
            &format!(
                "SET SESSION sql_log_bin = 0; ALTER USER root@localhost IDENTIFIED BY '{pw}'; \
                 CREATE USER root@'203.0.113.%' IDENTIFIED BY '{pw}'; GRANT ALL ON *.* TO root@'203.0.113.%' WITH GRANT OPTION"
            ),
        ]);
        assert!(out.status.success(), "MariaDB accounts on {node}: {}", text(&out));
        write(&root.join("etc/pbxha/mysql-admin"), &format!("{pw}\n"), 0o600);
        write(
            &self.bin(node).join("systemctl"),
            &format!(
                "#!/bin/sh\ncase \"$1\" in --root) exec /usr/bin/systemctl \"$@\";; esac\n\
                 pid={dir}/asterisk-{node}.pid\n\
                 case \"$1 ${{2%.service}}\" in\n\
                 \"start asterisk\") setsid {exe} lab sip-responder --bind 198.51.100.100:5060 --node {node} </dev/null >/dev/null 2>&1 & echo $! > $pid; exit 0;;\n\
                 \"stop asterisk\") [ -f $pid ] && kill $(cat $pid); rm -f $pid; exit 0;;\n\
                 \"is-active asterisk\") [ -f $pid ] && kill -0 $(cat $pid) 2>/dev/null && {{ echo active; exit 0; }}; echo inactive; exit 3;;\n\
                 esac\nexec /usr/bin/systemctl \"$@\"\n",
                dir = self.tmp.path().display(),
                exe = pbxha().display()
            ),
            0o755,
        );
    }

    /// An SQL statement on `node`'s server, as root with the admin password; its output.
    pub fn sql(&self, node: &str, statement: &str) -> String {
        self.try_sql(node, statement).unwrap_or_else(|| panic!("`{statement}` on {node} failed"))
    }

    /// [`BareLab::sql`], `None` when the server refuses the statement (a table that has not
    /// arrived yet).
    pub fn try_sql(&self, node: &str, statement: &str) -> Option<String> {
        let out = self.lab(&[
            "exec",
            node,
            "--",
            "mariadb",
            &format!("--socket={}", self.socket(node).display()),
            "-uroot",
            &format!("-p{ADMIN_PASSWORD}"),
            "-N",
            "-B",
            "-e",
            statement,
        ]);
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `argv` run in node `node`'s namespace under its own host name, with the played
    /// Asterisk unit first on its PATH.
    pub fn on_node(&self, node: &str, argv: &[&str]) -> Output {
        let path =
            format!("PATH={}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", self.bin(node).display());
        let mut args = vec!["exec", node, "--", "unshare", "--uts", "sh", "-c", "hostname \"$0\" && exec \"$@\"", node];
        args.extend(["env", &path]);
        args.extend(argv);
        self.lab(&args)
    }

    /// `pbxha install --root ROOT ARGS…` on `node`.
    pub fn install(&self, node: &str, args: &[&str]) -> Output {
        let (exe, root) = (pbxha().display().to_string(), self.root(node).display().to_string());
        let mut argv = vec![exe.as_str(), "install", "--root", root.as_str()];
        argv.extend(args);
        self.on_node(node, &argv)
    }

    /// The first node's answers (storage none, MySQL master-master, the default timing profile
    /// an operator gets), written into its root.
    pub fn first_answers(&self) -> PathBuf {
        let answers = self.root("a").join("answers.toml");
        write(
            &answers,
            "node = \"a\"\npeer = \"b\"\nping = [\"198.51.100.1\"]\npbx = \"asterisk\"\ntiming = \"default\"\nmail = \"none\"\n\
             [public]\ninterface = \"pub0\"\npeer-address = \"198.51.100.12\"\nvip = \"198.51.100.100/24\"\n\
             [[heartbeat]]\ninterface = \"hb0\"\npeer-address = \"203.0.113.12\"\n\
             [storage]\nkind = \"none\"\n[mysql]\nmode = \"master-master\"\nadmin-password-file = \"/etc/pbxha/mysql-admin\"\n",
            0o644,
        );
        answers
    }
}

impl Drop for BareLab {
    fn drop(&mut self) {
        // Kills every process in the lab's namespaces (the daemons, MariaDB, the responder),
        // removes them and detaches the bare nodes' disks.
        let out = self.lab(&["down"]);
        if !out.status.success() {
            eprintln!("lab down: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
}

pub fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

pub fn write(path: &Path, text: &str, mode: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}
