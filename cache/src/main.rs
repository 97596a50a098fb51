//! The `swcache` command line: a WCCPv2 cache agent with userspace GRE termination.

use cache::{run, Args};
use clap::Parser;

fn main() {
    let args = Args::parse();
    // The file is read before logging starts: its log-level sets the filter.
    let settings = match args.settings() {
        Ok(s) => s,
        Err(e) => fail(&e),
    };
    if args.check {
        if let Err(e) = settings.conf.engine_config() {
            fail(&e.into());
        }
        print!("{}", settings.conf.to_toml());
        return;
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&settings.log_filter));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    if let Err(e) = run(settings.conf) {
        fail(&e);
    }
}

/// Prints `swcache: ERROR` (a file error as `file:line:col: message`) and exits with status 1.
fn fail(e: &anyhow::Error) -> ! {
    eprintln!("swcache: {e:#}");
    std::process::exit(1);
}
