//! Unit tests for the lexer: every token kind, PostgreSQL's quirks (nesting comments,
//! continuation of literals, operator splitting, `UESCAPE`), and malformed input.

use super::lexer::{LexOptions, Lexer, TokenKind as K};

/// Significant tokens as (kind, text) with the text made printable.
fn toks(sql: &[u8]) -> Vec<(K, String)> {
    Lexer::new(sql)
        .filter(|t| !t.kind.is_trivia())
        .map(|t| (t.kind, t.text_lossy().into_owned()))
        .collect()
}

fn kinds(sql: &[u8]) -> Vec<K> {
    toks(sql).into_iter().map(|(k, _)| k).collect()
}

fn one(sql: &[u8]) -> (K, String) {
    let all = toks(sql);
    assert_eq!(all.len(), 1, "{:?}: {all:?}", String::from_utf8_lossy(sql));
    all.into_iter().next().unwrap()
}

fn own(k: K, s: &str) -> (K, String) {
    (k, s.to_owned())
}

#[test]
fn spans_cover_the_input() {
    let sql: &[u8] = b"SELECT /* c */ a.\"B\"::int, $1 -- x\n FROM t; E'\\'' $$ $$ \xff";
    let mut at = 0;
    for t in Lexer::new(sql) {
        assert_eq!(t.span.start, at);
        assert!(t.span.end > t.span.start);
        at = t.span.end;
    }
    assert_eq!(at, sql.len());
}

#[test]
fn every_kind() {
    let all: Vec<K> =
        Lexer::new(b" -- c\n/* b */x \"q\" U&\"u\" 's' E's' U&'u' B'1' X'f' $$d$$ $1 1.5 <> ( \\")
            .map(|t| t.kind)
            .collect();
    use K::*;
    let expect = [
        Whitespace,
        LineComment,
        Whitespace,
        BlockComment,
        Ident,
        Whitespace,
        QuotedIdent,
        Whitespace,
        UnicodeIdent,
        Whitespace,
        String,
        Whitespace,
        EscapeString,
        Whitespace,
        UnicodeString,
        Whitespace,
        BitString,
        Whitespace,
        HexString,
        Whitespace,
        DollarString,
        Whitespace,
        Param,
        Whitespace,
        Number,
        Whitespace,
        Operator,
        Whitespace,
        Punct,
        Whitespace,
        Other,
    ];
    assert_eq!(all, expect);
    assert_eq!(kinds(b"'x"), [Unterminated]);
    assert_eq!(kinds(b"\"\""), [Invalid]);
}

#[test]
fn identifiers() {
    assert_eq!(
        toks(b"SeLeCt a$b _x1 \xc3\xa9t\xc3\xa9"),
        [
            own(K::Ident, "SeLeCt"),
            own(K::Ident, "a$b"),
            own(K::Ident, "_x1"),
            own(K::Ident, "été"),
        ]
    );
    let t = Lexer::new(b"APP").next().unwrap();
    assert_eq!(&*t.folded(), b"app");
    assert!(t.is_word(b"app"));
    assert_eq!(one(b"\"Set\"\"x\""), own(K::QuotedIdent, "Set\"x"));
    assert_eq!(
        one(b"\"app.tenant_id\""),
        own(K::QuotedIdent, "app.tenant_id")
    );
    // Dollar signs continue identifiers, so no dollar quote starts inside one.
    assert_eq!(toks(b"a$$ b"), [own(K::Ident, "a$$"), own(K::Ident, "b")]);
    // Prefixes only count at the start of a token.
    assert_eq!(toks(b"ae'x'"), [own(K::Ident, "ae"), own(K::String, "x")]);
    assert_eq!(
        toks(b"menu&'x'"),
        [
            own(K::Ident, "menu"),
            own(K::Operator, "&"),
            own(K::String, "x")
        ]
    );
    assert_eq!(
        toks(b"u&x"),
        [
            own(K::Ident, "u"),
            own(K::Operator, "&"),
            own(K::Ident, "x")
        ]
    );
}

