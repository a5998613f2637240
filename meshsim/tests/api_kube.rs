//! The API server driven by kube-rs 5, as the product drives a real cluster.

use test_support::sim as common;

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret};
use kube::api::{
    Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::core::{ApiResource, GroupVersionKind};
use kube::runtime::watcher;
use meshsim::faults::{FaultKind, FaultSpec};
use meshsim::resources;
use serde_json::json;

use common::{start_sim, wait_for};

const BASE: &str = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: t\n  labels:\n    team: a\n";

fn cm(name: &str, labels: serde_json::Value) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}, "data": {"k": "v"}})).unwrap()
}

#[tokio::test]
async fn watch_from_list_resource_version_sees_later_changes() {
    let ts = start_sim(BASE).await;
    let api: Api<ConfigMap> = Api::namespaced(ts.client.clone(), "t");
    api.create(&PostParams::default(), &cm("a", json!({})))
        .await
        .unwrap();
    let list = api.list(&ListParams::default()).await.unwrap();
    let rv = list.metadata.resource_version.clone().unwrap();
    assert_eq!(list.items.len(), 1);
    // A change after the list and before the watch starts must still be seen.
    api.create(&PostParams::default(), &cm("b", json!({})))
        .await
        .unwrap();
    let mut stream = api
        .watch(&WatchParams::default().timeout(10), &rv)
        .await
        .unwrap()
        .boxed();
    let first = tokio::time::timeout(Duration::from_secs(5), stream.try_next())
        .await
        .unwrap()
        .unwrap();
    match first {
        Some(WatchEvent::Added(o)) => assert_eq!(o.metadata.name.as_deref(), Some("b")),
        other => panic!("expected ADDED b, got {other:?}"),
    }
    api.delete("a", &DeleteParams::default()).await.unwrap();
    let next = tokio::time::timeout(Duration::from_secs(5), stream.try_next())
        .await
        .unwrap()
        .unwrap();
    match next {
        Some(WatchEvent::Deleted(o)) => assert_eq!(o.metadata.name.as_deref(), Some("a")),
        other => panic!("expected DELETED a, got {other:?}"),
    }
    // Compacted history: an old resourceVersion answers an ERROR event with a 410 Status.
    ts.sim().store.compact();
    let mut old = api
        .watch(&WatchParams::default().timeout(10), &rv)
        .await
        .unwrap()
        .boxed();
    match old.try_next().await.unwrap() {
        Some(WatchEvent::Error(s)) => {
            assert_eq!(s.code, 410);
            assert_eq!(s.reason, "Expired");
        }
        other => panic!("expected a 410 ERROR event, got {other:?}"),
    }
}

#[tokio::test]
async fn watcher_relists_after_410() {
    let ts = start_sim(BASE).await;
    let mut drop_fault = FaultSpec::new(FaultKind::WatchDrop, None);
    drop_fault.resource = Some("configmaps".into());
    drop_fault.after_ms = Some(200);
    ts.sim().faults.add(drop_fault);
    let api: Api<ConfigMap> = Api::namespaced(ts.client.clone(), "t");
    api.create(&PostParams::default(), &cm("a", json!({})))
        .await
        .unwrap();
    let mut events = watcher(api.clone(), watcher::Config::default()).boxed();
    let mut init_done = 0;
    let mut saw_gone = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while init_done < 2 {
        let ev = tokio::time::timeout_at(deadline, events.next())
            .await
            .expect("watcher progresses");
        match ev {
            Some(Ok(watcher::Event::InitDone)) => {
                init_done += 1;
                if init_done == 1 {
                    // Writes elsewhere move the store on; compaction makes the watcher's RV too old.
                    let secrets: Api<Secret> = Api::namespaced(ts.client.clone(), "t");
                    let s: Secret = serde_json::from_value(json!({"metadata": {"name": "s"}})).unwrap();
                    secrets.create(&PostParams::default(), &s).await.unwrap();
                    ts.sim().store.compact();
                }
            }
            Some(Err(watcher::Error::WatchError(s))) if s.code == 410 => saw_gone = true,
            Some(_) => {}
            None => panic!("watcher ended"),
        }
    }
    assert!(saw_gone, "the watcher saw 410 Gone before relisting");
}

