//! Reading a `/metrics` scrape: the Prometheus text exposition format, typed, so a test
//! looks a sample up by name and labels instead of searching the text (prometheus-client
//! writes the format but has no parser).

use anyhow::{Context as _, Result, bail};
use std::collections::BTreeMap;

/// A sample's name and labels.
pub type Key = (String, BTreeMap<String, String>);

/// The samples of a scrape by name and labels. Comments (`# HELP`, `# TYPE`, `# EOF`) are
/// skipped; a line that is not a sample, or a sample seen twice, is an error.
pub fn parse(text: &str) -> Result<BTreeMap<Key, f64>> {
    let mut samples = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (key, value) = sample(line).with_context(|| format!("metrics line {line:?}"))?;
        if samples.insert(key, value).is_some() {
            bail!("metrics line {line:?}: sample repeated");
        }
    }
    Ok(samples)
}

/// `name{label="value",...} value`, label values with `\\`, `\"` and `\n` escaped.
fn sample(line: &str) -> Result<(Key, f64)> {
    let end = line.find(['{', ' ']).context("no value after the name")?;
    let (name, mut rest) = line.split_at(end);
    let mut labels = BTreeMap::new();
    if let Some(inner) = rest.strip_prefix('{') {
        rest = inner;
        loop {
            if let Some(after) = rest.strip_prefix('}') {
                rest = after;
                break;
            }
            let (label, after) = rest.split_once("=\"").context("label without =\"")?;
            let mut value = String::new();
            let mut chars = after.char_indices();
            let close = loop {
                match chars.next().context("unterminated label value")? {
                    (i, '"') => break i,
                    (_, '\\') => match chars.next().context("escape at the end")?.1 {
                        'n' => value.push('\n'),
                        c @ ('\\' | '"') => value.push(c),
                        c => bail!("unknown escape \\{c}"),
                    },
                    (_, c) => value.push(c),
                }
            };
            labels.insert(label.trim_start_matches(',').to_owned(), value);
            rest = &after[close + 1..];
        }
    }
    let value = rest.trim().split(' ').next().context("no value")?;
    let value = value.parse().with_context(|| format!("value {value:?}"))?;
    Ok(((name.to_owned(), labels), value))
}

/// The body of an HTTP/1.1 response to `GET /metrics`, parsed; an error unless it is a 200.
pub fn parse_response(response: &str) -> Result<BTreeMap<Key, f64>> {
    let (head, body) = response
        .split_once("\r\n\r\n")
        .context("no end of the HTTP header")?;
    if !head.starts_with("HTTP/1.1 200 ") {
        bail!("not a 200: {head}");
    }
    parse(body)
}

/// The key of `name` with `labels`, for looking a sample up.
pub fn key(name: &str, labels: &[(&str, &str)]) -> Key {
    (
        name.to_owned(),
        labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_read_by_name_and_labels() {
        let text = "# HELP carp_demotion Global demotion counter\n\
                    # TYPE carp_demotion gauge\n\
                    carp_demotion 50\n\
                    carp_vhid_waiting{interface=\"eth9\",vhid=\"2\",reason=\"no \\\"interface\\\"\"} 1\n\
                    carp_check_healthy{check=\"a,b\"} -1\n\
                    # EOF\n";
        let m = parse(text).unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!(m[&key("carp_demotion", &[])], 50.0);
        let waiting = key(
            "carp_vhid_waiting",
            &[
                ("interface", "eth9"),
                ("vhid", "2"),
                ("reason", "no \"interface\""),
            ],
        );
        assert_eq!(m[&waiting], 1.0);
        assert_eq!(m[&key("carp_check_healthy", &[("check", "a,b")])], -1.0);
        assert!(parse("carp_x{a=\"1\"}").is_err());
        assert!(parse("carp_x 1\ncarp_x 2\n").is_err());
    }
}
