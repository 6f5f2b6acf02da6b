//! A Python pickle reader that interprets opcodes into a value tree and never
//! executes anything: globals stay names, calls stay unevaluated
//! [`Value::Object`]s. Safe on untrusted files; the caller decides what the
//! tree means (see [`crate::torch_legacy`] for tensors).
//!
//! Bounds on hostile input: at most [`MAX_VALUES`] values are created (memo
//! references and copied call arguments included), values nest at most
//! [`MAX_DEPTH`] levels, and the memo is a map that only grows by the
//! values it holds. Values the memo shares stay shared (`Rc`), so a file
//! that references one value many times does not multiply memory.

mod graph;
mod machine;

use std::rc::Rc;

use difi_core::error::{Error, Result};

/// Values one pickle may create: a CIFAR-10 batch needs about 30 000, a
/// network pickle a few thousand per network.
pub const MAX_VALUES: usize = 5_000_000;
/// Nesting of values: real pickles nest a few dozen levels; the bound also
/// bounds the recursion of dropping, comparing and printing a value.
pub const MAX_DEPTH: usize = 1000;

/// A pickled value. Calls (`REDUCE`, `NEWOBJ`) are kept as objects with
/// their constructor and arguments, plus whatever `BUILD`, `SETITEMS` and
/// `APPENDS` later add to them. Containers are shared, as Python's are when
/// a pickle refers to one object twice.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Rc<str>),
    Bytes(Rc<[u8]>),
    Tuple(Rc<[Value]>),
    List(Rc<[Value]>),
    Dict(Rc<[(Value, Value)]>),
    Set(Rc<[Value]>),
    /// `module.name`, unresolved.
    Global(Rc<str>, Rc<str>),
    /// `constructor(*args)`, unevaluated.
    Object(Rc<Object>),
    /// A persistent id (`BINPERSID`): resolved by the caller.
    Persistent(Rc<Value>),
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
    machine::Machine::new(data).run()
}

fn bad(message: impl Into<String>) -> Error {
    Error::Plugin { plugin: "pickle".into(), message: message.into() }
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
        assert_eq!(value.get("b").unwrap(), &Value::Tuple(vec![Value::Bool(true), Value::None].into()));
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
