//! `pbxha install` end to end: the real binary on a `--root` tree, inside network namespaces
//! the test makes (a node and its peer joined by two veth pairs: 198.51.100.0/24 public,
//! 203.0.113.0/24 heartbeat). Bad input is refused with a clear error and nothing changed;
//! an install SIGKILLed at random points resumes to the same tree as an uninterrupted one;
//! `--undo` puts the tree back.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use pbxha_tests::{have, is_root, pbxha, require, Guard};

/// Two namespaces: `node` (where pbxha install runs) and `peer`, removed on drop.
struct Net {
    node: String,
    peer: String,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip");
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

impl Net {
    fn new(tag: &str) -> Net {
        let id = format!("{}-{tag}", std::process::id());
        let net = Net { node: format!("pbxha-inst-{id}-n"), peer: format!("pbxha-inst-{id}-p") };
        for ns in [&net.node, &net.peer] {
            ip(&["netns", "add", ns]);
        }
        let (n, p) = (net.node.as_str(), net.peer.as_str());
        ip(&["link", "add", "pub0", "netns", n, "type", "veth", "peer", "name", "pub1", "netns", p]);
        ip(&["link", "add", "hb0", "netns", n, "type", "veth", "peer", "name", "hb1", "netns", p]);
        for (ns, dev, addr) in [
            (n, "pub0", "198.51.100.11/24"),
            (n, "hb0", "203.0.113.11/24"),
            (p, "pub1", "198.51.100.12/24"),
            (p, "hb1", "203.0.113.12/24"),
        ] {
            ip(&["-n", ns, "addr", "add", addr, "dev", dev]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
        }
        for ns in [n, p] {
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        net
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in [&self.node, &self.peer] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// A loop device on a sparse file, detached on drop.
struct Loop {
    dev: String,
}

impl Loop {
    fn new(image: &Path, mib: u64) -> Loop {
        std::fs::File::create(image).unwrap().set_len(mib << 20).unwrap();
        let out = Command::new("losetup").args(["-f", "--show"]).arg(image).output().unwrap();
        assert!(out.status.success(), "losetup: {}", String::from_utf8_lossy(&out.stderr));
        Loop { dev: String::from_utf8_lossy(&out.stdout).trim().to_string() }
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.dev]).status();
    }
}

fn uname() -> String {
    String::from_utf8(Command::new("uname").arg("-n").output().unwrap().stdout).unwrap().trim().to_string()
}

fn answers(storage: &str) -> String {
    format!(
        "node = \"{}\"\npeer = \"peer-x\"\nping = []\npbx = \"asterisk\"\ntiming = \"default\"\nmail = \"none\"\n\
         [public]\ninterface = \"pub0\"\npeer-address = \"198.51.100.12\"\nvip = \"198.51.100.100/24\"\n\
         [[heartbeat]]\ninterface = \"hb0\"\npeer-address = \"203.0.113.12\"\n\
         [storage]\n{storage}\n[mysql]\nmode = \"none\"\n",
        uname()
    )
}

/// A PBX host's tree: Asterisk's config and state, MySQL's datadir, an Asterisk unit
/// enabled at boot (by the real `systemctl --root`).
fn fake_host(root: &Path, bulk_mib: usize) {
    let files: &[(&str, &str)] = &[
        ("etc/asterisk/pjsip.conf", "[transport-udp]\ntype=transport\nprotocol=udp\nbind=0.0.0.0:5060\n"),
        ("etc/asterisk/extensions.conf", "[default]\nexten => 100,1,Answer()\n"),
        ("var/lib/asterisk/astdb.sqlite3", "astdb"),
        ("var/lib/mysql/ibdata1", "innodb"),
        ("lib/systemd/system/asterisk.service", "[Unit]\nDescription=Asterisk\n[Service]\nExecStart=/usr/sbin/asterisk -f\n[Install]\nWantedBy=multi-user.target\n"),
    ];
    for (path, text) in files {
        let p = root.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    // Sound files: what makes a migration take a while.
    let sounds = root.join("var/lib/asterisk/sounds");
    std::fs::create_dir_all(&sounds).unwrap();
    let chunk: Vec<u8> = (0..1 << 20).map(|i: u32| (i.wrapping_mul(2654435761) >> 24) as u8).collect();
    for i in 0..bulk_mib {
        std::fs::write(sounds.join(format!("prompt-{i:03}.wav")), &chunk).unwrap();
    }
    let out = Command::new("systemctl").arg("--root").arg(root).args(["enable", "asterisk.service"]).output().unwrap();
    assert!(out.status.success(), "systemctl --root enable: {}", String::from_utf8_lossy(&out.stderr));
}

/// Every entry below `root`: type, mode, and a hash of the bytes or the link target.
fn tree(root: &Path, skip: &[&str]) -> BTreeMap<String, String> {
    fn walk(dir: &Path, root: &Path, skip: &[&str], out: &mut BTreeMap<String, String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            if skip.iter().any(|s| rel == *s || rel.starts_with(&format!("{s}/"))) {
                continue;
            }
            let meta = std::fs::symlink_metadata(&p).unwrap();
            let mode = meta.permissions().mode() & 0o7777;
            let value = if meta.file_type().is_symlink() {
                format!("link {}", std::fs::read_link(&p).unwrap().display())
            } else if meta.is_dir() {
                walk(&p, root, skip, out);
                format!("dir {mode:o}")
            } else {
                let bytes = std::fs::read(&p).unwrap();
                format!("file {mode:o} {} bytes {:x}", bytes.len(), fnv(&bytes))
            };
            out.insert(rel, value);
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, skip, &mut out);
    out
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x100000001b3))
}

/// A node and its peer, and a PBX host's tree for the node's --root.
fn node(tag: &str) -> (Net, tempfile::TempDir) {
    let net = Net::new(tag);
    let root = tempfile::tempdir().unwrap();
    fake_host(root.path(), 0);
    (net, root)
}

fn prerequisites() -> bool {
    require(is_root(), "root (network namespaces, loop devices)")
        && require(
            have("ip") && have("arping") && have("ping") && have("losetup") && have("nsenter") && have("systemctl"),
            "iproute2, iputils-arping, iputils-ping, util-linux, systemctl",
        )
}

/// `pbxha install ARGS` inside the node's namespace.
fn install_in(net: &Net, root: &Path, args: &[&str]) -> Output {
    Command::new("ip")
        .args(["netns", "exec", &net.node])
        .arg(pbxha())
        .arg("install")
        .arg("--root")
        .arg(root)
        .args(args)
        .output()
        .unwrap()
}

/// `pbxha install --root ROOT --answers FILE --yes --no-start` outside any namespace: for
/// refusals that come before a single fact is gathered.
fn install_yes(root: &Path, answers: &Path) -> Output {
    Command::new(pbxha())
        .args(["install", "--yes", "--no-start", "--root"])
        .arg(root)
        .arg("--answers")
        .arg(answers)
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// Runs an install that must be refused: it fails, says `expect`, and changes nothing
/// (the lock file in /run aside: /run is volatile and the lock is how a second run is kept out).
fn refused(net: &Net, root: &Path, answers: &str, expect: &str) {
    let file = root.join("answers.toml");
    std::fs::write(&file, answers).unwrap();
    let before = tree(root, &["run"]);
    let out = install_in(net, root, &["--answers", file.to_str().unwrap(), "--yes", "--no-start"]);
    let said = text(&out);
    assert!(!out.status.success(), "accepted: {said}");
    assert!(said.contains(expect), "expected `{expect}` in:\n{said}");
    assert_eq!(tree(root, &["run"]), before, "the tree changed: {said}");
}

#[test]
fn no_terminal_and_no_answers_is_refused_in_one_line() {
    let out = Command::new(pbxha()).arg("install").stdin(Stdio::null()).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("no terminal to ask on: pass --answers FILE"), "{err}");
    let out = Command::new(pbxha()).args(["install", "--yes"]).stdin(Stdio::null()).output().unwrap();
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("--answers"),
        "--yes needs an answers file"
    );
}

#[test]
fn bad_answers_files_are_refused_before_anything_runs() {
    // No namespace needed: the file is read and judged before any fact is gathered.
    let root = tempfile::tempdir().unwrap();
    let cases = [
        (answers("kind = \"none\"").replace("peer-address = \"198.51.100.12\"", "peer-adress = \"198.51.100.12\""), "public.peer-adress: unknown key (hint: did you mean `peer-address`?)"),
        (answers("kind = \"none\"").replace("mail = \"none\"\n", "").replace("timing = \"default\"\n", ""), "2 answer(s) missing, and none is ever filled in with a default unasked: mail, timing"),
        (answers("kind = \"none\"").replace("mail = \"none\"\n", "") + "[mail]\nserver = \"smtp.example.org\"\nfrom = \"a@example.org\"\nto = [\"b@example.org\"]\nusername = \"a\"\npassword = \"hunter2\"\n", "mail.password: a password given inline is refused"),
    ];
    for (text, expect) in cases {
        let file = root.path().join("answers.toml");
        std::fs::write(&file, &text).unwrap();
        let before = tree(root.path(), &[]);
        let out = install_yes(root.path(), &file);
        let said = self::text(&out);
        assert!(!out.status.success() && said.contains(expect), "expected `{expect}` in:\n{said}");
        assert!(!said.contains("hunter2"), "the secret was echoed: {said}");
        assert_eq!(tree(root.path(), &[]), before);
    }
}

#[test]
fn a_second_install_while_one_runs_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let lock = root.path().join("run/pbxha/install.lock");
    std::fs::create_dir_all(lock.parent().unwrap()).unwrap();
    // Held by another process, as a running install holds it (killed when dropped).
    let _holder = Guard::spawn("flock", Command::new("flock").arg(&lock).args(["sleep", "60"]));
    pbxha_tests::wait_for(Duration::from_secs(10), "flock to hold the lock", || {
        let probe = Command::new("flock").args(["-n"]).arg(&lock).arg("true").status().ok()?;
        (!probe.success()).then_some(())
    });
    let file = root.path().join("answers.toml");
    std::fs::write(&file, answers("kind = \"none\"")).unwrap();
    let before = tree(root.path(), &[]);
    let out = install_yes(root.path(), &file);
    let said = text(&out);
    assert!(!out.status.success() && said.contains("another `pbxha install` is running"), "{said}");
    assert_eq!(tree(root.path(), &[]), before);
}