#[tokio::test]
async fn stale_replace_conflicts_and_merge_patch_null_removes_label() {
    let ts = start_sim(BASE).await;
    let api: Api<ConfigMap> = Api::namespaced(ts.client.clone(), "t");
    let created = api
        .create(&PostParams::default(), &cm("a", json!({"x": "1", "y": "2"})))
        .await
        .unwrap();
    let mut fresh = created.clone();
    fresh.data = Some([("k".to_string(), "2".to_string())].into());
    api.replace("a", &PostParams::default(), &fresh).await.unwrap();
    let mut stale = created.clone();
    stale.data = Some([("k".to_string(), "3".to_string())].into());
    let err = api
        .replace("a", &PostParams::default(), &stale)
        .await
        .unwrap_err();
    match err {
        kube::Error::Api(s) => {
            assert_eq!(s.code, 409);
            assert!(s.is_conflict());
        }
        other => panic!("expected 409, got {other:?}"),
    }
    let patched = api
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"x": null}}})),
        )
        .await
        .unwrap();
    let labels = patched.metadata.labels.unwrap();
    assert!(!labels.contains_key("x"));
    assert_eq!(labels.get("y").map(String::as_str), Some("2"));
    // Already exists.
    let err = api
        .create(&PostParams::default(), &cm("a", json!({})))
        .await
        .unwrap_err();
    assert!(matches!(err, kube::Error::Api(s) if s.code == 409 && s.reason == "AlreadyExists"));
    // Not found.
    let err = api.get("nope").await.unwrap_err();
    assert!(matches!(err, kube::Error::Api(s) if s.code == 404 && s.reason == "NotFound"));
}

#[tokio::test]
async fn server_side_dry_run_writes_nothing() {
    let ts = start_sim(BASE).await;
    let api: Api<ConfigMap> = Api::namespaced(ts.client.clone(), "t");
    api.create(&PostParams::default(), &cm("a", json!({"x": "1"})))
        .await
        .unwrap();
    let store = &ts.sim().store;
    let before_rv = store.resource_version();
    let before = store.list(resources::core("configmaps"), Some("t")).0;
    ts.sim().accounting.reset();
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let c = api.create(&dry, &cm("b", json!({}))).await.unwrap();
    assert_eq!(c.metadata.name.as_deref(), Some("b"));
    let p = api
        .patch(
            "a",
            &PatchParams::default().dry_run(),
            &Patch::Merge(json!({"metadata": {"labels": {"x": "2"}}})),
        )
        .await
        .unwrap();
    assert_eq!(
        p.metadata.labels.unwrap()["x"],
        "2",
        "dry run answers the would-be object"
    );
    api.delete("a", &DeleteParams::default().dry_run()).await.unwrap();
    // Controllers may write other objects meanwhile; nothing happened to configmaps in `t`.
    let (backlog, _rx) = store.watch_from(before_rv).unwrap();
    let cm_id = resources::core("configmaps");
    assert!(
        !backlog.iter().any(|e| e.res == cm_id && e.namespace == "t"),
        "no configmap event"
    );
    assert_eq!(store.list(resources::core("configmaps"), Some("t")).0, before);
    let log = ts.sim().accounting.log();
    assert_eq!(log.len(), 3);
    assert!(log.iter().all(|r| r.dry_run));
    assert_eq!(ts.sim().accounting.mutating_count(|_| true), 0);
}

