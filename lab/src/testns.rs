//! Throw-away networks for tests: uniquely named network namespaces ("hosts") plugged into
//! a bridge that lives in a namespace of its own, so nothing touches the machine's real
//! interfaces. [`TestNet`] removes every namespace it made when dropped, also when a test
//! panics; [`run_in`] runs async code inside one of them.
//!
//! It drives `ip` directly rather than through the command runner: cleanup happens in
//! `Drop`, which cannot await.

use std::future::Future;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use nix::sched::{setns, CloneFlags};

/// The interface name every host sees for its link to the bridge.
pub const HOST_IF: &str = "eth0";

/// Whether this machine can run namespace tests (root and `ip`). When it cannot: under
/// `CI=true` this panics, so a CI run never passes by skipping; otherwise it prints why and
/// returns false for the test to return early.
pub fn prerequisites_met(test: &str) -> bool {
    let problem = if !nix::unistd::geteuid().is_root() {
        Some("needs root".to_string())
    } else {
        match Command::new("ip").arg("-V").output() {
            Ok(out) if out.status.success() => None,
            Ok(out) => Some(format!("`ip -V` exited with {}", out.status)),
            Err(e) => Some(format!("cannot run `ip`: {e}")),
        }
    };
    match problem {
        None => true,
        Some(why) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("{test}: {why} (CI=true)")
        }
        Some(why) => {
            eprintln!("skipping {test}: {why}");
            false
        }
    }
}

/// Runs `argv` and returns its stdout, or an error naming the command and its stderr.
pub fn run(argv: &[&str]) -> Result<String, String> {
    let (program, args) = argv.split_first().ok_or("empty command")?;
    let out = Command::new(program).args(args).output().map_err(|e| format!("`{}`: {e}", argv.join(" ")))?;
    if !out.status.success() {
        return Err(format!(
            "`{}` exited with {}: {}",
            argv.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A bridge with hosts on it, each in its own namespace with `eth0` and one address.
pub struct TestNet {
    /// Host names as given, with their namespace names.
    hosts: Vec<(String, String)>,
    /// Every namespace created so far (switch included), removed on drop.
    created: Vec<String>,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

impl TestNet {
    /// Creates the switch and one namespace per `(host, "198.51.100.11/24")`. `prefix`
    /// should name the test so leftovers can be traced to it. Everything made so far is
    /// removed again if a step fails.
    pub fn new(prefix: &str, hosts: &[(&str, &str)]) -> Result<TestNet, String> {
        let unique = format!("{prefix}-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let mut net = TestNet { hosts: Vec::new(), created: Vec::new() };
        let switch = format!("{unique}-sw");
        run(&["ip", "netns", "add", &switch])?;
        net.created.push(switch.clone());
        // Snooping off: the tests rely on all-nodes multicast reaching every port at once.
        run(&["ip", "-n", &switch, "link", "add", "br0", "type", "bridge", "mcast_snooping", "0"])?;
        run(&["ip", "-n", &switch, "link", "set", "br0", "up"])?;
        for (i, (host, cidr)) in hosts.iter().enumerate() {
            let ns = format!("{unique}-{host}");
            run(&["ip", "netns", "add", &ns])?;
            net.created.push(ns.clone());
            let port = format!("p{i}");
            run(&["ip", "-n", &switch, "link", "add", &port, "type", "veth", "peer", "name", HOST_IF, "netns", &ns])?;
            run(&["ip", "-n", &switch, "link", "set", &port, "master", "br0", "up"])?;
            run(&["ip", "-n", &ns, "link", "set", "lo", "up"])?;
            run(&["ip", "-n", &ns, "addr", "add", cidr, "dev", HOST_IF])?;
            run(&["ip", "-n", &ns, "link", "set", HOST_IF, "up"])?;
            net.hosts.push((host.to_string(), ns));
        }
        Ok(net)
    }

    /// The namespace name of `host`. Panics on a name not given to [`TestNet::new`]: that is
    /// a mistake in the test.
    pub fn ns(&self, host: &str) -> &str {
        match self.hosts.iter().find(|(h, _)| h == host) {
            Some((_, ns)) => ns,
            None => panic!("no host `{host}` in this TestNet"),
        }
    }

    /// Runs `ip -n <ns of host> ARGS...` and returns its stdout.
    pub fn ip(&self, host: &str, args: &[&str]) -> Result<String, String> {
        let mut argv = vec!["ip", "-n", self.ns(host)];
        argv.extend_from_slice(args);
        run(&argv)
    }

    /// Runs `f`'s future inside `host`'s namespace (see [`run_in`]).
    pub fn run_in<F, Fut, T>(&self, host: &str, f: F) -> Result<T, String>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = T>,
        T: Send + 'static,
    {
        run_in(self.ns(host), f)
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        for ns in self.created.iter().rev() {
            if let Err(e) = run(&["ip", "netns", "del", ns]) {
                eprintln!("cleanup: {e}");
            }
        }
    }
}

/// Runs the future made by `f` to completion on a dedicated thread that has entered network
/// namespace `ns` (`/run/netns/<ns>`), with its own current-thread tokio runtime, so every
/// socket it opens lives in `ns`. A panic inside is passed on to the caller.
pub fn run_in<F, Fut, T>(ns: &str, f: F) -> Result<T, String>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T>,
    T: Send + 'static,
{
    let path = format!("/run/netns/{ns}");
    let file = std::fs::File::open(&path).map_err(|e| format!("{path}: {e}"))?;
    let thread = std::thread::spawn(move || -> Result<T, String> {
        setns(&file, CloneFlags::CLONE_NEWNET).map_err(|e| format!("setns {path}: {e}"))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("tokio runtime in {path}: {e}"))?;
        Ok(runtime.block_on(f()))
    });
    match thread.join() {
        Ok(result) => result,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}
