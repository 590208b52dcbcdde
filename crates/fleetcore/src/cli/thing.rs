//! `fleetcore thing create NAME [--type T] [--attr k=v]...`

use anyhow::{Context, bail};
use hyper::http::Method;
use serde_json::{Map, Value, json};

use super::client::{ApiClient, EndpointArgs, label};

/// Manage things in the registry.
#[derive(clap::Subcommand, Debug)]
pub enum ThingCommand {
    /// Create a thing (CreateThing); prints its ARN.
    Create {
        /// The thing name (letters, digits, `:`, `_`, `-`).
        name: String,
        /// Its thing type (must exist).
        #[arg(long = "type", value_name = "TYPE")]
        thing_type: Option<String>,
        /// An attribute, `key=value`; repeat for more.
        #[arg(long = "attr", value_name = "KEY=VALUE")]
        attributes: Vec<String>,
        #[command(flatten)]
        endpoint: EndpointArgs,
    },
}

fn attribute_map(pairs: &[String]) -> anyhow::Result<Map<String, Value>> {
    let mut map = Map::new();
    for pair in pairs {
        let Some((k, v)) = pair.split_once('=') else {
            bail!("--attr `{pair}`: expected KEY=VALUE");
        };
        if k.is_empty() {
            bail!("--attr `{pair}`: the key is empty");
        }
        map.insert(k.to_string(), Value::String(v.to_string()));
    }
    Ok(map)
}

impl ThingCommand {
    /// Runs the command.
    pub async fn run(self) -> anyhow::Result<()> {
        match self {
            ThingCommand::Create {
                name,
                thing_type,
                attributes,
                endpoint,
            } => {
                let client = ApiClient::new(&endpoint)?;
                let mut body = json!({});
                if let Some(t) = thing_type {
                    body["thingTypeName"] = json!(t);
                }
                let attributes = attribute_map(&attributes)?;
                if !attributes.is_empty() {
                    body["attributePayload"] = json!({ "attributes": attributes });
                }
                let answer = client
                    .call(
                        "iot",
                        Method::POST,
                        &format!("/things/{}", label(&name)),
                        &[],
                        Some(&body),
                    )
                    .await
                    .with_context(|| format!("creating thing {name}"))?;
                let arn = answer["thingArn"].as_str().unwrap_or_default();
                println!("{arn}");
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_parse_and_bad_ones_are_clear_errors() {
        let m = attribute_map(&["site=plant-7".into(), "line=".into()]).expect("parse");
        assert_eq!(m["site"], "plant-7");
        assert_eq!(m["line"], "");
        assert!(attribute_map(&["nokey".into()]).is_err());
        assert!(attribute_map(&["=v".into()]).is_err());
    }
}
