//! Identifier and literal quoting, in one place only. Every identifier the reconciler writes
//! goes through [`ident`], every value it cannot bind goes through [`literal`] (DDL takes no
//! bind parameters).

/// `"name"`, with embedded double quotes doubled. Always quotes, so reserved words and
/// mixed case are safe too.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `'value'`, with embedded single quotes doubled. With `standard_conforming_strings = on`
/// (the default since 9.1, and set explicitly by our sessions) backslashes are literal.
pub fn literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// A libpq connection-string value: `'...'` with `\` and `'` backslash-escaped.
pub fn conninfo_value(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(ident("orders"), "\"orders\"");
        assert_eq!(ident("we\"ird"), "\"we\"\"ird\"");
        assert_eq!(
            literal("x'; drop table orders; --"),
            "'x''; drop table orders; --'"
        );
        assert_eq!(conninfo_value("p'w\\d"), "'p\\'w\\\\d'");
    }
}
