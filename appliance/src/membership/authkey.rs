//! The shared heartbeat key (`/etc/pbxha/authkey`): whoever holds it can speak for a node,
//! so the daemon refuses a key that others can read, or one too short to resist guessing.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::Error;

/// Shorter keys are refused: 16 random bytes are 128 bits, out of reach of guessing. RFC 2104
/// §3 discourages keys shorter than the hash output (32 bytes for SHA-256), which is what the
/// wizard should generate; 16 is the floor, not the advice.
pub const MIN_LEN: usize = 16;

/// Bytes read beyond this are not a key file; refusing keeps a misconfigured path (a log
/// file, a device) from being read whole.
const MAX_LEN: u64 = 4096;

/// The shared HMAC key. `Debug` hides the bytes so the key never ends up in a log line.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthKey(Vec<u8>);

impl AuthKey {
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Loads the key file, refusing it when group or others have any permission on it, or
    /// when it is missing, not a regular file, empty or shorter than [`MIN_LEN`] bytes once
    /// trailing whitespace (the newline an editor adds) is trimmed.
    pub fn load(path: &Path) -> Result<AuthKey, Error> {
        let fail = |message: String| Error::AuthKey { path: path.to_path_buf(), message };
        let mut file = std::fs::File::open(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => fail(format!(
                "missing; create it on one node with `head -c 32 /dev/urandom | base64 > {0} && chmod 600 {0}` and copy it to the other",
                path.display()
            )),
            _ => fail(format!("cannot open: {e}")),
        })?;
        // Checked on the open file, not the path, so the file judged is the file read.
        let meta = file.metadata().map_err(|e| fail(format!("cannot stat: {e}")))?;
        if !meta.is_file() {
            return Err(fail("is not a regular file".into()));
        }
        check_mode(meta.permissions().mode()).map_err(fail)?;
        let mut raw = Vec::new();
        (&mut file).take(MAX_LEN + 1).read_to_end(&mut raw).map_err(|e| fail(format!("cannot read: {e}")))?;
        if raw.len() as u64 > MAX_LEN {
            return Err(fail(format!("is larger than {MAX_LEN} bytes; is this really the key file?")));
        }
        parse(raw).map(AuthKey).map_err(fail)
    }
}

#[cfg(test)]
impl AuthKey {
    /// A key without a file, for tests of the code that uses one.
    pub(crate) fn for_tests(bytes: &[u8]) -> AuthKey {
        AuthKey(bytes.to_vec())
    }
}

impl std::fmt::Debug for AuthKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AuthKey({} bytes)", self.0.len())
    }
}

/// Refuses any group or other permission bit.
fn check_mode(mode: u32) -> Result<(), String> {
    let perm = mode & 0o7777;
    if perm & 0o077 != 0 {
        return Err(format!("mode {perm:04o} lets group or others access it; it must be 0600 (chmod 600)"));
    }
    Ok(())
}

/// Trims trailing whitespace and checks the length.
fn parse(mut raw: Vec<u8>) -> Result<Vec<u8>, String> {
    let len = raw.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(0, |i| i + 1);
    raw.truncate(len);
    if raw.is_empty() {
        return Err("is empty".into());
    }
    if raw.len() < MIN_LEN {
        return Err(format!("holds {} bytes, fewer than the {MIN_LEN} required", raw.len()));
    }
    Ok(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, content: &[u8], mode: u32) -> std::path::PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, content).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    fn message(r: Result<AuthKey, Error>) -> String {
        match r {
            Err(e @ Error::AuthKey { .. }) => e.to_string(),
            other => panic!("expected an auth key error, got {other:?}"),
        }
    }

    #[test]
    fn a_private_key_loads_with_trailing_whitespace_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "authkey", b"  0123456789abcdefXYZ \n\n", 0o600);
        let key = AuthKey::load(&path).unwrap();
        assert_eq!(key.as_bytes(), b"  0123456789abcdefXYZ");
        assert_eq!(format!("{key:?}"), "AuthKey(21 bytes)");
        let path = write(dir.path(), "readonly", b"0123456789abcdef", 0o400);
        assert!(AuthKey::load(&path).is_ok());
    }

    #[test]
    fn group_or_other_bits_are_refused_naming_file_and_mode() {
        let dir = tempfile::tempdir().unwrap();
        for mode in [0o644, 0o640, 0o604, 0o610, 0o601, 0o660] {
            let path = write(dir.path(), "authkey", b"0123456789abcdef", mode);
            let msg = message(AuthKey::load(&path));
            assert!(msg.contains(&path.display().to_string()), "{msg}");
            assert!(msg.contains(&format!("{mode:04o}")), "{msg}");
        }
    }

    #[test]
    fn missing_empty_short_and_non_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let msg = message(AuthKey::load(&missing));
        assert!(msg.contains("nope") && msg.contains("missing"), "{msg}");
        let empty = write(dir.path(), "empty", b" \n", 0o600);
        assert!(message(AuthKey::load(&empty)).contains("is empty"));
        let short = write(dir.path(), "short", b"0123456789abcde\n", 0o600);
        assert!(message(AuthKey::load(&short)).contains("15 bytes"));
        assert!(message(AuthKey::load(dir.path())).contains("not a regular file"));
    }

    #[test]
    fn mode_check_ignores_owner_bits_and_file_type() {
        assert!(check_mode(0o100600).is_ok());
        assert!(check_mode(0o100700).is_ok());
        assert!(check_mode(0o100000).is_ok());
        assert_eq!(
            check_mode(0o100644),
            Err("mode 0644 lets group or others access it; it must be 0600 (chmod 600)".into())
        );
    }
}
