//! What supervision shares across the core: the broker-wide shutdown signal, the notice an actor
//! leaves when it ends, and the backoff dependents use while an actor they need is restarting.
//!
//! Plain types, no actors: the registries and the queue actor use them (ARCHITECTURE.md,
//! "Supervision").

use std::time::Duration;

use tokio::sync::{mpsc, watch};

/// The broker-wide "shutting down" flag. Once begun it never ends; supervisors stop restarting,
/// listeners stop accepting, connections wind down.
#[derive(Clone)]
pub struct ShutdownSignal {
    tx: std::sync::Arc<watch::Sender<bool>>,
}

impl Default for ShutdownSignal {
    fn default() -> Self {
        ShutdownSignal {
            tx: std::sync::Arc::new(watch::channel(false).0),
        }
    }
}

impl ShutdownSignal {
    /// Starts the shutdown (idempotent).
    pub fn begin(&self) {
        self.tx.send_replace(true);
    }

    /// Whether the shutdown has begun.
    pub fn begun(&self) -> bool {
        *self.tx.borrow()
    }

    /// Resolves once the shutdown has begun (at once if it already has).
    pub async fn wait(&self) {
        let mut rx = self.tx.subscribe();
        // The sender lives as long as `self`, so `wait_for` cannot fail while we hold it.
        let _ = rx.wait_for(|begun| *begun).await;
    }
}

/// Stops an actor for the shutdown: it finishes what it must first (a journal fsyncs) and
/// answers once nothing of it remains to be written.
#[derive(actix::Message)]
#[rtype(result = "()")]
pub struct StopActor;

/// What a registry does at shutdown: waits for every actor it started to stop (`stops`), then
/// stops `journal`, which those actors wrote to, so the journal's fsync covers all they wrote.
pub fn stop_all_then_journal<J, F>(
    stops: Vec<F>,
    journal: actix::Addr<J>,
) -> actix::ResponseFuture<()>
where
    J: actix::Actor<Context = actix::Context<J>> + actix::Handler<StopActor>,
    F: std::future::Future + 'static,
{
    Box::pin(async move {
        futures_util::future::join_all(stops).await;
        let _ = journal.send(StopActor).await;
    })
}

/// Which incarnation of a supervised actor ended: supervisors compare it with the incarnation
/// they published, so a late notice from an actor already replaced is ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActorEnded {
    /// The actor's name within its kind (a topic, a queue, a group).
    pub name: String,
    /// Its index under that name (a partition number; 0 where there is one actor per name).
    pub index: i32,
    /// A number the supervisor gave this incarnation.
    pub incarnation: u64,
}

/// Held by a supervised actor as its last field: when the actor is dropped, whether it stopped
/// or panicked (a panicking handler drops its actor while unwinding), the supervisor hears of
/// it at once, with everything the actor owned (its log's files) already released.
pub struct EndNotice {
    ended: Option<ActorEnded>,
    to: mpsc::UnboundedSender<ActorEnded>,
}

impl EndNotice {
    /// A notice that `name`'s incarnation `incarnation` ended, sent to `to` on drop.
    pub fn new(to: mpsc::UnboundedSender<ActorEnded>, ended: ActorEnded) -> Self {
        EndNotice {
            ended: Some(ended),
            to,
        }
    }
}

impl EndNotice {
    /// The actor is ending on purpose and must not be restarted (a deleted group): nothing is
    /// reported when it ends.
    pub fn disarm(&mut self) {
        self.ended = None;
    }
}

impl Drop for EndNotice {
    fn drop(&mut self) {
        if let Some(ended) = self.ended.take() {
            // The supervisor is gone only when the whole broker is: nothing to tell then.
            let _ = self.to.send(ended);
        }
    }
}

/// The current actor of a supervised kind that has one instance (a journal): set by its
/// supervisor at every restart, resolved by dependents at every use, so that none keeps the
/// address of an actor that ended. The generation counts restarts, so a dependent can tell
/// that the actor it wrote to before is not the one there now.
pub struct Current<A: actix::Actor> {
    inner: std::sync::Arc<std::sync::RwLock<(actix::Addr<A>, u64)>>,
}

