//! `cargo xtask tidy`: quick checks that the docs and the code say the same
//! thing. Each finding names the file (and line) and what to change.
//!
//! 1. [`check_message_kinds`]: every protocol message kind is in the DDS
//!    IDL, the DDS wire code and `docs/protocol.md`.
//! 2. [`check_doc_paths`]: every repository path the docs name exists.
//! 3. [`check_core_uses_no_os`] and [`core_builds_for_wasm`]: the protocol
//!    core names no OS part of std nor a clock, and builds for
//!    `wasm32-unknown-unknown` (no OS): its "no IO" invariant, enforced.
//!
//! The first two read a few dozen files (milliseconds); the third is a cargo
//! build, seconds once warm.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};

/// One thing to fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Repository-relative path of the file to change.
    pub file: String,
    pub line: Option<usize>,
    pub message: String,
}

impl Problem {
    fn new(file: &str, line: Option<usize>, message: String) -> Self {
        Self {
            file: file.to_string(),
            line,
            message,
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}: {}", self.file, self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

/// Runs every check on the repository at `root`; fails listing every problem.
pub fn tidy(root: &Path) -> anyhow::Result<()> {
    let started = Instant::now();
    let sources = KindSources::read(root)?;
    let kinds = parse_message_kinds(&sources.msg).map_or(0, |k| k.len());
    let mut problems = check_message_kinds(&sources);
    problems.extend(check_core_uses_no_os(&rust_files(root, CORE_SRC)?));
    let docs = find_docs(root)?;
    let mut paths = 0;
    for doc in &docs {
        let (checked, found) = check_doc_paths(doc, &Disk(root));
        paths += checked.len();
        problems.extend(found);
    }
    eprintln!(
        "tidy: {kinds} message kinds, {paths} paths named in {} docs, checked in {} ms",
        docs.len(),
        started.elapsed().as_millis()
    );
    for p in &problems {
        eprintln!("tidy: {p}");
    }
    let wasm = core_builds_for_wasm(root);
    match (problems.len(), wasm) {
        (0, Ok(())) => Ok(()),
        (0, Err(e)) => Err(e),
        (n, Ok(())) => bail!("tidy: {n} problem(s), listed above"),
        (n, Err(e)) => bail!("tidy: {n} problem(s), listed above, and {e:#}"),
    }
}

// ------------------------------------------------------------ wasm32 core

/// The protocol core builds for `wasm32-unknown-unknown`, a target with no
/// OS: a dependency that needs one (OS randomness through `getrandom`, `libc`,
/// sockets, ...) breaks the build. Same target dir as the rest of the build
/// (`CARGO_TARGET_DIR` is inherited). std's own `fs`, `net`, `thread` and
/// clocks still compile there (they fail at run time): [`check_core_uses_no_os`]
/// catches those.
pub fn core_builds_for_wasm(root: &Path) -> anyhow::Result<()> {
    let args = [
        "build",
        "--quiet",
        "-p",
        "wallance-core",
        "--target",
        "wasm32-unknown-unknown",
    ];
    eprintln!("$ cargo {}", args.join(" "));
    let started = Instant::now();
    let status = Command::new("cargo")
        .args(args)
        .current_dir(root)
        .status()
        .context("could not start cargo")?;
    if !status.success() {
        bail!(
            "host/core/Cargo.toml: wallance-core does not build for wasm32-unknown-unknown ({status}): the protocol core \
             must need no OS (no IO, clock, threads or OS randomness; ARCHITECTURE.md, host/core invariants). Remove \
             the dependency or feature the errors above point to, or move that code out of the core. (If the target \
             itself is missing: cargo xtask setup.)"
        );
    }
    eprintln!(
        "tidy: wallance-core builds for wasm32 ({:.1} s)",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

pub const CORE_SRC: &str = "host/core/src";

/// What the core must not name (outside `//` comments): the OS parts of std
/// and the clocks. Time is an argument and keys come in (ARCHITECTURE.md).
pub const NOT_IN_CORE: [&str; 10] = [
    "std::fs",
    "std::net",
    "std::thread",
    "std::process",
    "std::env",
    "std::io",
    "print!",
    "println!",
    "SystemTime",
    "Instant",
];

/// (repository path, text) of every `.rs` file under `dir`.
fn rust_files(root: &Path, dir: &str) -> anyhow::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(root.join(dir)).with_context(|| format!("reading {dir}"))? {
        let entry = entry?;
        let path = format!("{dir}/{}", entry.file_name().to_string_lossy());
        if entry.file_type()?.is_dir() {
            out.extend(rust_files(root, &path)?);
        } else if path.ends_with(".rs") {
            out.push((path.clone(), std::fs::read_to_string(root.join(&path))?));
        }
    }
    out.sort();
    Ok(out)
}

/// No line of `host/core/src` (outside `//` comments) names one of
/// [`NOT_IN_CORE`]: the core does no IO and reads no clock.
pub fn check_core_uses_no_os(files: &[(String, String)]) -> Vec<Problem> {
    let mut out = Vec::new();
    for (path, text) in files {
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            if let Some(word) = NOT_IN_CORE.iter().find(|w| code.contains(*w)) {
                out.push(Problem::new(
                    path,
                    Some(n + 1),
                    format!(
                        "the protocol core uses `{word}`: it must do no IO and read no clock (time is an argument, \
                         keys come in: ARCHITECTURE.md, host/core invariants); move this to an adapter"
                    ),
                ));
            }
        }
    }
    out
}

// ---------------------------------------------------------- message kinds

pub const MSG_RS: &str = "host/core/src/msg.rs";
pub const IDL_DIR: &str = "host/dds/idl";
pub const TOPICS_RS: &str = "host/dds/src/topics.rs";
pub const WIRE_RS: &str = "host/dds/src/wire.rs";
pub const PROTOCOL_MD: &str = "docs/protocol.md";

/// The files [`check_message_kinds`] reads, as text.
#[derive(Debug, Clone, Default)]
pub struct KindSources {
    pub msg: String,
    /// (repository path, text) of every `host/dds/idl/*.idl`.
    pub idl: Vec<(String, String)>,
    pub topics: String,
    pub wire: String,
    pub protocol: String,
}

impl KindSources {
    pub fn read(root: &Path) -> anyhow::Result<Self> {
        let read = |p: &str| std::fs::read_to_string(root.join(p)).with_context(|| format!("reading {p}"));
        let mut idl = Vec::new();
        for entry in std::fs::read_dir(root.join(IDL_DIR)).with_context(|| format!("reading {IDL_DIR}"))? {
            let name = entry?.file_name().to_string_lossy().into_owned();
            if name.ends_with(".idl") {
                let path = format!("{IDL_DIR}/{name}");
                idl.push((path.clone(), read(&path)?));
            }
        }
        idl.sort();
        Ok(Self {
            msg: read(MSG_RS)?,
            idl,
            topics: read(TOPICS_RS)?,
            wire: read(WIRE_RS)?,
            protocol: read(PROTOCOL_MD)?,
        })
    }
}

/// A variant of the core's `Message` enum: `Variant(Payload)` (a boxed
/// payload counts as its inner type).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageKind {
    pub variant: String,
    pub payload: String,
    pub line: usize,
}

/// The variants of `pub enum Message { ... }` in `msg.rs`, one per line.
pub fn parse_message_kinds(msg: &str) -> Result<Vec<MessageKind>, Problem> {
    let lines: Vec<&str> = msg.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.trim() == "pub enum Message {")
        .ok_or_else(|| {
            Problem::new(
                MSG_RS,
                None,
                "no `pub enum Message {` found: update xtask/src/tidy.rs if it moved".into(),
            )
        })?;
    let mut kinds = Vec::new();
    for (i, raw) in lines.iter().enumerate().skip(start + 1) {
        let l = raw.trim();
        if l.starts_with('}') {
            return Ok(kinds);
        }
        if l.is_empty() || l.starts_with("//") || l.starts_with("#[") {
            continue;
        }
        let parsed = l
            .strip_suffix(',')
            .unwrap_or(l)
            .strip_suffix(')')
            .and_then(|l| l.split_once('('))
            .map(|(v, p)| (v.trim(), p.trim()))
            .map(|(v, p)| (v, p.strip_prefix("Box<").and_then(|p| p.strip_suffix('>')).unwrap_or(p)))
            .filter(|(v, p)| is_ident(v) && is_ident(p));
        let Some((variant, payload)) = parsed else {
            return Err(Problem::new(
                MSG_RS,
                Some(i + 1),
                format!("cannot read `{l}` as a `Variant(Payload),` of `Message`: update xtask/src/tidy.rs"),
            ));
        };
        kinds.push(MessageKind {
            variant: variant.into(),
            payload: payload.into(),
            line: i + 1,
        });
    }
    Err(Problem::new(
        MSG_RS,
        Some(start + 1),
        "`pub enum Message` is not closed".into(),
    ))
}

