//! The `caregraph` binary: parse the command line and run it.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    Box::pin(caregraph::cli::run(caregraph::cli::Cli::parse())).await
}
