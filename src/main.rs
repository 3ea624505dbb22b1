//! The `caregraph` binary: parse the command line and run it.

use clap::Parser;

/// mimalloc rather than glibc malloc: less lock contention between the runtime's threads (the
/// dashboard benchmark's CPU per request, README "Performance").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    // Before the runtime's threads allocate: `serve` applies `CAREGRAPH_HUGE_PAGES` later.
    caregraph::process::huge_pages(false);
    caregraph::cli::main(caregraph::cli::Cli::parse())
}
