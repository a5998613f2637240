//! Journal fencing and the fleet Lease against meshsim.

use test_support::cluster as common;

use std::time::Duration;

use ambient_migrate::cluster::LabelTarget;
use ambient_migrate::journal::{Journal, JournalError, STATE_ANNOTATION, phase_label};
use ambient_migrate::lease::{self, LeaseConfig, LeaseError};
use ambient_migrate::steps::{Change, LabelChange, ObjRef, Phase, Step};
use common::{SEED, start};

const STATE_NS: &str = "ambient-migrate";

#[tokio::test]
async fn journal_writes_are_fenced() {
    let env = start(&[SEED]).await;
    let c = &env.cluster;
    let mut a = Journal::load_or_create(c, STATE_NS, "shop", "run-a")
        .await
        .unwrap();
    assert_eq!(a.record().phase, Phase::Pending);
    let mut stale = Journal::load_or_create(c, STATE_NS, "shop", "run-b")
        .await
        .unwrap();
    assert_eq!(stale.resource_version(), a.resource_version());

    a.update(|r| {
        r.phase = Phase::InStep(Step::ActivateWaypoint);
        r.changes.push(Change::Label {
            step: Step::ActivateWaypoint,
            change: LabelChange {
                target: ObjRef::namespace("shop"),
                key: "istio.io/use-waypoint".into(),
                before: None,
                after: Some("waypoint".into()),
            },
        });
    })
    .await
    .unwrap();
    let err = stale.update(|r| r.phase = Phase::RolledBack).await.unwrap_err();
    match &err {
        JournalError::Fenced { namespace, writer } => {
            assert_eq!((namespace.as_str(), writer.as_str()), ("shop", "run-a"))
        }
        other => panic!("expected Fenced, got {other}"),
    }
    assert_eq!(
        stale.record().phase,
        Phase::Pending,
        "a fenced handle keeps its old record"
    );

    // What is stored is a's record, a can keep writing, and the namespace shows the phase.
    let stored = Journal::load(c, STATE_NS, "shop").await.unwrap().unwrap();
    assert_eq!(stored.phase, Phase::InStep(Step::ActivateWaypoint));
    assert_eq!(stored.changes.len(), 1);
    assert_eq!(stored.run_id, "run-a");
    a.update(|r| r.phase = Phase::StepDone(Step::ActivateWaypoint))
        .await
        .unwrap();
    // The state annotation is written in the background; a non-terminal phase is there once flushed.
    a.flush_annotation().await;
    let ann = c
        .labels_of(&LabelTarget::Namespace { name: "shop".into() })
        .await
        .unwrap();
    assert!(
        ann.is_empty() || !ann.contains_key(STATE_ANNOTATION),
        "state is an annotation, not a label"
    );
    let ns: k8s_openapi::api::core::v1::Namespace = c.all().get("shop").await.unwrap();
    assert_eq!(
        ns.metadata.annotations.unwrap()[STATE_ANNOTATION],
        phase_label(&Phase::StepDone(Step::ActivateWaypoint))
    );

    // A reloaded handle resumes from the stored record.
    let resumed = Journal::load_or_create(c, STATE_NS, "shop", "run-c")
        .await
        .unwrap();
    assert_eq!(resumed.record().phase, Phase::StepDone(Step::ActivateWaypoint));
    let all = Journal::list_all(c, STATE_NS).await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].runs, vec!["run-a".to_string()]);
}

