//! The CPU device's fork-join team: one helper thread per extra core that spins between the
//! parallel loops of a training step instead of sleeping.
//!
//! A small network's step is a chain of parallel loops tens of microseconds long. Handing each
//! to a sleeping thread pool costs a futex wake-up and, in a virtual machine, an inter-processor
//! interrupt per loop: on two cores a fifth of a step went to waking rayon's workers. The team's
//! helpers spin for [`SPIN`] after their last job (yielding to other threads after [`HOT`]),
//! then park, so a training loop keeps them warm and an idle program does not burn CPU.
//!
//! Parts are claimed dynamically from a shared counter, so the caller never waits for a helper
//! to wake up: it runs the parts nobody has claimed itself. A call made while the team is busy
//! (another thread's loop, or a loop nested inside a part) runs its parts on the calling thread.
//! Which thread runs a part never changes its result, so results do not depend on timing.

use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering::SeqCst};
use std::sync::{Mutex, OnceLock};
use std::thread::Thread;
use std::time::{Duration, Instant};

use super::high_water;

/// How long a helper keeps polling for work after its last part before it parks.
const SPIN: Duration = Duration::from_millis(2);
/// How long it polls without yielding its core to other threads (the batch loader).
const HOT: Duration = Duration::from_micros(100);

/// The most parts a pinned loop ([`for_each_pinned`]) has: one per thread.
const MAX_PINNED: usize = 64;

/// How the threads claim a loop's parts.
#[derive(Clone, Copy, PartialEq)]
enum Claim {
    /// Each takes the next part left.
    Any,
    /// Thread `me` first takes part `me`, then any left ([`for_each_pinned`]).
    OwnFirst,
    /// Thread `me` takes part `me` alone (the caller takes those of helpers not running).
    OwnOnly,
}

/// One parallel loop, on the stack of the thread that started it.
struct Job<'a> {
    f: &'a (dyn Fn(usize) + Sync),
    parts: usize,
    next: AtomicUsize,
    done: AtomicUsize,
    /// What the first part to panic panicked with, raised again on the caller once every
    /// part has finished.
    panicked: Mutex<Option<Box<dyn std::any::Any + Send>>>,
    claim: Claim,
    /// For a pinned loop, which parts have been claimed (otherwise unused).
    pinned: Option<[AtomicBool; MAX_PINNED]>,
}

impl<'a> Job<'a> {
    fn new(f: &'a (dyn Fn(usize) + Sync), parts: usize, claim: Claim) -> Job<'a> {
        Job {
            f,
            parts,
            next: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
            panicked: Mutex::new(None),
            claim,
            pinned: (claim != Claim::Any).then(|| std::array::from_fn(|_| AtomicBool::new(false))),
        }
    }

    /// Claims and runs parts until none are left (for [`Claim::OwnOnly`], its own part);
    /// thread `me` is 0 for the caller, `i + 1` for helper `i`. Tops up the thread's scratch
    /// lists first if a mark has risen (`high_water.rs`).
    fn work(&self, me: usize) {
        high_water::topped_up(super::top_up_scratch);
        if let Some(claimed) = &self.pinned {
            if self.claim == Claim::OwnOnly {
                if me < self.parts && !claimed[me].swap(true, SeqCst) {
                    self.run(me);
                }
                return;
            }
            let order = (me..self.parts).chain(0..me.min(self.parts));
            for p in order {
                if !claimed[p].swap(true, SeqCst) {
                    self.run(p);
                }
            }
            return;
        }
        loop {
            let p = self.next.fetch_add(1, SeqCst);
            if p >= self.parts {
                return;
            }
            self.run(p);
        }
    }

    fn run(&self, p: usize) {
        if let Err(payload) = catch_unwind(AssertUnwindSafe(|| (self.f)(p))) {
            self.panicked.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(payload);
        }
        self.done.fetch_add(1, SeqCst);
    }
}

struct Team {
    /// The published job (null when none), type-erased: valid while `active > 0` or while
    /// its caller waits.
    job: AtomicPtr<Job<'static>>,
    /// Helpers currently holding a reference to the published job.
    active: AtomicUsize,
    /// Set while a caller owns the team.
    busy: AtomicBool,
    /// Bumped at every publication, so parked helpers see new work.
    generation: AtomicUsize,
    helpers: Vec<Helper>,
}

struct Helper {
    /// Set by the helper when it starts.
    thread: OnceLock<Thread>,
    parked: AtomicBool,
}

thread_local! {
    /// Set on helper threads and while a thread runs a team loop: nested loops run serially.
    static INSIDE: Cell<bool> = const { Cell::new(false) };
}

static TEAM: OnceLock<Team> = OnceLock::new();

fn team() -> &'static Team {
    let mut first = false;
    let team = TEAM.get_or_init(|| {
        first = true;
        let extra = threads() - 1;
        Team {
            job: AtomicPtr::new(std::ptr::null_mut()),
            active: AtomicUsize::new(0),
            busy: AtomicBool::new(false),
            generation: AtomicUsize::new(0),
            helpers: (0..extra).map(|_| Helper { thread: OnceLock::new(), parked: AtomicBool::new(false) }).collect(),
        }
    });
    if first {
        let mut started = Vec::new();
        for i in 0..team.helpers.len() {
            // A helper that fails to start only means its share runs on the caller.
            let spawned = std::thread::Builder::new().name(format!("nn-cpu-{i}")).spawn(move || {
                let Some(team) = TEAM.get() else { return };
                crate::cpu::flush_denormals_to_zero();
                INSIDE.with(|c| c.set(true));
                // The publications to wait for are those after this point, read before the
                // helper says it is running: a caller that sees it running and then publishes
                // always bumps the generation past this.
                let seen = team.generation.load(SeqCst);
                let _ = team.helpers[i].thread.set(std::thread::current());
                helper_loop(team, i, seen);
            });
            if spawned.is_ok() {
                started.push(i);
            }
        }
        // Wait (briefly) for the helpers to be running, so that the first loops can wake them
        // and no thread start-up is left to happen during later work.
        let deadline = Instant::now() + Duration::from_secs(1);
        for i in started {
            while team.helpers[i].thread.get().is_none() && Instant::now() < deadline {
                std::thread::yield_now();
            }
        }
    }
    team
}

