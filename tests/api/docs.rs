//! The configuration reference, `docs/configuration.md`, against the built binary's
//! `--help`, so that neither can drift from the other.
//!
//! What `--help` prints, for the binary and every subcommand it lists: the long flags of its
//! option lines and every `GATEWAY_*` variable. Each of those must have a row in one of the
//! reference's tables (a flag in the row's first cell, a variable anywhere in the row); and
//! every flag the reference names (a table row's first cell, or an inline code span that
//! starts with `--`) and every `GATEWAY_*` variable it mentions must be printed by `--help`.
//! Commands are checked too: the reference must show `backup-gateway <command>` for each.
//! Other programs' flags (`cargo install --path .`) are written inside a span that starts
//! with the program's name.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

/// The reference, relative to the repository.
const REFERENCE: &str = "docs/configuration.md";

/// `backup-gateway ARGS --help`, with an empty environment so that clap shows no values
/// taken from it.
fn help(args: &[String]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_backup-gateway"))
        .args(args)
        .arg("--help")
        .env_clear()
        .output()
        .expect("the gateway binary runs");
    assert!(
        out.status.success(),
        "`backup-gateway {} --help` failed: {out:?}",
        args.join(" ")
    );
    String::from_utf8(out.stdout).expect("--help prints UTF-8")
}

/// The subcommands a help text lists under `Commands:`, without clap's own `help`.
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|line| line.trim() != "Commands:")
        .skip(1)
        .take_while(|line| !line.trim().is_empty())
        // A command's line is indented by two; wrapped descriptions by more.
        .filter(|line| line.starts_with("  ") && !line.starts_with("   "))
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_owned)
        .collect()
}

/// The long flags of a help text's option lines (`  -h, --help`, `      --http <HTTP>`),
/// which clap indents by two to six; descriptions, which may mention a flag, by more.
fn option_flags(help: &str) -> BTreeSet<String> {
    help.lines()
        .filter(|line| {
            let body = line.trim_start();
            body.starts_with('-') && line.len() - body.len() <= 6
        })
        .filter_map(|line| {
            line.split_whitespace()
                .find(|word| word.starts_with("--"))
                .map(flag_name)
        })
        .collect()
}

/// `--flag` out of `--flag,` or `--flag=<X>`: the dashes, letters, digits and inner dashes.
fn flag_name(word: &str) -> String {
    let rest = &word[2..];
    let end = rest
        .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'))
        .unwrap_or(rest.len());
    format!("--{}", rest[..end].trim_end_matches('-'))
}

/// Every long flag written in `text` (`--` followed by a lower-case letter).
fn flags_in(text: &str) -> BTreeSet<String> {
    text.match_indices("--")
        .map(|(at, _)| &text[at..])
        .filter(|rest| rest[2..].starts_with(|c: char| c.is_ascii_lowercase()))
        .map(flag_name)
        .collect()
}

/// Every `GATEWAY_*` variable named in `text` (at least one character after the prefix).
fn variables_in(text: &str) -> BTreeSet<String> {
    text.match_indices("GATEWAY_")
        .filter_map(|(at, prefix)| {
            let rest = &text[at + prefix.len()..];
            let end = rest
                .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
                .unwrap_or(rest.len());
            let name = rest[..end].trim_end_matches('_');
            (!name.is_empty()).then(|| format!("GATEWAY_{name}"))
        })
        .collect()
}

/// What `--help` prints over all commands.
struct HelpSurface {
    /// `serve`, `superuser upsert`, ...: every command path, the binary's own excepted.
    commands: BTreeSet<String>,
    flags: BTreeSet<String>,
    variables: BTreeSet<String>,
}

fn help_surface() -> HelpSurface {
    let mut surface = HelpSurface {
        commands: BTreeSet::new(),
        flags: BTreeSet::new(),
        variables: BTreeSet::new(),
    };
    let mut pending: Vec<Vec<String>> = vec![Vec::new()];
    while let Some(path) = pending.pop() {
        let text = help(&path);
        surface.flags.extend(option_flags(&text));
        surface.variables.extend(variables_in(&text));
        for sub in subcommands(&text) {
            let mut child = path.clone();
            child.push(sub);
            surface.commands.insert(child.join(" "));
            pending.push(child);
        }
    }
    // Proof that the help was read as intended, before anything is compared with it.
    for (set, name) in [
        (&surface.commands, "serve"),
        (&surface.commands, "superuser upsert"),
        (&surface.flags, "--http"),
        (&surface.flags, "--log-format"),
        (&surface.variables, "GATEWAY_S3_BUCKET"),
    ] {
        assert!(
            set.contains(name),
            "`{name}` not found in the --help output"
        );
    }
    surface
}

