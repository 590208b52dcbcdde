//! `lambda{functionArn, payload}`: invokes a function through core's `FunctionInvoker` seam.

use std::sync::Arc;

use fleetcore_core::FunctionInvoker;
use serde_json::Value as Json;

use super::payload::Payload;
use super::{DetectorAction, Effect, Run, Targets, needs, required_str};
use crate::expr::Expr;

struct Lambda {
    functions: Arc<dyn FunctionInvoker>,
    function_arn: String,
    payload: Payload,
}

pub(super) fn build(members: &Json, targets: &Targets) -> Result<Box<dyn DetectorAction>, String> {
    Ok(Box::new(Lambda {
        functions: needs(&targets.functions, "functions")?,
        function_arn: required_str(members, "functionArn")?.to_string(),
        payload: Payload::parse(members)?,
    }))
}

impl DetectorAction for Lambda {
    fn expressions(&self) -> Vec<&Expr> {
        self.payload.expressions()
    }

    fn run(&self, run: &mut Run<'_>) {
        let payload = self.payload.render(run).into_bytes();
        let functions = Arc::clone(&self.functions);
        let function = self.function_arn.clone();
        run.effects.push(Effect {
            action: "lambda",
            call: Box::pin(async move {
                match functions.invoke(&function, payload).await {
                    Ok(out) => match out.function_error {
                        None => Ok(()),
                        Some(kind) => Err(format!("the function failed ({kind})")),
                    },
                    Err(e) => Err(e.to_string()),
                }
            }),
        });
    }
}
