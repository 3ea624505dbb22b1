//! Per-request batch loading without timers: every key a request's resolvers ask for while the
//! request runs is loaded in one batch per key type, started when the request has nothing left
//! to run but waits (a poll of it that ends without waking it again).
//!
//! The engine resolves a list's items and their fields concurrently within one task, so the
//! request reaches every row of a level before anything it waits on can answer. A poll of the
//! request can end before that, though: the engine's `FuturesUnordered` gives up its poll
//! early, waking itself, when two of the futures it polls wake themselves (the first caller to
//! see a batch's answer does; so did a field that shared a `tokio::sync::OnceCell` with its
//! sibling), and two answers landing together made that happen more often the busier the
//! machine (the chat list's second level was split into batches of two rows). So a poll during
//! which the request was woken is followed at once by another, in the same task poll, before
//! the batches start: the keys a level asks for are all pending when they start, whatever the
//! load. (async-graphql's own `DataLoader` instead waits 1 ms on a timer thread after the first
//! key, and a busy runtime could start the batch before the level had asked for all its keys.)
//! A key asked for while no poll of the request runs (from a batch that loads through another
//! loader, say) starts its batch at once.
//!
//! A batch runs on the request's thread as far as it goes without waiting. One that answers at
//! once (direct SQLite reads do) wakes the request within the same task poll, which then goes
//! on to the next level: a request whose reads are all direct runs from its first level to its
//! response in one poll of its task, with no task per batch and no other request's work in
//! between. A batch that waits (for the pool or a provider) goes on in a task of its own.
//!
//! A query's loaders keep what they loaded for the rest of the request, so what every
//! resolver asks (the viewer's memberships, say) is read once; a mutation's or subscription's
//! do not, since what they read may change between fields or events.

use std::{
    any::{Any, TypeId},
    hash::Hash,
    pin::Pin,
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll, Wake, Waker},
    time::{Duration, Instant},
};

use futures_util::{
    FutureExt, Stream, StreamExt,
    future::{Shared, join_all},
    task::AtomicWaker,
};
// Not tokio's oneshot: a tokio receiver spends the task's cooperative budget (128 per poll), so
// past 128 callers in one poll the rest would wait for another poll and the next level would
// be split into several batches.
use futures_channel::oneshot;
use tracing::Instrument;

/// Locks `mutex`, also after a panic in another holder (what it guards stays consistent).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A batch to start, once the run of polls that asked for it ends.
type Start = Box<dyn FnOnce() + Send>;

/// The most polls of the request one task poll runs back to back while the request wakes
/// itself within one level (a level of the chat list takes 2 to 4): a future that kept waking
/// itself without waiting for anything would otherwise keep the batches from starting.
const POLLS_PER_WAKE_MAX: usize = 64;

/// How long one poll of a request starts its batches on its own thread and goes on to the next
/// level when they answer at once: past it, what the request waits for starts in tasks of its
/// own and the thread serves the other tasks waiting for it first (a large query whose direct
/// reads each take up to their step budget would otherwise hold the thread for all its levels).
const INLINE_SLICE: Duration = Duration::from_millis(2);

/// The batches of one request's loaders, started when the request waits for them.
#[derive(Clone, Default)]
pub struct Batches(Arc<RequestBatches>);

/// What a request's loaders share: its polls and whether they keep what they load.
struct RequestBatches {
    polls: Mutex<Polls>,
    /// Whether loaded values are kept for the rest of the request (a query's).
    keep: AtomicBool,
    /// Whether batches start in tasks of their own only (the running poll is past its slice).
    spawn_only: AtomicBool,
    /// [`INLINE_SLICE`], but for tests.
    slice: Duration,
}

impl Default for RequestBatches {
    fn default() -> Self {
        Self {
            polls: Mutex::default(),
            keep: AtomicBool::new(false),
            spawn_only: AtomicBool::new(false),
            slice: INLINE_SLICE,
        }
    }
}