#[test]
fn vip_problems_are_refused_by_the_preflight() {
    if !prerequisites() {
        return;
    }
    let (net, root) = node("vip");
    refused(
        &net,
        root.path(),
        &answers("kind = \"none\"").replace("198.51.100.100/24", "192.0.2.100/24"),
        "VIP 192.0.2.100/24 is outside pub0's subnet 198.51.100.11/24",
    );
    // The dry run says the same and exits 1.
    let out =
        install_in(&net, root.path(), &["--answers", root.path().join("answers.toml").to_str().unwrap(), "--dry-run"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("FAIL  vip-subnet"), "{}", text(&out));
    // Another host (the peer namespace here) already answers ARP for the VIP.
    ip(&["-n", &net.peer, "addr", "add", "198.51.100.100/24", "dev", "pub1"]);
    refused(&net, root.path(), &answers("kind = \"none\""), "198.51.100.100 is already answered by");
}

#[test]
fn a_drbd_device_with_a_filesystem_or_mounted_is_refused() {
    if !prerequisites() || !require(have("mkfs.ext4") && have("blkid"), "e2fsprogs, blkid") {
        return;
    }
    let (net, root) = node("disk");
    let scratch = tempfile::tempdir().unwrap();
    let disk = Loop::new(&scratch.path().join("disk.img"), 32);
    let out = Command::new("mkfs.ext4").args(["-q", &disk.dev]).output().unwrap();
    assert!(out.status.success());
    let storage = format!("kind = \"drbd\"\ndevice = \"{}\"", disk.dev);
    refused(&net, root.path(), &answers(&storage), &format!("{} holds a ext4 signature", disk.dev));
    let mnt = scratch.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    // Mounted in a private mount namespace held by a sleeping process; the install runs
    // inside that namespace (nsenter) and the network namespace.
    let holder = Guard::spawn(
        "mount holder",
        Command::new("unshare").args([
            "-m",
            "--propagation",
            "private",
            "sh",
            "-c",
            &format!("mount {} {} && exec sleep 120", disk.dev, mnt.display()),
        ]),
    );
    let ns = format!("/proc/{}/ns/mnt", holder.pid());
    pbxha_tests::wait_for(Duration::from_secs(10), "the holder's mount", || {
        std::fs::read_to_string(format!("/proc/{}/mountinfo", holder.pid()))
            .ok()?
            .contains(&mnt.display().to_string())
            .then_some(())
    });
    let file = root.path().join("answers.toml");
    std::fs::write(&file, answers(&storage.replace("\"drbd\"", "\"drbd\"\nwipe = true"))).unwrap();
    let before = tree(root.path(), &["run"]);
    let out = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", net.node))
        .arg(format!("--mount={ns}"))
        .arg(pbxha())
        .args(["install", "--yes", "--no-start", "--root"])
        .arg(root.path())
        .arg("--answers")
        .arg(&file)
        .output()
        .unwrap();
    let said = text(&out);
    assert!(!out.status.success() && said.contains(&format!("{} is mounted on {}", disk.dev, mnt.display())), "{said}");
    assert_eq!(tree(root.path(), &["run"]), before);
}

#[test]
fn import_heartbeat_prints_the_seed_clusters_config() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../installer/tests/fixtures/seed-ha.d");
    let root = tempfile::tempdir().unwrap();
    let out = Command::new(pbxha())
        .args(["install", "--dry-run", "--root"])
        .arg(root.path())
        .arg("--import-heartbeat")
        .arg(&dir)
        .output()
        .unwrap();
    let config = String::from_utf8_lossy(&out.stdout);
    let notes = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{config}{notes}");
    for expected in [
        "interval = 2000\ndeadtime = 30000\nwarntime = 10000\ninitdead = 120000\nport = 694\n",
        "auto-failback = true",
        "[[node]]\nname = \"kava2\"\nid = 2",
        "mode = \"bcast\"\ninterface = \"eth1\"",
        "name = \"drbd\"\nkind = \"drbd\"\nresource = \"r0\"",
        "kind = \"filesystem\"\ndevice = \"/dev/drbd0\"",
        "fstype = \"ext3\"",
        "kind = \"vip\"\naddress = \"192.168.5.203/24\"\ninterface = \"eth0\"",
        "name = \"mysqld\"\nkind = \"service\"\nunit = \"mysqld\"",
        "name = \"asterisk\"\nkind = \"service\"\nunit = \"asterisk\"",
        "name = \"httpd\"\nkind = \"service\"\nunit = \"httpd\"",
    ] {
        assert!(config.contains(expected), "`{expected}` missing from:\n{config}");
    }
    assert!(notes.contains("authkeys (sha1) is not reused"), "{notes}");
    assert!(notes.contains("to fill in: link[0].addresses.kava2: 0.0.0.0 cannot be a node's address"), "{notes}");
    assert!(!config.contains("password") && !notes.contains("password"), "the authkeys secret leaked");
    assert_eq!(tree(root.path(), &[]), BTreeMap::new(), "a dry run writes nothing");
}

