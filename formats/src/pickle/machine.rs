//! The pickle virtual machine: opcodes move [`Slot`]s between a stack, marks
//! and a memo, and containers are built in a [`Graph`]. Every value created
//! is counted against [`MAX_VALUES`].

use std::collections::HashMap;
use std::rc::Rc;

use difi_core::error::Result;

use super::graph::{Graph, Node, ObjectNode, Slot};
use super::{MAX_VALUES, Value, bad, kind_name, long_value};

pub(super) struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Slot>,
    marks: Vec<usize>,
    memo: HashMap<usize, Slot>,
    graph: Graph,
    created: usize,
}

impl<'a> Machine<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Machine {
            data,
            pos: 0,
            stack: Vec::new(),
            marks: Vec::new(),
            memo: HashMap::new(),
            graph: Graph::default(),
            created: 0,
        }
    }

    /// Counts `n` new values against the budget.
    fn charge(&mut self, n: usize) -> Result<()> {
        self.created = self.created.saturating_add(n);
        if self.created > MAX_VALUES {
            return Err(bad(format!("more than {MAX_VALUES} values (at byte {})", self.pos)));
        }
        Ok(())
    }

    fn push(&mut self, slot: Slot) -> Result<()> {
        self.charge(1)?;
        self.stack.push(slot);
        Ok(())
    }

    fn push_leaf(&mut self, value: Value) -> Result<()> {
        self.push(Slot::Leaf(value))
    }

    fn push_node(&mut self, node: Node) -> Result<()> {
        let slot = self.graph.add(node);
        self.push(slot)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let data = self.data;
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= data.len())
            .ok_or_else(|| bad(format!("truncated: needs {n} bytes at offset {} of {}", self.pos, data.len())))?;
        let bytes = &data[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// A length field, which must fit in memory addresses.
    fn length64(&mut self) -> Result<usize> {
        let n = self.u64()?;
        usize::try_from(n).map_err(|_| bad(format!("length {n} at offset {}", self.pos)))
    }

    fn line(&mut self) -> Result<String> {
        let rest = &self.data[self.pos..];
        let end = rest.iter().position(|&b| b == b'\n').ok_or_else(|| bad("unterminated text line"))?;
        let text = String::from_utf8_lossy(&rest[..end]).into_owned();
        self.pos += end + 1;
        Ok(text)
    }

    fn pop(&mut self) -> Result<Slot> {
        self.stack.pop().ok_or_else(|| bad(format!("stack underflow at offset {}", self.pos)))
    }

    fn top(&self) -> Result<&Slot> {
        self.stack.last().ok_or_else(|| bad(format!("stack underflow at offset {}", self.pos)))
    }

    /// The container on top of the stack, for opcodes that fill it.
    fn top_node(&mut self, opcode: &str) -> Result<&mut Node> {
        match self.top()? {
            Slot::Node(id) => {
                let id = *id;
                Ok(self.graph.node_mut(id))
            }
            Slot::Leaf(value) => Err(bad(format!("{opcode} on {}", kind_name(value)))),
        }
    }

    fn pop_mark(&mut self) -> Result<Vec<Slot>> {
        let mark = self.marks.pop().ok_or_else(|| bad("MARK missing"))?;
        if mark > self.stack.len() {
            return Err(bad("corrupt MARK"));
        }
        Ok(self.stack.split_off(mark))
    }

    fn memo_put(&mut self, index: usize) -> Result<()> {
        let slot = self.top()?.clone();
        self.charge(1)?;
        self.memo.insert(index, slot);
        Ok(())
    }

    fn memo_get(&mut self, index: usize) -> Result<()> {
        let slot = self.memo.get(&index).cloned().ok_or_else(|| bad(format!("memo {index} is empty")))?;
        self.push(slot)
    }

    fn string(&mut self, len: usize) -> Result<()> {
        let text: Rc<str> =
            std::str::from_utf8(self.take(len)?).map_err(|e| bad(format!("invalid UTF-8 string: {e}")))?.into();
        self.push_leaf(Value::Str(text))
    }

    fn bytes(&mut self, len: usize) -> Result<()> {
        let bytes: Rc<[u8]> = self.take(len)?.into();
        self.push_leaf(Value::Bytes(bytes))
    }

    fn set_items(&mut self, items: Vec<Slot>) -> Result<()> {
        if !items.len().is_multiple_of(2) {
            return Err(bad("SETITEMS with an odd number of items"));
        }
        let mut pairs = Vec::with_capacity(items.len() / 2);
        let mut it = items.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            pairs.push((k, v));
        }
        match self.top_node("SETITEMS")? {
            Node::Dict(d) => d.extend(pairs),
            Node::Object(o) => o.dict_items.extend(pairs),
            other => return Err(bad(format!("SETITEMS on {}", other.kind_name()))),
        }
        Ok(())
    }

    fn append_items(&mut self, items: Vec<Slot>) -> Result<()> {
        match self.top_node("APPENDS")? {
            Node::List(l) => l.extend(items),
            Node::Set(s) => s.extend(items),
            Node::Object(o) => o.list_items.extend(items),
            other => return Err(bad(format!("APPENDS on {}", other.kind_name()))),
        }
        Ok(())
    }

    fn call(&mut self, constructor: Slot, args: Slot) -> Result<()> {
        let args = match &args {
            Slot::Node(id) => match self.graph.node(*id) {
                // Tuples are immutable, so the call keeps a copy of the items.
                Node::Tuple(items) => items.clone(),
                other => return Err(bad(format!("call arguments are {}, not a tuple", other.kind_name()))),
            },
            Slot::Leaf(value) => return Err(bad(format!("call arguments are {}, not a tuple", kind_name(value)))),
        };
        self.charge(args.len())?;
        // An empty `OrderedDict()` is a dict that later gets items.
        self.push_node(Node::Object(ObjectNode {
            constructor,
            args,
            state: None,
            dict_items: Vec::new(),
            list_items: Vec::new(),
        }))
    }

    pub fn run(mut self) -> Result<(Value, usize)> {
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
                    let root = self.pop()?;
                    let value = self.graph.freeze(&root).map_err(bad)?;
                    return Ok((value, self.pos));
                }
                b'(' => {
                    self.charge(1)?;
                    self.marks.push(self.stack.len());
                }
                b')' => self.push_node(Node::Tuple(Vec::new()))?,
                b']' => self.push_node(Node::List(Vec::new()))?,
                b'}' => self.push_node(Node::Dict(Vec::new()))?,
                0x8f => self.push_node(Node::Set(Vec::new()))?,
                b'N' => self.push_leaf(Value::None)?,
                0x88 => self.push_leaf(Value::Bool(true))?,
                0x89 => self.push_leaf(Value::Bool(false))?,
                b'J' => {
                    let v = self.u32()? as i32;
                    self.push_leaf(Value::Int(v as i64))?;
                }
                b'K' => {
                    let v = self.u8()?;
                    self.push_leaf(Value::Int(v as i64))?;
                }
                b'M' => {
                    let v = self.u16()?;
                    self.push_leaf(Value::Int(v as i64))?;
                }
                0x8a | 0x8b => {
                    let n = if op == 0x8a { self.u8()? as usize } else { self.u32()? as usize };
                    let bytes = self.take(n)?;
                    self.push_leaf(long_value(bytes))?;
                }
                b'I' | b'L' => {
                    let text = self.line()?;
                    let text = text.trim_end_matches('L');
                    let value = match text {
                        "00" => Value::Bool(false),
                        "01" => Value::Bool(true),
                        t => Value::Int(t.parse().map_err(|_| bad(format!("bad integer `{t}`")))?),
                    };
                    self.push_leaf(value)?;
                }
                b'G' => {
                    let v = f64::from_be_bytes(self.array()?);
                    self.push_leaf(Value::Float(v))?;
                }
                b'F' => {
                    let text = self.line()?;
                    let v = text.parse().map_err(|_| bad(format!("bad float `{text}`")))?;
                    self.push_leaf(Value::Float(v))?;
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
                    let n = self.length64()?;
                    self.string(n)?;
                }
                b'B' | b'T' => {
                    let n = self.u32()? as usize;
                    self.bytes(n)?;
                }
                b'C' | b'U' => {
                    let n = self.u8()? as usize;
                    self.bytes(n)?;
                }
                0x8e | 0x96 => {
                    let n = self.length64()?;
                    self.bytes(n)?;
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.push_leaf(Value::Global(module.into(), name.into()))?;
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (module, name) {
                        (Slot::Leaf(Value::Str(m)), Slot::Leaf(Value::Str(n))) => {
                            self.push_leaf(Value::Global(m, n))?
                        }
                        _ => return Err(bad("STACK_GLOBAL needs two strings")),
                    }
                }
                b'R' | 0x81 => {
                    let args = self.pop()?;
                    let constructor = self.pop()?;
                    self.call(constructor, args)?;
                }
                0x92 => {
                    let _kwargs = self.pop()?;
                    let args = self.pop()?;
                    let class = self.pop()?;
                    self.call(class, args)?;
                }
                b'b' => {
                    let state = self.pop()?;
                    match self.top_node("BUILD")? {
                        Node::Object(o) => o.state = Some(state),
                        other => return Err(bad(format!("BUILD on {}", other.kind_name()))),
                    }
                }
                b't' => {
                    let items = self.pop_mark()?;
                    self.push_node(Node::Tuple(items))?;
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    if self.stack.len() < n {
                        return Err(bad("stack underflow building a tuple"));
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    self.push_node(Node::Tuple(items))?;
                }
                b'l' => {
                    let items = self.pop_mark()?;
                    self.push_node(Node::List(items))?;
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
                    self.push_node(Node::Dict(Vec::new()))?;
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
                    self.push_node(Node::Set(items))?;
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
                    self.push_node(Node::Persistent(id))?;
                }
                b'P' => {
                    let id = self.line()?;
                    let id = Slot::Leaf(Value::Str(id.into()));
                    self.push_node(Node::Persistent(id))?;
                }
                b'0' => {
                    self.pop()?;
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let top = self.top()?.clone();
                    self.push(top)?;
                }
                other => return Err(bad(format!("unsupported pickle opcode 0x{other:02x} at byte {at}"))),
            }
        }
    }
}
