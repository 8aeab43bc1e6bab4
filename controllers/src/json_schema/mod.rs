//! The `JsonSchema` controller: every output is a JSON document valid under a JSON Schema.
//!
//! The schema (drafts 4, 6, 7, 2019-09, 2020-12) is compiled **by structure** into one byte
//! automaton (a [`Dfa`] of the byte-DFA layer, [`crate::dfa`]) that accepts exactly the valid documents in a canonical layout (compact, object
//! keys in schema order, see [`JsonSchema::canonical`]); the stack lifts it to tokens and the
//! projection then picks, at every denoising step, the best-scoring token sequence it accepts. No
//! regex strings are concatenated: `allOf` is a real intersection, `not` a complement, `oneOf`
//! an "exactly one" product (see [`compile`] for how each keyword is built).
//!
//! Every returned document is also validated by the independent `jsonschema` crate (formats
//! asserted), so the guarantee does not rest on the compiler alone.
//!
//! **Coverage.** `type` (unions too), `enum`, `const`, `properties`, `required`,
//! `additionalProperties`, `patternProperties`, `propertyNames`, `minProperties`,
//! `maxProperties`, `dependentRequired`, `dependentSchemas`, `dependencies`, `items`,
//! `prefixItems`, `additionalItems`, `minItems`, `maxItems`, `contains`, `minContains`,
//! `maxContains`, `uniqueItems` (exact when items come from a small finite set, otherwise
//! enforced by validating the output), `allOf`, `anyOf`, `oneOf`, `not`, `if`/`then`/`else`,
//! local `$ref` with `$defs`/`definitions` and recursion (unrolled to
//! [`Limits::json_depth`]), `minLength`, `maxLength`, `pattern` (ECMA-262 `\d`/`\w`
//! semantics), `format` (date-time, date, time, duration, email, hostname, ipv4, ipv6, uuid, uri
//! and the other standard names), `minimum`, `maximum`, `exclusiveMinimum`, `exclusiveMaximum`
//! (number and draft-4 boolean forms), `multipleOf`. Annotations are accepted. Vocabulary
//! keywords that are not implemented (`unevaluatedProperties`, `$dynamicRef`, ...) are a compile
//! error naming the keyword and its JSON pointer; keywords outside every vocabulary are
//! annotations by the specification and are accepted.
//!
//! **Canonical layout.** Every JSON value has exactly one accepted text: strings escaped as
//! `serde_json` escapes them (any character, control characters as `\n` or `\u00xx`), numbers
//! without exponent or trailing zeros (`3.0` is `3`, `1e-7` is `0.0000001`), keys in the schema's
//! order. Because each value has one text, `not`, `oneOf` and `if` complement exactly: the set
//! of all JSON texts they take the complement in writes nothing a typed automaton would miss.
//!
//! **Where it is not exact.** The automaton accepts only valid documents except at the places
//! [`JsonSchema::approximations`] lists (see [`exactness`]): repeated keys the schema does not
//! name, `uniqueItems` over unbounded items, `maxLength`/`maxItems`/`maxProperties` above
//! [`Limits::json_max_counted`], a `format` under a negation. The output check catches those
//! documents and generation redraws them. Elsewhere it accepts a subset of the valid documents:
//! values nested at most [`Limits::json_depth`] levels (free values [`Limits::json_any_depth`]),
//! integer parts of at most 15 digits, no negative zero, and for each `format` a plain subset
//! (ASCII emails and URIs, ...). [`differential`] tests both claims against the validator.
//!
//! ```
//! use diffusion_lm_controllers::JsonSchema;
//! let schema = serde_json::json!({
//!     "type": "object",
//!     "properties": {"name": {"type": "string", "maxLength": 20}, "stars": {"type": "integer", "minimum": 1, "maximum": 5}},
//!     "required": ["name", "stars"],
//!     "additionalProperties": false
//! });
//! let js = JsonSchema::new(&schema).unwrap();
//! assert!(js.accepts(r#"{"name":"The Eagle","stars":4}"#));
//! assert!(!js.accepts(r#"{"name":"The Eagle","stars":6}"#));
//! assert!(!js.accepts(r#"{"stars":4,"name":"The Eagle"}"#)); // not the canonical key order
//! // Unsupported keywords and unsatisfiable schemas are errors that say where.
//! let e = JsonSchema::new(&serde_json::json!({"unevaluatedProperties": false})).unwrap_err();
//! assert!(e.to_string().contains("unevaluatedProperties"));
//! assert!(JsonSchema::new(&serde_json::json!({"type": "integer", "minimum": 5, "maximum": 1})).is_err());
//! ```

