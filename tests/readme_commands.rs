//! The commands README.md shows must work as written. Checked statically, from the manifests and
//! the sources: every `cargo run|test|bench|build|check` command in the README's shell blocks and
//! inline code names packages, examples, benches, tests, binaries and features that exist in the
//! package it selects (`-p`, or the workspace's default member), a `cargo run` of the command-line
//! tool and every `diffusion-lm ...` line names a subcommand the tool has, the repository files a
//! command reads exist, and nothing points outside the repository (`../shared`).

use std::collections::BTreeSet;
use std::path::Path;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

// ---------------------------------------------------------------------------------------------
// The workspace: packages and their targets, from the manifests (a small TOML subset) and
// Cargo's target auto-discovery.

/// One table of a manifest: `[name]` or `[[name]]` and its `key = value` entries (values raw).
struct Table {
    name: String,
    entries: Vec<(String, String)>,
}

impl Table {
    fn get(&self, key: &str) -> Option<&str> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// A line without its `#` comment (a `#` inside a string is kept).
fn strip_toml_comment(line: &str) -> &str {
    let mut in_str = false;
    for (i, c) in line.char_indices() {
        match c {
            '"' => in_str = !in_str,
            '#' if !in_str => return &line[..i],
            _ => {}
        }
    }
    line
}

/// The tables of a manifest; entries before any header belong to a table named "".
fn parse_manifest(text: &str) -> Vec<Table> {
    let mut tables = vec![Table {
        name: String::new(),
        entries: Vec::new(),
    }];
    let mut lines = text.lines().map(strip_toml_comment);
    while let Some(line) = lines.next() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if line.starts_with('[') {
            let name = line.trim_matches(|c| c == '[' || c == ']').trim().to_string();
            tables.push(Table {
                name,
                entries: Vec::new(),
            });
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let mut value = value.trim().to_string();
        // A multi-line array runs to its closing bracket.
        if value.starts_with('[') {
            while value.matches('[').count() > value.matches(']').count() {
                match lines.next() {
                    Some(more) => {
                        value.push(' ');
                        value.push_str(more.trim());
                    }
                    None => break,
                }
            }
        }
        let key = key.trim().trim_matches('"').to_string();
        tables.last_mut().unwrap().entries.push((key, value));
    }
    tables
}

/// The quoted strings of a raw value (`"a"` or `["a", "b"]`).
fn strings(raw: &str) -> Vec<String> {
    raw.split('"').skip(1).step_by(2).map(str::to_string).collect()
}

/// `dir/*.rs` stems and `dir/*/main.rs` folder names (Cargo's auto-discovered targets).
fn discovered(dir: &Path) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = entry.path();
        let name = p
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        if p.is_file() && p.extension().is_some_and(|e| e == "rs") {
            names.insert(name);
        } else if p.join("main.rs").is_file() {
            names.insert(p.file_name().unwrap().to_string_lossy().into_owned());
        }
    }
    names
}

#[derive(Debug, Default)]
struct Package {
    name: String,
    examples: BTreeSet<String>,
    benches: BTreeSet<String>,
    tests: BTreeSet<String>,
    bins: BTreeSet<String>,
    features: BTreeSet<String>,
}

fn read_package(dir: &Path) -> Package {
    let tables = parse_manifest(&read(&dir.join("Cargo.toml")));
    let mut p = Package::default();
    for t in &tables {
        let name = t.get("name").and_then(|v| strings(v).into_iter().next());
        match t.name.as_str() {
            "package" => p.name = name.expect("[package] name"),
            "example" => p.examples.extend(name),
            "bench" => p.benches.extend(name),
            "test" => p.tests.extend(name),
            "bin" => p.bins.extend(name),
            "features" => p.features.extend(t.entries.iter().map(|(k, _)| k.clone())),
            _ => {}
        }
    }
    p.examples.extend(discovered(&dir.join("examples")));
    p.benches.extend(discovered(&dir.join("benches")));
    p.tests.extend(discovered(&dir.join("tests")));
    p.bins.extend(discovered(&dir.join("src/bin")));
    // src/main.rs is a binary named after the package unless a [[bin]] claims that file.
    let main_claimed = tables
        .iter()
        .any(|t| t.name == "bin" && t.get("path").is_some_and(|v| strings(v) == ["src/main.rs"]));
    if dir.join("src/main.rs").is_file() && !main_claimed {
        p.bins.insert(p.name.clone());
    }
    p
}

