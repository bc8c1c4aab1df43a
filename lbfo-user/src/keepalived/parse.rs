//! keepalived's configuration syntax, read into a tree of statements.
//!
//! keepalived reads its file line by line: a line is words, a `{` opens a
//! block that belongs to the statement before it (on the same line or the
//! line above), `}` closes it, `#` and `!` start comments, a double-quoted
//! string is one word. `include GLOB` reads other files in its place
//! (relative to the including file's folder), and a line that starts with
//! `@ID` is read only when the configuration id is ID (`@^ID`: unless it
//! is). This is lbfo's own small reader for `lbfo import-keepalived`.

use std::{
    fmt,
    path::{Path, PathBuf},
    sync::Arc,
};

/// Where a statement was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loc {
    pub file: Arc<Path>,
    pub line: usize,
}

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            // The file itself, before any line (it cannot be read).
            0 => write!(f, "{}", self.file.display()),
            line => write!(f, "{}:{line}", self.file.display()),
        }
    }
}

/// One statement: its words, where it starts, and its block if it has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stmt {
    pub words: Vec<String>,
    pub at: Loc,
    pub block: Option<Vec<Stmt>>,
}

impl Stmt {
    pub fn keyword(&self) -> &str {
        &self.words[0]
    }

    /// The words after the keyword.
    pub fn args(&self) -> &[String] {
        &self.words[1..]
    }

    /// The block's statements (none if there is no block).
    pub fn children(&self) -> &[Stmt] {
        self.block.as_deref().unwrap_or_default()
    }
}

/// A file that cannot be read as keepalived syntax: one line, at its place.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{at}: error: {message}")]
pub struct ParseError {
    pub at: Loc,
    pub message: String,
}

/// Includes nested deeper than this are a loop.
const MAX_INCLUDE_DEPTH: usize = 8;

/// Reads `path` and everything it includes. `config_id` decides which `@`
/// lines count. Warnings (an include that matches nothing) go to `warn`.
pub fn parse_file(
    path: &Path,
    config_id: &str,
    warn: &mut dyn FnMut(Loc, String),
) -> Result<Vec<Stmt>, ParseError> {
    let mut builder = Builder {
        levels: vec![Vec::new()],
        open: Vec::new(),
        config_id,
    };
    let top = Loc {
        file: Arc::from(path),
        line: 0,
    };
    builder.read(path, &top, 0, warn)?;
    if let Some(unclosed) = builder.open.last() {
        return Err(ParseError {
            at: unclosed.at.clone(),
            message: format!("the block of `{}` is never closed", unclosed.keyword()),
        });
    }
    Ok(builder.levels.pop().expect("the top level"))
}

struct Builder<'a> {
    /// The statements of each open level, outermost first.
    levels: Vec<Vec<Stmt>>,
    /// The statements whose blocks are open, outermost first.
    open: Vec<Stmt>,
    config_id: &'a str,
}

