//! Schema → byte automaton, by structure.
//!
//! Each schema node becomes the exact set of its valid documents in the canonical layout, as a
//! minimal [`Dfa`]. Keywords of a node are a conjunction, so their automata are intersected;
//! `anyOf` is a union, `oneOf` an "exactly one" product, `not` a difference from the set of all
//! JSON values, `if`/`then`/`else` is `(if ∧ then) ∨ (¬if ∧ else)`. Objects and arrays are built
//! as layered NFAs (property slot or item index × count × the few bits dependencies need) whose
//! values are the automata of their subschemas, then determinised.
//!
//! **Property order.** Every object is written with its keys in one global order: the order in
//! which names first appear under `properties`/`required` in the schema document, then names the
//! schema never mentions. All branches combined at one object level (`allOf`, `anyOf`, `not`,
//! `$ref`, ...) see the same list of names, so set operations between them are exact.
//!
//! **Depth.** Nesting is bounded by [`Limits::json_depth`](crate::Limits::json_depth) (recursive
//! `$ref`s are unrolled that deep); values the schema leaves free are bounded by
//! [`Limits::json_any_depth`](crate::Limits::json_any_depth).

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};

use serde_json::{Map, Value};

use super::exactness::Approximation;
use super::leaf::{self, Decimal, NumberSpec};
use super::{JsonSchemaConfig, Layout};
use crate::dfa::{regex_dfa, union, Dfa, Frag, Nfa, RegexFailure, TooLarge};
use crate::ControllerError;

/// Keywords with a meaning this compiler implements.
pub const SUPPORTED: &[&str] = &[
    "type",
    "enum",
    "const",
    "properties",
    "required",
    "additionalProperties",
    "patternProperties",
    "propertyNames",
    "minProperties",
    "maxProperties",
    "dependentRequired",
    "dependentSchemas",
    "dependencies",
    "items",
    "prefixItems",
    "additionalItems",
    "minItems",
    "maxItems",
    "uniqueItems",
    "contains",
    "minContains",
    "maxContains",
    "allOf",
    "anyOf",
    "oneOf",
    "not",
    "if",
    "then",
    "else",
    "$ref",
    "$defs",
    "definitions",
    "minLength",
    "maxLength",
    "pattern",
    "format",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
];

/// Keywords of the JSON Schema vocabularies that constrain instances but are not implemented:
/// a schema using one fails to compile. (Keywords outside every vocabulary are annotations, as
/// the specification says, and are accepted.)
pub const UNSUPPORTED: &[&str] = &[
    "unevaluatedProperties",
    "unevaluatedItems",
    "$dynamicRef",
    "$recursiveRef",
    "extends",
    "disallow",
    "divisibleBy",
];

type R<T> = Result<T, ControllerError>;

/// At most this many groups of keys matching different sets of `patternProperties`.
const MAX_KEY_REGIONS: usize = 64;

/// Why keys the schema does not name over-approximate.
const FREE_KEYS: &str =
    "objects here may hold keys the schema does not name; the automaton cannot remember which it wrote, so one may repeat";

/// Automata that do not depend on the schema (free values, plain strings, formats, patterns),
/// shared by every compilation in the process.
fn shared(key: String, build: impl FnOnce() -> R<Dfa>) -> R<Dfa> {
    static CACHE: std::sync::OnceLock<std::sync::Mutex<HashMap<String, Dfa>>> = std::sync::OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(d) = cache.lock().ok().and_then(|c| c.get(&key).cloned()) {
        return Ok(d);
    }
    let d = build()?;
    if let Ok(mut c) = cache.lock() {
        if c.len() > 4096 {
            c.clear();
        }
        c.insert(key, d.clone());
    }
    Ok(d)
}

pub(crate) fn err(pointer: &str, message: impl Into<String>) -> ControllerError {
    ControllerError::JsonSchema {
        pointer: if pointer.is_empty() { "#".into() } else { pointer.into() },
        message: message.into(),
    }
}

fn escape_pointer(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}

/// Whether the root's `$schema` names one of `drafts`.
fn draft_in(root: &Value, drafts: &[&str]) -> bool {
    root.get("$schema")
        .and_then(Value::as_str)
        .is_some_and(|d| drafts.iter().any(|v| d.contains(v)))
}

/// The keywords a draft does not define yet, which are annotations in schemas of that draft.
fn later_keywords(root: &Value) -> Vec<&'static str> {
    const DRAFT6: &[&str] = &["const", "contains", "propertyNames"];
    const DRAFT7: &[&str] = &["if", "then", "else"];
    const DRAFT2019: &[&str] = &[
        "dependentRequired",
        "dependentSchemas",
        "prefixItems",
        "minContains",
        "maxContains",
    ];
    let since: &[&[&str]] = if draft_in(root, &["draft-03", "draft-04"]) {
        &[DRAFT6, DRAFT7, DRAFT2019]
    } else if draft_in(root, &["draft-06"]) {
        &[DRAFT7, DRAFT2019]
    } else if draft_in(root, &["draft-07"]) {
        &[DRAFT2019]
    } else {
        &[]
    };
    since.concat()
}

/// Whether the schema's draft (3 or 4) tells `1.0` from `1`.
pub(crate) fn point_zero(root: &Value) -> bool {
    draft_in(root, &["draft-03", "draft-04"])
}

/// The global property order: names in order of first appearance under `properties` or
/// `required` anywhere in the document.
pub(crate) fn property_rank(root: &Value) -> HashMap<String, usize> {
    fn walk(v: &Value, rank: &mut HashMap<String, usize>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::Object(p)) = m.get("properties") {
                    for k in p.keys() {
                        let n = rank.len();
                        rank.entry(k.clone()).or_insert(n);
                    }
                }
                if let Some(Value::Array(r)) = m.get("required") {
                    for k in r.iter().filter_map(Value::as_str) {
                        let n = rank.len();
                        rank.entry(k.to_string()).or_insert(n);
                    }
                }
                for x in m.values() {
                    walk(x, rank);
                }
            }
            Value::Array(a) => a.iter().for_each(|x| walk(x, rank)),
            _ => {}
        }
    }
    let mut rank = HashMap::new();
    walk(root, &mut rank);
    rank
}

pub(crate) struct Compiler<'a> {
    root: &'a Value,
    cfg: &'a JsonSchemaConfig,
    rank: &'a HashMap<String, usize>,
    cache: HashMap<(usize, usize, u64), Dfa>,
    any: HashMap<(usize, bool), Dfa>,
    in_progress: HashSet<(usize, usize, u64)>,
    built: usize,
    /// Free values get the whole remaining depth budget instead of `json_any_depth` (set inside
    /// `oneOf` branches and counted `contains`, whose complements must be exact on every
    /// document the other side can produce).
    exact_free: bool,
    /// Numbers keep to the digits a double holds ([`NumberSpec::double_exact`]): set where the
    /// automaton takes a complement (`oneOf`, `not`, `if`, `maxContains`) of a schema that tells
    /// numbers apart by value ([`value_sensitive`]), since there a text that reads back as
    /// another value (`1.00000000000000000001` as the integer 1) would land on the other side
    /// for a validator computing with doubles.
    exact_numbers: bool,
    /// Drafts 3 to 7: a `$ref` replaces the schema it sits in (its siblings are ignored).
    ref_overrides: bool,
    /// Drafts 3 and 4: `1.0` is a number, not an integer, so it has its own text.
    point_zero: bool,
    /// Keywords that the schema's draft does not define (`const` in draft 4, ...).
    later_keywords: Vec<&'static str>,
    /// Where the automaton accepts more than the schema does (the output check catches it).
    pub(crate) approximations: Vec<Approximation>,
}

