//! Just enough XML for `nvidia-smi -q -x`: elements, attributes, text, the five predefined
//! entities and character references. The DOCTYPE is skipped, never read or fetched; there
//! are no namespaces. The reader is iterative, so deep nesting cannot overflow the stack,
//! and it is lenient where nvidia-smi's output could be (a stray close tag is ignored),
//! strict where leniency would invent data (a tag that never ends is an error).

/// Deeper than any nvidia-smi output (about 8 levels); more is refused, not followed.
const MAX_DEPTH: usize = 64;

/// One element: its name, attributes, child elements and its own text (entities decoded,
/// the pieces between children concatenated).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Element {
    pub name: String,
    pub attrs: Vec<(String, String)>,
    pub children: Vec<Element>,
    pub text: String,
}

impl Element {
    /// The first child called `name`.
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    /// Every child called `name`, in document order.
    pub fn children_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> {
        self.children.iter().filter(move |c| c.name == name)
    }

    /// The element reached by following first children along `path`.
    pub fn at(&self, path: &[&str]) -> Option<&Element> {
        path.iter().try_fold(self, |e, name| e.child(name))
    }

    /// The trimmed text of the element at `path`.
    pub fn text_at(&self, path: &[&str]) -> Option<&str> {
        self.at(path).map(|e| e.text.trim())
    }

    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses a document and returns its root element.
pub fn parse(doc: &str) -> Result<Element, String> {
    // stack[0] is a synthetic document node collecting the root element.
    let mut stack: Vec<Element> = vec![Element::default()];
    let mut rest = doc;
    while let Some(lt) = rest.find('<') {
        push_text(&mut stack, &rest[..lt]);
        rest = &rest[lt..];
        if let Some(r) = rest.strip_prefix("<?") {
            rest = after(r, "?>", "processing instruction")?;
        } else if let Some(r) = rest.strip_prefix("<!--") {
            rest = after(r, "-->", "comment")?;
        } else if let Some(r) = rest.strip_prefix("<![CDATA[") {
            let end = r.find("]]>").ok_or("unterminated CDATA section")?;
            if let Some(top) = stack.last_mut() {
                top.text.push_str(&r[..end]);
            }
            rest = &r[end + 3..];
        } else if let Some(r) = rest.strip_prefix("<!") {
            rest = skip_declaration(r)?;
        } else if let Some(r) = rest.strip_prefix("</") {
            let end = r.find('>').ok_or("unterminated close tag")?;
            close(&mut stack, r[..end].trim());
            rest = &r[end + 1..];
        } else {
            let (element, self_closing, r) = open_tag(&rest[1..])?;
            rest = r;
            if self_closing {
                attach(&mut stack, element);
            } else {
                if stack.len() > MAX_DEPTH {
                    return Err(format!("nested deeper than {MAX_DEPTH} elements"));
                }
                stack.push(element);
            }
        }
    }
    push_text(&mut stack, rest);
    if stack.len() > 1 {
        let open = stack.last().map(|e| e.name.clone()).unwrap_or_default();
        return Err(format!("element <{open}> is never closed"));
    }
    let doc = stack.pop().unwrap_or_default();
    doc.children
        .into_iter()
        .next()
        .ok_or_else(|| "no root element".to_string())
}

fn after<'a>(s: &'a str, end: &str, what: &str) -> Result<&'a str, String> {
    s.find(end)
        .map(|i| &s[i + end.len()..])
        .ok_or_else(|| format!("unterminated {what}"))
}

/// `<!DOCTYPE …>`, including an internal subset in brackets.
fn skip_declaration(s: &str) -> Result<&str, String> {
    let mut depth = 0usize;
    for (i, c) in s.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth = depth.saturating_sub(1),
            '>' if depth == 0 => return Ok(&s[i + 1..]),
            _ => {}
        }
    }
    Err("unterminated declaration".into())
}

fn push_text(stack: &mut [Element], raw: &str) {
    if raw.is_empty() {
        return;
    }
    if let Some(top) = stack.last_mut() {
        top.text.push_str(&unescape(raw));
    }
}

fn attach(stack: &mut [Element], e: Element) {
    if let Some(top) = stack.last_mut() {
        top.children.push(e);
    }
}

/// Closes `name` and anything left open inside it; a close tag matching nothing open is
/// ignored.
fn close(stack: &mut Vec<Element>, name: &str) {
    let Some(pos) = stack.iter().rposition(|e| e.name == name) else {
        return;
    };
    if pos == 0 {
        return;
    }
    while stack.len() > pos {
        if let Some(e) = stack.pop() {
            attach(stack, e);
        }
    }
}

