//! The real binary over real HTTP: signing vectors, bad input, slashing refusals, database
//! outages, admin and Key Manager endpoints, key loading, CLI commands.

mod admin;
mod bad_input;
mod keys_and_health;
mod processes;
mod protection;
mod vectors;

use std::time::Duration;

use serde_json::{Value, json};
use testkit::http::*;
use testkit::pg::PgCluster;
use testkit::server::{Palisade, run};

fn vectors(network: &str) -> Vec<Value> {
    std::fs::read_to_string(testkit::data_dir().join("signing-vectors/sample.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["network"] == network)
        .collect()
}
