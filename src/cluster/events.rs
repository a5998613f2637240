//! Kubernetes Events on migrated Namespaces, so `kubectl describe namespace` / `kubectl get events` tell
//! the story of a run. Namespaces are cluster-scoped, so, like client-go's event recorder
//! (tools/record/event.go `makeEvent`: an empty involved-object namespace becomes `default`), the Event
//! lives in `default` with `involvedObject.namespace` empty — the field selector `kubectl describe` uses.
//! Failing to emit an Event is logged, never fatal.

use k8s_openapi::api::core::v1::{Event, EventSource, Namespace, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::ObjectMeta;

use super::{Cluster, MANAGED_BY_LABEL, MANAGED_BY_VALUE};

/// Event type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

impl EventType {
    fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// Namespace in which Events about cluster-scoped objects are recorded.
pub use migrate_core::EVENTS_NAMESPACE;

impl Cluster {
    /// Records an Event about a Namespace (`reason` is CamelCase, e.g. `StepStarted`). Returns whether it
    /// was written; errors are logged. Skipped in dry-run mode (as a dry-run create).
    pub async fn emit_event(
        &self,
        involved: &Namespace,
        reason: &str,
        message: &str,
        type_: EventType,
    ) -> bool {
        let ns_name = involved.metadata.name.clone().unwrap_or_default();
        let now = Time(jiff::Timestamp::now());
        // Same naming as client-go: <involved name>.<unique hex suffix>.
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        let ev = Event {
            metadata: ObjectMeta {
                name: Some(format!("{ns_name}.{}", &suffix[..16])),
                namespace: Some(EVENTS_NAMESPACE.to_string()),
                labels: Some([(MANAGED_BY_LABEL.to_string(), MANAGED_BY_VALUE.to_string())].into()),
                ..Default::default()
            },
            involved_object: ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Namespace".into()),
                name: Some(ns_name.clone()),
                uid: involved.metadata.uid.clone(),
                resource_version: involved.metadata.resource_version.clone(),
                ..Default::default()
            },
            reason: Some(reason.to_string()),
            message: Some(message.to_string()),
            type_: Some(type_.as_str().to_string()),
            count: Some(1),
            first_timestamp: Some(now.clone()),
            last_timestamp: Some(now),
            reporting_component: Some(MANAGED_BY_VALUE.to_string()),
            reporting_instance: Some(hostname()),
            source: Some(EventSource {
                component: Some(MANAGED_BY_VALUE.to_string()),
                host: None,
            }),
            ..Default::default()
        };
        let api: kube::Api<Event> = self.namespaced(EVENTS_NAMESPACE);
        let pp = self.post_params();
        let what = format!("create Event {reason} for Namespace {ns_name}");
        match self.call(&what, || api.create(&pp, &ev)).await {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(error = %e, namespace = %ns_name, reason, "could not record a Kubernetes Event");
                false
            }
        }
    }
}

/// This machine's host name (runner identity, Event reporting instance).
pub(crate) fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|s| s.trim().to_string())
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}
