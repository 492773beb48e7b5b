//! Component name → entry function, provided by the binary.

use std::collections::BTreeMap;

use motion_ipc::EntryFn;

/// The components a binary can run. The same registry must be passed to
/// [`Runtime::start`](crate::Runtime::start) and to
/// [`run_domain_if_requested`](crate::run_domain_if_requested), since a domain
/// process is the same executable started again.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    entries: BTreeMap<String, EntryFn>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Registry {
        Registry::default()
    }

    /// Register `entry` as component `name` (replacing any earlier one).
    pub fn register(&mut self, name: &str, entry: EntryFn) -> &mut Registry {
        self.entries.insert(name.to_owned(), entry);
        self
    }

    /// The entry function of `name`.
    pub fn get(&self, name: &str) -> Option<EntryFn> {
        self.entries.get(name).copied()
    }

    /// Registered names.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }
}
