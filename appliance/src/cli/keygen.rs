//! `pbxha keygen`: a new shared heartbeat key, mode 0600 from the start.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use pbxha_appliance::config;

pub fn run(config_path: &Path, out: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let path =
        out.unwrap_or_else(|| config::lenient_path(config_path, "cluster", "auth-key-file", config::DEFAULT_AUTH_KEY));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let text = new_key_text();
    // create_new: never overwrite a key the peer already shares.
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("{} (remove it first to replace the key on BOTH nodes)", path.display()))?;
    write!(file, "{text}").with_context(|| format!("writing {}", path.display()))?;
    println!("wrote a new key to {} (mode 0600); copy it to the other node with the same mode", path.display());
    Ok(ExitCode::SUCCESS)
}

/// A new key file's contents: 32 random bytes in hex, one line.
pub fn new_key_text() -> String {
    let key: [u8; 32] = rand::random();
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    format!("{hex}\n")
}
