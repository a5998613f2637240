//! The Kubernetes permissions a command needs, decided from what it will touch, so the runner can ask the
//! API server (SelfSubjectAccessReview) before its first write and stop with every missing grant named,
//! instead of meeting a 403 half way through a namespace.
//!
//! The sets mirror the calls the code makes (verbs as RBAC names them: `get`, `list`, `watch`, `create`,
//! `update`, `patch`, `delete`), per scope: cluster-wide objects (Namespaces, webhook configurations),
//! each target namespace, the state namespace (journals, backups, the fleet Lease), the Istio system
//! namespace (mesh config, ztunnel, root-namespace policies), the namespace Events about Namespaces are
//! recorded in, and each Job probe's source namespace. Pure: no I/O.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use serde::Serialize;

use crate::EVENTS_NAMESPACE;

/// The Istio system namespace the engine reads (ztunnel DaemonSet, mesh config, root-namespace policies).
pub const ISTIO_NAMESPACE: &str = "istio-system";

/// The command whose permissions are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Read-only assessment (missing permissions are reported, never fatal).
    Plan,
    Run,
    Rollback,
    Restore,
    Backup,
}

/// What a command will touch.
#[derive(Debug, Clone)]
pub struct Scope<'a> {
    pub command: Command,
    /// The namespaces migrated, rolled back, restored or backed up.
    pub targets: &'a [String],
    pub state_namespace: &'a str,
    /// Source namespaces of Job probes (Jobs, their pods and logs live there).
    pub probe_namespaces: &'a [String],
    /// Those of them where a Job probe has secret headers (held in a Secret the Job owns).
    pub secret_probe_namespaces: &'a [String],
}

/// One permission: a verb on a resource (`plural` or `plural/sub`) of an API group, in a namespace or at
/// cluster scope (`namespace: None`).
///
/// A fleet needs tens of thousands of them (about 90 per target namespace), so one is 80 bytes and owns
/// no allocation: the group, resource, verb and reason are the constants of [`required`], and a
/// namespace's name is shared by all of its permissions.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Permission {
    pub namespace: Option<Arc<str>>,
    pub group: &'static str,
    pub resource: &'static str,
    pub verb: &'static str,
    /// Why the command needs it (shown next to the missing rule).
    pub why: &'static str,
}

/// `(group, resources)` of the objects a namespace's backup holds and restore/rollback recreate, replace or
/// delete (`backup.rs`), plus the bridge and twin policies and HTTPRoutes steps 4 and 5 create.
const BACKED_UP: &[(&str, &[&str])] = &[
    (
        "security.istio.io",
        &[
            "authorizationpolicies",
            "peerauthentications",
            "requestauthentications",
        ],
    ),
    (
        "networking.istio.io",
        &["virtualservices", "destinationrules", "sidecars"],
    ),
    ("telemetry.istio.io", &["telemetries"]),
    ("gateway.networking.k8s.io", &["gateways", "httproutes"]),
];

/// `(group, resources)` the preflight lists in every target namespace.
const ASSESSED: &[(&str, &[&str])] = &[
    ("", &["pods", "services"]),
    (
        "apps",
        &["deployments", "statefulsets", "daemonsets", "replicasets"],
    ),
    ("batch", &["jobs", "cronjobs"]),
    (
        "security.istio.io",
        &[
            "authorizationpolicies",
            "peerauthentications",
            "requestauthentications",
        ],
    ),
    (
        "networking.istio.io",
        &[
            "virtualservices",
            "destinationrules",
            "sidecars",
            "serviceentries",
            "envoyfilters",
            "proxyconfigs",
        ],
    ),
    ("telemetry.istio.io", &["telemetries"]),
    ("extensions.istio.io", &["wasmplugins"]),
    ("gateway.networking.k8s.io", &["gateways", "httproutes"]),
    ("monitoring.coreos.com", &["podmonitors", "servicemonitors"]),
];

/// Where a rule of [`Acc`] applies.
#[derive(Clone, Copy)]
enum Where<'a> {
    Cluster,
    In(&'a str),
    Each(&'a [String]),
}

/// One call of [`Acc::add`] or [`Acc::each`]: `verbs` on `resources` of `group`, `where`.
struct Rule<'a> {
    at: Where<'a>,
    group: &'static str,
    resources: &'static [&'static str],
    verbs: &'static [&'static str],
    why: &'static str,
}

