//! The `wechat-token-server` binary: parse the command line, set up logging, run.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use wechat_token_server::cli::{Cli, Command};
use wechat_token_server::config::Config;
use wechat_token_server::{app::App, demo, healthcheck, reload, shutdown, simulator, telemetry};

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = telemetry::init(&cli.log.log_level, cli.log.log_format) {
        eprintln!("error: {e:#}");
        return ExitCode::from(2);
    }
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> anyhow::Result<()> {
    if let Command::CheckConfig(args) = &command {
        let config = Config::load(&args.config)
            .with_context(|| format!("invalid config {}", args.config.display()))?;
        print!("{}", config.to_masked_toml());
        eprintln!("config {} is valid", args.config.display());
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let shutdown = shutdown::on_signal();
        match command {
            Command::Serve(args) => {
                let path = args.config.config;
                let config = Config::load(&path)
                    .with_context(|| format!("invalid config {}", path.display()))?;
                let listener = tokio::net::TcpListener::bind(config.server.bind)
                    .await
                    .with_context(|| {
                        format!("cannot listen on {} (server.bind)", config.server.bind)
                    })?;
                let _pid_file = args.pid_file.map(reload::PidFile::write).transpose()?;
                App::build(config, listener)
                    .await?
                    .with_config_file(path)
                    .run(shutdown)
                    .await
            }
            Command::Reload(args) => {
                println!("{}", reload::send(&args).await?);
                Ok(())
            }
            Command::Demo(args) => demo::run(args, shutdown).await,
            Command::Simulate(args) => simulator::run_cli(args, shutdown).await,
            Command::Healthcheck(args) => {
                healthcheck::check(&args.url).await?;
                println!("ready");
                Ok(())
            }
            Command::CheckConfig(_) => unreachable!("handled above"),
        }
    })
}