#[derive(Default)]
struct Polls {
    /// Whether a run of polls of the request is under way.
    polling: bool,
    /// Batches asked for during the running polls.
    waiting: Vec<Start>,
}

impl Batches {
    /// Starts `start` when the running polls end, or now when none runs.
    fn schedule(&self, start: Start) {
        let mut polls = lock(&self.0.polls);
        if polls.polling {
            polls.waiting.push(start);
        } else {
            drop(polls);
            start();
        }
    }

    /// Starts the batches the running polls asked for so far, and ends the run of polls unless
    /// `polling`; whether there were any.
    fn start_waiting(&self, polling: bool) -> bool {
        let waiting = {
            let mut polls = lock(&self.0.polls);
            polls.polling = polling;
            std::mem::take(&mut polls.waiting)
        };
        let any = !waiting.is_empty();
        for start in waiting {
            start();
        }
        any
    }

    fn begin(&self) -> PollGuard<'_> {
        lock(&self.0.polls).polling = true;
        PollGuard(self)
    }

    /// Keeps what the loaders load for the rest of the request: for a query, whose reads do
    /// not change what they read.
    pub fn keep_loaded(&self, keep: bool) {
        self.0.keep.store(keep, Ordering::Relaxed);
    }

    fn keeps(&self) -> bool {
        self.0.keep.load(Ordering::Relaxed)
    }

    /// Whether a batch may run on the thread that starts it: not past the running poll's
    /// slice, nor while a panic unwinds the request (its answer would be thrown away).
    fn inline(&self) -> bool {
        !self.0.spawn_only.load(Ordering::Relaxed) && !std::thread::panicking()
    }

    /// Batches with another time slice than [`INLINE_SLICE`].
    #[cfg(test)]
    fn with_slice(slice: Duration) -> Self {
        Self(Arc::new(RequestBatches {
            slice,
            ..RequestBatches::default()
        }))
    }
}

/// Ends a run of polls (also when one panics): starts what they asked for.
struct PollGuard<'a>(&'a Batches);

impl Drop for PollGuard<'_> {
    fn drop(&mut self) {
        self.0.start_waiting(false);
    }
}

/// The waker a request is polled with: a wake while a poll of the request runs is noted (the
/// request is polled again at once), any other goes to the task that polls the request.
#[derive(Default)]
struct Wakes {
    /// The task that polls the request.
    task: AtomicWaker,
    /// Whether a poll of the request runs.
    polling: AtomicBool,
    /// Whether the request was woken since the running poll began.
    woken: AtomicBool,
}

impl Wake for Wakes {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::SeqCst);
        if !self.polling.load(Ordering::SeqCst) {
            self.task.wake();
        }
    }
}

/// A request's future or stream, polled so that its loaders batch per level: polled again
/// while it wakes itself, and its batches started when it waits.
pub struct Batched<S> {
    inner: S,
    batches: Batches,
    wakes: Arc<Wakes>,
    /// [`Self::wakes`] as a waker, made once.
    waker: Waker,
}

impl<S> Batched<S> {
    /// `inner`, whose loaders were made with `batches`.
    pub fn new(inner: S, batches: Batches) -> Self {
        let wakes = Arc::new(Wakes::default());
        Self {
            inner,
            batches,
            waker: Waker::from(wakes.clone()),
            wakes,
        }
    }

