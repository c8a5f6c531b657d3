//! The D-Bus wire format: values, their signatures, and messages, as the D-Bus
//! specification ("Message Protocol") defines them. Only what talking to systemd needs, but
//! every basic type can be decoded, because systemd's signals may carry any of them.
//!
//! Alignment is relative to the start of the message; a body starts 8-aligned, so a body
//! encoded from offset 0 has the same padding as in place.

use super::DbusError;

/// One D-Bus value. Arrays carry their element signature, so an empty array still has one.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Byte(u8),
    Bool(bool),
    I16(i16),
    U16(u16),
    I32(i32),
    U32(u32),
    I64(i64),
    U64(u64),
    Double(f64),
    /// A file descriptor index (`h`); gpurun never passes descriptors.
    Fd(u32),
    Str(String),
    ObjectPath(String),
    Signature(String),
    Array(String, Vec<Value>),
    Struct(Vec<Value>),
    DictEntry(Box<Value>, Box<Value>),
    Variant(Box<Value>),
}

impl Value {
    pub fn str(s: impl Into<String>) -> Value {
        Value::Str(s.into())
    }

    /// A `v` holding `inner`.
    pub fn variant(inner: Value) -> Value {
        Value::Variant(Box::new(inner))
    }

    pub fn signature(&self) -> String {
        match self {
            Value::Byte(_) => "y".into(),
            Value::Bool(_) => "b".into(),
            Value::I16(_) => "n".into(),
            Value::U16(_) => "q".into(),
            Value::I32(_) => "i".into(),
            Value::U32(_) => "u".into(),
            Value::I64(_) => "x".into(),
            Value::U64(_) => "t".into(),
            Value::Double(_) => "d".into(),
            Value::Fd(_) => "h".into(),
            Value::Str(_) => "s".into(),
            Value::ObjectPath(_) => "o".into(),
            Value::Signature(_) => "g".into(),
            Value::Array(elem, _) => format!("a{elem}"),
            Value::Struct(fields) => {
                let inner: String = fields.iter().map(Value::signature).collect();
                format!("({inner})")
            }
            Value::DictEntry(k, v) => format!("{{{}{}}}", k.signature(), v.signature()),
            Value::Variant(_) => "v".into(),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) | Value::ObjectPath(s) | Value::Signature(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_u32(&self) -> Option<u32> {
        match self {
            Value::U32(n) => Some(*n),
            _ => None,
        }
    }
}

/// The alignment of the type a signature starts with.
fn alignment(code: u8) -> usize {
    match code {
        b'n' | b'q' => 2,
        b'b' | b'i' | b'u' | b'h' | b's' | b'o' | b'a' => 4,
        b'x' | b't' | b'd' | b'(' | b'{' => 8,
        _ => 1,
    }
}

/// Appends values to a buffer whose offset 0 is 8-aligned in the message.
#[derive(Default)]
pub struct Encoder {
    pub buf: Vec<u8>,
}

impl Encoder {
    fn pad(&mut self, align: usize) {
        while !self.buf.len().is_multiple_of(align) {
            self.buf.push(0);
        }
    }

    /// A fixed-size value, aligned to its own size.
    fn fixed<const N: usize>(&mut self, bytes: [u8; N]) {
        self.pad(N);
        self.buf.extend_from_slice(&bytes);
    }

    fn u32(&mut self, n: u32) {
        self.fixed(n.to_le_bytes());
    }

    fn string(&mut self, s: &str) {
        self.u32(s.len() as u32);
        self.buf.extend_from_slice(s.as_bytes());
        self.buf.push(0);
    }

    pub fn value(&mut self, v: &Value) {
        match v {
            Value::Byte(b) => self.buf.push(*b),
            Value::Bool(b) => self.u32(u32::from(*b)),
            Value::I16(n) => self.fixed(n.to_le_bytes()),
            Value::U16(n) => self.fixed(n.to_le_bytes()),
            Value::I32(n) => self.fixed(n.to_le_bytes()),
            Value::U32(n) | Value::Fd(n) => self.u32(*n),
            Value::I64(n) => self.fixed(n.to_le_bytes()),
            Value::U64(n) => self.fixed(n.to_le_bytes()),
            Value::Double(d) => self.fixed(d.to_le_bytes()),
            Value::Str(s) | Value::ObjectPath(s) => self.string(s),
            Value::Signature(s) => {
                self.buf.push(s.len() as u8);
                self.buf.extend_from_slice(s.as_bytes());
                self.buf.push(0);
            }
            Value::Array(elem, items) => {
                self.u32(0);
                let len_at = self.buf.len() - 4;
                self.pad(alignment(elem.as_bytes().first().copied().unwrap_or(b'y')));
                let start = self.buf.len();
                for item in items {
                    self.value(item);
                }
                let len = (self.buf.len() - start) as u32;
                self.buf[len_at..len_at + 4].copy_from_slice(&len.to_le_bytes());
            }
            Value::Struct(fields) => {
                self.pad(8);
                for f in fields {
                    self.value(f);
                }
            }
            Value::DictEntry(k, v) => {
                self.pad(8);
                self.value(k);
                self.value(v);
            }
            Value::Variant(inner) => {
                self.value(&Value::Signature(inner.signature()));
                self.value(inner);
            }
        }
    }
}

/// The end (exclusive) of the single complete type that starts at `sig[i]`.
pub fn single_type_end(sig: &[u8], i: usize) -> Result<usize, DbusError> {
    let bad = || DbusError::Protocol(format!("bad signature {:?}", String::from_utf8_lossy(sig)));
    match sig.get(i).copied().ok_or_else(bad)? {
        b'y' | b'b' | b'n' | b'q' | b'i' | b'u' | b'x' | b't' | b'd' | b'h' | b's' | b'o'
        | b'g' | b'v' => Ok(i + 1),
        b'a' => single_type_end(sig, i + 1),
        open @ (b'(' | b'{') => {
            let close = if open == b'(' { b')' } else { b'}' };
            let mut j = i + 1;
            let mut count = 0;
            while sig.get(j).copied().ok_or_else(bad)? != close {
                j = single_type_end(sig, j)?;
                count += 1;
            }
            // A struct has at least one field; a dict entry exactly a key and a value.
            if count == 0 || (open == b'{' && count != 2) {
                return Err(bad());
            }
            Ok(j + 1)
        }
        _ => Err(bad()),
    }
}

/// Reads values out of a message buffer. `base` is where the buffer sits in the message, so
/// alignment can be computed; `big` is the sender's byte order.
pub struct Decoder<'a> {
    buf: &'a [u8],
    pos: usize,
    big: bool,
    depth: u32,
}

const MAX_DEPTH: u32 = 64;

impl<'a> Decoder<'a> {
    pub fn new(buf: &'a [u8], pos: usize, big: bool) -> Self {
        Decoder {
            buf,
            pos,
            big,
            depth: 0,
        }
    }

