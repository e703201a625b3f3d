//! S3 XML documents as serde models: responses read with quick-xml's deserializer, request
//! bodies written with its serializer.
//!
//! quick-xml 0.37's deserializer trims every text node, but S3 keys, markers and tag values
//! may start or end with whitespace, or be nothing but whitespace. [`from_xml`] therefore
//! first writes the edge whitespace of leaf elements (`<Key> a </Key>`) as character
//! references, which the deserializer keeps; the whitespace that indents elements is left
//! as it is. Numbers and flags are read through [`flag`] and [`number`], which trim.

use std::borrow::Cow;
use std::ops::Range;

use quick_xml::events::Event;
use serde::de::{DeserializeOwned, Deserializer};
use serde::{Deserialize, Serialize};

use crate::s3::error::RequestError;

/// The namespace of S3 documents, sent as the `xmlns` attribute of request bodies.
pub(crate) const S3_XMLNS: &str = "http://s3.amazonaws.com/doc/2006-03-01/";

/// Reads a response `document` (named in errors, e.g. `ListVersionsResult`). The root
/// element's name is not checked (servers disagree on some); unknown elements are ignored.
pub(crate) fn from_xml<T: DeserializeOwned>(
    body: &[u8],
    document: &str,
) -> Result<T, RequestError> {
    let bad = |e: &dyn std::fmt::Display| {
        RequestError::BadResponse(format!("malformed {document} document: {e}"))
    };
    let text = std::str::from_utf8(body).map_err(|e| bad(&e))?;
    let text = keep_edge_whitespace(text).map_err(|e| bad(&e))?;
    quick_xml::de::from_str(&text).map_err(|e| bad(&e))
}

/// The name of a document's root element (a configuration document read from a file or a
/// bucket), or why it has none.
pub(crate) fn root_element(xml: &str) -> Result<String, String> {
    let mut reader = quick_xml::Reader::from_str(xml);
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) | Ok(Event::Empty(e)) => {
                return Ok(String::from_utf8_lossy(e.local_name().as_ref()).into_owned())
            }
            Ok(Event::Eof) => return Err("empty document".into()),
            Err(e) => return Err(format!("not well-formed XML: {e}")),
            Ok(_) => {}
        }
    }
}

/// Writes a request body: no XML declaration, empty elements as `<A></A>` and every
/// special character escaped, as S3 clients have always sent them.
pub(crate) fn to_xml<T: Serialize>(value: &T, document: &str) -> Result<String, RequestError> {
    let mut out = String::new();
    let mut ser = quick_xml::se::Serializer::new(&mut out);
    ser.expand_empty_elements(true)
        .set_quote_level(quick_xml::se::QuoteLevel::Full);
    value
        .serialize(ser)
        .map_err(|e| RequestError::InvalidRequest(format!("cannot write {document}: {e}")))?;
    Ok(out)
}

fn is_xml_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

/// The document with the leading and trailing whitespace of every leaf element's text
/// written as character references (borrowed unchanged when there is none).
fn keep_edge_whitespace(text: &str) -> Result<Cow<'_, str>, quick_xml::Error> {
    let mut reader = quick_xml::Reader::from_str(text);
    let mut out = String::new();
    let mut copied = 0;
    let mut after_start = false;
    let mut leaf: Option<Range<usize>> = None;
    loop {
        let before = reader.buffer_position() as usize;
        let event = reader.read_event()?;
        let after = reader.buffer_position() as usize;
        match event {
            Event::Start(_) => {
                after_start = true;
                leaf = None;
                continue;
            }
            Event::Text(_) if after_start => leaf = Some(before..after),
            Event::End(_) => {
                if let Some(range) = leaf.take() {
                    escape_edges(text, range, &mut out, &mut copied);
                }
            }
            Event::Eof => break,
            _ => leaf = None,
        }
        after_start = false;
    }
    if copied == 0 {
        return Ok(Cow::Borrowed(text));
    }
    out.push_str(&text[copied..]);
    Ok(Cow::Owned(out))
}

/// Appends `text[*copied..range.end]` to `out`, the edge whitespace of `text[range]` escaped,
/// when that text has any.
fn escape_edges(text: &str, range: Range<usize>, out: &mut String, copied: &mut usize) {
    let leaf = &text[range.clone()];
    let body = leaf.trim_matches(is_xml_space);
    if body.len() == leaf.len() {
        return;
    }
    let lead = if body.is_empty() {
        leaf
    } else {
        &leaf[..leaf.len() - leaf.trim_start_matches(is_xml_space).len()]
    };
    let trail = &leaf[lead.len() + body.len()..];
    use std::fmt::Write;
    out.push_str(&text[*copied..range.start]);
    for c in lead.chars() {
        let _ = write!(out, "&#{};", c as u32);
    }
    out.push_str(body);
    for c in trail.chars() {
        let _ = write!(out, "&#{};", c as u32);
    }
    *copied = range.end;
}

/// A boolean element (`<IsLatest>true</IsLatest>`): true only for `true`.
pub(crate) fn flag<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    let s = String::deserialize(d)?;
    Ok(s.trim() == "true")
}

/// An unsigned number element (`<Size>3</Size>`).
pub(crate) fn number<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let s = String::deserialize(d)?;
    s.trim()
        .parse()
        .map_err(|_| serde::de::Error::custom(format!("{s:?} is not a number")))
}

/// A text element whose empty value means absent (a marker, an upload id).
pub(crate) fn non_empty<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let s = Option::<String>::deserialize(d)?;
    Ok(s.filter(|s| !s.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Doc {
        #[serde(rename = "Key", default)]
        key: Vec<String>,
    }

    fn keys(xml: &str) -> Vec<String> {
        from_xml::<Doc>(xml.as_bytes(), "test").unwrap().key
    }

    #[test]
    fn keeps_whitespace_of_values_not_of_indentation() {
        let xml = "<?xml version=\"1.0\"?>\n<R>\n  <Key> a </Key>\n  <Key> </Key>\n  <Key>\tb&amp; \n</Key>\n  <Key>c</Key>\n  <Key></Key>\n  <Key/>\n</R>\n";
        assert_eq!(keys(xml), [" a ", " ", "\tb& \n", "c", "", ""]);
        assert!(matches!(
            keep_edge_whitespace("<R>\n <Key>c</Key>\n</R>"),
            Ok(Cow::Borrowed(_))
        ));
    }

    #[test]
    fn malformed_documents_are_errors_naming_the_document() {
        for xml in ["<R><Key>a</R>", "<R><Key>a</Key>", "", "\u{0}"] {
            let e = from_xml::<Doc>(xml.as_bytes(), "TestResult").unwrap_err();
            assert!(matches!(e, RequestError::BadResponse(_)), "{xml}: {e}");
            assert!(
                e.to_string().contains("malformed TestResult document"),
                "{e}"
            );
        }
        let e = from_xml::<Doc>(b"<R>\xff</R>", "TestResult").unwrap_err();
        assert!(e.to_string().contains("TestResult"), "{e}");
    }
}