struct Workspace {
    packages: Vec<Package>,
    /// Indices into `packages` of what a command without `-p` or `--workspace` selects.
    default_members: Vec<usize>,
    /// The command-line tool: its binary name and its subcommands.
    cli_bin: String,
    subcommands: BTreeSet<String>,
}

/// `TrainAr` -> `train-ar`, as clap names subcommands.
fn kebab(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            out.push('-');
        }
        out.extend(c.to_lowercase());
    }
    out
}

/// The variants of `enum Command` in the tool's main.rs, in kebab case.
fn cli_subcommands(main_rs: &str) -> BTreeSet<String> {
    let start = main_rs
        .find("enum Command {")
        .expect("cli/src/main.rs has `enum Command`");
    let body = &main_rs[start + "enum Command {".len()..];
    let body = &body[..body.find("\n}").expect("end of `enum Command`")];
    body.lines()
        .map(str::trim)
        .filter(|l| l.starts_with(|c: char| c.is_ascii_uppercase()))
        .map(|l| {
            let ident: String = l.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            kebab(&ident)
        })
        .collect()
}

fn workspace() -> Workspace {
    let tables = parse_manifest(&read(&root().join("Cargo.toml")));
    let ws = tables.iter().find(|t| t.name == "workspace").expect("[workspace]");
    let members = strings(ws.get("members").expect("workspace members"));
    let packages: Vec<Package> = members.iter().map(|m| read_package(&root().join(m))).collect();
    let default_members = match ws.get("default-members") {
        Some(v) => strings(v)
            .iter()
            .map(|d| members.iter().position(|m| m == d).expect("default member is a member"))
            .collect(),
        // A root package is the default; a virtual workspace defaults to every member.
        None => match members.iter().position(|m| m == ".") {
            Some(i) => vec![i],
            None => (0..members.len()).collect(),
        },
    };
    let subcommands = cli_subcommands(&read(&root().join("cli/src/main.rs")));
    assert!(
        subcommands.contains("generate"),
        "subcommands parsed from cli/src/main.rs: {subcommands:?}"
    );
    Workspace {
        packages,
        default_members,
        cli_bin: "diffusion-lm".into(),
        subcommands,
    }
}

// ---------------------------------------------------------------------------------------------
// The README: shell snippets and inline code, split into simple commands.

/// A piece of README text that holds commands, with the README line it starts on.
struct Snippet {
    line: usize,
    text: String,
}

/// The lines of fenced `sh`/`bash` blocks (with `\` continuations joined), and the inline code
/// spans outside fenced blocks that mention `cargo`.
fn snippets(readme: &str) -> Vec<Snippet> {
    let mut out = Vec::new();
    let mut prose = String::new(); // the text outside fenced blocks, lines kept in place
    let mut fence: Option<String> = None;
    let mut pending: Option<Snippet> = None;
    for (i, line) in readme.lines().enumerate() {
        let trimmed = line.trim_start();
        if let Some(rest) = trimmed.strip_prefix("```") {
            out.extend(pending.take());
            fence = match fence {
                None => Some(rest.trim().to_string()),
                Some(_) => None,
            };
            prose.push('\n');
            continue;
        }
        let shell = matches!(fence.as_deref(), Some("sh" | "bash" | "shell" | "console" | "zsh"));
        if fence.is_some() {
            prose.push('\n');
        } else {
            prose.push_str(line);
            prose.push('\n');
        }
        if !shell {
            continue;
        }
        let (text, continues) = match line.trim_end().strip_suffix('\\') {
            Some(head) => (head, true),
            None => (line, false),
        };
        let s = pending.get_or_insert(Snippet {
            line: i + 1,
            text: String::new(),
        });
        s.text.push(' ');
        s.text.push_str(text);
        if !continues {
            out.extend(pending.take());
        }
    }
    out.extend(pending.take());
    // Inline code: a run of backticks up to the next run of the same length.
    let bytes = prose.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'`' {
            i += 1;
            continue;
        }
        let run = bytes[i..].iter().take_while(|&&b| b == b'`').count();
        let open = i + run;
        let delim = "`".repeat(run);
        let Some(len) = prose[open..].find(&delim) else {
            break;
        };
        let code = prose[open..open + len].replace('\n', " ");
        if code.split_whitespace().any(|w| w == "cargo") {
            out.push(Snippet {
                line: prose[..i].matches('\n').count() + 1,
                text: code,
            });
        }
        i = open + len + run;
    }
    out
}

