//! Wiring of the functions capability in `fleetcore serve` (the functions service and its
//! event source mappings), and `fleetcore function logs`.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use fleetcore_core::{AccountContext, KvStore};
use fleetcore_functions::api::LambdaState;
use fleetcore_functions::{Functions, FunctionsConfig, Mappings};
use fleetcore_identity::AdminCredentials;
use fleetcore_stream::Stream;

use crate::config::Settings;

/// Starts the functions service and the event source mappings.
/// Functions and event source mappings live in `shared` (the nodes' common tables with
/// PostgreSQL; `code_in_store` then keeps the packages there too); `node_id` is this node's
/// member name in the consumer groups of the event queue and the mappings.
pub async fn start(
    settings: &Settings,
    credentials: &AdminCredentials,
    (shared, code_in_store): (&Arc<dyn KvStore>, bool),
    node_id: &str,
    streams: &Arc<dyn Stream>,
) -> anyhow::Result<LambdaState> {
    // Functions call the API on loopback when it listens on every interface.
    let mut http = settings.http;
    if http.ip().is_unspecified() {
        http.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let functions = Functions::start(
        FunctionsConfig {
            dir: settings.data_dir.join("functions"),
            python: settings.functions_python.clone(),
            node: settings.functions_node.clone(),
            endpoint_url: format!("http://{http}"),
            account: AccountContext::new(&settings.region, &settings.account_id),
            access_key_id: credentials.access_key_id.clone(),
            secret_access_key: credentials.secret_access_key.clone(),
            default_concurrency: 8,
            event_queue: settings.functions_event_queue,
            code_in_store,
            consumer_owner: node_id.to_owned(),
        },
        Arc::clone(shared),
        Arc::clone(streams),
    )
    .await
    .context("starting the functions service")?;
    let mappings = Mappings::start(
        Arc::clone(&functions),
        Arc::clone(streams),
        Arc::clone(shared),
    )
    .context("starting the event source mappings")?;
    tracing::info!("functions started");
    Ok(LambdaState {
        functions,
        mappings,
    })
}

/// Functions.
#[derive(clap::Subcommand, Debug)]
pub enum FunctionCommand {
    /// Print a function's invocation logs (START / output / END / REPORT per invocation).
    Logs {
        /// The function's name.
        name: String,
        /// The server's data folder.
        #[arg(long, env = "FLEETCORE_DATA_DIR", default_value = "fleetcore-data")]
        data_dir: PathBuf,
    },
}

impl FunctionCommand {
    /// Runs the command.
    pub fn run(self) -> anyhow::Result<()> {
        match self {
            FunctionCommand::Logs { name, data_dir } => {
                fleetcore_functions::model::check_name(&name)?;
                let dir = data_dir.join("functions").join("logs");
                let mut found = false;
                for file in [format!("{name}.log.1"), format!("{name}.log")] {
                    let path = dir.join(file);
                    match std::fs::read(&path) {
                        Ok(bytes) => {
                            found = true;
                            std::io::Write::write_all(&mut std::io::stdout(), &bytes)?;
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => {
                            return Err(e).with_context(|| format!("reading {}", path.display()));
                        }
                    }
                }
                anyhow::ensure!(found, "no logs of function {name} in {}", dir.display());
                Ok(())
            }
        }
    }
}