    /// Polls the request with `poll` until it is ready or waits without having woken itself (at
    /// most [`POLLS_PER_WAKE_MAX`] times), then starts the batches it asked for.
    fn run<T>(
        &mut self,
        cx: &mut Context<'_>,
        mut poll: impl FnMut(&mut S, &mut Context<'_>) -> Poll<T>,
    ) -> Poll<T> {
        let wakes = &*self.wakes;
        wakes.task.register(cx.waker());
        wakes.polling.store(true, Ordering::SeqCst);
        let _poll = self.batches.begin();
        let mut inner = Context::from_waker(&self.waker);
        let mut result;
        let began = Instant::now();
        let batches = &self.batches.0;
        batches.spawn_only.store(false, Ordering::Relaxed);
        let mut polls = 0;
        loop {
            polls += 1;
            wakes.woken.store(false, Ordering::SeqCst);
            result = poll(&mut self.inner, &mut inner);
            if result.is_ready() {
                break;
            }
            if wakes.woken.load(Ordering::SeqCst) {
                if polls < POLLS_PER_WAKE_MAX {
                    continue;
                }
                break;
            }
            // The request waits: its batches start now, and when one answers at once (a direct
            // read) it wakes the request, whose next level runs in this same poll of the task.
            // Past the slice they start in tasks of their own when the poll ends, and the
            // request is polled again after the other tasks waiting for this thread.
            if began.elapsed() >= batches.slice {
                batches.spawn_only.store(true, Ordering::Relaxed);
                break;
            }
            if !(self.batches.start_waiting(true) && wakes.woken.load(Ordering::SeqCst)) {
                break;
            }
            polls = 0;
        }
        wakes.polling.store(false, Ordering::SeqCst);
        // Woken after the last poll began (or on every one of them): poll again later.
        if result.is_pending() && wakes.woken.load(Ordering::SeqCst) {
            wakes.task.wake();
        }
        result
    }
}

impl<F: Future + Unpin> Future for Batched<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.run(cx, |inner, cx| inner.poll_unpin(cx))
    }
}

impl<S: Stream + Unpin> Stream for Batched<S> {
    type Item = S::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        self.run(cx, |inner, cx| inner.poll_next_unpin(cx))
    }
}

/// A map of a request's batches, and what a [`Loader`] answers (see [`crate::domain::IdMap`]).
pub type Map<K, V> = crate::domain::IdMap<K, V>;

/// Loads the values of many keys in one call (async-graphql's `Loader`, answering a [`Map`]).
pub trait Loader<K: Send + Sync + Hash + Eq + Clone + 'static>: Send + Sync + 'static {
    /// What a key loads.
    type Value: Send + Sync + Clone + 'static;
    /// What a failed call returns (to every caller of its keys).
    type Error: Send + Clone + 'static;

    /// The values of `keys` that exist (a key left out has none).
    fn load(
        &self,
        keys: &[K],
    ) -> impl Future<Output = Result<Map<K, Self::Value>, Self::Error>> + Send;
}

/// A set of a request's batches, hashed as [`Map`].
type Set<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;

/// What one batch loaded: the values found, and the error of each key whose call failed.
struct Outcome<K, V, E> {
    values: Map<K, V>,
    failed: Map<K, E>,
}

/// What every caller of one batch waits on: one answer for all of them, so that they all see
/// it at the same poll of the request (answered one by one, a caller polled early would ask
/// for the next level's keys alone, splitting that level's batch).
type Answer<K, V, E> = Shared<oneshot::Receiver<Arc<Outcome<K, V, E>>>>;

/// Where a batch sends its one answer.
type Answering<K, V, E> = oneshot::Sender<Arc<Outcome<K, V, E>>>;

/// A batch not yet answered: where it answers, and what its callers wait on.
struct Open<K, V, E> {
    answering: Answering<K, V, E>,
    answer: Answer<K, V, E>,
}

/// The keys of one type asked for since their last batch started, and what was loaded.
struct Pending<K, V, E> {
    keys: Set<K>,
    /// Where the batch of `keys` answers, and what their callers wait on.
    batch: Option<Open<K, V, E>>,
    loaded: Map<K, V>,
}

impl<K, V, E> Default for Pending<K, V, E> {
    fn default() -> Self {
        Self {
            keys: Set::default(),
            batch: None,
            loaded: Map::default(),
        }
    }
}

