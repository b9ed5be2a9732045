//! Starts the harness's control plane (and a Redis) and keeps them up until Ctrl-C, so you can
//! poke at them by hand:
//!
//! ```sh
//! scripts/testbin.sh && cargo run -p nsh-testenv --example control-plane
//! kubectl --kubeconfig <printed path> get --raw /version
//! ```
#![allow(clippy::print_stdout)]

use nsh_testenv::{ControlPlane, RedisServer};

#[tokio::main]
async fn main() -> Result<(), nsh_testenv::Error> {
    let plane = ControlPlane::start().await?;
    let redis = RedisServer::start()?;
    let version = plane.client().await?.apiserver_version().await?;
    println!(
        "kube-apiserver {} at {}",
        version.git_version,
        plane.server_url()
    );
    println!("kubeconfig:     {}", plane.kubeconfig_path().display());
    println!("redis:          {}", redis.url());
    println!("press Ctrl-C to stop; everything is removed on exit");
    tokio::signal::ctrl_c()
        .await
        .map_err(nsh_testenv::Error::io("wait for Ctrl-C"))?;
    Ok(())
}
