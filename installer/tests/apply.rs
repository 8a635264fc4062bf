//! The journaled apply on a `--root` tree: resume after a failed step, undo back to the
//! original tree, and the DRBD command sequence through the runner seam with drbdadm's
//! recorded real outputs (drbd-utils 9.22, no kernel module), including a failing create-md.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use pbxha_installer::journal::{Journal, State, JOURNAL_PATH};
use pbxha_installer::plan::{self, Plan};
use pbxha_installer::{answers, apply, facts, Appliance, Env};
use pbxha_runner::{Output, ScriptedRunner};

/// The real checker is the appliance's (tested there); here the test only needs to see it
/// asked, and to make it refuse on demand.
struct Checker {
    refuse: bool,
}

impl Appliance for Checker {
    fn check_config(&self, text: &str, node: &str) -> Vec<String> {
        assert!(text.contains(&format!("name = \"{node}\"")));
        if self.refuse {
            vec!["link[0].addresses.pbx2: no address for node `pbx2` on this link".into()]
        } else {
            Vec::new()
        }
    }
    fn new_auth_key(&self) -> String {
        "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n".into()
    }
}

/// drbdadm create-md on a 64 MiB loop device (captured on this machine, drbd-utils 9.22).
const CREATE_MD_OK: &str =
    "initializing activity log\nWriting meta data...\nNew drbd meta data block successfully created.\n";
/// drbdadm create-md on a 64 KiB device: exit 10.
const CREATE_MD_TOO_SMALL: &str = "/dev/loop1 is only 65536 bytes. That's not enough.\n/dev/loop1 is only 65536 bytes. That's not enough.\nCommand 'drbdmeta 0 v09 /dev/loop1 internal create-md 1 --force' terminated with exit code 10\n";

