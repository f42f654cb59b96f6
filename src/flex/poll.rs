//! The polling policy: how a Flex statement is requested and waited for, within IB's
//! rate limits, over an injected clock and sleeper (tests run in milliseconds).
//!
//! | reply | reaction |
//! |---|---|
//! | 1019 not ready | poll the same reference again after a growing interval |
//! | transient (1001, 1004-1009, 1021; connect/timeout/5xx/cut-off body) | retry, at most [`PollSettings::transient_retries`] times per stage, backing off |
//! | 1018 throttled | back off [`PollSettings::throttle_backoff`] (>= 60 s), at most [`PollSettings::throttle_retries`] times |
//! | 1017 bad reference | one new SendRequest when [`PollSettings::resend_on_bad_reference`] |
//! | fatal and unknown codes, bad bodies | stop at once, the code kept |
//!
//! Every wait counts against [`PollSettings::total_budget`], measured from the first
//! request; a 1019 that would need a wait past it ends with
//! [`FetchError::PollBudgetExhausted`] (`FLEX_POLL_TIMEOUT`), a retry that would end with
//! the error being retried.
//!
//! Every request first goes through the [`Pacer`]'s [`RateLimiter`], which keeps the
//! requests of everyone sharing it (one per token, see [`Pacer`]) at most one per
//! [`RateLimits::min_interval`] and [`RateLimits::per_window`] per
//! [`RateLimits::window`]: IB allows 1 request/s and 10 requests/min per token, and the
//! defaults keep a small margin under both.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use super::client::{FlexTransport, Requested, StatementBody, StatementPeriod};
use super::envelope::CodeClass;
use super::failure::{FlexError, Result};
use super::{FetchError, FlexToken};
use crate::clock::Sleeper;
use crate::clock::{Clock, SystemClock, Timestamp};

/// IB's per-token limits, with a margin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimits {
    /// Least time between two requests (default 1.1 s; IB: 1 s).
    pub min_interval: Duration,
    /// Most requests in any [`RateLimits::window`] (default 10; IB: 10/min).
    pub per_window: u32,
    /// The sliding window (default 61 s; IB: 60 s).
    pub window: Duration,
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits {
            min_interval: Duration::from_millis(1100),
            per_window: 10,
            window: Duration::from_secs(61),
        }
    }
}

/// A sliding-window request limiter over timestamps (pure: the caller supplies `now`).
#[derive(Debug, Clone)]
pub struct RateLimiter {
    limits: RateLimits,
    recent: VecDeque<Timestamp>,
}

impl RateLimiter {
    /// No request made yet.
    pub fn new(limits: RateLimits) -> Self {
        RateLimiter {
            limits,
            recent: VecDeque::new(),
        }
    }

    /// How long to wait from `now` before the next request is allowed.
    pub fn wait_before(&self, now: Timestamp) -> Duration {
        let mut allowed = now;
        if let Some(&last) = self.recent.back() {
            allowed = allowed.max(last + self.limits.min_interval);
        }
        let n = self.limits.per_window.max(1) as usize;
        if self.recent.len() >= n {
            let oldest_in_window = self.recent[self.recent.len() - n];
            allowed = allowed.max(oldest_in_window + self.limits.window);
        }
        Duration::from_millis(allowed.millis_since(now).max(0) as u64)
    }

    /// Records a request made at `at`.
    pub fn record(&mut self, at: Timestamp) {
        self.recent.push_back(at);
        let keep = self.limits.per_window.max(1) as usize;
        while self.recent.len() > keep {
            self.recent.pop_front();
        }
    }
}

/// Time and pacing for the Flex calls: a clock, a sleeper and a shared [`RateLimiter`].
///
/// Clones share the limiter: give every pipeline and call that uses the same token the
/// same `Pacer` (a [`FlexConfig`](super::FlexConfig) keeps one for all runs of its
/// pipeline). Tests pass a [`ManualClock`](crate::ManualClock) and a sleeper that advances
/// it.
#[derive(Clone)]
pub struct Pacer {
    clock: Arc<dyn Clock>,
    sleeper: Sleeper,
    limiter: Arc<Mutex<RateLimiter>>,
    interrupt: Option<Arc<AtomicBool>>,
    observer: Option<WaitObserver>,
}

/// Told of every long wait as it begins (a progress display): see [`Pacer::observe_waits`].
pub type WaitObserver = Arc<dyn Fn(&Wait) + Send + Sync>;