/// The rules of [`required`], in the order given: expanded into permissions one namespace at a time
/// ([`Acc::expand`]), so that the only thing as large as the fleet is the answer itself (a map of every
/// (namespace, group, resource, verb) held 15 MB at 1,000 namespaces).
struct Acc<'a>(Vec<Rule<'a>>);

impl<'a> Acc<'a> {
    fn add(
        &mut self,
        ns: Option<&'a str>,
        group: &'static str,
        resources: &'static [&'static str],
        verbs: &'static [&'static str],
        why: &'static str,
    ) {
        let at = ns.map_or(Where::Cluster, Where::In);
        self.0.push(Rule {
            at,
            group,
            resources,
            verbs,
            why,
        });
    }

    fn each(
        &mut self,
        namespaces: &'a [String],
        group: &'static str,
        resources: &'static [&'static str],
        verbs: &'static [&'static str],
        why: &'static str,
    ) {
        self.0.push(Rule {
            at: Where::Each(namespaces),
            group,
            resources,
            verbs,
            why,
        });
    }

    /// Every permission, sorted by (namespace, group, resource, verb), once each with the first reason
    /// given for it.
    fn expand(self) -> Vec<Permission> {
        let mut namespaces: BTreeSet<&str> = BTreeSet::new();
        for r in &self.0 {
            match r.at {
                Where::Cluster => {}
                Where::In(ns) => {
                    namespaces.insert(ns);
                }
                Where::Each(list) => namespaces.extend(list.iter().map(String::as_str)),
            }
        }
        // The lists `each` was given (the targets, the probe namespaces), as sets: a namespace's rules are
        // found without scanning the fleet once per rule. Keyed by the slice itself (address and length):
        // the same list is given to many rules.
        let mut lists: HashMap<(usize, usize), HashSet<&str>> = HashMap::new();
        for r in &self.0 {
            if let Where::Each(list) = r.at {
                lists
                    .entry((list.as_ptr() as usize, list.len()))
                    .or_insert_with(|| list.iter().map(String::as_str).collect());
            }
        }
        let applies = |at: Where<'_>, ns: Option<&str>| match (at, ns) {
            (Where::Cluster, None) => true,
            (Where::In(n), Some(ns)) => n == ns,
            (Where::Each(list), Some(ns)) => lists
                .get(&(list.as_ptr() as usize, list.len()))
                .is_some_and(|set| set.contains(ns)),
            _ => false,
        };
        let mut out = Vec::new();
        let scopes = std::iter::once(None).chain(namespaces.into_iter().map(Some));
        for ns in scopes {
            let mut own: BTreeMap<(&'static str, &'static str, &'static str), &'static str> = BTreeMap::new();
            for r in self.0.iter().filter(|r| applies(r.at, ns)) {
                for &resource in r.resources {
                    for &verb in r.verbs {
                        own.entry((r.group, resource, verb)).or_insert(r.why);
                    }
                }
            }
            let namespace: Option<Arc<str>> = ns.map(Arc::from);
            out.extend(own.into_iter().map(|((group, resource, verb), why)| Permission {
                namespace: namespace.clone(),
                group,
                resource,
                verb,
                why,
            }));
        }
        out
    }
}

