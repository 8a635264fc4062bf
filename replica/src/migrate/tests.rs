use super::*;
use crate::filesystem::tests::{assert_in_private_ns, run_in_private_mount_ns};
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::process::Command;
use std::time::{Duration, Instant};

/// Everything compared between an original tree and its copy, keyed by relative path bytes.
#[derive(Debug, PartialEq, Eq)]
struct Entry {
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    mtime: (i64, i64),
    target: Option<Vec<u8>>,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    content: Option<Vec<u8>>,
    /// Index of the first path with the same inode (hard-link structure).
    link_group: Option<Vec<u8>>,
    allocated_blocks: u64,
}

fn snapshot(root: &Path) -> BTreeMap<Vec<u8>, Entry> {
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    fn walk(root: &Path, p: &Path, out: &mut BTreeMap<Vec<u8>, Entry>, inodes: &mut BTreeMap<u64, Vec<u8>>) {
        let m = std::fs::symlink_metadata(p).unwrap();
        let rel = p.strip_prefix(root).unwrap().as_os_str().as_bytes().to_vec();
        let link_group =
            (!m.is_dir() && m.nlink() > 1).then(|| inodes.entry(m.ino()).or_insert_with(|| rel.clone()).clone());
        out.insert(
            rel,
            Entry {
                mode: m.mode(),
                uid: m.uid(),
                gid: m.gid(),
                size: if m.is_dir() { 0 } else { m.len() },
                mtime: (m.mtime(), m.mtime_nsec()),
                target: m.file_type().is_symlink().then(|| std::fs::read_link(p).unwrap().into_os_string().into_vec()),
                xattrs: copy::xattrs(p).unwrap(),
                content: m.is_file().then(|| std::fs::read(p).unwrap()),
                link_group,
                allocated_blocks: if m.is_file() { m.blocks() } else { 0 },
            },
        );
        if m.is_dir() {
            // Sorted, so the first path of a hard-link group does not depend on directory order.
            let mut children: Vec<PathBuf> = std::fs::read_dir(p).unwrap().map(|e| e.unwrap().path()).collect();
            children.sort();
            for c in children {
                walk(root, &c, out, inodes);
            }
        }
    }
    walk(root, root, &mut out, &mut inodes);
    out
}

