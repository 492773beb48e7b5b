//! One module per subcommand group.

pub mod log;
pub mod system;
pub mod version;
