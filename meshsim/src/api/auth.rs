//! Authentication, impersonation and RBAC authorisation, as kube-apiserver runs them in front of every
//! resource handler (see `MODEL.md`, "Identities and RBAC"):
//!
//! - bearer tokens: the admin token of the generated kubeconfig (group `system:masters`), and ServiceAccount
//!   tokens issued by the TokenRequest API (`serviceaccounts/token`, `kubectl create token`); an unknown or
//!   expired token is 401. A request without credentials is the administrator too: meshsim serves plain
//!   HTTP, and kubectl (client-go's `clientcmd`) only sends credentials over TLS (kubernetes/kubectl#744),
//!   so kubectl reaches meshsim without a token; this is the old insecure port's behaviour
//!   (`--insecure-port`, no authentication and no authorisation). kubectl acts as another identity with
//!   `--as` (impersonation headers are sent over HTTP); kube-rs sends bearer tokens over HTTP;
//! - `Impersonate-User` / `Impersonate-Group` / `Impersonate-Uid`, each checked with the `impersonate` verb
//!   (`k8s.io/apiserver/pkg/endpoints/filters/impersonation.go`);
//! - RBAC over the Role, ClusterRole, RoleBinding and ClusterRoleBinding objects in the store, plus the
//!   bootstrap roles every cluster has (`plugin/pkg/auth/authorizer/rbac/rbac.go`,
//!   `plugin/pkg/auth/authorizer/rbac/bootstrappolicy/policy.go`); `system:masters` is always allowed
//!   (`pkg/kubeapiserver/authorizer/config.go`, the privileged-groups authorizer);
//! - the Forbidden Status of `k8s.io/apiserver/pkg/endpoints/handlers/responsewriters/errors.go`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

use crate::resources;
use crate::store::StoreView;

/// The token of the kubeconfig meshsim writes: a cluster administrator.
pub const ADMIN_TOKEN: &str = "meshsim";
/// The administrator's user name (as kubeadm names its admin client).
pub const ADMIN_USER: &str = "kubernetes-admin";
/// The group the API server never denies anything.
pub const MASTERS: &str = "system:masters";
/// Every authenticated identity is in this group.
pub const AUTHENTICATED: &str = "system:authenticated";
/// The group of anonymous requests (impersonation may name it).
pub const UNAUTHENTICATED: &str = "system:unauthenticated";
/// The anonymous user name (impersonating it adds no `system:authenticated`).
pub const ANONYMOUS: &str = "system:anonymous";
const SA_PREFIX: &str = "system:serviceaccount:";

/// An authenticated identity (`user.Info`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
}

impl User {
    /// The kubeconfig's administrator.
    pub fn admin() -> Self {
        User {
            name: ADMIN_USER.into(),
            uid: String::new(),
            groups: vec![MASTERS.into(), AUTHENTICATED.into()],
        }
    }

    /// A ServiceAccount, with the groups the token authenticator gives it
    /// (`k8s.io/apiserver/pkg/authentication/serviceaccount/util.go`, `MakeGroupNames`).
    pub fn service_account(namespace: &str, name: &str, uid: &str) -> Self {
        User {
            name: format!("{SA_PREFIX}{namespace}:{name}"),
            uid: uid.into(),
            groups: sa_groups(namespace, true),
        }
    }

    fn in_group(&self, g: &str) -> bool {
        self.groups.iter().any(|x| x == g)
    }

    /// `userInfo` of a SelfSubjectReview.
    pub fn to_json(&self) -> Value {
        let mut v = json!({"username": self.name, "groups": self.groups});
        if !self.uid.is_empty() {
            v["uid"] = json!(self.uid);
        }
        v
    }
}

fn sa_groups(namespace: &str, authenticated: bool) -> Vec<String> {
    let mut g = vec![
        "system:serviceaccounts".to_string(),
        format!("system:serviceaccounts:{namespace}"),
    ];
    if authenticated {
        g.push(AUTHENTICATED.into());
    }
    g
}

/// `(namespace, name)` of a `system:serviceaccount:NS:NAME` user name.
pub fn split_sa_username(name: &str) -> Option<(&str, &str)> {
    let rest = name.strip_prefix(SA_PREFIX)?;
    let (ns, sa) = rest.split_once(':')?;
    (!ns.is_empty() && !sa.is_empty() && !sa.contains(':')).then_some((ns, sa))
}

