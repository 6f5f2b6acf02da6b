//! The `labels` of a dataset's `dataset.json` (`{"labels": [[name, class], …]}`
//! or `{"labels": null}`), parsed entry by entry so that a file listing more
//! entries than a caller allows is refused as soon as it does, and every
//! class index is checked against [`MAX_CLASSES`](crate::limits::MAX_CLASSES).

use std::fmt;

use serde::Deserializer;
use serde::de::{DeserializeSeed, Error as _, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::error::Category;

use crate::limits::check_label;

/// The name of the metadata file inside a dataset.
pub const METADATA: &str = "dataset.json";

/// `[name, class]` pairs in file order, or `None` for `"labels": null`.
pub type Labels = Option<Vec<(String, i64)>>;

/// A check of each entry's file name as it is parsed (that the file exists,
/// that it is labelled once), so that the first bad entry is the one named.
pub type NameCheck<'a> = &'a mut dyn FnMut(&str) -> Result<(), String>;

/// The labels of a `dataset.json`, with at most `max_entries` entries whose
/// names pass `check`, or why they are refused (not JSON, a missing `labels`
/// key, a malformed pair, a class index out of range, a name `check`
/// refuses, too many entries), as a sentence naming `dataset.json`.
pub fn parse_labels(bytes: &[u8], max_entries: usize, check: NameCheck<'_>) -> Result<Labels, String> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let labels = Document { max_entries, check }.deserialize(&mut deserializer).map_err(described)?;
    deserializer.end().map_err(described)?;
    Ok(labels)
}

/// The error as a sentence about `dataset.json`.
fn described(err: serde_json::Error) -> String {
    match err.classify() {
        Category::Syntax | Category::Eof => format!("{METADATA} is not JSON: {err}"),
        Category::Data | Category::Io => format!("{METADATA}: {err}"),
    }
}

/// The top-level object; keys other than `labels` are skipped.
struct Document<'a> {
    max_entries: usize,
    check: NameCheck<'a>,
}

impl<'de> DeserializeSeed<'de> for Document<'_> {
    type Value = Labels;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Labels, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Document<'_> {
    type Value = Labels;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object with a `labels` key")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Labels, A::Error> {
        let mut labels = None;
        while let Some(key) = map.next_key::<String>()? {
            if key == "labels" {
                if labels.is_some() {
                    return Err(A::Error::custom("`labels` appears twice"));
                }
                let list = LabelList { max_entries: self.max_entries, check: &mut *self.check };
                labels = Some(map.next_value_seed(list)?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        labels.ok_or_else(|| A::Error::custom("no `labels` key"))
    }
}

/// `null` or the list of pairs.
struct LabelList<'a> {
    max_entries: usize,
    check: NameCheck<'a>,
}

impl<'de> DeserializeSeed<'de> for LabelList<'_> {
    type Value = Labels;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Labels, D::Error> {
        deserializer.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for LabelList<'_> {
    type Value = Labels;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("`labels`: a list of [name, class] or null")
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<Labels, E> {
        Ok(None)
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Labels, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Labels, D::Error> {
        deserializer.deserialize_seq(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Labels, A::Error> {
        let mut pairs = Vec::new();
        while let Some(entry) = seq.next_element::<serde_json::Value>()? {
            let (name, label) = pair(&entry).map_err(A::Error::custom)?;
            (self.check)(&name).map_err(A::Error::custom)?;
            if pairs.len() == self.max_entries {
                return Err(A::Error::custom(format!("lists more than {} labels", self.max_entries)));
            }
            pairs.push((name, label));
        }
        Ok(Some(pairs))
    }
}

fn pair(entry: &serde_json::Value) -> Result<(String, i64), String> {
    let Some([name, label]) = entry.as_array().map(Vec::as_slice) else {
        return Err(format!("`{}` is not a [name, class] pair", shortened(entry)));
    };
    let name = name.as_str().ok_or_else(|| format!("`{}` does not start with a file name", shortened(entry)))?;
    let label = label
        .as_i64()
        .ok_or_else(|| format!("`{}`, not a class index", shortened(label)))
        .and_then(check_label)
        .map_err(|e| format!("the label of {name} is {e}"))?;
    Ok((name.to_string(), label))
}

/// A JSON value as text, cut short so that an error message stays one line.
fn shortened(value: &serde_json::Value) -> String {
    const MAX_CHARS: usize = 80;
    let text = value.to_string();
    match text.char_indices().nth(MAX_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn any(_: &str) -> Result<(), String> {
        Ok(())
    }

    #[test]
    fn labels_parse_and_bad_ones_are_named() {
        let ok = parse_labels(br#"{"labels": [["a.png", 3], ["b.png", 0]], "x": {"y": 1}}"#, 2, &mut any).unwrap();
        assert_eq!(ok, Some(vec![("a.png".to_string(), 3), ("b.png".to_string(), 0)]));
        assert_eq!(parse_labels(br#"{"labels": null}"#, 0, &mut any).unwrap(), None);
        for (json, expected) in [
            (r#"{"labels": [["a.png", 9223372036854775807]]}"#, "label of a.png is `9223372036854775807`"),
            (r#"{"labels": [["a.png", -2]]}"#, "label of a.png is `-2`"),
            (r#"{"labels": [["a.png", 1.5]]}"#, "label of a.png is `1.5`"),
            (r#"{"labels": [["a.png", 0], ["b.png", 1], ["c.png", 2]]}"#, "more than 2 labels"),
            (r#"{"labels": [["a.png"]]}"#, "is not a [name, class] pair"),
            (r#"{"labels": [[7, 0]]}"#, "does not start with a file name"),
            (r#"{"other": 1}"#, "no `labels` key"),
            (r#"{"labels": null} trailing"#, "dataset.json is not JSON: trailing"),
            (r#"{labels"#, "dataset.json is not JSON: key must be a string"),
            (r#"{"labels": 3}"#, "a list of [name, class] or null"),
        ] {
            let err = parse_labels(json.as_bytes(), 2, &mut any).unwrap_err();
            assert!(err.contains(expected), "{json}: {err}");
        }
        let mut no_c = |name: &str| if name == "c.png" { Err("no c".to_string()) } else { Ok(()) };
        let err = parse_labels(br#"{"labels": [["a.png", 0], ["c.png", 1], ["d.png", 2]]}"#, 2, &mut no_c);
        assert!(err.unwrap_err().starts_with("dataset.json: no c"));
        let long = format!(r#"{{"labels": ["{}"]}}"#, "x".repeat(10_000));
        assert!(parse_labels(long.as_bytes(), 2, &mut any).unwrap_err().len() < 200);
    }

    #[test]
    fn deep_nesting_neither_overflows_the_stack_nor_passes_as_labels() {
        let (open, close) = ("[".repeat(100_000), "]".repeat(100_000));
        // Skipped without recursion elsewhere, refused within the labels.
        let elsewhere = format!(r#"{{"labels": null, "x": {open}{close}}}"#);
        assert_eq!(parse_labels(elsewhere.as_bytes(), 2, &mut any), Ok(None));
        let within = format!(r#"{{"labels": {open}{close}}}"#);
        assert!(parse_labels(within.as_bytes(), 2, &mut any).unwrap_err().contains("recursion limit"));
    }
}
