//! Where the Go-built binaries are. `scripts/testbin.sh` puts them in one cache folder outside
//! the work tree; `NSH_TESTBIN_DIR` overrides it.

use std::path::{Path, PathBuf};

use crate::{Error, Result};

const BUILD_FIX: &str = "scripts/testbin.sh";

/// Paths of the binaries the control plane needs.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub etcd: PathBuf,
    pub kube_apiserver: PathBuf,
    pub kube_controller_manager: PathBuf,
    pub kubectl: PathBuf,
    pub helm: PathBuf,
}

impl Binaries {
    /// The folder the binaries live in: `$NSH_TESTBIN_DIR`, else the build script's default
    /// (`$NSH_CACHE_DIR/testbin`, `$XDG_CACHE_HOME/nsh-mesh/testbin` or `~/.cache/nsh-mesh/testbin`).
    pub fn dir() -> PathBuf {
        if let Some(dir) = std::env::var_os("NSH_TESTBIN_DIR") {
            return dir.into();
        }
        let cache = std::env::var_os("NSH_CACHE_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                std::env::var_os("XDG_CACHE_HOME")
                    .map(PathBuf::from)
                    .or_else(|| {
                        std::env::var_os("HOME").map(|home| Path::new(&home).join(".cache"))
                    })
                    .unwrap_or_else(std::env::temp_dir)
                    .join("nsh-mesh")
            });
        cache.join("testbin")
    }

    /// Finds every binary, or names the one that is missing and the command that builds it.
    pub fn locate() -> Result<Self> {
        let dir = Self::dir();
        let find = |name: &'static str| -> Result<PathBuf> {
            let path = dir.join(name);
            if path.is_file() {
                Ok(path)
            } else {
                Err(Error::MissingBinary {
                    name,
                    path,
                    fix: BUILD_FIX,
                })
            }
        };
        Ok(Self {
            etcd: find("etcd")?,
            kube_apiserver: find("kube-apiserver")?,
            kube_controller_manager: find("kube-controller-manager")?,
            kubectl: find("kubectl")?,
            helm: find("helm")?,
        })
    }
}

/// Path of `kubeconform`, built by `scripts/testbin.sh` next to the others.
pub fn kubeconform() -> Result<PathBuf> {
    let path = Binaries::dir().join("kubeconform");
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::MissingBinary {
            name: "kubeconform",
            path,
            fix: BUILD_FIX,
        })
    }
}

/// Path of `redis-server`, from `PATH` or Debian's location.
pub(crate) fn redis_server() -> Result<PathBuf> {
    let candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join("redis-server"))
                .collect()
        })
        .unwrap_or_default();
    candidates
        .into_iter()
        .chain([PathBuf::from("/usr/bin/redis-server")])
        .find(|path| path.is_file())
        .ok_or_else(|| Error::MissingBinary {
            name: "redis-server",
            path: PathBuf::from("/usr/bin/redis-server"),
            fix: "apt-get install -y redis-server (or scripts/test.sh, which installs it)",
        })
}
