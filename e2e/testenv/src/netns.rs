//! A network namespace of the test's own with a veth pair into it: the one-node cluster lives
//! inside, and the test process reaches it at the namespace's end of the pair. Nothing inside
//! has a default route, so nothing it sends can leave the machine.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;

use crate::{Error, Result};

/// A namespace `nsh-node-<pid>` with `host_ip` on this side of a /30 and `node_ip` inside.
#[derive(Debug)]
pub(crate) struct NetNs {
    pub(crate) name: String,
    /// This side of the pair (where the test process is).
    pub(crate) host_ip: Ipv4Addr,
    pub(crate) node_ip: Ipv4Addr,
}

/// Names of namespaces this harness makes: `nsh-node-<pid of the test process>`.
pub(crate) const PREFIX: &str = "nsh-node-";

impl NetNs {
    /// Creates the namespace for this process, with loopback up and the veth pair addressed.
    /// The /30 comes from the process id, so test binaries running at once do not collide.
    pub(crate) fn create() -> Result<Self> {
        let pid = std::process::id();
        let name = format!("{PREFIX}{pid}");
        // 10.253.0.0/16 in /30s: 16384 of them.
        let slot = pid % 16384;
        let base = u32::from(Ipv4Addr::new(10, 253, 0, 0)) + slot * 4;
        let (host_ip, node_ip) = (Ipv4Addr::from(base + 1), Ipv4Addr::from(base + 2));
        let (host_if, node_if) = (format!("nshh{slot}"), format!("nshn{slot}"));
        // A namespace of this name is a leftover of a process that had this pid before.
        if PathBuf::from("/run/netns").join(&name).exists() {
            run(Command::new("ip").args(["netns", "delete", &name]))?;
        }
        run(Command::new("ip").args(["netns", "add", &name]))?;
        let netns = Self {
            name,
            host_ip,
            node_ip,
        };
        netns.inside(&["ip", "link", "set", "lo", "up"])?;
        let _ = run(Command::new("ip").args(["link", "delete", &host_if]));
        run(Command::new("ip").args([
            "link", "add", &host_if, "type", "veth", "peer", "name", &node_if,
        ]))?;
        run(Command::new("ip").args(["link", "set", &node_if, "netns", &netns.name]))?;
        run(Command::new("ip").args(["addr", "add", &format!("{host_ip}/30"), "dev", &host_if]))?;
        run(Command::new("ip").args(["link", "set", &host_if, "up"]))?;
        netns.inside(&[
            "ip",
            "addr",
            "add",
            &format!("{node_ip}/30"),
            "dev",
            &node_if,
        ])?;
        netns.inside(&["ip", "link", "set", &node_if, "up"])?;
        Ok(netns)
    }

    /// `program` to be run inside the namespace. Only the network namespace is entered (not a
    /// mount namespace, as `ip netns exec` would): the kubelet's mounts must be the ones
    /// containerd sees.
    pub(crate) fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net=/run/netns/{}", self.name))
            .arg("--")
            .arg(program);
        command
    }

    /// Runs `argv` inside the namespace and waits for it.
    pub(crate) fn inside(&self, argv: &[&str]) -> Result<()> {
        let mut command = self.command(argv[0]);
        command.args(&argv[1..]);
        run(&mut command)
    }
}

/// Runs `command` to completion; a failure carries its stderr.
pub(crate) fn run(command: &mut Command) -> Result<()> {
    let output = command
        .output()
        .map_err(Error::io(format!("run {command:?}")))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(Error::Io {
            context: format!("{command:?}"),
            source: std::io::Error::other(String::from_utf8_lossy(&output.stderr).into_owned()),
        })
    }
}
