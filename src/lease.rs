//! The fleet lock (docs/design.md §4): a `coordination.k8s.io/v1` Lease `ambient-migrate` in the state namespace.
//!
//! - [`acquire`] creates the Lease, takes it over when it is free (no holder) or expired (`renewTime +
//!   leaseDurationSeconds < now`), or fails with [`LeaseError::HeldBy`] **without writing anything**
//!   (upstream maps that to exit code 5).
//! - A background task renews it every `duration / 3` with a resourceVersion precondition (a replace, so a
//!   concurrent writer makes our renew fail with 409 instead of silently overwriting).
//! - Mutating code calls [`LeaseGuard::check`] before each mutation: it fails as soon as the lease cannot be
//!   proven held, i.e. another holder was seen, or no renew succeeded within the renew deadline
//!   (`2/3 * duration`, client-go's LeaseDuration/RenewDeadline ratio), measured on the local monotonic clock.
//! - [`LeaseGuard::release`] clears `holderIdentity` (keeping the object, like client-go's
//!   `ReleaseOnCancel`); dropping an unreleased guard stops renewing and releases in the background.
//! - Dry-run runs never write the Lease: [`acquire`] only checks that nobody else holds it.
//!
//! Identity: `<hostname>-<uuid>` (Argo Rollouts uses `hostname_<uuid>` so two processes on one host differ).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::ObjectMeta;
use tokio::time::Instant;

use crate::cluster::{Cluster, ClusterError, MANAGED_BY_LABEL, MANAGED_BY_VALUE};

/// Name of the fleet Lease.
pub const LEASE_NAME: &str = "ambient-migrate";

/// Lease errors.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// Another run holds the lease and it has not expired.
    #[error(
        "another ambient-migrate run holds Lease {namespace}/{name} (holder {holder}, last renewed {renew_time}); wait for it to finish, or delete the Lease if that run is known to be dead"
    )]
    HeldBy {
        namespace: String,
        name: String,
        holder: String,
        renew_time: String,
    },
    /// We cannot prove we still hold the lease: stop mutating.
    #[error("lost Lease {namespace}/{name}: {reason}; stopping before the next mutation, rerun to resume")]
    Lost {
        namespace: String,
        name: String,
        reason: String,
    },
    /// Cluster access failed.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
}

/// Lease settings.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    /// State namespace holding the Lease.
    pub namespace: String,
    /// Lease name.
    pub name: String,
    /// `leaseDurationSeconds` (renewed every third of it).
    pub duration: Duration,
    /// Holder identity (also the journal's run id).
    pub identity: String,
}

impl LeaseConfig {
    /// Defaults: Lease `ambient-migrate`, 30 s, identity `<hostname>-<uuid>`.
    pub fn new(namespace: &str) -> Self {
        LeaseConfig {
            namespace: namespace.to_string(),
            name: LEASE_NAME.to_string(),
            duration: Duration::from_secs(30),
            identity: new_identity(),
        }
    }
}

/// `<hostname>-<uuid>`.
pub fn new_identity() -> String {
    format!("{}-{}", crate::cluster::hostname(), uuid::Uuid::new_v4())
}

#[derive(Debug)]
struct State {
    /// Start of the last successful renew (monotonic).
    renewed_at: Instant,
    /// Last time the stored record was seen naming us (a renew or an ownership read).
    confirmed_at: Instant,
    lost: Option<String>,
}

/// Proof of holding the fleet Lease. Check it before every mutation.
pub struct LeaseGuard {
    cluster: Cluster,
    cfg: LeaseConfig,
    state: Arc<Mutex<State>>,
    renewer: Option<tokio::task::JoinHandle<()>>,
    released: bool,
    virtual_only: bool,
}

impl std::fmt::Debug for LeaseGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseGuard")
            .field("cfg", &self.cfg)
            .field("virtual_only", &self.virtual_only)
            .finish()
    }
}

fn lease_time(l: &Lease) -> Option<jiff::Timestamp> {
    l.spec.as_ref()?.renew_time.as_ref().map(|t| t.0)
}

