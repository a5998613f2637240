//! Backup -> mutate -> restore -> verify against meshsim, restore idempotence, the YAML file round trip,
//! and "the first backup is the truth" for resumed runs.

use test_support::cluster as common;

use ambient_migrate::backup::{self, Backup};
use ambient_migrate::cluster::{DynKind, LabelTarget, MANAGED_BY_LABEL, MANAGED_BY_VALUE};
use ambient_migrate::steps::ObjRef;
use common::{SEED, start};
use kube::api::DynamicObject;
use serde_json::json;

const STATE_NS: &str = "ambient-migrate";

fn ns() -> LabelTarget {
    LabelTarget::Namespace { name: "shop".into() }
}

fn api_svc() -> LabelTarget {
    LabelTarget::Service {
        namespace: "shop".into(),
        name: "api".into(),
    }
}

#[tokio::test]
async fn restore_undoes_label_and_object_changes_and_verifies() {
    let env = start(&[SEED]).await;
    let c = &env.cluster;
    // Unrelated label present before the backup: restore must not touch it later.
    c.set_label(&ns(), "team", Some("payments")).await.unwrap();
    let b = backup::take_fresh(c, STATE_NS, "shop", Some("run-1"))
        .await
        .unwrap();
    assert_eq!(b.namespace_labels["istio-injection"], "enabled");
    assert_eq!(
        b.objects.len(),
        7,
        "3 AuthorizationPolicies, VS, DR, HTTPRoute, Gateway"
    );
    for o in &b.objects {
        let meta = o["metadata"].as_object().unwrap();
        assert!(
            !meta.contains_key("resourceVersion")
                && !meta.contains_key("uid")
                && !meta.contains_key("managedFields")
        );
        assert!(o.get("status").is_none());
        assert!(o["apiVersion"].is_string() && o["kind"].is_string());
    }
    assert!(
        backup::verify(c, &b, &[]).await.unwrap().is_empty(),
        "live equals a fresh backup"
    );

    // Mutate like a half-done migration.
    c.set_labels(
        &ns(),
        &[
            ("istio-injection".into(), None),
            ("istio.io/dataplane-mode".into(), Some("ambient".into())),
        ],
    )
    .await
    .unwrap();
    c.set_label(&ns(), "team", Some("checkout")).await.unwrap(); // unrelated change by someone else
    c.set_label(&api_svc(), "istio.io/use-waypoint", Some("waypoint"))
        .await
        .unwrap();
    assert!(
        c.delete_dyn(DynKind::AuthorizationPolicy, "shop", "api-allow-web-get")
            .await
            .unwrap()
    );
    c.merge_patch_dyn(
        DynKind::DestinationRule,
        "shop",
        "api",
        &json!({"spec": {"subsets": [{"name": "v2", "labels": {"version": "v2"}}]}}),
    )
    .await
    .unwrap();
    let bridge: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
        "metadata": {"name": "api-bridge", "namespace": "shop", "labels": {MANAGED_BY_LABEL: MANAGED_BY_VALUE, "ambient-migrate.io/role": "bridge"}},
        "spec": {"selector": {"matchLabels": {"app": "api"}}, "action": "ALLOW",
                 "rules": [{"from": [{"source": {"principals": ["cluster.local/ns/shop/sa/waypoint"]}}]}]}
    }))
    .unwrap();
    c.create_dyn(DynKind::AuthorizationPolicy, "shop", &bridge)
        .await
        .unwrap();
    // The journal records the bridge as created by the migration.
    let created = vec![ObjRef::new(
        "security.istio.io/v1",
        "AuthorizationPolicy",
        "shop",
        "api-bridge",
    )];
    let diffs = backup::verify(c, &b, &created).await.unwrap();
    let whats: Vec<String> = diffs.iter().map(|d| d.to_string()).collect();
    assert_eq!(diffs.len(), 6, "{whats:#?}");
    // A twin applied by hand carries our label too, but no migration created it: left alone.
    let by_hand: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
        "metadata": {"name": "api-twin-by-hand", "namespace": "shop", "labels": {MANAGED_BY_LABEL: MANAGED_BY_VALUE}},
        "spec": {"targetRefs": [{"kind": "Service", "group": "", "name": "api"}], "action": "ALLOW"}
    }))
    .unwrap();
    c.create_dyn(DynKind::AuthorizationPolicy, "shop", &by_hand)
        .await
        .unwrap();

    let report = backup::restore(c, &b, &created).await.unwrap();
    assert!(
        report.skipped.iter().any(|s| s.contains("api-twin-by-hand")),
        "{:?}",
        report.skipped
    );
    assert!(
        c.get_dyn(DynKind::AuthorizationPolicy, "shop", "api-twin-by-hand")
            .await
            .unwrap()
            .is_some(),
        "an object no recorded migration created is never deleted"
    );
    assert!(report.equal, "{:#?}", report.differences);
    assert_eq!(report.created.len(), 1);
    assert_eq!(report.created[0].name, "api-allow-web-get");
    assert_eq!(report.replaced.len(), 1);
    assert_eq!(report.deleted.len(), 1);
    assert_eq!(report.labels_changed.len(), 3, "{:?}", report.labels_changed);
    let labels = c.labels_of(&ns()).await.unwrap();
    assert_eq!(labels["istio-injection"], "enabled");
    assert!(!labels.contains_key("istio.io/dataplane-mode"));
    assert_eq!(labels["team"], "checkout", "unrelated labels are left alone");
    assert!(
        !c.labels_of(&api_svc())
            .await
            .unwrap()
            .contains_key("istio.io/use-waypoint")
    );
    let dr = c
        .get_dyn(DynKind::DestinationRule, "shop", "api")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(dr.data["spec"]["subsets"][0]["name"], "v1");
    assert!(
        c.get_dyn(DynKind::AuthorizationPolicy, "shop", "api-bridge")
            .await
            .unwrap()
            .is_none()
    );

    // A second restore changes nothing and sends no write.
    env.reset_requests().await;
    let again = backup::restore(c, &b, &created).await.unwrap();
    assert!(again.is_noop() && again.equal, "{again:#?}");
    let writes = env.writes().await;
    assert_eq!(writes, 0);
}