#[derive(Debug, PartialEq)]
enum Tok {
    Word(String),
    /// `&&`, `||`, `;`, `|`, `&`: ends a simple command.
    Sep,
    /// `>`, `>>`, `<`: the next word is a redirection target.
    Redirect,
}

/// Shell words with quotes removed; stops at a comment.
fn tokenize(line: &str) -> Vec<Tok> {
    let mut toks = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars().peekable();
    let end_word = |toks: &mut Vec<Tok>, word: &mut String, in_word: &mut bool| {
        if *in_word {
            toks.push(Tok::Word(std::mem::take(word)));
            *in_word = false;
        }
    };
    while let Some(c) = chars.next() {
        match c {
            '#' if !in_word => break,
            c if c.is_whitespace() => end_word(&mut toks, &mut word, &mut in_word),
            '\'' => {
                in_word = true;
                for c in chars.by_ref() {
                    if c == '\'' {
                        break;
                    }
                    word.push(c);
                }
            }
            '"' => {
                in_word = true;
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => word.extend(chars.next()),
                        c => word.push(c),
                    }
                }
            }
            '\\' => {
                in_word = true;
                word.extend(chars.next());
            }
            '&' | '|' | ';' => {
                end_word(&mut toks, &mut word, &mut in_word);
                if chars.peek() == Some(&c) {
                    chars.next();
                }
                toks.push(Tok::Sep);
            }
            '>' | '<' => {
                end_word(&mut toks, &mut word, &mut in_word);
                while chars.peek().is_some_and(|&n| n == '>' || n == '&') {
                    chars.next();
                }
                toks.push(Tok::Redirect);
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    end_word(&mut toks, &mut word, &mut in_word);
    toks
}

/// The simple commands of a line: their words, without leading `NAME=value` assignments and
/// without redirection targets.
fn commands(line: &str) -> Vec<Vec<String>> {
    let mut out = vec![Vec::new()];
    let mut redirect = false;
    for t in tokenize(line) {
        match t {
            Tok::Sep => out.push(Vec::new()),
            Tok::Redirect => redirect = true,
            Tok::Word(_) if redirect => redirect = false,
            Tok::Word(w) => {
                let cmd = out.last_mut().unwrap();
                let assignment = w.split_once('=').is_some_and(|(name, _)| {
                    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                });
                if !(cmd.is_empty() && assignment) {
                    cmd.push(w);
                }
            }
        }
    }
    out.retain(|c| !c.is_empty());
    out
}

// ---------------------------------------------------------------------------------------------
// The checks.

/// Top-level folders of files the repository ships: a command's argument under one of them must
/// exist (a path under an output option, or under `FETCHED`, need not).
const SHIPPED: &[&str] = &[
    "assets",
    "benches",
    "cli",
    "controllers",
    "data",
    "examples",
    "grammars",
    "models",
    "scripts",
    "src",
    "tests",
];
/// Git-ignored folders that a documented script fills.
const FETCHED: &[&str] = &["data/jsonschema"];
const OUTPUT_OPTIONS: &[&str] = &["--out", "--report", "--samples-out", "-o"];
/// Cargo options that take a value (besides those the check reads).
const CARGO_VALUE_OPTIONS: &[&str] = &[
    "--target",
    "--target-dir",
    "-j",
    "--jobs",
    "--profile",
    "--color",
    "--message-format",
    "--config",
    "-Z",
    "--manifest-path",
];

/// What a `cargo` command line selects, as far as the checks need.
#[derive(Default)]
struct CargoArgs {
    packages: Vec<String>,
    workspace: bool,
    examples: Vec<String>,
    benches: Vec<String>,
    tests: Vec<String>,
    bins: Vec<String>,
    features: Vec<String>,
    /// The words after `--`.
    rest: Vec<String>,
}

fn parse_cargo(words: &[String]) -> CargoArgs {
    let mut a = CargoArgs::default();
    let mut it = words.iter();
    while let Some(w) = it.next() {
        if w == "--" {
            a.rest = it.cloned().collect();
            break;
        }
        let (flag, inline) = match w.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (w.as_str(), None),
        };
        let (flag, inline) = match (flag, inline) {
            (f, None) if f.starts_with("-p") && f.len() > 2 => ("-p", Some(f[2..].to_string())),
            (f, None) if f.starts_with("-F") && f.len() > 2 => ("-F", Some(f[2..].to_string())),
            other => other,
        };
        let mut value = || inline.clone().or_else(|| it.next().cloned()).unwrap_or_default();
        match flag {
            "-p" | "--package" => a.packages.push(value()),
            "--workspace" | "--all" => a.workspace = true,
            "--example" => a.examples.push(value()),
            "--bench" => a.benches.push(value()),
            "--test" => a.tests.push(value()),
            "--bin" => a.bins.push(value()),
            "-F" | "--features" => a
                .features
                .extend(value().split([',', ' ']).filter(|f| !f.is_empty()).map(str::to_string)),
            f if CARGO_VALUE_OPTIONS.contains(&f) => {
                value();
            }
            _ => {}
        }
    }
    a
}

