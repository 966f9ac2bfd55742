//! Dashboards kept for a moment (issue 13, item 4: "answers that are rollups
//! may be cached briefly per agency").
//!
//! A dashboard is a rollup: counts, indicators and topics, no personal data.
//! Computing one takes five backend calls and a dozen aggregates, and a hub's
//! wallboards and open browser tabs ask for the same one again and again. So
//! a whole answer is kept for `ttl` (the setting `hub.dashboard_cache_ms`,
//! 1,000 ms by default; 0 turns the cache off), and the calls that arrive
//! while it is being computed wait for it instead of computing it again.
//!
//! What it may show and to whom:
//! - an entry is keyed by the **caller** (subject, agency, agency scope,
//!   roles), the agency and the period as asked: an answer is only ever
//!   given again to the same caller, so no figure or `withheld` part crosses
//!   roles, agencies or people;
//! - only whole answers are kept: an answer with a part `unreachable`, and
//!   every error, is given to its own call and forgotten;
//! - freshness: an answer is at most `ttl` old (counted from when its
//!   computation started), and a change made through the gateway to an
//!   agency (a complaint or response submitted, a complaint acted on, a
//!   follow-up updated, the agency's settings) forgets every answer of that
//!   agency at once. Changes made directly at a service show after `ttl` at
//!   the latest. (The KPI figures in a dashboard already trail the feeds
//!   they are computed from by the KPI service's consumer lag.)
//! - memory is bounded: at most [`MAX_ENTRIES`] answers; past that, expired
//!   ones are dropped, and if none is, the answer is computed and not kept.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::OnceCell;
use tokio::time::Instant;
use touchstone_api::gateway::v1 as pb;
use touchstone_auth::Caller;

/// Most dashboards kept at once.
pub const MAX_ENTRIES: usize = 1024;

/// The default time a dashboard is kept (`hub.dashboard_cache_ms`).
pub const DEFAULT_TTL: Duration = Duration::from_millis(1000);

/// Whose dashboard of which agency and period.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    /// The caller, whole: the answer depends on its roles and scope.
    pub caller: Caller,
    /// The agency's id.
    pub agency: String,
    /// The period as asked (empty for the current quarter).
    pub period: String,
}

#[derive(Debug)]
struct Slot {
    born: Instant,
    answer: OnceCell<Arc<pb::Dashboard>>,
}

/// Dashboards kept for a moment; see the module's documentation.
#[derive(Debug)]
pub struct Dashboards {
    ttl: Duration,
    slots: Mutex<HashMap<Key, Arc<Slot>>>,
}

impl Dashboards {
    /// A cache keeping answers for `ttl`; zero keeps none.
    pub fn new(ttl: Duration) -> Dashboards {
        Dashboards {
            ttl,
            slots: Mutex::new(HashMap::new()),
        }
    }

    /// How long answers are kept.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Arc<Slot>>> {
        // A panic while the map was held leaves it whole (no code under the
        // lock can leave it half changed), so a poisoned lock is used as is.
        self.slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The slot an answer for `key` is kept in: the live one, or a new one.
    /// `None` when the cache is off or full of live answers.
    fn slot(&self, key: Key) -> Option<Arc<Slot>> {
        if self.ttl.is_zero() {
            return None;
        }
        let now = Instant::now();
        let mut slots = self.lock();
        if let Some(slot) = slots.get(&key)
            && now.duration_since(slot.born) < self.ttl
        {
            return Some(slot.clone());
        }
        if slots.len() >= MAX_ENTRIES {
            slots.retain(|_, s| now.duration_since(s.born) < self.ttl);
            if slots.len() >= MAX_ENTRIES {
                return None;
            }
        }
        let slot = Arc::new(Slot {
            born: now,
            answer: OnceCell::new(),
        });
        slots.insert(key, slot.clone());
        Some(slot)
    }