    fn short() -> DbusError {
        DbusError::Protocol("message ends inside a value".into())
    }

    fn pad(&mut self, align: usize) -> Result<(), DbusError> {
        let next = self.pos.div_ceil(align) * align;
        if next > self.buf.len() {
            return Err(Self::short());
        }
        self.pos = next;
        Ok(())
    }

    fn take<const N: usize>(&mut self) -> Result<[u8; N], DbusError> {
        self.pad(N.min(8))?;
        let end = self.pos.checked_add(N).ok_or_else(Self::short)?;
        let bytes = self.buf.get(self.pos..end).ok_or_else(Self::short)?;
        self.pos = end;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        if self.big {
            out.reverse();
        }
        Ok(out)
    }

    pub fn u32(&mut self) -> Result<u32, DbusError> {
        Ok(u32::from_le_bytes(self.take::<4>()?))
    }

    fn text(&mut self, len: usize) -> Result<String, DbusError> {
        let end = self.pos.checked_add(len).ok_or_else(Self::short)?;
        let bytes = self.buf.get(self.pos..end).ok_or_else(Self::short)?;
        if self.buf.get(end) != Some(&0) {
            return Err(DbusError::Protocol("string is not NUL-terminated".into()));
        }
        self.pos = end + 1;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| DbusError::Protocol("string is not UTF-8".into()))
    }

    /// Decodes every complete type in `sig`, in order.
    pub fn values(&mut self, sig: &str) -> Result<Vec<Value>, DbusError> {
        let s = sig.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < s.len() {
            let end = single_type_end(s, i)?;
            out.push(self.value(&s[i..end])?);
            i = end;
        }
        Ok(out)
    }