/// Why a [`Poller`] waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WaitReason {
    /// 1018: IB throttled the token; the back-off ([`PollSettings::throttle_backoff`]).
    Throttled,
    /// A transient failure (connect refused, timeout, 5xx, 1001...) before its retry.
    Transient,
    /// The rate limiter holds the next request (IB's 10 requests a minute).
    RateLimit,
}

serde_display!(WaitReason);

impl WaitReason {
    /// The reason in words, for a progress line and the timeline entry's message.
    pub fn describe(self) -> &'static str {
        match self {
            WaitReason::Throttled => "throttled by IB (1018): backing off",
            WaitReason::Transient => "transient failure: waiting to retry",
            WaitReason::RateLimit => "rate limit: waiting for a request slot",
        }
    }
}

/// One long wait: why, for how long, after which error.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Wait {
    /// Why.
    pub reason: WaitReason,
    /// How long it is planned to last.
    #[serde(serialize_with = "ser_ms", rename = "plannedMs")]
    pub planned: Duration,
    /// The code of the failure waited out (`FLEX_1018`, `FLEX_CONNECT`...), if any.
    pub code: Option<String>,
    /// The retry this wait precedes (1-based, per reason and stage).
    pub retry: u32,
}

fn ser_ms<S: serde::Serializer>(d: &Duration, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis() as u64)
}

/// Rate-limiter waits shorter than this are not reported (the usual 1.1 s spacing).
const REPORTED_RATE_WAIT: Duration = Duration::from_secs(5);

/// The slices an interruptible sleep is cut into.
const INTERRUPT_SLICE: Duration = Duration::from_millis(100);

impl std::fmt::Debug for Pacer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pacer")
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

impl Pacer {
    /// A pacer over `clock` and `sleeper` with `limits`.
    pub fn new(
        clock: impl Clock + 'static,
        sleeper: impl Fn(Duration) + Send + Sync + 'static,
        limits: RateLimits,
    ) -> Self {
        Pacer {
            clock: Arc::new(clock),
            sleeper: Arc::new(sleeper),
            limiter: Arc::new(Mutex::new(RateLimiter::new(limits))),
            interrupt: None,
            observer: None,
        }
    }

    /// This pacer, interruptible by `flag`: once it is set, every wait ends within 100 ms
    /// and the [`Poller`] stops before its next request with
    /// [`FlexError::Interrupted`] (`INTERRUPTED`), so the run ends failed and frees its
    /// lock at once. The CLI sets it on Ctrl-C / SIGTERM.
    pub fn with_interrupt(mut self, flag: Arc<AtomicBool>) -> Self {
        self.interrupt = Some(flag);
        self
    }

    /// This pacer, telling `observer` of every long wait as it begins (throttle back-off,
    /// transient retry delays, rate-limit waits of 5 s or more): a progress display.
    pub fn observe_waits(mut self, observer: impl Fn(&Wait) + Send + Sync + 'static) -> Self {
        self.observer = Some(Arc::new(observer));
        self
    }

    /// Whether the interrupt flag is set.
    pub fn interrupted(&self) -> bool {
        self.interrupt
            .as_ref()
            .is_some_and(|f| f.load(Ordering::SeqCst))
    }

    fn observe(&self, wait: &Wait) {
        if let Some(o) = &self.observer {
            o(wait);
        }
    }

    /// The system clock, `std::thread::sleep` and the default limits.
    pub fn system() -> Self {
        Pacer::new(SystemClock, std::thread::sleep, RateLimits::default())
    }

    /// The current time.
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// Sleeps `d` (in 100 ms slices, ending early, when interruptible and interrupted).
    pub fn sleep(&self, d: Duration) {
        if d.is_zero() {
            return;
        }
        if self.interrupt.is_none() {
            return (self.sleeper)(d);
        }
        let mut left = d;
        while !left.is_zero() && !self.interrupted() {
            let step = left.min(INTERRUPT_SLICE);
            (self.sleeper)(step);
            left -= step;
        }
    }