fn helper_loop(team: &Team, me: usize, mut seen: usize) {
    loop {
        // Wait for a new publication: spin, then yield, then park.
        let start = Instant::now();
        let mut polls = 0u32;
        while team.generation.load(SeqCst) == seen {
            polls = polls.wrapping_add(1);
            if !polls.is_multiple_of(64) {
                std::hint::spin_loop();
                continue;
            }
            let idle = start.elapsed();
            if idle < HOT {
                continue;
            }
            if idle < SPIN {
                std::thread::yield_now();
                continue;
            }
            let h = &team.helpers[me];
            h.parked.store(true, SeqCst);
            if team.generation.load(SeqCst) == seen {
                std::thread::park_timeout(Duration::from_millis(100));
            }
            h.parked.store(false, SeqCst);
        }
        seen = team.generation.load(SeqCst);
        team.active.fetch_add(1, SeqCst);
        let job = team.job.load(SeqCst);
        if !job.is_null() {
            // SAFETY: the caller unpublishes the job and then waits for `active` to drop to
            // zero before its stack frame (and the job on it) goes away; we counted ourselves
            // in `active` before loading the pointer, so it stays valid until we count out.
            // A panic outside the parts (topping up the scratch lists) is caught too, so that
            // this helper still counts out: the caller then runs the parts it left.
            let _ = catch_unwind(AssertUnwindSafe(|| unsafe { (*job).work(me + 1) }));
        }
        team.active.fetch_sub(1, SeqCst);
    }
}

/// Unpublishes the job and waits for the helpers to let go of it, even if a part panicked on
/// the calling thread; then lets go of the team.
struct Publication<'t> {
    team: &'t Team,
}

impl Drop for Publication<'_> {
    fn drop(&mut self) {
        withdraw(self.team);
        self.team.busy.store(false, SeqCst);
        INSIDE.with(|c| c.set(false));
    }
}

/// Runs `f(0)`, …, `f(parts - 1)`, spread over the calling thread and the team's helpers;
/// returns when all have run. Runs them in order on the calling thread when the team is busy
/// or has no helpers.
///
/// # Panics
/// If a part panics, with that part's panic (on the team: once the other parts have
/// finished, so no helper still borrows the caller's data).
pub(crate) fn for_each(parts: usize, f: impl Fn(usize) + Sync) {
    run(parts, &f, false);
}

