//! `fleetcore cert issue --thing NAME --out DIR [--policy P]`: a ready-to-use device identity in
//! one command (CreateKeysAndCertificate, AttachThingPrincipal, AttachPolicy), written as PEM
//! files with a `mosquitto_pub` line that uses them.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use hyper::http::Method;
use serde_json::{Value, json};

use super::client::{ApiClient, EndpointArgs, label};

/// Manage device certificates.
#[derive(clap::Subcommand, Debug)]
pub enum CertCommand {
    /// Create an ACTIVE certificate and key for a thing, attach them (and a policy), and write
    /// `cert.pem`, `private.key` and `ca.pem` to DIR.
    Issue {
        /// The thing the certificate is for (must exist); also the MQTT client id to use.
        #[arg(long)]
        thing: String,
        /// Folder to write the files to (created if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// A policy to attach to the certificate.
        #[arg(long, value_name = "POLICY")]
        policy: Option<String>,
        /// The MQTT-over-TLS port printed in the example command.
        #[arg(long, default_value_t = 8883)]
        mqtts_port: u16,
        #[command(flatten)]
        endpoint: EndpointArgs,
    },
}

fn write_file(path: &Path, contents: &str, mode: u32) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(contents.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

fn text<'a>(v: &'a Value, pointer: &str) -> anyhow::Result<&'a str> {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .with_context(|| format!("the server's answer has no {pointer}"))
}

impl CertCommand {
    /// Runs the command.
    pub async fn run(self) -> anyhow::Result<()> {
        let CertCommand::Issue {
            thing,
            out,
            policy,
            mqtts_port,
            endpoint,
        } = self;
        let client = ApiClient::new(&endpoint)?;
        // Fail before creating anything if the thing or the policy does not exist.
        client
            .call(
                "iot",
                Method::GET,
                &format!("/things/{}", label(&thing)),
                &[],
                None,
            )
            .await
            .with_context(|| format!("looking up thing {thing}"))?;
        if let Some(p) = &policy {
            client
                .call(
                    "iot",
                    Method::GET,
                    &format!("/policies/{}", label(p)),
                    &[],
                    None,
                )
                .await
                .with_context(|| format!("looking up policy {p}"))?;
        }
        let created = client
            .call(
                "iot",
                Method::POST,
                "/keys-and-certificate?setAsActive=true",
                &[],
                None,
            )
            .await
            .context("creating the certificate")?;
        let arn = text(&created, "/certificateArn")?;
        let certificate = text(&created, "/certificatePem")?;
        let key = text(&created, "/keyPair/PrivateKey")?;
        client
            .call(
                "iot",
                Method::PUT,
                &format!("/things/{}/principals", label(&thing)),
                &[("x-amzn-principal", arn)],
                None,
            )
            .await
            .context("attaching the certificate to the thing")?;
        if let Some(p) = &policy {
            client
                .call(
                    "iot",
                    Method::PUT,
                    &format!("/target-policies/{}", label(p)),
                    &[],
                    Some(&json!({ "target": arn })),
                )
                .await
                .context("attaching the policy to the certificate")?;
        }
        let ca = ca_pem(&client, &endpoint.data_dir).await?;
        let host = client
            .call(
                "iot",
                Method::GET,
                "/endpoint?endpointType=iot%3AData-ATS",
                &[],
                None,
            )
            .await
            .ok()
            .and_then(|v| v["endpointAddress"].as_str().map(str::to_string))
            .unwrap_or_else(|| "localhost".into());

        std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
        write_file(&out.join("cert.pem"), certificate, 0o644)?;
        write_file(&out.join("private.key"), key, 0o600)?;
        write_file(&out.join("ca.pem"), &ca, 0o644)?;
        let dir = out.display();
        println!("certificate {arn}");
        println!("files       {dir}/cert.pem {dir}/private.key {dir}/ca.pem");
        println!(
            "try:\n  mosquitto_pub --cafile {dir}/ca.pem --cert {dir}/cert.pem --key {dir}/private.key \\\n    -h {host} -p {mqtts_port} -i {thing} -t devices/{thing}/telemetry -m '{{\"temperature\": 21}}'"
        );
        Ok(())
    }
}

/// The CA that signed the server's certificate (and the new one): from the data folder when the
/// CLI runs beside the server, else the first registered CA certificate.
async fn ca_pem(client: &ApiClient, data_dir: &Path) -> anyhow::Result<String> {
    if let Ok(pem) = std::fs::read_to_string(data_dir.join("ca").join("ca.pem")) {
        return Ok(pem);
    }
    let list = client
        .call("iot", Method::GET, "/cacertificates", &[], None)
        .await
        .context("listing CA certificates")?;
    let Some(id) = list
        .pointer("/certificates/0/certificateId")
        .and_then(Value::as_str)
    else {
        bail!("the server lists no CA certificate; copy ca/ca.pem from its data folder");
    };
    let described = client
        .call(
            "iot",
            Method::GET,
            &format!("/cacertificate/{}", label(id)),
            &[],
            None,
        )
        .await?;
    Ok(text(&described, "/certificateDescription/certificatePem")?.to_string())
}
