use clap::Parser;
use palisade::cli::{Cli, Command, SlashingProtectionCommand};
use tracing_subscriber::EnvFilter;

fn main() -> std::process::ExitCode {
    palisade::process::disable_core_dumps();
    let cli = Cli::parse();
    let filter = EnvFilter::try_new(&cli.log_level).unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if cli.log_format == "json" {
        logs.json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init();
    } else {
        logs.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => palisade::serve::run(*args).await,
            Command::SlashingProtection(SlashingProtectionCommand::Import {
                database_url,
                from,
                network,
                genesis_validators_root,
            }) => palisade::commands::import(&database_url, &from, network.as_deref(), genesis_validators_root).await,
            Command::SlashingProtection(SlashingProtectionCommand::Repair(args)) => {
                palisade::commands::repair(&args).await
            }
            Command::SlashingProtection(SlashingProtectionCommand::HighWatermark {
                database_url,
                slot,
                epoch,
                clear,
                pubkey,
            }) => palisade::commands::high_watermark(&database_url, slot.zip(epoch), clear, &pubkey).await,
            Command::SlashingProtection(SlashingProtectionCommand::Export {
                database_url,
                to,
                pubkey,
            }) => palisade::commands::export(&database_url, &to, &pubkey).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