/// Runs `f(0)`, …, `f(threads() - 1)` like [`for_each`], part `p` on the same thread from
/// call to call whenever that thread is free to take it: the caller runs part 0 and helper
/// `i` part `i + 1` (a thread that finishes its own part takes any part still unclaimed).
///
/// Loops that split a weight tensor the same way (its product, its gradient's product, its
/// update) then find each share in the cache of the core that last wrote it: on two cores,
/// with the shares claimed first-come, a 784×100 kernel read by one core after the other
/// had updated it cost its product 70% more time, and its Adam update twice as much.
///
/// # Panics
/// As [`for_each`].
pub(crate) fn for_each_pinned(f: impl Fn(usize) + Sync) {
    let parts = threads();
    run(parts, &f, parts <= MAX_PINNED);
}

fn run(parts: usize, f: &(dyn Fn(usize) + Sync), pinned: bool) {
    if parts <= 1 {
        (0..parts).for_each(f);
        return;
    }
    share(parts, f, if pinned { Claim::OwnFirst } else { Claim::Any }, || ());
}

/// Runs `main()` on the calling thread while the team's helpers run `side(0)`, …,
/// `side(parts - 1)` beside it; the caller takes any part still unclaimed once `main` returns,
/// and the call returns `main`'s result when every part has run. Loops that `main` starts run
/// on the calling thread alone (the team is taken), so this suits a stretch of work too small
/// to split, with independent work for the idle cores. Without helpers, or when the team is
/// taken, runs `main` and then the parts in order.
///
/// # Panics
/// If a part panics (once the others have finished), or if `main` does.
pub(crate) fn beside<R>(parts: usize, side: &(dyn Fn(usize) + Sync), main: impl FnOnce() -> R) -> R {
    share(parts, side, Claim::Any, main)
}

/// Runs `f` with every loop it starts on the calling thread alone: their parts one after the
/// other, split as on the team, so the results are the same bits.
pub(crate) fn alone<R>(f: impl FnOnce() -> R) -> R {
    /// Puts back what INSIDE was, also on a panic.
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            INSIDE.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(INSIDE.with(|c| c.replace(true)));
    f()
}

/// Publishes `f`'s parts to the team, runs `caller()`, then claims the parts left and waits for
/// all of them; serially (`caller()`, then the parts in order) when the team is taken, has no
/// helpers, or this thread is already inside a team loop.
fn share<R>(parts: usize, f: &(dyn Fn(usize) + Sync), claim: Claim, caller: impl FnOnce() -> R) -> R {
    if parts == 0 {
        return caller();
    }
    let team = (!INSIDE.with(Cell::get)).then(team);
    let Some(team) =
        team.filter(|t| !t.helpers.is_empty() && t.busy.compare_exchange(false, true, SeqCst, SeqCst).is_ok())
    else {
        let r = caller();
        (0..parts).for_each(f);
        return r;
    };
    INSIDE.with(|c| c.set(true));
    // The job before its publication guard: on a panic the guard withdraws the job (waiting for
    // the helpers to let go of it) before the job's storage goes.
    let job = Job::new(f, parts, claim);
    let publication = Publication { team };
    top_up_everywhere(team);
    publish(team, &job);
    let r = caller();
    job.work(0);
    wait(&job);
    drop(publication);
    if let Some(payload) = job.panicked.lock().unwrap_or_else(|e| e.into_inner()).take() {
        std::panic::resume_unwind(payload);
    }
    r
}

/// Makes `job` the team's (the caller owns the team) and wakes the parked helpers. The caller
/// must [`withdraw`] it before `job` goes out of scope.
fn publish(team: &Team, job: &Job<'_>) {
    // The pointer is erased to 'static only to be stored: the caller withdraws it, and waits
    // for every helper to let go, before `job` goes out of scope (a `Publication` does so
    // even when a part panics).
    let erased = (job as *const Job<'_>).cast::<Job<'static>>().cast_mut();
    team.job.store(erased, SeqCst);
    team.generation.fetch_add(1, SeqCst);
    for h in &team.helpers {
        if h.parked.load(SeqCst) {
            h.thread.get().inspect(|t| t.unpark());
        }
    }
}

/// Waits until every part of `job` has run.
fn wait(job: &Job<'_>) {
    let mut polls = 0u32;
    while job.done.load(SeqCst) < job.parts {
        polls = polls.wrapping_add(1);
        if polls.is_multiple_of(1024) {
            std::thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    }
}

/// Withdraws the team's job when dropped, also on a panic: a job published from a frame must
/// be unpublished, and let go of by the helpers, before that frame (holding it) goes.
struct Withdraw<'t>(&'t Team);

impl Drop for Withdraw<'_> {
    fn drop(&mut self) {
        withdraw(self.0);
    }
}

