//! Checking the compiler against schemas with labelled instances (the JSONSchemaBench layout:
//! `{"schema": ..., "tests": [{"valid": bool, "data": ...}, ...]}`).
//!
//! For each schema: does it compile, how long did that take, and does the automaton agree with
//! the labels: every valid instance, written in the canonical layout, accepted; every invalid one
//! rejected. An accepted invalid instance would be a soundness bug, so it is reported apart.

use std::path::Path;
use std::time::Instant;

use serde_json::Value;

use super::{JsonSchema, JsonSchemaConfig};
use crate::ControllerError;

/// One schema and its labelled instances.
#[derive(Debug, Clone)]
pub struct SuiteCase {
    pub name: String,
    pub schema: Value,
    pub tests: Vec<(bool, Value)>,
}

impl SuiteCase {
    /// Reads one file of the suite.
    pub fn load(path: &Path) -> Result<SuiteCase, ControllerError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ControllerError::Input(format!("cannot read {}: {e}", path.display())))?;
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| ControllerError::Input(format!("{} is not JSON: {e}", path.display())))?;
        let schema = v
            .get("schema")
            .cloned()
            .ok_or_else(|| ControllerError::Input(format!("{}: no `schema` field", path.display())))?;
        let tests = v
            .get("tests")
            .and_then(Value::as_array)
            .map(|t| {
                t.iter()
                    .filter_map(|x| Some((x.get("valid")?.as_bool()?, x.get("data")?.clone())))
                    .collect()
            })
            .unwrap_or_default();
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(SuiteCase { name, schema, tests })
    }
}

/// What checking one case found.
#[derive(Debug, Clone)]
pub struct CaseReport {
    pub name: String,
    /// The compile error, if any.
    pub error: Option<String>,
    pub compile_secs: f64,
    pub states: usize,
    pub valid: usize,
    pub valid_accepted: usize,
    pub invalid: usize,
    pub invalid_rejected: usize,
    /// Canonical texts of invalid instances the automaton accepted (soundness failures).
    pub unsound: Vec<String>,
    /// Canonical texts of valid instances the automaton rejected.
    pub rejected: Vec<String>,
    /// The compiled controller, when compilation succeeded.
    pub compiled: Option<JsonSchema>,
}

impl CaseReport {
    /// Whether every labelled instance agrees.
    pub fn agrees(&self) -> bool {
        self.error.is_none() && self.valid == self.valid_accepted && self.invalid == self.invalid_rejected
    }
}

/// Compiles a case and checks its instances.
pub fn check_case(case: &SuiteCase, config: &JsonSchemaConfig) -> CaseReport {
    let t = Instant::now();
    let compiled = JsonSchema::with_config(&case.schema, config.clone());
    let compile_secs = t.elapsed().as_secs_f64();
    let mut r = CaseReport {
        name: case.name.clone(),
        error: None,
        compile_secs,
        states: 0,
        valid: 0,
        valid_accepted: 0,
        invalid: 0,
        invalid_rejected: 0,
        unsound: Vec::new(),
        rejected: Vec::new(),
        compiled: None,
    };
    let js = match compiled {
        Ok(js) => js,
        Err(e) => {
            r.error = Some(e.to_string());
            return r;
        }
    };
    r.states = js.dfa().num_states();
    for (valid, data) in &case.tests {
        let text = js.canonical(data);
        let accepted = js.accepts(&text);
        if *valid {
            r.valid += 1;
            r.valid_accepted += usize::from(accepted);
            if !accepted {
                r.rejected.push(text);
            }
        } else {
            r.invalid += 1;
            if accepted {
                r.unsound.push(text);
            } else {
                r.invalid_rejected += 1;
            }
        }
    }
    r.compiled = Some(js);
    r
}