fn holder(l: &Lease) -> Option<String> {
    l.spec.as_ref()?.holder_identity.clone().filter(|h| !h.is_empty())
}

fn expired(l: &Lease, now: jiff::Timestamp) -> bool {
    let Some(spec) = l.spec.as_ref() else { return true };
    let Some(renew) = spec.renew_time.as_ref().or(spec.acquire_time.as_ref()) else {
        return true;
    };
    let dur = i64::from(spec.lease_duration_seconds.unwrap_or(0));
    // A record's times are input: one near the end of time must not overflow (it is then never expired).
    renew
        .0
        .checked_add(jiff::SignedDuration::from_secs(dur))
        .is_ok_and(|end| end < now)
}

/// How long a sighting of the stored record naming us counts as proof of ownership for a mutation
/// ([`LeaseGuard::check_held`] reads the record again after that): bounds how long writes go on after
/// someone else overwrote the Lease.
pub const OWNERSHIP_FRESH: Duration = Duration::from_millis(250);

/// Longest a takeover waits to confirm that another holder's Lease has expired (a record can claim any
/// `leaseDurationSeconds`; a dead runner's Lease must not block the fleet for longer than this).
const MAX_CONFIRM: Duration = Duration::from_secs(300);

/// How long to watch another holder's record, unchanged, before taking it over: its own
/// `leaseDurationSeconds`, bounded by [`MAX_CONFIRM`].
fn confirm_period(l: &Lease) -> Duration {
    let secs = l
        .spec
        .as_ref()
        .and_then(|s| s.lease_duration_seconds)
        .unwrap_or(0);
    Duration::from_secs(u64::try_from(secs).unwrap_or(0)).min(MAX_CONFIRM)
}

/// A Lease held by someone else whose `renewTime` looks expired by our wall clock: that judgement uses the
/// other runner's clock (it wrote `renewTime`), so a holder whose clock runs behind ours would look expired
/// while it still renews. As client-go's leader election does (`observedTime` in
/// `tools/leaderelection/leaderelection.go`: expiry is `observedTime + leaseDuration` on the local clock),
/// the takeover waits one lease duration, measured locally, and proceeds only if the record did not change
/// meanwhile (same `resourceVersion`); any change means a live holder. Returns the record to replace.
async fn confirm_expired(
    cluster: &Cluster,
    api: &kube::Api<Lease>,
    cfg: &LeaseConfig,
    seen: Lease,
) -> Result<Lease, LeaseError> {
    let wait = confirm_period(&seen);
    tracing::info!(
        holder = holder(&seen).unwrap_or_default(),
        ?wait,
        "the fleet Lease looks expired; watching it for one lease duration before taking it over"
    );
    tokio::time::sleep(wait).await;
    let what = format!("get Lease {}/{}", cfg.namespace, cfg.name);
    let now = cluster.call(&what, || api.get(&cfg.name)).await?;
    if now.metadata.resource_version != seen.metadata.resource_version {
        // Another holder wrote it meanwhile: it is alive, whatever its renewTime says. Released (or ours):
        // take it over with the precondition of what we just read, so a concurrent writer still makes our
        // replace fail with 409.
        return match holder(&now) {
            Some(h) if h != cfg.identity => Err(held_by(cfg, &now)),
            _ => Ok(now),
        };
    }
    Ok(seen)
}

fn held_by(cfg: &LeaseConfig, l: &Lease) -> LeaseError {
    LeaseError::HeldBy {
        namespace: cfg.namespace.clone(),
        name: cfg.name.clone(),
        holder: holder(l).unwrap_or_default(),
        renew_time: lease_time(l)
            .map(|t| t.to_string())
            .unwrap_or_else(|| "never".into()),
    }
}

fn duration_secs(d: Duration) -> i32 {
    i32::try_from(d.as_secs().max(1)).unwrap_or(i32::MAX)
}

