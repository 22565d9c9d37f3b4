//! Pull named definitions out of C source text: functions, structs and
//! `#define` macros, as the harness needs from a kernel tree's
//! `mm/percpu.c`, `mm/percpu-internal.h` and `include/linux/percpu.h`.
//!
//! Not a C parser: comments and string/char literals are masked first (so
//! braces and names inside them are ignored), then a definition is found by
//! its name at brace depth 0 and cut out with brace matching.  That is what
//! kernel style guarantees well enough (definitions start at column 0 of a
//! line, bodies are balanced), and it keeps a developer's edits inside the
//! functions (the point of the harness) intact byte for byte.

use std::ops::Range;

/// The kind of definition to pull out.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `... name(params) { body }` (not a prototype).
    Function,
    /// `struct name { ... };`
    Struct,
    /// `#define name...` with its continuation lines.
    Macro,
}

impl Kind {
    pub fn describe(self) -> &'static str {
        match self {
            Kind::Function => "function",
            Kind::Struct => "struct",
            Kind::Macro => "macro",
        }
    }
}

/// A definition that is not in the text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} `{name}` not found", kind.describe())]
pub struct NotFound {
    pub kind: Kind,
    pub name: String,
}

/// C source with comments and literals masked out, for searching.
pub struct Source<'a> {
    text: &'a str,
    masked: Vec<u8>,
    /// Brace depth before each byte.
    depth: Vec<u32>,
}

impl<'a> Source<'a> {
    pub fn new(text: &'a str) -> Self {
        let masked = mask(text.as_bytes());
        let mut depth = Vec::with_capacity(masked.len());
        let mut d: u32 = 0;
        for &c in &masked {
            depth.push(d);
            match c {
                b'{' => d += 1,
                b'}' => d = d.saturating_sub(1),
                _ => {}
            }
        }
        Source { text, masked, depth }
    }

    /// The byte range of the first definition of `name` of `kind`.
    pub fn find(&self, kind: Kind, name: &str) -> Result<Range<usize>, NotFound> {
        let found = match kind {
            Kind::Function => self.find_function(name),
            Kind::Struct => self.find_struct(name),
            Kind::Macro => self.find_macro(name),
        };
        found.ok_or_else(|| NotFound { kind, name: name.to_string() })
    }

