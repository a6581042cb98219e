//! Evaluating a filter against a message's `data`, parsed once into a simd-json tape (a flat
//! array of nodes: an object or array node says how many nodes it spans, so a field is found
//! by skipping whole values, without recursion and without allocating).
//!
//! A test on a field that is missing is false (`exists: false` excepted); a field is missing
//! when the data is not an object (or did not parse), when a segment of the path is not a key
//! of the object it reaches (arrays are not entered), and the first of repeated keys counts.

use simd_json::{Node, StaticNode};

use super::{Expr, Filter, Num, ScalarRef, Test, cmp_scalar};

/// Whether `filter` passes for data whose tape is `root` (`None`: the data did not parse).
pub fn evaluate(filter: &Filter, root: Option<&[Node<'_>]>) -> bool {
    eval(&filter.expr, root)
}

fn eval(expr: &Expr, root: Option<&[Node<'_>]>) -> bool {
    match expr {
        Expr::All(xs) => xs.iter().all(|x| eval(x, root)),
        Expr::Any(xs) => xs.iter().any(|x| eval(x, root)),
        Expr::Test { path, test } => {
            let value = root.and_then(|r| lookup(r, path));
            holds(test, value)
        }
    }
}

fn holds(test: &Test, value: Option<&Node<'_>>) -> bool {
    let Some(value) = value else {
        return matches!(test, Test::Exists(false));
    };
    let scalar = scalar_of(value);
    match test {
        Test::Exists(present) => *present,
        Test::Eq(x) => scalar.is_some_and(|s| cmp_scalar(s, x.as_ref()).is_eq()),
        Test::Ne(x) => !scalar.is_some_and(|s| cmp_scalar(s, x.as_ref()).is_eq()),
        Test::In(list) => {
            scalar.is_some_and(|s| list.binary_search_by(|v| cmp_scalar(v.as_ref(), s)).is_ok())
        }
        Test::Cmp(op, bound) => match scalar {
            Some(ScalarRef::Num(n)) => op.holds(n.cmp(*bound)),
            _ => false,
        },
    }
}

/// A value node as a scalar; `None` for an object or an array.
fn scalar_of<'a>(node: &Node<'a>) -> Option<ScalarRef<'a>> {
    Some(match *node {
        Node::String(s) => ScalarRef::Str(s),
        Node::Static(StaticNode::Null) => ScalarRef::Null,
        Node::Static(StaticNode::Bool(b)) => ScalarRef::Bool(b),
        Node::Static(StaticNode::I64(i)) => ScalarRef::Num(Num::Int(i.into())),
        Node::Static(StaticNode::U64(u)) => ScalarRef::Num(Num::Int(u.into())),
        Node::Static(StaticNode::F64(f)) => ScalarRef::Num(Num::from_f64(f)),
        Node::Object { .. } | Node::Array { .. } => return None,
    })
}

/// Nodes a value spans on the tape, itself included.
fn span(node: &Node<'_>) -> usize {
    match *node {
        Node::Object { count, .. } | Node::Array { count, .. } => count.saturating_add(1),
        _ => 1,
    }
}

/// The value node at `path` inside the value starting at `nodes[0]`.
fn lookup<'t, 'i>(mut nodes: &'t [Node<'i>], path: &[Box<str>]) -> Option<&'t Node<'i>> {
    for segment in path {
        nodes = member(nodes, segment)?;
    }
    nodes.first()
}

/// The nodes of member `key` of the object starting at `nodes[0]` (the first if repeated).
fn member<'t, 'i>(nodes: &'t [Node<'i>], key: &str) -> Option<&'t [Node<'i>]> {
    let Node::Object { len, .. } = *nodes.first()? else {
        return None;
    };
    let mut at = 1;
    for _ in 0..len {
        let Node::String(k) = *nodes.get(at)? else {
            return None;
        };
        let value = nodes.get(at + 1..)?;
        let n = span(value.first()?);
        if k == key {
            return value.get(..n);
        }
        at = at.checked_add(1 + n)?;
    }
    None
}