fn is_ident(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Some line declares `struct <name>` (IDL or Rust, any annotations before).
fn declares_struct(text: &str, name: &str) -> bool {
    text.lines().any(|l| {
        let words: Vec<&str> = l.split_whitespace().collect();
        words
            .windows(2)
            .any(|w| w[0] == "struct" && w[1].trim_end_matches('{') == name)
    })
}

/// Every message kind of the protocol is carried by DDS and documented.
///
/// For each variant `V(T)` of `pub enum Message` in `host/core/src/msg.rs`
/// (`T` unboxed; `V` is what the docs call the message, `T` the IDL type),
/// the exact textual rules are:
/// - IDL: some `host/dds/idl/*.idl` declares `struct T` and names
///   `wallance::T` in a `//` comment line (the topic and QoS table);
/// - `host/dds/src/topics.rs`: a `TopicId::V =>` arm (in `TopicId::spec`),
///   the type name `"wallance::T"`, and `TopicId::V` listed in `TopicId::ALL`;
/// - `host/dds/src/wire.rs`: `struct T` (the IDL mirror), a line starting
///   `Message::V(m) =>` (the arm of `WireMessage::from_message`) and a line
///   holding `WireMessage::V(m) => Message::V(` (`WireMessage::into_message`);
/// - `docs/protocol.md`: a row of the Messages table starting `| V |`.
pub fn check_message_kinds(s: &KindSources) -> Vec<Problem> {
    let kinds = match parse_message_kinds(&s.msg) {
        Ok(k) => k,
        Err(p) => return vec![p],
    };
    let mut out = Vec::new();
    let all = s
        .topics
        .split_once("pub const ALL")
        .and_then(|(_, rest)| rest.split_once("];"))
        .map_or("", |(all, _)| all);
    let first_idl = s.idl.first().map_or(IDL_DIR, |(p, _)| p.as_str());
    for k in &kinds {
        let (v, t) = (k.variant.as_str(), k.payload.as_str());
        let what = format!("message kind `{v}` (`Message::{v}({t})`, {MSG_RS}:{})", k.line);
        let mut miss = |file: &str, fix: String| out.push(Problem::new(file, None, format!("{what}: {fix}")));
        if !s.idl.iter().any(|(_, text)| declares_struct(text, t)) {
            miss(
                first_idl,
                format!("no IDL struct `{t}`: add `@final struct {t} {{ ... }};` to the module"),
            );
        }
        let qos_row = format!("wallance::{t}");
        if !s.idl.iter().any(|(_, text)| {
            text.lines()
                .any(|l| l.trim_start().starts_with("//") && l.split_whitespace().any(|w| w == qos_row))
        }) {
            miss(
                first_idl,
                format!("the topic and QoS table in the header comment has no row for `{qos_row}`"),
            );
        }
        if !s.topics.contains(&format!("TopicId::{v} =>")) {
            miss(
                TOPICS_RS,
                format!("no `TopicId::{v} =>` arm in `TopicId::spec`: add the topic and its QoS"),
            );
        }
        if !s.topics.contains(&format!("\"{qos_row}\"")) {
            miss(
                TOPICS_RS,
                format!("no topic has the type name \"{qos_row}\" (the IDL struct other vendors match)"),
            );
        }
        let listed = format!("TopicId::{v}");
        if !all
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .any(|w| w == listed)
        {
            miss(TOPICS_RS, format!("`TopicId::ALL` does not list `TopicId::{v}`"));
        }
        if !declares_struct(&s.wire, t) {
            miss(WIRE_RS, format!("no `pub struct {t}` mirroring the IDL struct"));
        }
        if !s
            .wire
            .lines()
            .any(|l| l.trim_start().starts_with(&format!("Message::{v}(m) =>")))
        {
            miss(
                WIRE_RS,
                format!("no `Message::{v}(m) =>` arm in `WireMessage::from_message` (encode)"),
            );
        }
        if !s.wire.contains(&format!("WireMessage::{v}(m) => Message::{v}(")) {
            miss(
                WIRE_RS,
                format!("no `WireMessage::{v}(m) => Message::{v}(...)` arm in `WireMessage::into_message` (decode)"),
            );
        }
        if !s.protocol.lines().any(|l| l.starts_with(&format!("| {v} |"))) {
            miss(
                PROTOCOL_MD,
                format!(
                    "no `| {v} | fields | size |` row in the Messages table (and assert the size in \
                     host/core/tests/wire.rs, message_sizes_are_what_the_protocol_doc_says)"
                ),
            );
        }
    }
    out
}

// -------------------------------------------------------------- doc paths

/// What exists in the repository (the disk, or a list in the tests).
pub trait Tree {
    fn is_file(&self, path: &str) -> bool;
    fn is_dir(&self, path: &str) -> bool;
    fn exists(&self, path: &str) -> bool {
        self.is_file(path) || self.is_dir(path)
    }
}

/// The repository on disk.
#[derive(Debug)]
pub struct Disk<'a>(pub &'a Path);