#[tokio::test]
async fn a_second_runner_gets_held_by_and_writes_nothing() {
    let env = start(&[SEED]).await;
    let first = lease::acquire(&env.cluster, LeaseConfig::new(STATE_NS))
        .await
        .unwrap();
    first.check().unwrap();

    env.reset_requests().await;
    let other = env.cluster_with(common::test_options()).await;
    let err = lease::acquire(&other, LeaseConfig::new(STATE_NS))
        .await
        .unwrap_err();
    match &err {
        LeaseError::HeldBy { holder, .. } => assert_eq!(holder, first.identity()),
        e => panic!("expected HeldBy, got {e}"),
    }
    let log = env.requests().await;
    assert!(!log.is_empty());
    let writes: Vec<_> = log
        .iter()
        .filter(|r| ["create", "update", "patch", "delete"].contains(&r["verb"].as_str().unwrap_or("")))
        .collect();
    assert!(writes.is_empty(), "the second runner must not write: {writes:?}");

    // After release the next runner acquires at once.
    first.release().await.unwrap();
    let second = lease::acquire(&other, LeaseConfig::new(STATE_NS)).await.unwrap();
    second.check().unwrap();
    second.release().await.unwrap();
}

#[tokio::test]
async fn an_expired_lease_is_taken_over_and_a_stolen_lease_is_noticed() {
    use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
    let env = start(&[SEED]).await;
    let c = &env.cluster;
    c.ensure_namespace(STATE_NS).await.unwrap();
    let api = c.namespaced::<Lease>(STATE_NS);
    // A dead runner's Lease, last renewed 60 s ago with a 2 s duration. The takeover first watches it,
    // unchanged, for those 2 s on the local clock.
    let old = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(60);
    let dead = Lease {
        metadata: kube::api::ObjectMeta {
            name: Some(lease::LEASE_NAME.into()),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some("dead-runner".into()),
            lease_duration_seconds: Some(2),
            renew_time: Some(MicroTime(old)),
            acquire_time: Some(MicroTime(old)),
            lease_transitions: Some(3),
            ..Default::default()
        }),
    };
    api.create(&Default::default(), &dead).await.unwrap();
    let cfg = LeaseConfig {
        duration: Duration::from_secs(3),
        ..LeaseConfig::new(STATE_NS)
    };
    let t0 = std::time::Instant::now();
    let guard = lease::acquire(c, cfg).await.unwrap();
    assert!(
        t0.elapsed() >= Duration::from_secs(2),
        "taken over without confirming expiry"
    );
    let l = api.get(lease::LEASE_NAME).await.unwrap().spec.unwrap();
    assert_eq!(l.holder_identity.as_deref(), Some(guard.identity()));
    assert_eq!(l.lease_transitions, Some(4));
    guard.check().unwrap();

    // Someone else overwrites the holder: the renewer (every 1 s) notices and check() fails.
    steal(c).await;
    let lost = noticed_loss(&guard).await;
    assert!(matches!(lost, LeaseError::Lost { .. }), "{lost}");
    // Releasing a lost lease leaves the intruder's record alone.
    guard.release().await.unwrap();
    assert_eq!(
        api.get(lease::LEASE_NAME)
            .await
            .unwrap()
            .spec
            .unwrap()
            .holder_identity
            .as_deref(),
        Some("intruder")
    );
}

/// A live holder whose clock runs 60 s behind ours: its renewTime always looks expired by our clock, but
/// the record keeps changing, so the takeover (which watches it for one lease duration) must refuse.
#[tokio::test]
async fn a_live_holder_with_a_slow_clock_is_not_taken_over() {
    use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
    let env = start(&[SEED]).await;
    let c = env.cluster.clone();
    c.ensure_namespace(STATE_NS).await.unwrap();
    let api = c.namespaced::<Lease>(STATE_NS);
    let behind = || MicroTime(jiff::Timestamp::now() - jiff::SignedDuration::from_secs(60));
    let live = Lease {
        metadata: kube::api::ObjectMeta {
            name: Some(lease::LEASE_NAME.into()),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some("slow-clock-runner".into()),
            lease_duration_seconds: Some(2),
            renew_time: Some(behind()),
            ..Default::default()
        }),
    };
    api.create(&Default::default(), &live).await.unwrap();
    let renewer = {
        let api = api.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(400)).await;
                let mut l = api.get(lease::LEASE_NAME).await.unwrap();
                l.spec.as_mut().unwrap().renew_time = Some(behind());
                let _ = api.replace(lease::LEASE_NAME, &Default::default(), &l).await;
            }
        })
    };
    let err = lease::acquire(&c, LeaseConfig::new(STATE_NS)).await.unwrap_err();
    renewer.abort();
    match &err {
        LeaseError::HeldBy { holder, .. } => assert_eq!(holder, "slow-clock-runner"),
        other => panic!("expected HeldBy, got {other}"),
    }
    let l = api.get(lease::LEASE_NAME).await.unwrap().spec.unwrap();
    assert_eq!(l.holder_identity.as_deref(), Some("slow-clock-runner"));
}