impl<'a> Compiler<'a> {
    pub(crate) fn new(root: &'a Value, cfg: &'a JsonSchemaConfig, rank: &'a HashMap<String, usize>) -> Self {
        Compiler {
            root,
            cfg,
            rank,
            cache: HashMap::new(),
            any: HashMap::new(),
            in_progress: HashSet::new(),
            built: 0,
            exact_free: false,
            exact_numbers: false,
            ref_overrides: draft_in(root, &["draft-03", "draft-04", "draft-06", "draft-07"]),
            point_zero: point_zero(root),
            later_keywords: later_keywords(root),
            approximations: Vec::new(),
        }
    }

    /// The whole document's automaton.
    pub(crate) fn compile_root(&mut self) -> R<Dfa> {
        let root = self.root;
        self.compile(root, "#", self.cfg.limits.json_depth, &[])
    }

    fn limit(&self) -> usize {
        self.cfg.limits.json_states
    }

    /// Runs `f` with [`Self::exact_numbers`] set if `sensitive` (or already set).
    fn with_exact_numbers<T>(&mut self, sensitive: bool, f: impl FnOnce(&mut Self) -> R<T>) -> R<T> {
        let outer = self.exact_numbers;
        self.exact_numbers |= sensitive;
        let r = f(self);
        self.exact_numbers = outer;
        r
    }

    /// Separators of an object or array whose own nesting budget is `depth`: (before the first
    /// member, between members, before the closing bracket of a non-empty container, after a key).
    fn separators(&self, depth: usize) -> (Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>) {
        let level = self.cfg.limits.json_depth.saturating_sub(depth);
        match self.cfg.layout {
            Layout::Pretty { indent, max_levels } if level < max_levels => {
                let inner = format!("\n{}", " ".repeat(indent * (level + 1))).into_bytes();
                let outer = format!("\n{}", " ".repeat(indent * level)).into_bytes();
                let mut between = b",".to_vec();
                between.extend_from_slice(&inner);
                (inner, between, outer, b": ".to_vec())
            }
            _ => (Vec::new(), b",".to_vec(), Vec::new(), b":".to_vec()),
        }
    }

    /// Accounts for a built automaton against the total budget.
    fn track(&mut self, ptr: &str, r: Result<Dfa, TooLarge>) -> R<Dfa> {
        let d = r.map_err(|e| {
            err(
                ptr,
                format!("{e} (Limits::json_states); simplify the schema or raise the limit"),
            )
        })?;
        self.built += d.num_states();
        if self.built > self.cfg.limits.json_total_states {
            return Err(err(
                ptr,
                format!(
                    "compiling the schema built more than {} automaton states (Limits::json_total_states)",
                    self.cfg.limits.json_total_states
                ),
            ));
        }
        Ok(d)
    }

    fn and(&mut self, ptr: &str, a: &Dfa, b: &Dfa) -> R<Dfa> {
        let r = a.and(b, self.limit());
        self.track(ptr, r)
    }

    /// Notes a place where the automaton over-approximates.
    fn note(&mut self, keyword: &str, ptr: &str, reason: String) {
        let a = Approximation {
            keyword: keyword.into(),
            pointer: if ptr.is_empty() { "#".into() } else { ptr.into() },
            reason,
        };
        if !self.approximations.contains(&a) {
            self.approximations.push(a);
        }
    }

    /// The values a complement at this level is taken in: non-objects, and objects with this
    /// level's names in the schema's order (any values) followed by other keys, so that an
    /// object written in another order is not in the complement of one written in order.
    fn universe(&mut self, sub: &Value, ptr: &str, keyword: &str, depth: usize, names: &[String]) -> R<Dfa> {
        self.note_nested_order(sub, ptr, keyword);
        let any = self.free(depth, ptr)?;
        if depth == 0 {
            return Ok(any);
        }
        let r = any.minus(&Self::objects(), self.limit());
        let non_objects = self.track(ptr, r)?;
        // Within the nesting `any` allows, which the complemented side is exact on.
        let ordered = self.object(&Map::new(), ptr, depth, names, &[])?;
        let objects = self.and(ptr, &ordered, &any)?;
        let r = union(&[&non_objects, &objects], self.limit());
        self.track(ptr, r)
    }

    /// Every text that starts with `{`.
    fn objects() -> Dfa {
        Dfa::from_fn(
            0u8,
            |&s, b| if s == 0 { (b == b'{').then_some(1) } else { Some(1) },
            |&s| s == 1,
            4,
        )
        .unwrap_or_else(|_| Dfa::empty())
    }

    /// Notes that a complement of `sub` can admit objects written out of order below its top
    /// level, where `sub` has typed objects of its own (the complement is taken among free
    /// values there, which may order keys any way).
    fn note_nested_order(&mut self, sub: &Value, ptr: &str, keyword: &str) {
        fn nested_objects(v: &Value, top: bool) -> bool {
            let Value::Object(m) = v else { return false };
            if !top && (m.contains_key("properties") || m.contains_key("required") || m.contains_key("$ref")) {
                return true;
            }
            m.iter().any(|(k, x)| match k.as_str() {
                // Same level.
                "allOf" | "anyOf" | "oneOf" | "not" | "if" | "then" | "else" => match x {
                    Value::Array(a) => a.iter().any(|s| nested_objects(s, top)),
                    s => nested_objects(s, top),
                },
                "$ref" => true,
                // One level down.
                "properties" | "patternProperties" | "dependentSchemas" => x
                    .as_object()
                    .is_some_and(|o| o.values().any(|s| nested_objects(s, false))),
                "items" | "prefixItems" | "additionalItems" | "additionalProperties" | "contains" => match x {
                    Value::Array(a) => a.iter().any(|s| nested_objects(s, false)),
                    s => nested_objects(s, false),
                },
                _ => false,
            })
        }
        if nested_objects(sub, true) {
            self.note(
                keyword,
                ptr,
                "below its top level, an object written out of the schema's key order escapes the complement this keyword takes".into(),
            );
        }
    }

    /// A maximum count, or `None` past `json_max_counted` (counting saturates there: noted).
    fn counted(&mut self, max: Option<usize>, keyword: &str, ptr: &str, what: &str) -> Option<usize> {
        let limit = self.cfg.limits.json_max_counted;
        match max {
            Some(x) if x > limit => {
                self.note(
                    keyword,
                    ptr,
                    format!("{what} are counted up to {limit} (Limits::json_max_counted); more are left to the output check"),
                );
                None
            }
            m => m,
        }
    }

    /// [`Self::any`] where a schema leaves a value free; notes the free keys its objects have.
    fn free(&mut self, depth: usize, ptr: &str) -> R<Dfa> {
        if depth.min(self.cfg.limits.json_any_depth) > 0 {
            self.note("free value", ptr, FREE_KEYS.to_string());
        }
        self.any(depth)
    }

    /// Any JSON value nested at most `depth` levels (capped by `json_any_depth`).
    pub(crate) fn any(&mut self, depth: usize) -> R<Dfa> {
        let depth = if self.exact_free {
            depth
        } else {
            depth.min(self.cfg.limits.json_any_depth)
        };
        let exact = self.exact_numbers;
        if let Some(d) = self.any.get(&(depth, exact)) {
            return Ok(d.clone());
        }
        let limit = self.limit();
        let inner = if depth > 0 { Some(self.any(depth - 1)?) } else { None };
        let point_zero = self.point_zero;
        let d = shared(format!("any:{depth}:{limit}:{point_zero}:{exact}"), || {
            Self::build_any(inner, point_zero, exact, limit)
        })?;
        self.any.insert((depth, exact), d.clone());
        Ok(d)
    }