impl Tree for Disk<'_> {
    fn is_file(&self, path: &str) -> bool {
        self.0.join(path).is_file()
    }
    fn is_dir(&self, path: &str) -> bool {
        self.0.join(path).is_dir()
    }
}

/// A list of files; their parent folders exist too.
impl Tree for BTreeSet<String> {
    fn is_file(&self, path: &str) -> bool {
        self.contains(path)
    }
    fn is_dir(&self, path: &str) -> bool {
        path.is_empty()
            || self
                .range(format!("{path}/")..)
                .next()
                .is_some_and(|f| f.starts_with(&format!("{path}/")))
    }
}

/// Markdown to check: a `.md` file, or a crate root's top `//!` comment.
#[derive(Debug, Clone)]
pub struct Doc {
    /// Repository-relative path of the file.
    pub path: String,
    /// Markdown (a `//!` comment with its `//! ` prefixes removed).
    pub text: String,
    /// Line of the file where `text` starts (1 for a `.md` file).
    pub first_line: usize,
    /// The crate this doc belongs to, if it is a crate's README or root.
    pub crate_dir: Option<String>,
}

impl Doc {
    fn dir(&self) -> &str {
        self.path.rsplit_once('/').map_or("", |(d, _)| d)
    }
}

/// `README.md`, `ARCHITECTURE.md`, `docs/*.md`, every other `README.md` in
/// the repository, and the top `//!` comment of every crate root
/// (`src/lib.rs`, else `src/main.rs`, beside a `Cargo.toml`). Skips hidden
/// folders and `target`.
pub fn find_docs(root: &Path) -> anyhow::Result<Vec<Doc>> {
    let mut docs = Vec::new();
    let md = |path: String, crate_dir: Option<String>| -> anyhow::Result<Doc> {
        Ok(Doc {
            text: std::fs::read_to_string(root.join(&path)).with_context(|| format!("reading {path}"))?,
            path,
            first_line: 1,
            crate_dir,
        })
    };
    docs.push(md("ARCHITECTURE.md".into(), None)?);
    let mut in_docs: Vec<String> = std::fs::read_dir(root.join("docs"))?
        .map(|e| Ok(e?.file_name().to_string_lossy().into_owned()))
        .collect::<std::io::Result<_>>()?;
    in_docs.sort();
    for name in in_docs.into_iter().filter(|n| n.ends_with(".md")) {
        docs.push(md(format!("docs/{name}"), None)?);
    }
    let mut stack = vec![String::new()];
    while let Some(dir) = stack.pop() {
        let abs = root.join(&dir);
        let join = |name: &str| {
            if dir.is_empty() {
                name.to_string()
            } else {
                format!("{dir}/{name}")
            }
        };
        let is_crate = abs.join("Cargo.toml").is_file() && !dir.is_empty();
        let crate_dir = is_crate.then(|| dir.clone());
        if abs.join("README.md").is_file() {
            docs.push(md(join("README.md"), crate_dir.clone())?);
        }
        if is_crate {
            let root_file = ["src/lib.rs", "src/main.rs"]
                .into_iter()
                .find(|f| abs.join(f).is_file());
            if let Some(f) = root_file {
                let path = join(f);
                let text = std::fs::read_to_string(root.join(&path)).with_context(|| format!("reading {path}"))?;
                let (first_line, text) = top_doc_comment(&text);
                docs.push(Doc {
                    path,
                    text,
                    first_line,
                    crate_dir: crate_dir.clone(),
                });
            }
        }
        let mut subdirs = Vec::new();
        for entry in std::fs::read_dir(&abs).with_context(|| format!("reading {}", abs.display()))? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if entry.file_type()?.is_dir() && !name.starts_with('.') && name != "target" {
                subdirs.push(join(&name));
            }
        }
        subdirs.sort_unstable_by(|a, b| b.cmp(a));
        stack.extend(subdirs);
    }
    Ok(docs)
}

