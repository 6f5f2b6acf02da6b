//! The objects a pickle builds while it runs. Containers live in one flat
//! arena and are referred to by index, so the memo shares them the way
//! Python does (a list filled after its `PUT` is filled for every `GET`), and
//! nothing is ever copied or dropped recursively. When the pickle stops, the
//! part reachable from its result is frozen into a [`Value`] tree whose
//! shared parts are shared `Rc`s, refusing cycles and nesting deeper than
//! [`MAX_DEPTH`].

use std::rc::Rc;

use super::{MAX_DEPTH, Object, Value};

/// A value on the pickle machine's stack or in its memo: a scalar, or a
/// container in the arena.
#[derive(Clone, Debug)]
pub(super) enum Slot {
    Leaf(Value),
    Node(usize),
}

/// A container under construction.
#[derive(Debug)]
pub(super) enum Node {
    Tuple(Vec<Slot>),
    List(Vec<Slot>),
    Dict(Vec<(Slot, Slot)>),
    Set(Vec<Slot>),
    Object(ObjectNode),
    Persistent(Slot),
}

/// An unevaluated call under construction (see [`Object`]).
#[derive(Debug)]
pub(super) struct ObjectNode {
    pub constructor: Slot,
    pub args: Vec<Slot>,
    pub state: Option<Slot>,
    pub dict_items: Vec<(Slot, Slot)>,
    pub list_items: Vec<Slot>,
}

impl Node {
    pub fn kind_name(&self) -> &'static str {
        match self {
            Node::Tuple(_) => "a tuple",
            Node::List(_) => "a list",
            Node::Dict(_) => "a dict",
            Node::Set(_) => "a set",
            Node::Object(_) => "an object",
            Node::Persistent(_) => "a persistent id",
        }
    }

    fn children(&self) -> Box<dyn Iterator<Item = &Slot> + '_> {
        fn pairs(items: &[(Slot, Slot)]) -> impl Iterator<Item = &Slot> {
            items.iter().flat_map(|(k, v)| [k, v])
        }
        match self {
            Node::Tuple(items) | Node::List(items) | Node::Set(items) => Box::new(items.iter()),
            Node::Dict(items) => Box::new(pairs(items)),
            Node::Object(o) => Box::new(
                std::iter::once(&o.constructor)
                    .chain(&o.args)
                    .chain(&o.state)
                    .chain(pairs(&o.dict_items))
                    .chain(&o.list_items),
            ),
            Node::Persistent(id) => Box::new(std::iter::once(id)),
        }
    }
}

/// The arena of containers.
#[derive(Default)]
pub(super) struct Graph {
    nodes: Vec<Node>,
}

impl Graph {
    pub fn add(&mut self, node: Node) -> Slot {
        self.nodes.push(node);
        Slot::Node(self.nodes.len() - 1)
    }

    pub fn node(&self, id: usize) -> &Node {
        &self.nodes[id]
    }

    pub fn node_mut(&mut self, id: usize) -> &mut Node {
        &mut self.nodes[id]
    }

    /// The value `root` refers to, as a tree. Walks with an explicit stack
    /// (children before parents), so no input can exhaust the call stack.
    pub fn freeze(&self, root: &Slot) -> Result<Value, String> {
        let root = match root {
            Slot::Leaf(value) => return Ok(value.clone()),
            Slot::Node(id) => *id,
        };
        // Each reachable node is frozen once, with its nesting depth.
        let mut frozen: Vec<Option<(Value, usize)>> = vec![None; self.nodes.len()];
        let mut opened = vec![false; self.nodes.len()];
        let mut work = vec![root];
        while let Some(&id) = work.last() {
            if frozen[id].is_some() {
                work.pop();
                continue;
            }
            if !opened[id] {
                opened[id] = true;
                for child in self.nodes[id].children() {
                    if let Slot::Node(child) = *child {
                        // Opened and not frozen: an ancestor of this node.
                        if opened[child] && frozen[child].is_none() {
                            return Err("a value contains itself (recursive structures are not supported)".into());
                        }
                        if frozen[child].is_none() {
                            work.push(child);
                        }
                    }
                }
                continue;
            }
            // Every child was pushed above this node, so all are frozen now.
            let value = self.build(id, &frozen)?;
            frozen[id] = Some(value);
            work.pop();
        }
        frozen[root].take().map(|(value, _)| value).ok_or_else(|| "internal: root not frozen".to_string())
    }

    fn build(&self, id: usize, frozen: &[Option<(Value, usize)>]) -> Result<(Value, usize), String> {
        let mut depth = 0;
        let mut get = |slot: &Slot| -> Value {
            match slot {
                Slot::Leaf(value) => value.clone(),
                Slot::Node(child) => match &frozen[*child] {
                    Some((value, child_depth)) => {
                        depth = depth.max(*child_depth);
                        value.clone()
                    }
                    // Unreachable by construction; a placeholder keeps this infallible.
                    None => Value::None,
                },
            }
        };
        let list =
            |items: &[Slot], get: &mut dyn FnMut(&Slot) -> Value| -> Rc<[Value]> { items.iter().map(get).collect() };
        let pairs = |items: &[(Slot, Slot)], get: &mut dyn FnMut(&Slot) -> Value| -> Vec<(Value, Value)> {
            items.iter().map(|(k, v)| (get(k), get(v))).collect()
        };
        let value = match &self.nodes[id] {
            Node::Tuple(items) => Value::Tuple(list(items, &mut get)),
            Node::List(items) => Value::List(list(items, &mut get)),
            Node::Set(items) => Value::Set(list(items, &mut get)),
            Node::Dict(items) => Value::Dict(pairs(items, &mut get).into()),
            Node::Persistent(inner) => Value::Persistent(Rc::new(get(inner))),
            Node::Object(o) => Value::Object(Rc::new(Object {
                constructor: get(&o.constructor),
                args: o.args.iter().map(&mut get).collect(),
                state: o.state.as_ref().map(&mut get),
                dict_items: pairs(&o.dict_items, &mut get),
                list_items: o.list_items.iter().map(&mut get).collect(),
            })),
        };
        let depth = depth + 1;
        if depth > MAX_DEPTH {
            return Err(format!("values nest deeper than {MAX_DEPTH} levels"));
        }
        Ok((value, depth))
    }
}