struct Inner<T> {
    loader: T,
    batches: Batches,
    /// The most keys one load is given.
    max_batch: usize,
    /// A `Pending<K, ..>` per key type.
    pending: Mutex<Map<TypeId, Box<dyn Any + Send>>>,
}

/// A per-request loader: [`Loader::load`] is called with the keys of a whole level at once.
pub struct DataLoader<T> {
    inner: Arc<Inner<T>>,
}

impl<T: Send + Sync + 'static> DataLoader<T> {
    /// A loader whose batches start when the request `batches` belongs to waits for them.
    pub fn new(loader: T, batches: &Batches) -> Self {
        Self {
            inner: Arc::new(Inner {
                loader,
                batches: batches.clone(),
                max_batch: usize::MAX,
                pending: Mutex::new(Map::default()),
            }),
        }
    }

    /// The loader itself.
    pub fn loader(&self) -> &T {
        &self.inner.loader
    }

    /// At most `max` keys per call of the loader (a batch of more is split).
    pub fn max_batch_size(mut self, max: usize) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.max_batch = max.max(1);
        }
        self
    }

    /// Loads one key.
    pub async fn load_one<K>(&self, key: K) -> Result<Option<T::Value>, T::Error>
    where
        K: Send + Sync + Hash + Eq + Clone + 'static,
        T: Loader<K>,
        T::Error: From<&'static str> + Sync,
    {
        let mut found = self.load_many(std::iter::once(key.clone())).await?;
        Ok(found.remove(&key))
    }

    /// Loads some keys: those found, by key.
    pub async fn load_many<K, I>(&self, keys: I) -> Result<Map<K, T::Value>, T::Error>
    where
        K: Send + Sync + Hash + Eq + Clone + 'static,
        I: IntoIterator<Item = K>,
        T: Loader<K>,
        T::Error: From<&'static str> + Sync,
    {
        let (mut found, answer, first, wanted) = {
            let mut pending = lock(&self.inner.pending);
            let typed = pending
                .entry(TypeId::of::<K>())
                .or_insert_with(|| Box::new(Pending::<K, T::Value, T::Error>::default()))
                .downcast_mut::<Pending<K, T::Value, T::Error>>()
                .ok_or("a loader's pending keys have the wrong type")?;
            let mut found = Map::default();
            let mut wanted = Vec::new();
            for key in keys {
                match typed.loaded.get(&key) {
                    Some(value) => {
                        found.insert(key, value.clone());
                    }
                    None => wanted.push(key),
                }
            }
            if wanted.is_empty() {
                return Ok(found);
            }
            let first = typed.batch.is_none();
            typed.keys.extend(wanted.iter().cloned());
            let answer = typed
                .batch
                .get_or_insert_with(|| {
                    let (answering, rx) = oneshot::channel();
                    Open {
                        answering,
                        answer: rx.shared(),
                    }
                })
                .answer
                .clone();
            (found, answer, first, wanted)
        };
        if first {
            let inner = self.inner.clone();
            self.inner
                .batches
                .schedule(Box::new(move || Inner::start::<K>(inner)));
        }
        let outcome = answer
            .await
            .map_err(|_| T::Error::from("a batch load stopped before it answered"))?;
        for key in wanted {
            if let Some(error) = outcome.failed.get(&key) {
                return Err(error.clone());
            }
            if let Some(value) = outcome.values.get(&key) {
                found.insert(key, value.clone());
            }
        }
        Ok(found)
    }
}

