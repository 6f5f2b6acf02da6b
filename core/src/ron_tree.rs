//! RON text as an untyped tree, the first pass of reading a config (as
//! bevy's asset meta): the text is parsed into a tree, `--set` overrides are
//! applied to the tree, and only then is each part decoded by its own type.
//! The tree prints back as RON.

use crate::error::{Error, Result};
use crate::params::Params;

/// Parses RON text into a tree and applies `PATH=VALUE` overrides in order.
pub fn parse(text: &str, overrides: &[String]) -> Result<Params> {
    let value: ron::Value = ron::from_str(text).map_err(|err| Error::config("", format!("not valid RON: {err}")))?;
    refuse_duplicate_keys(text)?;
    let mut tree = ron_to_tree(value, "")?;
    for spec in overrides {
        apply_override(&mut tree, spec)?;
    }
    Ok(tree)
}

/// The tree as RON text: structs as `(name: value)`, lists as `[…]`, absent
/// values as `None`; what `difi check` prints and runs record.
pub fn to_ron(tree: &Params) -> String {
    let mut out = String::new();
    write_ron(tree, 0, &mut out);
    out.push('\n');
    out
}

/// Converts parsed RON into the untyped tree. RON's bare identifiers (enum
/// variants) do not survive parsing, so they are refused with a hint.
fn ron_to_tree(value: ron::Value, key: &str) -> Result<Params> {
    use ron::Value as R;
    Ok(match value {
        R::Bool(b) => Params::Bool(b),
        R::Char(c) => Params::String(c.to_string()),
        R::String(s) => Params::String(s),
        R::Number(n) => number_to_tree(n, key)?,
        R::Option(None) => Params::Null,
        R::Option(Some(inner)) => ron_to_tree(*inner, key)?,
        R::Seq(items) => Params::Array(
            items
                .into_iter()
                .enumerate()
                .map(|(i, v)| ron_to_tree(v, &format!("{key}[{i}]")))
                .collect::<Result<_>>()?,
        ),
        R::Map(map) => {
            let mut object = serde_json::Map::new();
            for (k, v) in map.into_iter() {
                let name = match k {
                    R::String(s) => s,
                    other => {
                        return Err(Error::config(key, format!("map keys must be names or strings, got {other:?}")));
                    }
                };
                let child = if key.is_empty() { name.clone() } else { format!("{key}.{name}") };
                object.insert(name, ron_to_tree(v, &child)?);
            }
            Params::Object(object)
        }
        R::Unit => {
            return Err(Error::config(
                key,
                "bare names and `()` are not values here; write choices as strings (\"sigma2\") and absent values as None",
            ));
        }
        R::Bytes(_) => return Err(Error::config(key, "byte strings are not supported")),
    })
}

/// RON's own value type keeps the last of two equal keys; a config that
/// names a field twice is almost always an edit gone wrong, so it is refused
/// with the field's path and position.
fn refuse_duplicate_keys(text: &str) -> Result<()> {
    ron::Options::default()
        .from_str_seed(text, DuplicateKeys { path: String::new() })
        .map_err(|err| Error::config("", err.to_string()))
}

/// Walks a RON document as [`serde::de::IgnoredAny`] does, remembering the
/// keys of each map or struct.
struct DuplicateKeys {
    path: String,
}

