use std::io::Write;
use std::process::ExitCode;

use rshim::flags::{Action, Flags};
use rshim::logger::FifoLogger;

fn main() -> ExitCode {
    let flags = match Flags::parse(std::env::args().skip(1)) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("{}: {e}", rshim::NAME);
            return ExitCode::from(2);
        }
    };
    let result = match flags.action {
        Action::Version => {
            println!(
                "{}:\n  Version:  {}\n  Revision: {}",
                rshim::NAME,
                rshim::VERSION,
                option_env!("RSHIM_REVISION").unwrap_or("unknown")
            );
            Ok(())
        }
        Action::Info => rshim::info::run().and_then(|bytes| {
            std::io::stdout().write_all(&bytes)?;
            Ok(())
        }),
        Action::Start => {
            FifoLogger::install_stderr(flags.debug);
            rshim::start::run(&flags).and_then(|bytes| {
                std::io::stdout().write_all(&bytes)?;
                Ok(())
            })
        }
        Action::Delete => {
            FifoLogger::install_stderr(flags.debug);
            rshim::delete::run(&flags).and_then(|bytes| {
                std::io::stdout().write_all(&bytes)?;
                Ok(())
            })
        }
        Action::Serve => rshim::daemon::run(&flags),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{}: {e:#}", rshim::NAME);
            ExitCode::FAILURE
        }
    }
}
