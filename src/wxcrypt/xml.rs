//! WeChat's flat XML: `<xml><Name>value</Name>...</xml>`, read into [`Fields`] and written
//! back with CDATA values.
//!
//! quick-xml never expands entities beyond XML's five and character references, and
//! never fetches anything; on top of that a DOCTYPE is refused outright (WeChat never
//! sends one, and refusing it leaves no room for entity tricks), and an unknown entity
//! is an error rather than text. The reader is not recursive, so deep nesting costs
//! memory in proportion to the input (bounded by [`MAX_XML`]), never stack.

use quick_xml::Reader;
use quick_xml::events::{BytesRef, Event};

use super::{CryptError, Fields, MAX_XML};

/// Reads the direct children of the root `<xml>` element into [`Fields`]: each child's
/// text and CDATA, joined, exactly as written (not trimmed). Text of deeper elements is
/// not part of any field; whitespace between elements is ignored.
///
/// # Errors
/// [`CryptError::BadXml`] for input over [`MAX_XML`], malformed XML, a DOCTYPE, an
/// unknown entity, a root other than `<xml>`, several roots, or a field given twice.
pub fn parse_fields(xml: &str) -> Result<Fields, CryptError> {
    let bad = |why: String| CryptError::BadXml(why);
    if xml.len() > MAX_XML {
        return Err(bad(format!("larger than {} KiB", MAX_XML / 1024)));
    }
    let mut reader = Reader::from_str(xml);
    let mut fields = Fields::new();
    // Elements open now: 0 outside the root, 1 inside `<xml>`, 2 inside a field.
    let mut depth = 0usize;
    let mut root_done = false;
    // The field being read: its name and text so far.
    let mut field: Option<(String, String)> = None;
    loop {
        let event = reader
            .read_event()
            .map_err(|e| bad(format!("{e} (near byte {})", reader.error_position())))?;
        let empty = matches!(event, Event::Empty(_));
        match event {
            Event::Start(start) | Event::Empty(start) if depth == 0 => {
                if root_done {
                    return Err(bad("more than one root element".to_owned()));
                }
                let name = start.name();
                if name.as_ref() != "xml" {
                    return Err(bad(format!(
                        "the root element is <{}>, expected <xml>",
                        shorten(name.as_ref())
                    )));
                }
                if empty {
                    root_done = true;
                } else {
                    depth = 1;
                }
            }
            Event::Start(start) => {
                if depth == 1 {
                    field = Some((start.name().as_ref().to_owned(), String::new()));
                }
                depth += 1;
            }
            Event::Empty(start) => {
                if depth == 1 {
                    insert(&mut fields, start.name().as_ref().to_owned(), String::new())?;
                }
            }
            Event::End(_) => {
                depth -= 1;
                match depth {
                    0 => root_done = true,
                    1 => {
                        if let Some((name, value)) = field.take() {
                            insert(&mut fields, name, value)?;
                        }
                    }
                    _ => {}
                }
            }
            Event::Text(text) => {
                let text = text.xml10_content();
                if depth == 2 {
                    push(&mut field, &text);
                } else if depth == 0 && !text.trim().is_empty() {
                    return Err(bad("text outside the root element".to_owned()));
                }
            }
            Event::CData(cdata) => {
                if depth == 2 {
                    push(&mut field, &cdata.into_inner());
                }
            }
            Event::GeneralRef(reference) => {
                let resolved = resolve(&reference)?;
                if depth == 2 {
                    push(&mut field, resolved.encode_utf8(&mut [0; 4]));
                }
            }
            Event::DocType(_) => return Err(bad("a DOCTYPE is not allowed".to_owned())),
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
            Event::Eof => break,
        }
    }
    if depth != 0 {
        return Err(bad("the document ends inside an element".to_owned()));
    }
    if !root_done {
        return Err(bad("no <xml> root element".to_owned()));
    }
    Ok(fields)
}

/// Writes `fields` as `<xml><Name><![CDATA[value]]></Name>...</xml>`, in name order.
///
/// A value holding `]]>` is split across two CDATA sections (`]]` ends one, `>` starts
/// the next), so any text survives a round trip through [`parse_fields`]. Names are
/// written as given: they are WeChat's field names, chosen by the caller, not input.
pub fn to_xml(fields: &Fields) -> String {
    let mut out = String::from("<xml>");
    for (name, value) in fields {
        out.push('<');
        out.push_str(name);
        out.push_str("><![CDATA[");
        out.push_str(&value.replace("]]>", "]]]]><![CDATA[>"));
        out.push_str("]]></");
        out.push_str(name);
        out.push('>');
    }
    out.push_str("</xml>");
    out
}

fn push(field: &mut Option<(String, String)>, text: &str) {
    if let Some((_, value)) = field {
        value.push_str(text);
    }
}

fn insert(fields: &mut Fields, name: String, value: String) -> Result<(), CryptError> {
    if fields.contains_key(&name) {
        return Err(CryptError::BadXml(format!(
            "<{}> appears twice",
            shorten(&name)
        )));
    }
    fields.insert(name, value);
    Ok(())
}

/// XML's five predefined entities and character references; anything else is refused.
fn resolve(reference: &BytesRef<'_>) -> Result<char, CryptError> {
    let unknown = || CryptError::BadXml(format!("unknown entity &{};", shorten(reference)));
    if reference.is_char_ref() {
        return reference
            .resolve_char_ref()
            .ok()
            .flatten()
            .ok_or_else(unknown);
    }
    match &**reference {
        "lt" => Ok('<'),
        "gt" => Ok('>'),
        "amp" => Ok('&'),
        "apos" => Ok('\''),
        "quot" => Ok('"'),
        _ => Err(unknown()),
    }
}

/// A name for an error message, cut so hostile input can't make a huge one.
fn shorten(name: &str) -> String {
    const SHOWN: usize = 40;
    if name.chars().count() <= SHOWN {
        name.to_owned()
    } else {
        name.chars().take(SHOWN).chain("...".chars()).collect()
    }
}