    /// Waits until the limits allow a request, then counts one made now. Returns how long
    /// it waited. The limiter stays locked during the wait, so concurrent callers queue.
    pub fn before_request(&self) -> Duration {
        let mut limiter = self.limiter.lock().unwrap_or_else(PoisonError::into_inner);
        let now = self.clock.now();
        let wait = limiter.wait_before(now);
        if wait >= REPORTED_RATE_WAIT {
            self.observe(&Wait {
                reason: WaitReason::RateLimit,
                planned: wait,
                code: None,
                retry: 0,
            });
        }
        self.sleep(wait);
        // Never record earlier than the wait said, even if the clock did not move.
        let at = self.clock.now().max(now + wait);
        limiter.record(at);
        wait
    }
}

/// The waits and bounds of the polling policy. `Default` documents each value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PollSettings {
    /// Wait after SendRequest before the first GetStatement (default 5 s).
    pub first_poll_delay: Duration,
    /// Wait after the first 1019 (default 5 s); each further one is 1.5 times the last.
    pub poll_interval: Duration,
    /// Ceiling of the 1019 wait (default 30 s).
    pub max_poll_interval: Duration,
    /// Time from the first request after which no more waiting starts (default 5 min).
    pub total_budget: Duration,
    /// Retries of transient failures per stage (default 3).
    pub transient_retries: u32,
    /// Wait before the first transient retry, doubled for each further one (default 10 s).
    pub transient_backoff: Duration,
    /// Wait after a 1018 (default 60 s, IB's own advice).
    pub throttle_backoff: Duration,
    /// Retries after 1018 per stage (default 2).
    pub throttle_retries: u32,
    /// On 1017 (reference invalid), SendRequest once more and poll the new reference
    /// (default true).
    pub resend_on_bad_reference: bool,
}

impl Default for PollSettings {
    fn default() -> Self {
        PollSettings {
            first_poll_delay: Duration::from_secs(5),
            poll_interval: Duration::from_secs(5),
            max_poll_interval: Duration::from_secs(30),
            total_budget: Duration::from_secs(300),
            transient_retries: 3,
            transient_backoff: Duration::from_secs(10),
            throttle_backoff: Duration::from_secs(60),
            throttle_retries: 2,
            resend_on_bad_reference: true,
        }
    }
}

impl PollSettings {
    /// Refuses settings that could loop without waiting.
    pub fn validate(&self) -> Result<()> {
        if self.poll_interval.is_zero() || self.max_poll_interval < self.poll_interval {
            return Err(FlexError::invalid(
                "poll_interval",
                "must be > 0 and <= max_poll_interval",
            ));
        }
        if self.total_budget.is_zero() {
            return Err(FlexError::invalid("total_budget", "must be > 0"));
        }
        if self.transient_retries > 20 || self.throttle_retries > 20 {
            return Err(FlexError::invalid("retries", "at most 20"));
        }
        Ok(())
    }
}

/// What a [`Poller`] did, for the run's timeline.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PollStats {
    /// Requests sent (both calls, retries included).
    pub requests: u32,
    /// SendRequest calls.
    pub send_requests: u32,
    /// GetStatement calls.
    pub polls: u32,
    /// 1019 replies.
    pub not_ready: u32,
    /// Transient failures retried.
    pub transient_retries: u32,
    /// 1018 replies backed off from.
    pub throttled: u32,
    /// New SendRequests after a 1017.
    pub resent: u32,
    /// Time spent in the policy's waits, in ms.
    pub waited_ms: u64,
    /// Time spent waiting for the rate limiter, in ms.
    pub rate_waited_ms: u64,
}

/// How the poller treats an error.
fn class_of(e: &FlexError) -> CodeClass {
    match e {
        FlexError::Fetch(FetchError::Service { class, .. }) => *class,
        FlexError::Fetch(f) if f.is_transient() => CodeClass::Transient,
        _ => CodeClass::Fatal,
    }
}

fn is_code(e: &FlexError, code: u32) -> bool {
    matches!(e, FlexError::Fetch(FetchError::Service { code: Some(c), .. }) if *c == code)
}

/// The polling driver for one run: the transport, the pacer, the settings, the token, and
/// what it has done so far ([`Poller::stats`]).
pub struct Poller<'a> {
    transport: &'a dyn FlexTransport,
    pacer: &'a Pacer,
    settings: &'a PollSettings,
    token: &'a FlexToken,
    started: Timestamp,
    transient_used: u32,
    throttle_used: u32,
    stats: PollStats,
    on_wait: Option<OnWait<'a>>,
}

