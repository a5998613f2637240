//! Watches: newline-delimited JSON events on a chunked response, as
//! `k8s.io/apiserver/pkg/endpoints/handlers/watch.go` streams them.
//!
//! - `resourceVersion` absent or `"0"`: synthetic ADDED events for the current state, then live events.
//! - `resourceVersion=N`: every change after N (from the store's history); too old => one ERROR event
//!   carrying a 410 `Expired` Status, then the stream ends (what the real server sends for watches).
//! - Selectors filter events; an object that stops matching produces DELETED for this watcher and one that
//!   starts matching produces ADDED (`k8s.io/apiserver/pkg/storage/cacher/cache_watcher.go`, `convertToWatchEvent`).
//! - `timeoutSeconds` ends the stream; `allowWatchBookmarks=true` adds BOOKMARK events every
//!   `settings.bookmark_interval_ms`; a `watch-drop` fault ends matching streams after `after_ms`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::Response;
use hyper::body::Frame;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use serde_json::{Value, json};
use tokio::sync::broadcast;
use tokio::time::Instant;

use super::handlers::selectors;
use super::routing::ResourcePath;
use super::selectors::{FieldSelector, LabelSelector};
use super::{Req, Resp, error_response, fault_selects};
use crate::Sim;
use crate::faults::FaultKind;
use crate::resources::ResId;
use crate::store::{EventType, StoreError, WatchEvent};

struct WatchState {
    res: ResId,
    namespace: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
    /// Whether matching can change during an object's life (then transitions are tracked).
    transitions: bool,
    /// Keys (namespace, name) that currently match, as this watcher last reported them.
    matched: HashSet<(String, String)>,
    queue: VecDeque<Bytes>,
    rx: Option<broadcast::Receiver<Arc<WatchEvent>>>,
    last_rv: u64,
    deadline: Option<Instant>,
    drop_at: Option<Instant>,
    bookmark: Option<tokio::time::Interval>,
    kind: &'static str,
    api_version: String,
    done: bool,
}

fn line(kind: &str, object: &Value) -> Bytes {
    crate::store::watch_line(kind, object)
}

fn key_of(obj: &Value) -> (String, String) {
    let m = &obj["metadata"];
    (
        m["namespace"].as_str().unwrap_or("").to_string(),
        m["name"].as_str().unwrap_or("").to_string(),
    )
}

impl WatchState {
    fn matches(&self, obj: &Value) -> bool {
        self.labels.matches(obj) && self.fields.matches(obj)
    }

    fn process(&mut self, ev: &WatchEvent) {
        if ev.rv <= self.last_rv {
            return;
        }
        self.last_rv = ev.rv;
        if ev.res != self.res || self.namespace.as_ref().is_some_and(|ns| *ns != ev.namespace) {
            return;
        }
        let m = self.matches(&ev.object);
        if !self.transitions {
            if m {
                self.queue.push_back(ev.line(ev.kind));
            }
            return;
        }
        let key = key_of(&ev.object);
        let was = self.matched.contains(&key);
        match (ev.kind, m) {
            (EventType::Deleted, _) => {
                if was {
                    self.queue.push_back(ev.line(EventType::Deleted));
                }
                self.matched.remove(&key);
            }
            (kind, true) => {
                let t = if was && kind != EventType::Added {
                    EventType::Modified
                } else {
                    EventType::Added
                };
                self.queue.push_back(ev.line(t));
                self.matched.insert(key);
            }
            (_, false) => {
                if was {
                    self.queue.push_back(ev.line(EventType::Deleted));
                    self.matched.remove(&key);
                }
            }
        }
    }

    async fn wait(&mut self) {
        let Some(rx) = self.rx.as_mut() else {
            self.done = true;
            return;
        };
        let deadline = self.deadline;
        let drop_at = self.drop_at;
        let sleep_opt = |t: Option<Instant>| async move {
            match t {
                Some(t) => tokio::time::sleep_until(t).await,
                None => futures::future::pending::<()>().await,
            }
        };
        let bookmark = self.bookmark.as_mut();
        let tick = async move {
            match bookmark {
                Some(i) => {
                    i.tick().await;
                }
                None => futures::future::pending::<()>().await,
            }
        };
        enum Woke {
            Event(Arc<WatchEvent>),
            End,
            Bookmark,
        }
        let woke = tokio::select! {
            r = rx.recv() => match r {
                Ok(ev) => Woke::Event(ev),
                Err(_) => Woke::End,
            },
            _ = sleep_opt(deadline) => Woke::End,
            _ = sleep_opt(drop_at) => Woke::End,
            _ = tick => Woke::Bookmark,
        };
        match woke {
            Woke::Event(ev) => self.process(&ev),
            Woke::End => self.done = true,
            Woke::Bookmark => {
                let obj = json!({"kind": self.kind, "apiVersion": self.api_version,
                    "metadata": {"resourceVersion": self.last_rv.to_string()}});
                self.queue.push_back(line("BOOKMARK", &obj));
            }
        }
    }
}

