//! The command line: `palisade serve` wires everything together; `palisade
//! slashing-protection ...` works on the database alone.

pub mod cli;
pub mod serve;
pub mod slashing_protection;

use cli::{Cli, Command, SlashingProtectionCommand};

/// Runs the command the command line named.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve::run(*args).await,
        Command::SlashingProtection(SlashingProtectionCommand::Import {
            database_url,
            from,
            network,
            genesis_validators_root,
        }) => slashing_protection::import(&database_url, &from, network.as_deref(), genesis_validators_root).await,
        Command::SlashingProtection(SlashingProtectionCommand::Repair(args)) => {
            slashing_protection::repair(&args).await
        }
        Command::SlashingProtection(SlashingProtectionCommand::HighWatermark {
            database_url,
            slot,
            epoch,
            clear,
            pubkey,
        }) => slashing_protection::high_watermark(&database_url, slot.zip(epoch), clear, &pubkey).await,
        Command::SlashingProtection(SlashingProtectionCommand::Export {
            database_url,
            to,
            pubkey,
        }) => slashing_protection::export(&database_url, &to, &pubkey).await,
    }
}