    fn build_any(inner: Option<Dfa>, point_zero: bool, double_exact: bool, limit: usize) -> R<Dfa> {
        let scalars = [
            Dfa::literal(b"null"),
            Dfa::literal(b"true"),
            Dfa::literal(b"false"),
            leaf::number(
                &NumberSpec {
                    point_zero,
                    double_exact,
                    ..NumberSpec::default()
                },
                limit,
            )
            .map_err(|e| err("#", e.to_string()))?,
            leaf::string(0, None, limit).map_err(|e| err("#", e.to_string()))?,
        ];
        let mut nfa = Nfa::new();
        let mut alts: Vec<Frag> = scalars.iter().map(|d| nfa.embed(d)).collect();
        if let Some(inner) = inner {
            let key = leaf::string(0, None, limit).map_err(|e| err("#", e.to_string()))?;
            // [ (v (, v)*)? ]
            let v = nfa.embed(&inner);
            alts.push(nfa.delimited_list(b"[", v, b",", b"]"));
            // { (k:v (, k:v)*)? }
            let (k, colon, v) = (nfa.embed(&key), nfa.literal(b":"), nfa.embed(&inner));
            let member = nfa.concat(&[k, colon, v]);
            alts.push(nfa.delimited_list(b"{", member, b",", b"}"));
        }
        let f = nfa.alt(&alts);
        nfa.determinize(f, limit).map_err(|e| err("#", e.to_string()))
    }

    /// Resolves a local `$ref`.
    fn resolve(&self, reference: &str, ptr: &str) -> R<(&'a Value, String)> {
        let (base, fragment) = match reference.find('#') {
            Some(i) => (&reference[..i], &reference[i + 1..]),
            None => (reference, ""),
        };
        if !base.is_empty() {
            let own_id = self
                .root
                .get("$id")
                .or_else(|| self.root.get("id"))
                .and_then(Value::as_str);
            if own_id.map(|id| id.trim_end_matches('#')) != Some(base) {
                return Err(err(
                    ptr,
                    format!(
                        "$ref {reference:?} points outside this document; only local references (#/...) are supported"
                    ),
                ));
            }
        }
        if !fragment.is_empty() && !fragment.starts_with('/') {
            // A plain-name fragment: `$anchor` (2019-09+) or an `$id`/`id` of "#name" (drafts 4-7).
            return find_anchor(self.root, fragment, "#").ok_or_else(|| {
                err(
                    ptr,
                    format!("$ref {reference:?}: no $anchor or $id {fragment:?} in this document"),
                )
            });
        }
        let decoded = percent_decode(fragment);
        let target = if decoded.is_empty() {
            Some(self.root)
        } else {
            self.root.pointer(&decoded)
        };
        target
            .map(|t| (t, format!("#{decoded}")))
            .ok_or_else(|| err(ptr, format!("$ref {reference:?} does not resolve in this document")))
    }

    /// Names mentioned at this object level: `properties`, `required`, dependencies, and the same
    /// in every applicator branch (following `$ref`s).
    fn level_names(&self, v: &Value, out: &mut Vec<String>, seen: &mut HashSet<usize>) {
        let Value::Object(m) = v else { return };
        if !seen.insert(m as *const _ as usize) {
            return;
        }
        if let Some(Value::Object(p)) = m.get("properties") {
            out.extend(p.keys().cloned());
        }
        if let Some(Value::Array(r)) = m.get("required") {
            out.extend(r.iter().filter_map(Value::as_str).map(String::from));
        }
        for key in ["dependentRequired", "dependencies", "dependentSchemas"] {
            if let Some(Value::Object(d)) = m.get(key) {
                for (k, x) in d {
                    out.push(k.clone());
                    if let Value::Array(a) = x {
                        out.extend(a.iter().filter_map(Value::as_str).map(String::from));
                    } else {
                        self.level_names(x, out, seen);
                    }
                }
            }
        }
        for key in ["allOf", "anyOf", "oneOf"] {
            if let Some(Value::Array(a)) = m.get(key) {
                a.iter().for_each(|x| self.level_names(x, out, seen));
            }
        }
        for key in ["not", "if", "then", "else"] {
            if let Some(x) = m.get(key) {
                self.level_names(x, out, seen);
            }
        }
        if let Some(Value::String(r)) = m.get("$ref") {
            if let Ok((t, _)) = self.resolve(r, "") {
                self.level_names(t, out, seen);
            }
        }
    }

    fn sort_names(&self, names: &mut Vec<String>) {
        let mut seen = HashSet::new();
        names.retain(|n| seen.insert(n.clone()));
        // Stable: unranked names keep their order of mention.
        names.sort_by_key(|n| self.rank.get(n).copied().unwrap_or(usize::MAX));
    }

    pub(crate) fn compile(&mut self, s: &Value, ptr: &str, depth: usize, ctx: &[String]) -> R<Dfa> {
        match s {
            Value::Bool(true) => self.free(depth, ptr),
            Value::Bool(false) => Ok(Dfa::empty()),
            Value::Object(m) => {
                let mut names = ctx.to_vec();
                self.level_names(s, &mut names, &mut HashSet::new());
                self.sort_names(&mut names);
                let mut h = std::collections::hash_map::DefaultHasher::new();
                names.hash(&mut h);
                self.exact_free.hash(&mut h);
                self.exact_numbers.hash(&mut h);
                let key = (m as *const _ as usize, depth, h.finish());
                if let Some(d) = self.cache.get(&key) {
                    return Ok(d.clone());
                }
                if !self.in_progress.insert(key) {
                    return Err(err(
                        ptr,
                        "a $ref cycle that never nests inside an object or array cannot be unrolled",
                    ));
                }
                let r = self.compile_node(m, ptr, depth, &names);
                self.in_progress.remove(&key);
                let d = r?;
                self.cache.insert(key, d.clone());
                Ok(d)
            }
            _ => Err(err(ptr, "a schema must be an object or a boolean")),
        }
    }

