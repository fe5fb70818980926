//! Kubernetes' own account of the trial on the run's timeline: every readiness change of the namespace's pods and
//! every Event (core/v1) of the namespace, stamped on receipt with the run's clock and carrying the API server's
//! own time as evidence, so a reader can see how far the harness's stamp trails the server's.
//!
//! Each resource is listed, then watched from the list's resourceVersion. A watch that ends is resumed from the
//! last version seen; one the server can no longer resume (410 Gone) starts over with a fresh list, compared
//! against what was known so nothing is reported twice. The first list is the state before the trial: it is what
//! later changes are compared with and is never reported itself.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::time::{Duration, SystemTime};

use ::kube::api::{Api, ListParams, WatchEvent, WatchParams};
use ::kube::{Client, Resource};
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Event as KubeEvent, Pod};
use k8s_openapi::jiff::Timestamp;
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use super::{pod_name, pod_node, pod_ready, status_code};
use crate::clock::rfc3339_millis;
use crate::events::{EventKind, EventLog};

/// How long the server keeps one watch open. A connection that dies silently is noticed 5 s after this.
const WATCH_SECONDS: u32 = 60;
/// Pause after a failed list or watch, so an unreachable API server is not hammered.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Watches the namespace's pods and Events until `stop` turns true.
pub fn spawn_observer(
    client: Client,
    namespace: &str,
    events: EventLog,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let clock = events.clock();
    let started = clock.wall(clock.now());
    let pods = follow(
        Api::<Pod>::namespaced(client.clone(), namespace),
        PodReadiness::default(),
        events.clone(),
    );
    let kube_events = follow(
        Api::<KubeEvent>::namespaced(client, namespace),
        NewEvents::since(started),
        events,
    );
    tokio::spawn(async move {
        tokio::select! {
            _ = futures_util::future::join(pods, kube_events) => {}
            _ = stop.wait_for(|s| *s) => {}
        }
    })
}

/// What one watched resource turns into on the timeline.
trait Follower<K> {
    /// A full list. `first` is the state the trial starts from: remembered, never reported.
    fn listed(&mut self, items: &[K], first: bool) -> Vec<EventKind>;
    /// An object added or modified.
    fn applied(&mut self, item: &K) -> Vec<EventKind>;
    fn deleted(&mut self, item: &K) -> Vec<EventKind>;
}

/// List, then watch from the list's version; resumes after a watch ends and re-lists after 410 Gone. Never
/// returns: the caller drops it when the trial's observation stops.
async fn follow<K, F>(api: Api<K>, mut follower: F, events: EventLog)
where
    K: Resource + Clone + DeserializeOwned + Debug + 'static,
    F: Follower<K>,
{
    let emit = |kinds: Vec<EventKind>| {
        for k in kinds {
            events.emit(k);
        }
    };
    let mut first = true;
    let mut version: Option<String> = None;
    loop {
        let Some(from) = version.clone() else {
            match api.list(&ListParams::default()).await {
                Ok(list) => {
                    emit(follower.listed(&list.items, first));
                    first = false;
                    version = list.metadata.resource_version;
                    if version.is_none() {
                        tokio::time::sleep(RETRY_AFTER).await;
                    }
                }
                Err(_) => tokio::time::sleep(RETRY_AFTER).await,
            }
            continue;
        };
        let params = WatchParams::default().timeout(WATCH_SECONDS);
        let stream = match api.watch(&params, &from).await {
            Ok(s) => s,
            Err(e) => {
                if status_code(&e) == Some(410) {
                    version = None;
                } else {
                    tokio::time::sleep(RETRY_AFTER).await;
                }
                continue;
            }
        };
        let deadline = tokio::time::Instant::now()
            + Duration::from_secs(u64::from(WATCH_SECONDS))
            + Duration::from_secs(5);
        let mut stream = std::pin::pin!(stream);
        while let Ok(Some(item)) = tokio::time::timeout_at(deadline, stream.next()).await {
            let seen_version = |k: &K| k.meta().resource_version.clone();
            match item {
                Ok(WatchEvent::Added(k) | WatchEvent::Modified(k)) => {
                    version = seen_version(&k).or(version);
                    emit(follower.applied(&k));
                }
                Ok(WatchEvent::Deleted(k)) => {
                    version = seen_version(&k).or(version);
                    emit(follower.deleted(&k));
                }
                Ok(WatchEvent::Bookmark(b)) => version = Some(b.metadata.resource_version),
                Ok(WatchEvent::Error(status)) if status.code == 410 => {
                    version = None;
                    break;
                }
                Ok(WatchEvent::Error(_)) | Err(_) => {
                    tokio::time::sleep(RETRY_AFTER).await;
                    break;
                }
            }
        }
    }
}

