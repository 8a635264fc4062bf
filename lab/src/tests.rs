use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicUsize, Ordering};

use pbxha_runner::{Output, RunError, SystemRunner};

use super::plan::*;
use super::*;

// ---- pure parts ----

/// The Asterisk double's scripts, run for real by sh, answer as pbxha's Asterisk adapter
/// and systemd's `is-active` contract expect.
#[test]
fn the_asterisk_double_answers_like_asterisk_and_systemctl() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for (name, script) in asterisk_double_scripts(dir.path()) {
        write_file(&bin.join(name), script.as_bytes(), 0o755).unwrap();
    }
    let run = |argv: &[&str]| std::process::Command::new(bin.join(argv[0])).args(&argv[1..]).output().unwrap();
    let [calls, _, log] = asterisk_double_files(dir.path());
    for n in [0u32, 1, 3] {
        std::fs::write(&calls, format!("{n}\n")).unwrap();
        let out = run(&["asterisk", "-rx", "core show channels count"]);
        let count = pbxha_telephony::asterisk::parse_channels_count(&String::from_utf8_lossy(&out.stdout)).unwrap();
        assert_eq!((count.calls, count.channels), (n, 2 * n));
    }
    let set = run(&["asterisk", "-rx", "dialplan set global PBXHA_DRAINING 0"]);
    assert_eq!(String::from_utf8_lossy(&set.stdout), "\n    -- Global variable 'PBXHA_DRAINING' set to '0'\n");
    assert_eq!(run(&["systemctl", "is-active", "asterisk"]).status.code(), Some(3));
    assert!(run(&["systemctl", "start", "asterisk"]).status.success());
    let active = run(&["systemctl", "is-active", "asterisk"]);
    assert_eq!((active.status.code(), String::from_utf8_lossy(&active.stdout).trim()), (Some(0), "active"));
    let commands = std::fs::read_to_string(log).unwrap();
    assert!(
        commands.contains("asterisk -rx dialplan set global PBXHA_DRAINING 0\nsystemctl is-active asterisk\n"),
        "{commands}"
    );
}

