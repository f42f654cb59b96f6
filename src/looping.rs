//! Background loops with a clean stop: the supervisor's and the scheduler's `spawn` helpers.

use std::sync::mpsc::{channel, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

/// A running background loop. [`LoopHandle::stop`] wakes it from its wait at once and joins
/// it; dropping the handle stops it too.
#[derive(Debug)]
pub struct LoopHandle {
    stop: Option<Sender<Signal>>,
    thread: Option<JoinHandle<()>>,
}

impl LoopHandle {
    /// Stops the loop after its current iteration and waits for the thread to end.
    pub fn stop(mut self) {
        self.shutdown();
    }

    /// Whether the loop's thread has ended (it only ends on stop or a panic of its body).
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }

    fn shutdown(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(Signal::Stop);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for LoopHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// What wakes a loop from its wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Signal {
    Stop,
    Wake,
}

/// Wakes a loop from its wait so that it runs its body again at once (for instance when a
/// worker of its pool becomes free). Waking a stopped loop does nothing.
#[derive(Debug, Clone)]
pub(crate) struct Waker(Arc<Mutex<Sender<Signal>>>);

impl Waker {
    /// Ends the loop's current wait.
    pub(crate) fn wake(&self) {
        let _ = self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .send(Signal::Wake);
    }
}

/// Runs `body` on a named thread until stopped; `body` returns how long to wait before its
/// next run. The wait is a channel receive, so a stop interrupts it immediately.
pub(crate) fn spawn_loop(
    name: &str,
    mut body: impl FnMut() -> Duration + Send + 'static,
) -> std::io::Result<LoopHandle> {
    spawn_wakeable_loop(name, move |_| body())
}

/// [`spawn_loop`] whose body gets a [`Waker`] that ends the current wait early; `body` may
/// hand clones of it to other threads.
pub(crate) fn spawn_wakeable_loop(
    name: &str,
    mut body: impl FnMut(&Waker) -> Duration + Send + 'static,
) -> std::io::Result<LoopHandle> {
    let (tx, rx) = channel::<Signal>();
    let waker = Waker(Arc::new(Mutex::new(tx.clone())));
    let thread = std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || loop {
            let wait = body(&waker);
            match rx.recv_timeout(wait) {
                Ok(Signal::Wake) | Err(RecvTimeoutError::Timeout) => continue,
                Ok(Signal::Stop) | Err(RecvTimeoutError::Disconnected) => break,
            }
        })?;
    Ok(LoopHandle {
        stop: Some(tx),
        thread: Some(thread),
    })
}
