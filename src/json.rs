//! Strict JSON: one document, nothing after it, and a failure that names the field.

use serde::Deserialize;

/// Parses one JSON object and reports a failure with the path of the offending field, under
/// `prefix` (`attestation.source.epoch: invalid type ...`). Anything after the object but
/// whitespace is refused (`{...} x` is not a request), and so is an array in its place: serde
/// would read `[...]` into a struct field by field, which no client sends and no reader of the
/// request would expect to be signed.
pub fn parse_at<'a, T: Deserialize<'a>>(prefix: &str, json: &'a str) -> Result<T, String> {
    if !json.trim_start().starts_with('{') {
        let what = json
            .trim_start()
            .chars()
            .next()
            .map_or("nothing".to_string(), |c| format!("`{c}`"));
        return Err(match prefix {
            "" => format!("expected a JSON object, found {what}"),
            p => format!("{p}: expected a JSON object, found {what}"),
        });
    }
    let de = &mut serde_json::Deserializer::from_str(json);
    let value = serde_path_to_error::deserialize(&mut *de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        match (prefix.is_empty(), path.as_str()) {
            (true, ".") => inner.to_string(),
            (true, p) => format!("{p}: {inner}"),
            (false, ".") => format!("{prefix}: {inner}"),
            (false, p) => format!("{prefix}.{p}: {inner}"),
        }
    })?;
    de.end().map_err(|e| match prefix {
        "" => format!("data after the JSON document: {e}"),
        p => format!("{p}: data after the JSON value: {e}"),
    })?;
    Ok(value)
}

/// A request body as one JSON document (see `parse_at`); a body that is not UTF-8 is refused.
pub fn parse_body<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, String> {
    parse_at("", body_text(body)?)
}

/// A request body as text.
pub fn body_text(body: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(body).map_err(|_| "request body is not UTF-8".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Outer {
        #[allow(dead_code)]
        inner: Inner,
    }
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        #[allow(dead_code)]
        n: u64,
    }

    #[test]
    fn names_the_field_and_refuses_trailing_data() {
        let e = parse_at::<Outer>("req", r#"{"inner": {"n": "x"}}"#).unwrap_err();
        assert!(e.starts_with("req.inner.n: invalid type"), "{e}");
        let e = parse_at::<Outer>("", r#"{"inner": {"n": 1}} x"#).unwrap_err();
        assert!(e.starts_with("data after the JSON document"), "{e}");
        assert!(parse_at::<Outer>("", " {\"inner\": {\"n\": 1}}\n").is_ok());
        assert_eq!(
            parse_body::<Outer>(&[0xff, 0xfe]).unwrap_err(),
            "request body is not UTF-8"
        );
        // serde would take an array for a struct, field by field: refused.
        let e = parse_at::<Inner>("inner", "[1]").unwrap_err();
        assert_eq!(e, "inner: expected a JSON object, found `[`");
        assert!(parse_at::<Inner>("", "").unwrap_err().contains("found nothing"));
    }
}
