//! RESP2 framing: parsing client commands (arrays of bulk strings, or inline lines as
//! `redis-cli` and `telnet` send them) and writing replies.
//!
//! Owns bytes only. Limits are checked on the lengths a frame announces, before anything is
//! allocated, so garbage cannot make the server grow. An incomplete frame is not an error:
//! [`parse_command`] returns `Ok(None)` and the caller reads more.

use bytes::{Buf, Bytes, BytesMut};

use super::output::Output;

/// Limits on what one command may announce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameLimits {
    /// Most arguments (array elements) in one command.
    pub max_args: usize,
    /// Longest single argument, in bytes.
    pub max_arg_bytes: usize,
    /// Most bytes all arguments of one command may announce together.
    pub max_frame_bytes: usize,
    /// Longest inline command line, in bytes.
    pub max_inline_bytes: usize,
}

impl Default for FrameLimits {
    fn default() -> Self {
        FrameLimits {
            max_args: 1024,
            max_arg_bytes: 32 * 1024,
            max_frame_bytes: 4 * 1024 * 1024,
            max_inline_bytes: 64 * 1024,
        }
    }
}

/// A malformed or over-limit frame: the connection answers with an error and closes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// The bytes are not RESP.
    #[error("Protocol error: {0}")]
    Malformed(&'static str),
    /// A frame announced more than the limits allow.
    #[error("Protocol error: {0}")]
    TooLarge(&'static str),
}

/// Parses one command from the front of `buf`, removing its bytes. Returns `Ok(None)` when
/// `buf` holds only part of a command (nothing is removed then), and the arguments otherwise
/// (an empty vector for a blank inline line).
pub fn parse_command(
    buf: &mut BytesMut,
    limits: &FrameLimits,
) -> Result<Option<Vec<Bytes>>, ProtocolError> {
    if buf.is_empty() {
        return Ok(None);
    }
    if buf[0] == b'*' {
        parse_array(buf, limits)
    } else {
        parse_inline(buf, limits)
    }
}

/// Finds the end of the line starting at `from`: the index of its `\r`.
fn line_end(buf: &[u8], from: usize) -> Option<usize> {
    let at = memchr_cr_lf(&buf[from..])?;
    Some(from + at)
}

fn memchr_cr_lf(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\r\n")
}

/// Parses a decimal length line (`*3`, `$5`) at `from`; returns the number and where the next
/// line starts, or `Ok(None)` if the line is not complete yet.
fn parse_len(
    buf: &[u8],
    from: usize,
    max_digits: usize,
) -> Result<Option<(i64, usize)>, ProtocolError> {
    let Some(end) = line_end(buf, from) else {
        if buf.len() - from > max_digits + 2 {
            return Err(ProtocolError::Malformed("invalid length line"));
        }
        return Ok(None);
    };
    let n = parse_decimal(&buf[from..end]).ok_or(ProtocolError::Malformed("invalid length"))?;
    Ok(Some((n, end + 2)))
}

/// An optionally negative decimal number with at most [`MAX_DIGITS`] digits and nothing else.
/// By hand rather than through `str::parse`: it runs twice for every argument.
fn parse_decimal(text: &[u8]) -> Option<i64> {
    let (negative, digits) = match text {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, text),
    };
    if digits.is_empty() || digits.len() > MAX_DIGITS {
        return None;
    }
    let mut n: i64 = 0;
    for &digit in digits {
        if !digit.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(i64::from(digit - b'0'))?;
    }
    Some(if negative { -n } else { n })
}

fn parse_array(
    buf: &mut BytesMut,
    limits: &FrameLimits,
) -> Result<Option<Vec<Bytes>>, ProtocolError> {
    let Some((count, args_start)) = parse_len(buf, 1, MAX_DIGITS)? else {
        return Ok(None);
    };
    if count < 0 {
        // A null array: nothing to run. Consume it.
        buf.advance(args_start);
        return Ok(Some(Vec::new()));
    }
    if count as u64 > limits.max_args as u64 {
        return Err(ProtocolError::TooLarge("too many arguments"));
    }
    let count = count as usize;
    // First pass: check that the whole command is here and within the limits, allocating
    // nothing; most reads of a pipelining client end in the middle of a command.
    let mut at = args_start;
    let mut announced = 0u64;
    for _ in 0..count {
        let Some((start, end)) = bulk_span(buf, at, limits)? else {
            return Ok(None);
        };
        announced += (end - start) as u64;
        if announced > limits.max_frame_bytes as u64 {
            return Err(ProtocolError::TooLarge("command over the size limit"));
        }
        if !bulk_complete(buf, end)? {
            return Ok(None);
        }
        at = end + 2;
    }
    // Second pass over the complete, checked frame: the arguments share its buffer.
    let frame = buf.split_to(at).freeze();
    let mut args = Vec::with_capacity(count);
    let mut at = args_start;
    while let Some((start, end)) = bulk_span(&frame, at, limits)? {
        args.push(frame.slice(start..end));
        at = end + 2;
        if args.len() == count {
            break;
        }
    }
    Ok(Some(args))
}