#[derive(Debug, Clone)]
struct Issued {
    namespace: String,
    name: String,
    uid: String,
    expires: SystemTime,
}

/// ServiceAccount tokens issued by TokenRequest. Opaque random strings: a token is valid while it has not
/// expired and its ServiceAccount (same uid) still exists, as bound tokens are.
#[derive(Debug, Default)]
pub struct Tokens {
    inner: Mutex<HashMap<String, Issued>>,
}

impl Tokens {
    /// Issues a token for a ServiceAccount, valid for `ttl`; returns it with its expiry time.
    pub fn issue(&self, namespace: &str, name: &str, uid: &str, ttl: Duration) -> (String, SystemTime) {
        let token = format!("meshsim-sa.{}", crate::store::random_suffix(40));
        let expires = SystemTime::now() + ttl;
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).insert(
            token.clone(),
            Issued {
                namespace: namespace.into(),
                name: name.into(),
                uid: uid.into(),
                expires,
            },
        );
        (token, expires)
    }

    fn lookup(&self, token: &str) -> Option<Issued> {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(token)
            .cloned()
    }
}

/// Who sent a request: `None` when the credentials are invalid (401). No credentials: the administrator
/// (see the module comment).
pub fn authenticate(view: &StoreView<'_>, tokens: &Tokens, authorization: &str) -> Option<User> {
    let authorization = authorization.trim();
    if authorization.is_empty() {
        return Some(User::admin());
    }
    let token = authorization
        .strip_prefix("Bearer ")
        .or_else(|| authorization.strip_prefix("bearer "))?
        .trim();
    if token == ADMIN_TOKEN {
        return Some(User::admin());
    }
    let issued = tokens.lookup(token)?;
    if issued.expires < SystemTime::now() {
        return None;
    }
    let sa = view.get(
        resources::core("serviceaccounts"),
        &issued.namespace,
        &issued.name,
    )?;
    (sa["metadata"]["uid"].as_str() == Some(issued.uid.as_str()))
        .then(|| User::service_account(&issued.namespace, &issued.name, &issued.uid))
}

/// What authorisation is asked about (`authorizer.Attributes`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attributes {
    pub verb: String,
    /// A resource request (else a non-resource URL such as `/api` or `/version`).
    pub resource_request: bool,
    pub group: String,
    pub version: String,
    pub resource: String,
    pub subresource: String,
    pub namespace: String,
    pub name: String,
    /// The URL path of a non-resource request.
    pub path: String,
}

impl Attributes {
    /// A resource request's attributes.
    pub fn resource(verb: &str, group: &str, resource: &str, namespace: &str, name: &str) -> Self {
        Attributes {
            verb: verb.into(),
            resource_request: true,
            group: group.into(),
            version: "v1".into(),
            resource: resource.into(),
            namespace: namespace.into(),
            name: name.into(),
            ..Default::default()
        }
    }

    /// `resource` or `resource/subresource`, as rules name it.
    pub fn combined_resource(&self) -> String {
        if self.subresource.is_empty() {
            self.resource.clone()
        } else {
            format!("{}/{}", self.resource, self.subresource)
        }
    }
}

/// One RBAC rule (`rbacv1.PolicyRule`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PolicyRule {
    pub verbs: Vec<String>,
    pub api_groups: Vec<String>,
    pub resources: Vec<String>,
    pub resource_names: Vec<String>,
    pub non_resource_urls: Vec<String>,
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_string)
        .collect()
}