/// Runs a tool on paths passed as bytes (they need not be UTF-8).
fn run(argv: &[&str], paths: &[PathBuf]) {
    let out = Command::new(argv[0]).args(&argv[1..]).args(paths).output().unwrap();
    assert!(out.status.success(), "{argv:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A tree with everything the copy must keep.
fn build_tree(dir: &Path) {
    std::fs::create_dir_all(dir.join("sub/deeper")).unwrap();
    for i in 0..300 {
        std::fs::write(
            dir.join(format!("sub/small-{i}.conf")),
            format!("[section{i}]\nkey=value {i}\n").repeat(i % 7 + 1),
        )
        .unwrap();
    }
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    std::fs::write(dir.join("sub/deeper/recording.wav"), &big).unwrap();
    // Sparse: 64 MiB with data only at both ends.
    let f = std::fs::File::create(dir.join("sparse.db")).unwrap();
    f.set_len(64 << 20).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(b"head", 0).unwrap();
    f.write_all_at(b"tail", (64 << 20) - 4).unwrap();
    drop(f);
    std::fs::write(dir.join("linked-a"), b"hard").unwrap();
    std::fs::hard_link(dir.join("linked-a"), dir.join("sub/linked-b")).unwrap();
    symlink("sub/small-1.conf", dir.join("rel-link")).unwrap();
    symlink("/nonexistent/dangling", dir.join("dangling")).unwrap();
    symlink("loop-b", dir.join("loop-a")).unwrap();
    symlink("loop-a", dir.join("loop-b")).unwrap();
    symlink(".", dir.join("sub/self")).unwrap();
    std::fs::write(dir.join(OsStr::from_bytes(b"new\nline")), b"nl").unwrap();
    std::fs::write(dir.join(OsStr::from_bytes(b"latin1-\xe9t\xe9")), b"bad utf8").unwrap();
    std::fs::write(dir.join("secret"), b"pw").unwrap();
    std::fs::set_permissions(dir.join("secret"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(dir.join("suid"), b"#!/bin/sh\n").unwrap();
    std::os::unix::fs::lchown(dir.join("suid"), Some(1234), Some(2345)).unwrap();
    std::fs::set_permissions(dir.join("suid"), std::fs::Permissions::from_mode(0o4750)).unwrap();
    std::os::unix::fs::lchown(dir.join("sub"), Some(1234), Some(2345)).unwrap();
    std::os::unix::fs::lchown(dir.join("rel-link"), Some(1234), Some(2345)).unwrap();
    run(&["mkfifo"], &[dir.join("fifo")]);
    run(&["setfattr", "-n", "user.pbx", "-v", "sip peer"], &[dir.join("secret")]);
    run(&["setfacl", "-m", "u:1234:r"], &[dir.join("secret")]);
    run(&["setfacl", "-d", "-m", "g:2345:rwx"], &[dir.join("sub/deeper")]);
    run(&["setfattr", "-n", "trusted.x", "-v", "1"], &[dir.join("sub")]);
    let old = [dir.join("rel-link"), dir.join("sub/deeper"), dir.join("sub/small-3.conf")];
    run(&["touch", "-h", "-d", "2001-02-03 04:05:06.123456789"], &old);
}

fn tools_for_ns_tests() -> bool {
    let ok = ["setfattr", "setfacl", "mkfifo"].iter().all(|t| {
        Command::new("sh").args(["-c", &format!("command -v {t}")]).output().is_ok_and(|o| o.status.success())
    });
    if !ok {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "attr and acl packages are required under CI=true");
        eprintln!("skipping: setfattr/setfacl missing (packages attr, acl)");
    }
    ok
}

fn mount_tmpfs(at: &Path, size: &str) {
    std::fs::create_dir_all(at).unwrap();
    run(&["mount", "-t", "tmpfs", "-o", &format!("size={size}"), "pbxha-test"], &[at.to_path_buf()]);
}

fn opts(dirs: Vec<PathBuf>, root: &Path, role: MigrateRole) -> MigrateOptions {
    MigrateOptions { dirs, replica_root: root.to_path_buf(), role, progress: false }
}

#[test]
fn bad_input_is_refused_with_every_problem_and_nothing_touched() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("replica");
    std::fs::create_dir(&root).unwrap();
    let real = t.path().join("etc/asterisk");
    std::fs::create_dir_all(&real).unwrap();
    std::fs::write(real.join("sip.conf"), b"x").unwrap();
    let elsewhere = t.path().join("var-lib-mysql");
    symlink("/srv/mysql", &elsewhere).unwrap();
    let nested = real.join("keys");
    std::fs::create_dir(&nested).unwrap();
    let before = snapshot(t.path());
    let err = plan(&opts(
        vec![real.clone(), t.path().join("missing"), elsewhere, nested, PathBuf::from("relative/dir")],
        &root,
        MigrateRole::Primary,
    ))
    .unwrap_err();
    let Error::PlanRefused { problems } = &err else { panic!("{err}") };
    let text = problems.join("\n");
    for expected in [
        "not a mount point",
        "missing: No such file",
        "already a symlink (to /srv/mysql)",
        "one contains the other",
        "give an absolute path",
        "same filesystem",
    ] {
        assert!(text.contains(expected), "missing `{expected}` in:\n{text}");
    }
    assert!(migrate(&opts(vec![real], &root, MigrateRole::Primary)).is_err());
    assert_eq!(snapshot(t.path()), before, "a refused plan changes nothing");
}

#[test]
fn a_process_holding_a_file_blocks_the_plan() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("spool");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("voicemail"), b"x").unwrap();
    let mut child =
        Command::new("sleep").arg("30").stdin(std::fs::File::open(dir.join("voicemail")).unwrap()).spawn().unwrap();
    let err = plan(&opts(vec![dir], &t.path().join("replica"), MigrateRole::Secondary)).unwrap_err().to_string();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(err.contains("still in use") && err.contains("(sleep) holds"), "{err}");
}

#[test]
fn secondary_sets_aside_links_and_undo_restores() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("etc/asterisk");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("extensions.conf"), b"[default]\n").unwrap();
    let before = snapshot(&dir);
    let root = t.path().join("replica-not-mounted-here");
    let o = opts(vec![dir.clone()], &root, MigrateRole::Secondary);
    migrate(&o).unwrap();
    let target = target_path(&root, &dir);
    assert!(is_symlink_to(&dir, &target));
    assert_eq!(snapshot(&backup_path(&dir).unwrap()), before);
    migrate(&o).unwrap();
    let undone = undo(std::slice::from_ref(&dir)).unwrap();
    assert_eq!(undone.len(), 1);
    assert!(undone[0].replica_copy_kept_at.is_none());
    assert_eq!(snapshot(&dir), before);
    assert!(!exists(&backup_root(&dir).unwrap()), "no empty backup directories left");
    assert!(undo(&[dir]).unwrap().is_empty(), "a second undo has nothing to do");
}

#[test]
fn migration_survives_kill_9_at_random_points_and_undo_restores() {
    if tools_for_ns_tests() {
        run_in_private_mount_ns("migrate::tests::kill_9_inner");
    }
}

const CHILD_ENV: &str = "PBXHA_REPLICA_MIGRATE_CHILD";

/// The migration (or undo) as a separate process the parent can SIGKILL.
#[test]
#[ignore = "child process of migration_survives_kill_9_at_random_points_and_undo_restores"]
fn kill_9_child() {
    let op = std::env::var(CHILD_ENV).expect("run only as a child of the kill -9 test");
    let dir = PathBuf::from(std::env::var_os("PBXHA_REPLICA_CHILD_DIR").unwrap());
    let root = PathBuf::from(std::env::var_os("PBXHA_REPLICA_CHILD_ROOT").unwrap());
    match op.as_str() {
        "migrate" => {
            migrate(&opts(vec![dir], &root, MigrateRole::Primary)).unwrap();
        }
        _ => {
            undo(&[dir]).unwrap();
        }
    }
}