#[test]
fn kamailio_config_listens_on_the_vip_and_names_the_node() {
    let cfg = kamailio_config(Member::B);
    assert!(cfg.contains("listen=udp:198.51.100.100:5060"), "{cfg}");
    assert!(cfg.contains(r#"append_to_reply("X-Pbxha-Node: b\r\n")"#), "{cfg}");
}

#[test]
fn topology_uses_only_lab_addresses_and_adds_no_route() {
    let names = Names { prefix: "t-".into() };
    let cmds = topology(&names);
    assert!(cmds.iter().all(|c| c[0] == "ip" && !c.contains(&"route".to_string())));
    // The two documentation networks of RFC 5737, as /24s.
    let lab_nets = [[198, 51, 100], [203, 0, 113]];
    let added: Vec<&String> =
        cmds.iter().filter(|c| c.get(3).map(String::as_str) == Some("addr")).map(|c| &c[5]).collect();
    assert_eq!(added.len(), PORTS.len());
    for a in added {
        let (ip, prefix) = a.split_once('/').unwrap();
        let ip: Ipv4Addr = ip.parse().unwrap();
        assert_eq!(prefix, "24", "{a}");
        assert!(lab_nets.iter().any(|n| ip.octets()[..3] == n[..]), "{a}");
    }
    // Every namespace is created before anything is put into it.
    let created = |ns: &str| cmds.iter().position(|c| c[1..] == ["netns", "add", ns]).unwrap();
    for (i, c) in cmds.iter().enumerate() {
        if c[1] == "-n" {
            assert!(created(&c[2]) < i, "{c:?} before its namespace exists");
        }
        if let Some(at) = c.iter().position(|a| a == "netns").filter(|at| *at > 1) {
            assert!(created(&c[at + 1]) < i, "{c:?} before its namespace exists");
        }
    }
    assert_eq!(names.all(), ["t-sw", "t-a", "t-b", "t-client", "t-gw"]);
}

#[test]
fn partitions_cut_the_named_links_only() {
    let rules = partition_rules(Partition::Hb, Member::A).unwrap();
    assert_eq!(rules, [["INPUT", "-i", "hb0", "-j", "DROP"], ["OUTPUT", "-o", "hb0", "-j", "DROP"]]);
    assert_eq!(partition_rules(Partition::All, Member::B).unwrap().len(), 4);
    assert_eq!(partition_rules(Partition::Public, Member::Client).unwrap().len(), 2);
    assert!(partition_rules(Partition::Hb, Member::Gw).unwrap_err().contains("gw"));
    // One-way: only heartbeats in, on both links; the node's own heartbeats still leave.
    assert_eq!(
        partition_rules(Partition::OneWay, Member::B).unwrap(),
        [
            ["INPUT", "-i", "pub0", "-p", "udp", "--dport", "694", "-j", "DROP"],
            ["INPUT", "-i", "hb0", "-p", "udp", "--dport", "694", "-j", "DROP"]
        ]
    );
    assert!(partition_rules(Partition::OneWay, Member::Client).is_err());
}

#[test]
fn names_parse_with_clear_errors() {
    assert_eq!("client".parse::<Member>(), Ok(Member::Client));
    assert!("c".parse::<Member>().unwrap_err().contains("one of a, b, client, gw"));
    assert_eq!("public".parse::<Partition>(), Ok(Partition::Public));
    assert_eq!("one-way".parse::<Partition>(), Ok(Partition::OneWay));
    assert!("fast".parse::<Profile>().is_ok() && "slow".parse::<Profile>().is_err());
    assert!("kamailio".parse::<Pbx>().is_ok() && "asterisk".parse::<Pbx>().is_err());
}

/// Captured from `ip -n pbxha-a -j addr show` while a held the VIP.
const IP_ADDR_JSON: &str = r#"[{"ifindex":1,"ifname":"lo","flags":["LOOPBACK","UP","LOWER_UP"],"mtu":65536,"qdisc":"noqueue","operstate":"UNKNOWN","group":"default","txqlen":1000,"link_type":"loopback","address":"00:00:00:00:00:00","broadcast":"00:00:00:00:00:00","addr_info":[{"family":"inet","local":"127.0.0.1","prefixlen":8,"scope":"host","label":"lo","valid_life_time":4294967295,"preferred_life_time":4294967295}]},{"ifindex":2,"link_index":2,"ifname":"pub0","flags":["BROADCAST","MULTICAST","UP","LOWER_UP"],"mtu":1500,"qdisc":"noqueue","operstate":"UP","group":"default","txqlen":1000,"link_type":"ether","address":"8a:1c:3e:2f:11:90","broadcast":"ff:ff:ff:ff:ff:ff","link_netnsid":0,"addr_info":[{"family":"inet","local":"198.51.100.11","prefixlen":24,"scope":"global","label":"pub0","valid_life_time":4294967295,"preferred_life_time":4294967295},{"family":"inet","local":"198.51.100.100","prefixlen":24,"scope":"global","secondary":true,"label":"pub0","valid_life_time":4294967295,"preferred_life_time":4294967295}]},{"ifindex":3,"ifname":"hb0","flags":["BROADCAST","MULTICAST"],"operstate":"DOWN","addr_info":[]}]"#;

#[test]
fn ip_addr_json_is_read() {
    let ifs = parse_ip_addr(IP_ADDR_JSON).unwrap();
    assert_eq!(ifs.len(), 3);
    assert_eq!(
        ifs[1],
        Interface {
            name: "pub0".into(),
            up: true,
            addresses: vec!["198.51.100.11/24".into(), "198.51.100.100/24".into()]
        }
    );
    assert!(!ifs[2].up);
    assert!(parse_ip_addr("not json").is_err());
    assert!(parse_ip_addr("{}").is_err());
    assert_eq!(parse_netns_list("pbxha-a (id: 1)\npbxha-sw\n"), ["pbxha-a", "pbxha-sw"]);
    assert_eq!(parse_pids("12\n\nx\n1\n34\n"), [12, 34]);
}

// ---- real namespaces (root) ----

/// Deletes every namespace with the test's prefix, and the processes in them, even when the
/// test panics. Synchronous because Drop cannot await.
struct Cleanup {
    prefix: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let list = std::process::Command::new("ip").args(["netns", "list"]).output();
        let Ok(list) = list else { return };
        for ns in parse_netns_list(&String::from_utf8_lossy(&list.stdout)) {
            if !ns.starts_with(&self.prefix) {
                continue;
            }
            if let Ok(out) = std::process::Command::new("ip").args(["netns", "pids", &ns]).output() {
                for pid in parse_pids(&String::from_utf8_lossy(&out.stdout)) {
                    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
                }
            }
            let _ = std::process::Command::new("ip").args(["netns", "del", &ns]).status();
        }
    }
}

fn test_lab(tag: &str, state: &Path) -> (Lab, Cleanup) {
    let prefix = format!("pbxlt{}{tag}-", std::process::id());
    let lab = Lab::new(Arc::new(SystemRunner)).with_prefix(prefix.clone()).with_state_dir(state.join("lab"));
    (lab, Cleanup { prefix })
}

fn options(exe: PathBuf, start_daemons: bool) -> UpOptions {
    UpOptions { start_daemons, vip_wait: Duration::from_millis(500), ..UpOptions::new(exe) }
}

async fn ping(lab: &Lab, from: Member, addr: &str) -> bool {
    let cmd =
        Cmd::new(["ip", "netns", "exec", &lab.namespace(from), "ping", "-q", "-c", "2", "-i", "0.2", "-W", "2", addr]);
    SystemRunner.run(&cmd).await.unwrap().success()
}

/// Everything the lab made is gone: namespaces, state dir and the given processes.
async fn assert_nothing_left(lab: &Lab, pids: &[i32]) {
    let list = SystemRunner.run(&Cmd::new(["ip", "netns", "list"])).await.unwrap().stdout;
    let left: Vec<String> = parse_netns_list(&list).into_iter().filter(|n| n.starts_with(&lab.names.prefix)).collect();
    assert!(left.is_empty(), "namespaces left: {left:?}");
    assert!(!lab.state_dir().exists(), "{} left", lab.state_dir().display());
    // Gone from the process table, not merely exited: a zombie still holds its PID.
    let left: Vec<&i32> = pids.iter().filter(|p| Path::new(&format!("/proc/{p}")).exists()).collect();
    assert!(left.is_empty(), "processes left: {left:?}");
}

#[tokio::test]
async fn topology_reachability_partitions_and_teardown() {
    if !crate::testns::prerequisites_met("topology_reachability_partitions_and_teardown") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (lab, _cleanup) = test_lab("t", tmp.path());
    let lines = std::sync::Mutex::new(Vec::new());
    let status =
        lab.up(&options("/bin/true".into(), false), &|l| lines.lock().unwrap().push(l.to_string())).await.unwrap();
    assert!(status.is_up(), "{status:?}");
    assert!(status.vip_holders.is_empty());
    assert!(lines.lock().unwrap().iter().any(|l| l.contains("topology ready")), "{lines:?}");
    let key_mode = std::fs::metadata(lab.state_dir().join(AUTH_KEY_FILE)).unwrap().permissions().mode();
    assert_eq!(key_mode & 0o777, 0o600);
    let written = std::fs::read_to_string(lab.state_dir().join("a.toml")).unwrap();
    // What the appliance's config tests check parses and validates.
    let opts = options("/bin/true".into(), false);
    let expected = node_config(Member::A, lab.state_dir(), opts.profile, opts.pbx, opts.on_isolation, false, &opts.exe);
    assert_eq!(written, expected);

    let err = lab.up(&options("/bin/true".into(), false), &|_| {}).await.unwrap_err();
    assert!(err.to_string().contains("already up"), "{err}");

    for target in ["198.51.100.1", "198.51.100.11", "198.51.100.12"] {
        assert!(ping(&lab, Member::Client, target).await, "client -> {target}");
    }
    assert!(ping(&lab, Member::A, "203.0.113.12").await, "a -> b over hb");
    assert!(!ping(&lab, Member::Client, "203.0.113.11").await, "the client has no heartbeat link and no route");

    lab.partition(Partition::Hb, Member::A).await.unwrap();
    lab.partition(Partition::Hb, Member::A).await.unwrap();
    assert!(!ping(&lab, Member::A, "203.0.113.12").await, "hb partitioned");
    assert!(ping(&lab, Member::A, "198.51.100.12").await, "public still up");
    lab.partition(Partition::Public, Member::B).await.unwrap();
    assert!(!ping(&lab, Member::Client, "198.51.100.12").await, "b cut from the public side");
    assert!(ping(&lab, Member::Client, "198.51.100.11").await);
    lab.heal().await.unwrap();
    assert!(ping(&lab, Member::A, "203.0.113.12").await, "healed hb");
    assert!(ping(&lab, Member::Client, "198.51.100.12").await, "healed public");

    assert_eq!(
        lab.exec(Member::A, &["ip", "addr", "add", "198.51.100.100/24", "dev", "pub0"].map(String::from))
            .await
            .unwrap(),
        0
    );
    assert_eq!(lab.exec(Member::A, &["sh", "-c", "exit 7"].map(String::from)).await.unwrap(), 7);
    assert_eq!(lab.status().await.unwrap().vip_holders, [Member::A]);
    assert!(ping(&lab, Member::Client, VIP).await);

    lab.kill(Member::Gw).await.unwrap();
    let gw = lab.status().await.unwrap().members.into_iter().find(|m| m.member == Member::Gw).unwrap();
    assert!(gw.interfaces.iter().filter(|i| i.name == "pub0").all(|i| !i.up), "{gw:?}");
    assert!(!ping(&lab, Member::Client, "198.51.100.1").await, "gw killed");
    assert_eq!(lab.revive(Member::Gw).await.unwrap(), None);
    assert!(ping(&lab, Member::Client, "198.51.100.1").await, "gw revived");

    lab.down().await.unwrap();
    assert_nothing_left(&lab, &[]).await;
    lab.down().await.unwrap();
}

/// Waits (bounded) until `pid` runs in `member`'s namespace: `ip netns exec` switches
/// namespace only after the spawn has returned.
async fn wait_in_namespace(lab: &Lab, member: Member, pid: i32) {
    for _ in 0..50 {
        let status = lab.status().await.unwrap();
        if status.members.iter().any(|m| m.member == member && m.pids.contains(&pid)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{pid} never showed in {member}'s namespace");
}

#[tokio::test]
async fn daemons_are_started_killed_revived_and_reaped() {
    if !crate::testns::prerequisites_met("daemons_are_started_killed_revived_and_reaped") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (lab, _cleanup) = test_lab("d", tmp.path());
    // Stands in for `pbxha run`: stays up, and its command line names the config.
    let exe = tmp.path().join("fake-pbxha");
    write_file(&exe, b"#!/bin/sh\nsleep 300\n", 0o755).unwrap();
    let status = lab.up(&options(exe, true), &|_| {}).await.unwrap();
    assert!(status.vip_holders.is_empty());
    let pids_of = |s: &LabStatus, m: Member| s.members.iter().find(|x| x.member == m).unwrap().pids.clone();
    let (a_pids, b_pids) = (pids_of(&status, Member::A), pids_of(&status, Member::B));
    assert!(!a_pids.is_empty() && !b_pids.is_empty(), "{status:?}");
    let a_pid: i32 = std::fs::read_to_string(lab.state_dir().join("a.pid")).unwrap().trim().parse().unwrap();
    assert!(a_pids.contains(&a_pid), "{a_pid} not in {a_pids:?}");

    lab.kill(Member::A).await.unwrap();
    assert!(a_pids.iter().all(|p| !alive(*p)));
    assert!(pids_of(&lab.status().await.unwrap(), Member::A).is_empty());
    let revived = lab.revive(Member::A).await.unwrap().unwrap() as i32;
    assert!(revived > 0 && revived != a_pid);
    wait_in_namespace(&lab, Member::A, revived).await;

    lab.down().await.unwrap();
    assert_nothing_left(&lab, &[b_pids, vec![revived]].concat()).await;
}

/// A runner that fails one command, to break `up` half-way.
struct FailingAt {
    needle: &'static str,
    calls: AtomicUsize,
}

#[async_trait::async_trait]
impl Runner for FailingAt {
    async fn run(&self, cmd: &Cmd) -> Result<Output, RunError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if cmd.to_string().contains(self.needle) {
            return Ok(Output::failed(2, "injected failure"));
        }
        SystemRunner.run(cmd).await
    }
}

#[tokio::test]
async fn a_half_finished_up_is_torn_down() {
    if !crate::testns::prerequisites_met("a_half_finished_up_is_torn_down") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (lab, _cleanup) = test_lab("h", tmp.path());
    let runner = Arc::new(FailingAt { needle: "b-hb master br-hb", calls: AtomicUsize::new(0) });
    let broken = Lab { runner: runner.clone(), names: lab.names.clone(), state_dir: lab.state_dir.clone() };
    let lines = std::sync::Mutex::new(Vec::new());
    let err = broken
        .up(&options("/bin/true".into(), false), &|l| lines.lock().unwrap().push(l.to_string()))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("injected failure") && err.to_string().contains("b-hb"), "{err}");
    assert!(lines.lock().unwrap().iter().any(|l| l.contains("tearing down")), "{lines:?}");
    assert!(runner.calls.load(Ordering::SeqCst) > 10);
    assert_nothing_left(&lab, &[]).await;

    // A crashed `up` (nothing torn down): some namespaces, a process in one, a recorded
    // process outside any namespace, and the state dir. `down` removes them all.
    lab.write_state(&options("/bin/true".into(), false)).unwrap();
    for argv in topology(&lab.names).into_iter().take(14) {
        SystemRunner.run_ok(&Cmd::new(argv)).await.unwrap();
    }
    let inside = std::process::Command::new("ip")
        .args(["netns", "exec", &lab.namespace(Member::A), "sleep", "300"])
        .spawn()
        .unwrap();
    let marker = lab.state_dir().to_string_lossy().into_owned();
    let outside =
        std::process::Command::new("sh").args(["-c", "sleep 300; true", "pbxha-lab-test", &marker]).spawn().unwrap();
    write_file(&lab.state_dir().join("a.pid"), format!("{}\n", outside.id()).as_bytes(), 0o644).unwrap();
    let pids = [inside.id() as i32, outside.id() as i32];
    // Our own children would linger as zombies; reap them as they die.
    let reaper = std::thread::spawn(move || {
        for mut child in [inside, outside] {
            let _ = child.wait();
        }
    });
    wait_in_namespace(&lab, Member::A, pids[0]).await;
    lab.down().await.unwrap();
    assert_nothing_left(&lab, &pids).await;
    reaper.join().unwrap();
}

#[tokio::test]
async fn up_refuses_a_state_directory_holding_other_files() {
    let tmp = tempfile::tempdir().unwrap();
    let (lab, _cleanup) = test_lab("o", tmp.path());
    std::fs::create_dir_all(lab.state_dir()).unwrap();
    let precious = lab.state_dir().join("precious.txt");
    std::fs::write(&precious, "not the lab's").unwrap();
    let err = lab.up(&options("/bin/true".into(), false), &|_| {}).await.unwrap_err();
    assert!(err.to_string().contains("not empty"), "{err}");
    // And `down` does not take it for the lab's either.
    let err = lab.down().await.unwrap_err();
    assert!(err.to_string().contains("did not make"), "{err}");
    assert_eq!(std::fs::read_to_string(&precious).unwrap(), "not the lab's");
}
