//! The drill's canary file on the replicated filesystem: written on the holder before a
//! move, read (and removed) on the new holder after it, where DRBD has put the same blocks.
//! The MySQL canary row is the replica crate's (`pbxha_replica::mysql::canary`).

use std::path::{Path, PathBuf};

use crate::config::{Config, ResourceKind};

const FILE_NAME: &str = ".pbxha-drill-canary";

/// The canary file: on the mount point of the group's first filesystem, when the group has
/// a `drbd` resource (a filesystem alone is not replicated by pbxha).
pub fn replica_file(config: &Config) -> Option<PathBuf> {
    config.resources.iter().find(|r| matches!(r.kind, ResourceKind::Drbd(_)))?;
    config.resources.iter().find_map(|r| match &r.kind {
        ResourceKind::Filesystem(f) => Some(f.mount_point.join(FILE_NAME)),
        _ => None,
    })
}

/// A fresh random token.
pub fn token() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// Writes `token` into `path` and syncs it, so what DRBD replicates holds it.
pub fn write(path: &Path, token: &str) -> Result<(), String> {
    use std::io::Write;
    let mut file = std::fs::File::create(path).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    file.write_all(token.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Reads `path`, which must hold `token`, and removes it.
pub fn read_and_remove(path: &Path, token: &str) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if text != token {
        return Err(format!("{} holds another token than the one written before the move", path.display()));
    }
    std::fs::remove_file(path).map_err(|e| format!("cannot remove {}: {e}", path.display()))
}

/// [`write`] or [`read_and_remove`], as the peer's ask wants it.
pub fn apply(config: &Config, token: &str, write_it: bool) -> Result<String, String> {
    let path = replica_file(config).ok_or("no drbd resource with a filesystem is configured here")?;
    if write_it {
        write(&path, token)?;
        Ok(format!("wrote {}", path.display()))
    } else {
        read_and_remove(&path, token)?;
        Ok(format!("read {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_written_is_read_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let t = token();
        assert_eq!(t.len(), 32);
        write(&path, &t).unwrap();
        assert!(read_and_remove(&path, "another").unwrap_err().contains("another token"));
        read_and_remove(&path, &t).unwrap();
        assert!(!path.exists());
        assert!(read_and_remove(&path, &t).unwrap_err().contains("cannot read"));
    }
}