    fn value(&mut self, t: &[u8]) -> Result<Value, DbusError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(DbusError::Protocol("values nested too deeply".into()));
        }
        let v = self.value_inner(t);
        self.depth -= 1;
        v
    }

    fn value_inner(&mut self, t: &[u8]) -> Result<Value, DbusError> {
        let code = *t
            .first()
            .ok_or_else(|| DbusError::Protocol("empty signature".into()))?;
        Ok(match code {
            b'y' => Value::Byte(self.take::<1>()?[0]),
            b'b' => match self.u32()? {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                n => return Err(DbusError::Protocol(format!("boolean {n}"))),
            },
            b'n' => Value::I16(i16::from_le_bytes(self.take::<2>()?)),
            b'q' => Value::U16(u16::from_le_bytes(self.take::<2>()?)),
            b'i' => Value::I32(i32::from_le_bytes(self.take::<4>()?)),
            b'u' => Value::U32(self.u32()?),
            b'h' => Value::Fd(self.u32()?),
            b'x' => Value::I64(i64::from_le_bytes(self.take::<8>()?)),
            b't' => Value::U64(u64::from_le_bytes(self.take::<8>()?)),
            b'd' => Value::Double(f64::from_le_bytes(self.take::<8>()?)),
            b's' | b'o' => {
                let len = self.u32()? as usize;
                let s = self.text(len)?;
                if code == b'o' {
                    Value::ObjectPath(s)
                } else {
                    Value::Str(s)
                }
            }
            b'g' => {
                let len = usize::from(self.take::<1>()?[0]);
                Value::Signature(self.text(len)?)
            }
            b'v' => {
                let len = usize::from(self.take::<1>()?[0]);
                let sig = self.text(len)?;
                let s = sig.as_bytes();
                if s.is_empty() || single_type_end(s, 0)? != s.len() {
                    return Err(DbusError::Protocol(format!("variant signature {sig:?}")));
                }
                Value::variant(self.value(s)?)
            }
            b'a' => {
                let len = self.u32()? as usize;
                let elem = &t[1..];
                self.pad(alignment(elem[0]))?;
                let end = self.pos.checked_add(len).ok_or_else(Self::short)?;
                if end > self.buf.len() {
                    return Err(Self::short());
                }
                let mut items = Vec::new();
                while self.pos < end {
                    items.push(self.value(elem)?);
                }
                if self.pos != end {
                    return Err(DbusError::Protocol("array length does not match".into()));
                }
                Value::Array(String::from_utf8_lossy(elem).into_owned(), items)
            }
            b'(' => {
                self.pad(8)?;
                let inner = &t[1..t.len() - 1];
                let mut fields = Vec::new();
                let mut i = 0;
                while i < inner.len() {
                    let end = single_type_end(inner, i)?;
                    fields.push(self.value(&inner[i..end])?);
                    i = end;
                }
                Value::Struct(fields)
            }
            b'{' => {
                self.pad(8)?;
                let inner = &t[1..t.len() - 1];
                let k_end = single_type_end(inner, 0)?;
                let k = self.value(&inner[..k_end])?;
                let v = self.value(&inner[k_end..])?;
                Value::DictEntry(Box::new(k), Box::new(v))
            }
            other => {
                return Err(DbusError::Protocol(format!(
                    "unknown type code {:?}",
                    char::from(other)
                )))
            }
        })
    }
}

/// Message types.
pub const METHOD_CALL: u8 = 1;
pub const METHOD_RETURN: u8 = 2;
pub const ERROR: u8 = 3;
pub const SIGNAL: u8 = 4;

// Header field codes.
pub const F_PATH: u8 = 1;
pub const F_INTERFACE: u8 = 2;
pub const F_MEMBER: u8 = 3;
pub const F_ERROR_NAME: u8 = 4;
pub const F_REPLY_SERIAL: u8 = 5;
pub const F_DESTINATION: u8 = 6;
pub const F_SIGNATURE: u8 = 8;

/// The largest message gpurun accepts (the specification allows 128 MiB; systemd's
/// answers to gpurun are a few hundred bytes).
pub const MAX_MESSAGE: usize = 16 << 20;

/// A received message: its header fields and its raw body.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Message {
    pub kind: u8,
    pub serial: u32,
    pub reply_serial: Option<u32>,
    pub path: Option<String>,
    pub interface: Option<String>,
    pub member: Option<String>,
    pub error_name: Option<String>,
    pub signature: String,
    pub big_endian: bool,
    pub body: Vec<u8>,
}

impl Message {
    /// The body's values, decoded by the message's own signature.
    pub fn values(&self) -> Result<Vec<Value>, DbusError> {
        Decoder::new(&self.body, 0, self.big_endian).values(&self.signature)
    }

    /// The first value of the body, if it is a string (an error's message, a job path).
    pub fn first_str(&self) -> Option<String> {
        self.values()
            .ok()?
            .into_iter()
            .next()?
            .as_str()
            .map(str::to_string)
    }
}

