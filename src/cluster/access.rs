//! Access checks: asks the API server, with SelfSubjectAccessReview, whether the runner's identity may
//! make the requests a command needs (`kubectl auth can-i` does the same). A review creates nothing.

use futures::StreamExt;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use kube::api::PostParams;

use super::{Cluster, ClusterError};
use crate::assess::permissions::Permission;

/// Reviews in flight at once (a 1,000-namespace fleet needs tens of thousands of answers when the
/// grants are per namespace).
const CONCURRENT_REVIEWS: usize = 16;

impl Cluster {
    /// Whether the caller may make the request `p` describes.
    pub async fn can_i(&self, p: &Permission) -> Result<bool, ClusterError> {
        let (resource, sub) = match p.resource.split_once('/') {
            Some((r, s)) => (r.to_string(), Some(s.to_string())),
            None => (p.resource.clone(), None),
        };
        let review = SelfSubjectAccessReview {
            spec: SelfSubjectAccessReviewSpec {
                resource_attributes: Some(ResourceAttributes {
                    namespace: p.namespace.clone(),
                    verb: Some(p.verb.clone()),
                    group: Some(p.group.clone()),
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

    /// The permissions of `needed` the caller lacks. A permission needed in several namespaces is first
    /// asked at cluster scope (a ClusterRoleBinding grants it everywhere, one review instead of one per
    /// namespace); only when that is denied is each namespace asked.
    pub async fn missing_permissions(&self, needed: &[Permission]) -> Result<Vec<Permission>, ClusterError> {
        let wide = crate::assess::permissions::cluster_wide_candidates(needed);
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
        let answers = self.ask_all(&rest).await?;
        Ok(rest
            .into_iter()
            .zip(answers)
            .filter(|(_, ok)| !ok)
            .map(|(p, _)| p)
            .collect())
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