/// Digits a length line may have: enough for any `i64`.
const MAX_DIGITS: usize = 20;

/// The span of the bulk string whose `$` header starts at `at` (checked against the limits),
/// or `Ok(None)` if the header has not arrived yet.
fn bulk_span(
    buf: &[u8],
    at: usize,
    limits: &FrameLimits,
) -> Result<Option<(usize, usize)>, ProtocolError> {
    let Some(&first) = buf.get(at) else {
        return Ok(None);
    };
    if first != b'$' {
        return Err(ProtocolError::Malformed("expected '$', got something else"));
    }
    let Some((len, start)) = parse_len(buf, at + 1, MAX_DIGITS)? else {
        return Ok(None);
    };
    if len < 0 {
        return Err(ProtocolError::Malformed("invalid bulk length"));
    }
    if len as u64 > limits.max_arg_bytes as u64 {
        return Err(ProtocolError::TooLarge("argument over the size limit"));
    }
    Ok(Some((start, start + len as usize)))
}

/// Whether the bulk string ending at `end` has fully arrived, with its CRLF.
fn bulk_complete(buf: &[u8], end: usize) -> Result<bool, ProtocolError> {
    match buf.get(end..end + 2) {
        None => Ok(false),
        Some(b"\r\n") => Ok(true),
        Some(_) => Err(ProtocolError::Malformed(
            "bulk string not terminated by CRLF",
        )),
    }
}

fn parse_inline(
    buf: &mut BytesMut,
    limits: &FrameLimits,
) -> Result<Option<Vec<Bytes>>, ProtocolError> {
    let Some(newline) = buf.iter().position(|&b| b == b'\n') else {
        if buf.len() > limits.max_inline_bytes {
            return Err(ProtocolError::TooLarge("inline command too long"));
        }
        return Ok(None);
    };
    if newline > limits.max_inline_bytes {
        return Err(ProtocolError::TooLarge("inline command too long"));
    }
    let line = buf.split_to(newline + 1);
    let text = line[..newline]
        .strip_suffix(b"\r")
        .unwrap_or(&line[..newline]);
    let args = split_args(text)?;
    if args.len() > limits.max_args {
        return Err(ProtocolError::TooLarge("too many arguments"));
    }
    Ok(Some(args))
}

/// Splits an inline command line the way Redis does (`sdssplitargs`): arguments are separated
/// by whitespace; double quotes allow `\n \r \t \b \a \\ \" \xHH` escapes, single quotes
/// allow `\'`; a closing quote must end the argument; an unbalanced quote is an error.
pub fn split_args(text: &[u8]) -> Result<Vec<Bytes>, ProtocolError> {
    let mut args = Vec::new();
    let mut at = 0;
    loop {
        while text.get(at).is_some_and(|b| is_space(*b)) {
            at += 1;
        }
        if at >= text.len() {
            return Ok(args);
        }
        let mut arg = Vec::new();
        let mut quote = None;
        loop {
            let Some(&byte) = text.get(at) else {
                if quote.is_some() {
                    return Err(ProtocolError::Malformed("unbalanced quotes in request"));
                }
                break;
            };
            match quote {
                None if is_space(byte) => break,
                None if byte == b'"' || byte == b'\'' => quote = Some(byte),
                None => arg.push(byte),
                Some(q) if byte == q => {
                    // The closing quote must be followed by a space or the end of the line.
                    if text.get(at + 1).is_some_and(|b| !is_space(*b)) {
                        return Err(ProtocolError::Malformed("unbalanced quotes in request"));
                    }
                    at += 1;
                    break;
                }
                Some(b'"') if byte == b'\\' => {
                    let (unescaped, used) = unescape(&text[at + 1..]);
                    arg.push(unescaped);
                    at += used;
                }
                Some(b'\'') if byte == b'\\' && text.get(at + 1) == Some(&b'\'') => {
                    arg.push(b'\'');
                    at += 1;
                }
                Some(_) => arg.push(byte),
            }
            at += 1;
        }
        args.push(Bytes::from(arg));
    }
}