/// What a method call needs.
pub struct Call<'a> {
    pub destination: &'a str,
    pub path: &'a str,
    pub interface: &'a str,
    pub member: &'a str,
    pub body: &'a [Value],
}

/// The bytes of a method call with `serial`.
pub fn encode_call(call: &Call<'_>, serial: u32) -> Vec<u8> {
    let fields = [
        (F_PATH, Value::ObjectPath(call.path.into())),
        (F_INTERFACE, Value::str(call.interface)),
        (F_MEMBER, Value::str(call.member)),
        (F_DESTINATION, Value::str(call.destination)),
    ];
    encode(METHOD_CALL, serial, &fields, call.body)
}

/// The bytes of any message: its type, serial, header fields (code, value) and body. The
/// `SIGNATURE` field is added from the body.
pub fn encode(kind: u8, serial: u32, fields: &[(u8, Value)], body: &[Value]) -> Vec<u8> {
    let mut b = Encoder::default();
    for v in body {
        b.value(v);
    }
    let sig: String = body.iter().map(Value::signature).collect();
    let field = |code: u8, v: Value| Value::Struct(vec![Value::Byte(code), Value::variant(v)]);
    let mut header: Vec<Value> = fields.iter().map(|(c, v)| field(*c, v.clone())).collect();
    if !sig.is_empty() {
        header.push(field(F_SIGNATURE, Value::Signature(sig)));
    }
    let mut msg = Encoder::default();
    msg.buf.extend_from_slice(&[b'l', kind, 0, 1]);
    msg.buf
        .extend_from_slice(&(b.buf.len() as u32).to_le_bytes());
    msg.buf.extend_from_slice(&serial.to_le_bytes());
    msg.value(&Value::Array("(yv)".into(), header));
    msg.pad(8);
    msg.buf.extend_from_slice(&b.buf);
    msg.buf
}

/// From the first 16 bytes of a message: (header length with padding, body length).
pub fn frame_lengths(fixed: &[u8; 16]) -> Result<(usize, usize), DbusError> {
    let big = match fixed[0] {
        b'l' => false,
        b'B' => true,
        other => return Err(DbusError::Protocol(format!("byte order mark {other:#x}"))),
    };
    if fixed[3] != 1 {
        return Err(DbusError::Protocol(format!(
            "protocol version {}",
            fixed[3]
        )));
    }
    let word = |at: usize| {
        let mut b = [0u8; 4];
        b.copy_from_slice(&fixed[at..at + 4]);
        if big {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        }
    };
    let body = word(4) as usize;
    let fields = word(12) as usize;
    let header = (16 + fields).div_ceil(8) * 8;
    if header.saturating_add(body) > MAX_MESSAGE {
        return Err(DbusError::Protocol(format!(
            "message of {} bytes is too large",
            header.saturating_add(body)
        )));
    }
    Ok((header, body))
}

/// Parses a whole message (as framed by [`frame_lengths`]).
pub fn decode_message(bytes: &[u8]) -> Result<Message, DbusError> {
    let fixed: &[u8; 16] = bytes
        .get(..16)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| DbusError::Protocol("message shorter than its header".into()))?;
    let (header, body_len) = frame_lengths(fixed)?;
    if bytes.len() != header + body_len {
        return Err(DbusError::Protocol("message length does not match".into()));
    }
    let big = bytes[0] == b'B';
    let mut d = Decoder::new(&bytes[..header], 8, big);
    let serial = d.u32()?;
    let mut m = Message {
        kind: bytes[1],
        serial,
        big_endian: big,
        body: bytes[header..].to_vec(),
        ..Message::default()
    };
    let Some(Value::Array(_, fields)) = d.values("a(yv)")?.pop() else {
        return Err(DbusError::Protocol("no header fields".into()));
    };
    for f in fields {
        let Value::Struct(pair) = f else { continue };
        let [Value::Byte(code), Value::Variant(v)] = &pair[..] else {
            continue;
        };
        let text = v.as_str().map(str::to_string);
        match *code {
            F_PATH => m.path = text,
            F_INTERFACE => m.interface = text,
            F_MEMBER => m.member = text,
            F_ERROR_NAME => m.error_name = text,
            F_REPLY_SERIAL => m.reply_serial = v.as_u32(),
            F_SIGNATURE => m.signature = text.unwrap_or_default(),
            _ => {}
        }
    }
    Ok(m)
}
