//! All Kubernetes access of ambient-migrate: the client built from a kubeconfig or the in-cluster
//! environment, typed and dynamic resources, idempotent label patches and restarts, watches with deadlines,
//! bounded retries, snapshot reading and Kubernetes Events.
//!
//! Retry policy (docs/design.md §2 "every retry is bounded"): kube's built-in retry layer is switched off
//! (`Config::default_retry = false`), because its `server_retry` policy goes up to 15 retries with delays
//! of up to 1000 s and would hide a failing API server far beyond our deadlines. Instead every
//! request-response call goes through [`Cluster::call`]: each attempt runs under the request timeout, and
//! transient failures (HTTP 429/500/502/503/504, connection errors, attempt timeouts) are retried with
//! `backon`'s exponential backoff (100 ms doubling, at most 2 s between attempts, jitter, 5 retries).
//! Any other 4xx fails at once; 409 surfaces as [`ClusterError::Conflict`] so fenced writes can stop.

mod access;
mod cache;
mod dynamic;
mod events;
mod http;
mod labels;
mod restart;
mod snapshot;
mod wait;
mod wire;

use std::fmt::Debug;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

use backon::{ExponentialBuilder, Retryable};
use kube::api::{DeleteParams, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};

pub use cache::{CacheState, FleetCache, NamespaceLabels};
pub use dynamic::{DynKind, with_types};
pub(crate) use events::hostname;
pub use events::{EVENTS_NAMESPACE, EventType};
pub use labels::{LabelOutcome, LabelTarget, LabelsRead, LabelsSet};
pub use restart::{RESTARTED_AT_ANNOTATION, RestartOutcome, WorkloadKind, restarted_at_now};
pub use wait::{Check, PodsWait, RolloutDone};

/// The field manager of every write the tool makes (shown in `managedFields`).
pub const FIELD_MANAGER: &str = "ambient-migrate";
/// Label put on every object the tool creates.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Value of [`MANAGED_BY_LABEL`].
pub const MANAGED_BY_VALUE: &str = "ambient-migrate";
/// Label naming why the tool created an object (`bridge`, `twin`, `backup`, `journal`, `probe`).
pub const ROLE_LABEL: &str = "ambient-migrate.io/role";

/// Errors of cluster access. Each names the request and the object, and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The kubeconfig file could not be read or parsed.
    #[error(
        "cannot read kubeconfig {path}: {message}; check --kubeconfig (or KUBECONFIG) points at a valid file"
    )]
    Kubeconfig { path: PathBuf, message: String },
    /// The kubeconfig has no usable context of that name, or it is incomplete.
    #[error(
        "kubeconfig {path}: cannot use context {context:?}: {message}; list contexts with `kubectl config get-contexts` and pass one with --context"
    )]
    Context {
        path: String,
        context: Option<String>,
        message: String,
    },
    /// Neither KUBECONFIG/~/.kube/config nor the in-cluster service account gave a configuration.
    #[error(
        "no Kubernetes configuration found ({message}); pass --kubeconfig, set KUBECONFIG, or run inside a pod with a service account"
    )]
    Infer { message: String },
    /// The HTTP client could not be built from the configuration (TLS, proxy, auth plugin).
    #[error(
        "cannot build the Kubernetes client: {message}; check the cluster and user entries of the kubeconfig"
    )]
    Client { message: String },
    /// The object does not exist.
    #[error("{what}: not found")]
    NotFound { what: String },
    /// HTTP 409: stale resourceVersion or the object already exists.
    #[error("{what}: conflict ({reason}): {message}")]
    Conflict {
        what: String,
        reason: String,
        message: String,
    },
    /// Any other status from the API server (after retries for transient ones).
    #[error("{what}: API server answered {code} {reason}: {message}{hint}")]
    Api {
        what: String,
        code: u16,
        reason: String,
        message: String,
        hint: &'static str,
    },
    /// Transport-level failure (connection refused/reset, TLS, body decoding) after retries.
    #[error("{what}: cannot reach the API server: {message}; check the network path to the cluster")]
    Transport { what: String, message: String },
    /// A single request did not answer within the request timeout (after retries).
    #[error(
        "{what}: no answer within {after:?} (tried {attempts} times); the API server is slow or unreachable"
    )]
    RequestTimeout {
        what: String,
        after: Duration,
        attempts: usize,
    },
    /// The request was not sent (or not retried) because the run can no longer prove it holds the fleet
    /// Lease: a write after that point could land after another run took over.
    #[error("{what}: not sent: the fleet Lease can no longer be proven held; stopping before it")]
    Fenced { what: String },
    /// A wait reached its deadline; `last` is the last observed state.
    #[error("{what}: timed out after {after:?}; last observed: {last}")]
    Timeout {
        what: String,
        after: Duration,
        last: String,
    },
    /// A wait ended in a state that cannot become good (rollout deadline exceeded, object deleted).
    #[error("{what}: {message}")]
    WaitFailed { what: String, message: String },
    /// A response or object could not be (de)serialised.
    #[error("{what}: unexpected object shape: {message}")]
    Decode { what: String, message: String },
    /// The request was refused before it was sent (for example restarting a paused Deployment).
    #[error("{what}: {message}")]
    Refused { what: String, message: String },
}

