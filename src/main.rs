//! The `wechat-token-server` binary: parse the command line, set up logging, run.

use std::io::Write;
use std::path::Path;
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
        let config = load_config(&args.config)?;
        // The files are read here too, so a wrong path or a key that does not match
        // the certificate is found before the server is started with them.
        if let Some(files) = &config.server.tls {
            wechat_token_server::server::Tls::load(files)
                .with_context(|| format!("invalid config {}", args.config.display()))?;
        }
        print_stdout(&config.to_masked_toml())?;
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
                let config = load_config(&path)?;
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

/// Loads the config file; an unreadable file is said as such, not as an invalid config.
fn load_config(path: &Path) -> anyhow::Result<Config> {
    Config::load(path).map_err(|e| match e {
        wechat_token_server::config::Error::Read { .. } => anyhow::Error::new(e),
        invalid => {
            anyhow::Error::new(invalid).context(format!("invalid config {}", path.display()))
        }
    })
}

/// Writes `text` to stdout. A reader that stopped reading (`check-config | head -1`)
/// is not an error: what it wanted was written. `print!` would panic there.
fn print_stdout(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(e).context("cannot write to stdout")
        }
        _ => Ok(()),
    }
}
