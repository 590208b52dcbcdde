//! `fleetcore plan`, `fleetcore apply` and `fleetcore destroy`: Terraform-syntax stacks
//! (`fleetcore-stack`) against a running server, signed with credentials found as the aws CLI
//! finds them.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use fleetcore_api::sigv4::Credentials;
use fleetcore_identity::AdminCredentials;
use fleetcore_stack::resources::Action;
use fleetcore_stack::{Api, HttpRequest, HttpResponse, Stack, Transport, VarInputs};
use hyper::http::{HeaderMap, HeaderName, HeaderValue};

use crate::cli::client::ApiClient;

/// What `plan`, `apply` and `destroy` share: the configuration, its variables and the server.
#[derive(clap::Args, Debug, Clone)]
pub struct StackArgs {
    /// A `.tf` file, or a folder whose `*.tf` files make the stack. The state file
    /// (`fleetcore.tfstate.json`), `terraform.tfvars` and `*.auto.tfvars` are looked for in
    /// that folder.
    #[arg(default_value = ".", value_name = "PATH")]
    pub path: PathBuf,
    /// Sets a variable: `-var name=value` (repeatable; wins over .tfvars files). A value that
    /// reads as an HCL number, list or map is taken as one, anything else as a string.
    #[arg(long = "var", value_name = "NAME=VALUE")]
    pub vars: Vec<String>,
    /// Reads variables from a `.tfvars` file (repeatable; after terraform.tfvars and
    /// *.auto.tfvars, before -var).
    #[arg(long = "var-file", value_name = "FILE")]
    pub var_files: Vec<PathBuf>,
    /// The server's HTTP API.
    #[arg(
        long,
        env = "FLEETCORE_ENDPOINT_URL",
        default_value = "http://127.0.0.1:8080",
        value_name = "URL"
    )]
    pub endpoint_url: String,
    /// Sign with the admin credentials in this data folder's `credentials` file. Without it:
    /// AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, then the shared credentials file
    /// (AWS_SHARED_CREDENTIALS_FILE or ~/.aws/credentials, profile --profile / AWS_PROFILE /
    /// default), then ./fleetcore-data.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// The profile of the shared credentials file.
    #[arg(long, env = "AWS_PROFILE")]
    pub profile: Option<String>,
    /// Region of the signature scope.
    #[arg(long, env = "AWS_REGION", default_value = "us-east-1")]
    pub region: String,
}

/// `apply` and `destroy`: the shared arguments and the approval.
#[derive(clap::Args, Debug, Clone)]
pub struct ChangeArgs {
    #[command(flatten)]
    pub stack: StackArgs,
    /// Skips the question before changing anything.
    #[arg(long)]
    pub auto_approve: bool,
}

/// Terraform spells long options with one dash (`-var`, `-var-file`, `-auto-approve`); clap
/// wants two. Rewrites them for `plan`, `apply` and `destroy`.
pub fn terraform_style_args(args: Vec<String>) -> Vec<String> {
    let is_stack = args
        .get(1)
        .is_some_and(|c| ["plan", "apply", "destroy"].contains(&c.as_str()));
    if !is_stack {
        return args;
    }
    args.into_iter()
        .map(|a| {
            for option in ["-var-file", "-var", "-auto-approve", "-endpoint-url"] {
                if a == option || a.starts_with(&format!("{option}=")) {
                    return format!("-{a}");
                }
            }
            a
        })
        .collect()
}

/// `fleetcore plan`.
pub async fn plan(args: StackArgs) -> anyhow::Result<()> {
    let (stack, api) = open(&args)?;
    let mut state = stack.state()?;
    refresh(&stack, &api, &mut state).await?;
    let plan = stack.plan(&state).await?;
    print!("{}", fleetcore_stack::plan::render(&plan));
    Ok(())
}

/// `fleetcore apply`.
pub async fn apply(args: ChangeArgs) -> anyhow::Result<()> {
    let (stack, api) = open(&args.stack)?;
    let mut state = stack.state()?;
    refresh(&stack, &api, &mut state).await?;
    let plan = stack.plan(&state).await?;
    print!("{}", fleetcore_stack::plan::render(&plan));
    if plan.is_empty() {
        print_outputs(&plan.outputs);
        return Ok(());
    }
    if !args.auto_approve && !approved("apply these changes")? {
        bail!("apply cancelled");
    }
    let mut progress = |address: &str, action: &Action| {
        let verb = match action {
            Action::Create => "creating",
            Action::Update(_) => "updating",
            Action::Replace(_) => "replacing",
            Action::Delete => "deleting",
            Action::NoOp => return,
        };
        println!("{address}: {verb}...");
    };
    let done = stack.apply(&api, &mut state, &mut progress).await?;
    let count = |f: fn(&Action) -> bool| done.changes.iter().filter(|c| f(&c.action)).count();
    let replaced = count(|a| matches!(a, Action::Replace(_)));
    println!(
        "\nApply complete: {} added, {} changed, {} destroyed. State: {}",
        count(|a| *a == Action::Create) + replaced,
        count(|a| matches!(a, Action::Update(_))),
        plan.changes
            .iter()
            .filter(|c| c.action == Action::Delete)
            .count()
            + replaced,
        state.path().display()
    );
    print_outputs(&done.outputs);
    Ok(())
}

