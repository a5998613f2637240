//! Continuous synthetic traffic through meshsim's data-plane model, one request per path per round, on a
//! thread of its own (the model is synchronous and CPU-bound; the pipeline keeps the async runtime).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use meshsim::Sim;
use meshsim::traffic::{Outcome, Request, Response, Source};
use migrate_core::rehearse::{CallPath, Observation, TrafficTable};

/// Sends one request of `path` through the model.
fn send(sim: &Sim, path: &CallPath) -> Response {
    let source = match path.caller.as_deref().and_then(|c| c.split_once('/')) {
        Some((namespace, name)) => Source::Pod {
            namespace: namespace.to_string(),
            name: name.to_string(),
        },
        None => Source::External,
    };
    meshsim::traffic::handle(
        sim,
        &Request {
            source,
            method: path.method.clone(),
            url: path.url.clone(),
            headers: Vec::new(),
        },
    )
}

fn reached(r: &Response) -> bool {
    matches!(r.outcome, Outcome::Http(c) if (200..300).contains(&c))
}

/// A path left out of the traffic, with why.
#[derive(Debug, Clone)]
pub struct Excluded {
    pub path: CallPath,
    pub why: String,
}

/// Decides each path's legitimacy with one request before anything changes: the policies' verdict with the
/// caller's real identity. A path whose answer already disagrees with that verdict (no caller pod, no
/// endpoint, a legitimate request refused) is left out: it says nothing about the migration.
pub fn baseline(sim: &Sim, paths: Vec<CallPath>) -> (Vec<(CallPath, bool)>, Vec<Excluded>) {
    let mut kept = Vec::new();
    let mut excluded = Vec::new();
    for p in paths {
        let r = send(sim, &p);
        let ok = reached(&r);
        if r.intended_allow == ok {
            kept.push((p, r.intended_allow));
        } else {
            let why = if r.body.is_empty() {
                format!("answered {}", meshsim::traffic::outcome_key(&r.outcome))
            } else {
                r.body.clone()
            };
            excluded.push(Excluded {
                path: p,
                why: format!(
                    "already {} before the migration ({why})",
                    if r.intended_allow { "failing" } else { "leaking" }
                ),
            });
        }
    }
    (kept, excluded)
}

/// [`baseline`], asked again for the paths that disagree each time the simulated cluster changes (endpoints
/// and enrolment settle a moment after pods are Ready), for up to 3 s.
pub async fn settled_baseline(sim: &Sim, paths: Vec<CallPath>) -> (Vec<(CallPath, bool)>, Vec<Excluded>) {
    let mut changes = sim.store.changes();
    let (mut rows, mut excluded) = baseline(sim, paths);
    let until = tokio::time::Instant::now() + Duration::from_secs(3);
    while !excluded.is_empty() {
        if !matches!(
            tokio::time::timeout_at(until, changes.changed()).await,
            Ok(Ok(()))
        ) {
            break;
        }
        let (more, still) = baseline(sim, excluded.into_iter().map(|e| e.path).collect());
        rows.extend(more);
        excluded = still;
    }
    (rows, excluded)
}

/// The running generator.
pub struct Generator {
    stop: Arc<AtomicBool>,
    table: Arc<Mutex<TrafficTable>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Generator {
    /// Starts sending every path every `interval`; after a round that took longer, it rests as long as the
    /// round took, so the generator holds at most about half a core and leaves the rest to the pipeline it
    /// measures.
    pub fn start(sim: Arc<Sim>, rows: Vec<(CallPath, bool)>, interval: Duration) -> Generator {
        let paths: Vec<CallPath> = rows.iter().map(|(p, _)| p.clone()).collect();
        let table = Arc::new(Mutex::new(TrafficTable::new(rows)));
        let stop = Arc::new(AtomicBool::new(false));
        let (t2, s2) = (table.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let t0 = Instant::now();
            while !s2.load(Ordering::Relaxed) {
                let round = Instant::now();
                for (i, p) in paths.iter().enumerate() {
                    let r = send(&sim, p);
                    let o = Observation {
                        at_ms: t0.elapsed().as_millis() as u64,
                        allowed: reached(&r),
                        intended_allow: r.intended_allow,
                    };
                    t2.lock().unwrap_or_else(|e| e.into_inner()).record(i, o);
                }
                std::thread::sleep(interval.max(round.elapsed()));
            }
        });
        Generator {
            stop,
            table,
            thread: Some(thread),
        }
    }

    /// Stops the generator and returns what it counted.
    pub fn finish(mut self) -> TrafficTable {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        std::mem::take(&mut *self.table.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl Drop for Generator {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