/// What [`Poller::on_wait`] stores.
type OnWait<'a> = Box<dyn FnMut(&Wait, WaitPhase) + 'a>;

/// Where a [`Poller`]'s long wait is, for [`Poller::on_wait`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitPhase {
    /// It begins now, at this instant.
    Begins(Timestamp),
    /// It began at `began` and lasted `waited` (shorter than planned when interrupted).
    Ended {
        /// When it began.
        began: Timestamp,
        /// How long it lasted.
        waited: Duration,
    },
}

impl<'a> Poller<'a> {
    /// This poller, calling `f` when each long wait (throttle back-off, transient retry
    /// delay, a rate-limit wait of 5 s or more) begins and when it ends: the pipeline shows
    /// it in the stage's timeline entry.
    pub fn on_wait(mut self, f: impl FnMut(&Wait, WaitPhase) + 'a) -> Self {
        self.on_wait = Some(Box::new(f));
        self
    }

    /// A driver whose budget runs from `started` (the first request of the run).
    pub fn new(
        transport: &'a dyn FlexTransport,
        pacer: &'a Pacer,
        settings: &'a PollSettings,
        token: &'a FlexToken,
        started: Timestamp,
    ) -> Self {
        Poller {
            transport,
            pacer,
            settings,
            token,
            started,
            transient_used: 0,
            throttle_used: 0,
            stats: PollStats::default(),
            on_wait: None,
        }
    }

    /// What it did so far.
    pub fn stats(&self) -> PollStats {
        self.stats
    }

    fn elapsed(&self) -> Duration {
        Duration::from_millis(self.pacer.now().millis_since(self.started).max(0) as u64)
    }

    /// Waits `d` unless that would end past the budget (then `Ok(false)`); a long wait
    /// (`long`: its reason) is announced to the pacer's observer and reported to
    /// [`Poller::on_waited`]. Fails with `INTERRUPTED` when the pacer was interrupted.
    fn wait(&mut self, d: Duration, long: Option<Wait>) -> Result<bool> {
        if self.elapsed() + d > self.settings.total_budget {
            return Ok(false);
        }
        let began = self.pacer.now();
        if let Some(w) = &long {
            self.pacer.observe(w);
            if let Some(f) = self.on_wait.as_mut() {
                f(w, WaitPhase::Begins(began));
            }
        }
        self.pacer.sleep(d);
        let waited = Duration::from_millis(self.pacer.now().millis_since(began).max(0) as u64);
        self.stats.waited_ms += d.as_millis() as u64;
        if let (Some(w), Some(f)) = (&long, self.on_wait.as_mut()) {
            f(w, WaitPhase::Ended { began, waited });
        }
        self.check_interrupt(long.as_ref().map(|w| w.reason))?;
        Ok(true)
    }

    fn check_interrupt(&self, during: Option<WaitReason>) -> Result<()> {
        if !self.pacer.interrupted() {
            return Ok(());
        }
        Err(FlexError::Interrupted {
            during: during
                .map_or("a wait on the flex service", WaitReason::describe)
                .into(),
        })
    }

    fn pace(&mut self) -> Result<()> {
        self.check_interrupt(None)?;
        let began = self.pacer.now();
        let waited = self.pacer.before_request();
        self.stats.rate_waited_ms += waited.as_millis() as u64;
        self.stats.requests += 1;
        if waited >= REPORTED_RATE_WAIT {
            let w = Wait {
                reason: WaitReason::RateLimit,
                planned: waited,
                code: None,
                retry: 0,
            };
            if let Some(f) = self.on_wait.as_mut() {
                f(&w, WaitPhase::Ended { began, waited });
            }
        }
        self.check_interrupt(Some(WaitReason::RateLimit))
    }

    /// Handles a failed call: `Ok(())` after waiting when a retry is allowed, else the
    /// error. `not_ready_is_transient`: SendRequest has no "not ready" state.
    fn retry_or_fail(&mut self, e: FlexError, not_ready_is_transient: bool) -> Result<()> {
        let class = match class_of(&e) {
            CodeClass::NotReady if not_ready_is_transient => CodeClass::Transient,
            c => c,
        };
        let (wait, reason, retry) = match class {
            CodeClass::Transient if self.transient_used < self.settings.transient_retries => {
                self.transient_used += 1;
                self.stats.transient_retries += 1;
                let factor = 1u32 << (self.transient_used - 1).min(16);
                (
                    self.settings.transient_backoff.saturating_mul(factor),
                    WaitReason::Transient,
                    self.transient_used,
                )
            }
            CodeClass::Throttled if self.throttle_used < self.settings.throttle_retries => {
                self.throttle_used += 1;
                self.stats.throttled += 1;
                (
                    self.settings.throttle_backoff,
                    WaitReason::Throttled,
                    self.throttle_used,
                )
            }
            _ => return Err(e),
        };
        let long = Wait {
            reason,
            planned: wait,
            code: Some(e.code().to_string()),
            retry,
        };
        if self.wait(wait, Some(long))? {
            Ok(())
        } else {
            Err(e)
        }
    }