impl<T: Send + Sync + 'static> Inner<T> {
    /// Starts the batch of the keys of type `K` asked for so far.
    fn start<K>(inner: Arc<Self>)
    where
        K: Send + Sync + Hash + Eq + Clone + 'static,
        T: Loader<K>,
        T::Error: Sync,
    {
        let (keys, answer) = {
            let mut pending = lock(&inner.pending);
            let Some(typed) = pending
                .get_mut(&TypeId::of::<K>())
                .and_then(|p| p.downcast_mut::<Pending<K, T::Value, T::Error>>())
            else {
                return;
            };
            let Some(Open {
                answering: answer, ..
            }) = typed.batch.take()
            else {
                return;
            };
            (std::mem::take(&mut typed.keys), answer)
        };
        let keys: Vec<K> = keys.into_iter().collect();
        let inline = inner.batches.inline();
        let mut batch = Box::pin(
            async move {
                let loads = keys.chunks(inner.max_batch).map(|chunk| {
                    let inner = &inner;
                    async move { (chunk, inner.loader.load(chunk).await) }
                });
                let mut values = Map::default();
                let mut failed = Map::default();
                for (chunk, result) in join_all(loads).await {
                    match result {
                        Ok(loaded) if values.is_empty() => values = loaded,
                        Ok(loaded) => values.extend(loaded),
                        Err(e) => failed.extend(chunk.iter().map(|k| (k.clone(), e.clone()))),
                    }
                }
                inner.answer(answer, Outcome { values, failed });
            }
            .in_current_span(),
        );
        if !inline {
            tokio::spawn(batch);
            return;
        }
        // Run on the caller's thread as far as it goes without waiting: a batch of direct reads
        // answers here, with no task to schedule. What waits goes on in a task of its own,
        // whose first poll registers its waker (the one given here wakes nothing). A load that
        // panics is dropped, as its task would be: its callers hear that it stopped.
        let first = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            batch.as_mut().poll(&mut Context::from_waker(Waker::noop()))
        }));
        if matches!(first, Ok(Poll::Pending)) {
            tokio::spawn(batch);
        }
    }

    /// Answers every caller of a batch at once, keeping the values first when asked to.
    fn answer<K>(
        &self,
        answer: Answering<K, T::Value, T::Error>,
        outcome: Outcome<K, T::Value, T::Error>,
    ) where
        K: Send + Sync + Hash + Eq + Clone + 'static,
        T: Loader<K>,
        T::Error: Sync,
    {
        // Kept before anyone is answered, so a caller that asks again finds them.
        if self.batches.keeps() {
            let mut pending = lock(&self.pending);
            if let Some(typed) = pending
                .get_mut(&TypeId::of::<K>())
                .and_then(|p| p.downcast_mut::<Pending<K, T::Value, T::Error>>())
            {
                typed
                    .loaded
                    .extend(outcome.values.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
        }
        let _ = answer.send(Arc::new(outcome));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use futures_util::future::join_all;

    use super::*;

    /// Doubles numbers, counting its calls and remembering each call's keys.
    #[derive(Default)]
    struct Doubler {
        calls: AtomicUsize,
        batches: Mutex<Vec<Vec<u32>>>,
    }

    impl Loader<u32> for Doubler {
        type Value = u32;
        type Error = async_graphql::Error;

        async fn load(&self, keys: &[u32]) -> Result<Map<u32, u32>, Self::Error> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let mut sorted = keys.to_vec();
            sorted.sort_unstable();
            lock(&self.batches).push(sorted);
            Ok(keys.iter().map(|k| (*k, k * 2)).collect())
        }
    }

    fn calls(loader: &DataLoader<Doubler>) -> usize {
        loader.loader().calls.load(Ordering::SeqCst)
    }

    /// A request of two levels over `rows` rows: each row asks for its number, then for the
    /// value that came back.
    async fn two_levels<T>(
        loader: &DataLoader<T>,
        rows: u32,
    ) -> Vec<async_graphql::Result<Option<u32>>>
    where
        T: Loader<u32, Value = u32, Error = async_graphql::Error> + Send + Sync + 'static,
    {
        join_all((0..rows).map(|k| async move {
            let first = loader.load_one(k).await?.unwrap_or_default();
            loader.load_one(first).await
        }))
        .await
    }

    /// Polls `request` once, as its task would, with a waker that wakes nothing.
    fn poll_once<F: Future + Unpin>(request: &mut F) -> Poll<F::Output> {
        Pin::new(request).poll(&mut Context::from_waker(Waker::noop()))
    }

    /// Checks that row `k` of [`two_levels`] over a doubling loader ended with `4 * k`.
    fn assert_doubled_twice(values: Vec<async_graphql::Result<Option<u32>>>) {
        for (k, v) in values.into_iter().enumerate() {
            assert_eq!(v.expect("loaded"), Some(k as u32 * 4));
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_key_asked_for_in_one_poll_is_loaded_in_one_batch() {
        let batches = Batches::default();
        let loader = DataLoader::new(Doubler::default(), &batches);
        let level = join_all((0..200).map(|k| loader.load_one(k)));
        let values = Batched::new(Box::pin(level), batches).await;
        assert_eq!(calls(&loader), 1);
        assert_eq!(
            lock(&loader.loader().batches)[0],
            (0..200).collect::<Vec<_>>()
        );
        for (k, v) in values.into_iter().enumerate() {
            assert_eq!(v.expect("loaded"), Some(k as u32 * 2));
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_next_level_of_a_large_level_is_loaded_in_one_batch_too() {
        let batches = Batches::default();
        let loader = DataLoader::new(Doubler::default(), &batches);
        // 200 rows, each asking for a second key once its first is answered: more answers in
        // one poll than tokio's cooperative budget of 128.
        let loader = &loader;
        let rows = join_all((0..200).map(|k| async move {
            loader.load_one(k).await?;
            loader.load_one(k + 1000).await
        }));
        let values = Batched::new(Box::pin(rows), batches).await;
        assert_eq!(
            calls(loader),
            2,
            "{:?}",
            lock(&loader.loader().batches).len()
        );
        assert!(values.iter().all(Result::is_ok));
    }

    /// Wakes its task while polled and waits for one poll, as a future that gives up its poll.
    struct WakeSelfOnce(bool);

    impl Future for WakeSelfOnce {
        type Output = ();

        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            if self.0 {
                return Poll::Ready(());
            }
            self.0 = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }

    #[tokio::test]
    async fn the_next_level_is_loaded_in_one_batch_when_its_rows_wake_themselves_while_polled() {
        let batches = Batches::default();
        let loader = DataLoader::new(Doubler::default(), &batches);
        let loader = &loader;
        // More rows than join_all joins in place, so a FuturesUnordered polls them, as the
        // engine's lists do: it gives up its poll once two rows woke themselves while polled,
        // before the other rows asked for their next key. Each row asks for its next key while
        // one of its fields wakes the row (the chat list's rows did, through a shared cell).
        let rows = join_all((0..50).map(|k| async move {
            loader.load_one(k).await?;
            let (next, ()) =
                futures_util::future::join(loader.load_one(k + 1000), WakeSelfOnce(false)).await;
            next
        }));
        let values = Batched::new(Box::pin(rows), batches).await;
        let sizes: Vec<usize> = lock(&loader.loader().batches)
            .iter()
            .map(Vec::len)
            .collect();
        assert_eq!(sizes, [50, 50]);
        assert!(values.iter().all(Result::is_ok));
    }

    #[tokio::test]
    async fn a_future_that_keeps_waking_itself_does_not_hold_back_the_batches() {
        let batches = Batches::default();
        let loader = DataLoader::new(Doubler::default(), &batches);
        let answered = AtomicBool::new(false);
        // Spins (waking itself at every poll) until the other future's key is answered.
        let spinner = async {
            let mut spins = 0_usize;
            while !answered.load(Ordering::SeqCst) {
                WakeSelfOnce(false).await;
                spins += 1;
            }
            spins
        };
        let asker = async {
            let value = loader.load_one(21).await;
            answered.store(true, Ordering::SeqCst);
            value
        };
        let both = futures_util::future::join(spinner, asker);
        let run = Batched::new(Box::pin(both), batches);
        let (spins, value) = tokio::time::timeout(Duration::from_secs(5), run)
            .await
            .expect("the batch started although a future kept waking itself");
        assert_eq!(value.expect("loaded"), Some(42));
        assert!(spins >= POLLS_PER_WAKE_MAX, "{spins}");
    }

    #[tokio::test]
    async fn a_failed_call_fails_only_the_callers_of_its_keys() {
        /// Fails any call that includes key 0.
        struct FailsZero;
        impl Loader<u32> for FailsZero {
            type Value = u32;
            type Error = async_graphql::Error;
            async fn load(&self, keys: &[u32]) -> Result<Map<u32, u32>, Self::Error> {
                if keys.contains(&0) {
                    return Err(async_graphql::Error::new("call failed"));
                }
                Ok(keys.iter().map(|k| (*k, *k)).collect())
            }
        }
        let batches = Batches::default();
        let loader = DataLoader::new(FailsZero, &batches).max_batch_size(1);
        let level = join_all((0..3).map(|k| loader.load_one(k)));
        let results = Batched::new(Box::pin(level), batches).await;
        assert_eq!(
            results[0].as_ref().expect_err("failed").message,
            "call failed"
        );
        assert_eq!(results[1].as_ref().expect("loaded"), &Some(1));
        assert_eq!(results[2].as_ref().expect("loaded"), &Some(2));
    }

    #[tokio::test]
    async fn levels_whose_batches_answer_at_once_all_run_in_one_poll_of_the_request() {
        // A slice no preempted test thread outlasts.
        let batches = Batches::with_slice(Duration::from_secs(60));
        let loader = DataLoader::new(Doubler::default(), &batches);
        let loader = &loader;
        // Three levels: each row's next key is asked for once its previous one is answered.
        let rows = join_all((0..50).map(|k| async move {
            let first = loader.load_one(k).await?.unwrap_or_default();
            let second = loader.load_one(first + 1000).await?.unwrap_or_default();
            loader.load_one(second + 1000).await
        }));
        let mut request = Batched::new(Box::pin(rows), batches);
        let Poll::Ready(values) = poll_once(&mut request) else {
            panic!("the request waited although every batch answered at once");
        };
        assert_eq!(calls(loader), 3, "one batch per level");
        assert_eq!(
            values[3].as_ref().expect("loaded"),
            &Some((3 * 2 + 1000) * 2 * 2 + 2000)
        );
    }

    #[tokio::test]
    async fn a_request_past_its_time_slice_is_polled_again_after_the_other_tasks() {
        /// Doubles numbers on the calling thread, slower than a time slice, counting its calls.
        struct Busy(AtomicUsize);
        impl Loader<u32> for Busy {
            type Value = u32;
            type Error = async_graphql::Error;
            async fn load(&self, keys: &[u32]) -> Result<Map<u32, u32>, Self::Error> {
                std::thread::sleep(INLINE_SLICE + Duration::from_millis(1));
                self.0.fetch_add(1, Ordering::SeqCst);
                Ok(keys.iter().map(|k| (*k, k * 2)).collect())
            }
        }
        let batches = Batches::default();
        let loader = DataLoader::new(Busy(AtomicUsize::new(0)), &batches);
        let mut request = Batched::new(Box::pin(two_levels(&loader, 10)), batches);
        assert!(
            poll_once(&mut request).is_pending(),
            "the second level waits for the next poll"
        );
        assert_eq!(
            loader.loader().0.load(Ordering::SeqCst),
            1,
            "the second level's batch was left to a task of its own"
        );
        assert_doubled_twice(request.await);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_that_waits_goes_on_in_a_task_of_its_own_and_answers_every_caller() {
        /// Doubles numbers after a sleep, as a load from the pool or a provider waits.
        struct Slow;
        impl Loader<u32> for Slow {
            type Value = u32;
            type Error = async_graphql::Error;
            async fn load(&self, keys: &[u32]) -> Result<Map<u32, u32>, Self::Error> {
                tokio::time::sleep(Duration::from_millis(20)).await;
                Ok(keys.iter().map(|k| (*k, k * 2)).collect())
            }
        }
        let batches = Batches::default();
        let loader = DataLoader::new(Slow, &batches);
        let mut request = Batched::new(Box::pin(two_levels(&loader, 20)), batches);
        assert!(
            poll_once(&mut request).is_pending(),
            "a batch that sleeps cannot answer in the first poll"
        );
        let values = tokio::time::timeout(Duration::from_secs(5), request)
            .await
            .expect("the waiting batches answered");
        assert_doubled_twice(values);
    }

    #[tokio::test]
    async fn a_load_that_panics_fails_its_callers_and_not_the_request() {
        struct Panicking;
        impl Loader<u32> for Panicking {
            type Value = u32;
            type Error = async_graphql::Error;
            async fn load(&self, _: &[u32]) -> Result<Map<u32, u32>, Self::Error> {
                panic!("a bug in a loader")
            }
        }
        let batches = Batches::default();
        let loader = DataLoader::new(Panicking, &batches);
        let level = join_all((0..3).map(|k| loader.load_one(k)));
        for result in Batched::new(Box::pin(level), batches).await {
            assert_eq!(
                result.expect_err("failed").message,
                "a batch load stopped before it answered"
            );
        }
    }

    #[tokio::test]
    async fn a_key_asked_for_outside_a_poll_of_the_request_is_loaded_at_once() {
        let loader = DataLoader::new(Doubler::default(), &Batches::default());
        assert_eq!(loader.load_one(21).await.expect("loaded"), Some(42));
        assert_eq!(calls(&loader), 1);
    }

    #[tokio::test]
    async fn a_batch_over_the_limit_is_split_into_calls_of_at_most_the_limit() {
        let batches = Batches::default();
        let loader = DataLoader::new(Doubler::default(), &batches).max_batch_size(30);
        let level = join_all((0..100).map(|k| loader.load_one(k)));
        Batched::new(Box::pin(level), batches).await;
        let sizes: Vec<usize> = lock(&loader.loader().batches)
            .iter()
            .map(Vec::len)
            .collect();
        assert_eq!(sizes.len(), 4, "ceil(100 / 30) calls: {sizes:?}");
        assert!(sizes.iter().all(|n| *n <= 30), "{sizes:?}");
        assert_eq!(sizes.iter().sum::<usize>(), 100);
    }

    #[tokio::test]
    async fn what_a_query_loaded_is_kept_and_what_anything_else_loaded_is_read_again() {
        for (keep, expected_calls) in [(true, 1), (false, 2)] {
            let batches = Batches::default();
            batches.keep_loaded(keep);
            let loader = DataLoader::new(Doubler::default(), &batches);
            let twice = async {
                let first = loader.load_one(7).await.expect("first");
                let again = loader.load_one(7).await.expect("again");
                (first, again)
            };
            let (first, again) = Batched::new(Box::pin(twice), batches).await;
            assert_eq!((first, again), (Some(14), Some(14)));
            assert_eq!(calls(&loader), expected_calls, "keep = {keep}");
        }
    }

    #[tokio::test]
    async fn a_failed_batch_answers_every_caller_with_its_error() {
        struct Failing;
        impl Loader<u32> for Failing {
            type Value = u32;
            type Error = async_graphql::Error;
            async fn load(&self, _: &[u32]) -> Result<Map<u32, u32>, Self::Error> {
                Err(async_graphql::Error::new("the database is down"))
            }
        }
        let batches = Batches::default();
        let loader = DataLoader::new(Failing, &batches);
        let level = join_all((0..3).map(|k| loader.load_one(k)));
        for result in Batched::new(Box::pin(level), batches).await {
            assert_eq!(result.expect_err("failed").message, "the database is down");
        }
    }
}