/// The leading `//!` lines of a Rust file, prefixes removed, and the line
/// they start at.
pub fn top_doc_comment(rust: &str) -> (usize, String) {
    let lines: Vec<&str> = rust.lines().collect();
    let start = lines.iter().position(|l| !l.trim().is_empty()).unwrap_or(0);
    let text: Vec<&str> = lines[start..]
        .iter()
        .map_while(|l| l.strip_prefix("//!"))
        .map(|l| l.strip_prefix(' ').unwrap_or(l))
        .collect();
    (start + 1, text.join("\n"))
}

/// A path-like mention in a doc.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Mention {
    text: String,
    /// Line in the doc's text (0-based).
    line: usize,
    /// A Markdown link target rather than a code span.
    link: bool,
}

/// Code spans and link targets outside fenced code blocks, and for each
/// line the folders named by the nearest heading above it.
fn mentions(text: &str) -> (Vec<Mention>, Vec<(usize, Vec<String>)>) {
    // Blank out fenced blocks (commands and code, not references), keeping
    // line numbers.
    let mut fenced = false;
    let mut prose = String::with_capacity(text.len());
    for l in text.lines() {
        let t = l.trim_start();
        if t.starts_with("```") || t.starts_with("~~~") {
            fenced = !fenced;
        } else if !fenced {
            prose.push_str(l);
        }
        prose.push('\n');
    }
    let line_of = |at: usize| prose[..at].matches('\n').count();
    let mut out = Vec::new();
    let b = prose.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'`' => {
                let run = b[i..].iter().take_while(|&&c| c == b'`').count();
                let fence = "`".repeat(run);
                let body = i + run;
                // The next run of exactly `run` backticks, in the same paragraph.
                let mut j = body;
                let end = loop {
                    let Some(k) = prose[j..].find(&fence).map(|k| j + k) else {
                        break None;
                    };
                    let len = b[k..].iter().take_while(|&&c| c == b'`').count();
                    if len == run {
                        break Some(k);
                    }
                    j = k + len;
                };
                match end.filter(|&e| !prose[body..e].contains("\n\n")) {
                    Some(e) => {
                        out.push(Mention {
                            text: prose[body..e].trim().to_string(),
                            line: line_of(body),
                            link: false,
                        });
                        i = e + run;
                    }
                    None => i = body,
                }
            }
            b']' if b.get(i + 1) == Some(&b'(') => {
                let start = i + 2;
                match prose[start..].find([')', '\n']) {
                    Some(k) if b[start + k] == b')' => {
                        out.push(Mention {
                            text: prose[start..start + k].trim().to_string(),
                            line: line_of(start),
                            link: true,
                        });
                        i = start + k + 1;
                    }
                    _ => i = start,
                }
            }
            _ => i += 1,
        }
    }
    // Reference-style link definitions: `[name]: target`.
    for (n, l) in prose.lines().enumerate() {
        if let Some(rest) = l.strip_prefix('[')
            && let Some((_, target)) = rest.split_once("]:")
        {
            out.push(Mention {
                text: target.trim().to_string(),
                line: n,
                link: true,
            });
        }
    }
    let headings = prose
        .lines()
        .enumerate()
        .filter(|(_, l)| l.starts_with('#'))
        .map(|(n, _)| {
            let named = out
                .iter()
                .filter(|m| m.line == n && !m.link)
                .map(|m| m.text.trim_end_matches('/').to_string())
                .collect();
            (n, named)
        })
        .collect();
    (out, headings)
}