    /// SendRequest, retrying transient failures and 1018 within the bounds.
    pub fn send_request(&mut self, query_id: &str, period: &StatementPeriod) -> Result<Requested> {
        loop {
            self.pace()?;
            self.stats.send_requests += 1;
            match self.transport.send_request(self.token, query_id, period) {
                Ok(r) => return Ok(r),
                Err(e) => self.retry_or_fail(e, true)?,
            }
        }
    }

    /// Polls GetStatement for `requested` until the statement comes (its body is not read
    /// yet), after [`PollSettings::first_poll_delay`]. Returns the reference finally used
    /// (a new one after a 1017 re-request) with the body.
    pub fn poll(
        &mut self,
        requested: Requested,
        query_id: &str,
        period: &StatementPeriod,
    ) -> Result<(Requested, StatementBody)> {
        let mut current = requested;
        let mut interval = self.settings.poll_interval;
        let mut next_wait = self.settings.first_poll_delay;
        loop {
            if !self.wait(next_wait, None)? {
                return Err(self.budget_error(&current));
            }
            self.pace()?;
            self.stats.polls += 1;
            let result = self.transport.get_statement(
                self.token,
                &current.reference,
                current.url.as_deref(),
            );
            let e = match result {
                Ok(body) => return Ok((current, body)),
                Err(e) => e,
            };
            if class_of(&e) == CodeClass::NotReady {
                self.stats.not_ready += 1;
                next_wait = interval;
                interval = interval.mul_f64(1.5).min(self.settings.max_poll_interval);
                continue;
            }
            if is_code(&e, 1017) && self.settings.resend_on_bad_reference && self.stats.resent == 0
            {
                self.stats.resent += 1;
                current = self.send_request(query_id, period)?;
                interval = self.settings.poll_interval;
                next_wait = self.settings.first_poll_delay;
                continue;
            }
            self.retry_or_fail(e, false)?;
            next_wait = Duration::ZERO;
        }
    }

    fn budget_error(&self, current: &Requested) -> FlexError {
        FetchError::PollBudgetExhausted {
            reference: current.reference.clone(),
            polls: self.stats.polls,
            waited: self.elapsed(),
        }
        .into()
    }