    fn compile_node(&mut self, m: &Map<String, Value>, ptr: &str, depth: usize, names: &[String]) -> R<Dfa> {
        for k in m.keys() {
            if UNSUPPORTED.contains(&k.as_str()) {
                return Err(err(ptr, format!("unsupported keyword `{k}`")));
            }
        }
        // Keywords from later drafts are annotations in the schema's own draft.
        let own;
        let m = if m.keys().any(|k| self.later_keywords.contains(&k.as_str())) {
            own = m
                .iter()
                .filter(|(k, _)| !self.later_keywords.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<Map<String, Value>>();
            &own
        } else {
            m
        };
        let mut parts: Vec<Dfa> = Vec::new();
        if let Some(r) = m.get("$ref") {
            let r = r.as_str().ok_or_else(|| err(ptr, "$ref must be a string"))?;
            let (target, tptr) = self.resolve(r, ptr)?;
            let d = self.compile(target, &tptr, depth, names)?;
            if self.ref_overrides {
                return Ok(d);
            }
            parts.push(d);
        }
        if let Some(v) = m.get("allOf") {
            for (i, sub) in schema_array(v, ptr, "allOf")?.iter().enumerate() {
                parts.push(self.compile(sub, &format!("{ptr}/allOf/{i}"), depth, names)?);
            }
        }
        if let Some(v) = m.get("anyOf") {
            let mut subs = Vec::new();
            for (i, sub) in schema_array(v, ptr, "anyOf")?.iter().enumerate() {
                subs.push(self.compile(sub, &format!("{ptr}/anyOf/{i}"), depth, names)?);
            }
            let refs: Vec<&Dfa> = subs.iter().collect();
            let r = union(&refs, self.limit());
            parts.push(self.track(ptr, r)?);
        }
        if let Some(v) = m.get("oneOf") {
            let mut subs = Vec::new();
            // "Exactly one" complements every branch on the others' documents: free values in
            // the branches must not stop short of the depth those documents reach.
            let outer = std::mem::replace(&mut self.exact_free, true);
            let sensitive = schema_array(v, ptr, "oneOf")?.iter().any(value_sensitive);
            let outer_numbers = self.exact_numbers;
            self.exact_numbers |= sensitive;
            for sub in schema_array(v, ptr, "oneOf")? {
                self.note_nested_order(sub, ptr, "oneOf");
            }
            for (i, sub) in schema_array(v, ptr, "oneOf")?.iter().enumerate() {
                let r = self.compile(sub, &format!("{ptr}/oneOf/{i}"), depth, names);
                if r.is_err() {
                    self.exact_free = outer;
                    self.exact_numbers = outer_numbers;
                }
                subs.push(r?);
            }
            self.exact_free = outer;
            self.exact_numbers = outer_numbers;
            let refs: Vec<&Dfa> = subs.iter().collect();
            let r = Dfa::product_many(&refs, |acc| acc.iter().filter(|&&a| a).count() == 1, self.limit());
            parts.push(self.track(ptr, r)?);
        }
        if let Some(sub) = m.get("not") {
            let (n, universe) = self.with_exact_numbers(value_sensitive(sub), |c| {
                let n = c.compile(sub, &format!("{ptr}/not"), depth, names)?;
                Ok((n, c.universe(sub, ptr, "not", depth, names)?))
            })?;
            let r = universe.minus(&n, self.limit());
            parts.push(self.track(ptr, r)?);
        }
        if let Some(cond) = m.get("if") {
            if m.contains_key("then") || m.contains_key("else") {
                let (c, any) = self.with_exact_numbers(value_sensitive(cond), |c| {
                    let cond_dfa = c.compile(cond, &format!("{ptr}/if"), depth, names)?;
                    Ok((cond_dfa, c.universe(cond, ptr, "if", depth, names)?))
                })?;
                let then = match m.get("then") {
                    Some(t) => self.compile(t, &format!("{ptr}/then"), depth, names)?,
                    None => any.clone(),
                };
                let otherwise = match m.get("else") {
                    Some(e) => self.compile(e, &format!("{ptr}/else"), depth, names)?,
                    None => any.clone(),
                };
                let r = Dfa::product_many(
                    &[&c, &then, &otherwise, &any],
                    |a| a[3] && if a[0] { a[1] } else { a[2] },
                    self.limit(),
                );
                parts.push(self.track(ptr, r)?);
            }
        }
        if let Some(c) = m.get("const") {
            let lits = self.literals(std::slice::from_ref(c), ptr, "const");
            let r = Dfa::literals(lits.iter().map(|s| s.as_bytes()), self.limit());
            parts.push(self.track(ptr, r)?);
        }
        if let Some(e) = m.get("enum") {
            let values = e.as_array().ok_or_else(|| err(ptr, "enum must be an array"))?;
            let lits = self.literals(values, ptr, "enum");
            let r = Dfa::literals(lits.iter().map(|s| s.as_bytes()), self.limit());
            parts.push(self.track(ptr, r)?);
        }
        if let Some(core) = self.typed(m, ptr, depth, names)? {
            parts.push(core);
        }
        if let Some(deps) = m.get("dependentSchemas").or_else(|| {
            m.get("dependencies")
                .filter(|d| d.as_object().is_some_and(|o| o.values().any(|x| !x.is_array())))
        }) {
            parts.push(self.dependent_schemas(m, deps, ptr, depth, names)?);
        }
        if parts.is_empty() {
            return self.free(depth, ptr);
        }
        parts.sort_by_key(Dfa::num_states);
        let mut acc = parts[0].clone();
        for p in &parts[1..] {
            if acc.is_empty() {
                break;
            }
            acc = self.and(ptr, &acc, p)?;
        }
        Ok(acc)
    }

    /// `dependentSchemas` (or the schema form of `dependencies`): objects where property `a` is
    /// present must also satisfy `S_a`. Built as the union over which trigger properties are
    /// present, each forced by the object construction.
    fn dependent_schemas(
        &mut self,
        m: &Map<String, Value>,
        deps: &Value,
        ptr: &str,
        depth: usize,
        names: &[String],
    ) -> R<Dfa> {
        let kw = if m.contains_key("dependentSchemas") {
            "dependentSchemas"
        } else {
            "dependencies"
        };
        let deps: Vec<(&String, &Value)> = deps
            .as_object()
            .ok_or_else(|| err(ptr, format!("{kw} must be an object")))?
            .iter()
            .filter(|(_, v)| !v.is_array())
            .collect();
        let any = self.free(depth, ptr)?;
        // Non-objects are unaffected.
        let not_object = {
            let r = any.minus(&Self::objects(), self.limit());
            self.track(ptr, r)?
        };
        // Each entry is one implication, "`k` present ⇒ its schema holds"; the keyword is their
        // conjunction (n intersections, not 2ⁿ cases).
        let mut acc: Option<Dfa> = None;
        for (k, s) in deps {
            let absent = self.object(&Map::new(), ptr, depth, names, &[((*k).clone(), false)])?;
            let present = self.object(&Map::new(), ptr, depth, names, &[((*k).clone(), true)])?;
            let sub = self.compile(s, &format!("{ptr}/{kw}/{}", escape_pointer(k)), depth, names)?;
            let with = self.and(ptr, &present, &sub)?;
            let r = union(&[&not_object, &absent, &with], self.limit());
            let implication = self.track(ptr, r)?;
            acc = Some(match acc {
                None => implication,
                Some(a) => self.and(ptr, &a, &implication)?,
            });
        }
        Ok(acc.unwrap_or(any))
    }

    /// The type-dependent keywords, or `None` when the node constrains no type.
    fn typed(&mut self, m: &Map<String, Value>, ptr: &str, depth: usize, names: &[String]) -> R<Option<Dfa>> {
        const ALL: [&str; 6] = ["null", "boolean", "number", "string", "array", "object"];
        let mut types: Vec<&str> = match m.get("type") {
            None => {
                let constrains = |keys: &[&str]| keys.iter().any(|k| m.contains_key(*k));
                let mut t = vec!["null", "boolean"];
                let num = constrains(&[
                    "minimum",
                    "maximum",
                    "exclusiveMinimum",
                    "exclusiveMaximum",
                    "multipleOf",
                ]);
                let s = constrains(&["minLength", "maxLength", "pattern", "format"]);
                let a = constrains(&[
                    "items",
                    "prefixItems",
                    "additionalItems",
                    "minItems",
                    "maxItems",
                    "uniqueItems",
                    "contains",
                ]);
                let o = constrains(&[
                    "properties",
                    "required",
                    "additionalProperties",
                    "patternProperties",
                    "propertyNames",
                    "minProperties",
                    "maxProperties",
                    "dependentRequired",
                ]) || m
                    .get("dependencies")
                    .and_then(Value::as_object)
                    .is_some_and(|d| d.values().any(Value::is_array));
                if !(num || s || a || o) {
                    return Ok(None);
                }
                t.extend(["number", "string", "array", "object"]);
                t
            }
            Some(Value::String(t)) => vec![t.as_str()],
            Some(Value::Array(ts)) => ts
                .iter()
                .map(|t| t.as_str().ok_or_else(|| err(ptr, "type entries must be strings")))
                .collect::<R<_>>()?,
            Some(_) => return Err(err(ptr, "type must be a string or an array of strings")),
        };
        for t in &types {
            if !ALL.contains(t) && *t != "integer" {
                return Err(err(ptr, format!("unknown type {t:?}")));
            }
        }
        if types.contains(&"number") {
            types.retain(|t| *t != "integer");
        }
        let mut alts = Vec::new();
        for t in types {
            let d = match t {
                "null" => Dfa::literal(b"null"),
                "boolean" => Dfa::literals([&b"true"[..], b"false"], 16).map_err(|e| err(ptr, e.to_string()))?,
                "integer" | "number" => self.number(m, ptr, t == "integer")?,
                "string" => self.string(m, ptr)?,
                "array" => self.array(m, ptr, depth)?,
                "object" => self.object(m, ptr, depth, names, &[])?,
                _ => unreachable!("checked above"),
            };
            alts.push(d);
        }
        let refs: Vec<&Dfa> = alts.iter().collect();
        let r = union(&refs, self.limit());
        Ok(Some(self.track(ptr, r)?))
    }

    fn number(&mut self, m: &Map<String, Value>, ptr: &str, integer: bool) -> R<Dfa> {
        let num = |k: &str| -> R<Option<Decimal>> {
            match m.get(k) {
                None | Some(Value::Bool(_)) => Ok(None),
                Some(Value::Number(n)) => Decimal::from_number(n)
                    .map(Some)
                    .ok_or_else(|| err(ptr, format!("{k} {n} is out of the supported range"))),
                Some(_) => Err(err(ptr, format!("{k} must be a number"))),
            }
        };
        let mut spec = NumberSpec {
            integer,
            point_zero: self.point_zero,
            ..Default::default()
        };
        let bool_flag = |k: &str| m.get(k).and_then(Value::as_bool).unwrap_or(false);
        if let Some(d) = num("minimum")? {
            spec.lower.push((d, bool_flag("exclusiveMinimum")));
        }
        if let Some(d) = num("exclusiveMinimum")? {
            spec.lower.push((d, true));
        }
        if let Some(d) = num("maximum")? {
            spec.upper.push((d, bool_flag("exclusiveMaximum")));
        }
        if let Some(d) = num("exclusiveMaximum")? {
            spec.upper.push((d, true));
        }
        if let Some(v) = m.get("multipleOf") {
            let n = v.as_number().ok_or_else(|| err(ptr, "multipleOf must be a number"))?;
            let mo = leaf::multiple_of(n).ok_or_else(|| {
                err(
                    ptr,
                    format!(
                        "multipleOf {n} is not supported (a positive decimal with at most 6 significant digits is)"
                    ),
                )
            })?;
            spec.multiple.push(mo);
        }
        // A strict bound, or a bound a double cannot hold, is crossed by texts that read back as
        // the bound itself; a non-strict bound is safe, since rounding to a double keeps order.
        // Divisibility is decided on the decimal written, so it must be the value read.
        let inexact = |d: &Decimal| leaf::significant_digits(d) > usize::from(leaf::MAX_INT_DIGITS);
        spec.double_exact = self.exact_numbers
            || !spec.multiple.is_empty()
            || spec
                .lower
                .iter()
                .chain(&spec.upper)
                .any(|(d, strict)| *strict || inexact(d));
        let r = leaf::number(&spec, self.limit());
        self.track(ptr, r)
    }

    fn usize_kw(m: &Map<String, Value>, ptr: &str, k: &str) -> R<Option<usize>> {
        match m.get(k) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .or_else(|| v.as_f64().filter(|f| f.fract() == 0.0 && *f >= 0.0).map(|f| f as u64))
                .map(|n| Some(n.min(1 << 20) as usize))
                .ok_or_else(|| err(ptr, format!("{k} must be a non-negative integer"))),
        }
    }