impl Builder<'_> {
    fn read(
        &mut self,
        path: &Path,
        included_at: &Loc,
        depth: usize,
        warn: &mut dyn FnMut(Loc, String),
    ) -> Result<(), ParseError> {
        let text = std::fs::read(path).map_err(|e| ParseError {
            at: included_at.clone(),
            message: format!("cannot read {}: {e}", path.display()),
        })?;
        let text = String::from_utf8_lossy(&text);
        let file: Arc<Path> = Arc::from(path);
        for (index, line) in text.lines().enumerate() {
            let at = Loc {
                file: file.clone(),
                line: index + 1,
            };
            let Some(line) = self.conditional(line) else {
                continue;
            };
            let words = tokens(line, &at)?;
            let mut current: Option<Stmt> = None;
            for word in words {
                match word {
                    Token::Open => {
                        let owner = match current.take() {
                            Some(stmt) => stmt,
                            None => self.last_statement().ok_or_else(|| ParseError {
                                at: at.clone(),
                                message: "`{` without a keyword before it".into(),
                            })?,
                        };
                        if owner.block.is_some() {
                            return Err(ParseError {
                                at: at.clone(),
                                message: format!("`{}` already has a block", owner.keyword()),
                            });
                        }
                        self.open.push(owner);
                        self.levels.push(Vec::new());
                    }
                    Token::Close => {
                        if let Some(stmt) = current.take() {
                            self.finish(stmt, depth, warn)?;
                        }
                        let Some(mut owner) = self.open.pop() else {
                            return Err(ParseError {
                                at: at.clone(),
                                message: "`}` closes no block".into(),
                            });
                        };
                        owner.block = self.levels.pop();
                        self.push(owner);
                    }
                    Token::Word(w) => match &mut current {
                        Some(stmt) => stmt.words.push(w),
                        None => {
                            current = Some(Stmt {
                                words: vec![w],
                                at: at.clone(),
                                block: None,
                            })
                        }
                    },
                }
            }
            if let Some(stmt) = current {
                self.finish(stmt, depth, warn)?;
            }
        }
        Ok(())
    }

    /// The line without its `@ID` marker, if it counts for this id.
    fn conditional<'l>(&self, line: &'l str) -> Option<&'l str> {
        let trimmed = line.trim_start();
        let Some(rest) = trimmed.strip_prefix('@') else {
            return Some(line);
        };
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        let (id, line) = rest.split_at(end);
        let applies = match id.strip_prefix('^') {
            Some(not) => not != self.config_id,
            None => id == self.config_id,
        };
        applies.then_some(line)
    }

    fn last_statement(&mut self) -> Option<Stmt> {
        self.levels.last_mut().expect("a level").pop()
    }

    fn push(&mut self, stmt: Stmt) {
        self.levels.last_mut().expect("a level").push(stmt);
    }

    /// A statement is complete: `include` reads its files here, the rest
    /// joins the open level.
    fn finish(
        &mut self,
        stmt: Stmt,
        depth: usize,
        warn: &mut dyn FnMut(Loc, String),
    ) -> Result<(), ParseError> {
        if stmt.keyword() != "include" {
            self.push(stmt);
            return Ok(());
        }
        let [pattern] = stmt.args() else {
            return Err(ParseError {
                at: stmt.at,
                message: "include takes one file name or pattern".into(),
            });
        };
        if depth >= MAX_INCLUDE_DEPTH {
            return Err(ParseError {
                at: stmt.at,
                message: format!("includes nested more than {MAX_INCLUDE_DEPTH} deep (a loop?)"),
            });
        }
        let pattern = match stmt.at.file.parent() {
            Some(dir) if !pattern.starts_with('/') => dir.join(pattern),
            _ => PathBuf::from(pattern),
        };
        let paths = glob::glob(&pattern.to_string_lossy()).map_err(|e| ParseError {
            at: stmt.at.clone(),
            message: format!("include pattern {}: {e}", pattern.display()),
        })?;
        let mut files: Vec<PathBuf> = paths.filter_map(Result::ok).collect();
        files.sort();
        if files.is_empty() {
            warn(
                stmt.at.clone(),
                format!("include {} matches no file", pattern.display()),
            );
        }
        for file in files {
            self.read(&file, &stmt.at, depth + 1, warn)?;
        }
        Ok(())
    }
}

#[derive(Debug, PartialEq)]
enum Token {
    Word(String),
    Open,
    Close,
}

