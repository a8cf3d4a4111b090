//! A reader for the xl.cfg syntax (the subset ovm writes: `key = value` settings whose
//! values are numbers, quoted strings with libxlu's escapes, or lists of those).
//!
//! It reads generated configurations back: the tests use it to prove that hostile values
//! stay inside their string, and [`crate::fake::FakeXl`] uses it the way `xl create` reads
//! a file. It follows libxlu's lexer: `#` starts a comment outside strings, settings end
//! at a newline or `;`, strings are `"..."` or `'...'` with `\\`, `\"`, `\'`, `\n`, `\t`,
//! `\r`, `\xHH` and octal escapes, and a raw newline inside a string is an error.

use std::collections::BTreeMap;

/// One value of a setting.
#[derive(Debug, Clone, PartialEq)]
pub enum CfgValue {
    /// A number (xl keeps numbers as text; ovm writes integers).
    Number(i64),
    /// A string, unescaped.
    Str(String),
    /// A list.
    List(Vec<CfgValue>),
}

impl CfgValue {
    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            CfgValue::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The number, if this is one.
    pub fn as_number(&self) -> Option<i64> {
        match self {
            CfgValue::Number(n) => Some(*n),
            _ => None,
        }
    }
}

/// Settings in file order by name (a repeated setting is an error).
pub type Settings = BTreeMap<String, CfgValue>;

struct Lexer<'a> {
    chars: std::iter::Peekable<std::str::CharIndices<'a>>,
    line: usize,
}

impl Lexer<'_> {
    fn err(&self, msg: impl std::fmt::Display) -> String {
        format!("line {}: {msg}", self.line)
    }

    /// Skips blanks and comments; stops at a newline (which ends a setting).
    fn skip_blanks(&mut self) {
        while let Some(&(_, c)) = self.chars.peek() {
            if c == '#' {
                while let Some(&(_, c)) = self.chars.peek() {
                    if c == '\n' {
                        break;
                    }
                    self.chars.next();
                }
            } else if c == ' ' || c == '\t' || c == '\r' {
                self.chars.next();
            } else {
                break;
            }
        }
    }

    /// Skips blanks, comments and newlines (inside lists and between settings).
    fn skip_space(&mut self) {
        loop {
            self.skip_blanks();
            match self.chars.peek() {
                Some(&(_, '\n')) => {
                    self.line += 1;
                    self.chars.next();
                }
                _ => break,
            }
        }
    }

    fn ident(&mut self) -> Result<String, String> {
        let mut s = String::new();
        while let Some(&(_, c)) = self.chars.peek() {
            if c.is_ascii_alphanumeric() || c == '_' {
                s.push(c);
                self.chars.next();
            } else {
                break;
            }
        }
        if s.is_empty() || !s.starts_with(|c: char| c.is_ascii_alphabetic()) {
            return Err(self.err(format!("expected a setting name, found {s:?}")));
        }
        Ok(s)
    }

    fn string(&mut self, quote: char) -> Result<String, String> {
        let mut s = String::new();
        loop {
            let Some((_, c)) = self.chars.next() else {
                return Err(self.err("unterminated string"));
            };
            match c {
                '\n' => return Err(self.err("newline inside a string")),
                c if c == quote => return Ok(s),
                '\\' => {
                    let Some((_, e)) = self.chars.next() else {
                        return Err(self.err("unterminated escape"));
                    };
                    match e {
                        '"' | '\'' | '\\' => s.push(e),
                        'a' => s.push('\u{7}'),
                        'b' => s.push('\u{8}'),
                        'f' => s.push('\u{c}'),
                        'n' => s.push('\n'),
                        'r' => s.push('\r'),
                        't' => s.push('\t'),
                        'v' => s.push('\u{b}'),
                        'x' => s.push(self.numeric_escape(16, 2, 2)?),
                        '0'..='7' => {
                            let mut digits = e.to_string();
                            while digits.len() < 3 {
                                match self.chars.peek() {
                                    Some(&(_, d @ '0'..='7')) => {
                                        digits.push(d);
                                        self.chars.next();
                                    }
                                    _ => break,
                                }
                            }
                            let v = u32::from_str_radix(&digits, 8)
                                .map_err(|e| self.err(format!("octal escape: {e}")))?;
                            s.push(char::from_u32(v).ok_or_else(|| self.err("bad octal escape"))?);
                        }
                        other => return Err(self.err(format!("invalid escape \\{other}"))),
                    }
                }
                c => s.push(c),
            }
        }
    }

    fn numeric_escape(&mut self, radix: u32, min: usize, max: usize) -> Result<char, String> {
        let mut digits = String::new();
        while digits.len() < max {
            match self.chars.peek() {
                Some(&(_, d)) if d.is_digit(radix) => {
                    digits.push(d);
                    self.chars.next();
                }
                _ => break,
            }
        }
        if digits.len() < min {
            return Err(self.err("short numeric escape"));
        }
        let v = u32::from_str_radix(&digits, radix).map_err(|e| self.err(e))?;
        char::from_u32(v).ok_or_else(|| self.err("bad numeric escape"))
    }

    fn value(&mut self) -> Result<CfgValue, String> {
        self.skip_blanks();
        match self.chars.peek().map(|&(_, c)| c) {
            Some(q @ ('"' | '\'')) => {
                self.chars.next();
                Ok(CfgValue::Str(self.string(q)?))
            }
            Some('[') => {
                self.chars.next();
                let mut items = Vec::new();
                loop {
                    self.skip_space();
                    if let Some(&(_, ']')) = self.chars.peek() {
                        self.chars.next();
                        return Ok(CfgValue::List(items));
                    }
                    items.push(self.value()?);
                    self.skip_space();
                    match self.chars.next() {
                        Some((_, ',')) => continue,
                        Some((_, ']')) => return Ok(CfgValue::List(items)),
                        other => {
                            return Err(self.err(format!(
                                "expected ',' or ']' in a list, found {:?}",
                                other.map(|(_, c)| c)
                            )));
                        }
                    }
                }
            }
            Some(c) if c.is_ascii_digit() || c == '-' => {
                let mut s = String::new();
                while let Some(&(_, c)) = self.chars.peek() {
                    if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                        s.push(c);
                        self.chars.next();
                    } else {
                        break;
                    }
                }
                s.parse()
                    .map(CfgValue::Number)
                    .map_err(|e| self.err(format!("number {s:?}: {e}")))
            }
            other => Err(self.err(format!("expected a value, found {other:?}"))),
        }
    }
}

