//! Group commit for the small statements every request makes on the platform database
//! (projection hints, request budgets): callers queue an item, and one task per batcher
//! takes everything queued and flushes it in one go; whatever queues during a flush goes
//! with the next. There is no artificial delay: alone, an item is flushed at once; under
//! load the batches grow by themselves, and the platform database (shared by every
//! hospital) sees one statement per flush instead of one per request.
//!
//! A [`Batcher::spaced`] one also waits between flushes: for work whose effect is paced
//! anyway, sending it more often would cost statements and buy nothing.
//!
//! The task starts on the first item and again after it ended (its runtime shut down),
//! and ends when the batcher is dropped.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::Notify;

type Flush<T> = Arc<dyn Fn(Vec<T>) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

pub struct Batcher<T> {
    inner: Arc<Inner<T>>,
}

struct Inner<T> {
    queue: Mutex<Vec<T>>,
    /// Wakes the task: something was queued, or the batcher is dropped.
    wake: Arc<Notify>,
    /// Whether the task runs; cleared when it ends.
    running: Arc<AtomicBool>,
    flush: Flush<T>,
    /// The least time from one flush's start to the next one's.
    spacing: Duration,
}

impl<T> Drop for Inner<T> {
    fn drop(&mut self) {
        // The task holds only a weak reference: wake it so that it sees it is alone.
        self.wake.notify_one();
    }
}

impl<T: Send + 'static> Batcher<T> {
    /// A batcher whose task hands every batch to `flush`, one batch at a time.
    pub fn new<F, Fut>(flush: F) -> Self
    where
        F: Fn(Vec<T>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        Self::spaced(Duration::ZERO, flush)
    }

    /// As [`new`](Self::new), with flushes starting at least `spacing` apart: an item
    /// queued while none is pending still goes at once, and everything queued within the
    /// spacing goes together after it.
    pub fn spaced<F, Fut>(spacing: Duration, flush: F) -> Self
    where
        F: Fn(Vec<T>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        Self {
            inner: Arc::new(Inner {
                queue: Mutex::default(),
                wake: Arc::default(),
                running: Arc::default(),
                flush: Arc::new(move |items| Box::pin(flush(items))),
                spacing,
            }),
        }
    }

    /// Queues `item` for the next flush. Needs a Tokio runtime (the task runs on it).
    pub fn push(&self, item: T) {
        self.inner
            .queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(item);
        if !self.inner.running.swap(true, Ordering::SeqCst) {
            tokio::spawn(run(
                Arc::downgrade(&self.inner),
                self.inner.wake.clone(),
                Running(self.inner.running.clone()),
            ));
        }
        self.inner.wake.notify_one();
    }
}

/// Marks the task as running while alive.
struct Running(Arc<AtomicBool>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

async fn run<T>(inner: Weak<Inner<T>>, wake: Arc<Notify>, _running: Running) {
    loop {
        wake.notified().await;
        let Some(inner) = inner.upgrade() else { return };
        let items = std::mem::take(&mut *inner.queue.lock().unwrap_or_else(|e| e.into_inner()));
        let (flush, spacing) = (inner.flush.clone(), inner.spacing);
        // Not held while flushing: dropping the batcher meanwhile ends the task after.
        drop(inner);
        if !items.is_empty() {
            let started = tokio::time::Instant::now();
            flush(items).await;
            if !spacing.is_zero() {
                tokio::time::sleep_until(started + spacing).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[tokio::test]
    async fn items_queued_during_a_flush_go_together_with_the_next() {
        let (seen, mut batches) = tokio::sync::mpsc::unbounded_channel::<Vec<u32>>();
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let batcher = Batcher::new({
            let gate = gate.clone();
            move |items: Vec<u32>| {
                let (seen, gate) = (seen.clone(), gate.clone());
                async move {
                    // The first flush waits until the test lets it finish.
                    if items == [0] {
                        gate.acquire().await.expect("open").forget();
                    }
                    seen.send(items).expect("receiver");
                }
            }
        });
        batcher.push(0);
        tokio::time::sleep(Duration::from_millis(20)).await;
        for i in 1..=3 {
            batcher.push(i);
        }
        gate.add_permits(1);
        async fn wait(batches: &mut tokio::sync::mpsc::UnboundedReceiver<Vec<u32>>) -> Vec<u32> {
            tokio::time::timeout(Duration::from_secs(5), batches.recv())
                .await
                .expect("a batch")
                .expect("open")
        }
        assert_eq!(wait(&mut batches).await, vec![0]);
        assert_eq!(wait(&mut batches).await, vec![1, 2, 3]);
        // Alone, an item is flushed at once.
        batcher.push(4);
        assert_eq!(wait(&mut batches).await, vec![4]);
    }

    #[tokio::test]
    async fn a_spaced_batcher_flushes_at_once_then_waits_out_the_spacing() {
        let spacing = Duration::from_millis(300);
        let (seen, mut batches) = tokio::sync::mpsc::unbounded_channel::<(Vec<u32>, Instant)>();
        let batcher = Batcher::spaced(spacing, move |items: Vec<u32>| {
            let seen = seen.clone();
            async move { seen.send((items, Instant::now())).expect("receiver") }
        });
        async fn wait(
            batches: &mut tokio::sync::mpsc::UnboundedReceiver<(Vec<u32>, Instant)>,
        ) -> (Vec<u32>, Instant) {
            tokio::time::timeout(Duration::from_secs(5), batches.recv())
                .await
                .expect("a batch")
                .expect("open")
        }
        let pushed = Instant::now();
        batcher.push(0);
        let (first, at) = wait(&mut batches).await;
        assert_eq!(first, vec![0]);
        assert!(at - pushed < spacing, "alone, an item goes at once");
        for i in 1..=3 {
            batcher.push(i);
        }
        let (next, next_at) = wait(&mut batches).await;
        assert_eq!(next, vec![1, 2, 3], "queued within the spacing: one batch");
        // The first flush started after `pushed`: the next one starts a spacing after it.
        assert!(
            next_at - pushed >= spacing,
            "the next flush waits out the spacing"
        );
    }

    #[tokio::test]
    async fn the_task_ends_when_the_batcher_is_dropped() {
        let batcher = Batcher::new(|_: Vec<u32>| async {});
        batcher.push(1);
        tokio::time::sleep(Duration::from_millis(20)).await;
        let running = batcher.inner.running.clone();
        assert!(running.load(Ordering::SeqCst));
        drop(batcher);
        tokio::time::timeout(Duration::from_secs(5), async {
            while running.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the task ended");
    }
}
