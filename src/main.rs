//! The `caregraph` binary: parse the command line and run it.

use clap::Parser;

/// mimalloc rather than glibc malloc: less lock contention between the runtime's threads (the
/// dashboard benchmark's CPU per request, README "Performance").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    Box::pin(caregraph::cli::run(caregraph::cli::Cli::parse())).await
}