/// Unpublishes the team's job and waits for the helpers to let go of it.
fn withdraw(team: &Team) {
    team.job.store(std::ptr::null_mut(), SeqCst);
    while team.active.load(SeqCst) != 0 {
        std::hint::spin_loop();
    }
}

/// How long the caller waits for the helpers to top their lists up before taking their parts.
const TOP_UP_WAIT: Duration = Duration::from_millis(200);

/// [`high_water::rises`] when every thread of the team last topped its scratch lists up.
static TOPPED_UP: AtomicUsize = AtomicUsize::new(0);

/// Where a scratch list's mark has risen since the last time (`high_water.rs`), has every
/// running helper, and the caller (which owns the team), join a loop of nothing, so that each
/// grows its lists to the marks now rather than whenever it next happens to take a part of the
/// kind that needs them: then no thread allocates in later steps, however parts are claimed.
/// Costs one hand-off per rise, and marks rise in a network's first steps. (Teams of more than
/// [`MAX_PINNED`] threads skip it: their helpers top up lazily, as they join a loop.)
fn top_up_everywhere(team: &Team) {
    let rises = high_water::rises();
    let parts = team.helpers.len() + 1;
    if TOPPED_UP.load(SeqCst) == rises || parts > MAX_PINNED {
        return;
    }
    let nothing = |_: usize| ();
    let job = Job::new(&nothing, parts, Claim::OwnOnly);
    let guard = Withdraw(team);
    publish(team, &job);
    job.work(0);
    // The caller takes the parts of helpers that never started (nothing to top up there), and
    // of any that has not taken its part within TOP_UP_WAIT (one still starting, say): those
    // top up lazily as they join their next loop (`Job::work`).
    let deadline = Instant::now() + TOP_UP_WAIT;
    let claim_left = |unstarted_only: bool| {
        for (i, h) in team.helpers.iter().enumerate() {
            if unstarted_only && h.thread.get().is_some() {
                continue;
            }
            if let Some(claimed) = &job.pinned {
                if !claimed[i + 1].swap(true, SeqCst) {
                    job.run(i + 1);
                }
            }
        }
    };
    claim_left(true);
    while job.done.load(SeqCst) < parts && Instant::now() < deadline {
        std::hint::spin_loop();
    }
    claim_left(false);
    wait(&job);
    drop(guard);
    TOPPED_UP.store(rises, SeqCst);
}

/// A raw pointer to a slice that parallel parts write through, each to its own disjoint range.
#[derive(Clone, Copy)]
pub(crate) struct SyncPtr<T>(*mut T, usize);
// SAFETY: parts write disjoint ranges (the contract of `SyncPtr::range`).
unsafe impl<T: Send> Sync for SyncPtr<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Send for SyncPtr<T> {}

impl<T> SyncPtr<T> {
    /// Wraps `s` for disjoint parallel writes.
    pub(crate) fn new(s: &mut [T]) -> SyncPtr<T> {
        SyncPtr(s.as_mut_ptr(), s.len())
    }
    /// The start of the wrapped slice, and its length, for writes that are neither contiguous
    /// nor one part's alone (each element still written by one part only).
    pub(crate) fn raw(&self) -> (*mut T, usize) {
        (self.0, self.1)
    }
    /// The elements `lo..hi`.
    ///
    /// # Safety
    /// No two live references from one `SyncPtr` may overlap, and the wrapped slice must
    /// outlive them.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn range(&self, lo: usize, hi: usize) -> &mut [T] {
        assert!(lo <= hi && hi <= self.1, "SyncPtr range {lo}..{hi} outside 0..{}", self.1);
        // SAFETY: in bounds (checked above); disjointness is the caller's contract.
        unsafe { std::slice::from_raw_parts_mut(self.0.add(lo), hi - lo) }
    }
}

