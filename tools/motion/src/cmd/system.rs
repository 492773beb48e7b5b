//! `motion system ...`: the system description.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

/// `motion system` subcommands.
#[derive(Subcommand)]
pub enum SystemCmd {
    /// Validate a system description: prints `ok`, or every broken rule as
    /// `FILE:LINE: rule: message` on stderr. Exit status 0 valid, 1 invalid,
    /// 2 unreadable.
    Check {
        /// The file to check.
        #[arg(default_value = "system.toml")]
        file: PathBuf,
    },
}

/// Run a `motion system` subcommand.
pub fn run(cmd: SystemCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        SystemCmd::Check { file } => Ok(check(&file)),
    }
}

fn check(file: &std::path::Path) -> ExitCode {
    match motion_system::load(file, motion_ipc::INTERFACE_NAMES) {
        Ok(_) => {
            println!("ok");
            ExitCode::SUCCESS
        }
        Err(motion_system::LoadError::Invalid(findings)) => {
            for d in &findings {
                eprintln!("{d}");
            }
            ExitCode::from(1)
        }
        Err(e @ motion_system::LoadError::Read { .. }) => {
            eprintln!("motion system check: {e}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    /// The validator names the supervisor's interface itself (it does not
    /// depend on motion-ipc); the two must agree.
    #[test]
    fn supervisor_interface_is_an_ipc_interface() {
        assert!(motion_ipc::INTERFACE_NAMES.contains(&motion_system::SUPERVISOR_INTERFACE));
    }
}
