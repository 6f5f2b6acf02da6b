//! A Python pickle reader that interprets opcodes into a value tree and never
//! executes anything: globals stay names, calls stay unevaluated
//! [`Value::Object`]s. Safe on untrusted files; the caller decides what the
//! tree means (see [`crate::torch_legacy`] for tensors).

use std::rc::Rc;

use difi_core::error::{Error, Result};

/// A pickled value. Calls (`REDUCE`, `NEWOBJ`) are kept as objects with
/// their constructor and arguments, plus whatever `BUILD`, `SETITEMS` and
/// `APPENDS` later add to them.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Rc<str>),
    Bytes(Rc<[u8]>),
    Tuple(Vec<Value>),
    List(Vec<Value>),
    Dict(Vec<(Value, Value)>),
    Set(Vec<Value>),
    /// `module.name`, unresolved.
    Global(Rc<str>, Rc<str>),
    /// `constructor(*args)`, unevaluated.
    Object(Box<Object>),
    /// A persistent id (`BINPERSID`): resolved by the caller.
    Persistent(Box<Value>),
}

/// An unevaluated call and the state pickled after it.
#[derive(Clone, Debug, PartialEq)]
pub struct Object {
    pub constructor: Value,
    pub args: Vec<Value>,
    /// `BUILD`'s argument.
    pub state: Option<Value>,
    /// Items added by `SETITEM(S)` (dict subclasses such as `OrderedDict`).
    pub dict_items: Vec<(Value, Value)>,
    /// Items added by `APPEND(S)` (list subclasses).
    pub list_items: Vec<Value>,
}

impl Value {
    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The integer, if this is one.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            Value::Bool(b) => Some(*b as i64),
            _ => None,
        }
    }

    /// Items of a tuple or list.
    pub fn as_sequence(&self) -> Option<&[Value]> {
        match self {
            Value::Tuple(items) | Value::List(items) => Some(items),
            _ => None,
        }
    }

    /// Key-value pairs of a dict, or of a dict subclass such as `OrderedDict`.
    pub fn as_mapping(&self) -> Option<&[(Value, Value)]> {
        match self {
            Value::Dict(items) => Some(items),
            Value::Object(object) if object.args.is_empty() && object.state.is_none() => Some(&object.dict_items),
            _ => None,
        }
    }

    /// The value under string key `key` of a mapping.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.as_mapping()?.iter().find(|(k, _)| k.as_str() == Some(key)).map(|(_, v)| v)
    }

    /// The unevaluated call, if this is one.
    pub fn as_object(&self) -> Option<&Object> {
        match self {
            Value::Object(object) => Some(object),
            _ => None,
        }
    }

    /// `(module, name)` of a global, or of an object's constructor.
    pub fn global_name(&self) -> Option<(&str, &str)> {
        match self {
            Value::Global(module, name) => Some((module, name)),
            _ => None,
        }
    }
}

impl Object {
    /// Whether the constructor is `module.name`.
    pub fn is(&self, module: &str, name: &str) -> bool {
        self.constructor.global_name() == Some((module, name))
    }
}

/// Parses one pickle from the start of `data`. Returns the value and the
/// number of bytes the pickle took (pickles can be concatenated).
pub fn parse(data: &[u8]) -> Result<(Value, usize)> {
    Parser { data, pos: 0, stack: Vec::new(), marks: Vec::new(), memo: Vec::new() }.run()
}

struct Parser<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: Vec<Option<Value>>,
}

fn bad(message: impl Into<String>) -> Error {
    Error::Plugin { plugin: "pickle".into(), message: message.into() }
}

