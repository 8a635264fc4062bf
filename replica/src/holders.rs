//! Which processes hold files under a directory: open descriptors, working and root
//! directories, and mapped files, read from /proc (what `fuser -m` and `lsof +D` look at).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// A process that holds something under the directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    pub pid: i32,
    /// The process name from /proc/PID/comm, for messages.
    pub command: String,
    /// One of the held paths, for messages.
    pub path: String,
}

/// True when `path` is `dir` or below it (byte-wise, so names need not be UTF-8).
pub fn is_under(path: &[u8], dir: &[u8]) -> bool {
    let dir = if dir.len() > 1 { dir.strip_suffix(b"/").unwrap_or(dir) } else { dir };
    path == dir || (path.starts_with(dir) && (dir == b"/" || path.get(dir.len()) == Some(&b'/')))
}

/// The mapped paths in a /proc/PID/maps text (the sixth column, when it is a path).
pub fn mapped_paths(maps: &[u8]) -> impl Iterator<Item = &[u8]> {
    maps.split(|b| *b == b'\n').filter_map(|line| {
        // address perms offset dev inode, then the path after spaces.
        let mut rest = line;
        for _ in 0..5 {
            let start = rest.iter().position(|b| *b != b' ')?;
            rest = &rest[start..];
            let end = rest.iter().position(|b| *b == b' ')?;
            rest = &rest[end..];
        }
        let start = rest.iter().position(|b| *b != b' ')?;
        let path = &rest[start..];
        path.starts_with(b"/").then_some(path)
    })
}

/// Every other process holding something under `dir`. Processes that vanish while being
/// looked at are skipped.
pub fn holders(dir: &Path) -> std::io::Result<Vec<Holder>> {
    let dir = dir.as_os_str().as_bytes();
    let me = std::process::id() as i32;
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc")? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let base = entry.path();
        let mut held: Option<Vec<u8>> = None;
        for link in ["cwd", "root", "exe"] {
            if let Ok(target) = std::fs::read_link(base.join(link)) {
                // The root directory `/` holds everything; only a chroot below `dir` counts.
                if link == "root" && target.as_os_str().as_bytes() == b"/" {
                    continue;
                }
                if is_under(target.as_os_str().as_bytes(), dir) {
                    held = Some(target.as_os_str().as_bytes().to_vec());
                    break;
                }
            }
        }
        if held.is_none() {
            if let Ok(fds) = std::fs::read_dir(base.join("fd")) {
                for fd in fds.flatten() {
                    if let Ok(target) = std::fs::read_link(fd.path()) {
                        if is_under(target.as_os_str().as_bytes(), dir) {
                            held = Some(target.as_os_str().as_bytes().to_vec());
                            break;
                        }
                    }
                }
            }
        }
        if held.is_none() {
            if let Ok(maps) = std::fs::read(base.join("maps")) {
                held = mapped_paths(&maps).find(|p| is_under(p, dir)).map(<[u8]>::to_vec);
            }
        }
        if let Some(path) = held {
            let command = std::fs::read_to_string(base.join("comm")).unwrap_or_default().trim().to_string();
            out.push(Holder { pid, command, path: OsStr::from_bytes(&path).to_string_lossy().into_owned() });
        }
    }
    out.sort_by_key(|h| h.pid);
    Ok(out)
}

/// `pid N (command) holds PATH` lines, for refusals and logs.
pub fn describe(holders: &[Holder]) -> String {
    holders.iter().map(|h| format!("pid {} ({}) holds {}", h.pid, h.command, h.path)).collect::<Vec<_>>().join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn under_is_component_wise() {
        assert!(is_under(b"/replica/a", b"/replica"));
        assert!(is_under(b"/replica", b"/replica/"));
        assert!(!is_under(b"/replica2/a", b"/replica"));
        assert!(is_under(b"/x", b"/"));
    }

    #[test]
    fn maps_paths_with_spaces_and_anonymous_regions() {
        // Lines as in proc(5), "/proc/pid/maps".
        let maps = b"00400000-00452000 r-xp 00000000 08:02 173521      /usr/bin/dbus-daemon\n\
00e03000-00e24000 rw-p 00000000 00:00 0                                  [heap]\n\
7f2c1000-7f2c2000 r--p 00000000 08:02 42 /replica/var/lib/my file\n\
35b1800000-35b1820000 rw-p 00000000 00:00 0 \n";
        let paths: Vec<&[u8]> = mapped_paths(maps).collect();
        assert_eq!(paths, [&b"/usr/bin/dbus-daemon"[..], &b"/replica/var/lib/my file"[..]]);
    }

    #[test]
    fn finds_a_child_holding_a_file_and_not_itself() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("held");
        std::fs::write(&file, b"x").unwrap();
        // The test process itself holds the file too: it must not report itself.
        let _mine = std::fs::File::open(&file).unwrap();
        let mut child =
            std::process::Command::new("sleep").arg("30").stdin(std::fs::File::open(&file).unwrap()).spawn().unwrap();
        let found = holders(dir.path()).unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].pid, child.id() as i32);
        assert!(describe(&found).contains("(sleep) holds"), "{}", describe(&found));
    }
}
