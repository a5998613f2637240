//! The crate stays pure: its dependency closure (read from the workspace's Cargo.lock, the same graph
//! `cargo tree -p migrate-core` prints) holds no Kubernetes client, async runtime or HTTP stack. A pull
//! request that adds one fails here, and the decision code has to stay on the executor side of the line
//! (`docs/design.md` §2).

use std::collections::{BTreeMap, BTreeSet};

/// Crates that do I/O or need a runtime: none may be reachable from migrate-core.
const FORBIDDEN: &[&str] = &[
    "kube",
    "kube-client",
    "kube-runtime",
    "tokio",
    "reqwest",
    "hyper",
    "tower",
    "mio",
];

#[derive(serde::Deserialize)]
struct Lock {
    package: Vec<Package>,
}

#[derive(serde::Deserialize)]
struct Package {
    name: String,
    version: String,
    #[serde(default)]
    dependencies: Vec<String>,
}

fn closure(lock: &Lock, root: &str) -> BTreeSet<String> {
    let by_name: BTreeMap<&str, Vec<&Package>> = lock.package.iter().fold(BTreeMap::new(), |mut m, p| {
        m.entry(p.name.as_str()).or_default().push(p);
        m
    });
    // A dependency entry is "name" (one version in the lock) or "name version" (several).
    let resolve = |dep: &str| -> Option<&Package> {
        let mut it = dep.split(' ');
        let name = it.next()?;
        let version = it.next();
        by_name
            .get(name)?
            .iter()
            .find(|p| version.is_none_or(|v| p.version == v))
            .copied()
    };
    let mut seen = BTreeSet::new();
    let mut todo = vec![root.to_string()];
    while let Some(dep) = todo.pop() {
        let Some(p) = resolve(&dep) else { continue };
        if seen.insert(p.name.clone()) {
            todo.extend(p.dependencies.iter().cloned());
        }
    }
    seen
}

fn lock() -> Lock {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.lock");
    toml::from_str(&std::fs::read_to_string(path).expect("workspace Cargo.lock")).expect("Cargo.lock parses")
}

#[test]
fn no_client_runtime_or_http_in_the_dependency_closure() {
    let deps = closure(&lock(), "migrate-core");
    assert!(
        deps.contains("k8s-openapi") && deps.contains("serde"),
        "closure computed: {deps:?}"
    );
    let bad: Vec<&&str> = FORBIDDEN.iter().filter(|f| deps.contains(**f)).collect();
    assert!(
        bad.is_empty(),
        "migrate-core must stay pure, but depends on {bad:?}"
    );
}

#[test]
fn the_check_sees_forbidden_crates_where_they_are() {
    // The main crate is the executor: it must show up as impure, or the check above proves nothing.
    let deps = closure(&lock(), "ambient-migrate");
    assert!(deps.contains("kube") && deps.contains("tokio"), "{deps:?}");
}