    fn pattern(&mut self, pattern: &str, ptr: &str) -> R<Dfa> {
        let (bytes, limit) = (self.cfg.limits.json_regex_bytes, self.limit());
        shared(format!("pattern:{bytes}:{limit}:{pattern}"), || {
            leaf::pattern_content(pattern, bytes, limit).map_err(|e| match e {
                RegexFailure::Build(m) => err(ptr, format!("pattern {pattern:?} is not supported: {m}")),
                RegexFailure::TooLarge(l) => {
                    err(ptr, format!("pattern {pattern:?} needs more than {l} automaton states"))
                }
            })
        })
    }

    fn string(&mut self, m: &Map<String, Value>, ptr: &str) -> R<Dfa> {
        let min = Self::usize_kw(m, ptr, "minLength")?.unwrap_or(0);
        let max = Self::usize_kw(m, ptr, "maxLength")?;
        // Counting up to a maximum past this many characters cannot matter for the lengths
        // generated (the validator still checks); a minimum is always counted exactly.
        let max = self.counted(max, "maxLength", ptr, "characters");
        let mut content_parts = Vec::new();
        if let Some(p) = m.get("pattern") {
            let p = p.as_str().ok_or_else(|| err(ptr, "pattern must be a string"))?;
            content_parts.push(self.pattern(p, &format!("{ptr}/pattern"))?);
        }
        if let Some(f) = m.get("format") {
            let f = f.as_str().ok_or_else(|| err(ptr, "format must be a string"))?;
            // Every known format is asserted, in every draft (validators differ on which drafts
            // assert which; asserting is the sound choice).
            if self.cfg.ignore_formats && leaf::format_regex(f).is_some() {
                self.note("format", ptr, "not enforced by the automaton (ignore_formats)".into());
            }
            if let Some(re) = leaf::format_regex(f).filter(|_| !self.cfg.ignore_formats) {
                let (bytes, limit) = (self.cfg.limits.json_regex_bytes, self.limit());
                content_parts.push(shared(format!("format:{bytes}:{limit}:{f}"), || {
                    regex_dfa(re, bytes, limit).map_err(|_| err(ptr, format!("format {f:?} could not be compiled")))
                })?);
            }
        }
        let limit = self.limit();
        let text = shared(format!("text:{min}:{max:?}:{limit}"), || {
            leaf::text(min, max, limit).map_err(|e| err(ptr, e.to_string()))
        })?;
        if content_parts.is_empty() {
            return shared(format!("string:{min}:{max:?}:{limit}"), || {
                leaf::quoted(&text, limit).map_err(|e| err(ptr, e.to_string()))
            });
        }
        let mut content = text;
        for p in &content_parts {
            content = self.and(ptr, &content, p)?;
        }
        let r = leaf::quoted(&content, limit);
        self.track(ptr, r)
    }

