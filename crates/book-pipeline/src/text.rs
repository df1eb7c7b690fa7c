//! The text work of the pipeline: plain functions, no queue in sight.

use std::collections::{BTreeMap, HashMap, HashSet};

/// Normalises a plain-text book: no BOM, `\n` line ends, no control characters, single
/// spaces inside lines, at most one blank line between paragraphs.
pub(crate) fn normalise(raw: &str) -> String {
    let raw = raw
        .trim_start_matches('\u{feff}')
        .replace("\r\n", "\n")
        .replace('\r', "\n");
    let mut out = String::with_capacity(raw.len());
    let mut blank = 0;
    for line in raw.lines() {
        let clean: String = line
            .chars()
            .filter(|c| !c.is_control() || *c == '\t')
            .collect();
        let words: Vec<&str> = clean.split_whitespace().collect();
        if words.is_empty() {
            blank += 1;
            continue;
        }
        if !out.is_empty() {
            out.push_str(if blank > 0 { "\n\n" } else { "\n" });
        }
        blank = 0;
        out.push_str(&words.join(" "));
    }
    out
}

/// A chapter or section.
#[derive(Clone, Debug, serde::Serialize)]
pub(crate) struct Section {
    pub(crate) title: String,
    pub(crate) text: String,
}

/// Splits at chapter headings (`Chapter ...`, `CHAPTER ...`, `# ...`); a book without them
/// is cut into sections of about six paragraphs.
pub(crate) fn segment(text: &str) -> Vec<Section> {
    let paragraphs: Vec<&str> = text
        .split("\n\n")
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    let is_heading = |p: &str| {
        let first = p.split_whitespace().next().unwrap_or("");
        (first.eq_ignore_ascii_case("chapter") || p.starts_with('#'))
            && p.len() < 80
            && !p.contains('\n')
    };
    let mut sections: Vec<Section> = Vec::new();
    if paragraphs.iter().any(|p| is_heading(p)) {
        for p in paragraphs {
            if is_heading(p) {
                sections.push(Section {
                    title: p.trim_start_matches('#').trim().to_owned(),
                    text: String::new(),
                });
            } else if let Some(current) = sections.last_mut() {
                if !current.text.is_empty() {
                    current.text.push_str("\n\n");
                }
                current.text.push_str(p);
            }
            // Paragraphs before the first heading (title, front matter) are not a chapter.
        }
        sections.retain(|s| !s.text.is_empty());
    } else {
        for (i, chunk) in paragraphs.chunks(6).enumerate() {
            sections.push(Section {
                title: format!("Section {}", i + 1),
                text: chunk.join("\n\n"),
            });
        }
    }
    sections
}

const STOPWORDS: &str = "a about after again all along already also always am an and any are around as asked at \
    be because been before being between both but by came can could day did do does done down each even every few \
    for from gave get given go had has have he her here him his how i if in into is it its itself just know last \
    like made make many may me more most much must my never new next no nobody nor not now of off on once one only \
    or other our out over own said same say says see seen she should so some still such than that the their them \
    then there these they thing this those three through to too took two under until up upon us very was way we \
    week well went were what when where whether which while who whole why will with without would year years yet \
    you your";

fn stopwords() -> HashSet<&'static str> {
    STOPWORDS.split_whitespace().collect()
}

/// Lower-case words of three letters or more that are not stop words.
pub(crate) fn words(text: &str) -> Vec<String> {
    let stop = stopwords();
    text.split(|c: char| !c.is_alphabetic() && c != '\'')
        .map(|w| w.trim_matches('\'').to_lowercase())
        .map(|w| w.strip_suffix("'s").map(str::to_owned).unwrap_or(w))
        .filter(|w| w.chars().count() >= 3 && !stop.contains(w.as_str()))
        .collect()
}

/// The `k` words that best characterise each section (tf-idf over the book's sections).
pub(crate) fn top_keywords(section_words: &[Vec<String>], index: usize, k: usize) -> Vec<String> {
    let n = section_words.len() as f64;
    let mut tf: HashMap<&str, f64> = HashMap::new();
    for w in &section_words[index] {
        *tf.entry(w.as_str()).or_default() += 1.0;
    }
    let mut scored: Vec<(f64, &str)> = tf
        .into_iter()
        .map(|(w, count)| {
            let df = section_words
                .iter()
                .filter(|s| s.iter().any(|x| x == w))
                .count() as f64;
            (count * (1.0 + (n / df).ln()), w)
        })
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(b.1)));
    scored
        .into_iter()
        .take(k)
        .map(|(_, w)| w.to_owned())
        .collect()
}

/// Word frequencies, most frequent first (ties alphabetical).
pub(crate) fn vocabulary<'a>(words: impl IntoIterator<Item = &'a String>) -> Vec<(String, usize)> {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for w in words {
        *counts.entry(w.as_str()).or_default() += 1;
    }
    let mut list: Vec<(String, usize)> =
        counts.into_iter().map(|(w, c)| (w.to_owned(), c)).collect();
    list.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    list
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipeline_functions_on_a_tiny_book() {
        let book = normalise(
            "\u{feff}Title\r\n\r\n\r\nChapter 1\r\n\r\nThe  lamp burned.\tThe lamp turned.\n\nChapter 2\n\nGlass and sand.",
        );
        assert_eq!(
            book,
            "Title\n\nChapter 1\n\nThe lamp burned. The lamp turned.\n\nChapter 2\n\nGlass and sand."
        );
        let sections = segment(&book);
        assert_eq!(sections.len(), 2);
        assert_eq!(sections[0].title, "Chapter 1");
        let w: Vec<Vec<String>> = sections.iter().map(|s| words(&s.text)).collect();
        assert_eq!(w[0], ["lamp", "burned", "lamp", "turned"]);
        assert_eq!(top_keywords(&w, 0, 1), ["lamp"]);
        let vocab = vocabulary(w.iter().flatten());
        assert_eq!(vocab[0], ("lamp".to_owned(), 2));
    }
}