#[test]
fn unicode_identifiers() {
    assert_eq!(
        one(br#"U&"\0073et_config""#),
        own(K::UnicodeIdent, "set_config")
    );
    assert_eq!(
        one(br#"u&"app.tenant\005fid""#),
        own(K::UnicodeIdent, "app.tenant_id")
    );
    assert_eq!(
        one(br#"U&"d!0061t!+000061" UESCAPE '!'"#),
        own(K::UnicodeIdent, "data")
    );
    assert_eq!(
        one(b"U&\"d!0061ta\" /* c */ uescape -- x\n '!'"),
        own(K::UnicodeIdent, "data")
    );
    assert_eq!(one(br#"U&"a""b""#), own(K::UnicodeIdent, "a\"b"));
    // No clause: the next tokens are left alone.
    assert_eq!(toks(br#"U&"x" uescapes '!'"#).len(), 3);
    assert_eq!(toks(br#"U&"x" UESCAPE x"#).len(), 3);
    for bad in [
        &br#"U&"\00""#[..],
        br#"U&"x" UESCAPE 'a'"#,
        br#"U&"x" UESCAPE '!!'"#,
        br#"U&"x" UESCAPE '+'"#,
        br#"U&"""#,
        br#"U&"\D800""#,
    ] {
        assert_eq!(kinds(bad), [K::Invalid], "{}", String::from_utf8_lossy(bad));
    }
}

#[test]
fn strings() {
    assert_eq!(one(b"'it''s'"), own(K::String, "it's"));
    assert_eq!(one(b"N'n'"), own(K::String, "n"));
    assert_eq!(one(b"''"), own(K::String, ""));
    assert_eq!(one(br"'a\'"), own(K::String, r"a\"));
    assert_eq!(
        one(br"E'a\'b\\c\x5fd\n'"),
        own(K::EscapeString, "a'b\\c_d\n")
    );
    assert_eq!(one(br"e'\u0073\U00000065t'"), own(K::EscapeString, "set"));
    assert_eq!(one(br"E'it''s'"), own(K::EscapeString, "it's"));
    assert_eq!(kinds(br"E'\u12'"), [K::Invalid]);
    assert_eq!(one(br"U&'\0041!' "), own(K::UnicodeString, "A!"));
    assert_eq!(one(br"U&'!0041' UESCAPE '!'"), own(K::UnicodeString, "A"));
    assert_eq!(one(br"U&'!0041' UESCAPE $$!$$"), own(K::UnicodeString, "A"));
    assert_eq!(one(b"B'0101'"), own(K::BitString, "0101"));
    assert_eq!(one(b"x'FF'"), own(K::HexString, "FF"));
    // Bit strings have no doubled quotes.
    assert_eq!(kinds(b"B'1''0'"), [K::BitString, K::String]);
}

#[test]
fn continuation_merges_like_postgres() {
    assert_eq!(one(b"'a'\n'b'"), own(K::String, "ab"));
    assert_eq!(one(b"'a'  -- c\n  -- d\r\n\t'b'"), own(K::String, "ab"));
    assert_eq!(kinds(b"'a' 'b'"), [K::String, K::String]);
    assert_eq!(kinds(b"'a' /* c */\n'b'"), [K::String, K::String]);
    // The continuation keeps the first piece's escape rules: `\'` does not end it.
    assert_eq!(one(b"E'a'\n'\\'b'"), own(K::EscapeString, "a'b"));
    // Unicode escapes are decoded after merging, so they may span pieces.
    assert_eq!(one(b"U&'\\00'\n'41'"), own(K::UnicodeString, "A"));
}

#[test]
fn standard_conforming_strings_off() {
    let off = LexOptions {
        standard_conforming_strings: false,
    };
    let sql: &[u8] = br"'a\'; SET x = 1 --'";
    let on: Vec<K> = Lexer::new(sql)
        .filter(|t| !t.kind.is_trivia())
        .map(|t| t.kind)
        .collect();
    assert_eq!(on[0], K::String);
    assert!(on.len() > 3);
    let mut lexer = Lexer::with_options(sql, off);
    let legacy: Vec<K> = lexer.by_ref().map(|t| t.kind).collect();
    assert_eq!(legacy, [K::String]);
    assert!(!lexer.saw_backslash_in_plain_string());
    let mut lexer = Lexer::new(sql);
    lexer.by_ref().for_each(drop);
    assert!(lexer.saw_backslash_in_plain_string());
}

#[test]
fn comments_nest() {
    assert_eq!(kinds(b"/* a /* b */ c */ x"), [K::Ident]);
    let all: Vec<K> = Lexer::new(b"/* a /* b */ c */x").map(|t| t.kind).collect();
    assert_eq!(all, [K::BlockComment, K::Ident]);
    assert_eq!(kinds(b"/* /* */"), [K::Unterminated]);
    let all: Vec<K> = Lexer::new(b"/**/-- x\r\ny").map(|t| t.kind).collect();
    assert_eq!(
        all,
        [K::BlockComment, K::LineComment, K::Whitespace, K::Ident]
    );
    // Comment starts inside an operator run end the operator.
    assert_eq!(
        toks(b"+--x\n1"),
        [own(K::Operator, "+"), own(K::Number, "1")]
    );
    assert_eq!(toks(b"*/*x*/"), [own(K::Operator, "*")]);
}

#[test]
fn dollar_quotes_and_params() {
    assert_eq!(
        one(b"$tag$ a $other$ $TAG$ b $tag$"),
        own(K::DollarString, " a $other$ $TAG$ b ")
    );
    assert_eq!(one(b"$$x$y$$"), own(K::DollarString, "x$y"));
    assert_eq!(one(b"$a$$a$"), own(K::DollarString, ""));
    assert_eq!(toks(b"$1 $23"), [own(K::Param, "$1"), own(K::Param, "$23")]);
    assert_eq!(
        toks(b"$1$$x$$"),
        [own(K::Param, "$1"), own(K::DollarString, "x")]
    );
    assert_eq!(
        toks(b"$a b"),
        [own(K::Other, "$"), own(K::Ident, "a"), own(K::Ident, "b")]
    );
    assert_eq!(kinds(b"$ 1"), [K::Other, K::Number]);
    assert_eq!(kinds(b"$x$ never closed $X$"), [K::Unterminated]);
    assert_eq!(kinds(b"$$"), [K::Unterminated]);
}

#[test]
fn numbers() {
    for n in [
        "1", "1.5", ".5", "1.", "1e10", "1.5E-3", "0x1F", "0o17", "0b101", "1_000",
    ] {
        assert_eq!(one(n.as_bytes()), own(K::Number, n), "{n}");
    }
    assert_eq!(
        toks(b"1..2"),
        [
            own(K::Number, "1"),
            own(K::Punct, ".."),
            own(K::Number, "2")
        ]
    );
    assert_eq!(toks(b"1e"), [own(K::Number, "1"), own(K::Ident, "e")]);
    assert_eq!(
        toks(b"1set_config"),
        [own(K::Number, "1"), own(K::Ident, "set_config")]
    );
    assert_eq!(toks(b"0x"), [own(K::Number, "0"), own(K::Ident, "x")]);
    assert_eq!(
        toks(b"1E'x'"),
        [own(K::Number, "1"), own(K::EscapeString, "x")]
    );
}

#[test]
fn operators_and_punctuation() {
    assert_eq!(
        toks(b"=-1"),
        [
            own(K::Operator, "="),
            own(K::Operator, "-"),
            own(K::Number, "1")
        ]
    );
    assert_eq!(toks(b"@- x"), [own(K::Operator, "@-"), own(K::Ident, "x")]);
    assert_eq!(toks(b"<>!=>=||"), [own(K::Operator, "<>!=>=||")]);
    assert_eq!(toks(b"? `"), [own(K::Operator, "?"), own(K::Operator, "`")]);
    let p: Vec<String> = toks(b"()[],;:.::..:=")
        .into_iter()
        .map(|(_, s)| s)
        .collect();
    assert_eq!(
        p,
        ["(", ")", "[", "]", ",", ";", ":", ".", "::", "..", ":="]
    );
    assert_eq!(kinds(b"{}\\\0"), [K::Other; 4]);
}

#[test]
fn unterminated_forms() {
    for sql in [
        &b"'abc"[..],
        b"E'abc\\'",
        b"E'\\",
        b"\"abc",
        b"U&\"abc",
        b"U&'abc",
        b"B'01",
        b"/* x",
        b"$q$ x",
        b"'a'\n'b",
    ] {
        let all = toks(sql);
        assert_eq!(
            all.last().map(|t| t.0),
            Some(K::Unterminated),
            "{}",
            String::from_utf8_lossy(sql)
        );
        assert_eq!(all.len(), 1);
    }
    assert_eq!(kinds(b"SELECT 'x"), [K::Ident, K::Unterminated]);
}

#[test]
fn invalid_utf8() {
    let sql: &[u8] = b"SELECT \xff\xfe, '\xc3(', E'\\xff\xff', \"\x80\" FROM \xe2\x82";
    let all = toks(sql);
    assert_eq!(all[1].0, K::Ident);
    assert_eq!(all[3].0, K::String);
    assert_eq!(all[5].0, K::EscapeString);
    assert_eq!(all[7].0, K::QuotedIdent);
    assert_eq!(all.last().map(|t| t.0), Some(K::Ident));
    let t = Lexer::new(b"E'\\xff'").next().unwrap();
    assert_eq!(&*t.text, b"\xff");
}