impl Parser<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8]> {
        let end =
            self.pos.checked_add(n).filter(|&e| e <= self.data.len()).ok_or_else(|| {
                bad(format!("truncated: needs {n} bytes at offset {} of {}", self.pos, self.data.len()))
            })?;
        let bytes = &self.data[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().expect("2 bytes")))
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }

    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }

    fn line(&mut self) -> Result<String> {
        let rest = &self.data[self.pos..];
        let end = rest.iter().position(|&b| b == b'\n').ok_or_else(|| bad("unterminated text line"))?;
        let text = String::from_utf8_lossy(&rest[..end]).into_owned();
        self.pos += end + 1;
        Ok(text)
    }

    fn pop(&mut self) -> Result<Value> {
        self.stack.pop().ok_or_else(|| bad(format!("stack underflow at offset {}", self.pos)))
    }

    fn top(&mut self) -> Result<&mut Value> {
        let pos = self.pos;
        self.stack.last_mut().ok_or_else(|| bad(format!("stack underflow at offset {pos}")))
    }

    fn pop_mark(&mut self) -> Result<Vec<Value>> {
        let mark = self.marks.pop().ok_or_else(|| bad("MARK missing"))?;
        if mark > self.stack.len() {
            return Err(bad("corrupt MARK"));
        }
        Ok(self.stack.split_off(mark))
    }

    fn memo_put(&mut self, index: usize) -> Result<()> {
        let value = self.top()?.clone();
        if self.memo.len() <= index {
            self.memo.resize(index + 1, None);
        }
        self.memo[index] = Some(value);
        Ok(())
    }

    fn memo_get(&mut self, index: usize) -> Result<()> {
        let value = self.memo.get(index).cloned().flatten().ok_or_else(|| bad(format!("memo {index} is empty")))?;
        self.stack.push(value);
        Ok(())
    }

    fn string(&mut self, len: usize) -> Result<()> {
        let text: Rc<str> =
            std::str::from_utf8(self.take(len)?).map_err(|e| bad(format!("invalid UTF-8 string: {e}")))?.into();
        self.stack.push(Value::Str(text));
        Ok(())
    }

    fn bytes(&mut self, len: usize) -> Result<()> {
        let bytes: Rc<[u8]> = self.take(len)?.into();
        self.stack.push(Value::Bytes(bytes));
        Ok(())
    }

    fn set_items(&mut self, items: Vec<Value>) -> Result<()> {
        if !items.len().is_multiple_of(2) {
            return Err(bad("SETITEMS with an odd number of items"));
        }
        let mut pairs = Vec::with_capacity(items.len() / 2);
        let mut it = items.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            pairs.push((k, v));
        }
        match self.top()? {
            Value::Dict(d) => d.extend(pairs),
            Value::Object(o) => o.dict_items.extend(pairs),
            other => return Err(bad(format!("SETITEMS on {}", kind_name(other)))),
        }
        Ok(())
    }

    fn append_items(&mut self, items: Vec<Value>) -> Result<()> {
        match self.top()? {
            Value::List(l) => l.extend(items),
            Value::Set(s) => s.extend(items),
            Value::Object(o) => o.list_items.extend(items),
            other => return Err(bad(format!("APPENDS on {}", kind_name(other)))),
        }
        Ok(())
    }

    fn call(&mut self, constructor: Value, args: Value) -> Result<()> {
        let args = match args {
            Value::Tuple(items) => items,
            other => return Err(bad(format!("call arguments are {}, not a tuple", kind_name(&other)))),
        };
        // An empty `OrderedDict()` is a dict that later gets items.
        self.stack.push(Value::Object(Box::new(Object {
            constructor,
            args,
            state: None,
            dict_items: Vec::new(),
            list_items: Vec::new(),
        })));
        Ok(())
    }

    fn run(mut self) -> Result<(Value, usize)> {
        loop {
            let at = self.pos;
            let op = self.u8()?;
            match op {
                0x80 => {
                    self.u8()?; // PROTO
                }
                0x95 => {
                    self.u64()?; // FRAME
                }
                b'.' => {
                    let value = self.pop()?;
                    return Ok((value, self.pos));
                }
                b'(' => self.marks.push(self.stack.len()),
                b')' => self.stack.push(Value::Tuple(Vec::new())),
                b']' => self.stack.push(Value::List(Vec::new())),
                b'}' => self.stack.push(Value::Dict(Vec::new())),
                0x8f => self.stack.push(Value::Set(Vec::new())),
                b'N' => self.stack.push(Value::None),
                0x88 => self.stack.push(Value::Bool(true)),
                0x89 => self.stack.push(Value::Bool(false)),
                b'J' => {
                    let v = self.u32()? as i32;
                    self.stack.push(Value::Int(v as i64));
                }
                b'K' => {
                    let v = self.u8()?;
                    self.stack.push(Value::Int(v as i64));
                }
                b'M' => {
                    let v = self.u16()?;
                    self.stack.push(Value::Int(v as i64));
                }
                0x8a | 0x8b => {
                    let n = if op == 0x8a { self.u8()? as usize } else { self.u32()? as usize };
                    let bytes = self.take(n)?.to_vec();
                    self.stack.push(long_value(&bytes));
                }
                b'I' | b'L' => {
                    let text = self.line()?;
                    let text = text.trim_end_matches('L');
                    let value = match text {
                        "00" => Value::Bool(false),
                        "01" => Value::Bool(true),
                        t => Value::Int(t.parse().map_err(|_| bad(format!("bad integer `{t}`")))?),
                    };
                    self.stack.push(value);
                }
                b'G' => {
                    let v = f64::from_be_bytes(self.take(8)?.try_into().expect("8 bytes"));
                    self.stack.push(Value::Float(v));
                }
                b'F' => {
                    let text = self.line()?;
                    self.stack.push(Value::Float(text.parse().map_err(|_| bad(format!("bad float `{text}`")))?));
                }
                b'X' => {
                    let n = self.u32()? as usize;
                    self.string(n)?;
                }
                0x8c => {
                    let n = self.u8()? as usize;
                    self.string(n)?;
                }
                0x8d => {
                    let n = self.u64()? as usize;
                    self.string(n)?;
                }
                b'B' => {
                    let n = self.u32()? as usize;
                    self.bytes(n)?;
                }
                b'C' => {
                    let n = self.u8()? as usize;
                    self.bytes(n)?;
                }
                0x8e | 0x96 => {
                    let n = self.u64()? as usize;
                    self.bytes(n)?;
                }
                b'T' => {
                    let n = self.u32()? as usize;
                    self.bytes(n)?;
                }
                b'U' => {
                    let n = self.u8()? as usize;
                    self.bytes(n)?;
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.stack.push(Value::Global(module.into(), name.into()));
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (module, name) {
                        (Value::Str(m), Value::Str(n)) => self.stack.push(Value::Global(m, n)),
                        _ => return Err(bad("STACK_GLOBAL needs two strings")),
                    }
                }
                b'R' => {
                    let args = self.pop()?;
                    let constructor = self.pop()?;
                    self.call(constructor, args)?;
                }
                0x81 => {
                    let args = self.pop()?;
                    let class = self.pop()?;
                    self.call(class, args)?;
                }
                0x92 => {
                    let _kwargs = self.pop()?;
                    let args = self.pop()?;
                    let class = self.pop()?;
                    self.call(class, args)?;
                }
                b'b' => {
                    let state = self.pop()?;
                    match self.top()? {
                        Value::Object(o) => o.state = Some(state),
                        other => return Err(bad(format!("BUILD on {}", kind_name(other)))),
                    }
                }
                b't' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::Tuple(items));
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    if self.stack.len() < n {
                        return Err(bad("stack underflow building a tuple"));
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    self.stack.push(Value::Tuple(items));
                }
                b'l' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::List(items));
                }
                b'a' => {
                    let item = self.pop()?;
                    self.append_items(vec![item])?;
                }
                b'e' | 0x90 => {
                    let items = self.pop_mark()?;
                    self.append_items(items)?;
                }
                b'd' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::Dict(Vec::new()));
                    self.set_items(items)?;
                }
                b's' => {
                    let value = self.pop()?;
                    let key = self.pop()?;
                    self.set_items(vec![key, value])?;
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    self.set_items(items)?;
                }
                0x91 => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::Set(items));
                }
                b'q' => {
                    let i = self.u8()? as usize;
                    self.memo_put(i)?;
                }
                b'r' => {
                    let i = self.u32()? as usize;
                    self.memo_put(i)?;
                }
                0x94 => {
                    let i = self.memo.len();
                    self.memo_put(i)?;
                }
                b'p' => {
                    let i = self.line()?.parse().map_err(|_| bad("bad PUT index"))?;
                    self.memo_put(i)?;
                }
                b'h' => {
                    let i = self.u8()? as usize;
                    self.memo_get(i)?;
                }
                b'j' => {
                    let i = self.u32()? as usize;
                    self.memo_get(i)?;
                }
                b'g' => {
                    let i = self.line()?.parse().map_err(|_| bad("bad GET index"))?;
                    self.memo_get(i)?;
                }
                b'Q' => {
                    let id = self.pop()?;
                    self.stack.push(Value::Persistent(Box::new(id)));
                }
                b'P' => {
                    let id = self.line()?;
                    self.stack.push(Value::Persistent(Box::new(Value::Str(id.into()))));
                }
                b'0' => {
                    self.pop()?;
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let top = self.top()?.clone();
                    self.stack.push(top);
                }
                other => return Err(bad(format!("unsupported pickle opcode 0x{other:02x} at byte {at}"))),
            }
        }
    }
}

