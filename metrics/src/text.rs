//! The Prometheus text exposition format, written straight from a scrape's samples.
//!
//! A scrape of 1,000 partitions and 100 groups makes tens of thousands of series. Building them
//! as prometheus library metrics (a fresh registry, hashed label values, protobuf structs, then
//! encoding) spent most of the scrape's CPU in the allocator; writing the lines directly
//! allocates only the output. The live counters still go through the prometheus library.

use std::fmt::{self, Display, Write};

/// A gauge family over samples of type `T`: its name, its help, and a sample's value.
pub(crate) type Family<T> = (&'static str, &'static str, fn(&T) -> i64);

/// One gauge family being written. Its `# HELP` and `# TYPE` lines are written with its first
/// sample, so a family without samples leaves no trace (as the prometheus library does).
pub(crate) struct Gauge<'a> {
    out: &'a mut String,
    name: &'static str,
    help: &'static str,
    started: bool,
}

impl<'a> Gauge<'a> {
    pub(crate) fn new(out: &'a mut String, name: &'static str, help: &'static str) -> Self {
        Gauge {
            out,
            name,
            help,
            started: false,
        }
    }

    /// Writes one series. `labels` must be in the order the family always uses (sorted by
    /// name, as the prometheus library writes them).
    pub(crate) fn sample(&mut self, labels: &[(&str, &dyn Display)], value: i64) {
        if !self.started {
            self.started = true;
            // Help texts are constants without backslashes or newlines.
            let _ = writeln!(self.out, "# HELP {} {}", self.name, self.help);
            let _ = writeln!(self.out, "# TYPE {} gauge", self.name);
        }
        self.out.push_str(self.name);
        for (i, (name, value)) in labels.iter().enumerate() {
            self.out.push(if i == 0 { '{' } else { ',' });
            self.out.push_str(name);
            self.out.push_str("=\"");
            let _ = write!(Escaped(self.out), "{value}");
            self.out.push('"');
        }
        if !labels.is_empty() {
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }
}

/// Writes a label value with `\`, `"` and newlines escaped, as the format requires.
struct Escaped<'a>(&'a mut String);

impl Write for Escaped<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for c in s.chars() {
            match c {
                '\\' => self.0.push_str("\\\\"),
                '"' => self.0.push_str("\\\""),
                '\n' => self.0.push_str("\\n"),
                c => self.0.push(c),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_help_type_and_escaped_labels_once() {
        let mut out = String::new();
        let mut g = Gauge::new(&mut out, "x_total", "Some help");
        g.sample(&[("a", &"q\"u\\o\nte"), ("b", &7)], -3);
        g.sample(&[], 4);
        assert_eq!(
            out,
            "# HELP x_total Some help\n# TYPE x_total gauge\n\
             x_total{a=\"q\\\"u\\\\o\\nte\",b=\"7\"} -3\nx_total 4\n"
        );
        let mut empty = String::new();
        Gauge::new(&mut empty, "y", "unused");
        assert!(empty.is_empty());
    }
}