/// Fake drbdadm and modprobe for a machine without the DRBD module, and a real mkfs.ext4
/// behind a lock (a copy orphaned by a SIGKILLed install finishes before the resumed one
/// formats again); each logs its argv. drbdadm takes 0.4 s, about what a state change
/// waiting for its peer takes, so most kills land in a DRBD step. A loop device stands in
/// for /dev/drbd0 (answers `drbd-device`) and is formatted and mounted for real.
fn fake_tools(dir: &Path) {
    let lock = "exec 9>\"$PBXHA_TEST_LOG.lock\"\nflock 9\n";
    let tools = [
        ("drbdadm", "case \"$1\" in --version) echo DRBDADM_VERSION=9.22.0; exit 0;; esac\nsleep 0.4".to_string()),
        ("modprobe", "exit 0".to_string()),
        ("mkfs.ext4", format!("{lock}exec /sbin/mkfs.ext4 \"$@\"")),
    ];
    for (name, body) in tools {
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\necho \"{name} $*\" >> \"$PBXHA_TEST_LOG\"\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

/// Waits up to `limit` for `run` to exit; `None` when it is still running.
fn exited_within(run: &mut Guard, limit: Duration) -> Option<std::process::ExitStatus> {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        if let Ok(Some(status)) = run.child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    None
}

/// Everything an exited child printed.
fn drain(child: &mut std::process::Child) -> String {
    let mut out = String::new();
    if let Some(mut s) = child.stdout.take() {
        let _ = std::io::Read::read_to_string(&mut s, &mut out);
    }
    if let Some(mut s) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut s, &mut out);
    }
    out
}

