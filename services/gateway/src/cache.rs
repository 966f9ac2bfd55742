//! Dashboards kept for a moment (issue 13, item 4: "answers that are rollups
//! may be cached briefly per agency").
//!
//! A dashboard is a rollup: counts, indicators and topics, no personal data.
//! Computing one takes five backend calls and a dozen aggregates, and a hub's
//! wallboards and open browser tabs ask for the same one again and again. So
//! a whole answer is kept for `ttl` (the setting `hub.dashboard_cache_ms`,
//! 1,000 ms by default; 0 turns the cache off), and the calls that arrive
//! while it is being computed share that computation's answer instead of
//! computing it again.
//!
//! What it may show and to whom:
//! - an entry is keyed by the **caller** (subject, agency, agency scope,
//!   roles: everything a service authorizes on), the agency and the period:
//!   an answer is only ever given again to the same caller, so no figure or
//!   `withheld` part crosses roles, agencies or people;
//! - only whole answers are kept: an answer with a part `unreachable`, and
//!   an error, go to the calls that shared its computation and are then
//!   forgotten;
//! - a computation runs as a task of its own (in the starting call's trace),
//!   within the deadline of the call that started it: a call that gives up
//!   does not leave the others waiting on a computation nobody drives. A
//!   call shares a running computation only if that computation's deadline
//!   is no later than its own; otherwise it computes its own answer at once,
//!   with all its time, and that answer is not kept;
//! - freshness: an answer is at most `ttl` old (counted from when its
//!   computation started), and a change made through this gateway process to
//!   an agency forgets every answer of that agency (see `Gateway::agency_changed`).
//!   Changes made at a service directly, or through another gateway
//!   replica, show when the kept answer expires;
//! - memory is bounded: at most [`MAX_ENTRIES`] answers; past that, expired
//!   ones are dropped, and if none is, the answer is computed and not kept.

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::time::Instant;
use tonic::Status;
use touchstone_api::gateway::v1 as pb;
use touchstone_auth::Caller;
use tracing::Instrument;

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
    /// The period in its canonical form, or empty for the current quarter.
    pub period: String,
}

/// A computation's answer, as every call sharing it gets it.
type Outcome = Result<Arc<pb::Dashboard>, Status>;

#[derive(Debug)]
struct Slot {
    /// Which slot this is (a later one may take its key).
    id: u64,
    born: Instant,
    /// The deadline of the call whose computation this is.
    deadline: Instant,
    answer: Shared<BoxFuture<'static, Outcome>>,
}

/// Slots made between two sweeps of the expired ones.
const SWEEP_EVERY: u64 = 64;

/// What a call found for its key.
enum Lookup<F> {
    /// The cache is off or full, or another call computes with more time
    /// than this one has: the call computes on its own, nothing kept.
    Uncached(F),
    /// An answer kept, or being computed by this call's deadline (perhaps
    /// by this call).
    Shared(Arc<Slot>),
}

/// Dashboards kept for a moment; see the module's documentation.
#[derive(Debug)]
pub struct Dashboards {
    ttl: Duration,
    slots: Mutex<HashMap<Key, Arc<Slot>>>,
    next_id: AtomicU64,
}