    fn array(&mut self, m: &Map<String, Value>, ptr: &str, depth: usize) -> R<Dfa> {
        if depth == 0 {
            return Ok(Dfa::empty());
        }
        let inner = depth - 1;
        let mut prefix: Vec<Dfa> = Vec::new();
        let rest_schema: Option<(&Value, String)>;
        let prefix_src = if m.contains_key("prefixItems") {
            Some(("prefixItems", m.get("prefixItems")))
        } else if let Some(Value::Array(_)) = m.get("items") {
            Some(("items", m.get("items")))
        } else {
            None
        };
        if let Some((kw, Some(v))) = prefix_src {
            for (i, s) in schema_array(v, ptr, kw)?.iter().enumerate() {
                prefix.push(self.compile(s, &format!("{ptr}/{kw}/{i}"), inner, &[])?);
            }
            rest_schema = if kw == "prefixItems" {
                m.get("items").map(|s| (s, format!("{ptr}/items")))
            } else {
                m.get("additionalItems").map(|s| (s, format!("{ptr}/additionalItems")))
            };
        } else {
            rest_schema = m.get("items").map(|s| (s, format!("{ptr}/items")));
        }
        let rest = match rest_schema {
            Some((s, p)) => self.compile(s, &p, inner, &[])?,
            None => self.free(inner, &format!("{ptr}/items"))?,
        };
        let min = Self::usize_kw(m, ptr, "minItems")?.unwrap_or(0);
        let max = Self::usize_kw(m, ptr, "maxItems")?;
        let contains = match m.get("contains") {
            // `maxContains` counts the items `contains` rejects too: as for `oneOf`, its free
            // values must reach as deep as the items can.
            Some(c) if m.contains_key("maxContains") => {
                self.note_nested_order(c, ptr, "maxContains");
                let outer = std::mem::replace(&mut self.exact_free, true);
                let r = self.with_exact_numbers(value_sensitive(c), |s| {
                    s.compile(c, &format!("{ptr}/contains"), inner, &[])
                });
                self.exact_free = outer;
                Some(r?)
            }
            Some(c) => Some(self.compile(c, &format!("{ptr}/contains"), inner, &[])?),
            None => None,
        };
        let min_contains = if contains.is_some() {
            Self::usize_kw(m, ptr, "minContains")?.unwrap_or(1)
        } else {
            0
        };
        let max_contains = if contains.is_some() {
            Self::usize_kw(m, ptr, "maxContains")?
        } else {
            None
        };
        let unique = m.get("uniqueItems").and_then(Value::as_bool).unwrap_or(false);

        // `maxItems` is counted exactly up to `max_counted`; past it the count saturates (such
        // arrays cannot fit in a generated sequence, and the validator checks every output).
        let max = self.counted(max, "maxItems", ptr, "items");
        let cap = max.unwrap_or_else(|| min.max(prefix.len()).max(1));
        let elem = |j: usize| -> &Dfa { prefix.get(j).unwrap_or(&rest) };
        // Unique items: exact when each position's language is a small finite set.
        let mut unique_values: Option<Vec<Vec<u8>>> = None;
        if unique {
            let mut all = HashSet::new();
            let mut finite = true;
            for j in 0..=prefix.len() {
                match elem(j).finite_strings(12) {
                    Some(v) => all.extend(v),
                    None => finite = false,
                }
            }
            if finite && contains.is_none() && all.len() <= 12 {
                let mut v: Vec<Vec<u8>> = all.into_iter().collect();
                v.sort();
                unique_values = Some(v);
            } else {
                self.note(
                    "uniqueItems",
                    ptr,
                    "items come from an unbounded set, so the automaton cannot exclude repeats".into(),
                );
            }
        }
        let contains_cap = max_contains.unwrap_or(min_contains);

        let mut nfa = Nfa::new();
        let open = nfa.literal(b"[");
        let end = nfa.state();
        let mut ids: HashMap<(usize, usize, u32), u32> = HashMap::new();
        let mut work = vec![(0usize, 0usize, 0u32)];
        let first = nfa.state();
        nfa.eps(open.end, first);
        ids.insert((0, 0, 0), first);
        let (first_sep, between, before_close, _) = self.separators(depth);
        while let Some((j, k, used)) = work.pop() {
            let here = ids[&(j, k, used)];
            if j >= min && k >= min_contains {
                let mut text = if j > 0 { before_close.clone() } else { Vec::new() };
                text.push(b']');
                let close = nfa.literal(&text);
                nfa.eps(here, close.start);
                nfa.eps(close.end, end);
            }
            let next_j = match max {
                Some(mx) if j >= mx => continue,
                Some(_) => j + 1,
                None => (j + 1).min(cap.max(prefix.len())),
            };
            let e = elem(j).clone();
            // Alternatives for the next item: (automaton, contains-count delta, used bit).
            let mut choices: Vec<(Dfa, usize, u32)> = Vec::new();
            match (&unique_values, &contains) {
                (Some(vals), _) => {
                    for (i, v) in vals.iter().enumerate() {
                        if used & (1 << i) == 0 && e.accepts(v) {
                            choices.push((Dfa::literal(v), 0, 1 << i));
                        }
                    }
                }
                (None, Some(c)) => {
                    let r = e.and(c, self.limit());
                    let yes = self.track(ptr, r)?;
                    let r = e.minus(c, self.limit());
                    let no = self.track(ptr, r)?;
                    choices.push((yes, 1, 0));
                    choices.push((no, 0, 0));
                }
                (None, None) => choices.push((e, 0, 0)),
            }
            for (d, dk, bit) in choices {
                if d.is_empty() {
                    continue;
                }
                let nk = match max_contains {
                    Some(mc) if k + dk > mc => continue,
                    Some(_) => k + dk,
                    None => (k + dk).min(contains_cap),
                };
                let target = (next_j, nk, used | bit);
                let t = match ids.get(&target) {
                    Some(&t) => t,
                    None => {
                        let t = nfa.state();
                        ids.insert(target, t);
                        work.push(target);
                        t
                    }
                };
                let seq = vec![nfa.literal(if j > 0 { &between } else { &first_sep }), nfa.embed(&d)];
                let f = nfa.concat(&seq);
                nfa.eps(here, f.start);
                nfa.eps(f.end, t);
            }
            self.check_layers(&nfa, ptr, "array")?;
        }
        self.finish_layers(&nfa, Frag { start: open.start, end }, ptr)
    }