/// Every permission `scope.command` needs, sorted, one entry per (namespace, group, resource, verb).
pub fn required(scope: &Scope<'_>) -> Vec<Permission> {
    use Command::*;
    let c = scope.command;
    let t = scope.targets;
    let state = Some(scope.state_namespace);
    let istio = Some(ISTIO_NAMESPACE);
    let mut a = Acc(Vec::new());
    let writes = matches!(c, Run | Rollback | Restore);
    let steps = matches!(c, Run | Rollback);

    a.add(
        None,
        "",
        &["namespaces"],
        &["get", "list"],
        "fleet selection and namespace labels",
    );
    if writes {
        a.add(
            None,
            "",
            &["namespaces"],
            &["patch"],
            "injection, dataplane-mode and waypoint labels",
        );
    }
    if matches!(c, Plan | Run) {
        for (g, rs) in ASSESSED {
            a.each(t, g, rs, &["list"], "preflight inventory");
        }
        a.add(
            None,
            "admissionregistration.k8s.io",
            &["mutatingwebhookconfigurations"],
            &["list"],
            "injector revisions and tags",
        );
        a.add(
            istio,
            "",
            &["configmaps"],
            &["get"],
            "mesh config and istio-cni's ambient setting",
        );
        // Install-phase checks (`assess::install`): Gateway API CRDs, the waypoint GatewayClass, ztunnel
        // pods per node, istiod's version.
        a.add(
            None,
            "apiextensions.k8s.io",
            &["customresourcedefinitions"],
            &["get"],
            "Gateway API CRD versions",
        );
        a.add(
            None,
            "gateway.networking.k8s.io",
            &["gatewayclasses"],
            &["get"],
            "the istio-waypoint GatewayClass",
        );
        a.add(istio, "", &["pods"], &["list"], "ztunnel ready on every node");
        a.add(istio, "apps", &["deployments"], &["get"], "istiod's version");
        a.add(
            istio,
            "security.istio.io",
            &["authorizationpolicies", "peerauthentications"],
            &["list"],
            "root-namespace policies",
        );
    }
    if c == Run {
        // `run` reads the fleet once, through cluster-wide watch caches of every assessed kind.
        for (g, rs) in ASSESSED {
            a.add(None, g, rs, &["list", "watch"], "fleet-wide watch caches");
        }
        a.add(None, "", &["namespaces"], &["watch"], "fleet-wide watch caches");
    }
    if matches!(c, Run | Rollback | Backup) {
        a.add(istio, "apps", &["daemonsets"], &["get"], "ztunnel readiness");
    }
    if writes {
        a.add(
            state,
            "coordination.k8s.io",
            &["leases"],
            &["get", "create", "update"],
            "fleet lease",
        );
    }
    // Backups: read in the target, stored (or loaded) in the state namespace.
    if matches!(c, Run | Rollback | Backup | Restore) {
        for (g, rs) in BACKED_UP {
            a.each(t, g, rs, &["list"], "namespace backup");
        }
        a.each(
            t,
            "",
            &["services"],
            &["list"],
            "namespace backup (Service labels)",
        );
    }
    // The journal and the recorded backup are read; `backup` writes nothing to the cluster.
    if matches!(c, Run | Rollback | Backup) {
        a.add(
            state,
            "",
            &["configmaps"],
            &["get"],
            "journals and backup ConfigMaps",
        );
    }
    if matches!(c, Run | Rollback) {
        a.add(
            state,
            "",
            &["configmaps"],
            &["create"],
            "journals and backup ConfigMaps",
        );
    }
    if writes {
        for (g, rs) in BACKED_UP {
            a.each(
                t,
                g,
                rs,
                &["get", "create", "update", "delete"],
                "bridges, twins, restore from backup",
            );
        }
        a.each(
            t,
            "",
            &["services"],
            &["get", "patch"],
            "waypoint labels on Services, restore",
        );
        a.each(
            t,
            "",
            &["services"],
            &["create", "delete"],
            "per-version Services replacing DestinationRule subsets (policies.migration = apply), rollback",
        );
        a.each(
            t,
            "extensions.istio.io",
            &["wasmplugins"],
            &["get", "create", "delete"],
            "WasmPlugin twins at the waypoint (policies.migration = apply), rollback",
        );
    }
    if steps {
        a.each(
            t,
            "apps",
            &["deployments", "statefulsets", "daemonsets"],
            &["get", "list", "watch", "patch"],
            "rolling restarts and rollout gates",
        );
        a.each(t, "apps", &["replicasets"], &["list"], "rollout gate");
        a.each(t, "", &["pods"], &["list"], "sidecar and ambient gates");
        a.each(t, "", &["services"], &["list"], "waypoint binding gate");
        a.add(
            state,
            "",
            &["configmaps"],
            &["list", "update"],
            "journals; a stale stored backup is replaced before the first mutation",
        );
        a.add(
            Some(EVENTS_NAMESPACE),
            "",
            &["events"],
            &["create"],
            "Events about Namespaces",
        );
        let probes = scope.probe_namespaces;
        a.each(
            probes,
            "batch",
            &["jobs"],
            &["create", "get", "list", "watch", "delete"],
            "Job probes",
        );
        a.each(probes, "", &["pods"], &["list"], "Job probe pods");
        a.each(probes, "", &["pods/log"], &["get"], "Job probe output");
        a.each(
            scope.secret_probe_namespaces,
            "",
            &["secrets"],
            &["create"],
            "secret headers of Job probes (a Secret owned by the Job)",
        );
    }
    a.expand()
}