/// Runs `f(i, chunk)` for every `chunk`-long piece of `data` (the last may be shorter), in
/// parallel; neighbouring pieces are grouped so each part is a few times the team's size.
pub(crate) fn chunks_mut<T: Send>(data: &mut [T], chunk: usize, f: impl Fn(usize, &mut [T]) + Sync) {
    let chunk = chunk.max(1);
    let n = data.len().div_ceil(chunk);
    let parts = n.min(4 * threads());
    let per = n.div_ceil(parts.max(1));
    let len = data.len();
    let ptr = SyncPtr::new(data);
    for_each(parts, |p| {
        for i in p * per..((p + 1) * per).min(n) {
            let (lo, hi) = (i * chunk, ((i + 1) * chunk).min(len));
            // SAFETY: chunk i is written by the one part that owns index i.
            f(i, unsafe { ptr.range(lo, hi) });
        }
    });
}

/// The number of threads the team runs loops on (helpers plus the caller): the size of rayon's
/// global pool (`RAYON_NUM_THREADS`, or `ThreadPoolBuilder::build_global` before the first
/// loop), fixed at the first call. The same on every thread: a loop's parts, worked out by
/// its caller, and the shares each part then works out (`shares.rs`) must agree, and
/// `rayon::current_num_threads` answers for the pool of the thread that asks (a caller inside
/// a pool of four threads and a helper, outside any pool, saw 4 and 2 parts of one product:
/// ranges of `k` summed twice or not at all).
pub(crate) fn threads() -> usize {
    static THREADS: OnceLock<usize> = OnceLock::new();
    *THREADS.get_or_init(|| {
        // Asked on a thread of no pool, rayon answers for its global pool (here, if no
        // thread can be started: the answer for this thread's pool).
        let global = std::thread::Builder::new().spawn(rayon::current_num_threads).ok().and_then(|h| h.join().ok());
        global.unwrap_or_else(rayon::current_num_threads).max(1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    #[test]
    fn every_part_runs_exactly_once_even_nested_and_concurrent() {
        let hits: Vec<AtomicU64> = (0..1000).map(|_| AtomicU64::new(0)).collect();
        std::thread::scope(|s| {
            for _ in 0..3 {
                s.spawn(|| {
                    for _ in 0..200 {
                        for_each(10, |p| {
                            for_each(100, |q| {
                                hits[p * 100 + q].fetch_add(1, SeqCst);
                            })
                        });
                    }
                });
            }
        });
        assert!(hits.iter().all(|h| h.load(SeqCst) == 600));
    }

    #[test]
    fn chunks_cover_the_slice() {
        let mut v = vec![0usize; 1003];
        chunks_mut(&mut v, 10, |i, c| c.iter_mut().for_each(|x| *x += i + 1));
        for (j, x) in v.iter().enumerate() {
            assert_eq!(*x, j / 10 + 1);
        }
    }

    #[test]
    fn a_panicking_part_panics_the_caller_with_its_message() {
        let r = catch_unwind(AssertUnwindSafe(|| for_each(8, |p| assert!(p != 3, "boom in part {p}"))));
        let payload = r.expect_err("the part's panic reaches the caller");
        let message =
            payload.downcast_ref::<String>().cloned().or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()));
        assert_eq!(message.as_deref(), Some("boom in part 3"));
        // The team still works afterwards.
        let n = AtomicUsize::new(0);
        for_each(8, |_| {
            n.fetch_add(1, SeqCst);
        });
        assert_eq!(n.load(SeqCst), 8);
    }

    #[test]
    fn beside_runs_main_and_every_part_once_even_concurrently() {
        let hits: Vec<AtomicU64> = (0..64).map(|_| AtomicU64::new(0)).collect();
        std::thread::scope(|s| {
            for _ in 0..3 {
                s.spawn(|| {
                    for round in 0..200u64 {
                        let side = |p: usize| {
                            hits[p].fetch_add(1, SeqCst);
                        };
                        // Loops started by `main` still run every part (on this thread).
                        let r = beside(64, &side, || {
                            let inner = AtomicUsize::new(0);
                            for_each(5, |_| {
                                inner.fetch_add(1, SeqCst);
                            });
                            inner.load(SeqCst) as u64 + round
                        });
                        assert_eq!(r, 5 + round);
                    }
                });
            }
        });
        assert!(hits.iter().all(|h| h.load(SeqCst) == 600));
        // A panicking main leaves the team usable.
        let r = catch_unwind(AssertUnwindSafe(|| beside(4, &|_| {}, || panic!("boom"))));
        assert!(r.is_err());
        let n = AtomicUsize::new(0);
        for_each(8, |_| {
            n.fetch_add(1, SeqCst);
        });
        assert_eq!(n.load(SeqCst), 8);
    }
}