/// Per pod name: Ready or not, and its node. A pod not known counts as not Ready, so a pod deleted and
/// recreated under the same name reports "not Ready" once at the deletion and "Ready" once when it is back.
#[derive(Default)]
struct PodReadiness {
    known: BTreeMap<String, (bool, Option<String>)>,
}

impl PodReadiness {
    /// Records the pod's readiness; the timeline entry when it changed.
    fn update(
        &mut self,
        pod: &str,
        ready: bool,
        node: Option<String>,
        server_time: Option<String>,
    ) -> Option<EventKind> {
        let was_ready = self.known.get(pod).is_some_and(|(r, _)| *r);
        self.known.insert(pod.to_string(), (ready, node.clone()));
        (was_ready != ready).then(|| EventKind::PodReadiness {
            pod: pod.to_string(),
            node,
            ready,
            server_time,
        })
    }

    fn observe(&mut self, p: &Pod) -> Option<EventKind> {
        // A terminating pod no longer receives traffic, whatever its Ready condition still says.
        let ready = pod_ready(p) && p.metadata.deletion_timestamp.is_none();
        let condition = p
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"));
        // The condition's time is evidence only when the condition itself says what is reported.
        let server_time = condition
            .filter(|c| (c.status == "True") == ready)
            .and_then(|c| c.last_transition_time.as_ref())
            .map(|t| rfc3339(t.0));
        self.update(
            pod_name(p),
            ready,
            pod_node(p).map(str::to_string),
            server_time,
        )
    }
}

impl Follower<Pod> for PodReadiness {
    fn listed(&mut self, items: &[Pod], first: bool) -> Vec<EventKind> {
        let gone: Vec<(String, Option<String>)> = self
            .known
            .iter()
            .filter(|(name, _)| !items.iter().any(|p| pod_name(p) == name.as_str()))
            .map(|(name, (_, node))| (name.clone(), node.clone()))
            .collect();
        let mut out: Vec<EventKind> = gone
            .into_iter()
            .filter_map(|(name, node)| {
                let change = self.update(&name, false, node, None);
                self.known.remove(&name);
                change
            })
            .collect();
        out.extend(items.iter().filter_map(|p| self.observe(p)));
        if first {
            out.clear();
        }
        out
    }

    fn applied(&mut self, item: &Pod) -> Vec<EventKind> {
        self.observe(item).into_iter().collect()
    }

    fn deleted(&mut self, item: &Pod) -> Vec<EventKind> {
        let change = self.update(
            pod_name(item),
            false,
            pod_node(item).map(str::to_string),
            None,
        );
        self.known.remove(pod_name(item));
        change.into_iter().collect()
    }
}

/// Events that occur while the trial runs. An Event object is updated in place when it recurs, so every new
/// resourceVersion of it is a new occurrence; after a re-list, occurrences older than the observer are history.
struct NewEvents {
    since: SystemTime,
    /// Event uid -> the last resourceVersion reported or listed.
    seen: BTreeMap<String, String>,
}

impl NewEvents {
    fn since(since: SystemTime) -> Self {
        NewEvents {
            since,
            seen: BTreeMap::new(),
        }
    }

    /// Whether this version of the Event was not known yet; remembers it either way.
    fn is_new(&mut self, e: &KubeEvent) -> bool {
        let uid = e.metadata.uid.clone().unwrap_or_default();
        let version = e.metadata.resource_version.clone().unwrap_or_default();
        self.seen.insert(uid, version.clone()).as_ref() != Some(&version)
    }
}

impl Follower<KubeEvent> for NewEvents {
    fn listed(&mut self, items: &[KubeEvent], first: bool) -> Vec<EventKind> {
        let since = self.since;
        items
            .iter()
            .filter(|e| self.is_new(e) && !first)
            .filter(|e| occurred_at(e).is_some_and(|t| SystemTime::from(t) >= since))
            .map(timeline_entry)
            .collect()
    }

    fn applied(&mut self, item: &KubeEvent) -> Vec<EventKind> {
        if self.is_new(item) {
            vec![timeline_entry(item)]
        } else {
            Vec::new()
        }
    }

    fn deleted(&mut self, _item: &KubeEvent) -> Vec<EventKind> {
        // Events expire (an hour by default); their removal says nothing about the stack.
        Vec::new()
    }
}