impl DuplicateKeys {
    fn child(&self, name: &str) -> Self {
        DuplicateKeys { path: if self.path.is_empty() { name.to_string() } else { format!("{}.{name}", self.path) } }
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for DuplicateKeys {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> std::result::Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for DuplicateKeys {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a RON value")
    }

    fn visit_bool<E>(self, _: bool) -> std::result::Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> std::result::Result<(), E> {
        Ok(())
    }
    fn visit_i128<E>(self, _: i128) -> std::result::Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> std::result::Result<(), E> {
        Ok(())
    }
    fn visit_u128<E>(self, _: u128) -> std::result::Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> std::result::Result<(), E> {
        Ok(())
    }
    fn visit_char<E>(self, _: char) -> std::result::Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> std::result::Result<(), E> {
        Ok(())
    }
    fn visit_bytes<E>(self, _: &[u8]) -> std::result::Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> std::result::Result<(), E> {
        Ok(())
    }
    fn visit_none<E>(self) -> std::result::Result<(), E> {
        Ok(())
    }
    fn visit_some<D: serde::Deserializer<'de>>(self, deserializer: D) -> std::result::Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
    fn visit_newtype_struct<D: serde::Deserializer<'de>>(self, deserializer: D) -> std::result::Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<(), A::Error> {
        let mut index = 0usize;
        while seq.next_element_seed(self.child(&index.to_string()))?.is_some() {
            index += 1;
        }
        Ok(())
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> std::result::Result<(), A::Error> {
        let mut seen = std::collections::HashSet::new();
        while let Some(key) = map.next_key::<ron::Value>()? {
            let name = match &key {
                ron::Value::String(name) => name.clone(),
                other => format!("{other:?}"),
            };
            let child = self.child(&name);
            if !seen.insert(key) {
                return Err(serde::de::Error::custom(format!("`{}` is given twice", child.path)));
            }
            map.next_value_seed(child)?;
        }
        Ok(())
    }
}

#[allow(unreachable_patterns)]
fn number_to_tree(number: ron::Number, key: &str) -> Result<Params> {
    use ron::Number as N;
    let integer = |i: i64| Params::Number(i.into());
    Ok(match number {
        N::I8(i) => integer(i.into()),
        N::I16(i) => integer(i.into()),
        N::I32(i) => integer(i.into()),
        N::I64(i) => integer(i),
        N::U8(u) => integer(u.into()),
        N::U16(u) => integer(u.into()),
        N::U32(u) => integer(u.into()),
        N::U64(u) => Params::Number(u.into()),
        other => {
            let f = other.into_f64();
            Params::Number(
                serde_json::Number::from_f64(f)
                    .ok_or_else(|| Error::config(key, format!("{f} is not a finite number")))?,
            )
        }
    })
}

/// Applies one `PATH=RON_VALUE` override. Path segments are field names or
/// list indices (`teacher.params.means.0`); missing fields are created so
/// defaults can be overridden. A value that is not RON is taken as a string
/// (`--set device=cuda:1`).
pub fn apply_override(tree: &mut Params, spec: &str) -> Result<()> {
    let (path, text) = spec
        .split_once('=')
        .ok_or_else(|| Error::config(spec, "an override is PATH=VALUE, e.g. teacher.params.stds=[0.2,0.2]"))?;
    let path = path.trim();
    if path.is_empty() {
        return Err(Error::config(spec, "the override has an empty path"));
    }
    let value = parse_override_value(text.trim(), path)?;
    let mut node = tree;
    let segments: Vec<&str> = path.split('.').collect();
    for (depth, segment) in segments.iter().enumerate() {
        let here = segments[..=depth].join(".");
        let last = depth + 1 == segments.len();
        if node.is_null() {
            *node = Params::Object(Default::default());
        }
        node = match node {
            Params::Object(map) => {
                if last {
                    map.insert(segment.to_string(), value);
                    return Ok(());
                }
                map.entry(segment.to_string()).or_insert(Params::Null)
            }
            Params::Array(items) => {
                let len = items.len();
                let index: usize = segment
                    .parse()
                    .map_err(|_| Error::config(&here, format!("`{segment}` is not an index into a list of {len}")))?;
                let slot = items
                    .get_mut(index)
                    .ok_or_else(|| Error::config(&here, format!("index {index} is past the end of a list of {len}")))?;
                if last {
                    *slot = value;
                    return Ok(());
                }
                slot
            }
            _ => {
                return Err(Error::config(&here, "cannot descend into a value that is neither a struct nor a list"));
            }
        };
    }
    Ok(())
}

fn parse_override_value(text: &str, path: &str) -> Result<Params> {
    match ron::from_str::<ron::Value>(text) {
        Ok(ron::Value::Unit) if text != "()" => Ok(Params::String(text.to_string())),
        Ok(value) => ron_to_tree(value, path),
        Err(_) if !text.is_empty() && !text.contains(['(', ')', '[', ']', '{', '}', '"', ',']) => {
            Ok(Params::String(text.to_string()))
        }
        Err(err) => Err(Error::config(path, format!("override value `{text}` is not valid RON: {err}"))),
    }
}

/// Writes the tree as RON: structs as `(name: value)`, lists as `[…]`,
/// absent values as `None`.
fn write_ron(value: &Params, indent: usize, out: &mut String) {
    const STEP: usize = 4;
    match value {
        Params::Null => out.push_str("None"),
        Params::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Params::Number(n) => out.push_str(&n.to_string()),
        Params::String(s) => out.push_str(&serde_json::to_string(s).expect("strings serialise")),
        Params::Array(items) => {
            let inline = items.iter().all(|v| !v.is_object()) && {
                let mut probe = String::new();
                for item in items {
                    write_ron(item, 0, &mut probe);
                }
                probe.len() < 80 && !probe.contains('\n')
            };
            if inline {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    write_ron(item, indent, out);
                }
                out.push(']');
            } else {
                out.push_str("[\n");
                for item in items {
                    out.push_str(&" ".repeat(indent + STEP));
                    write_ron(item, indent + STEP, out);
                    out.push_str(",\n");
                }
                out.push_str(&" ".repeat(indent));
                out.push(']');
            }
        }
        Params::Object(map) => {
            if map.is_empty() {
                out.push_str("()");
                return;
            }
            let identifiers = map.keys().all(|k| is_identifier(k));
            out.push_str(if identifiers { "(\n" } else { "{\n" });
            for (key, item) in map {
                out.push_str(&" ".repeat(indent + STEP));
                if identifiers {
                    out.push_str(key);
                } else {
                    out.push_str(&serde_json::to_string(key).expect("strings serialise"));
                }
                out.push_str(": ");
                write_ron(item, indent + STEP, out);
                out.push_str(",\n");
            }
            out.push_str(&" ".repeat(indent));
            out.push(if identifiers { ')' } else { '}' });
        }
    }
}

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"(
        version: 1,
        teacher: (plugin: "t", params: (means: [[1.0, 2]], weights: Some([0.5]))),
        generator: (plugin: "g"),
    )"#;

    #[test]
    fn parses_options_and_integers() {
        let tree = parse(TEXT, &[]).unwrap();
        assert_eq!(tree["teacher"]["params"]["means"][0][1], serde_json::json!(2));
        assert_eq!(tree["teacher"]["params"]["weights"][0], serde_json::json!(0.5));
    }

    #[test]
    fn overrides_replace_values_and_whole_components() {
        let overrides = [
            "teacher.params.means.0=[3.0, 4.0]".to_string(),
            "schedule.total_kimg=2".to_string(),
            "device=cuda:1".to_string(),
            r#"generator=(plugin: "h")"#.to_string(),
        ];
        let tree = parse(TEXT, &overrides).unwrap();
        assert_eq!(tree["teacher"]["params"]["means"][0], serde_json::json!([3.0, 4.0]));
        assert_eq!(tree["schedule"]["total_kimg"], serde_json::json!(2));
        assert_eq!(tree["device"], serde_json::json!("cuda:1"));
        assert_eq!(tree["generator"], serde_json::json!({"plugin": "h"}));
    }

    #[test]
    fn bare_identifiers_are_refused_with_a_hint() {
        let text = TEXT.replace("generator: (plugin: \"g\")", "generator: (plugin: \"g\", params: (kind: Relu))");
        let err = parse(&text, &[]).unwrap_err().to_string();
        assert!(err.contains("generator.params.kind") && err.contains("strings"), "{err}");
    }

    #[test]
    fn printed_tree_reads_back_identically() {
        let tree = parse(TEXT, &["optim.betas=(0.0, 0.999)".to_string()]).unwrap();
        let text = to_ron(&tree);
        assert_eq!(parse(&text, &[]).unwrap(), tree);
        assert!(text.contains("betas: [0.0, 0.999]"), "{text}");
    }

    #[test]
    fn keys_given_twice_are_refused_with_their_path() {
        let text = TEXT.replace("weights: Some([0.5])", "weights: Some([0.5]), means: []");
        let err = parse(&text, &[]).unwrap_err().to_string();
        assert!(err.contains("`teacher.params.means` is given twice"), "{err}");
        let err = parse("(seed: 1, version: 1, seed: 2)", &[]).unwrap_err().to_string();
        assert!(err.contains("`seed` is given twice") && err.contains("1:"), "{err}");
    }

    #[test]
    fn bad_override_syntax_is_explained() {
        let err = parse(TEXT, &["seed".to_string()]).unwrap_err();
        assert!(err.to_string().contains("PATH=VALUE"), "{err}");
        let err = parse(TEXT, &["teacher.params.means.9=[1.0]".to_string()]).unwrap_err();
        assert!(err.to_string().contains("past the end"), "{err}");
    }
}