/// `fleetcore destroy`.
pub async fn destroy(args: ChangeArgs) -> anyhow::Result<()> {
    let (stack, api) = open(&args.stack)?;
    let mut state = stack.state()?;
    refresh(&stack, &api, &mut state).await?;
    if state.resources.is_empty() {
        println!("No changes. Nothing this stack made exists.");
        return Ok(());
    }
    for r in state.resources.iter().rev() {
        println!("  - {}", r.address);
    }
    println!(
        "\nPlan: 0 to add, 0 to change, {} to destroy.",
        state.resources.len()
    );
    if !args.auto_approve && !approved("destroy these resources")? {
        bail!("destroy cancelled");
    }
    let mut progress = |address: &str| println!("{address}: deleting...");
    fleetcore_stack::destroy(&api, &mut state, &mut progress).await?;
    println!("\nDestroy complete.");
    Ok(())
}

fn open(args: &StackArgs) -> anyhow::Result<(Stack, Api)> {
    let inputs = VarInputs {
        files: args.var_files.clone(),
        vars: args
            .vars
            .iter()
            .map(|v| fleetcore_stack::parse_var(v))
            .collect::<Result<_, _>>()?,
    };
    let stack = Stack::load(&args.path, &inputs)?;
    let client = ApiClient::with_credentials(&args.endpoint_url, &args.region, credentials(args)?);
    let api = Api::new(Arc::new(SignedHttp(client)));
    Ok((stack, api))
}

async fn refresh(
    stack: &Stack,
    api: &Api,
    state: &mut fleetcore_stack::State,
) -> anyhow::Result<()> {
    let found = stack.refresh(api, state).await?;
    for address in found.gone {
        println!("note: {address} is no longer on the server; it will be created again");
    }
    for (address, paths) in found.drifted {
        println!(
            "note: {address} was changed outside the stack ({}); apply puts it back",
            paths.join(", ")
        );
    }
    Ok(())
}

fn print_outputs(outputs: &[(String, serde_json::Value)]) {
    if outputs.is_empty() {
        return;
    }
    println!("\nOutputs:");
    for (name, value) in outputs {
        println!("  {name} = {value}");
    }
}

fn approved(what: &str) -> anyhow::Result<bool> {
    print!("\nDo you want to {what}? Only 'yes' will be accepted: ");
    std::io::stdout().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(answer.trim() == "yes")
}

/// Credentials as the aws CLI finds them, with fleetcore's data folder as the last resort.
fn credentials(args: &StackArgs) -> anyhow::Result<Credentials> {
    if let Some(dir) = &args.data_dir {
        return data_dir_credentials(dir);
    }
    if let (Ok(id), Ok(secret)) = (
        std::env::var("AWS_ACCESS_KEY_ID"),
        std::env::var("AWS_SECRET_ACCESS_KEY"),
    ) {
        return Ok(Credentials {
            access_key_id: id,
            secret_access_key: secret,
        });
    }
    let shared = std::env::var_os("AWS_SHARED_CREDENTIALS_FILE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".aws/credentials")));
    let profile = args.profile.as_deref().unwrap_or("default");
    let from_file = shared
        .and_then(|p| std::fs::read_to_string(p).ok())
        .and_then(|text| AdminCredentials::parse_profile(&text, profile));
    if let Some(c) = from_file {
        return Ok(Credentials {
            access_key_id: c.access_key_id,
            secret_access_key: c.secret_access_key,
        });
    }
    data_dir_credentials(&PathBuf::from("fleetcore-data")).with_context(|| {
        "no credentials: set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, a profile in ~/.aws/credentials, or --data-dir of the server"
    })
}

/// The admin credentials in a server data folder's `credentials` file.
pub(crate) fn data_dir_credentials(dir: &std::path::Path) -> anyhow::Result<Credentials> {
    let path = fleetcore_identity::credentials::credentials_path(dir);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let c = AdminCredentials::parse(&text)
        .with_context(|| format!("{} has no [fleetcore] profile", path.display()))?;
    Ok(Credentials {
        access_key_id: c.access_key_id,
        secret_access_key: c.secret_access_key,
    })
}

/// The stack's transport: the CLI's signed hyper client.
pub(crate) struct SignedHttp(pub(crate) ApiClient);

#[async_trait::async_trait]
impl Transport for SignedHttp {
    async fn send(&self, request: HttpRequest) -> Result<HttpResponse, String> {
        let mut headers = HeaderMap::new();
        for (name, value) in &request.headers {
            let value = HeaderValue::from_str(value).map_err(|e| format!("header {name}: {e}"))?;
            headers.insert(HeaderName::from_static(name), value);
        }
        let response = self
            .0
            .send(
                request.service,
                request.method,
                &request.path_and_query,
                headers,
                request.body,
            )
            .await
            .map_err(|e| format!("{e:#}"))?;
        Ok(HttpResponse {
            status: response.status.as_u16(),
            error_type: response.error_type,
            body: response.body.to_vec(),
        })
    }
}
