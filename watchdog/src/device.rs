//! Self-fencing through the kernel watchdog (`/dev/watchdog`), as heartbeat's `watchdog`
//! directive: the daemon's main loop kicks it, so a hung daemon stops kicking and the
//! hardware (or softdog) resets the node before the peer takes over its resources.
//!
//! The ioctls are those of the Linux watchdog API (Documentation/watchdog/watchdog-api.rst):
//! `WDIOC_SETTIMEOUT` = `_IOWR('W', 6, int)`, `WDIOC_KEEPALIVE` = `_IOR('W', 5, int)`, and
//! the "magic close": writing `V` just before closing tells a driver with nowayout unset that
//! the stop is deliberate, so it disarms instead of resetting the node.
//! [`Device`] is the seam: [`LinuxWatchdog`] is the real one; tests use a recording double.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::Error;

nix::ioctl_read!(wdioc_keepalive, b'W', 5, libc::c_int);
nix::ioctl_readwrite!(wdioc_settimeout, b'W', 6, libc::c_int);

/// What the kicker needs from a watchdog device.
pub trait Device: Send {
    /// Sets the reset timeout; returns what the driver granted (it may round).
    fn set_timeout(&mut self, timeout: Duration) -> Result<Duration, Error>;
    fn keepalive(&mut self) -> Result<(), Error>;
    /// Disarms on a clean stop (magic close) and closes.
    fn disarm(self: Box<Self>) -> Result<(), Error>;
}

/// `/dev/watchdog` (or any file implementing the watchdog ioctls).
pub struct LinuxWatchdog {
    file: File,
    path: PathBuf,
}

impl LinuxWatchdog {
    /// Opens the device; opening arms it, so kick it promptly afterwards.
    pub fn open(path: &Path) -> Result<Self, Error> {
        let file = OpenOptions::new().write(true).open(path).map_err(|source| Error::Device {
            path: path.to_path_buf(),
            op: "open",
            source,
        })?;
        Ok(LinuxWatchdog { file, path: path.to_path_buf() })
    }

    fn err(&self, op: &'static str, e: impl Into<std::io::Error>) -> Error {
        Error::Device { path: self.path.clone(), op, source: e.into() }
    }
}

impl Device for LinuxWatchdog {
    fn set_timeout(&mut self, timeout: Duration) -> Result<Duration, Error> {
        let mut secs = libc::c_int::try_from(timeout.as_secs().max(1)).unwrap_or(libc::c_int::MAX);
        // SAFETY: the fd is open for the lifetime of `self.file`; the argument is a valid int.
        unsafe { wdioc_settimeout(self.file.as_raw_fd(), &mut secs) }.map_err(|e| self.err("WDIOC_SETTIMEOUT", e))?;
        Ok(Duration::from_secs(secs.max(0) as u64))
    }

    fn keepalive(&mut self) -> Result<(), Error> {
        let mut dummy: libc::c_int = 0;
        // SAFETY: as above; the driver ignores the argument.
        unsafe { wdioc_keepalive(self.file.as_raw_fd(), &mut dummy) }.map_err(|e| self.err("WDIOC_KEEPALIVE", e))?;
        Ok(())
    }

    fn disarm(mut self: Box<Self>) -> Result<(), Error> {
        self.file.write_all(b"V").map_err(|e| self.err("magic close", e))?;
        Ok(())
    }
}

/// Kicks a device at a third of its timeout, from the daemon's main loop.
pub struct Kicker {
    device: Option<Box<dyn Device>>,
    /// How often [`Kicker::due`] says yes.
    pub interval: Duration,
}

impl Kicker {
    /// Arms `device` with `timeout`; kicks every third of what the driver granted, so two
    /// missed kicks still do not reset a merely slow node.
    pub fn arm(mut device: Box<dyn Device>, timeout: Duration) -> Result<Self, Error> {
        let granted = device.set_timeout(timeout)?;
        device.keepalive()?;
        Ok(Kicker { device: Some(device), interval: (granted / 3).max(Duration::from_millis(500)) })
    }

    /// Called from the main loop every `interval`.
    pub fn kick(&mut self) -> Result<(), Error> {
        match self.device.as_mut() {
            Some(d) => d.keepalive(),
            None => Ok(()),
        }
    }

    /// A clean stop: magic close, so the node is not reset.
    pub fn stop(mut self) -> Result<(), Error> {
        match self.device.take() {
            Some(d) => d.disarm(),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Records calls; grants timeouts rounded up to 10 s as some drivers do.
    struct Recording(Arc<Mutex<Vec<String>>>);

    impl Device for Recording {
        fn set_timeout(&mut self, t: Duration) -> Result<Duration, Error> {
            self.0.lock().unwrap().push(format!("settimeout {}", t.as_secs()));
            Ok(Duration::from_secs(t.as_secs().div_ceil(10) * 10))
        }
        fn keepalive(&mut self) -> Result<(), Error> {
            self.0.lock().unwrap().push("keepalive".into());
            Ok(())
        }
        fn disarm(self: Box<Self>) -> Result<(), Error> {
            self.0.lock().unwrap().push("V".into());
            Ok(())
        }
    }

    #[test]
    fn kicker_arms_kicks_and_disarms_with_the_magic_close() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut k = Kicker::arm(Box::new(Recording(log.clone())), Duration::from_secs(15)).unwrap();
        assert_eq!(k.interval, Duration::from_secs(20) / 3, "a third of the granted 20 s");
        k.kick().unwrap();
        k.stop().unwrap();
        assert_eq!(*log.lock().unwrap(), ["settimeout 15", "keepalive", "keepalive", "V"]);
    }

    #[test]
    fn a_plain_file_refuses_the_ioctls_with_the_path_named() {
        // A regular file takes writes but not ioctls (ENOTTY): the error must say which.
        let f = tempfile::NamedTempFile::new().unwrap();
        let mut w = LinuxWatchdog::open(f.path()).unwrap();
        let err = w.set_timeout(Duration::from_secs(10)).unwrap_err().to_string();
        assert!(err.contains("WDIOC_SETTIMEOUT") && err.contains(&f.path().display().to_string()), "{err}");
        let err = w.keepalive().unwrap_err().to_string();
        assert!(err.contains("WDIOC_KEEPALIVE"), "{err}");
        Box::new(w).disarm().unwrap();
        assert_eq!(std::fs::read(f.path()).unwrap(), b"V");
    }
}