fn owned(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

impl PolicyRule {
    /// From a Role's or ClusterRole's `rules[]` entry.
    pub fn from_json(v: &Value) -> Self {
        PolicyRule {
            verbs: strings(&v["verbs"]),
            api_groups: strings(&v["apiGroups"]),
            resources: strings(&v["resources"]),
            resource_names: strings(&v["resourceNames"]),
            non_resource_urls: strings(&v["nonResourceURLs"]),
        }
    }

    fn resource_rule(verbs: &[&str], groups: &[&str], resources: &[&str]) -> Self {
        PolicyRule {
            verbs: owned(verbs),
            api_groups: owned(groups),
            resources: owned(resources),
            ..Default::default()
        }
    }

    fn url_rule(verbs: &[&str], urls: &[&str]) -> Self {
        PolicyRule {
            verbs: owned(verbs),
            non_resource_urls: owned(urls),
            ..Default::default()
        }
    }

    /// `RuleAllows` of `rbac.go`: verb, then group, resource (`*`, exact `resource/sub`, or `*/sub`) and
    /// resourceNames (an empty list allows every name; a list never allows a request without a name), or
    /// for non-resource requests the URL (exact, or a prefix ending in `*`).
    pub fn allows(&self, a: &Attributes) -> bool {
        let has = |list: &[String], x: &str| list.iter().any(|s| s == "*" || s == x);
        if !has(&self.verbs, &a.verb) {
            return false;
        }
        if !a.resource_request {
            return self.non_resource_urls.iter().any(|u| {
                u == "*" || *u == a.path || u.strip_suffix('*').is_some_and(|p| a.path.starts_with(p))
            });
        }
        if !has(&self.api_groups, &a.group) {
            return false;
        }
        let combined = a.combined_resource();
        let resource_ok = self.resources.iter().any(|r| {
            r == "*"
                || *r == combined
                || (!a.subresource.is_empty() && r.strip_prefix("*/") == Some(a.subresource.as_str()))
        });
        resource_ok
            && (self.resource_names.is_empty()
                || (!a.name.is_empty() && self.resource_names.contains(&a.name)))
    }

    /// The rule as `resourceRules[]` / `nonResourceRules[]` of a SelfSubjectRulesReview show it.
    pub fn to_json(&self) -> Value {
        if !self.non_resource_urls.is_empty() {
            return json!({"verbs": self.verbs, "nonResourceURLs": self.non_resource_urls});
        }
        let mut v = json!({"verbs": self.verbs, "apiGroups": self.api_groups, "resources": self.resources});
        if !self.resource_names.is_empty() {
            v["resourceNames"] = json!(self.resource_names);
        }
        v
    }
}

/// A rule and the binding that grants it (for the "allowed by" reason).
#[derive(Debug, Clone)]
pub struct Grant {
    pub rule: PolicyRule,
    pub via: String,
}

/// The bootstrap ClusterRoles every cluster binds to its default groups (`bootstrappolicy/policy.go`:
/// `system:discovery` and `system:basic-user` to `system:authenticated`, `system:public-info-viewer` to
/// both `system:authenticated` and `system:unauthenticated`). meshsim keeps them in code rather than as
/// objects, so a fixture's object count is unchanged.
fn bootstrap(user: &User) -> Vec<Grant> {
    let mut out = Vec::new();
    let mut grant = |role: &str, group: &str, rule: PolicyRule| {
        if user.in_group(group) {
            out.push(Grant {
                rule,
                via: format!("ClusterRoleBinding \"{role}\" of ClusterRole \"{role}\" to Group \"{group}\""),
            });
        }
    };
    let info = ["/healthz", "/livez", "/readyz", "/version", "/version/"];
    for g in [AUTHENTICATED, UNAUTHENTICATED] {
        grant(
            "system:public-info-viewer",
            g,
            PolicyRule::url_rule(&["get"], &info),
        );
    }
    grant(
        "system:discovery",
        AUTHENTICATED,
        PolicyRule::url_rule(
            &["get"],
            &[
                "/api",
                "/api/*",
                "/apis",
                "/apis/*",
                "/openapi",
                "/openapi/*",
                "/version",
                "/version/",
            ],
        ),
    );
    grant(
        "system:basic-user",
        AUTHENTICATED,
        PolicyRule::resource_rule(
            &["create"],
            &["authorization.k8s.io"],
            &["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
        ),
    );
    grant(
        "system:basic-user",
        AUTHENTICATED,
        PolicyRule::resource_rule(&["create"], &["authentication.k8s.io"], &["selfsubjectreviews"]),
    );
    out
}

/// `appliesToUser` of `rbac.go`: a ServiceAccount subject without a namespace means the binding's own.
fn subject_applies(user: &User, subject: &Value, binding_ns: &str) -> bool {
    let name = subject["name"].as_str().unwrap_or("");
    match subject["kind"].as_str() {
        Some("User") => user.name == name,
        Some("Group") => user.in_group(name),
        Some("ServiceAccount") => {
            let ns = subject["namespace"]
                .as_str()
                .filter(|n| !n.is_empty())
                .unwrap_or(binding_ns);
            !ns.is_empty() && user.name == format!("{SA_PREFIX}{ns}:{name}")
        }
        _ => false,
    }
}

fn subject_label(user: &User) -> String {
    match split_sa_username(&user.name) {
        Some((ns, name)) => format!("ServiceAccount \"{name}/{ns}\""),
        None => format!("User \"{}\"", user.name),
    }
}

/// Every rule granted to `user` for `namespace` (`""`: cluster scope only), as `VisitRulesFor` walks them:
/// ClusterRoleBindings, then the namespace's RoleBindings. Bindings whose role is missing are skipped and
/// reported in the second value (the reason a denial carries).
pub fn rules_for(view: &StoreView<'_>, user: &User, namespace: &str) -> (Vec<Grant>, Vec<String>) {
    let rbac = |p: &str| resources::id("rbac.authorization.k8s.io", p);
    let mut grants = bootstrap(user);
    let mut errors = Vec::new();
    let mut role_rules = |kind: &str, ns: &str, name: &str, via: String, grants: &mut Vec<Grant>| {
        let (res, role_ns, qualified) = if kind == "Role" {
            (rbac("roles"), ns, "roles.rbac.authorization.k8s.io")
        } else {
            (rbac("clusterroles"), "", "clusterroles.rbac.authorization.k8s.io")
        };
        match view.get(res, role_ns, name) {
            Some(role) => {
                for r in role["rules"].as_array().into_iter().flatten() {
                    grants.push(Grant {
                        rule: PolicyRule::from_json(r),
                        via: via.clone(),
                    });
                }
            }
            None => errors.push(format!("{qualified} \"{name}\" not found")),
        }
    };
    for b in view.list(rbac("clusterrolebindings"), None) {
        let subjects = b["subjects"].as_array().into_iter().flatten();
        if subjects.clone().any(|s| subject_applies(user, s, "")) && b["roleRef"]["kind"] == "ClusterRole" {
            let role = b["roleRef"]["name"].as_str().unwrap_or("");
            let via = format!(
                "ClusterRoleBinding \"{}\" of ClusterRole \"{role}\" to {}",
                b["metadata"]["name"].as_str().unwrap_or(""),
                subject_label(user)
            );
            role_rules("ClusterRole", "", role, via, &mut grants);
        }
    }
    if !namespace.is_empty() {
        for b in view.list(rbac("rolebindings"), Some(namespace)) {
            let mut subjects = b["subjects"].as_array().into_iter().flatten();
            if subjects.any(|s| subject_applies(user, s, namespace)) {
                let kind = b["roleRef"]["kind"].as_str().unwrap_or("");
                let role = b["roleRef"]["name"].as_str().unwrap_or("");
                let via = format!(
                    "RoleBinding \"{}/{namespace}\" of {kind} \"{role}\" to {}",
                    b["metadata"]["name"].as_str().unwrap_or(""),
                    subject_label(user)
                );
                role_rules(kind, namespace, role, via, &mut grants);
            }
        }
    }
    (grants, errors)
}

/// An authorisation decision with its reason (`RBAC: allowed by ...`, or why nothing matched).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow(String),
    Deny(String),
}

impl Decision {
    pub fn allowed(&self) -> bool {
        matches!(self, Decision::Allow(_))
    }
}

/// Authorises a request: `system:masters` always, otherwise the first RBAC rule that allows it.
pub fn authorize(view: &StoreView<'_>, user: &User, a: &Attributes) -> Decision {
    if user.in_group(MASTERS) {
        return Decision::Allow(String::new());
    }
    let (grants, errors) = rules_for(view, user, &a.namespace);
    match grants.iter().find(|g| g.rule.allows(a)) {
        Some(g) => Decision::Allow(format!("RBAC: allowed by {}", g.via)),
        None if errors.is_empty() => Decision::Deny(String::new()),
        None => Decision::Deny(format!("RBAC: [{}]", errors.join(", "))),
    }
}

/// `forbiddenMessage` of `responsewriters/errors.go`.
pub fn forbidden_message(user: &User, a: &Attributes) -> String {
    if !a.resource_request {
        return format!("User {:?} cannot {} path {:?}", user.name, a.verb, a.path);
    }
    let resource = a.combined_resource();
    if a.namespace.is_empty() {
        format!(
            "User {:?} cannot {} resource {resource:?} in API group {:?} at the cluster scope",
            user.name, a.verb, a.group
        )
    } else {
        format!(
            "User {:?} cannot {} resource {resource:?} in API group {:?} in the namespace {:?}",
            user.name, a.verb, a.group, a.namespace
        )
    }
}

/// The 403 Status body: `apierrors.NewForbidden(groupResource, name, forbiddenMessage[: reason])`.
pub fn forbidden_status(user: &User, a: &Attributes, reason: &str) -> Value {
    let mut msg = forbidden_message(user, a);
    if !reason.is_empty() {
        msg = format!("{msg}: {reason}");
    }
    let qualified = if a.group.is_empty() {
        a.resource.clone()
    } else {
        format!("{}.{}", a.resource, a.group)
    };
    let message = if !a.resource_request || a.resource.is_empty() {
        format!("forbidden: {msg}")
    } else if a.name.is_empty() {
        format!("{qualified} is forbidden: {msg}")
    } else {
        format!("{qualified} {:?} is forbidden: {msg}", a.name)
    };
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": "Forbidden",
        "details": {"name": a.name, "group": a.group, "kind": a.resource}, "code": 403})
}

