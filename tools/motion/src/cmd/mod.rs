//! One module per subcommand group.

pub mod backend;
pub mod run;
pub mod doctor;
pub mod system;
pub mod version;
