//! A network namespace with a veth pair, created by a test and deleted however it ends; the
//! checks for what the live tests need (root, `ip`, the replay and capture tools).

#![allow(dead_code, clippy::print_stderr)]

use std::process::{Child, Command, Stdio};

/// `cmd` is on the PATH.
pub fn have(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout == b"0\n")
}

/// Runs `args`, failing the test if it fails.
pub fn sh(args: &[&str]) {
    let st = Command::new(args[0]).args(&args[1..]).status().unwrap();
    assert!(st.success(), "{args:?} failed");
}

/// Whether the test `what` can run: root and every command of `needs`. Without them it says
/// so and the test passes, except under CI (`CI` set), where their absence is a failure.
pub fn ready(what: &str, needs: &[&str]) -> bool {
    let ci = std::env::var_os("CI").is_some();
    let missing: Vec<&str> = needs.iter().copied().filter(|c| !have(c)).collect();
    if !is_root() || !missing.is_empty() {
        let why = format!("needs root and {missing:?}");
        assert!(!ci, "{what} cannot run under CI: {why}");
        eprintln!("skipping {what}: {why}");
        return false;
    }
    true
}

/// A namespace; removing it (on drop, however the test ends) removes its veth pair too.
pub struct Netns(pub String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

impl Netns {
    /// A namespace named after `tag` and this process, with a veth pair `nwa` (replay) –
    /// `nwb` (capture), up, without IPv6 (the kernel's own neighbour discovery would add
    /// packets).
    pub fn with_veth(tag: &str) -> Netns {
        let ns = Netns(format!("nw{tag}{}", std::process::id()));
        sh(&["ip", "netns", "add", &ns.0]);
        for cmd in [
            &[
                "ip", "link", "add", "nwa", "type", "veth", "peer", "name", "nwb",
            ][..],
            &["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"],
            &["sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"],
            &["ip", "link", "set", "nwa", "up"],
            &["ip", "link", "set", "nwb", "up"],
            &["ip", "link", "set", "lo", "up"],
        ] {
            ns.exec(cmd);
        }
        ns
    }

    /// Runs `args` inside the namespace, failing the test if it fails.
    pub fn exec(&self, args: &[&str]) {
        let mut v = vec!["ip", "netns", "exec", &self.0];
        v.extend_from_slice(args);
        sh(&v);
    }

    /// Starts `args` inside the namespace, its output piped. `ip netns exec` execs the
    /// command, so the child's id is the command's own.
    pub fn spawn(&self, args: &[&str]) -> Child {
        Command::new("ip")
            .args(["netns", "exec", &self.0])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }
}
