//! The futures that wait beside a connection (the stop, the once-a-second look at its
//! progress), polled only when they woke its task. A `select!` polls every branch on every
//! wake, and nearly every wake is the connection's own socket: polling the stop's `Notified`
//! takes its lock, and the look's timer registers its waker again, for each request (README,
//! Benchmarks). Here they are polled with a waker of their own that marks them woken and
//! then wakes the task, so a wake by the socket costs one atomic load beside the connection.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Wake, Waker};

/// What the waiting futures' waker shares with the task that polls them.
struct Marked {
    /// One of them woke (or has not been polled yet).
    woken: AtomicBool,
    /// The task to wake with them.
    task: Mutex<Option<Waker>>,
}

impl Wake for Marked {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // Marked before the task is woken: its next poll sees the mark.
        self.woken.store(true, Ordering::Release);
        let task = self.task.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(task) = task.as_ref() {
            task.wake_by_ref();
        }
    }
}

/// A waker for the futures beside a connection; see the module's documentation.
pub(super) struct Beside {
    marked: Arc<Marked>,
    waker: Waker,
    /// The task waker `marked` holds, to see without its lock that it is still the one.
    task: Option<Waker>,
}

impl Beside {
    pub(super) fn new() -> Self {
        let marked = Arc::new(Marked {
            woken: AtomicBool::new(true),
            task: Mutex::new(None),
        });
        Self {
            waker: Waker::from(marked.clone()),
            marked,
            task: None,
        }
    }

    /// Called at each poll of the task with its context: `Some(context)` to poll the waiting
    /// futures with when one of them woke the task (or at the first poll), `None` otherwise.
    pub(super) fn woken(&mut self, cx: &Context<'_>) -> Option<Context<'_>> {
        let same = (self.task.as_ref()).is_some_and(|task| task.will_wake(cx.waker()));
        if !same {
            let task = cx.waker().clone();
            *self
                .marked
                .task
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(task.clone());
            self.task = Some(task);
        }
        let woken = self.marked.woken.load(Ordering::Relaxed)
            && self.marked.woken.swap(false, Ordering::Acquire);
        woken.then(|| Context::from_waker(&self.waker))
    }
}

#[cfg(test)]
mod tests {
    use std::future::{Future, poll_fn};
    use std::sync::atomic::AtomicUsize;
    use std::task::Poll;
    use std::time::Duration;

    use tokio::sync::Notify;

    use super::*;

    /// The waiting future is polled at the first poll and after it woke the task, not when
    /// the task was woken by something else (the connection's socket); and its wake reaches
    /// the task.
    #[tokio::test(start_paused = true)]
    async fn the_waiting_future_is_polled_only_when_it_woke_the_task() {
        let stop = Arc::new(Notify::new());
        let socket: Arc<Mutex<Option<Waker>>> = Arc::default();
        let (polls, side_polls) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let task = tokio::spawn({
            let (stop, socket) = (stop.clone(), socket.clone());
            let (polls, side_polls) = (polls.clone(), side_polls.clone());
            async move {
                let mut beside = Beside::new();
                let stopped = stop.notified();
                tokio::pin!(stopped);
                poll_fn(|cx| {
                    polls.fetch_add(1, Ordering::SeqCst);
                    *socket.lock().unwrap() = Some(cx.waker().clone());
                    if let Some(mut side) = beside.woken(cx) {
                        side_polls.fetch_add(1, Ordering::SeqCst);
                        if stopped.as_mut().poll(&mut side).is_ready() {
                            return Poll::Ready(());
                        }
                    }
                    Poll::Pending
                })
                .await;
            }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(
            side_polls.load(Ordering::SeqCst),
            1,
            "polled at the first poll"
        );
        for _ in 0..3 {
            socket.lock().unwrap().as_ref().unwrap().wake_by_ref();
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            polls.load(Ordering::SeqCst),
            4,
            "the socket's wakes polled the task"
        );
        assert_eq!(
            side_polls.load(Ordering::SeqCst),
            1,
            "not for the socket's wakes"
        );
        stop.notify_waiters();
        let stopped = tokio::time::timeout(Duration::from_secs(1), task).await;
        assert!(
            matches!(stopped, Ok(Ok(()))),
            "the stop's wake reached the task"
        );
        assert_eq!(side_polls.load(Ordering::SeqCst), 2);
    }
}