    /// Objects. `forced` fixes whether some properties are present (for dependent schemas).
    fn object(
        &mut self,
        m: &Map<String, Value>,
        ptr: &str,
        depth: usize,
        names: &[String],
        forced: &[(String, bool)],
    ) -> R<Dfa> {
        if depth == 0 {
            return Ok(Dfa::empty());
        }
        let inner = depth - 1;
        let props = match m.get("properties") {
            None => None,
            Some(Value::Object(p)) => Some(p),
            Some(_) => return Err(err(ptr, "properties must be an object")),
        };
        let required: Vec<&str> = match m.get("required") {
            None => Vec::new(),
            Some(Value::Array(a)) => a
                .iter()
                .map(|x| x.as_str().ok_or_else(|| err(ptr, "required entries must be strings")))
                .collect::<R<_>>()?,
            Some(_) => return Err(err(ptr, "required must be an array")),
        };
        let additional = m.get("additionalProperties");
        let mut patterns: Vec<(String, regex::Regex, &Value)> = Vec::new();
        if let Some(pp) = m.get("patternProperties") {
            let pp = pp
                .as_object()
                .ok_or_else(|| err(ptr, "patternProperties must be an object"))?;
            for (p, s) in pp {
                let re = regex::Regex::new(&leaf::translate_pattern(p)).map_err(|e| {
                    err(
                        &format!("{ptr}/patternProperties"),
                        format!("pattern {p:?} is not supported: {e}"),
                    )
                })?;
                patterns.push((p.clone(), re, s));
            }
        }
        let key_names = match m.get("propertyNames") {
            Some(s) => Some(self.compile(s, &format!("{ptr}/propertyNames"), 0, &[])?),
            None => None,
        };
        let min_p = Self::usize_kw(m, ptr, "minProperties")?.unwrap_or(0);
        let max_p = Self::usize_kw(m, ptr, "maxProperties")?;
        let max_p = self.counted(max_p, "maxProperties", ptr, "properties");
        let mut deps: Vec<(&str, Vec<&str>)> = Vec::new();
        for kw in ["dependentRequired", "dependencies"] {
            if let Some(Value::Object(d)) = m.get(kw) {
                for (k, v) in d {
                    if let Value::Array(a) = v {
                        let list = a
                            .iter()
                            .map(|x| {
                                x.as_str()
                                    .ok_or_else(|| err(ptr, format!("{kw} lists must hold strings")))
                            })
                            .collect::<R<Vec<_>>>()?;
                        deps.push((k.as_str(), list));
                    }
                }
            }
        }

        // The value automaton of each named slot (None: the name may not appear).
        struct Slot {
            literal: Vec<u8>,
            value: Option<Dfa>,
            required: bool,
            forbidden: bool,
        }
        let mut slots: Vec<Slot> = Vec::new();
        for name in names {
            let sp = format!("{ptr}/properties/{}", escape_pointer(name));
            let mut value: Option<Dfa> = None;
            let matched: Vec<&(String, regex::Regex, &Value)> =
                patterns.iter().filter(|(_, re, _)| re.is_match(name)).collect();
            if let Some(s) = props.and_then(|p| p.get(name)) {
                value = Some(self.compile(s, &sp, inner, &[])?);
            } else if matched.is_empty() {
                value = match additional {
                    None | Some(Value::Bool(true)) => Some(self.free(inner, &format!("{ptr}/additionalProperties"))?),
                    Some(Value::Bool(false)) => None,
                    Some(s) => Some(self.compile(s, &format!("{ptr}/additionalProperties"), inner, &[])?),
                };
            }
            for (p, _, s) in &matched {
                let d = self.compile(s, &format!("{ptr}/patternProperties/{}", escape_pointer(p)), inner, &[])?;
                value = Some(match value {
                    None => d,
                    Some(v) => self.and(ptr, &v, &d)?,
                });
            }
            let literal = serde_json::to_string(name).unwrap_or_default().into_bytes();
            if let Some(k) = &key_names {
                if !k.accepts(&literal) {
                    value = None;
                }
            }
            let value = value.filter(|v| !v.is_empty());
            let forced_here = forced.iter().find(|(n, _)| n == name).map(|(_, p)| *p);
            let required = required.contains(&name.as_str()) || forced_here == Some(true);
            let forbidden = forced_here == Some(false);
            if required && (value.is_none() || forbidden) {
                return Ok(Dfa::empty());
            }
            slots.push(Slot {
                literal,
                value,
                required,
                forbidden,
            });
        }
        for r in &required {
            if !names.iter().any(|n| n == r) {
                return Err(err(ptr, format!("internal: required property {r:?} has no slot")));
            }
        }

        // Keys the schema does not name, grouped by which patterns they match.
        let mut extras: Vec<(Dfa, Dfa)> = Vec::new();
        let extras_allowed = !matches!(additional, Some(Value::Bool(false))) || !patterns.is_empty();
        if extras_allowed {
            let limit = self.limit();
            let r = leaf::string(0, None, limit);
            let mut key = self.track(ptr, r)?;
            let named: Vec<&[u8]> = slots.iter().map(|s| s.literal.as_slice()).collect();
            if !named.is_empty() {
                let r = Dfa::literals(named, limit);
                let lits = self.track(ptr, r)?;
                let r = key.minus(&lits, limit);
                key = self.track(ptr, r)?;
            }
            if let Some(k) = &key_names {
                key = self.and(ptr, &key, k)?;
            }
            let mut quoted_patterns = Vec::new();
            for (p, _, _) in &patterns {
                let content = self.pattern(p, &format!("{ptr}/patternProperties"))?;
                let r = leaf::quoted(&content, limit);
                quoted_patterns.push(self.track(ptr, r)?);
            }
            // The key space split by which patterns a key matches, pattern by pattern; empty
            // regions are dropped as soon as they appear, so only overlaps that exist cost work.
            let mut regions: Vec<(Dfa, Vec<usize>)> = vec![(key, Vec::new())];
            for (i, q) in quoted_patterns.iter().enumerate() {
                let mut next = Vec::new();
                for (k, chosen) in regions {
                    let inside = self.and(ptr, &k, q)?;
                    let r = k.minus(q, limit);
                    let outside = self.track(ptr, r)?;
                    if !inside.is_empty() {
                        let mut c = chosen.clone();
                        c.push(i);
                        next.push((inside, c));
                    }
                    if !outside.is_empty() {
                        next.push((outside, chosen));
                    }
                }
                if next.len() > MAX_KEY_REGIONS {
                    return Err(err(
                        ptr,
                        format!(
                            "patternProperties overlap in more than {MAX_KEY_REGIONS} ways, which is not supported"
                        ),
                    ));
                }
                regions = next;
            }
            for (k, chosen) in regions {
                let mut value: Option<Dfa> = None;
                for &i in &chosen {
                    let (p, _, s) = &patterns[i];
                    let d = self.compile(s, &format!("{ptr}/patternProperties/{}", escape_pointer(p)), inner, &[])?;
                    value = Some(match value {
                        None => d,
                        Some(v) => self.and(ptr, &v, &d)?,
                    });
                }
                let value = match value {
                    Some(v) => Some(v),
                    None => match additional {
                        None | Some(Value::Bool(true)) => {
                            Some(self.free(inner, &format!("{ptr}/additionalProperties"))?)
                        }
                        Some(Value::Bool(false)) => None,
                        Some(s) => Some(self.compile(s, &format!("{ptr}/additionalProperties"), inner, &[])?),
                    },
                };
                if let Some(v) = value.filter(|v| !v.is_empty()) {
                    extras.push((k, v));
                }
            }
            if !extras.is_empty() {
                self.note("additionalProperties", ptr, FREE_KEYS.to_string());
            }
        }

        // Bits for the properties dependencies mention.
        let mut dep_bits: HashMap<&str, u32> = HashMap::new();
        for (k, list) in &deps {
            for n in std::iter::once(k).chain(list.iter()) {
                if !names.iter().any(|x| x == n) {
                    return Err(err(ptr, format!("internal: dependency on {n:?} has no slot")));
                }
                let b = dep_bits.len();
                dep_bits.entry(n).or_insert(1 << b);
            }
        }
        if dep_bits.len() > 12 {
            return Err(err(
                ptr,
                "dependencies involving more than 12 properties are not supported",
            ));
        }
        let deps_ok = |bits: u32| {
            deps.iter()
                .all(|(k, list)| bits & dep_bits[k] == 0 || list.iter().all(|n| bits & dep_bits[n] != 0))
        };
        let count_cap = max_p.unwrap_or(min_p.max(1));
        let inc = |c: usize| -> Option<usize> {
            match max_p {
                Some(mx) if c >= mx => None,
                Some(_) => Some(c + 1),
                None => Some((c + 1).min(count_cap)),
            }
        };

        let mut nfa = Nfa::new();
        let open = nfa.literal(b"{");
        let end = nfa.state();
        let mut ids: HashMap<(usize, usize, u32), u32> = HashMap::new();
        let first = nfa.state();
        nfa.eps(open.end, first);
        ids.insert((0, 0, 0), first);
        let mut work = vec![(0usize, 0usize, 0u32)];
        let n = slots.len();
        let (first_sep, between, before_close, colon) = self.separators(depth);
        let mut get = |nfa: &mut Nfa, work: &mut Vec<(usize, usize, u32)>, key: (usize, usize, u32)| match ids.get(&key)
        {
            Some(&s) => s,
            None => {
                let s = nfa.state();
                ids.insert(key, s);
                work.push(key);
                s
            }
        };
        while let Some((i, c, bits)) = work.pop() {
            let here = get(&mut nfa, &mut work, (i, c, bits));
            if i < n {
                let slot = &slots[i];
                if let (Some(v), false, Some(nc)) = (&slot.value, slot.forbidden, inc(c)) {
                    let bit = dep_bits.get(names[i].as_str()).copied().unwrap_or(0);
                    let t = get(&mut nfa, &mut work, (i + 1, nc, bits | bit));
                    let mut key = if c > 0 { between.clone() } else { first_sep.clone() };
                    key.extend_from_slice(&slot.literal);
                    key.extend_from_slice(&colon);
                    let k = nfa.literal(&key);
                    let v = nfa.embed(v);
                    let f = nfa.concat(&[k, v]);
                    nfa.eps(here, f.start);
                    nfa.eps(f.end, t);
                }
                if !slot.required {
                    let t = get(&mut nfa, &mut work, (i + 1, c, bits));
                    nfa.eps(here, t);
                }
            } else {
                if let Some(nc) = inc(c) {
                    let t = get(&mut nfa, &mut work, (n, nc, bits));
                    for (k, v) in &extras {
                        let seq = vec![
                            nfa.literal(if c > 0 { &between } else { &first_sep }),
                            nfa.embed(k),
                            nfa.literal(&colon),
                            nfa.embed(v),
                        ];
                        let f = nfa.concat(&seq);
                        nfa.eps(here, f.start);
                        nfa.eps(f.end, t);
                    }
                }
                if c >= min_p && deps_ok(bits) {
                    let mut text = if c > 0 { before_close.clone() } else { Vec::new() };
                    text.push(b'}');
                    let close = nfa.literal(&text);
                    nfa.eps(here, close.start);
                    nfa.eps(close.end, end);
                }
            }
            self.check_layers(&nfa, ptr, "object")?;
        }
        self.finish_layers(&nfa, Frag { start: open.start, end }, ptr)
    }
}