/// Starts a watch; the answer streams until timeout, fault, client disconnect or server stop.
pub fn start(sim: &Arc<Sim>, req: &Req, p: &ResourcePath) -> Resp {
    match setup(sim, req, p) {
        Ok(state) => stream_response(state),
        Err(e) => error_response(&e),
    }
}

fn setup(sim: &Arc<Sim>, req: &Req, p: &ResourcePath) -> Result<WatchState, StoreError> {
    let (labels, mut fields) = selectors(req)?;
    if let Some(name) = &p.name {
        // Old-style watch of one object: same as a metadata.name field selector.
        let sel = match req.q("fieldSelector").filter(|s| !s.is_empty()) {
            Some(s) => format!("{s},metadata.name={name}"),
            None => format!("metadata.name={name}"),
        };
        fields = FieldSelector::parse(&sel).map_err(|e| StoreError::BadRequest { message: e })?;
    }
    let res = p.rt.id();
    let namespace = p.namespace.clone().filter(|_| p.rt.namespaced);
    let transitions = !labels.is_empty() || !fields.only_immutable();
    let mut state = WatchState {
        res,
        namespace: namespace.clone(),
        labels,
        fields,
        transitions,
        matched: HashSet::new(),
        queue: VecDeque::new(),
        rx: None,
        last_rv: 0,
        deadline: req
            .q("timeoutSeconds")
            .and_then(|t| t.parse::<u64>().ok())
            .filter(|t| *t > 0)
            .map(|t| Instant::now() + Duration::from_secs(t)),
        drop_at: None,
        bookmark: None,
        kind: p.rt.kind,
        api_version: p.rt.api_version(),
        done: false,
    };
    if matches!(req.q("allowWatchBookmarks"), Some("true" | "1")) {
        let period = Duration::from_millis(sim.settings.bookmark_interval_ms.max(10));
        state.bookmark = Some(tokio::time::interval_at(Instant::now() + period, period));
    }
    let drop_ns = namespace.as_deref();
    let info = super::RequestInfo {
        verb: "watch".into(),
        resource: p.resource_name(),
        plural: p.rt.plural.into(),
        group: p.rt.group.into(),
        namespace: p.namespace.clone(),
        name: p.name.clone(),
    };
    let drops = sim
        .faults
        .matching(&*sim.store, FaultKind::WatchDrop, drop_ns, |f| {
            fault_selects(f, &info)
        });
    if let Some(after) = drops.iter().map(|f| f.after_ms.unwrap_or(0)).min() {
        state.drop_at = Some(Instant::now() + Duration::from_millis(after));
    }
    let rv = req.q("resourceVersion").filter(|s| !s.is_empty() && *s != "0");
    match rv {
        None => {
            let (matching, list_rv) = sim
                .store
                .list_matching(res, namespace.as_deref(), |o| state.matches(o));
            for obj in &matching {
                state.queue.push_back(line("ADDED", obj));
                if state.transitions {
                    state.matched.insert(key_of(obj));
                }
            }
            state.last_rv = list_rv;
            match sim.store.watch_from(list_rv) {
                Ok((backlog, rx)) => {
                    for ev in backlog {
                        state.process(&ev);
                    }
                    state.rx = Some(rx);
                }
                Err(e) => push_error(&mut state, &e),
            }
        }
        Some(rv) => {
            let since: u64 = rv.parse().map_err(|_| StoreError::BadRequest {
                message: format!("invalid resource version: {rv}"),
            })?;
            match sim.store.watch_from(since) {
                Ok((backlog, rx)) => {
                    if state.transitions {
                        // State at `since`: objects untouched since then as they are now; objects whose
                        // first later event is not their creation are assumed to have matched.
                        let (items, _) = sim.store.list(res, namespace.as_deref());
                        let mut first: HashMap<(String, String), EventType> = HashMap::new();
                        for ev in backlog.iter().filter(|e| e.res == res) {
                            first.entry(key_of(&ev.object)).or_insert(ev.kind);
                        }
                        let matching: Vec<&Value> = items.iter().filter(|o| state.matches(o)).collect();
                        for obj in matching {
                            let k = key_of(obj);
                            if !first.contains_key(&k) {
                                state.matched.insert(k);
                            }
                        }
                        for (k, kind) in first {
                            if kind != EventType::Added {
                                state.matched.insert(k);
                            }
                        }
                    }
                    state.last_rv = since;
                    for ev in backlog {
                        state.process(&ev);
                    }
                    state.rx = Some(rx);
                }
                Err(e) => push_error(&mut state, &e),
            }
        }
    }
    Ok(state)
}

fn push_error(state: &mut WatchState, e: &StoreError) {
    state.queue.push_back(line("ERROR", &e.to_status()));
    state.rx = None;
    state.done = true;
}

fn stream_response(state: WatchState) -> Resp {
    let stream = futures::stream::unfold(state, |mut st| async move {
        loop {
            if let Some(b) = st.queue.pop_front() {
                return Some((Ok::<_, Infallible>(Frame::data(b)), st));
            }
            if st.done {
                return None;
            }
            st.wait().await;
        }
    });
    let mut r = Response::new(StreamBody::new(stream).boxed_unsync());
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}
