//! Placeholder until the load generator lands.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {}
pub async fn run(_args: BenchArgs) -> anyhow::Result<()> {
    anyhow::bail!("not built yet")
}
