//! One module per subcommand group.

pub mod bench;
pub mod version;