pub mod compile;
pub mod differential;
pub mod exactness;
pub mod leaf;
pub mod suite;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use diffusion_lm::steer::TokenAutomaton;
use diffusion_lm::steer::{CheckError, Constraint, ConstraintContext, Restriction};
use diffusion_lm::{Error, TextTokenizer};
use serde_json::Value;

pub use self::exactness::Approximation;
use crate::dfa::Dfa;
use crate::{ControllerError, Limits};

/// How documents are laid out. The automaton accepts exactly one layout, so the model spends its
/// tokens on content, not on choosing whitespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Layout {
    /// No whitespace: `{"a":1,"b":[2,3]}`.
    #[default]
    Compact,
    /// Objects and arrays of the first `max_levels` nesting levels one member per line, indented
    /// by `indent` spaces per level, `": "` after keys; deeper containers, free-form values and
    /// `enum`/`const` literals compact.
    Pretty { indent: usize, max_levels: usize },
}

/// Limits and options of the compilation.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct JsonSchemaConfig {
    /// Size, state and depth limits (only the `json_` fields are read).
    pub limits: Limits,
    /// Document layout (compact by default).
    pub layout: Layout,
    /// Treat `format` as an annotation in the automaton (the output check still asserts it).
    pub ignore_formats: bool,
}

/// The JSON Schema controller.
#[derive(Clone)]
pub struct JsonSchema {
    schema: Value,
    dfa: Arc<Dfa>,
    validator: Arc<jsonschema::Validator>,
    rank: Arc<HashMap<String, usize>>,
    approximations: Vec<Approximation>,
    config: JsonSchemaConfig,
}

impl std::fmt::Debug for JsonSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsonSchema")
            .field("states", &self.dfa.num_states())
            .field("approximations", &self.approximations)
            .finish()
    }
}

impl JsonSchema {
    /// Compiles `schema` with the default limits.
    pub fn new(schema: &Value) -> Result<Self, ControllerError> {
        Self::with_config(schema, JsonSchemaConfig::default())
    }

    /// Parses and compiles a schema given as JSON text.
    pub fn from_json(text: &str) -> Result<Self, ControllerError> {
        let v: Value = serde_json::from_str(text)
            .map_err(|e| ControllerError::Input(format!("the schema is not valid JSON: {e}")))?;
        Self::new(&v)
    }

    /// Reads, parses and compiles a schema file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, ControllerError> {
        Self::from_file_with_config(path, JsonSchemaConfig::default())
    }

    /// Reads, parses and compiles a schema file with explicit options.
    pub fn from_file_with_config(path: impl AsRef<Path>, config: JsonSchemaConfig) -> Result<Self, ControllerError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| ControllerError::Input(format!("cannot read schema {}: {e}", path.display())))?;
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| ControllerError::Input(format!("schema {} is not valid JSON: {e}", path.display())))?;
        Self::with_config(&v, config)
    }

    /// Compiles `schema` with explicit limits.
    pub fn with_config(schema: &Value, config: JsonSchemaConfig) -> Result<Self, ControllerError> {
        let rank = compile::property_rank(schema);
        let (dfa, mut approximations) = {
            let mut c = compile::Compiler::new(schema, &config, &rank);
            let d = c.compile_root()?;
            (d, std::mem::take(&mut c.approximations))
        };
        if !config.ignore_formats {
            approximations.extend(exactness::negated_formats(schema));
        }
        let validator = jsonschema::options()
            .should_validate_formats(true)
            .build(schema)
            .map_err(|e| compile::err("#", format!("invalid schema: {e}")))?;
        if dfa.is_empty() {
            return Err(compile::err(
                "#",
                format!(
                    "no document satisfies this schema (nesting at most {} levels)",
                    config.limits.json_depth
                ),
            ));
        }
        Ok(JsonSchema {
            schema: schema.clone(),
            dfa: Arc::new(dfa),
            validator: Arc::new(validator),
            rank: Arc::new(rank),
            approximations,
            config,
        })
    }

    pub fn schema(&self) -> &Value {
        &self.schema
    }

    /// The options it was compiled with.
    pub fn config(&self) -> &JsonSchemaConfig {
        &self.config
    }

    /// The compiled byte automaton.
    pub fn dfa(&self) -> &Dfa {
        &self.dfa
    }

    /// Where the automaton is not exact: the places where it may accept a document the schema
    /// rejects (see [`exactness`]). Only the output check catches such documents, and generation
    /// redraws them ([`diffusion_lm::Sample::redraws`] counts it). Empty when the automaton is
    /// exact within the depth limits and the documented sound subsets.
    pub fn approximations(&self) -> &[Approximation] {
        &self.approximations
    }

    /// Whether the automaton accepts only valid documents (no [`Self::approximations`]).
    pub fn is_exact(&self) -> bool {
        self.approximations.is_empty()
    }

    /// Whether the automaton accepts `text` exactly as written.
    pub fn accepts(&self, text: &str) -> bool {
        self.dfa.accepts(text.as_bytes())
    }

    /// `value` in the canonical compact layout: object keys in the schema's order (the order in
    /// which names first appear under `properties`/`required`), other keys after them in their
    /// own order. (For [`Layout::Pretty`] this is the content before whitespace is added.)
    pub fn canonical(&self, value: &Value) -> String {
        let mut out = String::new();
        compile::write_canonical(value, &self.rank, compile::point_zero(&self.schema), &mut out);
        out
    }

    /// Validates a document with the independent validator.
    pub fn validate(&self, value: &Value) -> Result<(), String> {
        let errors: Vec<String> = self
            .validator
            .iter_errors(value)
            .take(3)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }

    /// The keywords of the schema that `value` violates (`maxLength`, `oneOf`, ...), with the
    /// validator's messages; empty when `value` is valid. (At most 8.)
    pub fn violations(&self, value: &Value) -> Vec<(String, String)> {
        self.validator
            .iter_errors(value)
            .take(8)
            .map(|e| {
                (
                    e.kind().keyword().to_string(),
                    format!("{} at {}", e, e.instance_path()),
                )
            })
            .collect()
    }

    /// The independent check of a generated text: it parses as JSON without duplicate keys and
    /// validates. (Keys the schema does not name are free strings; an automaton cannot remember
    /// which it has already written, so a repeated one is caught here and the sample redrawn.)
    pub fn check_text(&self, text: &str) -> Result<Value, String> {
        let v: UniqueKeys =
            serde_json::from_str(text).map_err(|e| format!("{text} is not JSON without repeated keys: {e}"))?;
        self.validate(&v.0).map_err(|e| format!("{text} is invalid: {e}"))?;
        Ok(v.0)
    }

    /// The token automaton of the schema over `ctx`'s vocabulary.
    pub fn token_automaton(&self, ctx: &ConstraintContext) -> diffusion_lm::Result<TokenAutomaton> {
        self.dfa
            .token_automaton(ctx.index, self.config.limits.json_token_states)
            .map_err(|e| Error::Constraint(format!("JSON Schema: {e}")))
    }
}

