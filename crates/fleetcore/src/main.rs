//! The fleetcore binary: the command line, configuration, and the wiring of the capabilities
//! into one running server.

#[cfg(feature = "analytics")]
mod analytics;
mod auth;
mod bench;
mod cli;
mod cluster;
mod config;
mod console;
mod defender;
mod demo;
mod events;
mod functions;
mod notify;
mod observe;
mod open_files;
mod rules;
mod serve;
mod server_publish;
#[cfg(feature = "analytics")]
mod sql;
mod stack;
mod state;
mod streams;

use clap::{Parser, Subcommand};

/// fleetcore: the AWS IoT reference architecture as one self-hosted program.
///
/// Devices connect over MQTT (3.1.1 and 5.0; TCP, TLS with client certificates, WebSocket);
/// the control plane speaks the AWS wire APIs on one HTTP port.
#[derive(Parser, Debug)]
#[command(name = "fleetcore", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the server: MQTT listeners, the HTTP API, /health and /metrics.
    ///
    /// Every option can also be set in the TOML file given by --config (same name with `_`
    /// instead of `-`) or in an environment variable FLEETCORE_<NAME>. Flags win over the
    /// environment, which wins over the file.
    Serve(Box<config::ServeArgs>),
    /// Manage things in the registry (calls the server's API with its credentials file).
    #[command(subcommand)]
    Thing(cli::ThingCommand),
    /// Manage device certificates (calls the server's API with its credentials file).
    #[command(subcommand)]
    Cert(cli::CertCommand),
    /// Functions (Lambda): read a function's invocation logs.
    #[command(subcommand)]
    Function(functions::FunctionCommand),
    /// The whole platform in one command: a server on loopback, the reference stack applied,
    /// and a simulated fleet of mTLS devices; prints where to look and a live status line.
    /// Ctrl-C stops it.
    Demo(demo::DemoArgs),
    /// Show what `apply` would change: Terraform-syntax .tf files (a file or a folder)
    /// compared with what the stack's state file says was made, against a running server.
    Plan(stack::StackArgs),
    /// Create, update and delete resources so the server matches the .tf files (in dependency
    /// order, recorded in fleetcore.tfstate.json beside them). Asks first unless
    /// -auto-approve.
    Apply(stack::ChangeArgs),
    /// Delete everything the stack's state file records, dependents first.
    Destroy(stack::ChangeArgs),
    /// Load-test any MQTT broker: publishers, subscribers, rate, QoS; reports throughput,
    /// loss and latency percentiles.
    Bench(bench::BenchArgs),
    /// Run SQL over the datastores' Parquet files (IoT Analytics) or any Parquet folder;
    /// prints a table, CSV or JSON.
    #[cfg(feature = "analytics")]
    Sql(sql::SqlArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse_from(stack::terraform_style_args(std::env::args().collect()));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Serve(args) => {
            let settings = args.resolve()?;
            serve::init_serve_logging(
                &settings.log,
                &settings.account_id,
                settings.otlp_endpoint.is_some(),
            );
            match open_files::raise_to_hard_limit() {
                Ok(limit) => tracing::info!(limit, "open files"),
                Err(e) => tracing::warn!(error = %e, "cannot raise the open-files limit"),
            }
            runtime.block_on(serve::run(settings))
        }
        Command::Thing(command) => {
            serve::init_logging("warn");
            runtime.block_on(command.run())
        }
        Command::Cert(command) => {
            serve::init_logging("warn");
            runtime.block_on(command.run())
        }
        Command::Function(command) => command.run(),
        Command::Demo(args) => {
            serve::init_logging("warn");
            runtime.block_on(demo::run(args))
        }
        Command::Plan(args) => {
            serve::init_logging("warn");
            runtime.block_on(stack::plan(args))
        }
        Command::Apply(args) => {
            serve::init_logging("warn");
            runtime.block_on(stack::apply(args))
        }
        Command::Destroy(args) => {
            serve::init_logging("warn");
            runtime.block_on(stack::destroy(args))
        }
        Command::Bench(args) => {
            serve::init_logging("warn");
            if let Err(e) = open_files::raise_to_hard_limit() {
                tracing::warn!(error = %e, "cannot raise the open-files limit");
            }
            runtime.block_on(bench::run(args))
        }
        #[cfg(feature = "analytics")]
        Command::Sql(args) => {
            serve::init_logging("warn");
            runtime.block_on(args.run())
        }
    }
}
