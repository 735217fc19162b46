//! The bound on requests running in components at once
//! (`max_running_requests`): a request waits for a permit before it takes an
//! instance, and permits are granted in arrival order (tokio's semaphore is
//! fair), so a burst queues in front of a few reused instances instead of
//! creating one instance per request.

use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The permits of one server; no bound when built with 0.
pub(super) struct Permits(Option<Arc<Semaphore>>);

/// Held while a request runs in a component; dropping it lets the next
/// waiting request in.
pub(super) struct Permit {
    _held: Option<OwnedSemaphorePermit>,
}

impl Permits {
    pub(super) fn new(limit: usize) -> Permits {
        Permits((limit > 0).then(|| Arc::new(Semaphore::new(limit))))
    }

    /// Waits, behind every request that asked earlier, for a permit.
    pub(super) async fn acquire(&self) -> Permit {
        match &self.0 {
            Some(running) => Permit {
                _held: Some(Arc::clone(running).acquire_owned().await.expect("the semaphore is never closed")),
            },
            None => Permit { _held: None },
        }
    }
}