/// A little-endian two's-complement integer (`LONG1`/`LONG4`).
fn long_value(bytes: &[u8]) -> Value {
    if bytes.is_empty() {
        return Value::Int(0);
    }
    if bytes.len() <= 8 {
        let negative = bytes[bytes.len() - 1] & 0x80 != 0;
        let mut buffer = [if negative { 0xff } else { 0 }; 8];
        buffer[..bytes.len()].copy_from_slice(bytes);
        return Value::Int(i64::from_le_bytes(buffer));
    }
    // Wider integers (torch's magic number) are kept as their bytes.
    Value::Bytes(bytes.into())
}

fn kind_name(value: &Value) -> &'static str {
    match value {
        Value::None => "None",
        Value::Bool(_) => "a bool",
        Value::Int(_) => "an int",
        Value::Float(_) => "a float",
        Value::Str(_) => "a string",
        Value::Bytes(_) => "bytes",
        Value::Tuple(_) => "a tuple",
        Value::List(_) => "a list",
        Value::Dict(_) => "a dict",
        Value::Set(_) => "a set",
        Value::Global(..) => "a global",
        Value::Object(_) => "an object",
        Value::Persistent(_) => "a persistent id",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_protocol_4_pickle() {
        // pickle.dumps({'a': [1, 2.5, 'x'], 'b': (True, None), 'n': -7, 'big': 2**40}, protocol=4)
        let data: &[u8] = b"\x80\x04\x95;\x00\x00\x00\x00\x00\x00\x00}\x94(\x8c\x01a\x94]\x94(K\x01G@\x04\x00\x00\x00\x00\x00\x00\x8c\x01x\x94e\x8c\x01b\x94\x88N\x86\x94\x8c\x01n\x94J\xf9\xff\xff\xff\x8c\x03big\x94\x8a\x06\x00\x00\x00\x00\x00\x01u.";
        let (value, used) = parse(data).unwrap();
        assert_eq!(used, data.len());
        assert_eq!(value.get("a").unwrap().as_sequence().unwrap()[1], Value::Float(2.5));
        assert_eq!(value.get("b").unwrap(), &Value::Tuple(vec![Value::Bool(true), Value::None]));
        assert_eq!(value.get("n").unwrap().as_int(), Some(-7));
        assert_eq!(value.get("big").unwrap().as_int(), Some(1 << 40));
    }

    #[test]
    fn keeps_calls_unevaluated() {
        // pickle.dumps(collections.OrderedDict(x=1), protocol=2)
        let data: &[u8] = b"\x80\x02ccollections\nOrderedDict\nq\x00)Rq\x01X\x01\x00\x00\x00xq\x02K\x01s.";
        let (value, _) = parse(data).unwrap();
        let object = value.as_object().unwrap();
        assert!(object.is("collections", "OrderedDict"));
        assert_eq!(value.get("x").unwrap().as_int(), Some(1));
    }

    #[test]
    fn refuses_garbage_with_the_offset() {
        let err = parse(b"\x80\x04\xff").unwrap_err().to_string();
        assert!(err.contains("0xff") && err.contains("byte 2"), "{err}");
        let err = parse(b"\x80\x04X\x10\x00\x00\x00ab").unwrap_err().to_string();
        assert!(err.contains("truncated"), "{err}");
    }
}
