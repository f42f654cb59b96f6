//! The UI's live stream: one watcher thread per router fans committed job events out to
//! every open page (Server-Sent Events, `id:` = the event's global cursor).
//!
//! The watcher wakes on this process's own commits (the engine's event bus) and, for other
//! processes' commits, checks `PRAGMA data_version` every [`POLL`]; it reads the log only
//! when something changed. It runs while at least one page listens.

use std::convert::Infallible;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use tokio::sync::{broadcast, mpsc};

use crate::engine::Engine;
use crate::events::Event;

/// How often the watcher checks for other processes' commits.
pub const POLL: Duration = Duration::from_millis(50);
/// Events buffered per page before a slow page is told to `resync`.
const BUFFER: usize = 1024;
/// At most this many backlog events are replayed to a page that reconnects.
const REPLAY_MAX: usize = 5000;
const PAGE: u32 = 500;

/// The fan-out of one router.
#[derive(Debug)]
pub struct Hub {
    engine: Engine,
    tx: broadcast::Sender<Arc<Event>>,
    /// The newest cursor the watcher has sent.
    cursor: AtomicI64,
    running: Mutex<bool>,
}

impl Hub {
    /// A hub over `engine`; its watcher starts with the first listener.
    pub fn new(engine: Engine) -> Arc<Self> {
        let (tx, _) = broadcast::channel(BUFFER);
        Arc::new(Self {
            engine,
            tx,
            cursor: AtomicI64::new(0),
            running: Mutex::new(false),
        })
    }

    /// A receiver of every event the watcher sends from now on, and the cursor it had
    /// reached when the receiver was made (every later event has a larger cursor).
    fn subscribe(self: &Arc<Self>) -> crate::Result<(broadcast::Receiver<Arc<Event>>, i64)> {
        let rx = self.tx.subscribe();
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if !*running {
            let start = self.engine.with_connection(super::queries::last_cursor)?;
            self.cursor.store(start, Ordering::SeqCst);
            let hub = Arc::clone(self);
            let bus = self.engine.events().subscribe();
            std::thread::Builder::new()
                .name("runledger-ui-watch".into())
                .spawn(move || hub.watch(bus))
                .map_err(|e| crate::Error::invalid("ui watcher", e.to_string()))?;
            *running = true;
        }
        Ok((rx, self.cursor.load(Ordering::SeqCst)))
    }

    fn watch(self: Arc<Self>, bus: std::sync::mpsc::Receiver<Event>) {
        let events = self.engine.events();
        let mut version = events.data_version().unwrap_or(0);
        loop {
            let mut changed = match bus.recv_timeout(POLL) {
                Ok(_) => true,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => false,
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => false,
            };
            while bus.try_recv().is_ok() {
                changed = true;
            }
            if let Ok(v) = events.data_version() {
                changed |= v != version;
                version = v;
            }
            if changed {
                let mut cursor = self.cursor.load(Ordering::SeqCst);
                while let Ok(batch) = events.after(cursor, PAGE) {
                    let Some(last) = batch.last() else { break };
                    cursor = last.cursor;
                    let full = batch.len() == PAGE as usize;
                    for e in batch {
                        let _ = self.tx.send(Arc::new(e));
                    }
                    self.cursor.store(cursor, Ordering::SeqCst);
                    if !full {
                        break;
                    }
                }
            }
            let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
            if self.tx.receiver_count() == 0 {
                *running = false;
                return;
            }
        }
    }
}

fn frame(e: &Event) -> SseEvent {
    SseEvent::default()
        .id(e.cursor.to_string())
        .event("job")
        .data(serde_json::to_string(e).unwrap_or_default())
}

fn resync() -> SseEvent {
    SseEvent::default().event("resync").data("{}")
}

/// The stream for one page: replays the log after `after` (when given), then follows the
/// hub. `job` keeps one job's events only.
pub async fn stream(
    hub: Arc<Hub>,
    after: Option<i64>,
    job: Option<i64>,
) -> crate::Result<Sse<impl futures_util::Stream<Item = Result<SseEvent, Infallible>>>> {
    let (mut rx, present) = {
        let hub = Arc::clone(&hub);
        tokio::task::spawn_blocking(move || hub.subscribe())
            .await
            .map_err(|e| crate::Error::invalid("ui watcher", e.to_string()))??
    };
    let (out, out_rx) = mpsc::channel::<Result<SseEvent, Infallible>>(64);
    let wanted = move |e: &Event| job.is_none_or(|j| j == e.job_id);
    tokio::spawn(async move {
        let mut last = after.unwrap_or(present);
        if after.is_some() {
            // Replay what the log keeps after `after`, up to and past `present`.
            let mut replayed = 0usize;
            loop {
                let engine = hub.engine.clone();
                let from = last;
                let batch = tokio::task::spawn_blocking(move || engine.events().after(from, PAGE))
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .unwrap_or_default();
                let Some(end) = batch.last().map(|e| e.cursor) else {
                    break;
                };
                for e in batch.iter().filter(|e| wanted(e)) {
                    if out.send(Ok(frame(e))).await.is_err() {
                        return;
                    }
                }
                last = end;
                replayed += PAGE as usize;
                if replayed >= REPLAY_MAX {
                    if out.send(Ok(resync())).await.is_err() {
                        return;
                    }
                    last = hub.cursor.load(Ordering::SeqCst).max(last);
                    break;
                }
            }
        }
        loop {
            match rx.recv().await {
                Ok(e) if e.cursor > last => {
                    last = e.cursor;
                    if wanted(&e) && out.send(Ok(frame(&e))).await.is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    if out.send(Ok(resync())).await.is_err() {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    let body = futures_util::stream::unfold(out_rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Ok(Sse::new(body).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
