//! `net.ipv4.ip_nonlocal_bind`: lets the PBX bind its SIP sockets to the VIP on the
//! secondary too, so it can run (warm) before the address arrives on takeover.
//!
//! The file under /proc/sys/net belongs to the network namespace of the thread that opens
//! it, so these act on the caller's namespace.

use std::path::Path;

use crate::Error;

/// Where the sysctl lives.
pub const PATH: &str = "/proc/sys/net/ipv4/ip_nonlocal_bind";

/// Parses the sysctl's text: `0` or `1`.
fn parse(text: &str) -> Option<bool> {
    match text.trim() {
        "0" => Some(false),
        "1" => Some(true),
        _ => None,
    }
}

fn read_at(path: &Path) -> Result<bool, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    parse(&text).ok_or_else(|| {
        Error::io(
            format!("reading {}", path.display()),
            std::io::Error::new(std::io::ErrorKind::InvalidData, format!("unexpected value `{}`", text.trim())),
        )
    })
}

/// Whether binding to addresses this host does not have is allowed.
pub fn ip_nonlocal_bind() -> Result<bool, Error> {
    read_at(Path::new(PATH))
}

/// Allows binding to addresses this host does not have (sets the sysctl to 1).
pub fn enable_ip_nonlocal_bind() -> Result<(), Error> {
    std::fs::write(PATH, "1\n").map_err(|e| Error::io(format!("writing 1 to {PATH}"), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_sysctl_text() {
        assert_eq!(parse("0\n"), Some(false));
        assert_eq!(parse("1\n"), Some(true));
        assert_eq!(parse("2\n"), None);
        assert_eq!(parse(""), None);
    }

    #[test]
    fn reading_names_the_file_at_fault() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ip_nonlocal_bind");
        std::fs::write(&path, "yes\n").unwrap();
        let err = read_at(&path).unwrap_err().to_string();
        assert!(err.contains("ip_nonlocal_bind") && err.contains("`yes`"), "{err}");
        std::fs::write(&path, "1\n").unwrap();
        assert!(read_at(&path).unwrap());
    }

    #[test]
    fn enabling_sets_the_sysctl_of_the_current_namespace() {
        use pbxha_lab::testns::{prerequisites_met, TestNet};
        if !prerequisites_met("enabling_sets_the_sysctl_of_the_current_namespace") {
            return;
        }
        let net = TestNet::new("nonlocal", &[("a", "198.51.100.11/24")]).unwrap();
        let (before, after) = net
            .run_in("a", || async {
                let before = ip_nonlocal_bind().unwrap();
                enable_ip_nonlocal_bind().unwrap();
                (before, ip_nonlocal_bind().unwrap())
            })
            .unwrap();
        assert_eq!((before, after), (false, true));
        // Binding to an address the namespace does not have now works.
        let bound = net.run_in("a", || async { std::net::UdpSocket::bind("198.51.100.50:5060").map(drop) }).unwrap();
        bound.unwrap();
    }
}
