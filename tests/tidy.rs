//! The house style (STYLE.md, "Mechanics"; docs/UNSAFE.md), checked by a
//! machine over every Rust source of the repository: `unsafe` only in the
//! files docs/UNSAFE.md lists, each use with a `// SAFETY:` comment; no file
//! over 800 lines; no function over 100 lines. The exceptions are lists
//! below, and they cannot rot: a listed file without `unsafe`, a listed file
//! no longer too long, or a listed function no longer too long (or gone)
//! fails the test, so each list only shrinks.
//!
//! The scanner is a small lexer, not a parser: it blanks comments and the
//! contents of string, byte-string, raw-string and char literals (keeping
//! lines), tells lifetimes from chars, then matches braces. Enough for this
//! codebase; its own tests are at the bottom.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Where the repository's Rust sources are, from the workspace root.
const ROOTS: [&str; 6] = ["src", "loadgen/src", "benches", "fuzz/src", "fuzz/fuzz_targets", "tests"];
/// STYLE.md: a file is one concept; past this it is two.
const FILE_LINES_MAX: usize = 800;
/// STYLE.md: "functions short enough to read on one screen", from the `fn`
/// line to the closing brace.
const FN_LINES_MAX: usize = 100;

/// The files that may hold `unsafe`, each described in docs/UNSAFE.md.
const UNSAFE_FILES: [&str; 4] = ["src/buf/aligned.rs", "src/io/uring.rs", "fuzz/src/alloc_count.rs", "tests/harness/fs_shutdown.rs"];

/// Files allowed over FILE_LINES_MAX: none any more (issue 11, "Seams",
/// split the last ones). A file listed here that is short fails the test.
const PENDING_SPLIT: &[&str] = &[];

/// Functions allowed over FN_LINES_MAX: (file, function, why). Take one
/// off once it is split: the test fails while it is listed and short.
const LONG_FNS: &[(&str, &str, &str)] = &[
    ("loadgen/src/main.rs", "drive", "starts, paces and joins every worker of a run; goes with the split of main.rs"),
    ("loadgen/src/main.rs", "run_phase", "one phase's setup, run and report in order; goes with the split of main.rs"),
];

fn main_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

// ---------------------------------------------------------------- the lexer

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// `src` with every comment and every literal (its quotes and prefix
/// included) replaced by spaces, newlines kept: what is left is code, whose
/// braces and keywords can be counted.
fn code_only(src: &str) -> String {
    let s: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    // Blanks s[from..to] into `out`, keeping its newlines.
    let blank = |out: &mut String, from: usize, to: usize| {
        out.extend(s[from..to.min(s.len())].iter().map(|&c| if c == '\n' { '\n' } else { ' ' }));
    };
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        let next = s.get(i + 1).copied();
        let after_ident = i > 0 && is_ident(s[i - 1]);
        let end = if c == '/' && next == Some('/') {
            s[i..].iter().position(|&c| c == '\n').map_or(s.len(), |n| i + n)
        } else if c == '/' && next == Some('*') {
            block_comment_end(&s, i)
        } else if c == '"' {
            quoted_end(&s, i + 1, '"')
        } else if c == '\'' {
            match char_literal_end(&s, i) {
                Some(end) => end,
                None => {
                    out.push(c); // a lifetime or a label
                    i += 1;
                    continue;
                }
            }
        } else if !after_ident && matches!(c, 'b' | 'c' | 'r') {
            match prefixed_literal_end(&s, i) {
                Some(end) => end,
                None => {
                    // An identifier: copy it whole, so that its inner
                    // letters are never read as a literal's prefix.
                    let n = s[i..].iter().take_while(|&&c| is_ident(c)).count();
                    out.extend(&s[i..i + n]);
                    i += n;
                    continue;
                }
            }
        } else {
            out.push(c);
            i += 1;
            continue;
        };
        blank(&mut out, i, end);
        i = end;
    }
    out
}