    /// [`Poller::send_request`] then [`Poller::poll`], and reads the body whole.
    pub fn fetch(
        &mut self,
        query_id: &str,
        period: &StatementPeriod,
    ) -> Result<(Requested, Vec<u8>)> {
        let requested = self.send_request(query_id, period)?;
        let (requested, body) = self.poll(requested, query_id, period)?;
        Ok((requested, body.read_to_end()?))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::clock::ManualClock;
    use crate::flex::envelope::classify_code;

    fn t0() -> Timestamp {
        Timestamp::parse("2026-11-22T11:30:00.000Z").unwrap()
    }

    /// A scripted transport: each call pops the next reply; records when each call came.
    struct Script {
        clock: ManualClock,
        replies: Mutex<VecDeque<std::result::Result<(), u32>>>,
        calls: Mutex<Vec<(&'static str, Timestamp)>>,
    }

    impl Script {
        fn new(clock: &ManualClock, replies: Vec<std::result::Result<(), u32>>) -> Self {
            Script {
                clock: clock.clone(),
                replies: Mutex::new(replies.into()),
                calls: Mutex::new(Vec::new()),
            }
        }
        fn next(&self, call: &'static str) -> Result<()> {
            self.calls.lock().unwrap().push((call, self.clock.now()));
            match self
                .replies
                .lock()
                .unwrap()
                .pop_front()
                .expect("script ran out")
            {
                Ok(()) => Ok(()),
                Err(code) => Err(FetchError::Service {
                    code: Some(code),
                    raw_code: code.to_string(),
                    message: "scripted".into(),
                    class: classify_code(code),
                }
                .into()),
            }
        }
        fn calls(&self) -> Vec<(&'static str, Timestamp)> {
            self.calls.lock().unwrap().clone()
        }
    }

    impl FlexTransport for Script {
        fn send_request(&self, _: &FlexToken, _: &str, _: &StatementPeriod) -> Result<Requested> {
            self.next("send")?;
            let n = self.calls.lock().unwrap().len();
            Ok(Requested {
                reference: format!("REF{n}"),
                url: None,
            })
        }
        fn get_statement(&self, _: &FlexToken, _: &str, _: Option<&str>) -> Result<StatementBody> {
            self.next("get")?;
            Ok(StatementBody::from_bytes(
                b"<FlexQueryResponse/>".to_vec(),
                1 << 20,
            ))
        }
        fn shown_url(&self, call: &str) -> String {
            call.to_string()
        }
    }

    fn pacer(clock: &ManualClock, sleeps: &Arc<Mutex<Vec<Duration>>>) -> Pacer {
        let c = clock.clone();
        let s = sleeps.clone();
        Pacer::new(
            clock.clone(),
            move |d| {
                s.lock().unwrap().push(d);
                c.advance(d);
            },
            RateLimits::default(),
        )
    }

    fn assert_within_ib_limits(calls: &[(&str, Timestamp)]) {
        for w in calls.windows(2) {
            assert!(w[1].1.millis_since(w[0].1) >= 1000, "{calls:?}");
        }
        for w in calls.windows(11) {
            assert!(w[10].1.millis_since(w[0].1) >= 60_000, "{calls:?}");
        }
    }

    #[test]
    fn many_not_ready_replies_stay_within_ib_rate_limits() {
        let clock = ManualClock::new(t0());
        let sleeps = Arc::new(Mutex::new(Vec::new()));
        let pacer = pacer(&clock, &sleeps);
        // Aggressive settings: the limiter, not the policy, must keep the pace.
        let settings = PollSettings {
            first_poll_delay: Duration::ZERO,
            poll_interval: Duration::from_millis(100),
            max_poll_interval: Duration::from_millis(200),
            total_budget: Duration::from_secs(3600),
            ..PollSettings::default()
        };
        let mut replies = vec![Ok(())];
        replies.extend(std::iter::repeat_n(Err(1019), 40));
        replies.push(Ok(()));
        let script = Script::new(&clock, replies);
        let token = FlexToken::new("1").unwrap();
        let mut p = Poller::new(&script, &pacer, &settings, &token, clock.now());
        let (req, body) = p.fetch("42", &StatementPeriod::Query).unwrap();
        assert_eq!(req.reference, "REF1");
        assert_eq!(body, b"<FlexQueryResponse/>");
        let calls = script.calls();
        assert_eq!(calls.len(), 42);
        assert_within_ib_limits(&calls);
        let st = p.stats();
        assert_eq!((st.requests, st.polls, st.not_ready), (42, 41, 40));
        assert!(st.rate_waited_ms > 0);
    }

    #[test]
    fn the_limiter_is_shared_across_pollers() {
        let clock = ManualClock::new(t0());
        let sleeps = Arc::new(Mutex::new(Vec::new()));
        let pacer = pacer(&clock, &sleeps);
        let settings = PollSettings {
            first_poll_delay: Duration::ZERO,
            ..PollSettings::default()
        };
        let token = FlexToken::new("1").unwrap();
        let script = Script::new(&clock, vec![Ok(()); 24]);
        for _ in 0..12 {
            let mut p = Poller::new(&script, &pacer, &settings, &token, clock.now());
            p.fetch("42", &StatementPeriod::Query).unwrap();
        }
        assert_within_ib_limits(&script.calls());
    }

    #[test]
    fn throttling_backs_off_at_least_a_minute() {
        let clock = ManualClock::new(t0());
        let sleeps = Arc::new(Mutex::new(Vec::new()));
        let pacer = pacer(&clock, &sleeps);
        let settings = PollSettings::default();
        let script = Script::new(&clock, vec![Err(1018), Ok(()), Err(1018), Ok(())]);
        let token = FlexToken::new("1").unwrap();
        let mut p = Poller::new(&script, &pacer, &settings, &token, clock.now());
        p.fetch("42", &StatementPeriod::Query).unwrap();
        let calls = script.calls();
        assert!(calls[1].1.millis_since(calls[0].1) >= 60_000);
        assert!(calls[3].1.millis_since(calls[2].1) >= 60_000);
        assert_eq!(p.stats().throttled, 2);
    }

    #[test]
    fn fatal_and_unknown_codes_stop_at_once() {
        for code in [
            1003, 1010, 1011, 1012, 1013, 1014, 1015, 1016, 1020, 1025, 9999,
        ] {
            let clock = ManualClock::new(t0());
            let sleeps = Arc::new(Mutex::new(Vec::new()));
            let pacer = pacer(&clock, &sleeps);
            let settings = PollSettings::default();
            let script = Script::new(&clock, vec![Ok(()), Err(code)]);
            let token = FlexToken::new("1").unwrap();
            let mut p = Poller::new(&script, &pacer, &settings, &token, clock.now());
            let e = p.fetch("42", &StatementPeriod::Query).unwrap_err();
            assert!(e.code().starts_with("FLEX_"), "{code}: {e}");
            assert!(e.to_string().contains(&code.to_string()), "{e}");
            assert_eq!(script.calls().len(), 2, "{code}");
        }
    }

    #[test]
    fn transient_codes_are_retried_a_bounded_number_of_times() {
        let clock = ManualClock::new(t0());
        let sleeps = Arc::new(Mutex::new(Vec::new()));
        let pacer = pacer(&clock, &sleeps);
        let settings = PollSettings::default();
        let script = Script::new(
            &clock,
            vec![Ok(()), Err(1009), Err(1001), Err(1021), Err(1004)],
        );
        let token = FlexToken::new("1").unwrap();
        let mut p = Poller::new(&script, &pacer, &settings, &token, clock.now());
        let e = p.fetch("42", &StatementPeriod::Query).unwrap_err();
        assert_eq!(e.code(), "FLEX_1004");
        assert_eq!(p.stats().transient_retries, 3);
        // 5 s first poll delay, then 10, 20, 40 s of backoff.
        let waits: Vec<u64> = sleeps.lock().unwrap().iter().map(|d| d.as_secs()).collect();
        assert_eq!(waits, vec![5, 10, 20, 40]);
    }

    #[test]
    fn bad_reference_requests_again_once() {
        let clock = ManualClock::new(t0());
        let sleeps = Arc::new(Mutex::new(Vec::new()));
        let pacer = pacer(&clock, &sleeps);
        let settings = PollSettings::default();
        let token = FlexToken::new("1").unwrap();
        let script = Script::new(&clock, vec![Ok(()), Err(1017), Ok(()), Ok(())]);
        let mut p = Poller::new(&script, &pacer, &settings, &token, clock.now());
        let (req, _) = p.fetch("42", &StatementPeriod::Query).unwrap();
        assert_eq!(req.reference, "REF3");
        assert_eq!(p.stats().resent, 1);

        let script = Script::new(&clock, vec![Ok(()), Err(1017), Ok(()), Err(1017)]);
        let mut p = Poller::new(&script, &pacer, &settings, &token, clock.now());
        assert_eq!(
            p.fetch("42", &StatementPeriod::Query).unwrap_err().code(),
            "FLEX_1017"
        );
    }

    #[test]
    fn not_ready_forever_ends_at_the_budget() {
        let clock = ManualClock::new(t0());
        let sleeps = Arc::new(Mutex::new(Vec::new()));
        let pacer = pacer(&clock, &sleeps);
        let settings = PollSettings::default();
        let token = FlexToken::new("1").unwrap();
        let mut replies = vec![Ok(())];
        replies.extend(std::iter::repeat_n(Err(1019), 100));
        let script = Script::new(&clock, replies);
        let start = clock.now();
        let mut p = Poller::new(&script, &pacer, &settings, &token, start);
        let e = p.fetch("42", &StatementPeriod::Query).unwrap_err();
        assert_eq!(e.code(), "FLEX_POLL_TIMEOUT");
        assert!(clock.now().millis_since(start) <= 300_000);
        // 5 s, then 5, 7.5, 11.25, ... capped at 30 s: a dozen polls in five minutes.
        assert!((10..=14).contains(&p.stats().polls), "{:?}", p.stats());
        assert_within_ib_limits(&script.calls());
    }
}