impl Dashboards {
    /// A cache keeping answers for `ttl`; zero keeps none.
    pub fn new(ttl: Duration) -> Arc<Dashboards> {
        Arc::new(Dashboards {
            ttl,
            slots: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Arc<Slot>>> {
        // No code under the lock can leave the map half changed, so a
        // poisoned lock is used as it is.
        self.slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The dashboard for `key`: kept, being computed by another call by a
    /// deadline no later than `deadline` (then shared), or computed by
    /// `compute`: in a task of its own and kept if whole, or, when another
    /// call computes with more time than this one has, here and not kept.
    pub async fn get<F, Fut>(
        self: &Arc<Self>,
        key: Key,
        deadline: Instant,
        compute: F,
    ) -> Result<pb::Dashboard, Status>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<pb::Dashboard, Status>> + Send + 'static,
    {
        let answer = match self.look_up(key, deadline, compute) {
            Lookup::Uncached(compute) => return compute().await,
            // A computation whose deadline is no later than this call's.
            Lookup::Shared(slot) => slot.answer.clone().await,
        };
        answer.map(|d| pb::Dashboard::clone(&d))
    }

    /// The live slot of `key` whose answer this call may wait for, or a new
    /// one computing with `compute` by `deadline`.
    fn look_up<F, Fut>(self: &Arc<Self>, key: Key, deadline: Instant, compute: F) -> Lookup<F>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<pb::Dashboard, Status>> + Send + 'static,
    {
        if self.ttl.is_zero() {
            return Lookup::Uncached(compute);
        }
        let now = Instant::now();
        let mut slots = self.lock();
        if let Some(slot) = slots.get(&key)
            && now.duration_since(slot.born) < self.ttl
        {
            // Kept, or computing within this call's time: shared. Computing
            // with longer than this call has: this call does not wait for it
            // (the computation may be cut short for neither of them).
            if slot.answer.peek().is_some() || slot.deadline <= deadline {
                return Lookup::Shared(slot.clone());
            }
            return Lookup::Uncached(compute);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        if slots.len() >= MAX_ENTRIES || id.is_multiple_of(SWEEP_EVERY) {
            slots.retain(|_, s| now.duration_since(s.born) < self.ttl);
            if slots.len() >= MAX_ENTRIES {
                return Lookup::Uncached(compute);
            }
        }
        // Spawned while the lock is held: the task cannot forget its slot
        // before the slot is in the map.
        let slot = Arc::new(Slot {
            id,
            born: now,
            deadline,
            answer: self.spawn(key.clone(), id, compute()),
        });
        slots.insert(key, slot.clone());
        Lookup::Shared(slot)
    }

    /// Runs `computation` as a task; if its answer is not to be kept, the
    /// task forgets its slot (`id`) once done.
    fn spawn(
        self: &Arc<Self>,
        key: Key,
        id: u64,
        computation: impl Future<Output = Result<pb::Dashboard, Status>> + Send + 'static,
    ) -> Shared<BoxFuture<'static, Outcome>> {
        let mut unless_kept = ForgetSlot {
            cache: Arc::downgrade(self),
            key: Some(key),
            id,
        };
        // In the starting call's span, so that the backend calls carry its
        // trace.
        let task = tokio::spawn(
            async move {
                let answer = computation.await.map(Arc::new);
                if matches!(&answer, Ok(d) if d.unreachable.is_empty()) {
                    unless_kept.key = None;
                }
                // Dropped here (or by a panic above): a slot whose answer is
                // not kept is forgotten.
                drop(unless_kept);
                answer
            }
            .instrument(tracing::Span::current()),
        );
        async move {
            task.await.unwrap_or_else(|e| {
                Err(touchstone_platform::error::internal(
                    crate::error::DOMAIN,
                    &format_args!("the dashboard's computation stopped: {e}"),
                ))
            })
        }
        .boxed()
        .shared()
    }

    /// Forgets every answer of `agency`: something in it changed.
    pub fn forget(&self, agency: &str) {
        if self.ttl.is_zero() {
            return;
        }
        self.lock().retain(|k, _| k.agency != agency);
    }

    /// Forgets every answer of `agency` when the guard is dropped: when the
    /// change it stands for has ended, or its caller gave up (the change
    /// may still have been applied).
    pub fn forget_when_done(self: &Arc<Self>, agency: &str) -> ForgetWhenDone {
        ForgetWhenDone {
            cache: self.clone(),
            agency: agency.to_string(),
        }
    }

    /// Answers kept or being computed, live or not yet swept (for tests).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no answer is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Forgets slot `id` of `key` when dropped, unless `key` was taken: a
/// computation's answer that is not to be kept, or a computation that
/// panicked.
struct ForgetSlot {
    cache: Weak<Dashboards>,
    key: Option<Key>,
    id: u64,
}

impl Drop for ForgetSlot {
    fn drop(&mut self) {
        if let (Some(key), Some(cache)) = (self.key.take(), self.cache.upgrade()) {
            let mut slots = cache.lock();
            if slots.get(&key).is_some_and(|s| s.id == self.id) {
                slots.remove(&key);
            }
        }
    }
}

/// See [`Dashboards::forget_when_done`].
#[derive(Debug)]
#[must_use = "the agency is forgotten when this is dropped"]
pub struct ForgetWhenDone {
    cache: Arc<Dashboards>,
    agency: String,
}

impl Drop for ForgetWhenDone {
    fn drop(&mut self) {
        self.cache.forget(&self.agency);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::sync::atomic::AtomicUsize;
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

    /// What a computation gives: whole, partial, or an error.
    #[derive(Clone, Copy)]
    enum Gives {
        Whole,
        Partial,
        Error,
    }

    /// A computation taking `took`, whose dashboard's `min_count` says which
    /// computation it was.
    fn computed(
        runs: &Arc<AtomicUsize>,
        gives: Gives,
        took: Duration,
    ) -> impl FnOnce() -> BoxFuture<'static, Result<pb::Dashboard, Status>> + use<> {
        let runs = runs.clone();
        move || {
            async move {
                let n = runs.fetch_add(1, Ordering::SeqCst) + 1;
                tokio::time::sleep(took).await;
                let unreachable = match gives {
                    Gives::Whole => vec![],
                    Gives::Partial => vec!["kpi".to_string()],
                    Gives::Error => return Err(Status::unavailable(format!("run {n}"))),
                };
                Ok(pb::Dashboard {
                    min_count: n as i64,
                    unreachable,
                    ..Default::default()
                })
            }
            .boxed()
        }
    }

    fn whole(
        runs: &Arc<AtomicUsize>,
    ) -> impl FnOnce() -> BoxFuture<'static, Result<pb::Dashboard, Status>> + use<> {
        computed(runs, Gives::Whole, Duration::from_millis(10))
    }

    fn later() -> Instant {
        Instant::now() + Duration::from_secs(3600)
    }

    #[tokio::test(start_paused = true)]
    async fn calls_at_once_share_one_computation_and_later_ones_recompute() {
        let cache = Dashboards::new(Duration::from_millis(1000));
        let runs = Arc::new(AtomicUsize::new(0));
        let officer = caller("u1", &[Role::Officer]);
        let answers = futures::future::join_all(
            (0..20).map(|_| cache.get(key(officer.clone(), "a"), later(), whole(&runs))),
        )
        .await;
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert!(answers.iter().all(|a| a.as_ref().unwrap().min_count == 1));
        // Still kept just before it expires, recomputed at expiry.
        tokio::time::advance(Duration::from_millis(980)).await;
        let d = cache.get(key(officer.clone(), "a"), later(), whole(&runs));
        assert_eq!(d.await.unwrap().min_count, 1);
        tokio::time::advance(Duration::from_millis(20)).await;
        let d = cache.get(key(officer.clone(), "a"), later(), whole(&runs));
        assert_eq!(d.await.unwrap().min_count, 2);
        assert_eq!(runs.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn no_answer_crosses_callers_roles_agencies_or_periods() {
        let cache = Dashboards::new(Duration::from_secs(60));
        let runs = Arc::new(AtomicUsize::new(0));
        let officer = caller("u1", &[Role::Officer]);
        let both = caller("u1", &[Role::Officer, Role::Analyst]);
        let analyst = caller("u1", &[Role::Analyst]);
        let other = caller("u2", &[Role::Officer]);
        let mut listed = caller("u1", &[Role::Officer]);
        listed.agencies = AgencyScope::List(vec!["b".into()]);
        let mut every = caller("u1", &[Role::Officer]);
        every.agencies = AgencyScope::All;
        let mut elsewhere = caller("u1", &[Role::Officer]);
        elsewhere.agency = Some("b".into());
        let mut keys = vec![
            key(officer.clone(), "a"),
            key(both, "a"),
            key(analyst, "a"),
            key(other, "a"),
            key(listed, "a"),
            key(every, "a"),
            key(elsewhere, "a"),
            key(officer.clone(), "b"),
        ];
        let mut later_period = key(officer, "a");
        later_period.period = "2026-Q3".into();
        keys.push(later_period);
        for round in 0..2 {
            for (i, k) in keys.iter().enumerate() {
                let d = cache.get(k.clone(), later(), whole(&runs)).await;
                assert_eq!(d.unwrap().min_count, i as i64 + 1, "round {round}: {k:?}");
            }
        }
        assert_eq!(runs.load(Ordering::SeqCst), keys.len());
    }

    #[tokio::test(start_paused = true)]
    async fn partial_answers_and_errors_go_to_the_calls_sharing_them_and_are_not_kept() {
        let cache = Dashboards::new(Duration::from_secs(60));
        let runs = Arc::new(AtomicUsize::new(0));
        let k = key(caller("u1", &[Role::Officer]), "a");
        let took = Duration::from_millis(100);
        for gives in [Gives::Partial, Gives::Error] {
            let before = runs.load(Ordering::SeqCst);
            let answers = futures::future::join_all(
                (0..10).map(|_| cache.get(k.clone(), later(), computed(&runs, gives, took))),
            )
            .await;
            // One computation, its answer to all ten, none kept.
            assert_eq!(runs.load(Ordering::SeqCst), before + 1);
            for a in &answers {
                match gives {
                    Gives::Partial => assert_eq!(a.as_ref().unwrap().unreachable, ["kpi"]),
                    _ => assert_eq!(a.as_ref().unwrap_err().code(), tonic::Code::Unavailable),
                }
            }
            assert!(cache.is_empty(), "not kept");
        }
        let d = cache.get(k.clone(), later(), whole(&runs)).await.unwrap();
        assert_eq!(d.min_count, 3);
        let d = cache.get(k, later(), whole(&runs)).await.unwrap();
        assert_eq!(d.min_count, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_change_forgets_the_agency_and_only_it() {
        let cache = Dashboards::new(Duration::from_secs(60));
        let runs = Arc::new(AtomicUsize::new(0));
        let officer = caller("u1", &[Role::Officer]);
        for agency in ["a", "b"] {
            let _ = cache
                .get(key(officer.clone(), agency), later(), whole(&runs))
                .await;
        }
        drop(cache.forget_when_done("a"));
        let a = cache
            .get(key(officer.clone(), "a"), later(), whole(&runs))
            .await;
        let b = cache.get(key(officer, "b"), later(), whole(&runs)).await;
        assert_eq!((a.unwrap().min_count, b.unwrap().min_count), (3, 2));
    }

    #[tokio::test(start_paused = true)]
    async fn off_keeps_nothing_and_full_keeps_no_more() {
        let off = Dashboards::new(Duration::ZERO);
        let runs = Arc::new(AtomicUsize::new(0));
        let k = key(caller("u1", &[Role::Officer]), "a");
        for n in 1..=3 {
            let d = off.get(k.clone(), later(), whole(&runs)).await;
            assert_eq!(d.unwrap().min_count, n);
        }
        assert!(off.is_empty());

        let cache = Dashboards::new(Duration::from_secs(60));
        let runs = Arc::new(AtomicUsize::new(0));
        for i in 0..MAX_ENTRIES + 10 {
            let k = key(caller(&format!("u{i}"), &[Role::Officer]), "a");
            let _ = cache.get(k, later(), whole(&runs)).await;
        }
        assert_eq!(cache.len(), MAX_ENTRIES);
        assert_eq!(runs.load(Ordering::SeqCst), MAX_ENTRIES + 10);
        // Once the first expire, new answers are kept again.
        tokio::time::advance(Duration::from_secs(61)).await;
        let k = key(caller("late", &[Role::Officer]), "a");
        let _ = cache.get(k, later(), whole(&runs)).await;
        assert_eq!(cache.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_computation_outlives_the_call_that_started_it() {
        let cache = Dashboards::new(Duration::from_secs(60));
        let runs = Arc::new(AtomicUsize::new(0));
        let k = key(caller("u1", &[Role::Officer]), "a");
        let took = Duration::from_millis(100);
        let first = {
            let (cache, k, compute) = (
                cache.clone(),
                k.clone(),
                computed(&runs, Gives::Whole, took),
            );
            tokio::spawn(async move { cache.get(k, later(), compute).await })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        // A call now shares the running computation; the first gives up.
        let second = {
            let (cache, k, compute) = (cache.clone(), k.clone(), whole(&runs));
            tokio::spawn(async move { cache.get(k, later(), compute).await })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        first.abort();
        assert!(first.await.unwrap_err().is_cancelled());
        let d = second.await.unwrap().unwrap();
        assert_eq!(d.min_count, 1);
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        // And it is kept.
        let d = cache.get(k, later(), whole(&runs)).await.unwrap();
        assert_eq!(d.min_count, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_computation_whose_caller_gave_up_still_ends_and_is_kept() {
        let cache = Dashboards::new(Duration::from_secs(60));
        let runs = Arc::new(AtomicUsize::new(0));
        let ended = Arc::new(AtomicUsize::new(0));
        let k = key(caller("u1", &[Role::Officer]), "a");
        let first = {
            let (cache, k, ended) = (cache.clone(), k.clone(), ended.clone());
            let inner = computed(&runs, Gives::Whole, Duration::from_millis(100));
            let compute = move || async move {
                let d = inner().await;
                ended.fetch_add(1, Ordering::SeqCst);
                d
            };
            tokio::spawn(async move { cache.get(k, later(), compute).await })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        first.abort();
        assert!(first.await.unwrap_err().is_cancelled());
        // Nobody waits on it, and it ends all the same (whatever it holds,
        // such as a fan-out turn, is given back).
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(ended.load(Ordering::SeqCst), 1);
        let d = cache.get(k, later(), whole(&runs)).await.unwrap();
        assert_eq!(d.min_count, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_does_not_wait_for_a_computation_with_more_time_than_it_has() {
        let cache = Dashboards::new(Duration::from_secs(60));
        let runs = Arc::new(AtomicUsize::new(0));
        let k = key(caller("u1", &[Role::Officer]), "a");
        let slow = {
            let (cache, k) = (cache.clone(), k.clone());
            let compute = computed(&runs, Gives::Whole, Duration::from_secs(5));
            tokio::spawn(async move { cache.get(k, later(), compute).await })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        // Less time than the running computation: its own answer, at once.
        let started = Instant::now();
        let short = started + Duration::from_millis(200);
        let own = computed(&runs, Gives::Partial, Duration::from_millis(1));
        let d = cache.get(k.clone(), short, own).await.unwrap();
        assert_eq!(d.min_count, 2);
        assert_eq!(started.elapsed(), Duration::from_millis(1));
        // More time than it: shares it.
        let d = cache.get(k.clone(), later() + Duration::from_secs(1), whole(&runs));
        assert_eq!(d.await.unwrap().min_count, 1);
        assert_eq!(slow.await.unwrap().unwrap().min_count, 1);
        assert_eq!(runs.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_late_partial_answer_does_not_forget_a_newer_whole_one() {
        let cache = Dashboards::new(Duration::from_secs(1));
        let runs = Arc::new(AtomicUsize::new(0));
        let k = key(caller("u1", &[Role::Officer]), "a");
        let slow = {
            let (cache, k) = (cache.clone(), k.clone());
            let compute = computed(&runs, Gives::Partial, Duration::from_millis(1500));
            tokio::spawn(async move { cache.get(k, later(), compute).await })
        };
        // The slow one's slot expires (at 1 s); a newer computation takes
        // the key (at 1.2 s, kept until 2.2 s); the slow one ends (1.5 s).
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let d = cache.get(k.clone(), later(), whole(&runs)).await.unwrap();
        assert_eq!(d.min_count, 2);
        assert_eq!(slow.await.unwrap().unwrap().unreachable, ["kpi"]);
        let d = cache.get(k, later(), whole(&runs)).await.unwrap();
        assert_eq!(d.min_count, 2, "the newer answer is still kept");
    }

    #[tokio::test(start_paused = true)]
    async fn a_computation_that_panics_is_not_kept() {
        let cache = Dashboards::new(Duration::from_secs(60));
        let runs = Arc::new(AtomicUsize::new(0));
        let k = key(caller("u1", &[Role::Officer]), "a");
        async fn panics() -> Result<pb::Dashboard, Status> {
            tokio::time::sleep(Duration::from_millis(1)).await;
            panic!("a bug")
        }
        let e = cache.get(k.clone(), later(), panics).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::Internal);
        assert!(!e.message().contains("a bug"), "{e:?}");
        let d = cache.get(k, later(), whole(&runs)).await.unwrap();
        assert_eq!(d.min_count, 1);
    }
}