/// The index past a block comment starting at `i` (they nest).
fn block_comment_end(s: &[char], mut i: usize) -> usize {
    let mut depth = 0;
    while i < s.len() {
        if s[i] == '/' && s.get(i + 1) == Some(&'*') {
            depth += 1;
            i += 2;
        } else if s[i] == '*' && s.get(i + 1) == Some(&'/') {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return i;
            }
        } else {
            i += 1;
        }
    }
    s.len()
}

/// The index past the `quote` closing an escaped literal whose contents
/// start at `i`.
fn quoted_end(s: &[char], mut i: usize, quote: char) -> usize {
    while i < s.len() {
        match s[i] {
            '\\' => i += 2,
            c if c == quote => return i + 1,
            _ => i += 1,
        }
    }
    s.len()
}

/// A char literal at `i` ('x', '\n', '\'', '\u{1F600}'): the index past it;
/// None for a lifetime or label ('a, 'static, 'outer:).
fn char_literal_end(s: &[char], i: usize) -> Option<usize> {
    match (s.get(i + 1), s.get(i + 2)) {
        (Some('\\'), _) => Some(quoted_end(s, i + 1, '\'')),
        (Some(_), Some('\'')) => Some(i + 3),
        _ => None,
    }
}

/// A literal with a prefix at `i` (b"..", b'.', c"..", r"..", r#".."#,
/// br#".."#): the index past it; None if `s[i..]` is an identifier (a raw
/// identifier `r#type` included).
fn prefixed_literal_end(s: &[char], i: usize) -> Option<usize> {
    let mut j = i;
    if matches!(s[j], 'b' | 'c') {
        j += 1;
        match s.get(j) {
            Some('"') => return Some(quoted_end(s, j + 1, '"')),
            Some('\'') if s[i] == 'b' => return char_literal_end(s, j),
            Some('r') => {}
            _ => return None,
        }
    }
    // A raw string: r, hashes, a quote; it ends at a quote and as many hashes.
    j += 1;
    let hashes = s[j..].iter().take_while(|&&c| c == '#').count();
    if s.get(j + hashes) != Some(&'"') {
        return None;
    }
    let mut k = j + hashes + 1;
    while k < s.len() {
        if s[k] == '"' && s[k + 1..].iter().take(hashes).filter(|&&c| c == '#').count() == hashes {
            return Some(k + 1 + hashes);
        }
        k += 1;
    }
    Some(s.len())
}

// ---------------------------------------------------------------- what is scanned

/// A function definition: its name and the lines (1-based) of its `fn`
/// keyword and its closing brace.
#[derive(Debug, PartialEq)]
struct FnSpan {
    name: String,
    first_line: usize,
    last_line: usize,
}

impl FnSpan {
    fn lines(&self) -> usize {
        self.last_line - self.first_line + 1
    }
}

/// Every identifier of `code` (from [`code_only`]) with its char index.
fn idents(code: &[char]) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < code.len() {
        if is_ident(code[i]) && (i == 0 || !is_ident(code[i - 1])) {
            let n = code[i..].iter().take_while(|&&c| is_ident(c)).count();
            out.push((i, code[i..i + n].iter().collect()));
            i += n;
        } else {
            i += 1;
        }
    }
    out
}

fn line_at(code: &[char], i: usize) -> usize {
    1 + code[..i].iter().filter(|&&c| c == '\n').count()
}

