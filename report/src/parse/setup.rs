//! `SETUP.md`: a title, a table of machine facts, then `## ` sections holding tables, lists and
//! code blocks. Sections are kept in order and in general form, so a section added to the file
//! later still shows up in the report.

/// A parsed `SETUP.md`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Setup {
    /// The `# ` heading, e.g. `Setup: 2026-11-28-geo`.
    pub title: String,
    /// Content before the first `## ` heading (the machine facts), as a section without heading.
    pub facts: Section,
    /// `## ` sections in file order.
    pub sections: Vec<Section>,
}

/// The content under one heading.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Section {
    /// The heading text, empty for the facts before the first heading.
    pub heading: String,
    /// Blocks in file order.
    pub blocks: Vec<Block>,
}

/// A piece of Markdown as `SETUP.md` uses it.
#[derive(Debug, Clone, PartialEq)]
pub enum Block {
    /// A table: its header cells (possibly all empty) and its rows, cells unescaped.
    Table { header: Vec<String>, rows: Vec<Vec<String>> },
    /// A bullet list; continuation lines are joined to their item with a newline.
    List(Vec<String>),
    /// A fenced code block's lines.
    Code(Vec<String>),
    /// Any other line of text, such as `(none)`.
    Text(String),
}

impl Setup {
    /// The value of a row of the facts table (`Kernel`, `Commit`, `CPU`, ...).
    pub fn fact(&self, key: &str) -> Option<&str> {
        self.facts
            .blocks
            .iter()
            .find_map(|b| match b {
                Block::Table { rows, .. } => {
                    rows.iter().find(|r| r.first().is_some_and(|k| k == key))?.get(1)
                }
                _ => None,
            })
            .map(String::as_str)
    }

    /// The section with this heading.
    pub fn section(&self, heading: &str) -> Option<&Section> {
        self.sections.iter().find(|s| s.heading == heading)
    }

    /// The load generator's command lines (`## Command lines`).
    pub fn command_lines(&self) -> Vec<&str> {
        let Some(section) = self.section("Command lines") else { return Vec::new() };
        section
            .blocks
            .iter()
            .flat_map(|b| match b {
                Block::Code(lines) => lines.iter().map(String::as_str).collect(),
                _ => Vec::new(),
            })
            .collect()
    }

    /// The server processes' command lines (`## Server processes`, items `- PID: \`CMD\``).
    pub fn server_commands(&self) -> Vec<&str> {
        let Some(section) = self.section("Server processes") else { return Vec::new() };
        section
            .blocks
            .iter()
            .flat_map(|b| match b {
                Block::List(items) => items.iter().filter_map(|i| server_command(i)).collect(),
                _ => Vec::new(),
            })
            .collect()
    }
}

/// `12345: \`target/release/rusher ...\`` → the command.
fn server_command(item: &str) -> Option<&str> {
    let (_, cmd) = item.split_once(": ")?;
    Some(cmd.trim().trim_matches('`'))
}

/// Parses `SETUP.md`. Never fails: lines it does not recognise are kept as text.
pub fn parse(text: &str) -> Setup {
    let mut setup = Setup::default();
    let mut current = Section::default();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if let Some(title) = line.strip_prefix("# ") {
            setup.title = title.trim().to_owned();
        } else if let Some(heading) = line.strip_prefix("## ") {
            let done = std::mem::replace(
                &mut current,
                Section { heading: heading.trim().to_owned(), blocks: Vec::new() },
            );
            push_section(&mut setup, done);
        } else if let Some(fence) = code_fence(line) {
            let mut code = Vec::new();
            for inner in lines.by_ref() {
                if inner.trim_end() == fence {
                    break;
                }
                code.push(inner.to_owned());
            }
            current.blocks.push(Block::Code(code));
        } else if line.starts_with('|') {
            let mut table = vec![line];
            while let Some(next) = lines.next_if(|l| l.starts_with('|')) {
                table.push(next);
            }
            current.blocks.push(parse_table(&table));
        } else if let Some(item) = line.strip_prefix("- ") {
            let mut items = vec![item.to_owned()];
            while let Some(next) = lines.next_if(|l| l.starts_with("- ") || l.starts_with("  ")) {
                match next.strip_prefix("- ") {
                    Some(item) => items.push(item.to_owned()),
                    None => {
                        let last = items.last_mut().expect("a list starts with an item");
                        last.push('\n');
                        last.push_str(next.trim_start());
                    }
                }
            }
            current.blocks.push(Block::List(items));
        } else if !line.trim().is_empty() {
            current.blocks.push(Block::Text(line.trim().to_owned()));
        }
    }
    push_section(&mut setup, current);
    setup
}

