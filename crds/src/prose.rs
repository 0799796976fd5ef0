//! Turns wrapped doc comments into flowing schema descriptions, so `kubectl explain` re-wraps
//! them instead of keeping the source's line breaks.

use schemars::Schema;
use schemars::transform::{RecursiveTransform, Transform};

/// Schema transform (used as `#[schemars(transform = ...)]` on the top-level structs): in every
/// description, joins the lines of each paragraph; blank lines still separate paragraphs.
pub(crate) fn flow_descriptions(schema: &mut Schema) {
    RecursiveTransform(flow_one).transform(schema);
}

fn flow_one(schema: &mut Schema) {
    if let Some(serde_json::Value::String(text)) = schema.get_mut("description") {
        *text = flow(text);
    }
}

fn flow(text: &str) -> String {
    text.split("\n\n")
        .map(|paragraph| paragraph.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join("\n\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_lines_and_keeps_paragraphs() {
        assert_eq!(
            flow("one\ntwo  three\n\nfour\nfive"),
            "one two three\n\nfour five"
        );
        assert_eq!(flow("single"), "single");
    }

    #[test]
    fn reaches_nested_descriptions() {
        let mut schema: Schema = serde_json::from_value(serde_json::json!({
            "description": "a\nb",
            "properties": {"x": {"description": "c\nd", "items": {"description": "e\nf"}}}
        }))
        .expect("schema");
        flow_descriptions(&mut schema);
        let v = schema.to_value();
        assert_eq!(v["description"], "a b");
        assert_eq!(v["properties"]["x"]["description"], "c d");
        assert_eq!(v["properties"]["x"]["items"]["description"], "e f");
    }
}
