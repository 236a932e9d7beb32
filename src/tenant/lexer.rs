//! A byte-level PostgreSQL lexer that splits SQL text into the tokens the server's own scanner
//! (`scan.l`) produces, so the statement guard sees exactly the keywords, identifiers and
//! string values PostgreSQL will act on: a regular expression cannot tell `SET` in a comment,
//! in a dollar-quoted string or in a `U&"\0073et"` identifier apart.
//!
//! It works on bytes because queries arrive as protocol bytes that need not be valid UTF-8,
//! and every boundary the scanner cares about is an ASCII byte (bytes >= 0x80 only ever occur
//! inside identifiers, strings and comments, as in every encoding PostgreSQL uses on the server).
//! The client encoding must therefore be ASCII-safe (UTF8, which the pool requests); the guard
//! refuses attempts to switch it.
//!
//! Fidelity notes, each chosen so that the guard errs towards seeing *more* code, never less:
//! - adjacent string literals separated by whitespace containing a newline (and `--` comments)
//!   are merged into one token with the first literal's escape rules, exactly as PostgreSQL
//!   does; `U&` escapes may span the pieces because the server decodes after merging;
//! - `UESCAPE 'c'` after a `U&` literal is part of that token (it is resolved at token level
//!   since PostgreSQL 13, so comments may come between);
//! - numbers followed by letters (`1abc`, an error since PostgreSQL 15) lex as a number and an
//!   identifier, as in older releases, so the identifier is still seen;
//! - identifiers are not truncated to 63 bytes: truncation cannot turn a longer name into one
//!   of the short names the guard looks for;
//! - zero-length quoted identifiers and malformed escapes become [`TokenKind::Invalid`], since
//!   the server rejects the whole query string for them.
//!
//! The lexer never panics, and every token consumes at least one byte, so it terminates.

use std::borrow::Cow;
use std::ops::Range;

use super::escape;
pub use super::token::{LexOptions, Token, TokenKind};

/// How the body of a quoted literal is delimited and decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Quoting {
    Standard,
    Escape,
    Unicode,
    Bits,
}

/// A token before its span is fixed: kind, end offset, and text if not the raw span.
type Scanned<'a> = (TokenKind, usize, Option<Cow<'a, [u8]>>);

/// An iterator over the tokens of a query string, trivia included.
#[derive(Debug, Clone)]
pub struct Lexer<'a> {
    src: &'a [u8],
    pos: usize,
    opts: LexOptions,
    backslash_in_plain_string: bool,
    /// Set on the short-lived lexer that looks for `UESCAPE`, so a `U&` literal found there
    /// does not look ahead again: lookahead depth stays at one on any input.
    nested: bool,
}

impl<'a> Lexer<'a> {
    /// A lexer with PostgreSQL's default settings.
    pub fn new(src: &'a [u8]) -> Self {
        Self::with_options(src, LexOptions::default())
    }

    pub fn with_options(src: &'a [u8], opts: LexOptions) -> Self {
        Lexer {
            src,
            pos: 0,
            opts,
            backslash_in_plain_string: false,
            nested: false,
        }
    }

    /// Whether a `'…'` string lexed so far contained a backslash. Only then can the
    /// `standard_conforming_strings` setting change the token stream, so the guard re-lexes
    /// with it off only in that case.
    pub fn saw_backslash_in_plain_string(&self) -> bool {
        self.backslash_in_plain_string
    }

    fn byte(&self, i: usize) -> Option<u8> {
        self.src.get(i).copied()
    }

