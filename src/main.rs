//! The `herald` binary: command line, logging, configuration, then [`herald::app::run`].

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use herald::telemetry::{self, LogFormat};

/// See [`herald::allocator`].
#[global_allocator]
static GLOBAL: herald::allocator::Allocator = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "herald",
    version,
    about = "XMPP component: presence events, push and MUC self-ping for any XMPP server"
)]
struct Cli {
    /// The configuration file (component.toml).
    #[arg(long, short, global = true, default_value = "component.toml")]
    config: PathBuf,
    /// Log line format on stderr; RUST_LOG sets the filter.
    #[arg(long, value_enum, default_value = "text", global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Validate the configuration, print every problem with its key, exit non-zero if any.
    CheckConfig,
    /// Inspect or re-queue the events a sink gave up on (run it while herald is stopped);
    /// without a subcommand it lists them.
    DeadLetters {
        #[command(subcommand)]
        action: Option<DeadLetterCommand>,
        /// Only this sink (its name, as listed); default: every sink.
        #[arg(long)]
        sink: Option<String>,
    },
}

#[derive(Subcommand)]
enum DeadLetterCommand {
    /// List dead letters with the answer that killed them.
    List,
    /// Queue dead letters again (all, or the given seq numbers); they are delivered at the next start.
    Requeue { seqs: Vec<u64> },
    /// Delete dead letters (all, or the given seq numbers).
    Purge { seqs: Vec<u64> },
}

fn main() -> ExitCode {
    herald::allocator::configure();
    let cli = Cli::parse();
    let settings = match herald::config::load(&cli.config) {
        Ok(s) => s,
        Err(problems) => {
            eprintln!(
                "{}: invalid configuration:\n{problems}",
                cli.config.display()
            );
            return ExitCode::from(2);
        }
    };
    match cli.command {
        Some(Command::CheckConfig) => {
            println!("{}: configuration is valid", cli.config.display());
            return ExitCode::SUCCESS;
        }
        Some(Command::DeadLetters { action, sink }) => {
            return dead_letters(&settings, action.unwrap_or(DeadLetterCommand::List), sink)
        }
        None => {}
    }
    telemetry::init(cli.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("herald: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(herald::app::run(settings, shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("herald: {e}");
            ExitCode::FAILURE
        }
    }
}

fn dead_letters(
    settings: &herald::config::Settings,
    action: DeadLetterCommand,
    sink: Option<String>,
) -> ExitCode {
    use herald::admin::DeadLetterAction;
    let some = |v: Vec<u64>| if v.is_empty() { None } else { Some(v) };
    let action = match action {
        DeadLetterCommand::List => DeadLetterAction::List,
        DeadLetterCommand::Requeue { seqs } => DeadLetterAction::Requeue(some(seqs)),
        DeadLetterCommand::Purge { seqs } => DeadLetterAction::Purge(some(seqs)),
    };
    let store = match herald::store::Store::open(
        &settings.store.path,
        settings.store.flush_interval.as_millis() as u64,
        settings.store.cache_bytes,
    ) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("herald: {e} (is herald still running? stop it first)");
            return ExitCode::FAILURE;
        }
    };
    let result = herald::admin::dead_letters(&store, sink.as_deref(), &action);
    let flushed = store.db_flush();
    match (result, flushed) {
        (Ok(report), Ok(())) => {
            print!("{report}");
            ExitCode::SUCCESS
        }
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("herald: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
    tracing::info!("shutdown requested");
}