/// The problems of one simple command (empty when it would resolve).
fn check_command(ws: &Workspace, words: &[String]) -> Vec<String> {
    let mut problems = Vec::new();
    // Repository files it reads.
    let mut after_output_option = false;
    for w in words {
        let is_output = std::mem::replace(&mut after_output_option, OUTPUT_OPTIONS.contains(&w.as_str()));
        if w.starts_with("path/to/") || w.contains("/path/to/") {
            problems.push(format!(
                "`{w}` is a placeholder, not a file a reader can run the command with"
            ));
            continue;
        }
        let first = w.split('/').next().unwrap_or_default();
        let plain = !w.contains(['*', '?', '[', ']', '{', '}', '$', '<', '>']);
        if is_output || !plain || !w.contains('/') || !SHIPPED.contains(&first) {
            continue;
        }
        if FETCHED.iter().any(|f| w == f || w.starts_with(&format!("{f}/"))) {
            continue;
        }
        if !root().join(w).exists() {
            problems.push(format!("`{w}` does not exist in the repository"));
        }
    }
    match words.first().map(String::as_str) {
        Some("cargo") => {
            // Synopsis notation (`[--pretty]`, `...`) is for reading, not for running.
            if let Some(w) = words.iter().find(|w| w.starts_with("[-") || *w == "...") {
                problems.push(format!(
                    "`{w}` is synopsis notation; write a command that runs as written"
                ));
            }
            let sub = words.iter().skip(1).find(|w| !w.starts_with('+')).map(String::as_str);
            if matches!(sub, Some("run" | "test" | "bench" | "build" | "check")) {
                problems.extend(check_cargo(ws, sub.unwrap(), words));
            }
        }
        Some(bin) if bin == ws.cli_bin => problems.extend(check_subcommand(ws, &words[1..])),
        _ => {}
    }
    problems
}

fn check_subcommand(ws: &Workspace, args: &[String]) -> Vec<String> {
    match args.first() {
        None => vec![format!("runs `{}` without a subcommand", ws.cli_bin)],
        Some(a) if a.starts_with('-') => Vec::new(), // --help, --version
        Some(a) if ws.subcommands.contains(a) => Vec::new(),
        Some(a) => vec![format!(
            "`{}` has no subcommand `{a}` (it has: {})",
            ws.cli_bin,
            ws.subcommands.iter().cloned().collect::<Vec<_>>().join(", ")
        )],
    }
}