/// The reference, split into what its tables document and what its text names.
struct Reference {
    text: String,
    /// Flags in the first cell of a table row.
    row_flags: BTreeSet<String>,
    /// `GATEWAY_*` variables anywhere in a table row.
    row_variables: BTreeSet<String>,
    /// Flags in a row's first cell or at the start of an inline code span.
    named_flags: BTreeSet<String>,
}

fn reference() -> Reference {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(REFERENCE);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{} cannot be read: {e}", path.display()));
    let rows: Vec<&str> = text.lines().filter(|l| l.starts_with('|')).collect();
    let first_cells: String = rows
        .iter()
        .filter_map(|row| row.split('|').nth(1))
        .collect::<Vec<_>>()
        .join("\n");
    let row_flags = flags_in(&first_cells);
    let row_variables = variables_in(&rows.join("\n"));
    // Inline code spans of the text outside fenced blocks: every other piece between
    // backticks (a span may cross a line break).
    let prose: String = text.split("```").step_by(2).collect::<Vec<_>>().join("\n");
    let mut named_flags = row_flags.clone();
    for span in prose.split('`').skip(1).step_by(2) {
        if span.starts_with("--") {
            named_flags.insert(flag_name(span));
        }
    }
    assert!(
        !row_flags.is_empty() && !row_variables.is_empty(),
        "{REFERENCE} has no table rows with flags and variables"
    );
    Reference {
        text,
        row_flags,
        row_variables,
        named_flags,
    }
}

#[test]
fn the_configuration_reference_has_a_row_for_every_flag_and_variable_of_help() {
    // Arrange
    let surface = help_surface();

    // Act
    let reference = reference();

    // Assert
    let missing_flags: Vec<_> = surface.flags.difference(&reference.row_flags).collect();
    let missing_variables: Vec<_> = surface
        .variables
        .difference(&reference.row_variables)
        .collect();
    let missing_commands: Vec<_> = surface
        .commands
        .iter()
        .filter(|c| !reference.text.contains(&format!("backup-gateway {c}")))
        .collect();
    assert!(
        missing_flags.is_empty() && missing_variables.is_empty() && missing_commands.is_empty(),
        "{REFERENCE} lacks what --help prints: flags without a row {missing_flags:?}, \
         variables without a row {missing_variables:?}, commands not shown {missing_commands:?}"
    );
}

#[test]
fn the_configuration_reference_names_only_flags_and_variables_that_help_prints() {
    // Arrange
    let surface = help_surface();

    // Act
    let reference = reference();

    // Assert
    let unknown_flags: Vec<_> = reference.named_flags.difference(&surface.flags).collect();
    let unknown_variables: Vec<_> = variables_in(&reference.text)
        .into_iter()
        .filter(|v| !surface.variables.contains(v))
        .collect();
    assert!(
        unknown_flags.is_empty() && unknown_variables.is_empty(),
        "{REFERENCE} names what --help does not print: flags {unknown_flags:?}, \
         variables {unknown_variables:?}"
    );
}

/// The readers above, on help lines and text of the shapes clap and the reference use.
#[test]
fn flags_and_variables_are_read_out_of_help_lines_and_text() {
    let help = "Options:\n      --http <HTTP>\n          Address [env: GATEWAY_HTTP=]\n          \
                --exec and --app-stop, wrapped\n      --s3-prefix=<P>  x\n  -h, --help  Print\n";

    assert_eq!(
        option_flags(help),
        BTreeSet::from([
            "--help".to_owned(),
            "--http".to_owned(),
            "--s3-prefix".to_owned()
        ])
    );
    assert_eq!(
        variables_in("`GATEWAY_*` and GATEWAY_HTTP, GATEWAY_S3_BUCKET."),
        BTreeSet::from(["GATEWAY_HTTP".to_owned(), "GATEWAY_S3_BUCKET".to_owned()])
    );
    assert_eq!(
        flags_in("`--app-stop CMD`, `--app-start CMD` -- not --X"),
        BTreeSet::from(["--app-stop".to_owned(), "--app-start".to_owned()])
    );
}
