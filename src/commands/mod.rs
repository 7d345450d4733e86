//! The command line: `palisade serve` wires everything together; `palisade
//! slashing-protection ...` works on the database alone; `palisade keys ...` on key files.

pub mod cli;
pub mod config_file;
pub mod database;
pub mod keys;
pub mod reshare;
pub mod serve;
pub mod slashing_protection;

use cli::{Cli, Command, KeysCommand, SlashingProtectionCommand};

/// Runs the command the command line named.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve::run(*args).await,
        Command::SlashingProtection(SlashingProtectionCommand::Import {
            database,
            from,
            network,
            genesis_validators_root,
        }) => slashing_protection::import(&database, &from, network.as_deref(), genesis_validators_root).await,
        Command::SlashingProtection(SlashingProtectionCommand::Repair(args)) => {
            slashing_protection::repair(&args).await
        }
        Command::SlashingProtection(SlashingProtectionCommand::HighWatermark {
            database,
            slot,
            epoch,
            clear,
            pubkey,
        }) => slashing_protection::high_watermark(&database, slot.zip(epoch), clear, &pubkey).await,
        Command::SlashingProtection(SlashingProtectionCommand::Export { database, to, pubkey }) => {
            slashing_protection::export(&database, &to, &pubkey).await
        }
        Command::Keys(KeysCommand::Split(args)) => keys::split(&args),
        Command::Keys(KeysCommand::Combine(args)) => keys::combine(&args),
        Command::Keys(KeysCommand::RefreshDeal(args)) => keys::refresh_deal(&args),
        Command::Keys(KeysCommand::RefreshApply(args)) => keys::refresh_apply(&args),
        Command::Keys(KeysCommand::ReshareRecipient(args)) => reshare::recipient(&args),
        Command::Keys(KeysCommand::ReshareDeal(args)) => reshare::deal(&args),
        Command::Keys(KeysCommand::ReshareApply(args)) => reshare::apply(&args),
    }
}