/// Whitespace as C's `isspace` sees it.
fn is_space(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

/// The byte an escape inside double quotes stands for, given what follows the backslash, and
/// how many of those bytes it used. `\xHH` needs two hex digits; an unknown escape is the
/// character itself (`\q` is `q`), as in Redis.
fn unescape(rest: &[u8]) -> (u8, usize) {
    let hex = |b: u8| char::from(b).to_digit(16);
    match rest {
        [b'x', hi, lo, ..] if hex(*hi).is_some() && hex(*lo).is_some() => {
            let value = hex(*hi).unwrap_or(0) * 16 + hex(*lo).unwrap_or(0);
            (value as u8, 3)
        }
        [b'n', ..] => (b'\n', 1),
        [b'r', ..] => (b'\r', 1),
        [b't', ..] => (b'\t', 1),
        [b'b', ..] => (0x08, 1),
        [b'a', ..] => (0x07, 1),
        [other, ..] => (*other, 1),
        [] => (b'\\', 0),
    }
}

/// Bytes a bulk string reply of `len` bytes takes (`$len\r\n...\r\n`), so a large reply can be
/// sized before it is built.
pub fn bulk_reply_bytes(len: usize) -> usize {
    1 + decimal_digits(len) + 2 + len + 2
}

/// Bytes an array header of `n` elements takes (`*n\r\n`).
pub fn array_header_bytes(n: usize) -> usize {
    1 + decimal_digits(n) + 2
}

fn decimal_digits(mut n: usize) -> usize {
    let mut digits = 1;
    while n >= 10 {
        n /= 10;
        digits += 1;
    }
    digits
}

/// Appends RESP2 replies to a connection's unsent output.
pub struct Reply<'a>(pub &'a mut Output);