#[tokio::test]
async fn server_side_apply_creates_then_updates_with_field_manager() {
    let ts = start_sim(BASE).await;
    let api: Api<ConfigMap> = Api::namespaced(ts.client.clone(), "t");
    let pp = PatchParams::apply("migrator").force();
    let applied = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "cfg", "labels": {"a": "1"}}, "data": {"k": "v"}});
    let created = api.patch("cfg", &pp, &Patch::Apply(&applied)).await.unwrap();
    assert_eq!(created.data.as_ref().unwrap()["k"], "v");
    let mf = created.metadata.managed_fields.clone().unwrap();
    assert!(
        mf.iter()
            .any(|m| m.manager.as_deref() == Some("migrator") && m.operation.as_deref() == Some("Apply"))
    );
    let updated = api
        .patch(
            "cfg",
            &pp,
            &Patch::Apply(&json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "cfg", "labels": {"b": "2"}}, "data": {"k": "w"}})),
        )
        .await
        .unwrap();
    assert_eq!(updated.data.as_ref().unwrap()["k"], "w");
    assert_eq!(updated.metadata.labels.as_ref().unwrap()["b"], "2");
    assert_ne!(
        updated.metadata.resource_version,
        created.metadata.resource_version
    );
    // fieldManager is required for apply.
    let err = api
        .patch("cfg", &PatchParams::default(), &Patch::Apply(&applied))
        .await
        .unwrap_err();
    assert!(matches!(err, kube::Error::Api(s) if s.code == 422));
}

const CUSTOM_KINDS: &[(&str, &str, &str)] = &[
    ("gateway.networking.k8s.io", "v1", "Gateway"),
    ("gateway.networking.k8s.io", "v1", "HTTPRoute"),
    ("security.istio.io", "v1", "AuthorizationPolicy"),
    ("security.istio.io", "v1", "PeerAuthentication"),
    ("security.istio.io", "v1", "RequestAuthentication"),
    ("networking.istio.io", "v1", "VirtualService"),
    ("networking.istio.io", "v1", "DestinationRule"),
    ("networking.istio.io", "v1", "Sidecar"),
    ("networking.istio.io", "v1", "ServiceEntry"),
    ("networking.istio.io", "v1", "EnvoyFilter"),
    ("telemetry.istio.io", "v1", "Telemetry"),
];

#[tokio::test]
async fn discovery_finds_custom_kinds_and_dynamic_objects_round_trip() {
    let ts = start_sim(BASE).await;
    let discovery = kube::discovery::Discovery::new(ts.client.clone())
        .run()
        .await
        .unwrap();
    for (g, v, k) in CUSTOM_KINDS {
        let gvk = GroupVersionKind::gvk(g, v, k);
        let (ar, caps) = discovery
            .resolve_gvk(&gvk)
            .unwrap_or_else(|| panic!("discovery lacks {g}/{v} {k}"));
        assert_eq!(caps.scope, kube::discovery::Scope::Namespaced);
        let api: Api<DynamicObject> = Api::namespaced_with(ts.client.clone(), "t", &ar);
        let name = format!("x-{}", k.to_lowercase());
        let mut obj = DynamicObject::new(&name, &ar);
        obj.data = json!({"spec": {"hello": k}});
        let created = api.create(&PostParams::default(), &obj).await.unwrap();
        assert_eq!(created.types.as_ref().unwrap().kind, *k);
        let got = api.get(&name).await.unwrap();
        assert_eq!(got.data["spec"]["hello"], *k);
        let patched = api
            .patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {"l": "1"}}})),
            )
            .await
            .unwrap();
        assert_eq!(patched.metadata.labels.unwrap()["l"], "1");
        // Strategic merge is not available for custom resources.
        let err = api
            .patch(
                &name,
                &PatchParams::default(),
                &Patch::Strategic(json!({"spec": {"a": 1}})),
            )
            .await
            .unwrap_err();
        assert!(matches!(err, kube::Error::Api(s) if s.code == 415), "{k}");
        let list = api.list(&ListParams::default()).await.unwrap();
        assert_eq!(list.items.len(), 1);
        api.delete(&name, &DeleteParams::background()).await.unwrap();
        assert!(api.get_opt(&name).await.unwrap().is_none());
    }
    let ar = ApiResource::from_gvk(&GroupVersionKind::gvk("apps", "v1", "Deployment"));
    assert_eq!(ar.plural, "deployments");
}

