//! `docgen OUT_DIR`: writes the man pages (`OUT_DIR/man/*.1`, one per command and subcommand)
//! and shell completions (`OUT_DIR/completions/`: bash, zsh, fish) of `swrouter` and `swcache`
//! from the same clap definitions the binaries parse, so the package's documentation cannot
//! drift from the flags.
//!
//! A separate tool rather than a build script (which would run on every build of the
//! binaries) or a hidden subcommand (which would link the generators into the shipped
//! binaries): the packaging script runs it once, from the release build CI already makes.

use anyhow::{Context, Result};
use clap::CommandFactory;
use clap_complete::Shell;
use std::path::{Path, PathBuf};

fn main() -> Result<()> {
    let mut args = std::env::args_os().skip(1);
    let (Some(out), None) = (args.next(), args.next()) else {
        anyhow::bail!("usage: docgen OUT_DIR (writes OUT_DIR/man and OUT_DIR/completions)");
    };
    let out = PathBuf::from(out);
    for cmd in [swrouter::cli::Cli::command(), cache::Args::command()] {
        write_docs(cmd, &out)?;
    }
    Ok(())
}

/// Writes `cmd`'s man pages and completions under `out`.
fn write_docs(mut cmd: clap::Command, out: &Path) -> Result<()> {
    let man = out.join("man");
    let completions = out.join("completions");
    for dir in [&man, &completions] {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    cmd.build();
    write_man(&cmd, &man)?;
    let name = cmd.get_name().to_string();
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut cmd, &name, &completions)
            .with_context(|| format!("writing the {shell} completion of {name}"))?;
    }
    Ok(())
}

/// Writes the page of `cmd` and, recursively, one per subcommand (`swrouter-status.1`, …),
/// skipping clap's generated `help` subcommand.
fn write_man(cmd: &clap::Command, dir: &Path) -> Result<()> {
    let name = cmd
        .get_display_name()
        .unwrap_or_else(|| cmd.get_name())
        .to_string();
    let path = dir.join(format!("{name}.1"));
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd.clone())
        .title(name.to_uppercase())
        .render(&mut page)
        .with_context(|| format!("rendering {}", path.display()))?;
    std::fs::write(&path, page).with_context(|| format!("writing {}", path.display()))?;
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        write_man(sub, dir)?;
    }
    Ok(())
}
