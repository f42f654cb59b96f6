//! `GET /events`: the live event stream (Server-Sent Events) and the one watcher per server
//! that feeds it.
//!
//! The watcher is a thread with its own read connection on the database file. Every
//! `poll` (20 ms by default) it compares `PRAGMA data_version`, which changes whenever any
//! other connection commits (this process's engine, a worker process, the CLI), and is also
//! woken at once by the engine's in-process bus. On a change it reads the log after the
//! last cursor it saw, in cursor (= commit) order, serializes each event once and
//! broadcasts it to every stream. One SQLite poll per server, never one per client.
//!
//! On an engine opened on a `postgres://` URL the watcher sleeps on the backend's event
//! wait instead ([`crate::backend::EventWait`]: a `LISTEN` connection registered as an
//! event listener, so each commit of job events, on any node, NOTIFYs it) and reads the
//! feed at each wake, and at least every [`StreamOptions::fallback_poll`] (1 s) anyway.
//!
//! A stream subscribes to the broadcast first, then replays the log from its position (in
//! pages, in one snapshot each), then forwards live events with a cursor past the last one
//! it sent: no gap and no duplicate. When the position is older than the log keeps (the
//! per-job backlog was pruned past it) or the client fell further behind than its buffer
//! (the broadcast ring), it gets a `resync` event naming the jobs to reload and continues
//! from the present.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::broadcast;

use super::error::{ApiError, ApiResult, Q};
use super::{blocking, AppState};
use crate::engine::Engine;
use crate::events::{FeedEvent, FeedFilter};

/// Settings of the event stream.
#[derive(Debug, Clone)]
pub struct StreamOptions {
    /// How often the watcher checks the database for commits of other processes.
    pub poll: Duration,
    /// How many events a stream may fall behind before it gets `resync` instead.
    pub client_buffer: usize,
    /// Interval of the keep-alive comments.
    pub keep_alive: Duration,
    /// Events read per page while replaying.
    pub page: u32,
    /// On a backend whose watcher is woken by the database (PostgreSQL's LISTEN/NOTIFY,
    /// instead of `poll`), how often it reads the feed even without a wake.
    pub fallback_poll: Duration,
}

impl Default for StreamOptions {
    fn default() -> Self {
        Self {
            poll: Duration::from_millis(20),
            client_buffer: 4096,
            keep_alive: Duration::from_secs(15),
            page: 500,
            fallback_poll: Duration::from_secs(1),
        }
    }
}

/// What the watcher broadcasts: an event serialized once, or a resync for pruned jobs.
#[derive(Debug, Clone)]
pub(super) enum Item {
    Event {
        cursor: i64,
        job_id: i64,
        user_id: Option<Arc<str>>,
        data: Arc<str>,
    },
    /// The watcher itself found events pruned before it read them.
    Pruned { jobs: Vec<i64>, head: i64 },
}

/// The per-server watcher: one thread, one read connection, one broadcast.
#[derive(Debug)]
pub(super) struct Watcher {
    /// Taken on stop, which ends every stream.
    tx: std::sync::Mutex<Option<broadcast::Sender<Item>>>,
    /// The newest cursor broadcast so far.
    head: AtomicI64,
    stop: AtomicBool,
}

/// What wakes the watcher.
enum Wake {
    /// A SQLite engine's in-process bus (other processes: `PRAGMA data_version`).
    Bus(std::sync::mpsc::Receiver<crate::Event>),
    /// A backend's wait for events committed anywhere.
    Backend(Box<dyn crate::backend::EventWait>),
}

impl Watcher {
    /// Starts the watcher thread: over `engine`'s file (or, in memory, over the engine
    /// itself and its in-process bus), or, on an engine a backend serves, over the engine
    /// and the backend's event wait ([`crate::backend::EventWait`]: PostgreSQL's LISTEN).
    pub(super) fn start(engine: &Engine, opts: &StreamOptions) -> crate::Result<Arc<Self>> {
        let (tx, _) = broadcast::channel(opts.client_buffer.max(1));
        let wake = match engine.backend() {
            // LISTEN before the head is read: every event committed after it wakes us
            Some(b) => Wake::Backend(b.event_wait()?),
            None => Wake::Bus(engine.events().subscribe()),
        };
        let reader = match engine.path() {
            Some(path) => Engine::open_with(path, engine.options().clone())?,
            None => engine.clone(),
        };
        let head = reader.events().head()?;
        let me = Arc::new(Self {
            tx: std::sync::Mutex::new(Some(tx)),
            head: AtomicI64::new(head),
            stop: AtomicBool::new(false),
        });
        // The thread holds the watcher weakly: once the router and its streams are gone,
        // it ends.
        let watcher = Arc::downgrade(&me);
        let (poll, fallback) = (opts.poll, opts.fallback_poll);
        std::thread::Builder::new()
            .name("runledger-http-watcher".into())
            .spawn(move || match wake {
                Wake::Bus(bus) => Self::run(&watcher, &reader, &bus, poll),
                Wake::Backend(wait) => Self::run_woken(&watcher, &reader, wait, fallback),
            })
            .map_err(|e| crate::Error::invalid("thread", e.to_string()))?;
        Ok(me)
    }

