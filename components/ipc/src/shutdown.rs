//! A shared "please stop" flag, set by the runtime when the supervisor asks a
//! domain to shut down. Blocking receives and sends on endpoints that carry it
//! return [`IpcError::Shutdown`](crate::IpcError::Shutdown) soon after it is set.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Cloneable flag; all clones see the same state.
#[derive(Debug, Clone, Default)]
pub struct ShutdownSignal(Arc<AtomicBool>);

impl ShutdownSignal {
    /// A flag that is not set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Ask everyone holding a clone to stop.
    pub fn request(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether a stop was requested.
    pub fn is_requested(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}