#[tokio::test]
async fn dry_run_acquire_checks_without_writing() {
    let env = start(&[SEED]).await;
    let dry = env.dry_run_cluster().await;
    env.reset_requests().await;
    let g = lease::acquire(&dry, LeaseConfig::new(STATE_NS)).await.unwrap();
    g.check().unwrap();
    g.release().await.unwrap();
    let writes = env.writes().await;
    assert_eq!(writes, 0);
    // A dry run still refuses to start while a real run holds the lease.
    let real = lease::acquire(&env.cluster, LeaseConfig::new(STATE_NS))
        .await
        .unwrap();
    assert!(matches!(
        lease::acquire(&dry, LeaseConfig::new(STATE_NS)).await,
        Err(LeaseError::HeldBy { .. })
    ));
    real.release().await.unwrap();
}

/// A journal write whose answer never arrives (the caller gave up, e.g. a step abandoned on shutdown) but
/// which landed: the next update settles it from the stored journal instead of taking its own write for
/// another runner's (which would fence the run and strand the namespace mid-step).
#[tokio::test]
async fn a_journal_write_whose_answer_was_lost_is_settled_by_the_next_update() {
    let env = start(&[SEED]).await;
    let c = &env.cluster;
    let mut j = Journal::load_or_create(c, STATE_NS, "shop", "run-a")
        .await
        .unwrap();
    let mut late = meshsim::FaultSpec::new(meshsim::FaultKind::ApiLatency, Some(STATE_NS));
    late.resource = Some("configmaps".into());
    late.verb = Some("update".into());
    late.latency_ms = Some(1_500);
    late.delay_answer = true;
    let id = env.running.sim.faults.add(late);
    let cut = tokio::time::timeout(
        Duration::from_millis(300),
        j.update(|r| r.phase = Phase::InStep(Step::ActivateWaypoint)),
    )
    .await;
    assert!(cut.is_err(), "the update was cut off before its answer");
    env.running.sim.faults.remove(&id);
    // The write landed meanwhile.
    let stored = loop {
        let s = Journal::load(c, STATE_NS, "shop").await.unwrap().unwrap();
        if s.phase == Phase::InStep(Step::ActivateWaypoint) {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(stored.run_id, "run-a");
    j.update(|r| r.phase = Phase::StepDone(Step::ActivateWaypoint))
        .await
        .expect("settled, not fenced");
    let stored = Journal::load(c, STATE_NS, "shop").await.unwrap().unwrap();
    assert_eq!(stored.phase, Phase::StepDone(Step::ActivateWaypoint));
}

#[tokio::test]
async fn a_journal_near_the_configmap_limit_keeps_its_changes_and_fits() {
    use ambient_migrate::gates::{GateOutcome, GateResult};
    let env = start(&[SEED]).await;
    let c = &env.cluster;
    let mut j = Journal::load_or_create(c, STATE_NS, "shop", "run-a")
        .await
        .unwrap();
    // 100 gate results of ~20 KB each: ~2 MB, twice what meshsim (like kube-apiserver) accepts.
    j.update(|r| {
        r.changes.push(Change::Label {
            step: Step::EnableAmbient,
            change: LabelChange {
                target: ObjRef::namespace("shop"),
                key: "istio.io/dataplane-mode".into(),
                before: None,
                after: Some("ambient".into()),
            },
        });
        for i in 0..100 {
            r.push_gate(GateResult::new(
                &format!("gate-{i:03}"),
                GateOutcome::Pass,
                serde_json::json!({"pods": "p".repeat(20_000)}),
                "ok",
            ));
        }
    })
    .await
    .expect("the write fits after dropping the oldest gate results");
    let stored = Journal::load(c, STATE_NS, "shop").await.unwrap().unwrap();
    assert_eq!(stored.changes.len(), 1, "changes are never dropped");
    assert!(
        stored.gates.len() < 100 && !stored.gates.is_empty(),
        "{}",
        stored.gates.len()
    );
    assert_eq!(
        stored.gates.last().unwrap().gate,
        "gate-099",
        "the newest results are kept"
    );
    let cm = env
        .sim()
        .store
        .get(meshsim::resources::core("configmaps"), STATE_NS, "journal-shop")
        .unwrap();
    let bytes = cm["data"]["journal.json"].as_str().unwrap().len();
    assert!(bytes <= meshsim::store::MAX_DATA_BYTES, "{bytes}");

    // A record too large even without gate results is refused with a clear error; nothing is written. (The
    // client's writes, from meshsim's request log: the store's resourceVersion also moves with the
    // controllers' writes while the fixture's pods start; the state annotation of the phase before is sent
    // first.)
    j.flush_annotation().await;
    let before = env.writes().await;
    let err = j
        .update(|r| {
            r.extra
                .insert("huge".into(), serde_json::json!("x".repeat(2 * 1024 * 1024)));
        })
        .await
        .unwrap_err();
    assert!(matches!(err, JournalError::TooLarge { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("more than the 1048576 bytes a ConfigMap can hold"),
        "{err}"
    );
    assert_eq!(env.writes().await, before, "no request wrote");
    let unchanged = Journal::load(c, STATE_NS, "shop").await.unwrap().unwrap();
    assert_eq!(unchanged, stored, "the stored journal is as it was");
}

/// A renew slower than the renew deadline (here: every Lease request delayed 2.5 s, lease 3 s, deadline
/// 2 s) leaves the proof stale for a moment: `check` refuses, `check_held` waits until the renew lands
/// (the record still names us, so nobody held it meanwhile) instead of stopping the run. A record taken
/// by someone else fails `check_held` at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_renew_is_waited_out_but_a_stolen_lease_is_not() {
    let env = start(&[SEED]).await;
    let c = &env.cluster;
    let cfg = LeaseConfig {
        duration: Duration::from_secs(3),
        ..LeaseConfig::new(STATE_NS)
    };
    let guard = lease::acquire(c, cfg).await.unwrap();
    let mut slow = meshsim::FaultSpec::new(meshsim::FaultKind::ApiLatency, Some(STATE_NS));
    slow.resource = Some("leases".into());
    slow.latency_ms = Some(2500);
    let id = env.running.sim.faults.add(slow);
    // A renew (a get and a replace, each delayed 2.5 s) takes 5 s: the proof goes stale after the 2 s
    // renew deadline.
    let stale = tokio::time::timeout(Duration::from_secs(8), async {
        while guard.check().is_ok() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(stale.is_ok(), "the slow renew never made the proof stale");
    env.running.sim.faults.remove(&id);
    guard
        .check_held()
        .await
        .expect("a slow renew is not a lost lease");
    guard.check().unwrap();

    // Stolen: the renewer sees another holder, and check_held does not wait for a renew.
    steal(c).await;
    let lost = noticed_loss(&guard).await;
    assert!(lost.to_string().contains("intruder"), "{lost}");
    let t0 = std::time::Instant::now();
    assert!(guard.check_held().await.is_err());
    assert!(
        t0.elapsed() < Duration::from_millis(200),
        "a lost lease is not waited for"
    );
}

/// A Lease overwritten by someone else stops our writes within `OWNERSHIP_FRESH`, not at the next renew
/// (here 10 s away: a 30 s lease): `check_held` reads the record again before a mutation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overwritten_lease_stops_writes_before_the_next_renew() {
    let env = start(&[SEED]).await;
    let c = &env.cluster;
    let guard = lease::acquire(c, LeaseConfig::new(STATE_NS)).await.unwrap();
    guard.check_held().await.unwrap();
    steal(c).await;
    tokio::time::sleep(lease::OWNERSHIP_FRESH + Duration::from_millis(50)).await;
    let err = guard.check_held().await.unwrap_err();
    assert!(err.to_string().contains("intruder"), "{err}");
    assert!(guard.check().is_err(), "the loss is remembered");
}

/// Someone else overwrites the fleet Lease's holder (`intruder`).
async fn steal(c: &ambient_migrate::cluster::Cluster) {
    let api = c.namespaced::<k8s_openapi::api::coordination::v1::Lease>(STATE_NS);
    let mut stolen = api.get(lease::LEASE_NAME).await.unwrap();
    stolen.spec.as_mut().unwrap().holder_identity = Some("intruder".into());
    api.replace(lease::LEASE_NAME, &Default::default(), &stolen)
        .await
        .unwrap();
}

/// Waits (at most 10 s, a few renew periods) until `check` reports the loss.
async fn noticed_loss(guard: &lease::LeaseGuard) -> LeaseError {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Err(e) = guard.check() {
                return e;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the loss is noticed within a renew period")
}

#[tokio::test]
async fn staged_phases_go_out_with_the_next_write_and_show_on_the_namespace_at_once() {
    let env = start(&[SEED]).await;
    let c = &env.cluster;
    let mut j = Journal::load_or_create(c, STATE_NS, "shop", "run-a")
        .await
        .unwrap();
    j.update(|r| r.phase = Phase::InStep(Step::ActivateWaypoint))
        .await
        .unwrap();
    let annotation = || async {
        let ns: k8s_openapi::api::core::v1::Namespace = c.all().get("shop").await.unwrap();
        ns.metadata.annotations.unwrap_or_default()[STATE_ANNOTATION].clone()
    };

    // Staged: the handle and the Namespace's annotation show it, the stored journal does not (a run that
    // dies now resumes at step 1). The annotations of the phases before are sent first, so that the log
    // holds only what staging sends.
    j.flush_annotation().await;
    env.reset_requests().await;
    j.stage(|r| r.phase = Phase::InStep(Step::EnableAmbient));
    assert_eq!(j.record().phase, Phase::InStep(Step::EnableAmbient));
    j.flush_annotation().await;
    assert_eq!(
        annotation().await,
        phase_label(&Phase::InStep(Step::EnableAmbient))
    );
    let stored = Journal::load(c, STATE_NS, "shop").await.unwrap().unwrap();
    assert_eq!(stored.phase, Phase::InStep(Step::ActivateWaypoint));
    let writes: Vec<_> = env
        .requests()
        .await
        .into_iter()
        .filter(|r| r["verb"] != "get")
        .map(|r| format!("{} {}", r["verb"], r["resource"]))
        .collect();
    assert_eq!(
        writes,
        vec!["\"patch\" \"namespaces\""],
        "staging writes no journal"
    );

    // The next write carries the staged phase with its own change, and the handle keeps writing (the
    // fencing compares against what was stored, not against what was staged).
    j.update(|r| r.outcome = Some("testing".into())).await.unwrap();
    let stored = Journal::load(c, STATE_NS, "shop").await.unwrap().unwrap();
    assert_eq!(stored.phase, Phase::InStep(Step::EnableAmbient));
    assert_eq!(stored.outcome.as_deref(), Some("testing"));
    j.update(|r| r.phase = Phase::Migrated).await.unwrap();
    // A terminal phase is on the Namespace when the write returns.
    assert_eq!(annotation().await, phase_label(&Phase::Migrated));
}
