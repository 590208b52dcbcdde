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
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    // `mode` applies only when the file is created: an existing file keeps its own mode, which
    // for a private key may be world-readable.
    file.set_permissions(std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", path.display()))?;
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
        // Everything that can fail is looked up before anything is created: the CA, the
        // endpoint, the thing, the policy.
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
        std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
        write_file(&out.join("cert.pem"), certificate, 0o644)?;
        write_file(&out.join("private.key"), key, 0o600)?;
        write_file(&out.join("ca.pem"), &ca, 0o644)?;
        let file = |name: &str| shell_quote(&out.join(name).display().to_string());
        let (ca_file, cert_file, key_file) =
            (file("ca.pem"), file("cert.pem"), file("private.key"));
        println!("certificate {arn}");
        println!("files       {cert_file} {key_file} {ca_file}");
        println!(
            "try:\n  mosquitto_pub --cafile {ca_file} --cert {cert_file} --key {key_file} \\\n    -h {} -p {mqtts_port} -i {} -t {} -m '{{\"temperature\": 21}}'",
            shell_quote(&host),
            shell_quote(&thing),
            shell_quote(&format!("devices/{thing}/telemetry")),
        );
        Ok(())
    }
}

/// The CA that signed the server's certificate (and the new one): from the data folder when the
/// CLI runs beside the server, else from the server's public `/ca.pem`.
async fn ca_pem(client: &ApiClient, data_dir: &Path) -> anyhow::Result<String> {
    if let Ok(pem) = std::fs::read_to_string(data_dir.join("ca").join("ca.pem")) {
        return Ok(pem);
    }
    let pem = client
        .get_public("/ca.pem")
        .await
        .context("fetching the server's CA certificate (/ca.pem)")?;
    if !pem.contains("BEGIN CERTIFICATE") {
        bail!("the server's /ca.pem is not a PEM certificate");
    }
    Ok(pem)
}

/// Quotes `s` for a POSIX shell when it holds anything but plain path characters.
fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-:=@,+%".contains(&b))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::shell_quote;

    #[test]
    fn shell_quote_leaves_plain_paths_and_quotes_the_rest() {
        assert_eq!(shell_quote("/tmp/dev-1/ca.pem"), "/tmp/dev-1/ca.pem");
        assert_eq!(
            shell_quote("/tmp/my devices/ca.pem"),
            "'/tmp/my devices/ca.pem'"
        );
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }
}