/// Runs the child for `op` repeatedly, killing it after random delays, until a run completes.
/// Returns how many runs were killed.
fn kill_until_done(op: &str, dir: &Path, root: &Path) -> usize {
    use rand::Rng;
    let exe = std::env::current_exe().unwrap();
    let mut rng = rand::thread_rng();
    let mut kills = 0;
    let deadline = Instant::now() + Duration::from_secs(45);
    for attempt in 0.. {
        let mut child = Command::new(&exe)
            .args(["--exact", "migrate::tests::kill_9_child", "--include-ignored", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, op)
            .env("PBXHA_REPLICA_CHILD_DIR", dir)
            .env("PBXHA_REPLICA_CHILD_ROOT", root)
            .env("PBXHA_REPLICA_IN_PRIVATE_NS", "1")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Bounded: 30 kills, then one run to completion.
        if attempt < 30 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_micros(rng.gen_range(2_000..250_000)));
            if child.try_wait().unwrap().is_none() {
                child.kill().unwrap();
                child.wait().unwrap();
                kills += 1;
                continue;
            }
        }
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{op} run {attempt} failed: {}", String::from_utf8_lossy(&out.stderr));
        return kills;
    }
    unreachable!()
}

#[test]
#[ignore = "runs inside a private mount namespace through migration_survives_kill_9_at_random_points_and_undo_restores"]
fn kill_9_inner() {
    assert_in_private_ns();
    let t = tempfile::tempdir().unwrap();
    let local = t.path().join("local");
    let root = t.path().join("replica");
    mount_tmpfs(&local, "256m");
    mount_tmpfs(&root, "256m");
    let dir = local.join(OsStr::from_bytes(b"var/lib/asterisk \xff"));
    build_tree(&dir);
    let original = snapshot(&dir);

    let started = Instant::now();
    let kills = kill_until_done("migrate", &dir, &root);
    eprintln!("migrate: {kills} kills, {:?}", started.elapsed());
    assert!(kills >= 5, "the test must actually interrupt runs ({kills})");
    let target = target_path(&root, &dir);
    assert!(is_symlink_to(&dir, &target));
    let copied = snapshot(&target);
    for (k, v) in &original {
        assert_eq!(copied.get(k), Some(v), "entry {}", k.escape_ascii());
    }
    assert_eq!(copied.len(), original.len());
    assert!(copied[&b"sparse.db"[..]].allocated_blocks < 1024, "holes stay holes");
    assert_eq!(snapshot(&backup_path(&dir).unwrap()), original, "the original is kept, untouched");
    // Through the symlink, the service sees the same tree.
    assert_eq!(std::fs::read(dir.join("sub/linked-b")).unwrap(), b"hard");
    migrate(&opts(vec![dir.clone()], &root, MigrateRole::Primary)).unwrap();

    let kills = kill_until_done("undo", &dir, &root);
    eprintln!("undo: {kills} kills");
    assert_eq!(snapshot(&dir), original, "undo restores the original layout");
    let kept: Vec<_> = std::fs::read_dir(target.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(
        kept.iter().any(|n| n.as_bytes().windows(13).any(|w| w == b"pbxha-undone-")),
        "replica copy kept: {kept:?}"
    );
}

#[test]
fn same_filesystem_and_free_space_are_checked_on_real_mounts() {
    if tools_for_ns_tests() {
        run_in_private_mount_ns("migrate::tests::space_inner");
    }
}

#[test]
#[ignore = "runs inside a private mount namespace through same_filesystem_and_free_space_are_checked_on_real_mounts"]
fn space_inner() {
    assert_in_private_ns();
    let t = tempfile::tempdir().unwrap();
    let local = t.path().join("local");
    let root = t.path().join("replica");
    mount_tmpfs(&local, "128m");
    mount_tmpfs(&root, "8m");
    let dir = local.join("www");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("big"), vec![7u8; 20 << 20]).unwrap();
    let err = plan(&opts(vec![dir.clone()], &root, MigrateRole::Primary)).unwrap_err().to_string();
    assert!(err.contains("MiB free") && err.contains("needed"), "{err}");
    // A directory inside the replica's own filesystem is refused too.
    let inside = root.join("x");
    std::fs::create_dir(&inside).unwrap();
    let err = plan(&opts(vec![inside], &root, MigrateRole::Primary)).unwrap_err().to_string();
    assert!(err.contains("overlaps the replica root"), "{err}");
    let err = plan(&opts(vec![local.clone()], &root, MigrateRole::Primary)).unwrap_err().to_string();
    assert!(err.contains("is itself a mount point"), "{err}");
}
