//! carp.toml(5), made of the README's Configuration reference (the text between its
//! `<!-- carp.toml(5)` and `<!-- end of carp.toml(5) -->` comments), so the page and the
//! README cannot differ: `carp-agent generate man-config` prints it for packaging.

use anyhow::{Context as _, Result, bail};
use pulldown_cmark::{Event, HeadingLevel, Parser, Tag, TagEnd};
use roff::{Inline, Roff, bold, italic, roman};

const README: &str = include_str!("../../../README.md");
const BEGIN: &str = "<!-- carp.toml(5)";
const END: &str = "<!-- end of carp.toml(5) -->";

/// The README's Configuration reference, the page's source: Markdown.
pub fn reference() -> Result<&'static str> {
    let (_, rest) = README
        .split_once(BEGIN)
        .context("README.md has no carp.toml(5) comment")?;
    let (text, _) = rest
        .split_once(END)
        .context("README.md's carp.toml(5) reference has no end comment")?;
    // Past the rest of the opening comment's line.
    Ok(text.split_once('\n').map_or("", |(_, t)| t))
}

/// The man page of carp-agent `version`.
pub fn page(version: &str) -> Result<String> {
    let mut page = Roff::new();
    let footer = format!("carp-agent {version}");
    page.control("TH", ["CARP.TOML", "5", "", footer.as_str()])
        .control("SH", ["NAME"])
        .text([roman("carp.toml - configuration file of carp-agent")])
        .control("SH", ["SYNOPSIS"])
        .text([bold("/etc/carp/carp.toml")])
        .control("SH", ["DESCRIPTION"]);
    page.extend([render(reference()?)?]);
    page.control("SH", ["FILES"])
        .control("TP", [])
        .text([bold("/etc/carp/carp.toml")])
        .text([roman("The configuration.")])
        .control("TP", [])
        .text([bold("/etc/carp/carp.toml.example")])
        .text([roman("A commented example.")])
        .control("SH", ["SEE ALSO"])
        .text([
            bold("carp-agent"),
            roman("(8); /usr/share/doc/carp/README.md, whose sections this page names."),
        ]);
    Ok(page.render())
}

/// Renders the Markdown the reference uses: paragraphs, `####` headings (`.SS`), lists
/// whose items name keys before a colon (`.TP`, the keys as the tag), code (bold),
/// emphasis and links (their text). Anything else is refused, so nothing goes missing
/// from the page unseen.
fn render(markdown: &str) -> Result<Roff> {
    let mut out = Roff::new();
    let mut line: Vec<Inline> = Vec::new();
    let (mut italics, mut strong) = (0, 0);
    for event in Parser::new(markdown) {
        match event {
            Event::Start(
                Tag::Paragraph
                | Tag::List(None)
                | Tag::Item
                | Tag::Link { .. }
                | Tag::HtmlBlock
                | Tag::Heading {
                    level: HeadingLevel::H4,
                    ..
                },
            )
            | Event::End(TagEnd::List(false) | TagEnd::Link | TagEnd::HtmlBlock)
            | Event::Html(_)
            | Event::InlineHtml(_) => {}
            Event::Start(Tag::Emphasis) => italics += 1,
            Event::End(TagEnd::Emphasis) => italics -= 1,
            Event::Start(Tag::Strong) => strong += 1,
            Event::End(TagEnd::Strong) => strong -= 1,
            Event::Text(t) if strong > 0 => line.push(bold(t.as_ref())),
            Event::Text(t) if italics > 0 => line.push(italic(t.as_ref())),
            Event::Text(t) => push_roman(&mut line, &t),
            Event::SoftBreak => push_roman(&mut line, " "),
            Event::Code(t) => line.push(bold(t.as_ref())),
            Event::End(TagEnd::Heading(_)) => {
                let title: String = line.drain(..).map(|i| text_of(&i)).collect();
                out.control("SS", [title.as_str()]);
            }
            // A tight list's items hold their text without a paragraph.
            Event::End(TagEnd::Paragraph) if line.is_empty() => {}
            Event::End(TagEnd::Paragraph) => {
                out.control("PP", []).text(std::mem::take(&mut line));
            }
            Event::End(TagEnd::Item) => {
                let (term, body) = split_term(std::mem::take(&mut line))?;
                out.control("TP", []).text(term).text(body);
            }
            other => bail!("carp.toml(5) cannot render {other:?} of the reference"),
        }
    }
    Ok(out)
}

/// Appends roman text, to the roman text before it if there is.
fn push_roman(line: &mut Vec<Inline>, text: &str) {
    match line.last_mut() {
        Some(Inline::Roman(last)) => last.push_str(text),
        _ => line.push(roman(text)),
    }
}

fn text_of(inline: &Inline) -> String {
    match inline {
        Inline::Roman(t) | Inline::Bold(t) | Inline::Italic(t) => t.clone(),
        Inline::LineBreak => " ".into(),
    }
}