/// One install of `root` in the node's network namespace and the holder's mount namespace.
fn install_cmd(net: &Net, holder: u32, tools: &Path, log: &Path, root: &Path, args: &[&str]) -> Command {
    let mut c = Command::new("nsenter");
    c.arg(format!("--net=/run/netns/{}", net.node))
        .arg(format!("--mount=/proc/{holder}/ns/mnt"))
        .arg(pbxha())
        .arg("install")
        .arg("--root")
        .arg(root)
        .args(args)
        .env("PATH", format!("{}:/usr/sbin:/usr/bin:/sbin:/bin", tools.display()))
        .env("PBXHA_TEST_LOG", log)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

#[test]
fn an_install_killed_at_random_points_resumes_to_the_same_tree_and_undo_restores_it() {
    if !prerequisites() || !require(have("mkfs.ext4") && have("flock") && have("unshare"), "e2fsprogs, flock, unshare")
    {
        return;
    }
    let net = Net::new("kill");
    let scratch = tempfile::tempdir().unwrap();
    let tools = scratch.path().join("bin");
    std::fs::create_dir(&tools).unwrap();
    fake_tools(&tools);
    let backing = Loop::new(&scratch.path().join("backing.img"), 64);
    let drbd0 = Loop::new(&scratch.path().join("drbd0.img"), 256);
    // Every mount of the installs lives in this namespace and goes with it.
    let holder = Guard::spawn(
        "mount namespace holder",
        Command::new("unshare").args(["-m", "--propagation", "private", "sleep", "600"]),
    );
    pbxha_tests::wait_for(Duration::from_secs(10), "the holder's namespace", || {
        let own = std::fs::read_link("/proc/self/ns/mnt").ok()?;
        (std::fs::read_link(format!("/proc/{}/ns/mnt", holder.pid())).ok()? != own).then_some(())
    });
    let answers = answers(&format!("kind = \"drbd\"\ndevice = \"{}\"\ndrbd-device = \"{}\"", backing.dev, drbd0.dev));
    // Both installs use the same root path, one after the other, so the two trees can be
    // compared byte for byte (the config and migrate's own journal name their root).
    let killed = scratch.path().join("host");
    let host = |root: &Path| {
        fake_host(root, 8);
        std::fs::write(root.join("answers.toml"), &answers).unwrap();
    };
    host(&killed);
    let original = tree(&killed, &[]);
    let args = [
        "--answers".to_string(),
        killed.join("answers.toml").display().to_string(),
        "--yes".into(),
        "--no-start".into(),
    ];
    let args_b: Vec<&str> = args.iter().map(String::as_str).collect();
    let view = |root: &Path| PathBuf::from(format!("/proc/{}/root{}", holder.pid(), root.display()));
    let compare = |root: &Path| {
        let mut t = tree(&view(root), &["var/lib/pbxha", "run", "replica/lost+found"]);
        let key = t.remove("etc/pbxha/authkey").expect("a key");
        assert!(key.starts_with("file 600 65 bytes"), "{key}");
        t
    };

    let log_a = scratch.path().join("clean.log");
    let out = install_cmd(&net, holder.pid(), &tools, &log_a, &killed, &args_b).output().unwrap();
    assert!(out.status.success(), "uninterrupted install:\n{}", text(&out));
    let said = text(&out);
    for step in ["drbd-create-md", "migrate", "sysctl", "unit", "config"] {
        assert!(said.contains(&format!("[{step}]")), "plan step {step} not shown:\n{said}");
    }
    let uninterrupted = compare(&killed);
    let umount = Command::new("nsenter")
        .arg(format!("--mount=/proc/{}/ns/mnt", holder.pid()))
        .arg("umount")
        .arg(killed.join("replica"))
        .output()
        .unwrap();
    assert!(umount.status.success(), "{}", text(&umount));
    std::fs::remove_dir_all(&killed).unwrap();
    host(&killed);

    // The same install, SIGKILLed again and again at random points 2–500 ms apart. The
    // first run is let through its preflight (seconds of arping and ping) before the kills
    // start, so they land in the journaled steps.
    let log_b = scratch.path().join("killed.log");
    let journal = killed.join("var/lib/pbxha/install.db");
    let mut seed = u64::from(std::process::id()) | 1;
    let mut delay = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        Duration::from_millis(2 + seed % 499)
    };
    let (mut kills, mut runs) = (0, 0);
    // A campaign whose install outran its kills (the last steps are quick) is undone and
    // run again, so the tree compared below is one that was killed at least 10 times.
    let (mut campaigns, mut first_run) = (1, 1);
    let began = Instant::now();
    let finished = loop {
        assert!(runs < 200 && began.elapsed() < Duration::from_secs(300), "no end after {runs} runs and {kills} kills");
        runs += 1;
        let mut run =
            Guard::spawn("pbxha install", &mut install_cmd(&net, holder.pid(), &tools, &log_b, &killed, &args_b));
        if runs == first_run {
            // create-md comes after three journaled steps: the plan is committed by then.
            pbxha_tests::wait_for(Duration::from_secs(60), "the first run's create-md", || {
                std::fs::read_to_string(&log_b).ok()?.contains("create-md").then_some(())
            });
        }
        match exited_within(&mut run, delay()) {
            Some(status) if kills >= 10 => {
                assert!(status.success(), "the final run failed after {kills} kills:\n{}", drain(&mut run.child));
                break runs;
            }
            Some(status) => {
                let out = drain(&mut run.child);
                assert!(
                    status.success() && campaigns < 4,
                    "campaign {campaigns} ended ({status}) after {kills} kills:\n{out}"
                );
                let undo = install_cmd(&net, holder.pid(), &tools, &log_b, &killed, &["--undo"]).output().unwrap();
                assert!(undo.status.success(), "{}", text(&undo));
                std::fs::remove_dir_all(&killed).unwrap();
                host(&killed);
                std::fs::write(&log_b, "").unwrap();
                eprintln!("campaign {campaigns}: the install ended after {kills} kills; again");
                (kills, campaigns, first_run) = (0, campaigns + 1, runs + 1);
            }
            None if kills >= 10 => {
                assert!(run.wait_exit(Duration::from_secs(120)), "the last run did not finish");
                let status = run.child.wait().unwrap();
                assert!(status.success(), "the final run failed after {kills} kills:\n{}", drain(&mut run.child));
                break runs;
            }
            None => {
                run.signal(libc::SIGKILL);
                assert!(run.wait_exit(Duration::from_secs(10)));
                kills += 1;
            }
        }
    };
    eprintln!("install killed {kills} times over {finished} runs");

    // Same tree as the uninterrupted install: every file byte for byte (the random key
    // aside, compared by length and mode), the mounted replica included (seen through the
    // holder's namespace).
    assert_eq!(compare(&killed), uninterrupted);
    // The journal is complete: a rerun finds every step done.
    assert!(journal.exists());
    let rerun = install_cmd(&net, holder.pid(), &tools, &log_b, &killed, &args_b).output().unwrap();
    assert!(rerun.status.success() && text(&rerun).contains("already installed"), "{}", text(&rerun));

    // Undo, itself killed a few times, leaves the tree as before.
    // A run that beats its random kill finishes the undo itself.
    let mut said = String::new();
    let mut undone = false;
    for _ in 0..3 {
        let mut run = Guard::spawn(
            "pbxha install --undo",
            &mut install_cmd(&net, holder.pid(), &tools, &log_b, &killed, &["--undo"]),
        );
        let exited = exited_within(&mut run, delay());
        if exited.is_none() {
            run.signal(libc::SIGKILL);
            assert!(run.wait_exit(Duration::from_secs(10)));
        }
        said += &drain(&mut run.child);
        if let Some(status) = exited {
            assert!(status.success(), "{said}");
            undone = true;
            break;
        }
    }
    if !undone {
        let out = install_cmd(&net, holder.pid(), &tools, &log_b, &killed, &["--undo"]).output().unwrap();
        said += &text(&out);
        assert!(out.status.success(), "{said}");
    }
    assert!(said.contains("undo complete"), "{said}");
    assert!(said.contains("not undone: DRBD metadata stays on"), "undo says what it cannot undo: {said}");
    // Back as before, seen from the namespace that held the mount: the replicated
    // filesystem (which keeps the replica's copy aside, as migrate's undo never deletes)
    // is unmounted and its mount point gone. The lock file in the volatile /run aside.
    assert_eq!(tree(&view(&killed), &["run"]), original);
    let log = std::fs::read_to_string(&log_b).unwrap();
    assert!(log.contains("drbdadm -c") && log.contains("primary --force r0"), "{log}");
}

