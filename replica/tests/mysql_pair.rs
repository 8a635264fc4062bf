//! Master-master replication between two real MariaDB servers started by this test,
//! configured from scratch by `pbxha_replica::mysql::setup` (recipe in shared/TESTING.md).
//! One pair is shared by the scenarios, which run in order: it takes ~35 s to bring up.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pbxha_replica::mysql::canary::{self, Side};
use pbxha_replica::mysql::client::{pair_status, select_one, Credentials, Server};
use pbxha_replica::mysql::fragment::{self, FRAGMENT_NAME};
use pbxha_replica::mysql::setup::setup;
use pbxha_replica::mysql::{parse_mysql, Flavor, MysqlConfig};
use pbxha_runner::SystemRunner;

const ADMIN_PASSWORD: &str = "adm'in pw";
/// Two distinct TCP ports free on 127.0.0.1 now: fixed ports would collide with another run
/// of this test on the same machine (parallel worktrees, CI jobs). Both listeners are held
/// until both ports are known, so the kernel cannot hand out the same one twice.
fn free_ports() -> [u16; 2] {
    let bind = || std::net::TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0");
    let held = [bind(), bind()];
    held.map(|l| l.local_addr().expect("a bound listener's address").port())
}

/// One MariaDB server in a temp dir; killed by PID on drop, also when the test fails.
struct Instance {
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl Instance {
    fn cnf(&self) -> PathBuf {
        self.dir.join("my.cnf")
    }
    fn socket(&self) -> PathBuf {
        self.dir.join("mysqld.sock")
    }
    fn conf_d(&self) -> PathBuf {
        self.dir.join("conf.d")
    }

    fn create(root: &Path, port: u16) -> Instance {
        let dir = root.join(format!("db{port}"));
        std::fs::create_dir_all(dir.join("conf.d")).unwrap();
        let inst = Instance { dir: dir.clone(), port, child: None };
        let d = dir.display();
        std::fs::write(
            inst.cnf(),
            format!(
                "[mysqld]\nuser = root\ndatadir = {d}/data\nsocket = {d}/mysqld.sock\npid-file = {d}/mysqld.pid\n\
                 port = {port}\nbind-address = 127.0.0.1\nskip-name-resolve\nlog-error = {d}/error.log\n\
                 innodb-buffer-pool-size = 32M\ninnodb-log-file-size = 8M\n!includedir {d}/conf.d\n"
            ),
        )
        .unwrap();
        inst
    }

    /// Creates the datadir. Retried once from scratch: a bootstrap that fails for a reason
    /// outside the code under test (seen once under heavy load, with no message) should not
    /// fail the suite, but its output is printed so a real problem stays visible.
    fn install(&self) {
        let run = || {
            Command::new("mariadb-install-db")
                .arg(format!("--defaults-file={}", self.cnf().display()))
                .arg("--skip-test-db")
                .output()
                .expect("mariadb-install-db")
        };
        let mut out = run();
        if !out.status.success() {
            eprintln!(
                "mariadb-install-db exited with {} (retrying once): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            let _ = std::fs::remove_dir_all(self.dir.join("data"));
            out = run();
        }
        assert!(
            out.status.success(),
            "mariadb-install-db exited with {}: {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn start(&mut self) {
        use std::os::unix::process::CommandExt;
        let child = Command::new("mariadbd")
            .arg(format!("--defaults-file={}", self.cnf().display()))
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mariadbd");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let ping = Command::new("mariadb-admin")
                .args(["--no-defaults", &format!("--socket={}", self.socket().display()), "-uroot", "ping"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .unwrap();
            if ping.success() {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                let log = std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default();
                panic!("mariadbd on port {} exited with {status}: {log}", self.port);
            }
            assert!(Instant::now() < deadline, "mariadbd on port {} did not answer ping", self.port);
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// SIGTERM and wait: a clean shutdown, as `systemctl stop` would do.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(60);
            while child.try_wait().unwrap().is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.wait();
        }
    }

    fn root_sql(&self, sql: &str) {
        let out = Command::new("mariadb")
            .args(["--no-defaults", &format!("--socket={}", self.socket().display()), "-uroot", "-e", sql])
            .output()
            .unwrap();
        assert!(out.status.success(), "{sql}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn config(me: &Instance, other: &Instance, server_id: u32, seed: bool, password_file: &Path) -> MysqlConfig {
    let text = format!(
        "mode = \"master-master\"\nserver-id = {server_id}\nseed = {seed}\n\
         local = {{ host = \"127.0.0.1\", port = {}, socket = \"{}\" }}\n\
         peer = {{ host = \"127.0.0.1\", port = {} }}\n\
         admin-user = \"pbxha_admin\"\nadmin-password-file = \"{}\"\n\
         databases = [\"pbx\"]\nconf-dir = \"{}\"\n",
        me.port,
        me.socket().display(),
        other.port,
        password_file.display(),
        me.conf_d().display()
    );
    parse_mysql(&text.parse().unwrap()).unwrap_or_else(|p| panic!("{p:?}"))
}

fn secret(root: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = root.join(name);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

async fn admin(inst: &Instance) -> Server {
    let ep = pbxha_replica::mysql::Endpoint { host: "127.0.0.1".into(), port: inst.port, socket: None };
    let creds = Credentials {
        user: "pbxha_admin".into(),
        password: Some(ADMIN_PASSWORD.into()),
        keys: "mysql.admin-user / mysql.admin-password-file".into(),
    };
    Server::connect("test", &ep, &creds, None).await.unwrap()
}

async fn rows(s: &mut Server) -> Vec<(u64, String)> {
    let rows = s.rows("SELECT id, node FROM pbx.calls ORDER BY id").await.unwrap();
    rows.into_iter().map(|r| (r[0].1.as_deref().unwrap().parse().unwrap(), r[1].1.clone().unwrap())).collect()
}

/// Polls until `s` has exactly the rows of `want` (order by id).
async fn wait_rows(s: &mut Server, want: &[(u64, String)]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let have = rows(s).await;
        if have == want {
            return;
        }
        assert!(Instant::now() < deadline, "{}: rows {have:?}, want {want:?}", s.name);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn prerequisites() -> bool {
    let ok = ["mariadbd", "mariadb-install-db", "mariadb", "mariadb-dump", "mariadb-admin"].iter().all(|t| {
        Command::new("sh")
            .args(["-c", &format!("command -v {t} || test -x /usr/sbin/{t}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    if !ok {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "MariaDB (mariadb-server, mariadb-client) is not installed"
        );
        eprintln!("skipping: MariaDB is not installed (apt-get install mariadb-server mariadb-client)");
    }
    ok
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_master_from_scratch_catch_up_and_conflict() {
    if !prerequisites() {
        return;
    }
    std::env::set_var("PATH", format!("{}:/usr/sbin", std::env::var("PATH").unwrap_or_default()));
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let [port_a, port_b] = free_ports();
    let mut a = Instance::create(root, port_a);
    let mut b = Instance::create(root, port_b);
    // One after the other: two bootstraps at once compete for the two cores.
    a.install();
    b.install();
    a.start();
    b.start();
    for inst in [&a, &b] {
        let pw = ADMIN_PASSWORD.replace('\'', "''");
        inst.root_sql(&format!(
            "CREATE USER 'pbxha_admin'@'127.0.0.1' IDENTIFIED BY '{pw}'; GRANT ALL ON *.* TO 'pbxha_admin'@'127.0.0.1' WITH GRANT OPTION; \
             CREATE USER 'pbxha_admin'@'localhost' IDENTIFIED BY '{pw}'; GRANT ALL ON *.* TO 'pbxha_admin'@'localhost' WITH GRANT OPTION; \
             CREATE DATABASE pbx; CREATE TABLE pbx.calls (id INT UNSIGNED AUTO_INCREMENT PRIMARY KEY, node VARCHAR(16) NOT NULL) ENGINE=InnoDB"
        ));
    }
    // The `mysql` resource's monitor query (`client::select_one`, which the resource calls)
    // on a real server: by socket, as the resource is configured, and refused with a wrong
    // password, naming the socket.
    let by_socket = pbxha_replica::mysql::Endpoint { host: "127.0.0.1".into(), port: a.port, socket: Some(a.socket()) };
    // The resource's credentials, read as it reads them, under its own keys.
    let resource_creds =
        |file: &Path| Credentials::from_file("pbxha_admin", Some(file), ("user", "password-file")).unwrap();
    let right = secret(root, "resource.pw", ADMIN_PASSWORD, 0o600);
    select_one(&by_socket, &resource_creds(&right)).await.unwrap();
    let wrong = secret(root, "resource-wrong.pw", "nope", 0o600);
    let err = select_one(&by_socket, &resource_creds(&wrong)).await.unwrap_err().to_string();
    assert!(
        err.contains("refused")
            && err.contains(&a.socket().display().to_string())
            && err.contains("user / password-file")
            && !err.contains("admin-user"),
        "{err}"
    );
    a.root_sql("INSERT INTO pbx.calls (node) VALUES ('seed1'), ('seed2')");
    b.root_sql("INSERT INTO pbx.calls (node) VALUES ('stale')");
    let pwfile = secret(root, "admin.pw", &format!("{ADMIN_PASSWORD}\n"), 0o600);
    let cfg_a = config(&a, &b, 1, true, &pwfile);
    let cfg_b = config(&b, &a, 2, false, &pwfile);
    let mut quiet = |_: &str| {};

    // Bad input 1: wrong credentials, a readable password file, an unreachable peer.
    let wrong = MysqlConfig { admin_password_file: Some(secret(root, "wrong.pw", "nope", 0o600)), ..cfg_a.clone() };
    let err = setup(&wrong, &SystemRunner, &mut quiet).await.unwrap_err().to_string();
    assert!(err.contains("local 127.0.0.1") && err.contains("mysql.admin-user") && err.contains("refused"), "{err}");
    let open =
        MysqlConfig { admin_password_file: Some(secret(root, "open.pw", ADMIN_PASSWORD, 0o644)), ..cfg_a.clone() };
    let err = setup(&open, &SystemRunner, &mut quiet).await.unwrap_err().to_string();
    assert!(err.contains("mysql.admin-password-file") && err.contains("0644"), "{err}");
    let mut unreachable = cfg_a.clone();
    unreachable.peer.as_mut().unwrap().port = 1;
    let err = setup(&unreachable, &SystemRunner, &mut quiet).await.unwrap_err().to_string();
    assert!(err.contains("peer 127.0.0.1:1") && err.contains("mysql.peer") && err.contains("bind-address"), "{err}");

    // Bad input 2: binary logging off. The fragment is written; the server must restart.
    let err = setup(&cfg_a, &SystemRunner, &mut quiet).await.unwrap_err().to_string();
    assert!(err.contains("local 127.0.0.1") && err.contains("log_bin: is off") && err.contains("restart"), "{err}");
    let text = std::fs::read_to_string(a.conf_d().join(FRAGMENT_NAME)).unwrap();
    assert_eq!(text, fragment::render(&cfg_a, Flavor::MariaDb));
    // Node B first configured with A's server-id: a clash A's setup must refuse.
    let clash = MysqlConfig { server_id: 1, gtid_domain_id: 2, ..cfg_b.clone() };
    let err = setup(&clash, &SystemRunner, &mut quiet).await.unwrap_err().to_string();
    assert!(err.contains("log_bin"), "{err}");
    a.stop();
    b.stop();
    a.start();
    b.start();
    let err = setup(&cfg_a, &SystemRunner, &mut quiet).await.unwrap_err().to_string();
    assert!(
        err.contains(&format!("peer 127.0.0.1:{}", b.port))
            && err.contains("server_id")
            && err.contains("mysql.server-id"),
        "{err}"
    );
    // B's operator fixes the config: the fragment changes, and the server must restart.
    let err = setup(&cfg_b, &SystemRunner, &mut quiet).await.unwrap_err().to_string();
    assert!(
        err.contains("local 127.0.0.1")
            && err.contains("server_id: is 1, the fragment says 2")
            && err.contains("restart"),
        "{err}"
    );
    b.stop();
    b.start();

    // Bad input 3: the replication account exists on A with other grants.
    a.root_sql("SET SESSION sql_log_bin=0; CREATE USER 'pbxha_repl'@'127.0.0.1' IDENTIFIED BY 'x'; GRANT SELECT ON pbx.* TO 'pbxha_repl'@'127.0.0.1'");
    let err = setup(&cfg_b, &SystemRunner, &mut quiet).await.unwrap_err().to_string();
    assert!(
        err.contains(&format!("peer 127.0.0.1:{}", a.port))
            && err.contains("mysql.replication-user")
            && err.contains("SELECT ON `pbx`.*"),
        "{err}"
    );
    let mut sb = admin(&b).await;
    assert_eq!(
        sb.scalar("SELECT COUNT(*) FROM mysql.user WHERE User = 'pbxha_repl'").await.unwrap().as_deref(),
        Some("0")
    );
    assert!(sb.replica_status().await.unwrap().is_none());
    a.root_sql("SET SESSION sql_log_bin=0; DROP USER 'pbxha_repl'@'127.0.0.1'");

    // Setup from node B (not the seed): A's databases win the initial copy.
    let mut progress = Vec::new();
    let steps = setup(&cfg_b, &SystemRunner, &mut |p: &str| progress.push(p.to_string())).await.unwrap();
    eprintln!("setup on B: {steps:#?}\nprogress: {progress:?}");
    assert!(steps.iter().any(|s| s.changed && s.what.starts_with("initial copy of pbx from peer")), "{steps:?}");
    let mut sa = admin(&a).await;
    // Written before the auto-increment settings: consecutive ids.
    let seed_rows = vec![(1, "seed1".to_string()), (2, "seed2".to_string())];
    assert_eq!(rows(&mut sa).await, seed_rows);
    assert_eq!(rows(&mut sb).await, seed_rows, "B's stale row was replaced by the seed's copy");
    eprintln!("B SHOW SLAVE STATUS: {:?}", sb.rows("SHOW SLAVE STATUS").await.unwrap());

    // Writes on each side appear on the other, with interleaved auto-increment ids.
    sa.exec(&["INSERT INTO pbx.calls (node) VALUES ('a1')"]).await.unwrap();
    sb.exec(&["INSERT INTO pbx.calls (node) VALUES ('b1')"]).await.unwrap();
    sa.exec(&["INSERT INTO pbx.calls (node) VALUES ('a2')"]).await.unwrap();
    sb.exec(&["INSERT INTO pbx.calls (node) VALUES ('b2')"]).await.unwrap();
    // The final state is known in advance: A takes odd ids and B even ones
    // (auto_increment_offset = server-id, increment 2), each next id above the highest it
    // has seen. Both sides are polled for exactly that state rather than one side for a
    // snapshot of the other, which may be taken while a row is still on its way.
    let all: Vec<(u64, String)> = [(1, "seed1"), (2, "seed2"), (3, "a1"), (4, "b1"), (5, "a2"), (6, "b2")]
        .into_iter()
        .map(|(id, node)| (id, node.to_string()))
        .collect();
    wait_rows(&mut sa, &all).await;
    wait_rows(&mut sb, &all).await;

    // Rerun on A: idempotent, says what it left as is.
    let steps = setup(&cfg_a, &SystemRunner, &mut quiet).await.unwrap();
    assert!(steps.iter().any(|s| !s.changed && s.what == "replication both ways"), "{steps:?}");
    assert!(!steps.iter().any(|s| s.changed && s.what.contains("initial copy")), "{steps:?}");
    assert_eq!(rows(&mut sb).await, all, "a rerun copies nothing");

    // The drill's canary: written on A before a move, read (and removed) on B after it.
    let row = canary::write(&cfg_a, Side::Local).await.unwrap();
    let seen = canary::read_and_remove(&cfg_a, Side::Peer, &row, Duration::from_secs(30)).await.unwrap();
    eprintln!("canary seen on B after {seen:?}");
    // The removal on B replicates back to A.
    let count = format!("SELECT COUNT(*) FROM pbxha.drill_canary WHERE token = '{}'", row.token);
    let deadline = Instant::now() + Duration::from_secs(30);
    while sa.scalar(&count).await.unwrap().as_deref() != Some("0") {
        assert!(Instant::now() < deadline, "the canary row removed on B is still on A");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A row that was never written is reported missing, naming the server.
    let never = canary::Canary { token: "never-written".into() };
    let err = canary::read_and_remove(&cfg_b, Side::Local, &never, Duration::from_millis(300)).await.unwrap_err();
    assert!(err.to_string().contains("canary row") && err.to_string().contains("local 127.0.0.1"), "{err}");

    // Stop B, write on A, restart B: it catches up.
    sb.close().await;
    b.stop();
    sa.exec(&["INSERT INTO pbx.calls (node) VALUES ('a-while-b-down')"]).await.unwrap();
    let want = rows(&mut sa).await;
    b.start();
    let mut sb = admin(&b).await;
    wait_rows(&mut sb, &want).await;
    // A's IO thread reconnects to B on its own (MASTER_CONNECT_RETRY=10).
    let deadline = Instant::now() + Duration::from_secs(60);
    while !pair_status(&cfg_a).await.alerts(60).is_empty() {
        assert!(Instant::now() < deadline, "A does not replicate from B again: {}", pair_status(&cfg_a).await);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Break replication with a conflicting row: B's status shows the SQL error on B's side.
    sb.exec(&["SET SESSION sql_log_bin = 0", "INSERT INTO pbx.calls (id, node) VALUES (1001, 'b-only')"])
        .await
        .unwrap();
    sa.exec(&["INSERT INTO pbx.calls (id, node) VALUES (1001, 'a-conflict')"]).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let pair = loop {
        let pair = pair_status(&cfg_b).await;
        if pair.local.as_ref().is_ok_and(|s| s.replica.as_ref().is_some_and(|r| r.sql_error.is_some())) {
            break pair;
        }
        assert!(Instant::now() < deadline, "no SQL error on B: {pair}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    eprintln!("{pair}");
    let shown = pair.to_string();
    assert!(shown.contains("last SQL error 1062"), "{shown}");
    let alerts = pair.alerts(60);
    assert!(
        alerts
            .iter()
            .any(|a| a.server == "local 127.0.0.1 (socket ".to_string() + &b.socket().display().to_string() + ")"
                && a.message.contains("SQL thread error 1062")),
        "{alerts:?}"
    );
    assert!(
        pair.peer.as_ref().is_ok_and(|s| s.replica.as_ref().is_some_and(|r| r.healthy())),
        "A is still fine: {pair}"
    );
    // Seen from A, the failing side is its peer.
    let from_a = pair_status(&cfg_a).await.alerts(60);
    assert!(
        from_a.iter().all(|x| x.server.starts_with(&format!("peer 127.0.0.1:{}", b.port))) && !from_a.is_empty(),
        "{from_a:?}"
    );
    // Setup refuses to overwrite data on a broken pair.
    let err = setup(&cfg_a, &SystemRunner, &mut quiet).await.unwrap_err().to_string();
    assert!(err.contains(&format!("peer 127.0.0.1:{}", b.port)) && err.contains("configured but failing"), "{err}");
    sa.close().await;
    sb.close().await;
    a.stop();
    b.stop();
}
