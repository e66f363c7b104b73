//! Private network namespaces for tests and benchmarks.
//!
//! DDS discovery multicasts out of every interface it may use, so nothing that
//! starts a participant runs in the host's namespace: it re-executes itself
//! under `unshare -n` with only a loopback interface. [`isolate`] does that
//! for the current process, and refuses to run a participant when the
//! process claims isolation but shares the namespace of PID 1.

use std::process::Command;

/// Set in the child so it knows it already runs inside the namespace.
pub const ENV_INSIDE: &str = "WALLANCE_NETNS";

/// How loopback is set up inside the namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loopback {
    /// `lo` up, multicast flag on, 224.0.0.0/4 routed to it: SPDP multicast works.
    Multicast,
    /// `lo` up only, the usual Linux default: rustdds must fall back to its
    /// unicast discovery of the first participant ports.
    NoMulticast,
}

impl Loopback {
    fn setup(self) -> &'static str {
        match self {
            Loopback::Multicast => {
                "ip link set lo up && ip link set lo multicast on && ip route add 224.0.0.0/4 dev lo"
            }
            Loopback::NoMulticast => "ip link set lo up",
        }
    }
    fn tag(self) -> &'static str {
        match self {
            Loopback::Multicast => "multicast",
            Loopback::NoMulticast => "unicast",
        }
    }
}

fn net_ns(pid: &str) -> Option<std::path::PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/ns/net")).ok()
}

/// Set in the child to the namespace its parent ran in.
const ENV_PARENT_NS: &str = "WALLANCE_NETNS_PARENT";

/// True when this process's network namespace differs from the one its
/// launcher ran in and, where `/proc/1` is readable, from PID 1's.
pub fn in_private_namespace() -> bool {
    let Some(me) = net_ns("self") else {
        return false;
    };
    let Ok(parent) = std::env::var(ENV_PARENT_NS) else {
        return false;
    };
    if me.as_os_str() == parent.as_str() {
        return false;
    }
    // PID 1's namespace is often unreadable in containers; check it when we can.
    net_ns("1").is_none_or(|init| init != me)
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

/// Outcome of [`isolate`].
#[derive(Debug)]
pub enum Isolation {
    /// We are inside a private namespace: run the participants here.
    Inside(Loopback),
    /// We re-executed ourselves inside one; it exited with this status.
    Ran(std::process::ExitStatus),
}

/// Makes sure the caller runs in a private network namespace.
///
/// Outside one, re-executes the current binary with `args` under
/// `unshare -n` (`unshare -rn`, a user namespace, for non-root users), sets
/// up loopback as `lo` says, waits for it and returns [`Isolation::Ran`].
/// Inside, returns [`Isolation::Inside`].
///
/// Panics when the environment claims isolation the kernel does not show, so
/// a stray variable can never make a test multicast on the host's network.
pub fn isolate(lo: Loopback, args: &[&str]) -> std::io::Result<Isolation> {
    if let Ok(tag) = std::env::var(ENV_INSIDE) {
        assert!(
            in_private_namespace(),
            "{ENV_INSIDE} is set but this process shares its launcher's (or PID 1's) \
             network namespace; refusing to start DDS participants"
        );
        let lo = if tag == Loopback::NoMulticast.tag() {
            Loopback::NoMulticast
        } else {
            Loopback::Multicast
        };
        return Ok(Isolation::Inside(lo));
    }
    let exe = std::env::current_exe()?;
    let parent_ns = net_ns("self").ok_or_else(|| std::io::Error::other("cannot read /proc/self/ns/net"))?;
    let unshare_flags = if is_root() { "-n" } else { "-rn" };
    let script = format!("{} && exec \"$0\" \"$@\"", lo.setup());
    let status = Command::new("unshare")
        .arg(unshare_flags)
        .arg("sh")
        .arg("-c")
        .arg(script)
        .arg(exe)
        .args(args)
        .env(ENV_INSIDE, lo.tag())
        .env(ENV_PARENT_NS, parent_ns)
        .status()?;
    Ok(Isolation::Ran(status))
}

/// For `#[test]`s: runs the rest of the test only inside a private namespace.
///
/// Outside, re-runs exactly this test (`name` is its path without the crate,
/// e.g. `votes_all_arrive`) in a namespace, asserts it passed and returns
/// `false`; inside, returns `true`. Usage:
/// `if !netns::test_inside("my_test", Loopback::Multicast) { return; }`
pub fn test_inside(name: &str, lo: Loopback) -> bool {
    // `--include-ignored` so tests ignored by default (they need extra tools)
    // still run in the child when the parent was asked to run them.
    let args = [name, "--exact", "--nocapture", "--test-threads=1", "--include-ignored"];
    match isolate(lo, &args) {
        Ok(Isolation::Inside(_)) => true,
        Ok(Isolation::Ran(status)) => {
            assert!(
                status.success(),
                "test {name} failed inside its network namespace: {status}"
            );
            false
        }
        Err(e) => panic!("cannot start `unshare` for a private network namespace: {e}"),
    }
}
