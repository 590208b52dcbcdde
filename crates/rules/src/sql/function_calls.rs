//! `aws_lambda(functionArn, inputJson)`: a synchronous call of a user function from a rule's
//! statement, through core's `FunctionInvoker` seam.
//!
//! Evaluation stays synchronous and borrow-only. A statement that calls functions is evaluated
//! in passes: a pass that meets a call whose result is not known yet notes it (its function
//! and its input) and goes on with Undefined; the noted calls are then made, concurrently, and
//! the statement evaluated again with their results. Each pass settles at least one more call,
//! so a statement with n calls needs at most n + 1 passes. A statement without any call is
//! evaluated once, exactly as before: it pays nothing for this.

use std::cell::RefCell;

use fleetcore_core::FunctionInvoker;
use serde_json::Value;

use super::eval::EvalError;
use super::value::Val;

/// A call a pass met whose result is not known yet.
struct Wanted {
    site: usize,
    function: String,
    input: Vec<u8>,
}

/// The results of one statement's `aws_lambda` calls on one message, by call site.
pub(crate) struct FunctionCalls {
    results: Vec<Option<Value>>,
    wanted: RefCell<Vec<Wanted>>,
    /// The first call of the pass that cannot be made (bad arguments).
    refused: RefCell<Option<EvalError>>,
}

impl FunctionCalls {
    /// No results yet for a statement with `sites` calls.
    pub(crate) fn new(sites: usize) -> FunctionCalls {
        FunctionCalls {
            results: vec![None; sites],
            wanted: RefCell::new(Vec::new()),
            refused: RefCell::new(None),
        }
    }

    /// The value of call `site` in this pass: its result, or Undefined while it is unknown (the
    /// call is then noted for [`FunctionCalls::settle`]).
    pub(crate) fn result<'a>(&self, site: usize, function: &Val<'_>, input: &Val<'_>) -> Val<'a> {
        if let Some(Some(value)) = self.results.get(site) {
            return Val::Own(value.clone());
        }
        // An argument may be Undefined only because another call has no result yet (a nested
        // call): it is refused once no other call is waiting.
        let waiting = !self.wanted.borrow().is_empty();
        let Some(Value::String(function)) = function.json() else {
            if !waiting {
                self.refuse(String::new(), "functionArn must be a string".into());
            }
            return Val::Undefined;
        };
        let Some(input) = input.json() else {
            if !waiting {
                self.refuse(
                    function.clone(),
                    "inputJson is Undefined or not JSON".into(),
                );
            }
            return Val::Undefined;
        };
        let mut wanted = self.wanted.borrow_mut();
        if !wanted.iter().any(|w| w.site == site) {
            wanted.push(Wanted {
                site,
                function: function.clone(),
                input: input.to_string().into_bytes(),
            });
        }
        Val::Undefined
    }

    fn refuse(&self, function: String, message: String) {
        self.refused
            .borrow_mut()
            .get_or_insert(EvalError::FunctionCall { function, message });
    }

    /// After a pass: `Ok(false)` when every call it met had its result (the pass's output is
    /// final); otherwise makes the calls noted and returns `Ok(true)` (evaluate again). A call
    /// that cannot be made or whose function fails is the statement's error.
    pub(crate) async fn settle(
        &mut self,
        invoker: Option<&dyn FunctionInvoker>,
    ) -> Result<bool, EvalError> {
        if let Some(refused) = self.refused.get_mut().take() {
            return Err(refused);
        }
        let wanted = std::mem::take(self.wanted.get_mut());
        if wanted.is_empty() {
            return Ok(false);
        }
        let Some(invoker) = invoker else {
            return Err(EvalError::FunctionCall {
                function: wanted[0].function.clone(),
                message: "the functions capability is not running".into(),
            });
        };
        let calls = wanted.into_iter().map(|w| async move {
            let output = invoker.invoke(&w.function, w.input).await;
            (w.site, w.function, output)
        });
        for (site, function, output) in futures_util::future::join_all(calls).await {
            let failed = |message: String| EvalError::FunctionCall {
                function: function.clone(),
                message,
            };
            let output = output.map_err(|e| failed(e.to_string()))?;
            if let Some(kind) = output.function_error {
                return Err(failed(format!(
                    "the function failed ({kind}): {}",
                    String::from_utf8_lossy(&output.payload)
                )));
            }
            let value = serde_json::from_slice(&output.payload)
                .map_err(|e| failed(format!("the function's result is not JSON: {e}")))?;
            if let Some(slot) = self.results.get_mut(site) {
                *slot = Some(value);
            }
        }
        Ok(true)
    }
}
