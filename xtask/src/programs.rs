//! Every program lbfo, its tests, benchmarks and demo run must be one that
//! `./x` installs on a fresh machine, or the README's commands fail there
//! while passing on a machine that has it from earlier work.
//!
//! `./x` keeps the one list (`programs=(command:package ...)`). The test here
//! scans the sources under lbfo-user/, tests/ and xtask/ for the programs
//! they start, `Command::new("NAME")` and the labs' `netns_exec(ns, "NAME")`
//! (NAME inside a network namespace), and fails on any name that list lacks.
//! A program named through a variable would slip past the scan, so those are
//! refused too unless they are lbfo's own binaries or one of the few places
//! whose program cannot be a literal (see `DYNAMIC`). Programs a shell script
//! runs (a `bash -c` line) are not seen; list them by hand.

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
};

use crate::root;

/// Run through the Rust toolchain or built by this workspace, not from Debian.
const NOT_FROM_DEBIAN: &[&str] = &["cargo", "rustup", "rustc", "lbfo", "lbfo-lab"];

/// Program expressions that are lbfo's own binaries, found wherever they appear.
const OWN_BINARIES: &[&str] = &["lbfo_bin()", "lab_bin()"];

/// (file, program expression): the places whose program cannot be a literal.
const DYNAMIC: &[(&str, &str)] = &[
    // The operator's exec check or notify script.
    ("lbfo-user/src/health/exec.rs", "&program"),
    // The cargo that runs xtask.
    (
        "xtask/src/main.rs",
        r#"std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())"#,
    ),
    (
        "xtask/src/main.rs",
        r#"root().join("target/release/lbfo-lab")"#,
    ),
];

/// The folders whose code runs programs on the README's commands.
const SCANNED: &[&str] = &["lbfo-user", "tests", "xtask"];

#[derive(Debug, PartialEq)]
enum Program {
    /// A string literal, reduced to its file name (`/bin/true` is `true`).
    Literal(String),
    /// Anything else, whitespace collapsed.
    Expr(String),
}

#[derive(Debug, PartialEq)]
struct Launch {
    line: usize,
    program: Program,
}

/// `./x`'s `programs=(command:package ...)`, as command → package.
fn x_programs() -> BTreeMap<String, String> {
    let path = root().join("x");
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let start = text
        .find("\nprograms=(")
        .expect("./x has a `programs=(` list");
    let body = &text[start + "\nprograms=(".len()..];
    let body = &body[..body.find(')').expect("./x's programs list ends with `)`")];
    let mut programs = BTreeMap::new();
    for entry in body
        .lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .flat_map(str::split_whitespace)
    {
        let (command, package) = entry
            .split_once(':')
            .filter(|(c, p)| !c.is_empty() && !p.is_empty())
            .unwrap_or_else(|| panic!("./x programs entry {entry:?} is not command:package"));
        let previous = programs.insert(command.to_string(), package.to_string());
        assert!(previous.is_none(), "./x lists {command} twice");
    }
    programs
}

/// Every `.rs` file under `dir`, sorted so failures read the same each run.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The source twice, byte for byte the same length: with comments blanked,
/// and with string and char literal contents blanked as well, so that names
/// and parentheses are only found in code.
fn mask(src: &str) -> (Vec<u8>, Vec<u8>) {
    let b = src.as_bytes();
    let mut code = b.to_vec();
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut strings = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i..].starts_with(b"//") {
            let end = b[i..]
                .iter()
                .position(|&c| c == b'\n')
                .map_or(b.len(), |n| i + n);
            blank(&mut code, i, end);
            i = end;
        } else if b[i..].starts_with(b"/*") {
            let (mut depth, mut j) = (1, i + 2);
            while j < b.len() && depth > 0 {
                if b[j..].starts_with(b"/*") {
                    depth += 1;
                    j += 2;
                } else if b[j..].starts_with(b"*/") {
                    depth -= 1;
                    j += 2;
                } else {
                    j += 1;
                }
            }
            blank(&mut code, i, j);
            i = j;
        } else if let Some(hashes) = (b[i] == b'r' && (i == 0 || !ident(b[i - 1])))
            .then(|| b[i + 1..].iter().take_while(|&&c| c == b'#').count())
            .filter(|&h| b.get(i + 1 + h) == Some(&b'"'))
        {
            let open = i + 1 + hashes;
            let mut close = b"\"".to_vec();
            close.extend(std::iter::repeat_n(b'#', hashes));
            let end = b[open + 1..]
                .windows(close.len())
                .position(|w| w == close.as_slice())
                .map_or(b.len(), |n| open + 1 + n);
            strings.push((open + 1, end));
            i = end + close.len();
        } else if b[i] == b'"' {
            let mut j = i + 1;
            while j < b.len() && b[j] != b'"' {
                j += if b[j] == b'\\' { 2 } else { 1 };
            }
            strings.push((i + 1, j.min(b.len())));
            i = j + 1;
        } else if b[i] == b'\'' {
            // A char literal ('x', '\n', '"'), or else a lifetime ('a).
            let end = if b.get(i + 1) == Some(&b'\\') {
                b[i + 2..]
                    .iter()
                    .position(|&c| c == b'\'')
                    .map(|n| i + 2 + n)
            } else {
                let width = src[i + 1..].chars().next().map_or(1, char::len_utf8);
                (b.get(i + 1 + width) == Some(&b'\'')).then_some(i + 1 + width)
            };
            match end {
                Some(end) => {
                    strings.push((i + 1, end));
                    i = end + 1;
                }
                None => i += 1,
            }
        } else {
            i += 1;
        }
    }
    let mut bare = code.clone();
    for (from, to) in strings {
        blank(&mut bare, from, to.min(b.len()));
    }
    (code, bare)
}