/// Splits a list item at its first ": " in plain text: the keys it names (and their
/// values and defaults), and what it says of them.
fn split_term(mut item: Vec<Inline>) -> Result<(Vec<Inline>, Vec<Inline>)> {
    let found = item
        .iter()
        .enumerate()
        .find_map(|(i, inline)| match inline {
            Inline::Roman(t) => t
                .split_once(": ")
                .map(|(before, after)| (i, before.to_owned(), after.to_owned())),
            _ => None,
        });
    let Some((at, before, after)) = found else {
        let text: String = item.iter().map(text_of).collect();
        bail!("a list item of the reference names no key before a colon: {text}");
    };
    let mut body = item.split_off(at + 1);
    item.pop();
    if !before.is_empty() {
        item.push(roman(before));
    }
    if !after.is_empty() {
        body.insert(0, roman(after));
    }
    Ok((item, body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        config::{
            Agent, BalanceConfig, Check, Config, MacMode, Protocol, VhidConfig, VipPlacement,
            XdpModeSetting,
        },
        hmac::AuthMode,
    };
    use serde_aux::serde_introspection::serde_introspect;

    /// Every key (and every word a key takes) the parser accepts is in the reference, as
    /// code: the structs' own field names, as serde reads them.
    #[test]
    fn the_reference_names_every_key() {
        let reference = reference().unwrap();
        let tables = [
            ("[agent]", serde_introspect::<Agent>()),
            ("[[vhid]]", serde_introspect::<VhidConfig>()),
            ("[[balance]]", serde_introspect::<BalanceConfig>()),
            ("[[check]]", serde_introspect::<Check>()),
        ];
        let top: Vec<&str> = serde_introspect::<Config>().to_vec();
        let named: Vec<&str> = tables
            .iter()
            .map(|(t, _)| t.trim_matches(['[', ']']))
            .collect();
        assert_eq!(top, named, "a table the reference does not have");
        for (table, keys) in tables {
            let section = reference
                .split_once(&format!("#### {table}\n"))
                .and_then(|(_, s)| s.split("\n#### ").next())
                .unwrap_or_else(|| panic!("no section {table}"));
            for key in keys {
                assert!(
                    section.contains(&format!("`{key}`")),
                    "{table} {key} is not in the reference"
                );
            }
        }
        let words = [
            serde_introspect::<XdpModeSetting>(),
            serde_introspect::<VipPlacement>(),
            serde_introspect::<MacMode>(),
            serde_introspect::<Protocol>(),
            serde_introspect::<AuthMode>(),
        ];
        for word in words.concat() {
            assert!(
                reference.contains(&format!("`{word}`")),
                "{word} is not in the reference"
            );
        }
    }

    /// The page is one groff renders without a warning, and every key and word of the
    /// reference is in it, bold.
    #[test]
    fn the_page_is_valid_and_has_every_key() {
        let page = page("0").unwrap();
        let out = std::process::Command::new("groff")
            // -k: UTF-8 input through preconv, as man-db's man reads pages.
            .args(["-k", "-man", "-Tutf8", "-ww", "-z"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut groff| {
                use std::io::Write as _;
                groff.stdin.take().unwrap().write_all(page.as_bytes())?;
                groff.wait_with_output()
            })
            .expect("groff (Debian's groff-base) renders man pages");
        let warnings = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success() && warnings.is_empty(), "{warnings}");
        let reference = reference().unwrap();
        let keys = reference.split('`').skip(1).step_by(2);
        for key in keys.filter(|k| k.chars().all(|c| c.is_ascii_lowercase() || c == '_')) {
            assert!(
                page.contains(&format!("\\fB{key}\\fR")),
                "{key} is not in the page"
            );
        }
    }

    #[test]
    fn items_are_split_at_the_first_colon_and_space_in_plain_text() {
        let (term, body) = split_term(vec![
            bold("metrics"),
            roman(" (host:port, e.g. "),
            bold("\"127.0.0.1:9720\""),
            roman("): serve it: there"),
        ])
        .unwrap();
        assert_eq!(
            term,
            [
                bold("metrics"),
                roman(" (host:port, e.g. "),
                bold("\"127.0.0.1:9720\""),
                roman(")")
            ]
        );
        assert_eq!(body, [roman("serve it: there")]);
        assert!(split_term(vec![bold("key"), roman(" says nothing")]).is_err());
    }

    /// What the reference does not use is refused rather than dropped.
    #[test]
    fn markdown_the_page_cannot_show_is_refused() {
        for markdown in ["```\ncode\n```\n", "1. one\n", "> quoted\n", "## h\n"] {
            assert!(render(markdown).is_err(), "{markdown:?} rendered");
        }
        assert!(render("Text with `code`, *emphasis* and [a link](x).\n").is_ok());
    }
}
