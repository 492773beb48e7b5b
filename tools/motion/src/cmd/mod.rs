//! One module per subcommand group.

pub mod system;
pub mod doctor;
pub mod version;