    fn sender(&self) -> Option<broadcast::Sender<Item>> {
        self.tx
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// A receiver of everything broadcast from now on (`None` once stopped).
    pub(super) fn subscribe(&self) -> Option<broadcast::Receiver<Item>> {
        self.sender().map(|tx| tx.subscribe())
    }

    fn send(&self, item: Item) {
        if let Some(tx) = self.tx.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            let _ = tx.send(item);
        }
    }

    pub(super) fn head(&self) -> i64 {
        self.head.load(Ordering::SeqCst)
    }

    /// Stops the thread and ends every open stream.
    pub(super) fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.tx
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
    }

    fn run(
        me: &std::sync::Weak<Self>,
        reader: &Engine,
        wake: &std::sync::mpsc::Receiver<crate::Event>,
        poll: Duration,
    ) {
        let mut version = reader.events().data_version().ok();
        loop {
            let woken = match wake.recv_timeout(poll) {
                Ok(_) => {
                    while wake.try_recv().is_ok() {}
                    true
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => false,
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    std::thread::sleep(poll);
                    false
                }
            };
            let Some(watcher) = me.upgrade() else { return };
            if watcher.stop.load(Ordering::SeqCst) {
                return;
            }
            let now = reader.events().data_version().ok();
            let changed = now != version;
            version = now;
            if woken || changed {
                watcher.drain(reader);
            }
        }
    }

    /// The watcher of an engine a backend serves: woken by the backend's wait (a
    /// notification at each commit of job events, wherever it ran), and reading the feed at
    /// least every `fallback` anyway: a wake lost while the wait's connection was being
    /// re-established, or an event the feed held back at a wake, is read by then.
    fn run_woken(
        me: &std::sync::Weak<Self>,
        reader: &Engine,
        mut wait: Box<dyn crate::backend::EventWait>,
        fallback: Duration,
    ) {
        loop {
            if wait.wait(fallback).is_err() {
                // the database is away: the wait fails at once, so pace the retries
                std::thread::sleep(fallback.min(Duration::from_millis(250)));
            }
            let Some(watcher) = me.upgrade() else { return };
            if watcher.stop.load(Ordering::SeqCst) {
                return;
            }
            watcher.drain(reader);
        }
    }

    /// Reads and broadcasts everything after the last cursor it saw.
    fn drain(&self, reader: &Engine) {
        loop {
            let after = self.head();
            let Ok(page) = reader.events().feed(&FeedFilter::All, after, 1000, true) else {
                return;
            };
            if !page.pruned_jobs.is_empty() {
                // Events committed and pruned between two polls: nobody can get them any
                // more, so every stream is told to reload those jobs.
                self.send(Item::Pruned {
                    jobs: page.pruned_jobs.clone(),
                    head: page.head,
                });
            }
            let full = page.events.len() == 1000;
            for e in page.events {
                let cursor = e.event.cursor;
                let item = Item::Event {
                    cursor,
                    job_id: e.event.job_id,
                    user_id: e.user_id.as_deref().map(Arc::from),
                    data: Arc::from(event_json(&e)),
                };
                self.head.store(cursor, Ordering::SeqCst);
                self.send(item);
            }
            if !full {
                return;
            }
        }
    }
}

fn event_json(e: &FeedEvent) -> String {
    serde_json::to_string(e).unwrap_or_else(|_| "{}".into())
}

/// Query of `GET /events`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StreamQuery {
    job: Option<i64>,
    user: Option<String>,
    after: Option<i64>,
}

enum Phase {
    /// Replaying the log after `last`.
    Replay { check_gaps: bool },
    /// Forwarding live events.
    Live,
}

struct Follower {
    app: AppState,
    filter: FeedFilter,
    rx: broadcast::Receiver<Item>,
    last: i64,
    phase: Phase,
    queued: VecDeque<SseEvent>,
}

fn job_event(cursor: i64, data: &str) -> SseEvent {
    SseEvent::default().id(cursor.to_string()).data(data)
}

