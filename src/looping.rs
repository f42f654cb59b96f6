//! Background loops with a clean stop: the supervisor's and the scheduler's `spawn` helpers.

use std::sync::mpsc::{channel, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::Duration;

/// A running background loop. [`LoopHandle::stop`] wakes it from its wait at once and joins
/// it; dropping the handle stops it too.
#[derive(Debug)]
pub struct LoopHandle {
    stop: Option<Sender<()>>,
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
        self.stop.take();
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

/// Runs `body` on a named thread until stopped; `body` returns how long to wait before its
/// next run. The wait is a channel receive, so a stop interrupts it immediately.
pub(crate) fn spawn_loop(
    name: &str,
    mut body: impl FnMut() -> Duration + Send + 'static,
) -> std::io::Result<LoopHandle> {
    let (tx, rx) = channel::<()>();
    let thread = std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || loop {
            let wait = body();
            match rx.recv_timeout(wait) {
                Err(RecvTimeoutError::Timeout) => continue,
                Ok(()) | Err(RecvTimeoutError::Disconnected) => break,
            }
        })?;
    Ok(LoopHandle {
        stop: Some(tx),
        thread: Some(thread),
    })
}
