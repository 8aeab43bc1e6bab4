//! Where a compiled schema's automaton is not exact.
//!
//! The automaton is exact on the canonical universe (values nested at most the depth limits,
//! numbers with at most 15 integer digits) except in two ways:
//!
//! * **over-approximations**, which accept documents the schema rejects: `uniqueItems` over items
//!   from an unbounded set, `maxLength`/`maxItems`/`maxProperties` above
//!   [`Limits::json_max_counted`](crate::Limits::json_max_counted) (counting saturates), and
//!   keys the schema does not name (an automaton cannot remember which free keys it wrote, so
//!   one may repeat). The compiler notes each where it builds it.
//! * **under-approximations**, which reject documents the schema accepts: each `format` is a
//!   sound subset of its format (no 29 February, a plain subset of emails and URIs).
//!
//! Under a negation (`not`, the other branches of a `oneOf`, the failing side of an `if`, items
//! that do not match `contains`) an under-approximation becomes an over-approximation; the walk
//! here finds the formats in such places. Together these list every place where the automaton
//! may accept an invalid document; the output check catches those documents and generation
//! redraws them.

use std::collections::HashSet;

use serde_json::Value;

use super::{compile, leaf};

/// One place where the automaton may accept a document the schema rejects.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Approximation {
    /// The keyword responsible, or `free value` where the schema leaves a value unconstrained
    /// (its objects have free keys).
    pub keyword: String,
    /// The JSON pointer of the subschema holding it.
    pub pointer: String,
    /// What the automaton does there.
    pub reason: String,
}

impl std::fmt::Display for Approximation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} at {}: {}", self.keyword, self.pointer, self.reason)
    }
}

/// The `format` keywords under a negation: there the automaton's subset of the format turns
/// into a superset of what the schema allows.
pub(crate) fn negated_formats(root: &Value) -> Vec<Approximation> {
    let mut w = Walk {
        root,
        seen: HashSet::new(),
        out: Vec::new(),
    };
    w.visit(root, "#", false);
    w.out
}

struct Walk<'a> {
    root: &'a Value,
    seen: HashSet<(String, bool)>,
    out: Vec<Approximation>,
}

impl<'a> Walk<'a> {
    /// `negated`: the subschema's automaton is complemented an odd number of times on the way.
    fn visit(&mut self, v: &Value, ptr: &str, negated: bool) {
        let Value::Object(m) = v else { return };
        if !self.seen.insert((ptr.to_string(), negated)) {
            return;
        }
        if let Some(f) = m.get("format").and_then(Value::as_str) {
            if negated && leaf::format_regex(f).is_some() {
                self.out.push(Approximation {
                    keyword: "format".into(),
                    pointer: ptr.into(),
                    reason: format!(
                        "under a negation: the automaton's subset of {f:?} leaves out valid strings, which the negation then admits"
                    ),
                });
            }
        }
        let child = |k: &str| format!("{ptr}/{}", k.replace('~', "~0").replace('/', "~1"));
        for (k, x) in m {
            match k.as_str() {
                "not" => self.visit(x, &child(k), !negated),
                // Both polarities: the other branches of `oneOf` and the `if` condition are also
                // complemented; `contains` counts the items that do not match.
                "oneOf" | "if" | "contains" => {
                    self.each(x, &child(k), negated);
                    self.each(x, &child(k), !negated);
                }
                "properties" | "patternProperties" | "dependentSchemas" | "dependencies" => {
                    if let Value::Object(o) = x {
                        for (name, s) in o {
                            let p = format!("{}/{}", child(k), name.replace('~', "~0").replace('/', "~1"));
                            self.visit(s, &p, negated);
                        }
                    }
                }
                "allOf"
                | "anyOf"
                | "prefixItems"
                | "items"
                | "additionalItems"
                | "additionalProperties"
                | "propertyNames"
                | "then"
                | "else" => self.each(x, &child(k), negated),
                "$ref" => {
                    if let Some((target, p)) = x.as_str().and_then(|r| self.resolve(r)) {
                        self.visit(target, &p, negated);
                    }
                }
                _ => {}
            }
        }
    }

    /// A subschema or an array of subschemas.
    fn each(&mut self, x: &Value, ptr: &str, negated: bool) {
        match x {
            Value::Array(a) => {
                for (i, s) in a.iter().enumerate() {
                    self.visit(s, &format!("{ptr}/{i}"), negated);
                }
            }
            s => self.visit(s, ptr, negated),
        }
    }

    /// A local `$ref` target, as the compiler resolves it.
    fn resolve(&self, reference: &str) -> Option<(&'a Value, String)> {
        let fragment = reference.split_once('#').map_or("", |(_, f)| f);
        if fragment.is_empty() {
            return Some((self.root, "#".into()));
        }
        if !fragment.starts_with('/') {
            return compile::find_anchor(self.root, fragment, "#");
        }
        let decoded = compile::percent_decode(fragment);
        self.root.pointer(&decoded).map(|t| (t, format!("#{decoded}")))
    }
}