/// Every function with a body: `fn NAME`, its signature up to the first
/// `{` outside parentheses and brackets, and that brace's match. A `;`
/// there first is a declaration without a body (a trait's); `fn(` is a
/// pointer type.
fn functions(code: &str) -> Vec<FnSpan> {
    let code: Vec<char> = code.chars().collect();
    let words = idents(&code);
    let mut out = Vec::new();
    for w in words.windows(2) {
        let ((at, kw), (name_at, name)) = (&w[0], &w[1]);
        if kw != "fn" || code[at + 2..*name_at].iter().any(|c| !c.is_whitespace()) {
            continue;
        }
        let mut depth = 0i32;
        let mut open = None;
        for (k, &c) in code.iter().enumerate().skip(name_at + name.len()) {
            match c {
                '(' | '[' => depth += 1,
                ')' | ']' => depth -= 1,
                '{' if depth == 0 => {
                    open = Some(k);
                    break;
                }
                ';' if depth == 0 => break,
                _ => {}
            }
        }
        let Some(open) = open else { continue };
        let mut braces = 0;
        let close = (open..code.len()).find(|&k| {
            match code[k] {
                '{' => braces += 1,
                '}' => braces -= 1,
                _ => {}
            }
            braces == 0
        });
        let close = close.unwrap_or(code.len() - 1);
        out.push(FnSpan { name: name.clone(), first_line: line_at(&code, *at), last_line: line_at(&code, close) });
    }
    out
}

/// A use of `unsafe` in code: its line, and whether it needs a `// SAFETY:`
/// comment (a block or an impl; an `unsafe fn` in a trait impl states its
/// contract in the trait's own documentation).
#[derive(Debug, PartialEq)]
struct UnsafeUse {
    line: usize,
    needs_safety: bool,
}

fn unsafe_uses(code: &str) -> Vec<UnsafeUse> {
    let code: Vec<char> = code.chars().collect();
    let words = idents(&code);
    let mut out = Vec::new();
    for (n, (at, w)) in words.iter().enumerate() {
        if w != "unsafe" {
            continue;
        }
        let next_word = words.get(n + 1).map(|(_, w)| w.as_str());
        let next_char = code[at + 6..].iter().find(|c| !c.is_whitespace());
        out.push(UnsafeUse { line: line_at(&code, *at), needs_safety: next_char == Some(&'{') || next_word == Some("impl") });
    }
    out
}

/// Whether the comment lines right above `line` (1-based) of `src`, or
/// that line itself, say `SAFETY:`.
fn has_safety_comment(src: &str, line: usize) -> bool {
    let lines: Vec<&str> = src.lines().collect();
    if lines[line - 1].contains("// SAFETY:") {
        return true;
    }
    lines[..line - 1].iter().rev().map(|l| l.trim_start()).take_while(|l| l.starts_with("//")).any(|l| l.starts_with("// SAFETY:"))
}

// ---------------------------------------------------------------- the walk