    /// The text of the first definition of `name` of `kind`.
    pub fn extract(&self, kind: Kind, name: &str) -> Result<&'a str, NotFound> {
        self.find(kind, name).map(|r| &self.text[r])
    }

    /// Every start of `name` as a whole identifier at depth 0.
    fn occurrences<'s>(&'s self, name: &'s str) -> impl Iterator<Item = usize> + 's {
        let m = &self.masked;
        let n = name.as_bytes();
        (0..m.len().saturating_sub(n.len() - 1)).filter(move |&i| {
            &m[i..i + n.len()] == n
                && self.depth[i] == 0
                && (i == 0 || !is_ident(m[i - 1]))
                && m.get(i + n.len()).is_none_or(|&c| !is_ident(c))
        })
    }

    fn skip_space(&self, mut i: usize) -> usize {
        while i < self.masked.len() && self.masked[i].is_ascii_whitespace() {
            i += 1;
        }
        i
    }

    /// The index just past the bracket matching the opener at `open`.
    fn matching(&self, open: usize) -> Option<usize> {
        let (o, c) = match self.masked[open] {
            b'(' => (b'(', b')'),
            b'{' => (b'{', b'}'),
            _ => return None,
        };
        let mut d = 0usize;
        for (i, &ch) in self.masked.iter().enumerate().skip(open) {
            if ch == o {
                d += 1;
            } else if ch == c {
                d -= 1;
                if d == 0 {
                    return Some(i + 1);
                }
            }
        }
        None
    }

    /// Start of the declaration whose name is at `at`: the first line after
    /// the nearest earlier line that ends a statement or definition, is a
    /// preprocessor line, or is blank (a masked comment is blank).
    fn decl_start(&self, at: usize) -> usize {
        let mut line_start = self.masked[..at].iter().rposition(|&c| c == b'\n').map_or(0, |p| p + 1);
        while line_start > 0 {
            let prev_start = self.masked[..line_start - 1].iter().rposition(|&c| c == b'\n').map_or(0, |p| p + 1);
            let prev = &self.masked[prev_start..line_start - 1];
            let trimmed = prev.trim_ascii();
            if trimmed.is_empty()
                || trimmed.starts_with(b"#")
                || trimmed.ends_with(b";")
                || trimmed.ends_with(b"}")
                || trimmed.ends_with(b"\\")
            {
                break;
            }
            line_start = prev_start;
        }
        line_start
    }

    fn find_function(&self, name: &str) -> Option<Range<usize>> {
        for at in self.occurrences(name) {
            // not inside a preprocessor line (a macro mentioning the name)
            let line_start = self.masked[..at].iter().rposition(|&c| c == b'\n').map_or(0, |p| p + 1);
            if self.masked[line_start..at].trim_ascii_start().starts_with(b"#") {
                continue;
            }
            let open = self.skip_space(at + name.len());
            if self.masked.get(open) != Some(&b'(') {
                continue;
            }
            let Some(close) = self.matching(open) else { continue };
            let body = self.skip_space(close);
            if self.masked.get(body) != Some(&b'{') {
                continue; // a prototype or a call
            }
            let end = self.matching(body)?;
            return Some(self.decl_start(at)..end);
        }
        None
    }

    fn find_struct(&self, name: &str) -> Option<Range<usize>> {
        for at in self.occurrences(name) {
            let before = &self.masked[..at];
            let kw = before.trim_ascii_end();
            if !kw.ends_with(b"struct") {
                continue;
            }
            let open = self.skip_space(at + name.len());
            if self.masked.get(open) != Some(&b'{') {
                continue;
            }
            let close = self.matching(open)?;
            let semi = self.skip_space(close);
            let end = if self.masked.get(semi) == Some(&b';') { semi + 1 } else { close };
            return Some(self.decl_start(at)..end);
        }
        None
    }

    fn find_macro(&self, name: &str) -> Option<Range<usize>> {
        let mut line_start = 0;
        let m = &self.masked;
        while line_start < m.len() {
            let line_end = m[line_start..].iter().position(|&c| c == b'\n').map_or(m.len(), |p| line_start + p);
            let line = m[line_start..line_end].trim_ascii_start();
            if let Some(rest) = line.strip_prefix(b"#") {
                let rest = rest.trim_ascii_start();
                if let Some(rest) = rest.strip_prefix(b"define") {
                    let rest = rest.trim_ascii_start();
                    if rest.starts_with(name.as_bytes()) && rest.get(name.len()).is_none_or(|&c| !is_ident(c)) {
                        // take the continuation lines too
                        let mut end = line_end;
                        while end > line_start && m[line_start..end].trim_ascii_end().ends_with(b"\\") {
                            end = m[end + 1..].iter().position(|&c| c == b'\n').map_or(m.len(), |p| end + 1 + p);
                        }
                        return Some(line_start..end);
                    }
                }
            }
            line_start = line_end + 1;
        }
        None
    }
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// Replace comments and string/char literals by spaces (newlines kept), so
/// that offsets stay those of the original text.
fn mask(src: &[u8]) -> Vec<u8> {
    let mut out = src.to_vec();
    let mut i = 0;
    let blank = |out: &mut Vec<u8>, r: Range<usize>| {
        for c in &mut out[r] {
            if *c != b'\n' {
                *c = b' ';
            }
        }
    };
    while i < src.len() {
        match src[i] {
            b'/' if src.get(i + 1) == Some(&b'*') => {
                let end = src[i + 2..].windows(2).position(|w| w == b"*/").map_or(src.len(), |p| i + 2 + p + 2);
                blank(&mut out, i..end);
                i = end;
            }
            b'/' if src.get(i + 1) == Some(&b'/') => {
                let end = src[i..].iter().position(|&c| c == b'\n').map_or(src.len(), |p| i + p);
                blank(&mut out, i..end);
                i = end;
            }
            q @ (b'"' | b'\'') => {
                let mut j = i + 1;
                while j < src.len() && src[j] != q && src[j] != b'\n' {
                    j += if src[j] == b'\\' { 2 } else { 1 };
                }
                let end = (j + 1).min(src.len());
                // keep the quotes so a literal stays a token
                blank(&mut out, i + 1..end.saturating_sub(1).max(i + 1));
                i = end;
            }
            _ => i += 1,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const C: &str = r#"
/* a comment with a fake(void) { } */
static int helper(int x);

#define SIMPLE 5
#define MULTI(a, b)	\
	((a) +		\
	 (b))

struct thing {
	int a;	/* { unbalanced in a comment */
	struct inner { int z; } in;
};

static int helper(int x)
{
	const char *s = "}{";
	if (x) {
		return '}';
	}
	return SIMPLE;
}

static unsigned long
two_line(struct thing *t,
	 int y)
{
	return helper(t->a + y);
}
"#;

    #[test]
    fn finds_a_function_past_its_prototype_and_tricky_literals() {
        let s = Source::new(C);
        let f = s.extract(Kind::Function, "helper").unwrap();
        assert!(f.starts_with("static int helper(int x)\n{"), "{f}");
        assert!(f.ends_with("return SIMPLE;\n}"), "{f}");
        assert!(f.contains("\"}{\""));
    }

    #[test]
    fn takes_a_declaration_split_over_lines() {
        let s = Source::new(C);
        let f = s.extract(Kind::Function, "two_line").unwrap();
        assert!(f.starts_with("static unsigned long\ntwo_line("), "{f}");
    }

    #[test]
    fn finds_structs_and_macros_with_continuations() {
        let s = Source::new(C);
        let st = s.extract(Kind::Struct, "thing").unwrap();
        assert!(st.starts_with("struct thing {") && st.ends_with("};"), "{st}");
        assert_eq!(s.extract(Kind::Macro, "SIMPLE").unwrap(), "#define SIMPLE 5");
        let m = s.extract(Kind::Macro, "MULTI").unwrap();
        assert!(m.ends_with("(b))"), "{m}");
        // a nested struct is not at depth 0
        assert!(s.extract(Kind::Struct, "inner").is_err());
    }

    #[test]
    fn names_in_comments_calls_and_prefixes_are_not_definitions() {
        let s = Source::new(C);
        let e = s.extract(Kind::Function, "fake").unwrap_err();
        assert_eq!(e.to_string(), "function `fake` not found");
        assert!(s.extract(Kind::Function, "help").is_err());
        assert!(s.extract(Kind::Macro, "SIMPL").is_err());
    }
}