#[test]
fn without_systemd_as_pid_1_the_installer_starts_the_daemon_itself() {
    if !prerequisites() {
        return;
    }
    let (net, root) = node("run");
    let file = root.path().join("answers.toml");
    std::fs::write(&file, answers("kind = \"none\"").replace("timing = \"default\"", "timing = \"fast\"")).unwrap();
    // A dry run first: the table and the plan, exit 0, nothing written (not even the lock).
    let before = tree(root.path(), &[]);
    let out = install_in(&net, root.path(), &["--answers", file.to_str().unwrap(), "--dry-run"]);
    let said = text(&out);
    assert!(out.status.success() && said.contains("PASS  peer") && said.contains("[config]"), "{said}");
    assert_eq!(tree(root.path(), &[]), before);
    let out = install_in(&net, root.path(), &["--answers", file.to_str().unwrap(), "--yes"]);
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    let pid = pbxha_tests::started_daemon(&said);
    // Ours to stop, by its PID, also when an assertion below fails.
    struct Daemon(u32);
    impl Drop for Daemon {
        fn drop(&mut self) {
            // SAFETY: kill(2) on the PID the installer reported for the daemon it started.
            unsafe {
                libc::kill(self.0 as i32, libc::SIGKILL);
            }
        }
    }
    let _daemon = Daemon(pid);
    assert!(said.contains("systemd is not PID 1 here"), "{said}");
    let config = root.path().join("etc/pbxha/pbxha.toml");
    let status = pbxha_tests::wait_for(Duration::from_secs(30), "the started daemon's status", || {
        pbxha_tests::status_json(&config)
    });
    assert!(status.to_string().contains(&uname()), "{status}");
    assert!(pbxha_tests::alive(pid));
    // A rerun finds the install done and starts no second daemon.
    let out = install_in(&net, root.path(), &["--answers", file.to_str().unwrap(), "--yes"]);
    let said = text(&out);
    assert!(
        out.status.success() && said.contains("already installed") && !said.contains("started `pbxha run`"),
        "{said}"
    );
}

