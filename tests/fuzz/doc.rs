//! A JSON document tree that can also say what serde_json cannot write (duplicate keys,
//! `1e309`, 400 digits, raw bytes), so that mutations of inputs stay structural.

use std::io::Write;

/// A JSON text to be, kept as a tree. `Num` and `Raw` are written as they are.
#[derive(Clone, Debug)]
pub enum J {
    Null,
    Bool(bool),
    /// A number literal, written as is (it may be out of range, or not a number).
    Num(String),
    Str(String),
    Arr(Vec<J>),
    /// Fields in order; a key may repeat.
    Obj(Vec<(String, J)>),
    /// Bytes written as they are, in place of a value (deep nesting, invalid UTF-8...).
    Raw(Vec<u8>),
}

impl J {
    /// An object of the fields that are present.
    pub fn obj(fields: Vec<(&str, Option<J>)>) -> J {
        J::Obj(
            fields
                .into_iter()
                .filter_map(|(k, v)| v.map(|v| (k.to_string(), v)))
                .collect(),
        )
    }

    pub fn s(text: &str) -> J {
        J::Str(text.to_string())
    }

    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        self.write(&mut out);
        out
    }

    fn write(&self, out: &mut Vec<u8>) {
        match self {
            J::Null => out.extend_from_slice(b"null"),
            J::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
            J::Num(n) => out.extend_from_slice(n.as_bytes()),
            J::Str(s) => write_str(out, s),
            J::Arr(items) => {
                out.push(b'[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    item.write(out);
                }
                out.push(b']');
            }
            J::Obj(fields) => {
                out.push(b'{');
                for (i, (k, v)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    write_str(out, k);
                    out.push(b':');
                    v.write(out);
                }
                out.push(b'}');
            }
            J::Raw(bytes) => out.extend_from_slice(bytes),
        }
    }

    /// Nodes in the tree, this one included (values, not keys).
    pub fn count(&self) -> usize {
        1 + match self {
            J::Arr(items) => items.iter().map(J::count).sum(),
            J::Obj(fields) => fields.iter().map(|(_, v)| v.count()).sum(),
            _ => 0,
        }
    }

    /// The `n`-th node in pre-order (0: this one).
    pub fn node_mut(&mut self, n: usize) -> Option<&mut J> {
        if n == 0 {
            return Some(self);
        }
        let mut n = n - 1;
        let children: Vec<&mut J> = match self {
            J::Arr(items) => items.iter_mut().collect(),
            J::Obj(fields) => fields.iter_mut().map(|(_, v)| v).collect(),
            _ => return None,
        };
        for child in children {
            let size = child.count();
            if n < size {
                return child.node_mut(n);
            }
            n -= size;
        }
        None
    }

    /// Objects in the tree, this one included.
    pub fn objects(&self) -> usize {
        match self {
            J::Arr(items) => items.iter().map(J::objects).sum(),
            J::Obj(fields) => 1 + fields.iter().map(|(_, v)| v.objects()).sum::<usize>(),
            _ => 0,
        }
    }

    /// The fields of the `n`-th object in pre-order (for key-level mutations).
    pub fn object_mut(&mut self, n: &mut usize) -> Option<&mut Vec<(String, J)>> {
        match self {
            J::Obj(fields) => {
                if *n == 0 {
                    return Some(fields);
                }
                *n -= 1;
                fields.iter_mut().find_map(|(_, v)| v.object_mut(n))
            }
            J::Arr(items) => items.iter_mut().find_map(|i| i.object_mut(n)),
            _ => None,
        }
    }
}

/// A JSON string literal; serde_json escapes what must be.
fn write_str(out: &mut Vec<u8>, s: &str) {
    // Writing to a Vec cannot fail.
    let _ = write!(out, "{}", serde_json::Value::String(s.to_string()));
}