/// The impersonation headers of a request.
#[derive(Debug, Clone, Default)]
pub struct Impersonation {
    pub user: Option<String>,
    pub groups: Vec<String>,
    pub uid: Option<String>,
}

impl Impersonation {
    pub fn is_empty(&self) -> bool {
        self.user.is_none() && self.groups.is_empty() && self.uid.is_none()
    }
}

/// Why an impersonation was refused.
#[derive(Debug, Clone)]
pub enum ImpersonationError {
    /// 400: groups or uid without a user.
    BadRequest(String),
    /// 403: the requester may not act as this user, group or uid.
    Forbidden(Box<Attributes>),
}

/// Applies impersonation headers (`filters/impersonation.go`): the requester needs `impersonate` on
/// `users` (or `serviceaccounts` in the ServiceAccount's namespace), on `groups` for each group and on
/// `authentication.k8s.io/uids`. The new identity gets `system:authenticated` unless it names
/// `system:authenticated` or `system:unauthenticated` itself; a ServiceAccount without groups gets the
/// ServiceAccount groups.
pub fn impersonate(
    view: &StoreView<'_>,
    requester: &User,
    imp: &Impersonation,
) -> Result<User, ImpersonationError> {
    let Some(name) = imp.user.as_deref() else {
        return Err(ImpersonationError::BadRequest(format!(
            "requested {:?} without impersonating a user",
            imp.groups
        )));
    };
    let mut checks = Vec::new();
    let sa = split_sa_username(name);
    checks.push(match sa {
        Some((ns, sa)) => Attributes::resource("impersonate", "", "serviceaccounts", ns, sa),
        None => Attributes::resource("impersonate", "", "users", "", name),
    });
    for g in &imp.groups {
        checks.push(Attributes::resource("impersonate", "", "groups", "", g));
    }
    if let Some(uid) = &imp.uid {
        checks.push(Attributes::resource(
            "impersonate",
            "authentication.k8s.io",
            "uids",
            "",
            uid,
        ));
    }
    for a in checks {
        if !authorize(view, requester, &a).allowed() {
            return Err(ImpersonationError::Forbidden(Box::new(a)));
        }
    }
    let mut groups = imp.groups.clone();
    if groups.is_empty()
        && let Some((ns, _)) = sa
    {
        groups = sa_groups(ns, false);
    }
    if name != ANONYMOUS && !groups.iter().any(|g| g == AUTHENTICATED || g == UNAUTHENTICATED) {
        groups.push(AUTHENTICATED.into());
    }
    Ok(User {
        name: name.into(),
        uid: imp.uid.clone().unwrap_or_default(),
        groups,
    })
}