/// The cluster-scope questions worth asking first: one per (group, resource, verb) needed in two or more
/// namespaces. A yes covers every namespace; a no says nothing about any single one.
pub fn cluster_wide_candidates(needed: &[Permission]) -> Vec<Permission> {
    type Needed = (&'static str, &'static str, &'static str);
    let mut count: BTreeMap<Needed, (usize, &'static str)> = BTreeMap::new();
    for p in needed.iter().filter(|p| p.namespace.is_some()) {
        let e = count.entry((p.group, p.resource, p.verb)).or_insert((0, p.why));
        e.0 += 1;
    }
    count
        .into_iter()
        .filter(|(_, (n, _))| *n >= 2)
        .map(|((group, resource, verb), (_, why))| Permission {
            namespace: None,
            group,
            resource,
            verb,
            why,
        })
        .collect()
}

/// One `resourceRules[]` entry of a SelfSubjectRulesReview answer: what the caller may do in the namespace
/// the review asked about (rules from ClusterRoleBindings included).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResourceRule {
    pub verbs: Vec<String>,
    pub api_groups: Vec<String>,
    pub resources: Vec<String>,
    pub resource_names: Vec<String>,
}

/// Whether `rule` allows `p`, by the RBAC authorizer's matching rules (kubernetes
/// `pkg/apis/rbac/v1/evaluation_helpers.go`: `VerbMatches`, `APIGroupMatches`, `ResourceMatches`; `*`
/// matches everything, `*/sub` any resource's subresource `sub`). A rule limited to `resourceNames` is never
/// taken as proof: the runner's requests that need these permissions (list, create) name no object.
pub fn rule_allows(rule: &ResourceRule, p: &Permission) -> bool {
    let any = |v: &[String], want: &str| v.iter().any(|x| x == "*" || x == want);
    let sub = p.resource.split_once('/').map(|(_, s)| s);
    let resource_ok = rule
        .resources
        .iter()
        .any(|r| r == "*" || *r == p.resource || sub.is_some_and(|s| r.strip_prefix("*/") == Some(s)));
    rule.resource_names.is_empty()
        && any(&rule.verbs, p.verb)
        && any(&rule.api_groups, p.group)
        && resource_ok
}

/// The permissions of `needed` that `rules` (one namespace's SelfSubjectRulesReview) do not prove. Only the
/// permissions in `namespace` are judged; a rules review may be incomplete (`status.incomplete`: an
/// authorizer that cannot list rules), so what it does not prove still has to be asked one by one.
pub fn unproven_by_rules<'a>(
    needed: &'a [Permission],
    namespace: &str,
    rules: &[ResourceRule],
) -> Vec<&'a Permission> {
    needed
        .iter()
        .filter(|p| p.namespace.as_deref() == Some(namespace))
        .filter(|p| !rules.iter().any(|r| rule_allows(r, p)))
        .collect()
}

/// The missing permissions as RBAC rules a platform engineer can paste: one block per scope (the
/// ClusterRole's rules, then each namespace's Role rules), one rule per (group, resource), verbs merged.
pub fn rbac_rules(missing: &[Permission]) -> String {
    // scope -> (group, resource) -> (verbs, reasons)
    type Rules<'a> = BTreeMap<(&'a str, &'a str), (BTreeSet<&'a str>, BTreeSet<&'a str>)>;
    let mut by_scope: BTreeMap<Option<&str>, Rules<'_>> = BTreeMap::new();
    for p in missing {
        let e = by_scope
            .entry(p.namespace.as_deref())
            .or_default()
            .entry((p.group, p.resource))
            .or_default();
        e.0.insert(p.verb);
        e.1.insert(p.why);
    }
    let mut out = String::new();
    for (scope, rules) in by_scope {
        match scope {
            None => out.push_str("# ClusterRole rules (cluster scope):\n"),
            Some(ns) => out.push_str(&format!("# Role rules in namespace {ns}:\n")),
        }
        for ((group, resource), (verbs, why)) in rules {
            let verbs: Vec<String> = verbs.iter().map(|v| format!("\"{v}\"")).collect();
            out.push_str(&format!(
                "- apiGroups: [\"{group}\"]\n  resources: [\"{resource}\"]\n  verbs: [{}]  # {}\n",
                verbs.join(", "),
                why.into_iter().collect::<Vec<_>>().join("; ")
            ));
        }
    }
    out
}