impl Compiler<'_> {
    /// Bounds the layered NFA of an object or array while it is built.
    fn check_layers(&self, nfa: &Nfa, ptr: &str, what: &str) -> R<()> {
        if nfa.num_states() > self.cfg.limits.json_states * 4 {
            return Err(err(
                ptr,
                format!("the {what}'s automaton is too large (Limits::json_states)"),
            ));
        }
        Ok(())
    }

    /// Determinises a finished layered NFA.
    fn finish_layers(&mut self, nfa: &Nfa, f: Frag, ptr: &str) -> R<Dfa> {
        let r = nfa.determinize(f, self.limit());
        self.track(ptr, r)
    }
}

/// Whether a schema (anywhere inside it) may tell JSON numbers apart by value: `integer`,
/// numeric bounds, `multipleOf`, numbers in `enum`/`const`, or a `$ref` (not followed: assumed
/// to). A complement of a schema that does not accepts or rejects every number alike.
fn value_sensitive(v: &Value) -> bool {
    match v {
        Value::Object(m) => m.iter().any(|(k, x)| match k.as_str() {
            "minimum" | "maximum" | "exclusiveMinimum" | "exclusiveMaximum" | "multipleOf" | "$ref" | "$dynamicRef"
            | "$recursiveRef" => true,
            "type" => x == "integer" || x.as_array().is_some_and(|a| a.iter().any(|t| t == "integer")),
            "enum" | "const" => holds_number(x),
            _ => value_sensitive(x),
        }),
        Value::Array(a) => a.iter().any(value_sensitive),
        _ => false,
    }
}

/// Whether a JSON value holds a number anywhere.
fn holds_number(v: &Value) -> bool {
    match v {
        Value::Number(_) => true,
        Value::Array(a) => a.iter().any(holds_number),
        Value::Object(m) => m.values().any(holds_number),
        _ => false,
    }
}

fn schema_array<'v>(v: &'v Value, ptr: &str, kw: &str) -> R<&'v Vec<Value>> {
    v.as_array()
        .filter(|a| !a.is_empty() || kw == "prefixItems" || kw == "items")
        .ok_or_else(|| err(ptr, format!("{kw} must be a non-empty array of schemas")))
}

/// The keys of `m` in the global property order, unranked keys after in their own order.
fn ordered_keys<'m>(m: &'m Map<String, Value>, rank: &HashMap<String, usize>) -> Vec<&'m String> {
    let mut keys: Vec<(usize, usize, &String)> = m
        .keys()
        .enumerate()
        .map(|(i, k)| (rank.get(k).copied().unwrap_or(usize::MAX), i, k))
        .collect();
    keys.sort();
    keys.into_iter().map(|(_, _, k)| k).collect()
}

/// Writes `v` in the canonical layout: compact, object keys in the global property order
/// (unranked keys after, in their own order), strings as `serde_json` escapes them, numbers as
/// [`leaf::canonical_number`] writes them (`1.0` is `1`: `enum`/`const` compare numbers by value,
/// and `1` is an integer in every draft).
pub(crate) fn write_canonical(v: &Value, rank: &HashMap<String, usize>, point_zero: bool, out: &mut String) {
    match v {
        Value::Object(m) => {
            let keys = ordered_keys(m, rank);
            out.push('{');
            for (n, k) in keys.iter().enumerate() {
                if n > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::to_string(k).unwrap_or_default());
                out.push(':');
                write_canonical(&m[k.as_str()], rank, point_zero, out);
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (n, x) in a.iter().enumerate() {
                if n > 0 {
                    out.push(',');
                }
                write_canonical(x, rank, point_zero, out);
            }
            out.push(']');
        }
        // Numbers without a canonical text (huge integers) keep serde's, which no automaton accepts.
        Value::Number(n) => out.push_str(&leaf::canonical_number(n, point_zero).unwrap_or_else(|| n.to_string())),
        other => out.push_str(&serde_json::to_string(other).unwrap_or_default()),
    }
}

impl Compiler<'_> {
    /// The texts of the values `const`/`enum` allow. Values compare as numbers, so in draft 4
    /// (where `1` and `1.0` have different texts) an integral number stands for both.
    fn literals(&mut self, values: &[Value], ptr: &str, keyword: &str) -> Vec<String> {
        let mut out = Vec::new();
        for v in values {
            let mut texts = vec![String::new()];
            let mut full = true;
            write_variants(v, self.rank, self.point_zero, &mut texts, &mut full);
            if !full {
                self.note(
                    keyword,
                    ptr,
                    "an integral number in a large literal is written one way only, so a negation of it admits the other".into(),
                );
            }
            out.extend(texts);
        }
        out
    }
}

/// Appends every text of `v` to each of `texts` (integral numbers both as `1` and `1.0` when
/// `point_zero`); past 64 variants only the canonical one is kept and `full` is cleared.
fn write_variants(
    v: &Value,
    rank: &HashMap<String, usize>,
    point_zero: bool,
    texts: &mut Vec<String>,
    full: &mut bool,
) {
    let push_all = |texts: &mut Vec<String>, s: &str| texts.iter_mut().for_each(|t| t.push_str(s));
    match v {
        Value::Number(n) if point_zero && n.as_f64().is_some_and(|f| f.fract() == 0.0 && f.abs() < 1e15) => {
            let (int, float) = (
                leaf::canonical_number(&serde_json::Number::from(n.as_f64().unwrap_or(0.0) as i64), false),
                leaf::canonical_number(n, false).map(|i| format!("{i}.0")),
            );
            match (int, float) {
                (Some(i), Some(f)) if texts.len() * 2 <= 64 => {
                    let mut other = texts.clone();
                    push_all(texts, &i);
                    push_all(&mut other, &f);
                    texts.extend(other);
                }
                _ => {
                    *full = false;
                    let mut one = String::new();
                    write_canonical(v, rank, point_zero, &mut one);
                    push_all(texts, &one);
                }
            }
        }
        Value::Object(m) => {
            let keys = ordered_keys(m, rank);
            push_all(texts, "{");
            for (n, k) in keys.iter().enumerate() {
                if n > 0 {
                    push_all(texts, ",");
                }
                push_all(texts, &serde_json::to_string(k).unwrap_or_default());
                push_all(texts, ":");
                write_variants(&m[k.as_str()], rank, point_zero, texts, full);
            }
            push_all(texts, "}");
        }
        Value::Array(a) => {
            push_all(texts, "[");
            for (n, x) in a.iter().enumerate() {
                if n > 0 {
                    push_all(texts, ",");
                }
                write_variants(x, rank, point_zero, texts, full);
            }
            push_all(texts, "]");
        }
        other => {
            let mut one = String::new();
            write_canonical(other, rank, point_zero, &mut one);
            push_all(texts, &one);
        }
    }
}

/// The subschema that declares the plain-name fragment `name`, with its JSON pointer.
pub(crate) fn find_anchor<'v>(v: &'v Value, name: &str, ptr: &str) -> Option<(&'v Value, String)> {
    match v {
        Value::Object(m) => {
            let hash_name = format!("#{name}");
            let declares = m.get("$anchor").and_then(Value::as_str) == Some(name)
                || ["$id", "id"]
                    .iter()
                    .any(|k| m.get(*k).and_then(Value::as_str) == Some(hash_name.as_str()));
            if declares {
                return Some((v, ptr.to_string()));
            }
            m.iter()
                .filter(|(k, _)| !matches!(k.as_str(), "enum" | "const" | "examples" | "default"))
                .find_map(|(k, x)| find_anchor(x, name, &format!("{ptr}/{}", escape_pointer(k))))
        }
        Value::Array(a) => a
            .iter()
            .enumerate()
            .find_map(|(i, x)| find_anchor(x, name, &format!("{ptr}/{i}"))),
        _ => None,
    }
}

pub(crate) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        // Two hex digits after `%` (checked as bytes: slicing the `&str` could split a character).
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = |b: u8| (b as char).to_digit(16);
            if let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((hi * 16 + lo) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap_or_else(|_| s.to_string())
}