/// Parses `name attr="v" …>` or `…/>` (the `<` already consumed).
fn open_tag(s: &str) -> Result<(Element, bool, &str), String> {
    let end = s.find('>').ok_or("unterminated tag")?;
    let inner = &s[..end];
    let (inner, self_closing) = match inner.strip_suffix('/') {
        Some(i) => (i, true),
        None => (inner, false),
    };
    let name_end = inner
        .find(|c: char| c.is_whitespace())
        .unwrap_or(inner.len());
    let name = &inner[..name_end];
    if name.is_empty() || !name.chars().all(is_name_char) {
        return Err(format!("bad tag name {name:?}"));
    }
    Ok((
        Element {
            name: name.to_string(),
            attrs: attributes(&inner[name_end..])?,
            ..Element::default()
        },
        self_closing,
        &s[end + 1..],
    ))
}

fn is_name_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | ':')
}

fn attributes(mut s: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    loop {
        s = s.trim_start();
        if s.is_empty() {
            return Ok(out);
        }
        let eq = s
            .find('=')
            .ok_or_else(|| format!("attribute without value in {s:?}"))?;
        let name = s[..eq].trim();
        if name.is_empty() || !name.chars().all(is_name_char) {
            return Err(format!("bad attribute name {name:?}"));
        }
        let v = s[eq + 1..].trim_start();
        let quote = v
            .chars()
            .next()
            .filter(|q| *q == '"' || *q == '\'')
            .ok_or_else(|| format!("attribute {name} is not quoted"))?;
        let close = v[1..]
            .find(quote)
            .ok_or_else(|| format!("attribute {name} is not closed"))?;
        out.push((name.to_string(), unescape(&v[1..1 + close])));
        s = &v[close + 2..];
    }
}

/// Decodes `&lt; &gt; &amp; &quot; &apos;` and `&#N;` / `&#xN;`; anything else is kept as
/// written.
pub fn unescape(s: &str) -> String {
    if !s.contains('&') {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        let decoded = rest.find(';').filter(|&i| i <= 12).and_then(|semi| {
            let c = match &rest[1..semi] {
                "lt" => Some('<'),
                "gt" => Some('>'),
                "amp" => Some('&'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                e => e
                    .strip_prefix("#x")
                    .or_else(|| e.strip_prefix("#X"))
                    .map(|h| u32::from_str_radix(h, 16))
                    .or_else(|| e.strip_prefix('#').map(str::parse::<u32>))
                    .and_then(Result::ok)
                    .and_then(char::from_u32),
            }?;
            Some((c, semi))
        });
        match decoded {
            Some((c, semi)) => {
                out.push(c);
                rest = &rest[semi + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn elements_attributes_text_and_entities() {
        let doc = r#"<?xml version="1.0" ?>
<!DOCTYPE nvidia_smi_log SYSTEM "nvsmi_device_v12.dtd">
<!-- a comment <with> markup -->
<log>
  <gpu id="00000000:3B:00.0" kind='x &amp; y'>
    <name>A &lt;fake&gt; &#65;&#x42; &bogus; &amp</name>
    <empty/>
    <mig_devices>
        None
    </mig_devices>
  </gpu>
  <gpu id="2"><name><![CDATA[raw <text>]]></name></gpu>
</log>"#;
        let root = parse(doc).unwrap();
        assert_eq!(root.name, "log");
        let gpus: Vec<&Element> = root.children_named("gpu").collect();
        assert_eq!(gpus.len(), 2);
        assert_eq!(gpus[0].attr("id"), Some("00000000:3B:00.0"));
        assert_eq!(gpus[0].attr("kind"), Some("x & y"));
        assert_eq!(gpus[0].text_at(&["name"]), Some("A <fake> AB &bogus; &amp"));
        assert!(gpus[0].child("empty").is_some());
        assert_eq!(gpus[0].text_at(&["mig_devices"]), Some("None"));
        assert_eq!(gpus[1].text_at(&["name"]), Some("raw <text>"));
        assert_eq!(root.text_at(&["gpu", "missing"]), None);
    }

    #[test]
    fn a_stray_close_tag_is_ignored_and_an_unclosed_element_is_an_error() {
        let root = parse("<a><b>1</b></c></a>").unwrap();
        assert_eq!(root.text_at(&["b"]), Some("1"));
        // An inner element left open is closed by its parent's close tag.
        let root = parse("<a><b><c>2</b></a>").unwrap();
        assert_eq!(root.text_at(&["b", "c"]), Some("2"));
        assert!(parse("<a><b>1</b>").unwrap_err().contains("<a>"));
        assert!(parse("<a").is_err());
        assert!(parse("just text").is_err());
        assert!(parse("<a x=1></a>").is_err());
        assert!(parse("<a x=\"1></a>").is_err());
    }

    #[test]
    fn nesting_is_bounded() {
        let deep = "<a>".repeat(10_000);
        assert!(parse(&deep).unwrap_err().contains("deeper"));
    }
}