impl<A: actix::Actor> Clone for Current<A> {
    fn clone(&self) -> Self {
        Current {
            inner: self.inner.clone(),
        }
    }
}

impl<A: actix::Actor> Current<A> {
    /// The first actor, generation 0.
    pub fn new(addr: actix::Addr<A>) -> Self {
        Current {
            inner: std::sync::Arc::new(std::sync::RwLock::new((addr, 0))),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, (actix::Addr<A>, u64)> {
        // Nothing panics while holding the lock; a poisoned one still holds a whole value.
        self.inner
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The actor now.
    pub fn get(&self) -> actix::Addr<A> {
        self.read().0.clone()
    }

    /// How many times the actor has been replaced.
    pub fn generation(&self) -> u64 {
        self.read().1
    }

    /// Replaces the actor (its supervisor restarted it).
    pub fn set(&self, addr: actix::Addr<A>) {
        let mut w = self
            .inner
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        w.0 = addr;
        w.1 += 1;
    }

    /// `do_send` to the actor now, without cloning its address.
    pub fn do_send<M>(&self, msg: M)
    where
        M: actix::Message + Send + 'static,
        M::Result: Send,
        A: actix::Handler<M>,
        A::Context: actix::dev::ToEnvelope<A, M>,
    {
        self.read().0.do_send(msg);
    }

    /// `send` to the actor now.
    pub fn send<M>(&self, msg: M) -> actix::dev::Request<A, M>
    where
        M: actix::Message + Send + 'static,
        M::Result: Send,
        A: actix::Handler<M>,
        A::Context: actix::dev::ToEnvelope<A, M>,
    {
        self.read().0.send(msg)
    }
}

/// When to restart a child that ended: at once the first time, and after a growing delay
/// (10 ms doubling to 5 s, jittered) while it keeps ending within a second of its last start,
/// so a child that fails as it starts (a bad state, a missing dependency) cannot spin.
#[derive(Debug, Clone)]
pub struct RestartPolicy {
    backoff: Backoff,
    last_start: std::time::Instant,
}

/// A child that ran this long before it ended is restarted at once, its backoff forgotten.
const STABLE_RUN: Duration = Duration::from_secs(1);

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            backoff: Backoff::new(Duration::from_millis(10), Duration::from_secs(5)),
            last_start: std::time::Instant::now(),
        }
    }
}

impl RestartPolicy {
    /// How long to wait before restarting a child that ended at `now`.
    pub fn delay(&mut self, now: std::time::Instant) -> Duration {
        if now.duration_since(self.last_start) >= STABLE_RUN {
            self.backoff.reset();
        }
        let first = self.backoff.attempts() == 0;
        let delay = self.backoff.next_delay();
        if first {
            Duration::ZERO
        } else {
            delay
        }
    }

    /// The child was (re)started at `now`.
    pub fn started(&mut self, now: std::time::Instant) {
        self.last_start = now;
    }
}

/// The index a registry's journal reports its end under, beside the registry's other children
/// (which report under index 0 and their own names).
pub const JOURNAL_INDEX: i32 = -1;

/// Where a supervisor's children report their ends: each child carries an [`EndNotice`] made
/// here, and the supervisor reads the reports as a stream of [`ActorEnded`] on its own context.
pub struct EndReports {
    tx: mpsc::UnboundedSender<ActorEnded>,
    rx: Option<mpsc::UnboundedReceiver<ActorEnded>>,
    /// The last incarnation number given out.
    incarnations: u64,
}

impl Default for EndReports {
    fn default() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        EndReports {
            tx,
            rx: Some(rx),
            incarnations: 0,
        }
    }
}

impl EndReports {
    /// A notice for the next child called `name` (`index` tells children of one name apart),
    /// under a fresh incarnation number, which the notice carries and which is also returned.
    pub fn notice(&mut self, name: &str, index: i32) -> (EndNotice, u64) {
        self.incarnations += 1;
        let ended = ActorEnded {
            name: name.to_string(),
            index,
            incarnation: self.incarnations,
        };
        (EndNotice::new(self.tx.clone(), ended), self.incarnations)
    }