fn resync(reason: &str, jobs: &[i64], cursor: i64) -> SseEvent {
    SseEvent::default()
        .event("resync")
        .id(cursor.to_string())
        .data(json!({"reason": reason, "jobs": jobs, "cursor": cursor}).to_string())
}

impl Follower {
    /// The next SSE frame; `None` ends the stream (the server is stopping).
    async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(e) = self.queued.pop_front() {
                return Some(e);
            }
            match self.phase {
                Phase::Replay { check_gaps } => self.replay(check_gaps).await,
                Phase::Live => match self.rx.recv().await {
                    Ok(Item::Event {
                        cursor,
                        job_id,
                        user_id,
                        data,
                    }) => {
                        if cursor > self.last && self.filter.matches(job_id, user_id.as_deref()) {
                            self.last = cursor;
                            return Some(job_event(cursor, &data));
                        }
                    }
                    Ok(Item::Pruned { jobs, head }) => {
                        let mine: Vec<i64> = match &self.filter {
                            FeedFilter::Job(j) => jobs.iter().copied().filter(|x| x == j).collect(),
                            _ => jobs,
                        };
                        if !mine.is_empty() {
                            self.last = self.last.max(head);
                            return Some(resync("pruned", &mine, self.last));
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        // Too slow: skip to the present instead of buffering without bound.
                        self.last = self.last.max(self.app.watcher.head());
                        return Some(resync("lagged", &[], self.last));
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
            }
        }
    }

    async fn replay(&mut self, check_gaps: bool) {
        let (filter, after, page) = (self.filter.clone(), self.last, self.app.opts.stream.page);
        let engine = self.app.engine.clone();
        let read = blocking(move || engine.events().feed(&filter, after, page, check_gaps)).await;
        let page_full;
        match read {
            Ok(p) if !p.pruned_jobs.is_empty() => {
                self.last = p.head.max(self.last);
                self.queued
                    .push_back(resync("pruned", &p.pruned_jobs, self.last));
                self.phase = Phase::Live;
                return;
            }
            Ok(p) => {
                page_full = p.events.len() as u32 == page;
                for e in &p.events {
                    self.last = e.event.cursor;
                    self.queued
                        .push_back(job_event(e.event.cursor, &event_json(e)));
                }
            }
            Err(_) => {
                // The log could not be read: tell the client to reload rather than guess.
                self.last = self.last.max(self.app.watcher.head());
                self.queued.push_back(resync("unavailable", &[], self.last));
                self.phase = Phase::Live;
                return;
            }
        }
        if !page_full {
            self.phase = Phase::Live;
        }
    }
}

/// `GET /events?job=&user=&after=` (or `Last-Event-ID`).
pub(super) async fn events(
    State(app): State<AppState>,
    headers: HeaderMap,
    Q(q): Q<StreamQuery>,
) -> ApiResult<Response> {
    let filter = match (q.job, q.user) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid("query", "give job or user, not both"));
        }
        (Some(j), None) => FeedFilter::Job(j),
        (None, Some(u)) => FeedFilter::User(u),
        (None, None) => FeedFilter::All,
    };
    let last_event_id = match headers.get("last-event-id") {
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<i64>().ok())
                .filter(|n| *n >= 0)
                .ok_or_else(|| {
                    ApiError::invalid("Last-Event-ID", "must be a non-negative event cursor")
                })?,
        ),
        None => None,
    };
    if q.after.is_some_and(|a| a < 0) {
        return Err(ApiError::invalid(
            "after",
            "must be a non-negative event cursor",
        ));
    }
    // The header wins: a browser's EventSource sends it on reconnect, with the URL unchanged.
    let position = last_event_id.or(q.after);
    let Some(rx) = app.watcher.subscribe() else {
        return Err(ApiError::new("BUSY", "the server is stopping"));
    };
    let (last, phase) = match position {
        None => (app.watcher.head(), Phase::Live),
        Some(p) => (
            p,
            Phase::Replay {
                // `after=0` replays all the log keeps; a later position must be exact.
                check_gaps: p > 0,
            },
        ),
    };
    let follower = Follower {
        app: app.clone(),
        filter,
        rx,
        last,
        phase,
        queued: VecDeque::new(),
    };
    let frames = stream::unfold(follower, |mut f| async move {
        f.next().await.map(|e| (Ok::<_, Infallible>(e), f))
    });
    let mut res = Sse::new(frames)
        .keep_alive(KeepAlive::new().interval(app.opts.stream.keep_alive))
        .into_response();
    res.headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(res)
}