/// The answer to a SelfSubjectAccessReview / SelfSubjectRulesReview / SelfSubjectReview body, for `user`.
pub fn review(view: &StoreView<'_>, user: &User, kind: &str, body: &Value) -> Result<Value, String> {
    let mut out = body.clone();
    if !out.is_object() {
        return Err("the body of the request was not an object".into());
    }
    out["metadata"] = json!({"creationTimestamp": null});
    match kind {
        "SelfSubjectAccessReview" => {
            let spec = &body["spec"];
            let a = if let Some(r) = spec.get("resourceAttributes").filter(|r| r.is_object()) {
                let s = |k: &str| r[k].as_str().unwrap_or("").to_string();
                Attributes {
                    verb: s("verb"),
                    resource_request: true,
                    group: s("group"),
                    version: s("version"),
                    resource: s("resource"),
                    subresource: s("subresource"),
                    namespace: s("namespace"),
                    name: s("name"),
                    path: String::new(),
                }
            } else if let Some(n) = spec.get("nonResourceAttributes").filter(|r| r.is_object()) {
                Attributes {
                    verb: n["verb"].as_str().unwrap_or("").into(),
                    path: n["path"].as_str().unwrap_or("").into(),
                    ..Default::default()
                }
            } else {
                return Err("spec.resourceAttributes: Required value: exactly one of nonResourceAttributes or resourceAttributes must be specified".into());
            };
            out["status"] = match authorize(view, user, &a) {
                Decision::Allow(reason) => json!({"allowed": true, "reason": reason}),
                Decision::Deny(reason) => json!({"allowed": false, "reason": reason}),
            };
        }
        "SelfSubjectRulesReview" => {
            let ns = body["spec"]["namespace"].as_str().unwrap_or("");
            let rules: Vec<PolicyRule> = if user.in_group(MASTERS) {
                vec![
                    PolicyRule::resource_rule(&["*"], &["*"], &["*"]),
                    PolicyRule::url_rule(&["*"], &["*"]),
                ]
            } else {
                rules_for(view, user, ns).0.into_iter().map(|g| g.rule).collect()
            };
            let (urls, res): (Vec<&PolicyRule>, Vec<&PolicyRule>) =
                rules.iter().partition(|r| !r.non_resource_urls.is_empty());
            out["status"] = json!({
                "resourceRules": res.iter().map(|r| r.to_json()).collect::<Vec<_>>(),
                "nonResourceRules": urls.iter().map(|r| r.to_json()).collect::<Vec<_>>(),
                "incomplete": false,
            });
        }
        _ => out["status"] = json!({"userInfo": user.to_json()}),
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(v: Value) -> PolicyRule {
        PolicyRule::from_json(&v)
    }

    #[test]
    fn rules_match_like_rbac() {
        let mut a = Attributes::resource("get", "", "pods", "shop", "web");
        let r = rule(json!({"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}));
        assert!(r.allows(&a));
        a.subresource = "log".into();
        assert!(!r.allows(&a), "pods does not grant pods/log");
        assert!(rule(json!({"verbs": ["get"], "apiGroups": [""], "resources": ["*/log"]})).allows(&a));
        assert!(rule(json!({"verbs": ["get"], "apiGroups": [""], "resources": ["pods/log"]})).allows(&a));
        let named = rule(
            json!({"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods"], "resourceNames": ["web"]}),
        );
        assert!(named.allows(&Attributes::resource("get", "", "pods", "shop", "web")));
        assert!(!named.allows(&Attributes::resource("get", "", "pods", "shop", "db")));
        assert!(!named.allows(&Attributes::resource("list", "", "pods", "shop", "")));
        let url = rule(json!({"verbs": ["get"], "nonResourceURLs": ["/apis/*"]}));
        let d = Attributes {
            verb: "get".into(),
            path: "/apis/apps/v1".into(),
            ..Default::default()
        };
        assert!(url.allows(&d));
        assert!(!url.allows(&Attributes {
            path: "/version".into(),
            ..d
        }));
    }

    #[test]
    fn forbidden_message_has_the_apiserver_wording() {
        let u = User::service_account("ci", "runner", "u1");
        let a = Attributes::resource("patch", "", "namespaces", "shop", "shop");
        let s = forbidden_status(&u, &a, "");
        assert_eq!(
            s["message"],
            "namespaces \"shop\" is forbidden: User \"system:serviceaccount:ci:runner\" cannot patch resource \"namespaces\" in API group \"\" in the namespace \"shop\""
        );
        let a = Attributes::resource("list", "apps", "deployments", "", "");
        assert_eq!(
            forbidden_status(&u, &a, "")["message"],
            "deployments.apps is forbidden: User \"system:serviceaccount:ci:runner\" cannot list resource \"deployments\" in API group \"apps\" at the cluster scope"
        );
        assert_eq!(
            split_sa_username("system:serviceaccount:ci:runner"),
            Some(("ci", "runner"))
        );
        assert_eq!(split_sa_username("alice"), None);
    }
}
