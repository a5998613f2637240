//! Controllers: what kube-controller-manager, the kubelet, Istio's injector, istio-cni, ztunnel and istiod
//! do to the objects.

use std::sync::Arc;

use crate::Sim;

/// Creates the system objects the settings ask for (nodes, Istio install).
pub fn install(_sim: &Sim) -> anyhow::Result<()> {
    Ok(())
}

/// Starts the controller loops.
pub fn spawn(_sim: Arc<Sim>) -> Vec<tokio::task::JoinHandle<()>> {
    Vec::new()
}