/// `base/rel` with `.` and `..` resolved; `None` if it leaves the repository.
fn join(base: &str, rel: &str) -> Option<String> {
    let mut parts: Vec<&str> = base.split('/').filter(|p| !p.is_empty()).collect();
    for p in rel.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            p => parts.push(p),
        }
    }
    Some(parts.join("/"))
}

/// Extensions of source files a bare file name (no `/`) is checked for;
/// other bare names (`network.toml`, `espresso.wasm`) are files the code
/// makes or the operator writes, not repository files.
const SOURCE_EXTENSIONS: [&str; 6] = ["rs", "md", "idl", "wit", "py", "sh"];

/// Every repository path a doc names exists.
///
/// What is a path: a Markdown link target, or an inline code span (fenced
/// blocks are commands, not references) with no whitespace, none of
/// ``< > * ? { } [ ] ( ) $ = , ; : | " ' ` \`` (URLs, globs, placeholders
/// such as `<data_dir>/...`, Rust paths, commands), not starting with `/`,
/// `~` or `-`, and either containing a `/` or a bare file name.
///
/// Where it is looked up, its *bases*: the repository root, the doc's folder,
/// the crate's folder for a crate's README or root, and the folders the
/// nearest heading above names in code spans (ARCHITECTURE.md's codemap:
/// "### `host/core`" makes `tests/wire.rs` mean `host/core/tests/wire.rs`);
/// a bare file name also in each base's `src/`.
///
/// What must exist:
/// - a link target (fragment removed; no `scheme://`, `mailto:`, `::`):
///   always, relative to the doc's folder (as Markdown renders it) or,
///   in a `//!` comment, to any base;
/// - a code span with a `/`: when its first component is a folder in some
///   base (so `host/...`, `docs/...`, `.ci/run`, `idl/...` in the DDS README
///   are checked; `net/node-1/node.toml` or `api/buy` are not); it must then
///   exist in some base;
/// - a bare file name ending in `.rs`, `.md`, `.idl`, `.wit`, `.py`, `.sh`:
///   only under a heading naming a folder (elsewhere the folder it is in is
///   only implied by the prose), and it must then exist in some base or its
///   `src/` (`daemon.rs` under "### `host/node`" is `host/node/src/daemon.rs`).
///
/// Returns the mentions checked (existing or not) and the problems.
pub fn check_doc_paths(doc: &Doc, tree: &dyn Tree) -> (Vec<String>, Vec<Problem>) {
    let (mentions, headings) = mentions(&doc.text);
    let mut checked = Vec::new();
    let mut problems = Vec::new();
    for m in mentions {
        let mut bases: Vec<&str> = vec!["", doc.dir()];
        bases.extend(doc.crate_dir.as_deref());
        // Folders the heading names, from the root or the doc's folders.
        let section: Vec<String> = headings
            .iter()
            .rev()
            .find(|(n, _)| *n <= m.line)
            .map_or(&[][..], |(_, named)| named)
            .iter()
            .flat_map(|d| bases.iter().filter_map(move |b| join(b, d)))
            .filter(|d| tree.is_dir(d))
            .collect();
        bases.extend(section.iter().map(String::as_str));
        let line = Some(doc.first_line + m.line);
        let missing = |what: &str, looked: &[String]| {
            Problem::new(
                &doc.path,
                line,
                format!(
                    "{what} `{}` does not exist (looked for {}): fix the path or remove the mention",
                    m.text,
                    looked.join(", ")
                ),
            )
        };
        if m.link {
            let target = m.text.trim_start_matches('<').trim_end_matches('>');
            let target = target.split('#').next().unwrap_or("").trim_end_matches('/');
            if target.is_empty() || target.contains("://") || target.starts_with("mailto:") || target.contains("::") {
                continue;
            }
            let link_bases: &[&str] = if doc.path.ends_with(".rs") {
                &bases
            } else {
                &[doc.dir()]
            };
            let candidates: Vec<String> = link_bases.iter().filter_map(|b| join(b, target)).collect();
            checked.push(m.text.clone());
            if !candidates.is_empty() && !candidates.iter().any(|c| tree.exists(c)) {
                problems.push(missing("link target", &candidates));
            }
            continue;
        }
        let t = m.text.trim_end_matches('/');
        let forbidden = "<>*?{}[]()$=,;:|\"'`\\";
        if t.is_empty()
            || t.chars().any(|c| c.is_whitespace() || forbidden.contains(c))
            || t.starts_with(['/', '~', '-'])
        {
            continue;
        }
        // `fuzz/` names a folder: checked like `fuzz/x`.
        if m.text.contains('/') {
            let first = t.split('/').next().unwrap_or("");
            // Build outputs (`target/...`) exist only after a build.
            if first == "target" {
                continue;
            }
            let is_repo_path = first == ".." || bases.iter().any(|b| join(b, first).is_some_and(|d| tree.is_dir(&d)));
            if !is_repo_path {
                continue;
            }
            let candidates: Vec<String> = bases.iter().filter_map(|b| join(b, t)).collect();
            checked.push(m.text.clone());
            if !candidates.iter().any(|c| tree.exists(c)) {
                problems.push(missing("path", &dedup(candidates)));
            }
        } else {
            let ext = t.rsplit_once('.').map_or("", |(_, e)| e);
            if !SOURCE_EXTENSIONS.contains(&ext) || section.is_empty() {
                continue;
            }
            let candidates: Vec<String> = bases
                .iter()
                .flat_map(|b| [join(b, t), join(b, &format!("src/{t}"))])
                .flatten()
                .collect();
            checked.push(m.text.clone());
            if !candidates.iter().any(|c| tree.is_file(c)) {
                problems.push(missing("file", &dedup(candidates)));
            }
        }
    }
    (checked, problems)
}