/// Spaces over `v[from..to]`, keeping line breaks so line numbers stay right.
fn blank(v: &mut [u8], from: usize, to: usize) {
    for c in &mut v[from..to] {
        if *c != b'\n' {
            *c = b' ';
        }
    }
}

/// Where `src` starts a program, and which.
fn launches(src: &str) -> Vec<Launch> {
    let (code, bare) = mask(src);
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut found = Vec::new();
    // (call, index of the argument that names the program)
    for (needle, arg) in [("Command::new(", 0), ("netns_exec(", 1)] {
        let needle = needle.as_bytes();
        let mut from = 0;
        while let Some(at) = bare[from..]
            .windows(needle.len())
            .position(|w| w == needle)
            .map(|n| from + n)
        {
            from = at + needle.len();
            let before = &bare[..at];
            if before.last().is_some_and(|&c| ident(c))
                || String::from_utf8_lossy(before).trim_end().ends_with("fn")
            {
                continue;
            }
            // The arguments up to the matching parenthesis, split at top-level commas.
            let (mut depth, mut j, mut start) = (0usize, from, from);
            let mut args = Vec::new();
            while j < bare.len() {
                match bare[j] {
                    b'(' | b'[' | b'{' => depth += 1,
                    b')' | b']' | b'}' if depth == 0 => {
                        args.push((start, j));
                        break;
                    }
                    b')' | b']' | b'}' => depth -= 1,
                    b',' if depth == 0 => {
                        args.push((start, j));
                        start = j + 1;
                    }
                    _ => {}
                }
                j += 1;
            }
            let Some(&(a, z)) = args.get(arg) else {
                continue;
            };
            let text = String::from_utf8_lossy(&code[a..z]);
            let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
            let program = match text.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
                Some(name) if !name.contains('"') => {
                    Program::Literal(name.rsplit('/').next().unwrap_or(name).to_string())
                }
                _ => Program::Expr(text),
            };
            let line = 1 + bare[..at].iter().filter(|&&c| c == b'\n').count();
            found.push(Launch { line, program });
        }
    }
    found.sort_by_key(|l| l.line);
    found
}

#[test]
fn every_program_the_code_runs_is_installed_by_x() {
    let listed = x_programs();
    let root = root();
    let mut files = Vec::new();
    for dir in SCANNED {
        rust_files(&root.join(dir), &mut files);
    }
    let (mut unlisted, mut unchecked, mut seen) = (Vec::new(), Vec::new(), 0);
    for path in &files {
        let rel = path.strip_prefix(&root).expect("under the root");
        let rel = rel.to_str().expect("utf-8 path");
        let src = fs::read_to_string(path).unwrap_or_else(|e| panic!("{rel}: {e}"));
        for Launch { line, program } in launches(&src) {
            seen += 1;
            match program {
                Program::Literal(name) => {
                    if !listed.contains_key(&name) && !NOT_FROM_DEBIAN.contains(&name.as_str()) {
                        unlisted.push(format!("{rel}:{line}: {name}"));
                    }
                }
                Program::Expr(expr) => {
                    let own = OWN_BINARIES.iter().any(|b| expr.contains(b));
                    if !own && !DYNAMIC.contains(&(rel, expr.as_str())) {
                        unchecked.push(format!("{rel}:{line}: {expr}"));
                    }
                }
            }
        }
    }
    // A scan that finds nothing would pass whatever the code runs.
    assert!(
        files.len() > 20 && seen > 20,
        "the scan found only {seen} program starts in {} files; is it reading the sources?",
        files.len()
    );
    let mut problems = Vec::new();
    if !unlisted.is_empty() {
        problems.push(format!(
            "these programs are run but ./x does not install them; add command:package \
             to the programs list in ./x:\n{}",
            unlisted.join("\n")
        ));
    }
    if !unchecked.is_empty() {
        problems.push(format!(
            "these start a program named through an expression, which this test cannot \
             check against ./x; name the program with a string literal:\n{}",
            unchecked.join("\n")
        ));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}

#[test]
fn the_scan_finds_programs_in_code_only() {
    let src = r##"
        // Command::new("in-a-comment")
        /* netns_exec(ns, "in-a-block") */
        let url = "http://Command::new(\"in-a-string\")";
        let c = '"';
        fn netns_exec(ns: &str, program: &str) -> Command {
            Command::new("ip")
        }
        fn id<'a>(s: &'a str) -> &'a str { s }
        std::process::Command::new("/usr/sbin/bpftool").arg("x");
        run(netns_exec(
            &client.ns,
            "wrk",
        ));
        Command::new(&program);
        let raw = r#"Command::new("in-a-raw-string")"#;
        MyCommand::new("not-a-command");
    "##;
    let found: Vec<_> = launches(src)
        .into_iter()
        .map(|l| (l.line, l.program))
        .collect();
    assert_eq!(
        found,
        [
            (7, Program::Literal("ip".into())),
            (10, Program::Literal("bpftool".into())),
            (11, Program::Literal("wrk".into())),
            (15, Program::Expr("&program".into())),
        ]
    );
}
