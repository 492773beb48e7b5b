//! The [`Interface`] trait: what a channel carries.

use std::fmt::Debug;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::INTERFACE_NAMES;

/// Wire identifier of an interface, carried in every frame header.
pub type InterfaceId = u16;

/// A typed interface: a name from [`INTERFACE_NAMES`], a request type and a
/// response type. Implemented by a unit struct in each API crate:
///
/// ```
/// use motion_ipc::Interface;
/// # #[derive(Debug, serde::Serialize, serde::Deserialize)] pub enum Req { Ping(u64) }
/// # #[derive(Debug, serde::Serialize, serde::Deserialize)] pub enum Resp { Pong(u64) }
/// pub struct Supervisor;
/// impl Interface for Supervisor {
///     const NAME: &'static str = "Supervisor";
///     type Request = Req;
///     type Response = Resp;
/// }
/// assert_eq!(Supervisor::ID, 5);
/// ```
///
/// Messages are postcard-encoded: an enum variant is its index, so new
/// variants are appended at the end and existing ones never reordered or
/// removed. A receiver built before a variant existed rejects it as
/// malformed, with an error reply, instead of misreading it.
pub trait Interface: 'static {
    /// The interface's name, as written in `system.toml`.
    const NAME: &'static str;
    /// The wire id. Defaults to the name's position in [`INTERFACE_NAMES`]
    /// (a name that is not listed fails to compile); only test interfaces,
    /// which never appear in `system.toml`, set it by hand.
    const ID: InterfaceId = interface_id_const(Self::NAME);
    /// What the client sends.
    type Request: Serialize + DeserializeOwned + Debug + Send + 'static;
    /// What the server answers.
    type Response: Serialize + DeserializeOwned + Debug + Send + 'static;
}

/// The wire id of a listed interface name, or `None`.
pub fn interface_id(name: &str) -> Option<InterfaceId> {
    INTERFACE_NAMES
        .iter()
        .position(|n| *n == name)
        .and_then(|i| InterfaceId::try_from(i + 1).ok())
}

/// The name of a listed interface id, or `None`.
pub fn interface_name(id: InterfaceId) -> Option<&'static str> {
    INTERFACE_NAMES
        .get(usize::from(id).checked_sub(1)?)
        .copied()
}

/// [`interface_id`] at compile time; panics (a compile error when used in a
/// constant) for a name that is not in [`INTERFACE_NAMES`].
pub const fn interface_id_const(name: &str) -> InterfaceId {
    let mut i = 0;
    while i < INTERFACE_NAMES.len() {
        if const_str_eq(INTERFACE_NAMES[i], name) {
            return (i + 1) as InterfaceId;
        }
        i += 1;
    }
    panic!("interface name is not in motion_ipc::INTERFACE_NAMES")
}

const fn const_str_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_the_list_and_round_trip() {
        for (i, name) in INTERFACE_NAMES.iter().enumerate() {
            let id = interface_id(name).unwrap();
            assert_eq!(usize::from(id), i + 1);
            assert_eq!(interface_id_const(name), id);
            assert_eq!(interface_name(id), Some(*name));
        }
        assert_eq!(interface_id("Nope"), None);
        assert_eq!(interface_name(0), None);
        assert_eq!(interface_name(999), None);
    }
}