impl Reply<'_> {
    /// `+text`
    pub fn simple(&mut self, text: &str) {
        let out = self.0.tail();
        out.extend_from_slice(b"+");
        out.extend_from_slice(text.as_bytes());
        out.extend_from_slice(b"\r\n");
    }

    /// `+OK`
    pub fn ok(&mut self) {
        self.0.tail().extend_from_slice(b"+OK\r\n");
    }

    /// `-message` (the message should start with an error code such as `ERR`). Line breaks
    /// in it are replaced, so a reply is always one line.
    pub fn error(&mut self, message: &str) {
        let out = self.0.tail();
        out.extend_from_slice(b"-");
        out.extend(message.bytes().map(|byte| {
            if byte == b'\r' || byte == b'\n' {
                b' '
            } else {
                byte
            }
        }));
        out.extend_from_slice(b"\r\n");
    }

    /// `:n`
    pub fn integer(&mut self, n: i64) {
        self.header(b':', n);
    }

    /// `$len\r\nbytes`, copied.
    pub fn bulk(&mut self, bytes: &[u8]) {
        self.header(b'$', bytes.len());
        let out = self.0.tail();
        out.extend_from_slice(bytes);
        out.extend_from_slice(b"\r\n");
    }

    /// `$len\r\nbytes` for a stored value: a large one is sent from its own buffer, not
    /// copied.
    pub fn value(&mut self, value: &Bytes) {
        self.header(b'$', value.len());
        self.0.push_value(value);
        self.0.tail().extend_from_slice(b"\r\n");
    }

    /// `<kind><n>\r\n`, formatted without allocating.
    fn header(&mut self, kind: u8, n: impl std::fmt::Display) {
        use std::fmt::Write as _;
        let out = self.0.tail();
        out.extend_from_slice(&[kind]);
        // Writing into a BytesMut cannot fail.
        let _ = write!(out, "{n}\r\n");
    }

    /// `$-1`, the null bulk string.
    pub fn null(&mut self) {
        self.0.tail().extend_from_slice(b"$-1\r\n");
    }

    /// `*n`, the header of an array of `n` replies that follow.
    pub fn array(&mut self, n: usize) {
        self.header(b'*', n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(input: &[u8]) -> Result<Option<Vec<Bytes>>, ProtocolError> {
        let mut buf = BytesMut::from(input);
        parse_command(&mut buf, &FrameLimits::default())
    }

    #[test]
    fn parses_arrays_of_bulk_strings() {
        let args = parse(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n").unwrap().unwrap();
        assert_eq!(args, vec![Bytes::from("GET"), Bytes::from("k")]);
    }

    #[test]
    fn incomplete_frames_wait_for_more_at_every_cut() {
        let frame = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nhello\r\n";
        for cut in 0..frame.len() {
            let mut buf = BytesMut::from(&frame[..cut]);
            assert_eq!(
                parse_command(&mut buf, &FrameLimits::default()),
                Ok(None),
                "cut at {cut}"
            );
            assert_eq!(buf.len(), cut, "nothing consumed at cut {cut}");
        }
        assert!(parse(frame).unwrap().is_some());
    }

    #[test]
    fn pipelined_commands_parse_one_at_a_time() {
        let mut buf = BytesMut::from(&b"PING\r\n*1\r\n$4\r\nPING\r\nrest"[..]);
        let limits = FrameLimits::default();
        assert_eq!(
            parse_command(&mut buf, &limits).unwrap().unwrap(),
            vec![Bytes::from("PING")]
        );
        assert_eq!(
            parse_command(&mut buf, &limits).unwrap().unwrap(),
            vec![Bytes::from("PING")]
        );
        assert_eq!(parse_command(&mut buf, &limits), Ok(None));
        assert_eq!(&buf[..], b"rest");
    }

    #[test]
    fn inline_commands_split_on_whitespace_and_honour_quotes() {
        let args = parse(b"SET  key \"two words\\n\"\r\n").unwrap().unwrap();
        assert_eq!(
            args,
            vec![
                Bytes::from("SET"),
                Bytes::from("key"),
                Bytes::from("two words\n")
            ]
        );
        assert_eq!(parse(b"\r\n").unwrap().unwrap(), Vec::<Bytes>::new());
        assert!(parse(b"GET \"open\r\n").is_err());
    }

    fn split(text: &str) -> Result<Vec<Vec<u8>>, ProtocolError> {
        split_args(text.as_bytes()).map(|args| args.into_iter().map(|a| a.to_vec()).collect())
    }

    #[test]
    fn inline_escapes_are_the_ones_redis_knows() {
        assert_eq!(
            split(r#"SET q "\x41\x00B""#).unwrap(),
            [&b"SET"[..], b"q", b"A\0B"]
        );
        assert_eq!(
            split(r#""\n\r\t\b\a\\\"\q\x4g""#).unwrap(),
            [&b"\n\r\t\x08\x07\\\"qx4g"[..]]
        );
        assert_eq!(
            split(r#"'it\'s' 'a\nb' """#).unwrap(),
            [&b"it's"[..], b"a\\nb", b""]
        );
        assert_eq!(
            split("a\"b c\"d").unwrap_err(),
            ProtocolError::Malformed("unbalanced quotes in request")
        );
        assert_eq!(split("ab\"c d\" e").unwrap(), [&b"abc d"[..], b"e"]);
        assert_eq!(split("\t a \x0b b\x0c").unwrap(), [&b"a"[..], b"b"]);
        for bad in [r#""open"#, "'open", r#""a"b"#, "'a'b", r#""ends\"#] {
            assert!(split(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn limits_are_checked_before_reading_the_payload() {
        let limits = FrameLimits {
            max_args: 3,
            max_arg_bytes: 4,
            max_frame_bytes: 6,
            max_inline_bytes: 8,
        };
        let check = |input: &[u8]| parse_command(&mut BytesMut::from(input), &limits);
        assert!(matches!(check(b"*4\r\n"), Err(ProtocolError::TooLarge(_))));
        assert!(matches!(
            check(b"*3\r\n$3\r\nabc\r\n$3\r\nabc\r\n$1\r\n"),
            Err(ProtocolError::TooLarge(_))
        ));
        assert!(matches!(
            check(b"*2\r\n$3\r\nabc\r\n$3\r\nabc\r\n"),
            Ok(Some(_))
        ));
        assert!(matches!(
            check(b"*1\r\n$999999999\r\n"),
            Err(ProtocolError::TooLarge(_))
        ));
        assert!(matches!(
            check(b"123456789"),
            Err(ProtocolError::TooLarge(_))
        ));
    }

    #[test]
    fn decimal_lengths_parse_strictly() {
        assert_eq!(parse_decimal(b"0"), Some(0));
        assert_eq!(parse_decimal(b"-1"), Some(-1));
        assert_eq!(parse_decimal(b"9223372036854775807"), Some(i64::MAX));
        for bad in [
            &b""[..],
            b"-",
            b"+1",
            b" 1",
            b"1a",
            b"9223372036854775808",
            b"--1",
        ] {
            assert_eq!(
                parse_decimal(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn garbage_is_a_protocol_error() {
        assert!(parse(b"*x\r\n").is_err());
        assert!(parse(b"*1\r\n:5\r\n").is_err());
        assert!(parse(b"*1\r\n$-5\r\n").is_err());
        assert!(parse(b"*1\r\n$1\r\nabc\r\n").is_err());
        assert!(parse(b"*1111111111111111111111111111111").is_err());
    }
}