#[tokio::test]
async fn backup_yaml_round_trips_through_a_file_and_the_cluster_copy_is_checked() {
    let env = start(&[SEED]).await;
    let c = &env.cluster;
    let b = backup::take_fresh(c, STATE_NS, "shop", Some("run-1"))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shop.yaml");
    b.write_file(&path).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        text.starts_with("# ambient-migrate backup of namespace shop"),
        "{text}"
    );
    assert!(
        text.contains("kind: AuthorizationPolicy") && !text.contains("resourceVersion"),
        "{text}"
    );
    assert_eq!(Backup::load_file(&path).unwrap(), b);

    // The in-cluster copy is loaded only as the backup the journal recorded (its digest).
    let id = backup::BackupIdentity {
        taken_at: b.taken_at.clone(),
        digest: b.digest().unwrap(),
        file: Some(path.display().to_string()),
    };
    let stored = backup::load_recorded(c, STATE_NS, "shop", &id).await.unwrap();
    assert_eq!(stored, b);

    // Replaced since (an old `backup -n`-style copy, another attempt): refused, naming the file.
    c.set_label(&ns(), "istio-injection", None).await.unwrap();
    let other = backup::take_fresh(c, STATE_NS, "shop", Some("run-2"))
        .await
        .unwrap();
    assert_ne!(other.digest().unwrap(), id.digest);
    let err = backup::load_recorded(c, STATE_NS, "shop", &id).await.unwrap_err();
    assert!(
        matches!(err, backup::BackupError::Mismatch { .. }) && err.to_string().contains("shop.yaml"),
        "{err}"
    );

    // Missing: refused too, never replaced by the live state.
    let cms: kube::Api<k8s_openapi::api::core::v1::ConfigMap> = c.namespaced(STATE_NS);
    cms.delete(&backup::config_map_name("shop"), &Default::default())
        .await
        .unwrap();
    let err = backup::load_recorded(c, STATE_NS, "shop", &id).await.unwrap_err();
    assert!(matches!(err, backup::BackupError::Lost { .. }), "{err}");
    assert!(
        Backup::load_from_cluster(c, STATE_NS, "shop")
            .await
            .unwrap()
            .is_none()
    );

    // A file that is not a backup is refused with its name.
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "apiVersion: v1\nkind: Pod\nmetadata: {name: x}\n").unwrap();
    let err = Backup::load_file(&bad).unwrap_err().to_string();
    assert!(err.contains("bad.yaml"), "{err}");
}