fn tree(root: &Path) -> BTreeMap<PathBuf, String> {
    fn walk(dir: &Path, root: &Path, out: &mut BTreeMap<PathBuf, String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            let meta = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().to_path_buf();
            if meta.is_dir() {
                out.insert(rel, format!("dir {:o}", meta.permissions().mode() & 0o7777));
                walk(&p, root, out);
            } else if meta.file_type().is_symlink() {
                out.insert(rel, format!("link {}", std::fs::read_link(&p).unwrap().display()));
            } else {
                out.insert(
                    rel,
                    format!(
                        "file {:o} {}",
                        meta.permissions().mode() & 0o7777,
                        String::from_utf8_lossy(&std::fs::read(&p).unwrap())
                    ),
                );
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn fake_pbx_tree(root: &Path) {
    for (path, text) in [
        ("etc/asterisk/pjsip.conf", "[transport-udp]\ntype=transport\nprotocol=udp\nbind=0.0.0.0\n"),
        ("etc/asterisk/extensions.conf", "[default]\nexten => 100,1,Answer()\n"),
        ("var/lib/asterisk/astdb.sqlite3", "not really sqlite"),
        ("var/lib/mysql/ibdata1", "pages"),
    ] {
        let p = root.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
}

fn answers(storage: answers::Storage) -> answers::Answers {
    let mut a = answers::parse(include_str!("../../examples/answers.toml")).unwrap().complete().unwrap();
    a.storage = storage;
    a.mysql = answers::Mysql::None;
    a.public.address = Some("192.168.0.100/24".parse().unwrap());
    a.heartbeat[0].address = Some("10.1.1.1/24".parse().unwrap());
    a
}

fn drbd() -> answers::Storage {
    answers::Storage::Drbd(answers::DrbdAnswers {
        device: "/dev/loop1".into(),
        wipe: false,
        resource: "r0".into(),
        drbd_device: "/dev/drbd0".into(),
        syntax: pbxha_replica::drbd::conf::Syntax::V9,
    })
}

fn make_plan(env: &Env, a: &answers::Answers) -> Plan {
    let f = facts::Facts {
        nonlocal_bind: Some("0".into()),
        enabled_units: vec!["asterisk".into()],
        ..facts::Facts::default()
    };
    let read = |p: &Path| std::fs::read_to_string(p).ok();
    let size = |_: &Path| Some(1);
    plan::plan(a, &f, env, &read, &size).unwrap()
}

fn runner() -> Arc<ScriptedRunner> {
    let r = Arc::new(ScriptedRunner::new());
    r.on(["sysctl"], Output::ok(""));
    r.on(["systemctl"], Output::ok(""));
    r
}

fn journal(env: &Env) -> Journal {
    Journal::open(&env.path(JOURNAL_PATH), true).unwrap().unwrap()
}

#[tokio::test]
async fn a_failed_step_resumes_where_it_stopped_and_ends_like_an_uninterrupted_run() {
    let (clean, broken) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    for dir in [&clean, &broken] {
        fake_pbx_tree(dir.path());
    }
    let a = answers(answers::Storage::None);
    let say = &mut |_: &str| {};

    let env = Env { root: clean.path().to_path_buf(), runner: runner() };
    let plan = make_plan(&env, &a);
    let mut j = journal(&env);
    j.begin("answers", &plan.steps, &[]).unwrap();
    apply::apply(&env, &Checker { refuse: false }, &j, &plan.steps, say).await.unwrap();

    let r = runner();
    r.on(["systemctl", "--root"], Output::failed(1, "Failed to enable unit: Unit file pbxha.service does not exist."));
    let env2 = Env { root: broken.path().to_path_buf(), runner: r.clone() };
    let plan2 = make_plan(&env2, &a);
    let mut j2 = journal(&env2);
    j2.begin("answers", &plan2.steps, &[]).unwrap();
    let err = apply::apply(&env2, &Checker { refuse: false }, &j2, &plan2.steps, say).await.unwrap_err().to_string();
    assert!(err.contains("(boot-asterisk)") && err.contains("Unit file pbxha.service does not exist"), "{err}");
    assert!(!broken.path().join("etc/pbxha/pbxha.toml").exists(), "the config is the commit point");
    let states: Vec<State> = j2.states().unwrap().into_iter().map(|s| s.1).collect();
    assert_eq!(
        states,
        [State::Done, State::Done, State::Done, State::Done, State::Started, State::Pending, State::Pending]
    );

    r.on(["systemctl", "--root"], Output::ok(""));
    let before = r.calls().len();
    apply::apply(&env2, &Checker { refuse: false }, &j2, &plan2.steps, say).await.unwrap();
    let rerun: Vec<String> =
        r.argvs()[before..].iter().map(|s| s.replace(&broken.path().display().to_string(), "R")).collect();
    assert_eq!(
        rerun,
        ["systemctl --root R disable asterisk.service", "systemctl --root R enable pbxha.service"],
        "resumed at the failed step"
    );

    let strip = |t: BTreeMap<PathBuf, String>, root: &Path| -> BTreeMap<PathBuf, String> {
        t.into_iter()
            .filter(|(p, _)| !p.starts_with("var/lib/pbxha"))
            .map(|(p, v)| (p, v.replace(&root.display().to_string(), "ROOT")))
            .collect()
    };
    assert_eq!(strip(tree(broken.path()), broken.path()), strip(tree(clean.path()), clean.path()));
}

#[tokio::test]
async fn undo_restores_the_tree_and_is_resumable() {
    let root = tempfile::tempdir().unwrap();
    fake_pbx_tree(root.path());
    let original = tree(root.path());
    let say = &mut |_: &str| {};
    let r = runner();
    let env = Env { root: root.path().to_path_buf(), runner: r.clone() };
    let plan = make_plan(&env, &answers(answers::Storage::None));
    let mut j = journal(&env);
    j.begin("answers", &plan.steps, &[]).unwrap();
    apply::apply(&env, &Checker { refuse: false }, &j, &plan.steps, say).await.unwrap();
    assert!(std::fs::read_to_string(root.path().join("etc/asterisk/pjsip.conf"))
        .unwrap()
        .contains("bind=192.168.0.105"));
    assert_eq!(std::fs::metadata(root.path().join("etc/pbxha/authkey")).unwrap().permissions().mode() & 0o777, 0o600);
    // It keeps the originals of PBX configs, which hold SIP secrets.
    assert_eq!(std::fs::metadata(env.path(JOURNAL_PATH)).unwrap().permissions().mode() & 0o777, 0o600);

    // The first undo fails half-way (systemctl cannot re-enable asterisk), the rerun finishes.
    r.on(
        ["systemctl", "--root", &root.path().display().to_string(), "enable"],
        Output::failed(1, "Unit asterisk.service not found."),
    );
    let left = apply::undo(&env, &j, &plan.steps, say).await.unwrap();
    assert!(
        left.iter().any(|l| l.contains("(boot-asterisk): undo failed") && l.contains("asterisk.service not found")),
        "{left:?}"
    );
    r.on(["systemctl"], Output::ok(""));
    let left = apply::undo(&env, &j, &plan.steps, say).await.unwrap();
    assert_eq!(left, Vec::<String>::new());
    drop(j);
    std::fs::remove_file(env.path(JOURNAL_PATH)).unwrap();
    std::fs::remove_dir_all(root.path().join("var/lib/pbxha")).unwrap();
    assert_eq!(tree(root.path()), original);
    let undone: Vec<String> =
        r.argvs().iter().filter(|a| a.contains("disable pbxha") || a.contains("sysctl -q -w")).cloned().collect();
    assert_eq!(
        undone,
        [
            "systemctl --root ".to_string() + &root.path().display().to_string() + " disable pbxha.service",
            "sysctl -q -w net.ipv4.ip_nonlocal_bind=0".into()
        ]
    );
}

#[tokio::test]
async fn a_config_the_checker_refuses_is_never_written() {
    let root = tempfile::tempdir().unwrap();
    let env = Env { root: root.path().to_path_buf(), runner: runner() };
    let plan = make_plan(&env, &answers(answers::Storage::None));
    let mut j = journal(&env);
    j.begin("answers", &plan.steps, &[]).unwrap();
    let err =
        apply::apply(&env, &Checker { refuse: true }, &j, &plan.steps, &mut |_| {}).await.unwrap_err().to_string();
    assert!(err.contains("(config)") && err.contains("no address for node `pbx2`"), "{err}");
    assert!(!root.path().join("etc/pbxha/pbxha.toml").exists());
}

#[tokio::test]
async fn drbd_steps_run_in_order_and_a_failing_create_md_stops_the_install() {
    let root = tempfile::tempdir().unwrap();
    let res = format!("{}/etc/drbd.d/r0.res", root.path().display());
    let r = runner();
    r.on(["drbdadm"], Output::ok(""));
    r.on_seq(
        ["drbdadm", "-c", res.as_str(), "create-md"],
        vec![
            Output { code: 10, stdout: String::new(), stderr: CREATE_MD_TOO_SMALL.into() },
            Output { code: 0, stdout: CREATE_MD_OK.into(), stderr: String::new() },
        ],
    );
    r.on(["mkfs.ext4"], Output::ok(""));
    r.on(["mount"], Output::ok(""));
    let env = Env { root: root.path().to_path_buf(), runner: r.clone() };
    let plan = make_plan(&env, &answers(drbd()));
    let steps: Vec<_> = plan.steps.into_iter().take_while(|s| s.id != "sysctl").collect();
    let mut j = journal(&env);
    j.begin("answers", &steps, &[]).unwrap();
    let err = apply::apply(&env, &Checker { refuse: false }, &j, &steps, &mut |_| {}).await.unwrap_err().to_string();
    assert!(err.contains("step 4 (drbd-create-md)") && err.contains("That's not enough"), "{err}");
    apply::apply(&env, &Checker { refuse: false }, &j, &steps, &mut |_| {}).await.unwrap();
    let shown = |argvs: &[String]| -> Vec<String> {
        argvs.iter().map(|a| a.replace(&res, "RES").replace(&root.path().display().to_string(), "R")).collect()
    };
    let calls = shown(&r.argvs());
    assert_eq!(
        calls,
        [
            "drbdadm -c RES create-md --force r0",
            "drbdadm -c RES create-md --force r0",
            "drbdadm -c RES up r0",
            "drbdadm -c RES primary --force r0",
            "mkfs.ext4 -q -L replica /dev/drbd0",
            "mount -t ext4 /dev/drbd0 R/replica",
        ]
    );
    let undone = apply::undo(&env, &j, &steps, &mut |_| {}).await.unwrap();
    assert_eq!(
        undone.iter().map(|l| l.split(": ").next().unwrap_or_default()).collect::<Vec<_>>(),
        ["step 7 (mkfs)", "step 4 (drbd-create-md)"],
        "{undone:?}"
    );
    let tail = shown(&r.argvs()[6..]);
    // The scripted mount mounted nothing, so the filesystem's stop finds nothing to unmount.
    assert_eq!(tail, ["drbdadm -c RES secondary r0", "drbdadm -c RES down r0"]);
}

#[tokio::test]
async fn an_existing_key_is_kept_and_never_copied_into_the_journal() {
    let root = tempfile::tempdir().unwrap();
    let key = root.path().join("etc/pbxha/authkey");
    std::fs::create_dir_all(key.parent().unwrap()).unwrap();
    std::fs::write(&key, "the-peers-shared-key-0123456789abcdef\n").unwrap();
    let env = Env { root: root.path().to_path_buf(), runner: runner() };
    let plan = make_plan(&env, &answers(answers::Storage::None));
    let mut j = journal(&env);
    j.begin("answers", &plan.steps, &[]).unwrap();
    apply::apply(&env, &Checker { refuse: false }, &j, &plan.steps, &mut |_| {}).await.unwrap();
    assert_eq!(std::fs::read_to_string(&key).unwrap(), "the-peers-shared-key-0123456789abcdef\n");
    drop(j);
    let db = std::fs::read(env.path(JOURNAL_PATH)).unwrap();
    assert!(!db.windows(20).any(|w| w == b"the-peers-shared-key"), "the key's bytes are in the journal");
    let j = journal(&env);
    apply::undo(&env, &j, &plan.steps, &mut |_| {}).await.unwrap();
    assert!(key.exists(), "undo keeps a key it did not make");
}

#[tokio::test]
async fn a_command_that_takes_a_while_says_so_every_second() {
    let root = tempfile::tempdir().unwrap();
    let env = Env { root: root.path().to_path_buf(), runner: Arc::new(pbxha_runner::SystemRunner) };
    let step = plan::Step {
        id: "slow".into(),
        title: "a slow command".into(),
        shows: String::new(),
        actions: vec![plan::Action::Run { argv: vec!["sleep".into(), "2.3".into()], undo: None, cannot_undo: None }],
        wipes: None,
    };
    let mut j = journal(&env);
    j.begin("answers", std::slice::from_ref(&step), &[]).unwrap();
    let mut lines = Vec::new();
    apply::apply(&env, &Checker { refuse: false }, &j, &[step], &mut |l| lines.push(l.to_string())).await.unwrap();
    let ticks: Vec<&String> = lines.iter().filter(|l| l.contains("still running `sleep 2.3`")).collect();
    // At 1 s and 2 s (a third only if the loaded machine made sleep overrun by 0.7 s).
    assert!(ticks.len() >= 2, "{lines:?}");
    assert!(ticks[0].ends_with("(1 s)") && ticks[1].ends_with("(2 s)"), "{lines:?}");
}