/// A JSON value whose objects have no repeated key.
struct UniqueKeys(Value);

impl<'de> serde::Deserialize<'de> for UniqueKeys {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = UniqueKeys;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_bool<E>(self, v: bool) -> Result<UniqueKeys, E> {
                Ok(UniqueKeys(Value::Bool(v)))
            }
            fn visit_i64<E>(self, v: i64) -> Result<UniqueKeys, E> {
                Ok(UniqueKeys(v.into()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<UniqueKeys, E> {
                Ok(UniqueKeys(v.into()))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<UniqueKeys, E> {
                serde_json::Number::from_f64(v)
                    .map(|n| UniqueKeys(Value::Number(n)))
                    .ok_or_else(|| E::custom("a number that is not finite"))
            }
            fn visit_str<E>(self, v: &str) -> Result<UniqueKeys, E> {
                Ok(UniqueKeys(Value::String(v.to_string())))
            }
            fn visit_unit<E>(self) -> Result<UniqueKeys, E> {
                Ok(UniqueKeys(Value::Null))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<UniqueKeys, A::Error> {
                let mut out = Vec::new();
                while let Some(UniqueKeys(x)) = a.next_element()? {
                    out.push(x);
                }
                Ok(UniqueKeys(Value::Array(out)))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut a: A) -> Result<UniqueKeys, A::Error> {
                let mut out = serde_json::Map::new();
                while let Some(k) = a.next_key::<String>()? {
                    let UniqueKeys(x) = a.next_value()?;
                    if out.contains_key(&k) {
                        return Err(serde::de::Error::custom(format!("repeated key {k:?}")));
                    }
                    out.insert(k, x);
                }
                Ok(UniqueKeys(Value::Object(out)))
            }
        }
        d.deserialize_any(V)
    }
}

impl Constraint for JsonSchema {
    fn name(&self) -> String {
        "JSON Schema".to_string()
    }

    fn restrictions(&self, ctx: &ConstraintContext) -> diffusion_lm::Result<Vec<Restriction>> {
        Ok(vec![Restriction::Automaton(self.token_automaton(ctx)?)])
    }

    fn check(&self, text: &str, _ids: &[u32], _tok: &TextTokenizer) -> Result<(), CheckError> {
        self.check_text(text).map(|_| ()).map_err(CheckError::new)
    }
}