fn check_cargo(ws: &Workspace, sub: &str, words: &[String]) -> Vec<String> {
    let mut problems = Vec::new();
    let a = parse_cargo(&words[2..]);
    let mut selected: Vec<&Package> = Vec::new();
    for name in &a.packages {
        match ws.packages.iter().find(|p| &p.name == name) {
            Some(p) => selected.push(p),
            None => problems.push(format!("no workspace package `{name}`")),
        }
    }
    if a.packages.is_empty() {
        selected = if a.workspace {
            ws.packages.iter().collect()
        } else {
            ws.default_members.iter().map(|&i| &ws.packages[i]).collect()
        };
    }
    if selected.is_empty() {
        return problems;
    }
    let names = selected.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(", ");
    let mut need = |kind: &str, wanted: &[String], have: fn(&Package) -> &BTreeSet<String>| {
        for w in wanted {
            if !selected.iter().any(|p| have(p).contains(w)) {
                problems.push(format!("no {kind} target `{w}` in the selected package(s) {names}"));
            }
        }
    };
    need("example", &a.examples, |p| &p.examples);
    need("bench", &a.benches, |p| &p.benches);
    need("test", &a.tests, |p| &p.tests);
    need("bin", &a.bins, |p| &p.bins);
    for f in &a.features {
        let ok = match f.split_once('/') {
            Some((pkg, feat)) => ws.packages.iter().any(|p| p.name == pkg && p.features.contains(feat)),
            None => selected.iter().any(|p| p.features.contains(f)),
        };
        if !ok {
            problems.push(format!("no feature `{f}` in the selected package(s) {names}"));
        }
    }
    if sub == "run" && a.examples.is_empty() {
        // `cargo run` needs exactly one binary to run.
        let bins: Vec<&String> = if a.bins.is_empty() {
            selected.iter().flat_map(|p| &p.bins).collect()
        } else {
            a.bins.iter().collect()
        };
        match bins.as_slice() {
            [] => problems.push(format!("`cargo run` selects no binary (packages {names})")),
            [bin] if **bin == ws.cli_bin => problems.extend(check_subcommand(ws, &a.rest)),
            [_] => {}
            _ => problems.push(format!(
                "`cargo run` selects several binaries ({bins:?}); name one with --bin"
            )),
        }
    }
    problems
}

/// Every problem of a README text, one line each, and the number of cargo commands checked.
fn check_readme(ws: &Workspace, readme: &str) -> (Vec<String>, usize) {
    let mut problems = Vec::new();
    for (i, line) in readme.lines().enumerate() {
        if let Some(bad) = ["../shared", "shared/data/", "shared/gpu/"]
            .iter()
            .find(|b| line.contains(**b))
        {
            problems.push(format!(
                "README.md:{}: refers to `{bad}`, outside the repository",
                i + 1
            ));
        }
    }
    let mut cargo_commands = 0;
    for s in snippets(readme) {
        for words in commands(&s.text) {
            cargo_commands += usize::from(words[0] == "cargo");
            for p in check_command(ws, &words) {
                problems.push(format!("README.md:{}: `{}`: {p}", s.line, words.join(" ")));
            }
        }
    }
    (problems, cargo_commands)
}

#[test]
fn every_command_in_the_readme_resolves() {
    let ws = workspace();
    let readme = read(&root().join("README.md"));
    let (problems, cargo_commands) = check_readme(&ws, &readme);
    assert!(
        problems.is_empty(),
        "README.md commands that would not work as written:\n{}",
        problems.join("\n")
    );
    // Guard against a parser that silently finds nothing.
    assert!(
        cargo_commands >= 20,
        "only {cargo_commands} cargo commands found in README.md"
    );
}