    /// The dashboard for `key`: kept, being computed by another call (then
    /// waited for), or computed by `compute` and kept if whole.
    pub async fn get<E, F, Fut>(&self, key: Key, compute: F) -> Result<pb::Dashboard, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<pb::Dashboard, E>>,
    {
        let Some(slot) = self.slot(key) else {
            return compute().await;
        };
        // The call that computes gets its own answer back through `Err` when
        // the answer is not to be kept; calls waiting then compute their own.
        let kept = slot
            .answer
            .get_or_try_init(|| async {
                match compute().await {
                    Ok(d) if d.unreachable.is_empty() => Ok(Arc::new(d)),
                    other => Err(other),
                }
            })
            .await;
        match kept {
            Ok(d) => Ok(pb::Dashboard::clone(d)),
            Err(own) => own,
        }
    }

    /// Forgets every answer of `agency`: something in it changed.
    pub fn forget(&self, agency: &str) {
        if self.ttl.is_zero() {
            return;
        }
        self.lock().retain(|k, _| k.agency != agency);
    }

    /// Answers kept, live or not yet swept (for tests).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no answer is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use touchstone_auth::{AgencyScope, Role};

    fn caller(subject: &str, roles: &[Role]) -> Caller {
        Caller {
            subject: subject.into(),
            agency: Some("a".into()),
            agencies: AgencyScope::Own,
            roles: roles.iter().copied().collect::<BTreeSet<_>>(),
        }
    }

    fn key(caller: Caller, agency: &str) -> Key {
        Key {
            caller,
            agency: agency.into(),
            period: String::new(),
        }
    }

