//! Access checks: asks the API server whether the runner's identity may make the requests a command needs
//! (`kubectl auth can-i` does the same). A review creates nothing. Each namespace is asked once, for all
//! its rules (SelfSubjectRulesReview, `kubectl auth can-i --list`); a SelfSubjectAccessReview per
//! permission is only sent for what cluster-scope questions and the rules do not prove, so a fleet of N
//! namespaces costs about N reviews, not N times the number of permissions.

use futures::StreamExt;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec, SelfSubjectRulesReview,
    SelfSubjectRulesReviewSpec,
};
use kube::api::PostParams;

use super::{Cluster, ClusterError};
use crate::assess::permissions::{self, Permission, ResourceRule};

/// Reviews in flight at once (a 1,000-namespace fleet needs tens of thousands of answers when the
/// grants are per namespace).
const CONCURRENT_REVIEWS: usize = 16;

impl Cluster {
    /// Whether the caller may make the request `p` describes.
    pub async fn can_i(&self, p: &Permission) -> Result<bool, ClusterError> {
        let (resource, sub) = match p.resource.split_once('/') {
            Some((r, s)) => (r.to_string(), Some(s.to_string())),
            None => (p.resource.to_string(), None),
        };
        let review = SelfSubjectAccessReview {
            spec: SelfSubjectAccessReviewSpec {
                resource_attributes: Some(ResourceAttributes {
                    namespace: p.namespace.as_deref().map(str::to_string),
                    verb: Some(p.verb.to_string()),
                    group: Some(p.group.to_string()),
                    resource: Some(resource),
                    subresource: sub,
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let api: kube::Api<SelfSubjectAccessReview> = self.all();
        // Never dry-run: a review changes nothing, and a dry-run review would not be evaluated.
        let pp = PostParams::default();
        let what = format!(
            "SelfSubjectAccessReview {}",
            crate::assess::permissions::describe(p)
        );
        let answer = self.call(&what, || api.create(&pp, &review)).await?;
        Ok(answer.status.is_some_and(|s| s.allowed))
    }

    /// The rules the caller has in `ns` (its RoleBindings' and the ClusterRoleBindings' rules). An
    /// incomplete answer is still used: it only proves what it lists.
    pub async fn rules_in(&self, ns: &str) -> Result<Vec<ResourceRule>, ClusterError> {
        let review = SelfSubjectRulesReview {
            spec: SelfSubjectRulesReviewSpec {
                namespace: Some(ns.to_string()),
            },
            ..Default::default()
        };
        let api: kube::Api<SelfSubjectRulesReview> = self.all();
        let pp = PostParams::default();
        let what = format!("SelfSubjectRulesReview of namespace {ns}");
        let answer = self.call(&what, || api.create(&pp, &review)).await?;
        Ok(answer
            .status
            .map(|s| s.resource_rules)
            .unwrap_or_default()
            .into_iter()
            .map(|r| ResourceRule {
                verbs: r.verbs,
                api_groups: r.api_groups.unwrap_or_default(),
                resources: r.resources.unwrap_or_default(),
                resource_names: r.resource_names.unwrap_or_default(),
            })
            .collect())
    }

    /// The permissions of `needed` the caller lacks. A permission needed in several namespaces is first
    /// asked at cluster scope (a ClusterRoleBinding grants it everywhere, one review instead of one per
    /// namespace); what is left is proven per namespace by one rules review, and only what those rules do
    /// not show is asked one permission at a time (the definitive answer).
    pub async fn missing_permissions(&self, needed: &[Permission]) -> Result<Vec<Permission>, ClusterError> {
        let wide = permissions::cluster_wide_candidates(needed);
        let wide_answers = self.ask_all(&wide).await?;
        let granted: Vec<&Permission> = wide
            .iter()
            .zip(&wide_answers)
            .filter(|(_, ok)| **ok)
            .map(|(p, _)| p)
            .collect();
        let rest: Vec<Permission> = needed
            .iter()
            .filter(|p| {
                !granted
                    .iter()
                    .any(|g| g.group == p.group && g.resource == p.resource && g.verb == p.verb)
            })
            .cloned()
            .collect();
        let namespaces: std::collections::BTreeSet<&str> =
            rest.iter().filter_map(|p| p.namespace.as_deref()).collect();
        let rules: Vec<Result<(String, Vec<ResourceRule>), ClusterError>> = futures::stream::iter(namespaces)
            .map(|ns| async move { Ok((ns.to_string(), self.rules_in(ns).await?)) })
            .buffered(CONCURRENT_REVIEWS)
            .collect()
            .await;
        let mut to_ask: Vec<Permission> = rest.iter().filter(|p| p.namespace.is_none()).cloned().collect();
        for r in rules {
            let (ns, rules) = r?;
            to_ask.extend(
                permissions::unproven_by_rules(&rest, &ns, &rules)
                    .into_iter()
                    .cloned(),
            );
        }
        let answers = self.ask_all(&to_ask).await?;
        let mut missing: Vec<Permission> = to_ask
            .into_iter()
            .zip(answers)
            .filter(|(_, ok)| !ok)
            .map(|(p, _)| p)
            .collect();
        missing.sort();
        Ok(missing)
    }

    async fn ask_all(&self, ps: &[Permission]) -> Result<Vec<bool>, ClusterError> {
        let answers: Vec<Result<bool, ClusterError>> = futures::stream::iter(ps)
            .map(|p| self.can_i(p))
            .buffered(CONCURRENT_REVIEWS)
            .collect()
            .await;
        answers.into_iter().collect()
    }
}
