//! The DRBD resource the plan writes passes the real drbdadm (drbd-utils; no kernel module
//! needed): `dump`, and the plan's own commands as dry runs (`-d`), as each host.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use pbxha_installer::plan::{self, Action};
use pbxha_installer::{answers, facts, Env};

fn present() -> bool {
    let ok = Command::new("drbdadm").arg("--version").output().is_ok() && Command::new("unshare").arg("--version").output().is_ok()
        // A private UTS namespace (for `uname -n`) needs root.
        && nix::unistd::geteuid().is_root();
    if !ok {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "drbdadm, unshare and root are required under CI=true");
        eprintln!("prerequisite missing, test not run: drbdadm, unshare, root");
    }
    ok
}

/// Runs `argv` as `host` (drbdadm picks its `on` section by `uname -n`).
fn as_host(host: &str, argv: &[String]) -> (bool, String) {
    let out = Command::new("unshare")
        .args(["-u", "sh", "-c", &format!("hostname {host} && exec \"$@\""), "sh"])
        .args(argv)
        .output()
        .unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
}

#[test]
fn the_generated_resource_passes_drbdadm_dump_and_dry_runs() {
    if !present() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let mut a = answers::parse(include_str!("../../examples/answers.toml")).unwrap().complete().unwrap();
    a.public.address = Some("192.168.0.100/24".parse().unwrap());
    a.heartbeat[0].address = Some("10.1.1.1/24".parse().unwrap());
    let env = Env { root: root.path().to_path_buf(), runner: Arc::new(pbxha_runner::ScriptedRunner::new()) };
    let read = |_: &Path| None;
    let size = |_: &Path| None;
    let plan = plan::plan(&a, &facts::Facts::default(), &env, &read, &size).unwrap();
    for action in plan.steps.iter().flat_map(|s| &s.actions) {
        if let Action::Write { path, contents, .. } = action {
            if path.extension().is_some_and(|e| e == "res") {
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(path, contents).unwrap();
            }
        }
    }
    let res = root.path().join("etc/drbd.d/r0.res").display().to_string();
    for host in ["pbx1", "pbx2"] {
        let (ok, text) = as_host(host, &["drbdadm".into(), "-c".into(), res.clone(), "dump".into(), "r0".into()]);
        assert!(ok, "dump as {host}: {text}");
        assert!(text.contains("address") && text.contains("10.1.1.2:7788") && text.contains("10.1.1.1:7788"), "{text}");
    }
    // The plan's drbdadm commands, each as a dry run on the first node.
    let drbdadm: Vec<Vec<String>> = plan
        .steps
        .iter()
        .flat_map(|s| &s.actions)
        .filter_map(|a| match a {
            Action::Run { argv, .. } if argv[0] == "drbdadm" => Some(argv.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(drbdadm.len(), 3, "create-md, up, primary: {drbdadm:?}");
    for argv in drbdadm {
        let mut dry = vec![argv[0].clone(), "-d".into()];
        dry.extend(argv[1..].iter().cloned());
        let (ok, text) = as_host("pbx1", &dry);
        assert!(ok, "{}: {text}", dry.join(" "));
        assert!(text.contains("drbdsetup") || text.contains("drbdmeta"), "{}: {text}", dry.join(" "));
    }
}
