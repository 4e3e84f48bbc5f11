//! Shell completions (`km completion SHELL`) and manual pages (`km man
//! --out-dir DIR`) generated from km's own command-line definition, so
//! that they always list the flags, defaults and environment variables
//! the binary really has. The Debian package ships both.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Command;

pub use clap_complete::Shell;

/// Flags of `km completion`.
#[derive(clap::Args, Debug)]
#[command(after_long_help = "Examples:\n  \
    source <(km completion bash)\n  \
    km completion zsh > \"${fpath[1]}/_km\"\n  \
    km completion fish > ~/.config/fish/completions/km.fish")]
pub struct CompletionArgs {
    /// Shell to write the completion script for.
    #[arg(value_enum)]
    pub shell: Shell,
}

/// Flags of `km man` (hidden: the package build uses it).
#[derive(clap::Args, Debug)]
pub struct ManArgs {
    /// Directory the pages km.1 and km-ROLE.1 are written to (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out_dir: PathBuf,
}

/// A manual page could not be rendered or written.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct ManError {
    /// The file or directory being written.
    pub path: PathBuf,
    /// The cause.
    #[source]
    pub source: std::io::Error,
}

/// The completion script of `cmd` (whose binary is named `cmd.get_name()`)
/// for `shell`. Hidden subcommands are left out (the generators would offer
/// them).
pub fn completion_script(shell: Shell, cmd: Command) -> Vec<u8> {
    let name = cmd.get_name().to_owned();
    let mut visible = Command::new(name.clone())
        .disable_help_subcommand(cmd.is_disable_help_subcommand_set())
        .args(cmd.get_arguments().cloned())
        .subcommands(cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned());
    if let Some(version) = cmd.get_version() {
        visible = visible.version(version.to_string());
    }
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut visible, name, &mut script);
    script
}

/// Writes one manual page (section 1) for `cmd` and one for each of its
/// visible subcommands (`<name>-<subcommand>.1`, recursively) into `dir`.
/// Returns the files written, the top-level page first.
pub fn write_man_pages(cmd: Command, dir: &Path) -> Result<Vec<PathBuf>, ManError> {
    std::fs::create_dir_all(dir).map_err(|source| ManError {
        path: dir.to_owned(),
        source,
    })?;
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    let source = format!(
        "{} {}",
        cmd.get_name(),
        cmd.get_version().unwrap_or_default()
    );
    let mut pages = Vec::new();
    let mut todo = vec![cmd];
    while let Some(cmd) = todo.pop() {
        let subs: Vec<Command> = cmd
            .get_subcommands()
            .filter(|s| !s.is_hide_set())
            .cloned()
            .collect();
        let man = clap_mangen::Man::new(cmd)
            .source(source.trim_end())
            .manual("km manual");
        let path = dir.join(man.get_filename());
        let mut page = Vec::new();
        man.render(&mut page)
            .and_then(|()| std::fs::write(&path, &page))
            .map_err(|source| ManError {
                path: path.clone(),
                source,
            })?;
        pages.push(path);
        todo.extend(subs.into_iter().rev());
    }
    Ok(pages)
}

/// `km completion SHELL`: prints the completion script on stdout.
pub fn completion(args: CompletionArgs, cmd: Command) -> anyhow::Result<ExitCode> {
    let script = completion_script(args.shell, cmd);
    let mut out = std::io::stdout().lock();
    out.write_all(&script)
        .and_then(|()| out.flush())
        .context("writing the completion script to stdout")?;
    Ok(ExitCode::SUCCESS)
}

/// `km man --out-dir DIR`: writes the manual pages and names each on stdout.
pub fn man(args: ManArgs, cmd: Command) -> anyhow::Result<ExitCode> {
    for page in write_man_pages(cmd, &args.out_dir)? {
        println!("{}", page.display());
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Arg, ArgAction};

    fn toy() -> Command {
        Command::new("toy")
            .version("1.2.3")
            .subcommand(
                Command::new("serve").about("Serve things").arg(
                    Arg::new("port")
                        .long("port")
                        .env("TOY_PORT")
                        .default_value("8080")
                        .help("Port to listen on"),
                ),
            )
            .subcommand(
                Command::new("secret")
                    .hide(true)
                    .arg(Arg::new("x").long("x").action(ArgAction::SetTrue)),
            )
    }

    #[test]
    fn one_page_per_visible_subcommand_with_flags_and_env() {
        let dir = tempfile::tempdir().unwrap();
        let pages = write_man_pages(toy(), &dir.path().join("man1")).unwrap();
        let names: Vec<String> = pages
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["toy.1", "toy-serve.1"]);
        let serve = std::fs::read_to_string(&pages[1]).unwrap();
        assert!(serve.contains(".TH toy-serve 1"), "{serve}");
        assert!(serve.contains("port"), "{serve}");
        assert!(serve.contains("TOY_PORT"), "{serve}");
        assert!(serve.contains("toy 1.2.3"), "{serve}");
        let top = std::fs::read_to_string(&pages[0]).unwrap();
        assert!(top.contains("toy\\-serve(1)"), "{top}");
        assert!(!top.contains("secret"), "{top}");
    }

    #[test]
    fn unwritable_directory_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, "").unwrap();
        let err = write_man_pages(toy(), &file.join("man1")).unwrap_err();
        assert_eq!(err.path, file.join("man1"));
    }

    #[test]
    fn completion_scripts_name_the_visible_subcommands_and_their_flags() {
        for (shell, port) in [
            (Shell::Bash, "--port"),
            (Shell::Zsh, "--port"),
            (Shell::Fish, "-l port"),
        ] {
            let script = String::from_utf8(completion_script(shell, toy())).unwrap();
            assert!(script.contains("serve"), "{shell}: {script}");
            assert!(script.contains(port), "{shell}: {script}");
            assert!(!script.contains("secret"), "{shell}: {script}");
        }
    }
}
