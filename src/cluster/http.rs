//! The HTTP stack under the runner's `kube::Client`: kube's default stack (its `ClientBuilder`'s
//! `TryFrom<Config>`: TLS from the kubeconfig, connect/read/write timeouts, the base URI, authentication and
//! the extra headers) with one difference, a bounded pool of idle connections.
//!
//! kube speaks HTTP/1.1 to the API server, one request per connection at a time, so the pool grows to the
//! largest number of requests ever in flight at once (50 namespaces restarting their workloads together,
//! plus one connection per watch), and hyper keeps every connection that goes idle for 90 seconds, each
//! with its buffers, its dispatch channel and its task: 157 connections were open in the middle of a
//! 1,000-namespace run at concurrency 50, about 3 MB of the runner's heap. client-go keeps at most 25 idle
//! connections per API server (`idleConnsPerHost`, k8s.io/client-go/transport/cache.go), but it speaks
//! HTTP/2 to a real API server, where connections are few; here, at 25, the bursts of a wide fleet closed
//! and reopened connections all run long, and both sides' CPU grew by about a fifth (BENCHMARKS.md §2).
//! With 64, a concurrency-50 run keeps about 90 sockets.
//!
//! kube's tracing layer (a debug-level span per HTTP request, shown only with `RUST_LOG=kube=debug`) is not
//! added.
//! A kubeconfig that names a proxy keeps kube's own stack (its proxy connectors), with its unbounded pool.

use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use kube::client::ConfigExt;
use tower::ServiceBuilder;

/// Idle connections kept to the API server.
pub const IDLE_CONNECTIONS: usize = 64;

/// The client for `config`.
pub fn client(config: kube::Config) -> Result<kube::Client, kube::Error> {
    if config.proxy_url.is_some() {
        return kube::Client::try_from(config);
    }
    // rustls takes the process's default crypto provider (kube installs the same one).
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    let mut connector =
        hyper_timeout::TimeoutConnector::new(config.rustls_https_connector_with_connector(http)?);
    connector.set_connect_timeout(config.connect_timeout);
    connector.set_read_timeout(config.read_timeout);
    connector.set_write_timeout(config.write_timeout);
    connector.set_reset_reader_on_write(config.reset_reader_on_write);
    let pool = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(IDLE_CONNECTIONS)
        .build(connector);
    let service = ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(config.auth_layer()?)
        .layer(config.extra_headers_layer()?)
        .map_err(tower::BoxError::from)
        .service(pool);
    Ok(kube::Client::new(service, config.default_namespace))
}
