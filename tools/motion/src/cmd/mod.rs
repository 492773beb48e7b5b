//! One module per subcommand group.

pub mod backend;
pub mod run;
pub mod version;