fn push_section(setup: &mut Setup, section: Section) {
    if section.heading.is_empty() {
        setup.facts = section;
    } else {
        setup.sections.push(section);
    }
}

/// The fence (three or more backticks) that opens a code block, with any info string removed.
fn code_fence(line: &str) -> Option<&str> {
    let ticks = line.len() - line.trim_start_matches('`').len();
    (ticks >= 3).then(|| &line[..ticks])
}

fn parse_table(lines: &[&str]) -> Block {
    let mut rows: Vec<Vec<String>> = lines.iter().map(|l| split_row(l)).collect();
    // The second line separates the header from the body: `|---|---|`.
    let has_separator = rows
        .get(1)
        .is_some_and(|r| r.iter().all(|c| !c.is_empty() && c.chars().all(|ch| matches!(ch, '-' | ':'))));
    if !has_separator {
        return Block::Table { header: Vec::new(), rows };
    }
    let body = rows.split_off(2);
    let header = rows.swap_remove(0);
    Block::Table { header, rows: body }
}

/// Splits `| a | b \| c |` into `["a", "b | c"]`.
fn split_row(line: &str) -> Vec<String> {
    let inner = line.trim().strip_prefix('|').unwrap_or(line);
    let inner = inner.strip_suffix('|').filter(|s| !s.ends_with('\\')).unwrap_or(inner);
    let mut cells = vec![String::new()];
    let mut chars = inner.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'|') => {
                cells.last_mut().expect("never empty").push('|');
                chars.next();
            }
            '|' => cells.push(String::new()),
            c => cells.last_mut().expect("never empty").push(c),
        }
    }
    cells.iter().map(|c| c.trim().to_owned()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SETUP: &str = "# Setup: 2026-11-28-chat

| | |
|---|---|
| Date (UTC) | 2026-11-28 07:14:46 UTC |
| Kernel | 6.18.44-fc-v782 |
| Commit | 1d0450360e92f08c43a194db094215f44c1668f8 (dirty) |

## Sysctls

| sysctl | value |
|---|---|
| fs.file-max | 2466174 |
| net.ipv4.tcp_mem | 287898 383866 575796 |

## Server processes

- 20567: `target/release/rusher --listen 127.0.0.1:4500 --sqlite-synchronous full --log warn`
- 20568: `target/release/rusher --listen 127.0.0.1:4500`

## Command lines

````text
target/release/rusher-loadgen chat --rooms 500 --note 'a ``` b'
````

## Extra

| key | value |
|---|---|
| geo tenant | a \\| b |

## Notes

- first note
  continued
- second note
";

    #[test]
    fn facts_sections_and_blocks() {
        let s = parse(SETUP);
        assert_eq!(s.title, "Setup: 2026-11-28-chat");
        assert_eq!(s.fact("Kernel"), Some("6.18.44-fc-v782"));
        assert_eq!(s.fact("Commit"), Some("1d0450360e92f08c43a194db094215f44c1668f8 (dirty)"));
        assert_eq!(s.fact("Host"), None);
        let headings: Vec<_> = s.sections.iter().map(|s| s.heading.as_str()).collect();
        assert_eq!(headings, ["Sysctls", "Server processes", "Command lines", "Extra", "Notes"]);

        let Block::Table { header, rows } = &s.section("Sysctls").unwrap().blocks[0] else { panic!() };
        assert_eq!(header, &["sysctl", "value"]);
        assert_eq!(rows[1], ["net.ipv4.tcp_mem", "287898 383866 575796"]);

        let Block::Table { rows, .. } = &s.section("Extra").unwrap().blocks[0] else { panic!() };
        assert_eq!(rows[0], ["geo tenant", "a | b"], "escaped pipes stay inside the cell");

        assert_eq!(
            s.section("Notes").unwrap().blocks,
            [Block::List(vec!["first note\ncontinued".into(), "second note".into()])]
        );
    }

    #[test]
    fn command_lines_and_server_commands() {
        let s = parse(SETUP);
        // A longer fence keeps the backticks inside the command.
        assert_eq!(s.command_lines(), ["target/release/rusher-loadgen chat --rooms 500 --note 'a ``` b'"]);
        assert_eq!(
            s.server_commands(),
            [
                "target/release/rusher --listen 127.0.0.1:4500 --sqlite-synchronous full --log warn",
                "target/release/rusher --listen 127.0.0.1:4500"
            ]
        );
    }

    #[test]
    fn unknown_lines_are_kept_as_text() {
        let s = parse("# Setup: x\n\n## Server processes\n\n(none given)\n");
        assert!(s.server_commands().is_empty());
        assert_eq!(s.section("Server processes").unwrap().blocks, [Block::Text("(none given)".into())]);
        assert!(s.command_lines().is_empty());
    }
}