/// Every `.rs` file under the roots, as a path from the workspace root.
fn sources() -> Vec<String> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for e in entries {
            let path = e.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|x| x == "rs") {
                out.push(path);
            }
        }
    }
    let root = main_dir();
    let mut files = Vec::new();
    for r in ROOTS {
        let dir = root.join(r);
        assert!(dir.is_dir(), "{} is missing: update ROOTS", dir.display());
        walk(&dir, &mut files);
    }
    let mut names: Vec<String> = files.iter().map(|p| p.strip_prefix(&root).unwrap().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

/// What the scan found in one file.
struct Scanned {
    lines: usize,
    functions: Vec<FnSpan>,
    unsafe_uses: Vec<UnsafeUse>,
    unsafe_without_safety: Vec<usize>,
}

fn scan(src: &str) -> Scanned {
    let code = code_only(src);
    assert_eq!(code.lines().count(), src.lines().count(), "the lexer lost lines");
    let unsafe_uses = unsafe_uses(&code);
    let unsafe_without_safety = unsafe_uses.iter().filter(|u| u.needs_safety && !has_safety_comment(src, u.line)).map(|u| u.line).collect();
    Scanned { lines: src.lines().count(), functions: functions(&code), unsafe_uses, unsafe_without_safety }
}

// ---------------------------------------------------------------- the rules

// Proves: the repository's Rust sources keep the house rules: `unsafe` only
// in the listed files (each of which holds some) with a SAFETY comment at
// each block and impl, no file over 800 lines but those pending a split (each
// still over), no function over 100 lines but the listed ones (each still
// over). Prints what it checked.
#[test]
fn sources_keep_the_house_rules() {
    let root = main_dir();
    let files = sources();
    let mut problems = Vec::new();
    let (mut total_lines, mut total_fns) = (0, 0);
    let mut unsafe_seen = BTreeMap::<String, usize>::new();
    let mut long_files = Vec::new();
    let mut long_fns = Vec::new();
    let mut longest = (0, String::new());
    for f in &files {
        let src = std::fs::read_to_string(root.join(f)).unwrap();
        let s = scan(&src);
        total_lines += s.lines;
        total_fns += s.functions.len();
        if !s.unsafe_uses.is_empty() {
            unsafe_seen.insert(f.clone(), s.unsafe_uses.len());
            if !UNSAFE_FILES.contains(&f.as_str()) {
                let lines: Vec<usize> = s.unsafe_uses.iter().map(|u| u.line).collect();
                problems.push(format!("{f}: `unsafe` at lines {lines:?}, outside the files docs/UNSAFE.md lists"));
            }
        }
        for line in &s.unsafe_without_safety {
            problems.push(format!("{f}:{line}: `unsafe` without a `// SAFETY:` comment right above it"));
        }
        if s.lines > FILE_LINES_MAX {
            long_files.push((f.clone(), s.lines));
            if !PENDING_SPLIT.contains(&f.as_str()) {
                problems.push(format!("{f}: {} lines, over {FILE_LINES_MAX}: split it by concept", s.lines));
            }
        }
        for func in &s.functions {
            if func.lines() > longest.0 {
                longest = (func.lines(), format!("{f} fn {} (line {})", func.name, func.first_line));
            }
            if func.lines() > FN_LINES_MAX {
                long_fns.push((f.clone(), func.name.clone(), func.lines()));
                if !LONG_FNS.iter().any(|(lf, name, _)| *lf == f && *name == func.name) {
                    problems.push(format!(
                        "{f}:{}: fn {} is {} lines, over {FN_LINES_MAX}: split it, or list it in LONG_FNS with why",
                        func.first_line,
                        func.name,
                        func.lines()
                    ));
                }
            }
        }
    }
    // The lists cannot rot: each entry must still be needed.
    for f in UNSAFE_FILES {
        if !unsafe_seen.contains_key(f) {
            problems.push(format!("{f} is in UNSAFE_FILES but holds no `unsafe` (or is gone): take it off, and off docs/UNSAFE.md"));
        }
    }
    for f in PENDING_SPLIT {
        if !long_files.iter().any(|(lf, _)| lf == f) {
            problems.push(format!("{f} is in PENDING_SPLIT but is not over {FILE_LINES_MAX} lines (or is gone): take it off"));
        }
    }
    for (f, name, _) in LONG_FNS {
        if !long_fns.iter().any(|(lf, n, _)| lf == f && n == name) {
            problems.push(format!("{f} fn {name} is in LONG_FNS but is not over {FN_LINES_MAX} lines (or is gone): take it off"));
        }
    }
    println!("tidy: {} Rust files under {ROOTS:?}, {total_lines} lines, {total_fns} functions with a body", files.len());
    println!("unsafe: {unsafe_seen:?} (uses per file; allowed in {UNSAFE_FILES:?})");
    println!("files over {FILE_LINES_MAX} lines: {long_files:?} (pending a split: {})", PENDING_SPLIT.len());
    println!("functions over {FN_LINES_MAX} lines: {long_fns:?} (listed: {})", LONG_FNS.len());
    println!("longest function: {} lines, {}", longest.0, longest.1);
    assert!(files.len() > 50 && total_fns > 500, "the walk found too little: {} files, {total_fns} functions", files.len());
    assert!(problems.is_empty(), "{} problems:\n{}", problems.len(), problems.join("\n"));
}

// ---------------------------------------------------------------- the scanner's own tests

// Proves: comments (line, doc, nested block) and literals (strings with
// escaped quotes, raw strings with hashes, byte strings, chars, byte chars,
// escaped chars) are blanked with their braces and keywords, lines are kept,
// and lifetimes, labels and raw identifiers stay code.
#[test]
fn lexer_blanks_comments_and_literals_only() {
    let cases: [(&str, &str); 12] = [
        ("a // { unsafe\nb", "a b"),
        ("/// doc {\nfn", "fn"),
        ("x /* { /* } nested */ } */ y", "x y"),
        (r#"s("{ \" unsafe }")"#, "s( )"),
        (r###"r##"{ "# unsafe }"## ;"###, ";"),
        (r#"b"{" br"}" c"{""#, ""),
        ("'{' '}' '\\'' '\\u{7b}' b'{'", ""),
        ("fn f<'a>(x: &'a str) -> &'a str { x }", "fn f<'a>(x: &'a str) -> &'a str { x }"),
        ("'outer: loop { break 'outer; }", "'outer: loop { break 'outer; }"),
        ("let r#type = bar; rb", "let r#type = bar; rb"),
        ("for\"x\"", "for"),
        ("let c = '\"'; {", "let c = ; {"),
    ];
    for (src, want) in cases {
        let got = code_only(src);
        assert_eq!(got.chars().count(), src.chars().count(), "{src:?}: length changed");
        let squeezed = got.split_whitespace().collect::<Vec<_>>().join(" ");
        assert_eq!(squeezed, want, "{src:?}");
    }
    assert_eq!(code_only("a\n/* x\ny */\n\"p\nq\"\nb").lines().count(), 6);
}

// Proves: functions are found with the lines from `fn` to their closing
// brace, braces inside literals and comments are not counted, nested
// functions are measured too, and trait declarations and `fn(..)` pointer
// types are not functions.
#[test]
fn functions_are_measured_from_fn_to_closing_brace() {
    let src = r#"trait T {
    fn declared(&self) -> [u8; 4];
}
fn outer(f: fn(u32) -> u32) -> u32 {
    let s = "}}}";
    // }
    let c = '}';
    fn inner() {
    }
    f(1)
}
pub(crate) fn one_line() { }
"#;
    let got = functions(&code_only(src));
    let spans: Vec<(&str, usize, usize)> = got.iter().map(|f| (f.name.as_str(), f.first_line, f.last_line)).collect();
    assert_eq!(spans, [("outer", 4, 11), ("inner", 8, 9), ("one_line", 12, 12)]);
    assert_eq!(got[0].lines(), 8);
}

// Proves: `unsafe` is found as a keyword only (not in comments, strings or
// `unsafe_code`), a block or impl needs a SAFETY comment right above it
// or on its line, and an `unsafe fn` does not.
#[test]
fn unsafe_is_found_and_needs_a_safety_comment() {
    let src = "#![deny(unsafe_code)]
// unsafe in a comment
let s = \"unsafe { }\";
// SAFETY: fine.
unsafe impl Send for X {}
unsafe fn f() {}
let a = unsafe { g() };
// SAFETY: a reason
// over two lines.
let b = unsafe { h() };
";
    let code = code_only(src);
    let uses = unsafe_uses(&code);
    let lines: Vec<(usize, bool)> = uses.iter().map(|u| (u.line, u.needs_safety)).collect();
    assert_eq!(lines, [(5, true), (6, false), (7, true), (10, true)]);
    let missing: Vec<usize> = uses.iter().filter(|u| u.needs_safety && !has_safety_comment(src, u.line)).map(|u| u.line).collect();
    assert_eq!(missing, [7]);
    let s = scan(src);
    assert_eq!(s.unsafe_without_safety, [7]);
}
