//! The token types the lexer produces: what a token is ([`TokenKind`]), where it is and what
//! it says ([`Token`]), and the session settings that change lexing ([`LexOptions`]).
//!
//! Kept apart from the scanner so that code which only consumes tokens (the guard) reads a
//! small, stable vocabulary.

use std::borrow::Cow;
use std::ops::Range;

/// What a token is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenKind {
    /// Spaces, tabs, newlines, carriage returns, form and vertical feeds.
    Whitespace,
    /// `--` up to, not including, the next newline or carriage return.
    LineComment,
    /// `/* … */`, nesting as in PostgreSQL (unlike C).
    BlockComment,
    /// An unquoted identifier or keyword; `text` is as written, compare it case-insensitively
    /// (PostgreSQL folds ASCII letters to lower case; keeping the bytes avoids an allocation).
    Ident,
    /// `"…"`; `text` has `""` undoubled and keeps its case.
    QuotedIdent,
    /// `U&"…"` with an optional `UESCAPE`; `text` is decoded.
    UnicodeIdent,
    /// `'…'` (also `N'…'`); `text` is the value.
    String,
    /// `E'…'`; `text` is the value with backslash escapes decoded.
    EscapeString,
    /// `U&'…'` with an optional `UESCAPE`; `text` is decoded.
    UnicodeString,
    /// `B'…'`; `text` is the digits.
    BitString,
    /// `X'…'`; `text` is the digits.
    HexString,
    /// `$tag$…$tag$`; `text` is the body.
    DollarString,
    /// `$1`, a positional parameter.
    Param,
    /// An integer or numeric constant.
    Number,
    /// A run of operator characters, split where PostgreSQL splits it.
    Operator,
    /// `( ) [ ] , ; : .` and the two-character `::`, `..`, `:=`.
    Punct,
    /// Any other single byte (`\`, `{`, a lone `$`, control characters); a syntax error.
    Other,
    /// A string, quoted identifier, dollar quote or block comment that never ends; it runs to
    /// the end of the input.
    Unterminated,
    /// A token PostgreSQL rejects (bad escape, empty quoted identifier, bad `UESCAPE`).
    Invalid,
}

impl TokenKind {
    /// Whitespace and comments: they separate tokens and mean nothing else.
    pub fn is_trivia(self) -> bool {
        matches!(
            self,
            Self::Whitespace | Self::LineComment | Self::BlockComment
        )
    }

    /// Identifiers in any spelling (keywords are unquoted identifiers here).
    pub fn is_ident_like(self) -> bool {
        matches!(self, Self::Ident | Self::QuotedIdent | Self::UnicodeIdent)
    }

    /// Literals whose value is text (bit strings are not).
    pub fn is_text_literal(self) -> bool {
        matches!(
            self,
            Self::String | Self::EscapeString | Self::UnicodeString | Self::DollarString
        )
    }
}

/// One token: its kind, where it is in the input, and its text (decoded where the kind says so,
/// otherwise the bytes of `span`). Decoded values are bytes because octal and hex escapes can
/// produce any byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token<'a> {
    pub kind: TokenKind,
    pub span: Range<usize>,
    pub text: Cow<'a, [u8]>,
}

impl Token<'_> {
    /// Whether this is an identifier equal to `word`, ignoring ASCII case. Quoted spellings
    /// match too, on purpose: the guard prefers a false alarm over a missed keyword.
    pub fn is_word(&self, word: &[u8]) -> bool {
        self.kind.is_ident_like() && self.text.eq_ignore_ascii_case(word)
    }

    /// Whether this is the punctuation `p`.
    pub fn is_punct(&self, p: &[u8]) -> bool {
        self.kind == TokenKind::Punct && *self.text == *p
    }

    /// The identifier as PostgreSQL names it: ASCII-lower-cased for unquoted identifiers.
    pub fn folded(&self) -> Cow<'_, [u8]> {
        if self.kind == TokenKind::Ident && self.text.iter().any(u8::is_ascii_uppercase) {
            Cow::Owned(self.text.to_ascii_lowercase())
        } else {
            Cow::Borrowed(&self.text)
        }
    }

    /// The text for display, with invalid UTF-8 replaced.
    pub fn text_lossy(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.text)
    }
}

/// Session settings that change how PostgreSQL lexes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LexOptions {
    /// `standard_conforming_strings`: when off, `'…'` strings take backslash escapes.
    pub standard_conforming_strings: bool,
}

impl Default for LexOptions {
    /// PostgreSQL's default since 9.1.
    fn default() -> Self {
        LexOptions {
            standard_conforming_strings: true,
        }
    }
}