/// A tmux server of our own (its own socket), killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn cmd(&self) -> Command {
        let mut c = Command::new("tmux");
        c.args(["-L", &self.socket]);
        c
    }

    fn screen(&self) -> String {
        let out = self.cmd().args(["capture-pane", "-p", "-J", "-S", "-200", "-t", "wizard"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until the screen shows `text`, then types `keys` and Enter.
    fn answer(&self, text: &str, keys: &str) {
        pbxha_tests::wait_for(Duration::from_secs(60), &format!("`{text}` on the screen"), || {
            self.screen().contains(text).then_some(())
        });
        let mut c = self.cmd();
        c.args(["send-keys", "-t", "wizard"]);
        if !keys.is_empty() {
            c.args(["-l", keys]);
            assert!(c.status().unwrap().success());
            c = self.cmd();
            c.args(["send-keys", "-t", "wizard"]);
        }
        assert!(c.arg("Enter").status().unwrap().success());
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd().arg("kill-server").status();
    }
}

#[test]
fn the_interactive_wizard_on_a_terminal() {
    if !prerequisites() || !require(have("tmux"), "tmux (the test's terminal)") {
        return;
    }
    let (net, root) = node("tty");
    let tmux = Tmux { socket: format!("pbxha-install-{}", std::process::id()) };
    let script = format!(
        "ip netns exec {} {} install --root {} --no-start; echo WIZARD-EXIT=$?; sleep 60",
        net.node,
        pbxha().display(),
        root.path().display()
    );
    let ok = tmux.cmd().args(["new-session", "-d", "-s", "wizard", "-x", "220", "-y", "50", &script]).status().unwrap();
    assert!(ok.success());
    tmux.answer(&format!("This node's name (uname -n) [{}]:", uname()), "");
    tmux.answer("The peer's name", "peer-x");
    tmux.answer("Public interface (where the VIP lives) [pub0]:", "");
    tmux.answer("VIP with prefix", "192.0.2.9/24");
    tmux.answer("192.0.2.9 is outside pub0's subnet 198.51.100.11/24; try again", "198.51.100.100/24");
    tmux.answer("The peer's address on the public interface", "198.51.100.12");
    tmux.answer("(second interfaces here: hb0 (203.0.113.11/24)):", "hb0 203.0.113.12");
    // The rest with Enter: each default was detected (no gateway here, so no ping target).
    for prompt in [
        "space-separated (or none) [none]:",
        "PBX: asterisk or freeswitch [asterisk]:",
        "Storage: none, or drbd DEVICE [none]:",
        "master-master ADMIN-PASSWORD-FILE [none]:",
        "TO [USER PASSWORD-FILE] [none]:",
        "INITDEAD in ms [default]:",
    ] {
        tmux.answer(prompt, "");
    }
    tmux.answer("steps? [y/N]:", "y");
    pbxha_tests::wait_for(Duration::from_secs(60), "the wizard's end", || {
        tmux.screen().contains("WIZARD-EXIT=").then_some(())
    });
    let screen = tmux.screen();
    assert!(screen.contains("WIZARD-EXIT=0") && screen.contains("installed: "), "{screen}");
    assert!(screen.contains("PASS  vip-free") && screen.contains("[config]"), "{screen}");
    let saved = std::fs::read_to_string(root.path().join("etc/pbxha/answers.toml")).unwrap();
    assert!(saved.contains("vip = \"198.51.100.100/24\"") && saved.contains("peer = \"peer-x\""), "{saved}");
}

#[test]
fn an_nftables_firewall_gets_the_pairs_rules_and_undo_removes_them() {
    if !prerequisites() || !require(have("nft"), "nftables") {
        return;
    }
    let net = Net::new("nft");
    let nft = |args: &str| {
        let out =
            Command::new("ip").args(["netns", "exec", &net.node, "sh", "-c", &format!("nft {args}")]).output().unwrap();
        assert!(out.status.success(), "nft {args}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // A host firewall that drops what it does not know (answers to our pings still come in).
    nft("add table inet filter");
    nft("'add chain inet filter input { type filter hook input priority 0 ; policy drop ; }'");
    nft("add rule inet filter input icmp type echo-reply accept");
    let before = nft("list chain inet filter input");
    let root = tempfile::tempdir().unwrap();
    fake_host(root.path(), 0);
    let file = root.path().join("answers.toml");
    std::fs::write(&file, answers("kind = \"none\"")).unwrap();
    let out = install_in(&net, root.path(), &["--answers", file.to_str().unwrap(), "--yes", "--no-start"]);
    let said = text(&out);
    assert!(out.status.success() && said.contains("[firewall]"), "{said}");
    let after = nft("list chain inet filter input");
    for rule in [
        "ip saddr 203.0.113.12 udp dport 694 accept comment \"pbxha\"",
        "ip saddr 198.51.100.12 udp dport 694 accept comment \"pbxha\"",
    ] {
        assert!(after.contains(rule), "`{rule}` missing:\n{after}");
    }
    let out = install_in(&net, root.path(), &["--undo"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(nft("list chain inet filter input"), before);
}

/// `sh -c SCRIPT` in the node's namespace with the node's own /etc/ufw (a copy, bound in a
/// private mount namespace), so the test's ufw never touches the machine's rules or config.
fn with_own_ufw(net: &Net, etc_ufw: &Path, script: &str) -> Output {
    let script = format!("mount --bind {} /etc/ufw && {script}", etc_ufw.display());
    Command::new("ip")
        .args(["netns", "exec", &net.node, "unshare", "--mount", "--propagation", "private", "sh", "-c", &script])
        .output()
        .unwrap()
}

#[test]
fn an_active_ufw_gets_the_pairs_rules_through_ufw_and_undo_deletes_them() {
    if !prerequisites() || !require(have("ufw") && have("unshare"), "ufw, util-linux") {
        return;
    }
    let net = Net::new("ufw");
    let state = tempfile::tempdir().unwrap();
    let etc_ufw = state.path().join("ufw");
    let copied = Command::new("cp").arg("-a").arg("/etc/ufw").arg(&etc_ufw).status().unwrap();
    assert!(copied.success(), "cp -a /etc/ufw");
    let ufw = |script: &str| {
        let out = with_own_ufw(&net, &etc_ufw, script);
        assert!(out.status.success(), "{script}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // Deny incoming (ufw's default once enabled); answers to our own pings still come in.
    ufw("ufw --force enable");
    let before = ufw("ufw status");
    assert!(before.starts_with("Status: active"), "{before}");
    let root = tempfile::tempdir().unwrap();
    fake_host(root.path(), 0);
    let file = root.path().join("answers.toml");
    std::fs::write(&file, answers("kind = \"none\"")).unwrap();
    let install = format!(
        "{} install --root {} --answers {} --yes --no-start",
        pbxha().display(),
        root.path().display(),
        file.display()
    );
    let said = ufw(&install);
    assert!(said.contains("[firewall]") && said.contains("through ufw"), "{said}");
    let after = ufw("ufw status");
    for peer in ["203.0.113.12", "198.51.100.12"] {
        assert!(
            after.lines().any(|l| l.starts_with("694/udp") && l.contains(peer) && l.ends_with("# pbxha")),
            "no heartbeat rule for {peer}:\n{after}"
        );
    }
    assert!(!after.contains("nft"), "{after}");
    ufw(&format!("{} install --root {} --undo", pbxha().display(), root.path().display()));
    assert_eq!(ufw("ufw status"), before);
}