#[test]
fn the_workspace_is_read_as_cargo_sees_it() {
    let ws = workspace();
    let find = |name: &str| ws.packages.iter().find(|p| p.name == name).unwrap();
    let engine = find("diffusion-lm");
    assert!(engine.examples.contains("json_restaurant") && engine.examples.contains("gpu_check"));
    assert!(engine.benches.contains("constraints") && engine.tests.contains("readme_commands"));
    assert!(engine.features.contains("cuda"));
    let cli = find("diffusion-lm-cli");
    assert_eq!(cli.bins.iter().collect::<Vec<_>>(), ["diffusion-lm"]);
    assert!(cli.examples.is_empty());
    assert_eq!(
        ws.default_members
            .iter()
            .map(|&i| ws.packages[i].name.as_str())
            .collect::<Vec<_>>(),
        ["diffusion-lm-cli"]
    );
    for sub in [
        "generate",
        "train",
        "train-ar",
        "eval",
        "train-classifier",
        "eval-attributes",
        "eval-schemas",
    ] {
        assert!(ws.subcommands.contains(sub), "{sub} in {:?}", ws.subcommands);
    }
}

/// The checker flags what it should, so a passing README means something.
#[test]
fn the_checker_catches_commands_that_would_fail() {
    let ws = workspace();
    let problems = |md: &str| check_readme(&ws, md).0;
    let fenced = |cmd: &str| format!("Run:\n\n```sh\n{cmd}\n```\n");
    for good in [
        "cargo run --release -p diffusion-lm --example regex      # a template",
        "cargo run --release -- generate --samples 8",
        "cargo run --release -- generate --regex '[0-9]{4}-[0-9]{2}' --samples 4",
        "cargo run --release --features cuda -- train --corpus data/e2e/devset.csv --out runs/x",
        "cargo run --release \\\n    -p diffusion-lm --example json_schema -- examples/schemas/restaurant.json 4",
        "cargo bench -p diffusion-lm --bench constraints -- grammar_",
        "cargo test --release --workspace",
        "cargo build --release --features cuda -p diffusion-lm-cli",
        "THREADS=8 bash benches/gpu_run.sh check .gpu/run > out.txt",
        "diffusion-lm generate --grammar grammars/arithmetic.gbnf --samples 4",
        "cargo run --release -- eval-schemas --dir data/jsonschema",
    ] {
        let p = problems(&fenced(good));
        assert!(p.is_empty(), "{good}: {p:?}");
    }
    for (bad, expect) in [
        ("cargo run --release --example regex", "no example target `regex`"),
        (
            "cargo run --release \\\n    --example json_restaurant",
            "no example target `json_restaurant`",
        ),
        (
            "cargo run --release -p diffusion-lm --example nope",
            "no example target `nope`",
        ),
        ("cargo bench --bench constraints", "no bench target `constraints`"),
        ("cargo run --release -- frobnicate --x", "no subcommand `frobnicate`"),
        ("cargo run --release", "without a subcommand"),
        ("cargo test -p no-such-package", "no workspace package"),
        ("cargo run --release --features cude -- generate", "no feature `cude`"),
        ("diffusion-lm generat --samples 4", "no subcommand `generat`"),
        (
            "cargo run --release -- train --corpus data/e2e/nope.csv --out runs/e2e",
            "does not exist",
        ),
        ("source ../shared/gpu/cuda-env.sh", "outside the repository"),
        ("cargo run --release -- generate --samples 4 [--pretty]", "synopsis"),
        (
            "cargo run --release --features cuda -- train --corpus ... --out runs/x",
            "synopsis",
        ),
        (
            "cargo run --release -p diffusion-lm --example json_schema -- path/to/schema.json 4",
            "placeholder",
        ),
    ] {
        let p = problems(&fenced(bad));
        assert!(
            p.iter().any(|m| m.contains(expect)),
            "{bad}: expected `{expect}` in {p:?}"
        );
    }
    // Inline code in prose, also across a line break.
    let p = problems("Outputs of `cargo run --release --example\ngrammar -- x` (seed 0).\n");
    assert!(p.iter().any(|m| m.contains("no example target `grammar`")), "{p:?}");
    // Other languages' blocks are not shell.
    assert!(problems("```text\ncargo run --example nope\n```\n").is_empty());
}
