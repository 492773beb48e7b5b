//! A global for a single-CPU kernel.

use core::cell::UnsafeCell;

/// A static that interrupt handlers and the main thread share on one CPU.
/// Access is through raw pointers; callers make sure accesses do not overlap
/// (interrupts disabled, or only the handler touches it).
pub struct Global<T>(UnsafeCell<T>);

// SAFETY: the guests run on one CPU; overlapping access is excluded by the
// callers of `get` (see the type's docs).
unsafe impl<T> Sync for Global<T> {}

impl<T> Global<T> {
    /// Wrap a value.
    pub const fn new(v: T) -> Self {
        Global(UnsafeCell::new(v))
    }
    /// A raw pointer to the value.
    pub const fn get(&self) -> *mut T {
        self.0.get()
    }
}