    fn slice(&self, range: Range<usize>) -> &'a [u8] {
        self.src.get(range).unwrap_or_default()
    }

    fn plain_quoting(&self) -> Quoting {
        if self.opts.standard_conforming_strings {
            Quoting::Standard
        } else {
            Quoting::Escape
        }
    }

    fn scan(&mut self, start: usize, c: u8) -> Scanned<'a> {
        use TokenKind as K;
        let next = self.byte(start + 1);
        match c {
            _ if is_space(c) => (K::Whitespace, self.run_end(start, is_space), None),
            b'-' if next == Some(b'-') => {
                let end = self.run_end(start, |b| b != b'\n' && b != b'\r');
                (K::LineComment, end, None)
            }
            b'/' if next == Some(b'*') => self.block_comment(start),
            b'\'' => self.string(start, self.plain_quoting(), K::String),
            b'"' => self.quoted_ident(start, false),
            b'$' => self.dollar(start),
            b'0'..=b'9' => (K::Number, self.number(start), None),
            b'.' => match next {
                Some(d) if d.is_ascii_digit() => (K::Number, self.number(start), None),
                Some(b'.') => (K::Punct, start + 2, None),
                _ => (K::Punct, start + 1, None),
            },
            b':' => match next {
                Some(b':' | b'=') => (K::Punct, start + 2, None),
                _ => (K::Punct, start + 1, None),
            },
            b'(' | b')' | b'[' | b']' | b',' | b';' => (K::Punct, start + 1, None),
            _ if is_op_char(c) => (K::Operator, self.operator(start), None),
            _ if is_ident_start(c) => self.word(start, c, next),
            _ => (K::Other, start + 1, None),
        }
    }

    /// End of the run of bytes satisfying `keep` that starts at `i`.
    fn run_end(&self, i: usize, keep: impl Fn(u8) -> bool) -> usize {
        let rest = self.src.get(i..).unwrap_or_default();
        i + rest.iter().position(|&b| !keep(b)).unwrap_or(rest.len())
    }

    fn unterminated(&self) -> Scanned<'a> {
        (TokenKind::Unterminated, self.src.len(), None)
    }

    fn block_comment(&self, start: usize) -> Scanned<'a> {
        let mut depth = 0usize;
        let mut i = start;
        while let Some(c) = self.byte(i) {
            let next = self.byte(i + 1);
            if c == b'/' && next == Some(b'*') {
                depth += 1;
                i += 2;
            } else if c == b'*' && next == Some(b'/') {
                depth = depth.saturating_sub(1);
                i += 2;
                if depth == 0 {
                    return (TokenKind::BlockComment, i, None);
                }
            } else {
                i += 1;
            }
        }
        self.unterminated()
    }

    /// Identifiers and the literal prefixes `B'`, `X'`, `E'`, `N'`, `U&'`, `U&"`, which only
    /// count at the start of a token (`ae'x'` is the identifier `ae` and a plain string).
    fn word(&mut self, start: usize, c: u8, next: Option<u8>) -> Scanned<'a> {
        use TokenKind as K;
        match (c.to_ascii_lowercase(), next) {
            (b'b', Some(b'\'')) => self.string(start + 1, Quoting::Bits, K::BitString),
            (b'x', Some(b'\'')) => self.string(start + 1, Quoting::Bits, K::HexString),
            (b'e', Some(b'\'')) => self.string(start + 1, Quoting::Escape, K::EscapeString),
            (b'n', Some(b'\'')) => self.string(start + 1, self.plain_quoting(), K::String),
            (b'u', Some(b'&')) => match self.byte(start + 2) {
                Some(b'\'') => self.string(start + 2, Quoting::Unicode, K::UnicodeString),
                Some(b'"') => self.quoted_ident(start + 2, true),
                _ => (K::Ident, start + 1, None),
            },
            _ => (K::Ident, self.run_end(start, is_ident_cont), None),
        }
    }

    /// A quoted literal whose opening quote is at `open`, with any continuation pieces.
    fn string(&mut self, open: usize, q: Quoting, kind: TokenKind) -> Scanned<'a> {
        let mut first: Option<Range<usize>> = None;
        let mut more: Vec<Range<usize>> = Vec::new();
        let mut body = open + 1;
        let mut end = loop {
            let Some(close) = self.closing_quote(body, q) else {
                return self.unterminated();
            };
            match first {
                None => first = Some(body..close),
                Some(_) => more.push(body..close),
            }
            match self.continuation(close + 1) {
                Some(quote) => body = quote + 1,
                None => break close + 1,
            }
        };
        let plain = more.is_empty()
            && first.as_ref().is_some_and(|r| {
                !self
                    .slice(r.clone())
                    .iter()
                    .any(|&b| b == b'\\' || b == b'\'')
            });
        let pieces = first.into_iter().chain(more);
        let text = match q {
            Quoting::Bits => self.join(pieces, None),
            Quoting::Standard => self.join(pieces, Some(b'\'')),
            // Nothing to decode: borrow instead of copying.
            Quoting::Escape if plain => self.join(pieces, None),
            Quoting::Escape => {
                let mut out = Vec::new();
                for piece in pieces {
                    let raw = self.slice(piece);
                    if escape::decode_backslash(raw, &mut out).is_none() {
                        return (TokenKind::Invalid, end, None);
                    }
                }
                Cow::Owned(out)
            }
            Quoting::Unicode => {
                let raw = self.join(pieces, Some(b'\''));
                match self.unicode_value(&raw, &mut end) {
                    Some(value) => Cow::Owned(value),
                    None => return (TokenKind::Invalid, end, None),
                }
            }
        };
        (kind, end, Some(text))
    }

    /// Index of the quote that closes a literal body starting at `i`, skipping doubled quotes
    /// (not in bit strings) and backslash escapes (in escape strings).
    fn closing_quote(&mut self, mut i: usize, q: Quoting) -> Option<usize> {
        loop {
            match self.byte(i)? {
                b'\'' if q != Quoting::Bits && self.byte(i + 1) == Some(b'\'') => i += 2,
                b'\'' => return Some(i),
                b'\\' if q == Quoting::Escape => {
                    self.byte(i + 1)?;
                    i += 2;
                }
                b'\\' => {
                    self.backslash_in_plain_string |= q == Quoting::Standard;
                    i += 1;
                }
                _ => i += 1,
            }
        }
    }

    /// If whitespace containing a newline (and possibly `--` comments, but not block comments)
    /// followed by a quote starts at `i`, the index of that quote: SQL's rule for continuing a
    /// literal on the next line.
    fn continuation(&self, mut i: usize) -> Option<usize> {
        let mut newline = false;
        loop {
            match self.byte(i)? {
                b'\n' | b'\r' => {
                    newline = true;
                    i += 1;
                }
                c if is_space(c) => i += 1,
                b'-' if self.byte(i + 1) == Some(b'-') => {
                    i = self.run_end(i, |b| b != b'\n' && b != b'\r');
                }
                b'\'' if newline => return Some(i),
                _ => return None,
            }
        }
    }

    /// The concatenated pieces, `quote` undoubled; borrowed when no copy is needed.
    fn join(
        &self,
        mut pieces: impl Iterator<Item = Range<usize>>,
        quote: Option<u8>,
    ) -> Cow<'a, [u8]> {
        let Some(first) = pieces.next() else {
            return Cow::Borrowed(&[]);
        };
        let first = self.slice(first);
        let doubled = |s: &[u8]| quote.is_some_and(|q| s.contains(&q));
        let mut rest = pieces.peekable();
        if rest.peek().is_none() && !doubled(first) {
            return Cow::Borrowed(first);
        }
        let mut out = Vec::with_capacity(first.len());
        for piece in std::iter::once(first).chain(rest.map(|r| self.slice(r))) {
            let mut i = 0;
            while let Some(&c) = piece.get(i) {
                out.push(c);
                i += if Some(c) == quote { 2 } else { 1 };
            }
        }
        Cow::Owned(out)
    }

    /// `"…"` (or `U&"…"` when `unicode`) whose opening quote is at `open`.
    fn quoted_ident(&mut self, open: usize, unicode: bool) -> Scanned<'a> {
        let mut i = open + 1;
        let close = loop {
            match self.byte(i) {
                None => return self.unterminated(),
                Some(b'"') if self.byte(i + 1) == Some(b'"') => i += 2,
                Some(b'"') => break i,
                Some(_) => i += 1,
            }
        };
        let mut end = close + 1;
        if close == open + 1 {
            return (TokenKind::Invalid, end, None);
        }
        let text = self.join(std::iter::once(open + 1..close), Some(b'"'));
        if !unicode {
            return (TokenKind::QuotedIdent, end, Some(text));
        }
        match self.unicode_value(&text, &mut end) {
            Some(value) => (TokenKind::UnicodeIdent, end, Some(Cow::Owned(value))),
            None => (TokenKind::Invalid, end, None),
        }
    }

    /// Decodes the body of a `U&` literal ending at `*end`, taking a `UESCAPE` clause after it
    /// into the token (`*end` moves past it). `None` where PostgreSQL raises an error.
    fn unicode_value(&mut self, raw: &[u8], end: &mut usize) -> Option<Vec<u8>> {
        let esc = match self.uescape_clause(*end) {
            Some((esc, clause_end)) => {
                *end = clause_end;
                esc?
            }
            None => b'\\',
        };
        escape::decode_unicode(raw, esc)
    }

    /// Looks for `UESCAPE '<c>'` after a `U&` literal ending at `from`. Returns the escape
    /// character (`None` if PostgreSQL would refuse it) and where the clause ends, or `None`
    /// if there is no clause (then nothing is consumed).
    fn uescape_clause(&mut self, from: usize) -> Option<(Option<u8>, usize)> {
        if self.nested {
            return None;
        }
        let mut sub = Lexer {
            pos: from,
            nested: true,
            backslash_in_plain_string: false,
            ..*self
        };
        let keyword = sub.by_ref().find(|t| !t.kind.is_trivia())?;
        if keyword.kind != TokenKind::Ident || !keyword.text.eq_ignore_ascii_case(b"uescape") {
            return None;
        }
        let literal = sub.by_ref().find(|t| !t.kind.is_trivia())?;
        if !matches!(
            literal.kind,
            TokenKind::String | TokenKind::EscapeString | TokenKind::DollarString
        ) {
            return None;
        }
        self.backslash_in_plain_string |= sub.backslash_in_plain_string;
        let esc = match *literal.text {
            [c] if escape::valid_uescape(c) => Some(c),
            _ => None,
        };
        Some((esc, literal.span.end))
    }

    /// `$1`, `$tag$…$tag$`, or a lone `$`.
    fn dollar(&self, start: usize) -> Scanned<'a> {
        if self.byte(start + 1).is_some_and(|d| d.is_ascii_digit()) {
            return (TokenKind::Param, self.digits(start + 1), None);
        }
        let mut tag_end = start + 1;
        if self.byte(tag_end).is_some_and(is_ident_start) {
            tag_end = self.run_end(tag_end, |b| is_ident_start(b) || b.is_ascii_digit());
        }
        if self.byte(tag_end) != Some(b'$') {
            return (TokenKind::Other, start + 1, None);
        }
        let delim = self.slice(start..tag_end + 1);
        let body = tag_end + 1;
        // Tags cannot contain `$`, so comparing at each `$` stops by the next `$`: linear time.
        let mut i = body;
        while let Some(at) = self
            .src
            .get(i..)
            .and_then(|r| r.iter().position(|&b| b == b'$'))
        {
            let p = i + at;
            if self.src.get(p..p + delim.len()) == Some(delim) {
                let text = Cow::Borrowed(self.slice(body..p));
                return (TokenKind::DollarString, p + delim.len(), Some(text));
            }
            i = p + 1;
        }
        self.unterminated()
    }

    /// Decimal digits from `begin`, with single underscores between them (PostgreSQL 16).
    fn digits(&self, begin: usize) -> usize {
        self.digits_by(begin, false, |d| d.is_ascii_digit())
    }

    /// Digits satisfying `is_digit` from `begin`, with single underscores between them (and
    /// before the first one when `lead`, as after `0x`).
    fn digits_by(&self, begin: usize, lead: bool, is_digit: impl Fn(u8) -> bool) -> usize {
        let ok = |i: usize| self.byte(i).is_some_and(&is_digit);
        let mut i = begin;
        loop {
            if ok(i) {
                i += 1;
            } else if (lead || i > begin) && self.byte(i) == Some(b'_') && ok(i + 1) {
                i += 2;
            } else {
                return i;
            }
        }
    }

    fn number(&self, start: usize) -> usize {
        let radix = match self.byte(start + 1).map(|b| b.to_ascii_lowercase()) {
            Some(b'x') => 16,
            Some(b'o') => 8,
            Some(b'b') => 2,
            _ => 0,
        };
        if self.byte(start) == Some(b'0') && radix > 0 {
            let end = self.digits_by(start + 2, true, |d| char::from(d).is_digit(radix));
            // `0x` without digits is `0` followed by an identifier, as before PostgreSQL 16.
            if end > start + 2 {
                return end;
            }
        }
        let mut i = self.digits(start);
        if self.byte(i) == Some(b'.') && self.byte(i + 1) != Some(b'.') {
            i = self.digits(i + 1);
        }
        if matches!(self.byte(i), Some(b'e' | b'E')) {
            let sign = usize::from(matches!(self.byte(i + 1), Some(b'+' | b'-')));
            if self.byte(i + 1 + sign).is_some_and(|d| d.is_ascii_digit()) {
                i = self.digits(i + 1 + sign);
            }
        }
        i
    }

    /// An operator run, cut before an embedded `--` or `/*`, and without trailing `+`/`-`
    /// unless it contains a character that allows them (PostgreSQL's rule, so that `=-1`
    /// means `= -1`).
    fn operator(&self, start: usize) -> usize {
        let run = self.slice(start..self.run_end(start, is_op_char));
        let mut n = run.len();
        for pat in [b"--", b"/*"] {
            if let Some(p) = run.windows(2).position(|w| w == pat) {
                n = n.min(p.max(1));
            }
        }
        let run = run.get(..n).unwrap_or_default();
        if n > 1
            && matches!(run.last(), Some(b'+' | b'-'))
            && !run.iter().any(|c| b"~!@#^&|`?%".contains(c))
        {
            while n > 1 && matches!(run.get(n - 1), Some(b'+' | b'-')) {
                n -= 1;
            }
        }
        start + n
    }
}

impl<'a> Iterator for Lexer<'a> {
    type Item = Token<'a>;

    fn next(&mut self) -> Option<Token<'a>> {
        let start = self.pos;
        let c = self.byte(start)?;
        let (kind, end, text) = self.scan(start, c);
        // Always make progress and stay in bounds, whatever a scanning routine returned.
        let end = end.min(self.src.len()).max(start + 1);
        self.pos = end;
        let text = text.unwrap_or_else(|| Cow::Borrowed(self.slice(start..end)));
        Some(Token {
            kind,
            span: start..end,
            text,
        })
    }
}

/// PostgreSQL's `space`: `[ \t\n\r\f\v]` (`\v` since 16; before that it was a syntax error).
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

/// First byte of an identifier or dollar-quote tag: ASCII letter, `_`, or any non-ASCII byte.
fn is_ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

/// Later bytes of an unquoted identifier, which (unlike tags) may contain `$`.
fn is_ident_cont(b: u8) -> bool {
    is_ident_start(b) || b.is_ascii_digit() || b == b'$'
}

fn is_op_char(b: u8) -> bool {
    b"~!@#^&|`?+-*/%<>=".contains(&b)
}