#[tokio::test]
async fn selectors_and_paging() {
    let ts = start_sim(BASE).await;
    let api: Api<ConfigMap> = Api::namespaced(ts.client.clone(), "t");
    for i in 0..7 {
        let tier = if i % 2 == 0 { "fe" } else { "be" };
        api.create(
            &PostParams::default(),
            &cm(&format!("c{i}"), json!({"tier": tier, "n": i.to_string()})),
        )
        .await
        .unwrap();
    }
    let names = |l: &kube::core::ObjectList<ConfigMap>| -> Vec<String> {
        l.items.iter().map(|c| c.metadata.name.clone().unwrap()).collect()
    };
    let fe = api.list(&ListParams::default().labels("tier=fe")).await.unwrap();
    assert_eq!(names(&fe), ["c0", "c2", "c4", "c6"]);
    let notin = api
        .list(&ListParams::default().labels("tier notin (fe),n!=3"))
        .await
        .unwrap();
    assert_eq!(names(&notin), ["c1", "c5"]);
    let by_name = api
        .list(&ListParams::default().fields("metadata.name=c3"))
        .await
        .unwrap();
    assert_eq!(names(&by_name), ["c3"]);
    let none = api.list(&ListParams::default().labels("!tier")).await.unwrap();
    assert!(none.items.is_empty());
    // Paging: 3 + 3 + 1.
    let mut all = Vec::new();
    let mut lp = ListParams::default().limit(3);
    let mut pages = 0;
    loop {
        let page = api.list(&lp).await.unwrap();
        pages += 1;
        all.extend(names(&page));
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(c) => lp = ListParams::default().limit(3).continue_token(&c),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(all, (0..7).map(|i| format!("c{i}")).collect::<Vec<_>>());
    // All-namespace list of a namespaced kind.
    let everywhere: Api<ConfigMap> = Api::all(ts.client.clone());
    assert!(everywhere.list(&ListParams::default()).await.unwrap().items.len() >= 7);
    // Bad selector: 400.
    let err = api
        .list(&ListParams::default().labels("a in b"))
        .await
        .unwrap_err();
    assert!(matches!(err, kube::Error::Api(s) if s.code == 400));
}

#[tokio::test]
async fn label_selector_watch_reports_objects_leaving_the_selection() {
    let ts = start_sim(BASE).await;
    let api: Api<ConfigMap> = Api::namespaced(ts.client.clone(), "t");
    api.create(&PostParams::default(), &cm("a", json!({"app": "web"})))
        .await
        .unwrap();
    let list = api.list(&ListParams::default().labels("app=web")).await.unwrap();
    let rv = list.metadata.resource_version.unwrap();
    let mut stream = api
        .watch(&WatchParams::default().labels("app=web").timeout(10), &rv)
        .await
        .unwrap()
        .boxed();
    api.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "api"}}})),
    )
    .await
    .unwrap();
    api.create(&PostParams::default(), &cm("other", json!({"app": "db"})))
        .await
        .unwrap();
    api.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "web"}}})),
    )
    .await
    .unwrap();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        match tokio::time::timeout(Duration::from_secs(5), stream.try_next())
            .await
            .unwrap()
            .unwrap()
        {
            Some(WatchEvent::Deleted(o)) => seen.push(format!("DELETED {}", o.metadata.name.unwrap())),
            Some(WatchEvent::Added(o)) => seen.push(format!("ADDED {}", o.metadata.name.unwrap())),
            Some(WatchEvent::Modified(o)) => seen.push(format!("MODIFIED {}", o.metadata.name.unwrap())),
            Some(WatchEvent::Bookmark(_)) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(seen, ["DELETED a", "ADDED a"]);
}

