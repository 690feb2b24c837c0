//! The lite-apiserver binary: parse flags, set up logging, run the server.
//! Configuration errors print one line and exit 2.

use std::process::ExitCode;

use lite_apiserver::config::{self, Command, USAGE};
use lite_apiserver::server;

fn main() -> ExitCode {
    let config = match config::parse(std::env::args().skip(1)) {
        Ok(Command::Run(config)) => *config,
        Ok(Command::Help) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Ok(Command::Version) => {
            println!("lite-apiserver {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("lite-apiserver: {e}");
            return ExitCode::from(2);
        }
    };
    lite_apiserver::memory::limit_arenas();
    init_logging(config.log_level);
    match server::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lite-apiserver: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

/// `--log-level`, else `RUST_LOG` (a plain level), else info.
fn init_logging(level: Option<log::LevelFilter>) {
    let from_env = std::env::var("RUST_LOG").ok().and_then(|v| v.parse().ok());
    let level = level.or(from_env).unwrap_or(log::LevelFilter::Info);
    // rustls logs every TLS alert at debug; keep it quieter unless tracing.
    let rustls_level =
        if level >= log::LevelFilter::Trace { level } else { log::LevelFilter::Warn };
    let logger = simple_logger::SimpleLogger::new()
        .with_level(level)
        .with_module_level("rustls", rustls_level);
    if let Err(e) = logger.init() {
        eprintln!("lite-apiserver: cannot set up logging: {e}");
    }
}