    /// Feeds the reports to the supervisor `ctx` belongs to (once: later calls do nothing).
    pub fn attach<A>(&mut self, ctx: &mut actix::Context<A>)
    where
        A: actix::Actor<Context = actix::Context<A>> + actix::StreamHandler<ActorEnded>,
    {
        use actix::AsyncContext;
        if let Some(rx) = self.rx.take() {
            ctx.add_stream(futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|ended| (ended, rx))
            }));
        }
    }
}

/// Bounded, jittered exponential backoff: what a dependent waits between attempts to reach an
/// actor that is restarting, so a mailbox error is never retried in a tight loop.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    attempts: u32,
}

impl Default for Backoff {
    /// 10 ms, doubling up to 1 s: a partition restarts in milliseconds, and a dependent that
    /// keeps failing settles at one attempt a second.
    fn default() -> Self {
        Backoff::new(Duration::from_millis(10), Duration::from_secs(1))
    }
}

impl Backoff {
    /// Delays start at `first` and double up to `max`.
    pub fn new(first: Duration, max: Duration) -> Self {
        Backoff {
            first,
            max: max.max(first),
            attempts: 0,
        }
    }

    /// Failed attempts since the last success.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// The wait before the next attempt: the capped exponential delay, scaled by a random factor
    /// in [0.5, 1.0] so dependents of one actor do not retry in step.
    pub fn next_delay(&mut self) -> Duration {
        let exp = self.first.saturating_mul(1u32 << self.attempts.min(20));
        self.attempts = self.attempts.saturating_add(1);
        exp.min(self.max).mul_f64(0.5 + fastrand::f64() / 2.0)
    }

    /// The actor answered: the next failure starts from `first` again.
    pub fn reset(&mut self) {
        self.attempts = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_bound_with_jitter() {
        let mut b = Backoff::new(Duration::from_millis(10), Duration::from_millis(100));
        let delays: Vec<Duration> = (0..8).map(|_| b.next_delay()).collect();
        for (i, d) in delays.iter().enumerate() {
            let full = Duration::from_millis(10 * (1 << i)).min(Duration::from_millis(100));
            assert!(
                *d >= full / 2 && *d <= full,
                "attempt {i}: {d:?} vs {full:?}"
            );
        }
        assert_eq!(b.attempts(), 8);
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(10));
    }

    #[test]
    fn restarts_are_immediate_unless_the_child_keeps_failing_as_it_starts() {
        let t0 = std::time::Instant::now();
        let mut p = RestartPolicy::default();
        p.started(t0);
        // Ended after a long run: at once.
        assert_eq!(p.delay(t0 + Duration::from_secs(5)), Duration::ZERO);
        p.started(t0 + Duration::from_secs(5));
        // Ended right after starting, again and again: growing delays.
        let soon = t0 + Duration::from_millis(5010);
        let delays: Vec<Duration> = (0..4).map(|_| p.delay(soon)).collect();
        assert!(delays[0] > Duration::ZERO && delays[0] <= Duration::from_millis(20));
        assert!(delays[3] > delays[0], "{delays:?}");
        // A stable run forgets them.
        p.started(soon);
        assert_eq!(p.delay(soon + Duration::from_secs(2)), Duration::ZERO);
    }

    #[test]
    fn backoff_never_overflows() {
        let mut b = Backoff::default();
        for _ in 0..1000 {
            assert!(b.next_delay() <= Duration::from_secs(1));
        }
    }

    #[test]
    fn an_end_notice_is_sent_once_on_drop() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let ended = ActorEnded {
            name: "t".into(),
            index: 0,
            incarnation: 7,
        };
        drop(EndNotice::new(tx, ended.clone()));
        assert_eq!(rx.try_recv().unwrap(), ended);
        assert!(rx.try_recv().is_err());
    }

    #[tokio::test]
    async fn shutdown_wait_resolves_once_begun() {
        let s = ShutdownSignal::default();
        assert!(!s.begun());
        let waiter = tokio::spawn({
            let s = s.clone();
            async move { s.wait().await }
        });
        s.begin();
        waiter.await.unwrap();
        assert!(s.begun());
        s.wait().await;
    }
}