/// Acquires the fleet Lease (see the module docs). Writes nothing when another unexpired holder has it.
pub async fn acquire(cluster: &Cluster, cfg: LeaseConfig) -> Result<LeaseGuard, LeaseError> {
    let api: kube::Api<Lease> = cluster.namespaced(&cfg.namespace);
    let what = format!("get Lease {}/{}", cfg.namespace, cfg.name);
    let existing = match cluster.get_opt(&api, &what, &cfg.name).await {
        Ok(l) => l,
        // The state namespace may not exist yet: no Lease.
        Err(e) if e.is_not_found() => None,
        Err(e) => return Err(e.into()),
    };
    let now = jiff::Timestamp::now();
    let existing = match existing {
        Some(l) if holder(&l).is_some_and(|h| h != cfg.identity) && !expired(&l, now) => {
            return Err(held_by(&cfg, &l));
        }
        Some(l) if holder(&l).is_some_and(|h| h != cfg.identity) => {
            Some(confirm_expired(cluster, &api, &cfg, l).await?)
        }
        other => other,
    };
    // The proof of holding starts when our write is sent, after any confirmation wait.
    let start = Instant::now();
    let now = jiff::Timestamp::now();
    if cluster.dry_run() {
        tracing::info!(lease = %cfg.name, "dry run: the Lease is free; not writing it");
        return Ok(LeaseGuard {
            cluster: cluster.clone(),
            cfg,
            state: Arc::new(Mutex::new(State {
                renewed_at: start,
                confirmed_at: start,
                lost: None,
            })),
            renewer: None,
            released: false,
            virtual_only: true,
        });
    }
    let micro = MicroTime(now);
    let written = match existing {
        None => {
            cluster.ensure_namespace(&cfg.namespace).await?;
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(cfg.name.clone()),
                    namespace: Some(cfg.namespace.clone()),
                    labels: Some([(MANAGED_BY_LABEL.to_string(), MANAGED_BY_VALUE.to_string())].into()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(cfg.identity.clone()),
                    lease_duration_seconds: Some(duration_secs(cfg.duration)),
                    acquire_time: Some(micro.clone()),
                    renew_time: Some(micro),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            let pp = cluster.post_params();
            match cluster
                .call(&format!("create Lease {}/{}", cfg.namespace, cfg.name), || {
                    api.create(&pp, &lease)
                })
                .await
            {
                Ok(l) => l,
                Err(e) if e.is_already_exists() => {
                    let l = cluster.call(&what, || api.get(&cfg.name)).await?;
                    if holder(&l).as_deref() == Some(cfg.identity.as_str()) {
                        l
                    } else {
                        return Err(held_by(&cfg, &l));
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        Some(mut l) => {
            let ours = holder(&l).as_deref() == Some(cfg.identity.as_str());
            let spec = l.spec.get_or_insert_with(Default::default);
            if !ours {
                spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
                spec.acquire_time = Some(micro.clone());
                tracing::info!(previous = ?spec.holder_identity, "taking over a free or expired Lease");
            }
            spec.holder_identity = Some(cfg.identity.clone());
            spec.lease_duration_seconds = Some(duration_secs(cfg.duration));
            spec.renew_time = Some(micro);
            let pp = cluster.post_params();
            match cluster
                .call(&format!("take over Lease {}/{}", cfg.namespace, cfg.name), || {
                    api.replace(&cfg.name, &pp, &l)
                })
                .await
            {
                Ok(l) => l,
                Err(e) if e.is_conflict() => {
                    // Someone else wrote it between our read and our write.
                    let l = cluster.call(&what, || api.get(&cfg.name)).await?;
                    if holder(&l).as_deref() == Some(cfg.identity.as_str()) {
                        l
                    } else {
                        return Err(held_by(&cfg, &l));
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
    };
    tracing::debug!(resource_version = ?written.metadata.resource_version, "Lease written");
    let state = Arc::new(Mutex::new(State {
        renewed_at: start,
        confirmed_at: start,
        lost: None,
    }));
    let renewer = tokio::spawn(renew_loop(cluster.clone(), cfg.clone(), state.clone()));
    tracing::info!(lease = %cfg.name, holder = %cfg.identity, "acquired the fleet Lease");
    Ok(LeaseGuard {
        cluster: cluster.clone(),
        cfg,
        state,
        renewer: Some(renewer),
        released: false,
        virtual_only: false,
    })
}

/// What one renew attempt proved.
#[derive(Debug, PartialEq, Eq)]
enum Renewal {
    /// The Lease carries our renew: the proof is fresh.
    Renewed,
    /// Still ours, but this attempt's renew is not what is stored: try again next period (the proof ages).
    NotYet,
    /// Someone else holds it: stop mutating.
    Lost(String),
}

/// After a 409 on renew: the stored record decides. Our identity with the `renewTime` we sent means our
/// write landed (its answer was lost and the retry conflicted with it); our identity with another time is
/// not a loss (only we write our identity) but not a renew either; another holder is a loss.
fn after_conflict(stored: &Lease, identity: &str, sent: &MicroTime) -> Renewal {
    match holder(stored) {
        Some(h) if h == identity => {
            if stored.spec.as_ref().and_then(|s| s.renew_time.as_ref()) == Some(sent) {
                Renewal::Renewed
            } else {
                Renewal::NotYet
            }
        }
        other => Renewal::Lost(format!(
            "a concurrent write to the Lease won (409 Conflict; holder now {:?})",
            other.unwrap_or_default()
        )),
    }
}

async fn renew_loop(cluster: Cluster, cfg: LeaseConfig, state: Arc<Mutex<State>>) {
    let api: kube::Api<Lease> = cluster.namespaced(&cfg.namespace);
    let period = cfg.duration / 3;
    let what = format!("renew Lease {}/{}", cfg.namespace, cfg.name);
    loop {
        tokio::time::sleep(period).await;
        let attempt_start = Instant::now();
        let res = async {
            let mut l = cluster.call(&what, || api.get(&cfg.name)).await?;
            // Only we write our identity, so a changed resourceVersion with our identity is our own
            // earlier write (for example a renew retried after a lost answer).
            if holder(&l).as_deref() != Some(cfg.identity.as_str()) {
                return Ok(Renewal::Lost(format!(
                    "the Lease was written by someone else (holder now {:?})",
                    holder(&l).unwrap_or_default()
                )));
            }
            let sent = MicroTime(jiff::Timestamp::now());
            l.spec.get_or_insert_with(Default::default).renew_time = Some(sent.clone());
            let pp = cluster.post_params();
            match cluster.call(&what, || api.replace(&cfg.name, &pp, &l)).await {
                Ok(_) => Ok(Renewal::Renewed),
                // A 409 also answers a retry whose first attempt landed but whose answer was lost: read
                // the record again before concluding anything.
                Err(e) if e.is_conflict() => {
                    let stored = cluster.call(&what, || api.get(&cfg.name)).await?;
                    Ok(after_conflict(&stored, &cfg.identity, &sent))
                }
                Err(e) => Err(e),
            }
        }
        .await;
        let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
        match res {
            Ok(Renewal::Renewed) => {
                st.renewed_at = attempt_start;
                st.confirmed_at = attempt_start;
            }
            Ok(Renewal::NotYet) => {
                tracing::warn!(lease = %cfg.name, "renew lost a race with our own earlier write; retrying")
            }
            Ok(Renewal::Lost(reason)) => {
                tracing::error!(lease = %cfg.name, %reason, "lost the fleet Lease");
                st.lost = Some(reason);
                return;
            }
            Err(e) => {
                tracing::warn!(lease = %cfg.name, error = %e, "could not renew the fleet Lease; retrying")
            }
        }
    }
}

impl LeaseGuard {
    /// Ok while the lease is provably held: no other holder seen and a renew succeeded within the renew
    /// deadline (2/3 of the lease duration).
    pub fn check(&self) -> Result<(), LeaseError> {
        if self.virtual_only {
            return Ok(());
        }
        let lost = |reason: String| LeaseError::Lost {
            namespace: self.cfg.namespace.clone(),
            name: self.cfg.name.clone(),
            reason,
        };
        if self.released {
            return Err(lost("already released".into()));
        }
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = &st.lost {
            return Err(lost(r.clone()));
        }
        let deadline = self.cfg.duration * 2 / 3;
        let since = st.renewed_at.elapsed();
        if since > deadline {
            return Err(lost(format!(
                "no successful renew for {since:?} (renew deadline {deadline:?})"
            )));
        }
        Ok(())
    }

    /// The proof for [`Cluster::fenced`]: until one lease duration after the last successful renew (no
    /// other runner can have taken the Lease over by then: its takeover waits for the record to expire and
    /// then watches it unchanged for another duration), lost once someone else holds it, no limit for a dry
    /// run's virtual lease. A stale proof (2/3 of the duration) does not fence: [`LeaseGuard::check_held`]
    /// waits for the renewer before a mutation instead, and an expired one is waited for by the request.
    pub fn fence(&self) -> crate::cluster::Fence {
        if self.virtual_only {
            return Arc::new(|| None);
        }
        let state = self.state.clone();
        let deadline = self.cfg.duration;
        Arc::new(move || {
            let st = state.lock().unwrap_or_else(|e| e.into_inner());
            Some(if st.lost.is_some() {
                crate::cluster::Proof::Lost
            } else {
                crate::cluster::Proof::Until(st.renewed_at + deadline)
            })
        })
    }

    /// [`LeaseGuard::check`], giving a proof that has only gone stale up to one lease duration to be
    /// refreshed: a slow or failed renew (a slow apiserver, a short outage) does not mean that someone
    /// else holds the Lease. The renewer renews only a record that still names us, with that record's
    /// resourceVersion as precondition, so a renew that succeeds after the gap proves that nobody wrote
    /// the Lease meanwhile (a takeover needs a write, and only we write our identity); a record naming
    /// another holder fails at once. Nothing is mutated while the proof is stale: callers wait here.
    ///
    /// A record overwritten by someone else is noticed by the renewer only at its next renew (a third of
    /// the lease later); so that writes stop within [`OWNERSHIP_FRESH`] instead, the record is read again
    /// here when it was last seen naming us longer ago than that.
    pub async fn check_held(&self) -> Result<(), LeaseError> {
        let until = Instant::now() + self.cfg.duration;
        loop {
            let mut res = self.check();
            if res.is_ok() && !self.virtual_only {
                res = self.confirm_ownership().await;
            }
            let for_good = self.released
                || self.renewer.is_none()
                || self
                    .state
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .lost
                    .is_some();
            match res {
                Ok(()) => return Ok(()),
                Err(e) if for_good || Instant::now() >= until => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    /// Reads the record when it was last seen naming us more than [`OWNERSHIP_FRESH`] ago: another holder
    /// is a lost lease (for good); a failed read proves nothing (the caller may wait and try again).
    async fn confirm_ownership(&self) -> Result<(), LeaseError> {
        let fresh = self
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .confirmed_at
            .elapsed()
            <= OWNERSHIP_FRESH;
        if fresh {
            return Ok(());
        }
        let lost = |reason: String| LeaseError::Lost {
            namespace: self.cfg.namespace.clone(),
            name: self.cfg.name.clone(),
            reason,
        };
        let api: kube::Api<Lease> = self.cluster.namespaced(&self.cfg.namespace);
        let what = format!("get Lease {}/{}", self.cfg.namespace, self.cfg.name);
        let read_at = Instant::now();
        let l = match self.cluster.get_opt(&api, &what, &self.cfg.name).await {
            Ok(l) => l,
            Err(e) => return Err(lost(format!("cannot read the Lease to confirm we hold it: {e}"))),
        };
        let who = l.as_ref().and_then(holder);
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if who.as_deref() == Some(self.cfg.identity.as_str()) {
            st.confirmed_at = st.confirmed_at.max(read_at);
            return Ok(());
        }
        let reason = format!(
            "the Lease was written by someone else (holder now {:?})",
            who.unwrap_or_default()
        );
        st.lost = Some(reason.clone());
        Err(lost(reason))
    }

    /// The holder identity (the run id recorded in journals).
    pub fn identity(&self) -> &str {
        &self.cfg.identity
    }

    /// Stops renewing and clears the holder so the next run can start at once.
    pub async fn release(mut self) -> Result<(), LeaseError> {
        self.released = true;
        if let Some(t) = self.renewer.take() {
            t.abort();
        }
        if self.virtual_only {
            return Ok(());
        }
        release_lease(&self.cluster, &self.cfg).await
    }
}

async fn release_lease(cluster: &Cluster, cfg: &LeaseConfig) -> Result<(), LeaseError> {
    let api: kube::Api<Lease> = cluster.namespaced(&cfg.namespace);
    let what = format!("release Lease {}/{}", cfg.namespace, cfg.name);
    let Some(mut l) = cluster.get_opt(&api, &what, &cfg.name).await? else {
        return Ok(());
    };
    if holder(&l).as_deref() != Some(cfg.identity.as_str()) {
        return Ok(());
    }
    if let Some(spec) = l.spec.as_mut() {
        spec.holder_identity = None;
    }
    let pp = cluster.post_params();
    match cluster.call(&what, || api.replace(&cfg.name, &pp, &l)).await {
        Ok(_) => Ok(()),
        Err(e) if e.is_conflict() => Ok(()),
        Err(e) => Err(e.into()),
    }
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        if let Some(t) = self.renewer.take() {
            t.abort();
        }
        if !self.released
            && !self.virtual_only
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            let cluster = self.cluster.clone();
            let cfg = self.cfg.clone();
            rt.spawn(async move {
                if let Err(e) = release_lease(&cluster, &cfg).await {
                    tracing::warn!(error = %e, "could not release the fleet Lease on drop");
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: Option<&str>, renew: Option<&MicroTime>, duration: Option<i32>) -> Lease {
        Lease {
            spec: Some(LeaseSpec {
                holder_identity: holder.map(str::to_string),
                renew_time: renew.cloned(),
                lease_duration_seconds: duration,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_conflict_on_renew_is_judged_by_the_stored_record() {
        let sent = MicroTime(jiff::Timestamp::now());
        let earlier = MicroTime(sent.0 - jiff::SignedDuration::from_secs(5));
        assert_eq!(
            after_conflict(&lease(Some("me"), Some(&sent), None), "me", &sent),
            Renewal::Renewed
        );
        assert_eq!(
            after_conflict(&lease(Some("me"), Some(&earlier), None), "me", &sent),
            Renewal::NotYet
        );
        assert!(matches!(
            after_conflict(&lease(Some("other"), Some(&sent), None), "me", &sent),
            Renewal::Lost(r) if r.contains("other")
        ));
        assert!(matches!(
            after_conflict(&lease(None, None, None), "me", &sent),
            Renewal::Lost(_)
        ));
    }

    #[test]
    fn a_renew_time_at_the_end_of_time_is_not_expired_and_does_not_panic() {
        let end = MicroTime(jiff::Timestamp::MAX);
        assert!(!expired(
            &lease(Some("x"), Some(&end), Some(i32::MAX)),
            jiff::Timestamp::now()
        ));
        let old = MicroTime(jiff::Timestamp::now() - jiff::SignedDuration::from_secs(60));
        assert!(expired(
            &lease(Some("x"), Some(&old), Some(15)),
            jiff::Timestamp::now()
        ));
    }

    #[test]
    fn the_takeover_wait_is_the_records_duration_within_a_bound() {
        assert_eq!(
            confirm_period(&lease(Some("x"), None, Some(15))),
            Duration::from_secs(15)
        );
        assert_eq!(
            confirm_period(&lease(Some("x"), None, Some(i32::MAX))),
            MAX_CONFIRM
        );
        assert_eq!(confirm_period(&lease(Some("x"), None, Some(-4))), Duration::ZERO);
        assert_eq!(confirm_period(&lease(Some("x"), None, None)), Duration::ZERO);
    }
}
