//! `pbxha lab up --bare`: the lab's namespaces, links and gateway with no daemon started;
//! each node gets an empty root directory and a loop-backed disk, so `pbxha install
//! --root` can be run inside a node as an operator would run it on a bare server.

use std::path::PathBuf;

use super::plan::Member;
use super::{lab_err, Error, Lab};

/// The disk each bare node gets: room for a DRBD device's metadata and a small /replica.
pub const DISK_MIB: u64 = 256;

impl Lab {
    /// The directory `pbxha install --root` is given on `node`.
    pub fn bare_root(&self, node: Member) -> PathBuf {
        self.state_dir.join(format!("{}-root", node.name()))
    }

    fn disk_record(&self, node: Member) -> PathBuf {
        self.state_dir.join(format!("{}.loop", node.name()))
    }

    /// Makes each node's root directory and disk (a sparse image on a loop device, whose
    /// name is kept so `down` detaches it). Returns (node, root, disk device).
    pub async fn make_bare(&self) -> Result<Vec<(Member, PathBuf, String)>, Error> {
        let mut out = Vec::new();
        for node in Member::NODES {
            let root = self.bare_root(node);
            std::fs::create_dir_all(&root).map_err(|e| Error::io(format!("creating {}", root.display()), e))?;
            let image = self.state_dir.join(format!("{}-disk.img", node.name()));
            std::fs::File::create(&image)
                .and_then(|f| f.set_len(DISK_MIB << 20))
                .map_err(|e| Error::io(format!("creating {}", image.display()), e))?;
            let attached =
                self.run(vec!["losetup".into(), "-f".into(), "--show".into(), image.display().to_string()]).await?;
            let dev = attached.stdout.trim().to_string();
            if !dev.starts_with("/dev/") {
                return Err(lab_err(format!("losetup printed `{dev}` for {}", image.display())));
            }
            let record = self.disk_record(node);
            std::fs::write(&record, &dev).map_err(|e| Error::io(format!("writing {}", record.display()), e))?;
            out.push((node, root, dev));
        }
        Ok(out)
    }

    /// Detaches the bare nodes' loop devices, if any were made.
    pub(super) async fn detach_disks(&self) -> Result<(), Error> {
        for node in Member::NODES {
            if let Ok(dev) = std::fs::read_to_string(self.disk_record(node)) {
                self.run(vec!["losetup".into(), "-d".into(), dev.trim().to_string()]).await?;
                let _ = std::fs::remove_file(self.disk_record(node));
            }
        }
        Ok(())
    }
}