#[tokio::test]
async fn strategic_merge_status_subresource_and_generation() {
    let ts = start_sim(BASE).await;
    let api: Api<Deployment> = Api::namespaced(ts.client.clone(), "t");
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "app", "image": "a:1"}, {"name": "log", "image": "l:1"}]}}}
    }))
    .unwrap();
    let created = api.create(&PostParams::default(), &d).await.unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    let restarted = api
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"template": {
                "metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": "2025-01-01T00:00:00Z"}},
                "spec": {"containers": [{"name": "app", "image": "a:2"}]}}}})),
        )
        .await
        .unwrap();
    assert_eq!(restarted.metadata.generation, Some(2));
    let v = serde_json::to_value(&restarted).unwrap();
    let containers = v["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(containers.len(), 2, "containers merge by name");
    assert_eq!(containers[0]["image"], "a:2");
    // Status subresource: status changes, generation does not.
    let st = api
        .patch_status(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"observedGeneration": 2, "readyReplicas": 1}})),
        )
        .await
        .unwrap();
    assert_eq!(st.status.as_ref().unwrap().ready_replicas, Some(1));
    assert_eq!(st.metadata.generation, Some(2));
    let got = api.get_status("web").await.unwrap();
    assert_eq!(got.status.unwrap().observed_generation, Some(2));
}

#[tokio::test]
async fn api_error_faults_accounting_and_pod_logs() {
    let ts = start_sim(BASE).await;
    let mut f = FaultSpec::new(FaultKind::ApiError, None);
    f.verb = Some("patch".into());
    f.resource = Some("namespaces".into());
    f.name = Some("t".into());
    f.code = Some(503);
    f.count = Some(1);
    ts.sim().faults.add(f);
    let mut client_cfg = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::from_yaml(&ts.running.kubeconfig_yaml()).unwrap(),
        &Default::default(),
    )
    .await
    .unwrap();
    client_cfg.default_retry = false;
    let client = kube::Client::try_from(client_cfg).unwrap();
    let nss: Api<Namespace> = Api::all(client);
    let patch = Patch::Merge(json!({"metadata": {"labels": {"istio.io/dataplane-mode": "ambient"}}}));
    let err = nss.patch("t", &PatchParams::default(), &patch).await.unwrap_err();
    assert!(matches!(err, kube::Error::Api(ref s) if s.code == 503), "{err:?}");
    let ok = nss.patch("t", &PatchParams::default(), &patch).await.unwrap();
    assert_eq!(ok.metadata.labels.unwrap()["istio.io/dataplane-mode"], "ambient");
    let patches: Vec<_> = ts
        .sim()
        .accounting
        .log()
        .into_iter()
        .filter(|r| r.verb == "patch" && r.resource == "namespaces")
        .collect();
    assert_eq!(patches.iter().map(|r| r.code).collect::<Vec<_>>(), [503, 200]);
    assert_eq!(patches[0].name.as_deref(), Some("t"));
    // Pod logs.
    let pods: Api<Pod> = Api::namespaced(ts.client.clone(), "t");
    let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "curl"},
        "spec": {"containers": [{"name": "c", "image": "curl"}]}}))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    ts.sim().logs.append("t", "curl", "line1\nline2\n");
    let logs = pods.logs("curl", &Default::default()).await.unwrap();
    assert_eq!(logs, "line1\nline2\n");
    let tail = pods
        .logs(
            "curl",
            &kube::api::LogParams {
                tail_lines: Some(1),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(tail, "line2\n");
    let capped = pods
        .logs(
            "curl",
            &kube::api::LogParams {
                limit_bytes: Some(8),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(capped, "line1\nli");
    wait_for("log request recorded", Duration::from_secs(2), || async {
        ts.sim().accounting.count(|r| r.resource == "pods/log") == 3
    })
    .await;
}