impl ClusterError {
    /// True for HTTP 404.
    pub fn is_not_found(&self) -> bool {
        matches!(self, ClusterError::NotFound { .. })
    }

    /// True for HTTP 422 (the object or the patch was refused as invalid, including a JSON patch whose
    /// `test` operation failed).
    pub fn is_invalid(&self) -> bool {
        matches!(self, ClusterError::Api { code: 422, .. })
    }

    /// True for HTTP 409 (conflict or already exists).
    pub fn is_conflict(&self) -> bool {
        matches!(self, ClusterError::Conflict { .. })
    }

    /// True for a 409 whose reason is `AlreadyExists` (a create of an existing object).
    pub fn is_already_exists(&self) -> bool {
        matches!(self, ClusterError::Conflict { reason, .. } if reason == "AlreadyExists")
    }

    /// True when the failure may go away by itself (used by callers that loop at a higher level).
    pub fn is_transient(&self) -> bool {
        match self {
            ClusterError::Api { code, .. } => is_transient_code(*code),
            ClusterError::Transport { .. } | ClusterError::RequestTimeout { .. } => true,
            _ => false,
        }
    }

    pub(crate) fn from_kube(what: &str, e: kube::Error) -> Self {
        let what = what.to_string();
        match e {
            kube::Error::Api(s) => {
                if s.code == 404 {
                    ClusterError::NotFound { what }
                } else if s.code == 409 {
                    ClusterError::Conflict {
                        what,
                        reason: s.reason.clone(),
                        message: s.message.clone(),
                    }
                } else {
                    let hint = match s.code {
                        401 => "; the credentials in the kubeconfig were rejected",
                        403 => "; grant the verb to the runner's identity (RBAC: ci/k8s/clusterrole.yaml)",
                        422 => "; the object was rejected as invalid",
                        _ => "",
                    };
                    ClusterError::Api {
                        what,
                        code: s.code,
                        reason: s.reason.clone(),
                        message: s.message.clone(),
                        hint,
                    }
                }
            }
            kube::Error::SerdeError(e) => ClusterError::Decode {
                what,
                message: e.to_string(),
            },
            other => ClusterError::Transport {
                what,
                message: other.to_string(),
            },
        }
    }
}

fn is_transient_code(code: u16) -> bool {
    matches!(code, 429 | 500 | 502 | 503 | 504)
}

/// One failed attempt inside [`Cluster::call`].
enum Attempt {
    Kube(kube::Error),
    TimedOut,
    Fenced,
}

impl Attempt {
    fn transient(&self) -> bool {
        match self {
            Attempt::TimedOut => true,
            Attempt::Fenced => false,
            Attempt::Kube(kube::Error::Api(s)) => is_transient_code(s.code),
            Attempt::Kube(
                kube::Error::HyperError(_) | kube::Error::Service(_) | kube::Error::ReadEvents(_),
            ) => true,
            Attempt::Kube(_) => false,
        }
    }
}