fn dedup(v: Vec<String>) -> Vec<String> {
    let mut seen = BTreeSet::new();
    v.into_iter().filter(|s| seen.insert(s.clone())).collect()
}

/// The repository root: the folder above this crate.
pub fn repository_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the repository")
        .to_path_buf()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSG: &str = "
/// A message.
#[derive(Debug)]
pub enum Message {
    Share(Share),
    // comment
    Certificate(Box<Certificate>),
    Digest(SyncDigest),
}
";

    fn complete() -> KindSources {
        KindSources {
            msg: MSG.into(),
            idl: vec![(
                "host/dds/idl/w.idl".into(),
                "//   wallance_share  wallance::Share  Volatile\n\
                 //   wallance_certificate  wallance::Certificate\n\
                 //   wallance_sync_digest  wallance::SyncDigest\n\
                 module wallance {\n  @final struct Share {\n  };\n  @final struct Certificate {\n  };\n\
                 @final struct SyncDigest {\n  };\n};\n"
                    .into(),
            )],
            topics: "pub const ALL: [TopicId; 3] = [TopicId::Share, TopicId::Certificate, TopicId::Digest];\n\
                     TopicId::Share => volatile(\"wallance_share\", \"wallance::Share\", 1),\n\
                     TopicId::Certificate => TopicSpec { type_name: \"wallance::Certificate\" },\n\
                     TopicId::Digest => TopicSpec { type_name: \"wallance::SyncDigest\" },\n"
                .into(),
            wire: "pub struct Share {}\npub struct Certificate {}\npub struct SyncDigest {}\n\
                   Message::Share(m) => WireMessage::Share(Share {}),\n\
                   Message::Certificate(m) => {\n\
                   Message::Digest(m) => WireMessage::Digest(SyncDigest {}),\n\
                   WireMessage::Share(m) => Message::Share(m.try_into()?),\n\
                   WireMessage::Certificate(m) => Message::Certificate(Box::new((*m).try_into()?)),\n\
                   WireMessage::Digest(m) => Message::Digest(m.into()),\n"
                .into(),
            protocol: "| message | fields | size |\n| Share | a | 1 |\n| Certificate | b | 2 |\n| Digest | c | 3 |\n"
                .into(),
        }
    }

    #[test]
    fn os_use_in_the_core_is_caught() {
        let files = vec![(
            "host/core/src/core.rs".to_string(),
            "use std::collections::BTreeMap;\n// no std::fs here\nlet t = std::time::Instant::now();\n".to_string(),
        )];
        let p = check_core_uses_no_os(&files);
        assert_eq!(p.len(), 1, "{p:#?}");
        assert_eq!((p[0].file.as_str(), p[0].line), ("host/core/src/core.rs", Some(3)));
        assert!(p[0].message.contains("`Instant`"));
    }

    #[test]
    fn message_kinds_are_read_from_the_enum() {
        let kinds = parse_message_kinds(MSG).unwrap();
        let names: Vec<(&str, &str, usize)> = kinds
            .iter()
            .map(|k| (k.variant.as_str(), k.payload.as_str(), k.line))
            .collect();
        assert_eq!(
            names,
            [
                ("Share", "Share", 5),
                ("Certificate", "Certificate", 7),
                ("Digest", "SyncDigest", 8)
            ]
        );
        assert!(parse_message_kinds("pub enum Other {}").is_err());
        assert!(parse_message_kinds("pub enum Message {\n    Share { x: u8 },\n}").is_err());
    }

    #[test]
    fn a_complete_set_of_kinds_passes() {
        assert_eq!(check_message_kinds(&complete()), []);
    }

    fn one_problem(s: &KindSources, file: &str, says: &str) {
        let p = check_message_kinds(s);
        assert_eq!(p.len(), 1, "{p:#?}");
        assert_eq!(p[0].file, file);
        assert!(p[0].message.contains(says), "{}", p[0]);
    }

    #[test]
    fn a_kind_missing_from_the_idl_is_caught() {
        let mut s = complete();
        s.idl[0].1 = s.idl[0].1.replace("struct SyncDigest", "struct Digest");
        one_problem(&s, "host/dds/idl/w.idl", "no IDL struct `SyncDigest`");
        let mut s = complete();
        s.idl[0].1 = s.idl[0]
            .1
            .replace("//   wallance_sync_digest  wallance::SyncDigest\n", "");
        one_problem(&s, "host/dds/idl/w.idl", "no row for `wallance::SyncDigest`");
    }

    #[test]
    fn a_kind_missing_from_the_topics_is_caught() {
        let mut s = complete();
        s.topics = s.topics.replace("TopicId::Certificate =>", "TopicId::Other =>");
        one_problem(&s, TOPICS_RS, "no `TopicId::Certificate =>` arm");
        let mut s = complete();
        s.topics = s.topics.replace(", TopicId::Digest]", "]");
        one_problem(&s, TOPICS_RS, "`TopicId::ALL` does not list `TopicId::Digest`");
        let mut s = complete();
        s.topics = s.topics.replace("\"wallance::Share\"", "\"wallance::Shares\"");
        one_problem(&s, TOPICS_RS, "\"wallance::Share\"");
    }

    #[test]
    fn a_kind_missing_from_the_wire_code_is_caught() {
        let mut s = complete();
        s.wire = s
            .wire
            .replace("WireMessage::Digest(m) => Message::Digest(m.into()),\n", "");
        one_problem(&s, WIRE_RS, "`WireMessage::into_message` (decode)");
        let mut s = complete();
        s.wire = s.wire.replace("Message::Certificate(m) => {\n", "");
        one_problem(&s, WIRE_RS, "`WireMessage::from_message` (encode)");
        let mut s = complete();
        s.wire = s.wire.replace("pub struct Share {}", "");
        one_problem(&s, WIRE_RS, "no `pub struct Share`");
    }

    #[test]
    fn a_kind_missing_from_the_protocol_doc_is_caught() {
        let mut s = complete();
        s.protocol = s.protocol.replace("| Digest | c | 3 |\n", "");
        one_problem(&s, PROTOCOL_MD, "no `| Digest | fields | size |` row");
        // A new variant in the core is missing everywhere at once.
        let mut s = complete();
        s.msg = s
            .msg
            .replace("    Digest(SyncDigest),", "    Digest(SyncDigest),\n    Ping(Ping),");
        let p = check_message_kinds(&s);
        assert_eq!(p.len(), 9, "{p:#?}");
        assert!(
            p.iter()
                .all(|p| p.message.starts_with("message kind `Ping` (`Message::Ping(Ping)`"))
        );
    }

    fn tree() -> BTreeSet<String> {
        [
            "README.md",
            "docs/protocol.md",
            "host/core/src/msg.rs",
            "host/core/tests/wire.rs",
            "host/core/fuzz/Cargo.toml",
            "host/dds/README.md",
            "host/dds/idl/wallance.idl",
            ".ci/run",
            "tests/src/lib.rs",
        ]
        .into_iter()
        .map(String::from)
        .collect()
    }

    fn check(path: &str, crate_dir: Option<&str>, text: &str) -> Vec<Problem> {
        let doc = Doc {
            path: path.into(),
            text: text.into(),
            first_line: 1,
            crate_dir: crate_dir.map(String::from),
        };
        check_doc_paths(&doc, &tree()).1
    }

    #[test]
    fn existing_paths_and_things_that_are_not_paths_pass() {
        let text = "See [the protocol](docs/protocol.md#messages), `host/core/src/msg.rs`, `host/core/`,\n\
                    `.ci/run`, [web](https://example.com/a/b.md), `host/core/tests/*.rs`,\n\
                    `<data_dir>/store.redb`, `net/node-<i>/node.toml`, `api/buy`, `POST /api/buy`,\n\
                    `/metrics`, `wallance_core::msg::Message`, `1/rate`, `espresso.wasm`, `msg.rs`,\n\
                    `network.toml`, `\"wallance/vote/v1\"`.\n\
                    ```sh\ncat host/gone.rs `host/gone.rs`\n```\n\
                    [rustdds]: https://docs.rs/rustdds\n";
        assert_eq!(check("README.md", None, text), []);
    }

    #[test]
    fn a_missing_path_is_caught_with_its_line() {
        let p = check(
            "README.md",
            None,
            "one\ntwo `host/core/src/gone.rs` and `docs/gone.md`\n",
        );
        assert_eq!(p.len(), 2, "{p:#?}");
        assert_eq!((p[0].file.as_str(), p[0].line), ("README.md", Some(2)));
        assert!(
            p[0].message.contains("`host/core/src/gone.rs` does not exist"),
            "{}",
            p[0]
        );
        assert!(p[1].message.contains("`docs/gone.md`"), "{}", p[1]);
        // A code span may wrap lines within a paragraph.
        let p = check("README.md", None, "`cargo\nfmt` and\n`.ci/gone`\n");
        assert_eq!(p.len(), 1, "{p:#?}");
        assert_eq!(p[0].line, Some(3));
    }

    #[test]
    fn a_missing_link_target_is_caught_relative_to_the_doc() {
        let p = check(
            "docs/protocol.md",
            None,
            "[ok](../README.md) [bad](protocol2.md) [root](docs/protocol.md)",
        );
        assert_eq!(p.len(), 2, "{p:#?}");
        assert!(p[0].message.contains("link target `protocol2.md`"), "{}", p[0]);
        assert!(p[1].message.contains("docs/docs/protocol.md"), "{}", p[1]);
    }

    #[test]
    fn paths_resolve_against_the_docs_folder_crate_and_heading() {
        // The DDS README names its own files relative to its folder.
        let p = check(
            "host/dds/README.md",
            Some("host/dds"),
            "`idl/wallance.idl` `idl/gone.idl` `gone.rs`",
        );
        assert_eq!(p.len(), 1, "{p:#?}");
        assert!(p[0].message.contains("`idl/gone.idl`"));
        let p = check(
            "host/dds/README.md",
            Some("host/dds"),
            "## `idl/`
`wallance.idl` `gone.idl`",
        );
        assert_eq!(p.len(), 1, "{p:#?}");
        assert!(p[0].message.contains("file `gone.idl`"));
        // A codemap heading names the folder of what follows it.
        let text = "# Map\n`msg.rs`\n### `host/core` (crate `wallance-core`)\n`msg.rs`, `tests/wire.rs`, \
                    `fuzz/`, `tests/gone.rs`, `gone.rs`, `espresso.wasm`\n### `docs/`\n`tests/wire.rs`\n";
        let p = check("ARCHITECTURE.md", None, text);
        let found: Vec<(Option<usize>, bool)> = p.iter().map(|p| (p.line, p.message.contains("gone"))).collect();
        assert_eq!(found, [(Some(4), true), (Some(4), true), (Some(6), false)], "{p:#?}");
    }

    #[test]
    fn a_crate_roots_doc_comment_is_read() {
        let (line, text) = top_doc_comment("\n//! The core.\n//!\n//! See `docs/gone.md`.\n\nuse x;\n//! no\n");
        assert_eq!((line, text.as_str()), (2, "The core.\n\nSee `docs/gone.md`."));
        let doc = Doc {
            path: "host/core/src/lib.rs".into(),
            text,
            first_line: line,
            crate_dir: Some("host/core".into()),
        };
        let p = check_doc_paths(&doc, &tree()).1;
        assert_eq!(p.len(), 1, "{p:#?}");
        assert_eq!(p[0].to_string().split(": ").next(), Some("host/core/src/lib.rs:4"));
    }

    /// `cargo test -p xtask -- --ignored --nocapture list_checked_paths`:
    /// what the path check reads in the real docs.
    #[test]
    #[ignore]
    fn list_checked_paths() {
        let root = repository_root();
        for doc in find_docs(&root).unwrap() {
            let (checked, _) = check_doc_paths(&doc, &Disk(&root));
            println!("{}: {}", doc.path, checked.join(" "));
        }
    }

    #[test]
    fn the_repository_passes() {
        let root = repository_root();
        let mut problems = check_message_kinds(&KindSources::read(&root).unwrap());
        problems.extend(check_core_uses_no_os(&rust_files(&root, CORE_SRC).unwrap()));
        let docs = find_docs(&root).unwrap();
        for must in [
            "README.md",
            "ARCHITECTURE.md",
            "docs/protocol.md",
            "host/dds/README.md",
            "host/core/src/lib.rs",
        ] {
            assert!(docs.iter().any(|d| d.path == must), "{must} not scanned");
        }
        for doc in &docs {
            problems.extend(check_doc_paths(doc, &Disk(&root)).1);
        }
        let listed: Vec<String> = problems.iter().map(Problem::to_string).collect();
        assert!(listed.is_empty(), "{listed:#?}");
    }
}