/// Reads an xl.cfg text; errors name the line.
pub fn parse(text: &str) -> Result<Settings, String> {
    let mut lx = Lexer {
        chars: text.char_indices().peekable(),
        line: 1,
    };
    let mut settings = Settings::new();
    loop {
        lx.skip_space();
        if lx.chars.peek().is_none() {
            return Ok(settings);
        }
        if let Some(&(_, ';')) = lx.chars.peek() {
            lx.chars.next();
            continue;
        }
        let key = lx.ident()?;
        lx.skip_blanks();
        match lx.chars.next() {
            Some((_, '=')) => {}
            other => {
                return Err(lx.err(format!(
                    "expected '=' after {key}, found {:?}",
                    other.map(|(_, c)| c)
                )));
            }
        }
        let value = lx.value()?;
        lx.skip_blanks();
        match lx.chars.peek() {
            None | Some(&(_, '\n')) | Some(&(_, ';')) => {}
            Some(&(_, c)) => return Err(lx.err(format!("unexpected {c:?} after {key}'s value"))),
        }
        if settings.insert(key.clone(), value).is_some() {
            return Err(lx.err(format!("{key} is set twice")));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_strings_numbers_and_lists() {
        let s = parse(
            "# c\nname = \"a\\\"b\\\\c\" # trailing\nmemory = 128; vcpus=2\n\
             disk = [ 'x, y',\n  \"z\", ]\nextra = \"\\x41\\101\\n\"\n",
        )
        .unwrap();
        assert_eq!(s["name"].as_str(), Some("a\"b\\c"));
        assert_eq!(s["memory"].as_number(), Some(128));
        assert_eq!(s["vcpus"].as_number(), Some(2));
        assert_eq!(
            s["disk"],
            CfgValue::List(vec![
                CfgValue::Str("x, y".into()),
                CfgValue::Str("z".into())
            ])
        );
        assert_eq!(s["extra"].as_str(), Some("AA\n"));
    }

    #[test]
    fn refuses_what_xl_refuses() {
        for bad in [
            "name = \"a\nb\"",
            "name = \"a",
            "name \"a\"",
            "bogus syntax here",
            "a = 1 2",
            "a = 1\na = 2",
            "a = \"\\q\"",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