/// How the runner talks to the cluster.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Server-side dry run: every mutation is sent with `dryRun=All` and nothing is persisted.
    pub dry_run: bool,
    /// Field manager of every write.
    pub field_manager: String,
    /// Deadline of one request-response attempt (watches are bounded by their own deadlines).
    pub request_timeout: Duration,
    /// Retries of a transient failure (after the first attempt).
    pub max_retries: usize,
    /// First backoff delay; doubles each retry.
    pub min_retry_delay: Duration,
    /// Upper bound of one backoff delay.
    pub max_retry_delay: Duration,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            dry_run: false,
            field_manager: FIELD_MANAGER.to_string(),
            request_timeout: Duration::from_secs(20),
            max_retries: 5,
            min_retry_delay: Duration::from_millis(100),
            max_retry_delay: Duration::from_secs(2),
        }
    }
}

/// Where the client configuration comes from (`--kubeconfig`, `--context`).
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    /// A kubeconfig file; when `None`, `KUBECONFIG`/`~/.kube/config`, then the in-cluster service account.
    pub kubeconfig: Option<PathBuf>,
    /// A context of the kubeconfig; the current context when `None`.
    pub context: Option<String>,
}

/// A handle to the cluster: a kube client plus the options every call obeys. Cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    client: kube::Client,
    opts: Arc<ClusterOptions>,
    /// API server URL (for reports); empty for clients built with `from_client`.
    server: Arc<str>,
    /// Until when requests may be sent (see [`Cluster::fenced`]); `None` = no limit.
    fence: Option<Fence>,
    /// Namespaces [`Cluster::ensure_namespace`] found or created: the state namespace is checked once per
    /// run, not before every journal and backup write.
    ensured: Arc<std::sync::Mutex<std::collections::BTreeSet<String>>>,
}

/// What the fleet Lease proves right now, for [`Cluster::fenced`] (`None`: no Lease to prove, e.g. a dry
/// run).
pub type Fence = Arc<dyn Fn() -> Option<Proof> + Send + Sync>;

/// The state of the proof of holding the fleet Lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proof {
    /// Held until this instant unless renewed meanwhile (a renew moves it).
    Until(Instant),
    /// Someone else holds it: nothing may be sent any more.
    Lost,
}

