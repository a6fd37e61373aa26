//! Minimal entry point of the `sim` branch, only to try `simulate`; main's replaces it.

use clap::Parser;
use tokio_util::sync::CancellationToken;
use wechat_token_server::cli::{Cli, Command};

#[tokio::main]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

async fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(cli.log.log_level.as_str())
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Simulate(args) => {
            let shutdown = CancellationToken::new();
            let on_ctrl_c = shutdown.clone();
            tokio::spawn(async move {
                let _ = tokio::signal::ctrl_c().await;
                on_ctrl_c.cancel();
            });
            wechat_token_server::simulator::run_cli(args, shutdown).await
        }
        _ => anyhow::bail!("only `simulate` is wired on this branch"),
    }
}