/// One line per missing permission: `verb group/resource in namespace` (or `at cluster scope`).
pub fn describe(p: &Permission) -> String {
    let res = if p.group.is_empty() {
        p.resource.to_string()
    } else {
        format!("{}.{}", p.resource, p.group)
    };
    match &p.namespace {
        Some(ns) => format!("{} {res} in namespace {ns}", p.verb),
        None => format!("{} {res} at cluster scope", p.verb),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn perm(resource: &'static str, group: &'static str, verb: &'static str) -> Permission {
        Permission {
            namespace: Some("shop".into()),
            group,
            resource,
            verb,
            why: "test",
        }
    }

    fn rule(verbs: &[&str], groups: &[&str], resources: &[&str]) -> ResourceRule {
        let v = |x: &[&str]| x.iter().map(|s| s.to_string()).collect();
        ResourceRule {
            verbs: v(verbs),
            api_groups: v(groups),
            resources: v(resources),
            resource_names: Vec::new(),
        }
    }

    #[test]
    fn rules_prove_permissions_as_the_rbac_authorizer_matches_them() {
        let r = rule(&["get", "list"], &["apps"], &["deployments"]);
        assert!(rule_allows(&r, &perm("deployments", "apps", "list")));
        assert!(!rule_allows(&r, &perm("deployments", "apps", "patch")));
        assert!(
            !rule_allows(&r, &perm("deployments", "", "list")),
            "group must match"
        );
        assert!(!rule_allows(&r, &perm("statefulsets", "apps", "list")));
        let wild = rule(&["*"], &["*"], &["*"]);
        assert!(rule_allows(&wild, &perm("pods/log", "", "get")));
        let sub = rule(&["get"], &[""], &["*/log"]);
        assert!(rule_allows(&sub, &perm("pods/log", "", "get")));
        assert!(!rule_allows(&sub, &perm("pods", "", "get")));
        let mut named = rule(&["list"], &["apps"], &["deployments"]);
        named.resource_names = vec!["api".into()];
        assert!(!rule_allows(&named, &perm("deployments", "apps", "list")));
    }

    #[test]
    fn only_the_reviewed_namespace_is_judged_by_its_rules() {
        let mut other = perm("deployments", "apps", "patch");
        other.namespace = Some("web".into());
        let needed = vec![
            perm("deployments", "apps", "patch"),
            perm("services", "", "patch"),
            other,
        ];
        let rules = vec![rule(&["patch"], &["apps"], &["deployments"])];
        let left = unproven_by_rules(&needed, "shop", &rules);
        assert_eq!(left, vec![&needed[1]]);
    }

    fn has(ps: &[Permission], ns: Option<&str>, group: &str, resource: &str, verb: &str) -> bool {
        ps.iter().any(|p| {
            p.namespace.as_deref() == ns && p.group == group && p.resource == resource && p.verb == verb
        })
    }

    #[test]
    fn run_needs_writes_in_targets_state_and_probe_namespaces() {
        let targets = vec!["shop".to_string()];
        let probes = vec!["web".to_string()];
        let s = Scope {
            command: Command::Run,
            targets: &targets,
            state_namespace: "ambient-migrate",
            probe_namespaces: &probes,
            secret_probe_namespaces: &[],
        };
        let ps = required(&s);
        assert!(has(&ps, None, "", "namespaces", "patch"));
        assert!(has(&ps, Some("ambient-migrate"), "", "configmaps", "update"));
        // A stale stored backup is replaced, never deleted.
        assert!(!has(&ps, Some("ambient-migrate"), "", "configmaps", "delete"));
        assert!(has(
            &ps,
            Some("ambient-migrate"),
            "coordination.k8s.io",
            "leases",
            "update"
        ));
        assert!(has(&ps, Some("shop"), "apps", "deployments", "patch"));
        assert!(has(
            &ps,
            Some("shop"),
            "security.istio.io",
            "authorizationpolicies",
            "delete"
        ));
        assert!(has(&ps, Some("web"), "batch", "jobs", "create"));
        assert!(has(&ps, Some("web"), "", "pods/log", "get"));
        assert!(has(&ps, Some("default"), "", "events", "create"));
        // Secrets only where a Job probe has secret headers.
        let with_secret = required(&Scope {
            secret_probe_namespaces: &probes,
            ..s
        });
        assert!(has(&with_secret, Some("web"), "", "secrets", "create"));
        // Nothing outside the scope: no Jobs in the target without probes there, no secrets anywhere.
        assert!(!has(&ps, Some("shop"), "batch", "jobs", "create"));
        assert!(!ps.iter().any(|p| p.resource == "secrets"));
    }

    #[test]
    fn each_permission_is_listed_once_sorted_with_the_first_reason_given() {
        let targets = vec!["b".to_string(), "a".to_string()];
        let probes = vec!["a".to_string(), "web".to_string()];
        let ps = required(&Scope {
            command: Command::Run,
            targets: &targets,
            state_namespace: "st",
            probe_namespaces: &probes,
            secret_probe_namespaces: &[],
        });
        let keys: Vec<_> = ps
            .iter()
            .map(|p| (p.namespace.clone(), p.group, p.resource, p.verb))
            .collect();
        let mut sorted = keys.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(
            keys, sorted,
            "sorted by (namespace, group, resource, verb), each once"
        );
        // Services are listed for the inventory, the backup and the waypoint gate: the first reason stays.
        let why = |ns: &str, resource: &str, verb: &str| {
            ps.iter()
                .find(|p| p.namespace.as_deref() == Some(ns) && p.resource == resource && p.verb == verb)
                .map(|p| p.why)
        };
        assert_eq!(why("a", "services", "list"), Some("preflight inventory"));
        assert_eq!(why("b", "services", "list"), Some("preflight inventory"));
        // A namespace that is both a target and a probe source gets both sets; the others their own.
        assert!(has(&ps, Some("a"), "batch", "jobs", "create"));
        assert!(has(&ps, Some("a"), "apps", "deployments", "patch"));
        assert!(!has(&ps, Some("b"), "batch", "jobs", "create"));
        assert!(has(&ps, Some("web"), "", "pods/log", "get"));
        assert!(!has(&ps, Some("web"), "apps", "deployments", "patch"));
        // Nothing in a namespace that no rule names.
        assert!(ps.iter().all(|p| matches!(
            p.namespace.as_deref(),
            None | Some("a" | "b" | "web" | "st" | ISTIO_NAMESPACE | EVENTS_NAMESPACE)
        )));
    }

    #[test]
    fn run_reads_every_assessed_kind_through_cluster_wide_caches() {
        let targets = vec!["shop".to_string()];
        let ps = required(&Scope {
            command: Command::Run,
            targets: &targets,
            state_namespace: "st",
            probe_namespaces: &[],
            secret_probe_namespaces: &[],
        });
        for (g, rs) in ASSESSED {
            for r in *rs {
                assert!(has(&ps, None, g, r, "list"), "{g}/{r}");
                assert!(has(&ps, None, g, r, "watch"), "{g}/{r}");
            }
        }
        assert!(has(&ps, None, "", "namespaces", "watch"));
    }

    #[test]
    fn plan_and_backup_are_read_only() {
        let targets = vec!["shop".to_string()];
        let read_only = |c| {
            let s = Scope {
                command: c,
                targets: &targets,
                state_namespace: "st",
                probe_namespaces: &[],
                secret_probe_namespaces: &[],
            };
            required(&s)
        };
        let plan = read_only(Command::Plan);
        assert!(
            plan.iter().all(|p| matches!(p.verb, "get" | "list" | "watch")),
            "{plan:?}"
        );
        // `backup` writes its file only: a copy stored in the cluster would be taken for the truth.
        let backup = read_only(Command::Backup);
        assert!(
            backup.iter().all(|p| matches!(p.verb, "get" | "list" | "watch")),
            "{backup:?}"
        );
        assert!(has(&backup, Some("st"), "", "configmaps", "get"));
    }

    #[test]
    fn missing_permissions_render_as_rules() {
        let p = |ns: Option<&str>, verb: &'static str| Permission {
            namespace: ns.map(Arc::from),
            group: "",
            resource: "configmaps",
            verb,
            why: "journals",
        };
        let text = rbac_rules(&[p(Some("st"), "delete"), p(Some("st"), "update"), p(None, "list")]);
        assert_eq!(
            text,
            "# ClusterRole rules (cluster scope):\n- apiGroups: [\"\"]\n  resources: [\"configmaps\"]\n  verbs: [\"list\"]  # journals\n# Role rules in namespace st:\n- apiGroups: [\"\"]\n  resources: [\"configmaps\"]\n  verbs: [\"delete\", \"update\"]  # journals\n"
        );
        assert_eq!(
            describe(&p(Some("st"), "delete")),
            "delete configmaps in namespace st"
        );
    }
}
