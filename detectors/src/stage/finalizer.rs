//! Acknowledgement that travels with the data, as vector's finalizers do.
//! A batch's [`Finalizer`] is split into one part per shard, and each part
//! rides with that shard's decisions to the revoker. The batch's callback
//! runs once every part is [`done`](Finalizer::done); if any part is
//! dropped instead (a stage stopped, the ledger could not be written), it
//! never runs, and the batch stays unacknowledged.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

type Callback = Box<dyn FnOnce() + Send>;

struct Inner {
    on_done: Mutex<Option<Callback>>,
    failed: AtomicBool,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if self.failed.load(Ordering::Acquire) {
            return;
        }
        let on_done = self.on_done.get_mut().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = on_done.take() {
            f();
        }
    }
}

/// See the module docs.
#[must_use = "dropping a finalizer without `done` leaves its batch unacknowledged"]
pub struct Finalizer {
    inner: Option<Arc<Inner>>,
}

impl Finalizer {
    /// Runs `on_done` once this finalizer and every part of it are done.
    pub fn new(on_done: impl FnOnce() + Send + 'static) -> Self {
        Finalizer {
            inner: Some(Arc::new(Inner {
                on_done: Mutex::new(Some(Box::new(on_done))),
                failed: AtomicBool::new(false),
            })),
        }
    }

    /// Nothing to acknowledge (the decisions of the final flush).
    pub fn none() -> Self {
        Finalizer { inner: None }
    }

    /// A part that must be done too before the callback runs.
    pub fn part(&self) -> Finalizer {
        Finalizer {
            inner: self.inner.clone(),
        }
    }

    /// One finalizer for all of `parts`: when it is done, they are; if it
    /// is dropped, they are too (never acknowledged).
    pub fn join(parts: Vec<Finalizer>) -> Self {
        if parts.iter().all(|p| p.inner.is_none()) {
            return Finalizer::none();
        }
        Finalizer::new(move || parts.into_iter().for_each(Finalizer::done))
    }

    /// This part is done.
    pub fn done(mut self) {
        self.inner = None;
    }
}

impl Drop for Finalizer {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.take() {
            inner.failed.store(true, Ordering::Release);
        }
    }
}

impl std::fmt::Debug for Finalizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Finalizer")
            .field("pending", &self.inner.is_some())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    fn counted() -> (Finalizer, Arc<AtomicUsize>) {
        let runs = Arc::new(AtomicUsize::new(0));
        let r = runs.clone();
        let f = Finalizer::new(move || {
            r.fetch_add(1, Ordering::SeqCst);
        });
        (f, runs)
    }

    #[test]
    fn runs_once_when_every_part_is_done_in_any_order() {
        let (f, runs) = counted();
        let (a, b) = (f.part(), f.part());
        f.done();
        b.done();
        assert_eq!(runs.load(Ordering::SeqCst), 0, "part a is still out");
        a.done();
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_join_is_done_when_it_is_and_fails_when_dropped() {
        let (f, runs) = counted();
        let (g, runs_g) = counted();
        let joined = Finalizer::join(vec![f, g, Finalizer::none()]);
        assert_eq!(runs.load(Ordering::SeqCst), 0);
        joined.done();
        assert_eq!(
            (runs.load(Ordering::SeqCst), runs_g.load(Ordering::SeqCst)),
            (1, 1)
        );
        let (f, runs) = counted();
        drop(Finalizer::join(vec![f]));
        assert_eq!(runs.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn a_dropped_part_means_never() {
        let (f, runs) = counted();
        let (a, b) = (f.part(), f.part());
        f.done();
        a.done();
        drop(b);
        assert_eq!(runs.load(Ordering::SeqCst), 0);
        let (f, runs) = counted();
        drop(f);
        assert_eq!(runs.load(Ordering::SeqCst), 0);
    }
}