/// The latest occurrence the Event records: a series' last observation, then the legacy lastTimestamp, then
/// eventTime (first occurrence of a new-style Event), then firstTimestamp.
fn occurred_at(e: &KubeEvent) -> Option<Timestamp> {
    e.series
        .as_ref()
        .and_then(|s| s.last_observed_time.as_ref().map(|t| t.0))
        .or_else(|| e.last_timestamp.as_ref().map(|t| t.0))
        .or_else(|| e.event_time.as_ref().map(|t| t.0))
        .or_else(|| e.first_timestamp.as_ref().map(|t| t.0))
}

fn timeline_entry(e: &KubeEvent) -> EventKind {
    let o = &e.involved_object;
    EventKind::KubernetesEvent {
        object: format!(
            "{}/{}",
            o.kind.as_deref().unwrap_or("?"),
            o.name.as_deref().unwrap_or("?")
        ),
        reason: e.reason.clone().unwrap_or_default(),
        message: e.message.clone().unwrap_or_default(),
        event_type: e.type_.clone().unwrap_or_default(),
        server_time: occurred_at(e).map(rfc3339),
    }
}

fn rfc3339(t: Timestamp) -> String {
    rfc3339_millis(SystemTime::from(t))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, ready: bool, deleting: bool) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": name,
                "deletionTimestamp": deleting.then_some("2030-01-01T00:00:09Z"),
            },
            "spec": {"nodeName": "w1", "containers": []},
            "status": {"conditions": [{
                "type": "Ready",
                "status": if ready { "True" } else { "False" },
                "lastTransitionTime": "2030-01-01T00:00:05Z",
            }]},
        }))
        .unwrap()
    }

    fn readiness(k: &EventKind) -> (String, bool, Option<String>) {
        match k {
            EventKind::PodReadiness {
                pod,
                ready,
                server_time,
                ..
            } => (pod.clone(), *ready, server_time.clone()),
            other => panic!("not a readiness change: {other:?}"),
        }
    }

    #[test]
    fn a_terminating_pod_is_not_ready_and_a_relist_reports_only_changes() {
        let mut f = PodReadiness::default();
        assert!(f
            .listed(&[pod("a", true, false), pod("b", true, false)], true)
            .is_empty());
        // Still Ready by its condition, but terminating: not Ready, and the condition's time is no evidence.
        let out = f.applied(&pod("a", true, true));
        assert_eq!(
            out.iter().map(readiness).collect::<Vec<_>>(),
            vec![("a".into(), false, None)]
        );
        assert!(
            f.deleted(&pod("a", true, true)).is_empty(),
            "already not Ready"
        );
        // A re-list without b (deleted while no watch ran) and with a back and Ready.
        let out = f.listed(&[pod("a", true, false)], false);
        assert_eq!(
            out.iter().map(readiness).collect::<Vec<_>>(),
            vec![
                ("b".into(), false, None),
                ("a".into(), true, Some("2030-01-01T00:00:05.000Z".into()))
            ]
        );
    }

    fn event(uid: &str, version: &str, last: &str) -> KubeEvent {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("e-{uid}"), "uid": uid, "resourceVersion": version},
            "involvedObject": {"kind": "Pod", "name": "postgres-0"},
            "reason": "Killing", "message": "Stopping container postgres", "type": "Normal",
            "firstTimestamp": "2001-01-01T00:00:00Z", "lastTimestamp": last,
        }))
        .unwrap()
    }

    #[test]
    fn events_are_reported_once_per_occurrence_and_a_relist_skips_history() {
        let start = SystemTime::from("2030-01-01T00:00:00Z".parse::<Timestamp>().unwrap());
        let mut f = NewEvents::since(start);
        assert!(f
            .listed(&[event("old", "1", "2001-01-01T00:00:00Z")], true)
            .is_empty());
        let out = f.applied(&event("new", "2", "2030-01-01T00:00:03Z"));
        assert!(
            matches!(&out[..], [EventKind::KubernetesEvent { object, server_time: Some(t), .. }]
                if object == "Pod/postgres-0" && t == "2030-01-01T00:00:03.000Z"),
            "{out:?}"
        );
        assert!(f
            .applied(&event("new", "2", "2030-01-01T00:00:03Z"))
            .is_empty());
        let relisted = f.listed(
            &[
                event("old", "1", "2001-01-01T00:00:00Z"),
                event("new", "3", "2030-01-01T00:00:07Z"),
                event("unseen-old", "4", "2029-12-31T23:59:59Z"),
            ],
            false,
        );
        assert_eq!(relisted.len(), 1, "{relisted:?}");
        assert!(
            matches!(&relisted[0], EventKind::KubernetesEvent { server_time: Some(t), .. } if t == "2030-01-01T00:00:07.000Z")
        );
    }
}