    /// A dashboard whose `min_count` says which computation made it.
    async fn computed(
        runs: &AtomicUsize,
        unreachable: bool,
    ) -> Result<pb::Dashboard, &'static str> {
        let n = runs.fetch_add(1, Ordering::SeqCst) + 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
        Ok(pb::Dashboard {
            min_count: n as i64,
            unreachable: if unreachable {
                vec!["kpi".into()]
            } else {
                vec![]
            },
            ..Default::default()
        })
    }

    #[tokio::test(start_paused = true)]
    async fn calls_at_once_share_one_computation_and_later_ones_recompute() {
        let cache = Dashboards::new(Duration::from_millis(1000));
        let runs = AtomicUsize::new(0);
        let officer = caller("u1", &[Role::Officer]);
        let answers = futures::future::join_all(
            (0..20).map(|_| cache.get(key(officer.clone(), "a"), || computed(&runs, false))),
        )
        .await;
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert!(answers.iter().all(|a| a.as_ref().unwrap().min_count == 1));
        // Still kept just before it expires, recomputed at expiry.
        tokio::time::advance(Duration::from_millis(980)).await;
        let d = cache.get(key(officer.clone(), "a"), || computed(&runs, false));
        assert_eq!(d.await.unwrap().min_count, 1);
        tokio::time::advance(Duration::from_millis(20)).await;
        let d = cache.get(key(officer.clone(), "a"), || computed(&runs, false));
        assert_eq!(d.await.unwrap().min_count, 2);
        assert_eq!(runs.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn no_answer_crosses_callers_roles_agencies_or_periods() {
        let cache = Dashboards::new(Duration::from_secs(60));
        let runs = AtomicUsize::new(0);
        let officer = caller("u1", &[Role::Officer]);
        let both = caller("u1", &[Role::Officer, Role::Analyst]);
        let analyst = caller("u1", &[Role::Analyst]);
        let other = caller("u2", &[Role::Officer]);
        let mut hub = caller("u1", &[Role::Officer]);
        hub.agencies = AgencyScope::All;
        let mut keys = vec![
            key(officer.clone(), "a"),
            key(both, "a"),
            key(analyst, "a"),
            key(other, "a"),
            key(hub, "a"),
            key(officer.clone(), "b"),
        ];
        let mut later = key(officer, "a");
        later.period = "2026-Q3".into();
        keys.push(later);
        for (i, k) in keys.iter().enumerate() {
            let d = cache.get(k.clone(), || computed(&runs, false)).await;
            assert_eq!(d.unwrap().min_count, i as i64 + 1, "{k:?}");
        }
        // Each again: its own answer.
        for (i, k) in keys.iter().enumerate() {
            let d = cache.get(k.clone(), || computed(&runs, false)).await;
            assert_eq!(d.unwrap().min_count, i as i64 + 1, "{k:?}");
        }
        assert_eq!(runs.load(Ordering::SeqCst), keys.len());
    }

    #[tokio::test(start_paused = true)]
    async fn partial_answers_and_errors_are_not_kept() {
        let cache = Dashboards::new(Duration::from_secs(60));
        let runs = AtomicUsize::new(0);
        let k = key(caller("u1", &[Role::Officer]), "a");
        let d = cache
            .get(k.clone(), || computed(&runs, true))
            .await
            .unwrap();
        assert_eq!((d.min_count, d.unreachable.len()), (1, 1));
        let e = cache
            .get(k.clone(), || async { Err::<pb::Dashboard, _>("down") })
            .await;
        assert_eq!(e.unwrap_err(), "down");
        let d = cache.get(k.clone(), || computed(&runs, false)).await;
        assert_eq!(d.unwrap().min_count, 2);
        let d = cache.get(k, || computed(&runs, false)).await;
        assert_eq!(d.unwrap().min_count, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_change_forgets_the_agency_and_only_it() {
        let cache = Dashboards::new(Duration::from_secs(60));
        let runs = AtomicUsize::new(0);
        let officer = caller("u1", &[Role::Officer]);
        for agency in ["a", "b"] {
            let _ = cache
                .get(key(officer.clone(), agency), || computed(&runs, false))
                .await;
        }
        cache.forget("a");
        let a = cache
            .get(key(officer.clone(), "a"), || computed(&runs, false))
            .await;
        let b = cache
            .get(key(officer, "b"), || computed(&runs, false))
            .await;
        assert_eq!((a.unwrap().min_count, b.unwrap().min_count), (3, 2));
    }

    #[tokio::test(start_paused = true)]
    async fn off_keeps_nothing_and_full_keeps_no_more() {
        let off = Dashboards::new(Duration::ZERO);
        let runs = AtomicUsize::new(0);
        let k = key(caller("u1", &[Role::Officer]), "a");
        for n in 1..=3 {
            let d = off.get(k.clone(), || computed(&runs, false)).await;
            assert_eq!(d.unwrap().min_count, n);
        }
        assert!(off.is_empty());

        let cache = Dashboards::new(Duration::from_secs(60));
        let runs = AtomicUsize::new(0);
        for i in 0..MAX_ENTRIES + 10 {
            let k = key(caller(&format!("u{i}"), &[Role::Officer]), "a");
            let _ = cache.get(k, || computed(&runs, false)).await;
        }
        assert_eq!(cache.len(), MAX_ENTRIES);
        // Once the first expire, new answers are kept again.
        tokio::time::advance(Duration::from_secs(61)).await;
        let k = key(caller("late", &[Role::Officer]), "a");
        let _ = cache.get(k, || computed(&runs, false)).await;
        assert_eq!(cache.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_computation_dropped_midway_leaves_the_next_call_to_compute() {
        let cache = Arc::new(Dashboards::new(Duration::from_secs(60)));
        let runs = Arc::new(AtomicUsize::new(0));
        let k = key(caller("u1", &[Role::Officer]), "a");
        let first = {
            let (cache, runs, k) = (cache.clone(), runs.clone(), k.clone());
            tokio::spawn(async move { cache.get(k, || computed(&runs, false)).await })
        };
        tokio::task::yield_now().await;
        first.abort();
        let _ = first.await;
        let d = cache.get(k, || computed(&runs, false)).await.unwrap();
        assert_eq!(d.min_count, 2);
    }
}
