//! Peers no one here wrote, for interop tests and benchmarks: the official Node `socket.io`,
//! `socket.io-client` and MCP SDK `@modelcontextprotocol/sdk` (npm, in
//! `mesh/interop/node_modules`) and `python-socketio` (PyPI, in a virtualenv under the cache). `scripts/test.sh` installs them; a missing one fails with that fix.

use std::path::PathBuf;

use crate::{Binaries, Error, Result};

const INSTALL: &str =
    "scripts/test.sh (it runs `npm ci` in mesh/interop and fills the interop virtualenv)";

/// `mesh/interop` in this checkout.
pub fn interop_dir() -> PathBuf {
    crate::repo_root().join("mesh/interop")
}

/// `node`, with the official packages installed beside the interop scripts.
pub fn node() -> Result<PathBuf> {
    let modules = interop_dir().join("node_modules");
    for package in ["socket.io", "socket.io-client", "@modelcontextprotocol/sdk"] {
        if !modules.join(package).join("package.json").is_file() {
            return Err(Error::MissingBinary {
                name: "npm package socket.io / socket.io-client / @modelcontextprotocol/sdk",
                path: modules.join(package),
                fix: INSTALL,
            });
        }
    }
    which("node").ok_or_else(|| Error::MissingBinary {
        name: "node",
        path: PathBuf::from("node"),
        fix: "install Node.js 20 or newer",
    })
}

/// The interop virtualenv's `python`, with `python-socketio` installed.
pub fn python() -> Result<PathBuf> {
    let path = std::env::var_os("NSH_INTEROP_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Binaries::dir()
                .with_file_name("interop-venv")
                .join("bin/python")
        });
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::MissingBinary {
            name: "python with python-socketio",
            path,
            fix: INSTALL,
        })
    }
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}