/// Waits, at most `max_wait`, for the proof to reach past now: a proof that only expired (a slow renew)
/// may be refreshed by the renewer. `Ok(None)`: no limit; `Ok(Some(t))`: send, and give up the attempt at
/// `t`; `Err(())`: lost, or not refreshed in time.
async fn proof_to_send(fence: Option<&Fence>, max_wait: Duration) -> Result<Option<Instant>, ()> {
    let Some(f) = fence else { return Ok(None) };
    let waited_until = Instant::now() + max_wait;
    loop {
        match f() {
            None => return Ok(None),
            Some(Proof::Lost) => return Err(()),
            Some(Proof::Until(t)) if t > Instant::now() => return Ok(Some(t)),
            Some(Proof::Until(_)) if Instant::now() >= waited_until => return Err(()),
            Some(Proof::Until(_)) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

impl Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").field("opts", &self.opts).finish()
    }
}

impl Cluster {
    /// Builds the client from `--kubeconfig`/`--context` when given, else from `Config::infer`
    /// (KUBECONFIG, ~/.kube/config, in-cluster).
    pub async fn connect(conn: &ConnectOptions, opts: ClusterOptions) -> Result<Self, ClusterError> {
        let mut config = load_config(conn).await?;
        let server: Arc<str> = Arc::from(config.cluster_url.to_string());
        config.default_retry = false;
        // kube sends no User-Agent of its own; name ourselves so audit logs and request accounting can
        // tell the runner's requests from kubectl's.
        config.headers.push((
            reqwest::header::USER_AGENT,
            reqwest::header::HeaderValue::from_static(concat!("ambient-migrate/", env!("CARGO_PKG_VERSION"))),
        ));
        let client = http::client(config).map_err(|e| ClusterError::Client {
            message: e.to_string(),
        })?;
        let mut c = Cluster::from_client(client, opts);
        c.server = server;
        Ok(c)
    }

    /// The API server URL this handle talks to (empty when built from a bare client).
    pub fn server_url(&self) -> &str {
        &self.server
    }

    /// Wraps an existing client (tests, or callers with their own tower stack).
    pub fn from_client(client: kube::Client, opts: ClusterOptions) -> Self {
        Cluster {
            client,
            opts: Arc::new(opts),
            server: Arc::from(""),
            fence: None,
            ensured: Default::default(),
        }
    }

    /// The same connection with a different dry-run setting.
    pub fn with_dry_run(&self, dry_run: bool) -> Self {
        let mut opts = (*self.opts).clone();
        opts.dry_run = dry_run;
        Cluster {
            client: self.client.clone(),
            opts: Arc::new(opts),
            server: self.server.clone(),
            fence: self.fence.clone(),
            ensured: self.ensured.clone(),
        }
    }

    /// The same connection, fenced by the fleet Lease: no request is sent while `fence` cannot prove the
    /// Lease held (a proof that only expired is waited for, at most one request timeout, in case the
    /// renewer refreshes it; a lost Lease stops at once), each attempt is cut off when the proof ends, and
    /// no retry goes past it. Without this a mutation checked against the Lease could still be retried for
    /// minutes (up to `max_retries` attempts of `request_timeout`) while the Lease lasts seconds.
    pub fn fenced(&self, fence: Fence) -> Self {
        Cluster {
            fence: Some(fence),
            ..self.clone()
        }
    }

    /// The underlying kube client.
    pub fn client(&self) -> &kube::Client {
        &self.client
    }

    /// The options in force.
    pub fn options(&self) -> &ClusterOptions {
        &self.opts
    }

    /// True when mutations are server-side dry runs.
    pub fn dry_run(&self) -> bool {
        self.opts.dry_run
    }

    /// Patch parameters: our field manager, `dryRun=All` in dry-run mode.
    pub fn patch_params(&self) -> PatchParams {
        PatchParams {
            dry_run: self.opts.dry_run,
            field_manager: Some(self.opts.field_manager.clone()),
            ..Default::default()
        }
    }

    /// Create/replace parameters: our field manager, `dryRun=All` in dry-run mode.
    pub fn post_params(&self) -> PostParams {
        PostParams {
            dry_run: self.opts.dry_run,
            field_manager: Some(self.opts.field_manager.clone()),
        }
    }

    /// Delete parameters: background propagation, `dryRun=All` in dry-run mode.
    pub fn delete_params(&self) -> DeleteParams {
        let dp = DeleteParams::background();
        if self.opts.dry_run { dp.dry_run() } else { dp }
    }

    /// A typed API for a namespaced kind.
    pub fn namespaced<K>(&self, ns: &str) -> kube::Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        kube::Api::namespaced(self.client.clone(), ns)
    }

    /// A typed API for a cluster-scoped kind (or a namespaced kind across all namespaces).
    pub fn all<K>(&self) -> kube::Api<K>
    where
        K: kube::Resource,
        <K as kube::Resource>::DynamicType: Default,
    {
        kube::Api::all(self.client.clone())
    }

    /// Runs one request-response call with the request timeout and bounded retries of transient
    /// failures. `what` names the request in errors ("get Namespace shop").
    pub async fn call<T, F, Fut>(&self, what: &str, mut f: F) -> Result<T, ClusterError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, kube::Error>>,
    {
        let timeout = self.opts.request_timeout;
        let attempts = std::sync::atomic::AtomicUsize::new(0);
        let fence = self.fence.clone();
        let op = || {
            attempts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            // A request future sends nothing until polled: it is dropped unsent when the proof is missing.
            let fut = f();
            let fence = fence.clone();
            async move {
                // The attempt's own deadline, cut at the end of the Lease proof when fenced.
                let Ok(until) = proof_to_send(fence.as_ref(), timeout).await else {
                    return Err(Attempt::Fenced);
                };
                let left = until.map(|u| u.saturating_duration_since(Instant::now()));
                let limit = left.map_or(timeout, |l| l.min(timeout));
                match tokio::time::timeout(limit, fut).await {
                    Ok(r) => r.map_err(Attempt::Kube),
                    Err(_) if Some(limit) == left && limit < timeout => Err(Attempt::Fenced),
                    Err(_) => Err(Attempt::TimedOut),
                }
            }
        };
        let backoff = ExponentialBuilder::default()
            .with_min_delay(self.opts.min_retry_delay)
            .with_max_delay(self.opts.max_retry_delay)
            .with_max_times(self.opts.max_retries)
            .with_jitter();
        let res = op
            .retry(backoff)
            .when(Attempt::transient)
            .notify(|e, dur| {
                let msg = match e {
                    Attempt::Kube(k) => k.to_string(),
                    Attempt::TimedOut => format!("no answer within {timeout:?}"),
                    Attempt::Fenced => "fleet Lease proof ended".to_string(),
                };
                tracing::warn!(request = what, error = %msg, retry_in = ?dur, "transient API failure, retrying");
            })
            .await;
        res.map_err(|e| match e {
            Attempt::Kube(k) => ClusterError::from_kube(what, k),
            Attempt::TimedOut => ClusterError::RequestTimeout {
                what: what.to_string(),
                after: timeout,
                attempts: attempts.load(std::sync::atomic::Ordering::Relaxed),
            },
            Attempt::Fenced => ClusterError::Fenced {
                what: what.to_string(),
            },
        })
    }

    /// `get` returning `None` on 404.
    pub async fn get_opt<K>(
        &self,
        api: &kube::Api<K>,
        what: &str,
        name: &str,
    ) -> Result<Option<K>, ClusterError>
    where
        K: kube::Resource + Clone + serde::de::DeserializeOwned + Debug,
    {
        self.call(what, || api.get_opt(name)).await
    }

    /// Ensures a namespace exists (the state namespace). A dry-run `Cluster` only sends a dry-run
    /// create, so state writers (journal, backup, lease) skip their writes in dry-run mode instead.
    pub async fn ensure_namespace(&self, name: &str) -> Result<(), ClusterError> {
        use k8s_openapi::api::core::v1::Namespace;
        let known = |c: &Cluster| c.ensured.lock().unwrap_or_else(|e| e.into_inner()).contains(name);
        if known(self) {
            return Ok(());
        }
        let remember = |c: &Cluster| {
            c.ensured
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(name.to_string());
        };
        let api: kube::Api<Namespace> = self.all();
        let what = format!("get Namespace {name}");
        if self.get_opt(&api, &what, name).await?.is_some() {
            remember(self);
            return Ok(());
        }
        let ns = Namespace {
            metadata: kube::api::ObjectMeta {
                name: Some(name.to_string()),
                labels: Some([(MANAGED_BY_LABEL.to_string(), MANAGED_BY_VALUE.to_string())].into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let pp = self.post_params();
        match self
            .call(&format!("create Namespace {name}"), || api.create(&pp, &ns))
            .await
        {
            Ok(_) => {
                if !self.dry_run() {
                    remember(self);
                }
                Ok(())
            }
            Err(e) if e.is_already_exists() => {
                remember(self);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

async fn load_config(conn: &ConnectOptions) -> Result<kube::Config, ClusterError> {
    let kco = KubeConfigOptions {
        context: conn.context.clone(),
        ..Default::default()
    };
    match &conn.kubeconfig {
        Some(path) => config_from_file(path, &kco).await,
        None if conn.context.is_some() => {
            // A context without a file: the default kubeconfig (KUBECONFIG or ~/.kube/config).
            let kc = Kubeconfig::read().map_err(|e| ClusterError::Kubeconfig {
                path: PathBuf::from(std::env::var("KUBECONFIG").unwrap_or_else(|_| "~/.kube/config".into())),
                message: e.to_string(),
            })?;
            kube::Config::from_custom_kubeconfig(kc, &kco)
                .await
                .map_err(|e| ClusterError::Context {
                    path: "KUBECONFIG/~/.kube/config".into(),
                    context: conn.context.clone(),
                    message: e.to_string(),
                })
        }
        None => kube::Config::infer().await.map_err(|e| ClusterError::Infer {
            message: e.to_string(),
        }),
    }
}

async fn config_from_file(path: &Path, kco: &KubeConfigOptions) -> Result<kube::Config, ClusterError> {
    let kc = Kubeconfig::read_from(path).map_err(|e| ClusterError::Kubeconfig {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    kube::Config::from_custom_kubeconfig(kc, kco)
        .await
        .map_err(|e| ClusterError::Context {
            path: path.display().to_string(),
            context: kco.context.clone(),
            message: e.to_string(),
        })
}

/// Human-readable `kind ns/name` for error messages.
pub(crate) fn obj_name(kind: &str, ns: Option<&str>, name: &str) -> String {
    match ns {
        Some(ns) => format!("{kind} {ns}/{name}"),
        None => format!("{kind} {name}"),
    }
}
