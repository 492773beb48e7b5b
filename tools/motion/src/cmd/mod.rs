//! One module per subcommand group.

pub mod version;