/// A line's words and braces; comments end it.
fn tokens(line: &str, at: &Loc) -> Result<Vec<Token>, ParseError> {
    if line.contains("{{") || line.contains("}}") {
        return Err(ParseError {
            at: at.clone(),
            message: "a template placeholder ({{...}}): fill the template in first".into(),
        });
    }
    let mut out = Vec::new();
    let mut chars = line.chars().peekable();
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut Vec<Token>| {
        if !word.is_empty() {
            out.push(Token::Word(std::mem::take(word)));
        }
    };
    while let Some(c) = chars.next() {
        match c {
            '#' | '!' if word.is_empty() => break,
            '"' => {
                let mut quoted = String::new();
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some(c) => quoted.push(c),
                        None => {
                            return Err(ParseError {
                                at: at.clone(),
                                message: "a quoted string is not closed on its line".into(),
                            });
                        }
                    }
                }
                word.push_str(&quoted);
                if word.is_empty() {
                    out.push(Token::Word(String::new()));
                }
            }
            '{' => {
                flush(&mut word, &mut out);
                out.push(Token::Open);
            }
            '}' => {
                flush(&mut word, &mut out);
                out.push(Token::Close);
            }
            c if c.is_whitespace() => flush(&mut word, &mut out),
            c => word.push(c),
        }
    }
    flush(&mut word, &mut out);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, id: &str) -> Result<(Vec<Stmt>, Vec<String>), String> {
        let dir = std::env::temp_dir().join(format!(
            "lbfo-kaparse-{}-{}",
            std::process::id(),
            text.len()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("keepalived.conf");
        std::fs::write(&path, text).unwrap();
        let mut warnings = Vec::new();
        let result = parse_file(&path, id, &mut |at, w| {
            warnings.push(format!("{}: {w}", at.line))
        });
        std::fs::remove_dir_all(&dir).unwrap();
        result
            .map(|s| (s, warnings))
            .map_err(|e| format!("{}: {}", e.at.line, e.message))
    }

    /// The tree as `keyword args {children}` text.
    fn show(stmts: &[Stmt]) -> String {
        let parts: Vec<String> = stmts
            .iter()
            .map(|s| match &s.block {
                Some(b) => format!("{}@{} {{{}}}", s.words.join(" "), s.at.line, show(b)),
                None => format!("{}@{}", s.words.join(" "), s.at.line),
            })
            .collect();
        parts.join("; ")
    }

    #[test]
    fn reads_blocks_comments_quotes_and_braces_anywhere() {
        let text = "! comment\nglobal_defs {\n  router_id r1 # trailing\n}\nvrrp_script chk\n{\n  script \"/bin/check --flag 'x y'\"\n}\nvrrp_instance VI_1 {\n  virtual_ipaddress { 192.0.2.1/24 dev eth0 }\n  track_script {\n    chk weight -2\n  }\n}\n";
        let (stmts, warnings) = parse(text, "h").unwrap();
        assert_eq!(
            show(&stmts),
            "global_defs@2 {router_id r1@3}; vrrp_script chk@5 {script /bin/check --flag 'x y'@7}; vrrp_instance VI_1@9 {virtual_ipaddress@10 {192.0.2.1/24 dev eth0@10}; track_script@11 {chk weight -2@12}}"
        );
        assert!(warnings.is_empty());
    }

    #[test]
    fn conditional_lines_follow_the_config_id() {
        let text = "@high priority 170\n@low priority 85\n@^high state BACKUP\nadvert_int 1\n";
        assert_eq!(
            show(&parse(text, "high").unwrap().0),
            "priority 170@1; advert_int 1@4"
        );
        assert_eq!(
            show(&parse(text, "low").unwrap().0),
            "priority 85@2; state BACKUP@3; advert_int 1@4"
        );
    }

    #[test]
    fn includes_are_read_in_place_relative_to_the_file() {
        let dir = std::env::temp_dir().join(format!("lbfo-kainclude-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("conf.d")).unwrap();
        std::fs::write(dir.join("conf.d/b.conf"), "priority 2\n").unwrap();
        std::fs::write(dir.join("conf.d/a.conf"), "priority 1\n").unwrap();
        let main = dir.join("keepalived.conf");
        std::fs::write(
            &main,
            "vrrp_instance v {\ninclude conf.d/*.conf\ninclude none/*.conf\n}\n",
        )
        .unwrap();
        let mut warnings = Vec::new();
        let stmts =
            parse_file(&main, "h", &mut |at, w| warnings.push(format!("{at}: {w}"))).unwrap();
        let children = stmts[0].children();
        assert_eq!(children[0].words, ["priority", "1"]);
        assert_eq!(children[0].at.line, 1);
        assert!(children[0].at.file.ends_with("conf.d/a.conf"));
        assert_eq!(children[1].words, ["priority", "2"]);
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0].contains("keepalived.conf:3: include")
                && warnings[0].contains("matches no file"),
            "{warnings:?}"
        );
        // An include of itself is a loop, reported, not a stack overflow.
        std::fs::write(&main, "include keepalived.conf\n").unwrap();
        let err = parse_file(&main, "h", &mut |_, _| {}).unwrap_err();
        assert!(err.message.contains("nested more than"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn syntax_errors_name_their_line() {
        let cases = [
            ("a {\nb\n", "1: the block of `a` is never closed"),
            ("a\n}\n", "2: `}` closes no block"),
            ("{\n", "1: `{` without a keyword before it"),
            (
                "script \"/bin/x\n",
                "1: a quoted string is not closed on its line",
            ),
            (
                "virtual_ipaddress {\n {{VIP}}\n}\n",
                "2: a template placeholder ({{...}}): fill the template in first",
            ),
            ("a { } { }\n", "1: `a` already has a block"),
        ];
        for (text, want) in cases {
            assert_eq!(parse(text, "h").unwrap_err(), want, "{text:?}");
        }
    }
}
