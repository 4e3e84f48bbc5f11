//! Running the kernel's command-line tools (`nft`, `iptables`,
//! `conntrack`): their input on stdin, their stdout back, their stderr in
//! the error.

use std::process::Stdio;

use tokio::io::AsyncWriteExt;

/// Why a tool could not do its job.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The program could not be started (not installed?) or fed.
    #[error("cannot run {program}: {source}")]
    Spawn {
        /// `nft`, `iptables`, ...
        program: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The program ran and failed.
    #[error("{program} failed ({status}): {stderr}")]
    Failed {
        /// `nft`, `iptables`, ...
        program: &'static str,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// What it printed on stderr.
        stderr: String,
    },
}

impl Error {
    /// Whether the program is missing (rather than failing).
    pub fn is_missing(&self) -> bool {
        matches!(self, Error::Spawn { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }
}

/// Runs `program args`, writing `stdin` to it; returns what it printed on stdout.
pub async fn run(
    program: &'static str,
    args: &[&str],
    stdin: Option<&str>,
) -> Result<String, Error> {
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| Error::Spawn { program, source })?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // Fed while stdout and stderr are read, so a chatty program cannot
        // block on a full pipe while we block on its stdin.
        let feed = async move {
            pipe.write_all(text.as_bytes()).await?;
            pipe.shutdown().await
        };
        let (fed, out) = tokio::join!(feed, child.wait_with_output());
        let out = out.map_err(|source| Error::Spawn { program, source })?;
        // A program that exits early (a parse error) closes its stdin:
        // its status and stderr say more than the broken pipe.
        return match (finish(program, out), fed) {
            (Ok(_), Err(source)) => Err(Error::Spawn { program, source }),
            (r, _) => r,
        };
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|source| Error::Spawn { program, source })?;
    finish(program, out)
}

fn finish(program: &'static str, out: std::process::Output) -> Result<String, Error> {
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(Error::Failed {
            program,
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_missing_program_is_a_spawn_error() {
        let e = run("km-no-such-program", &[], None).await.unwrap_err();
        assert!(e.is_missing(), "{e}");
        assert!(
            e.to_string().starts_with("cannot run km-no-such-program"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn stdin_in_stdout_out_stderr_in_the_error() {
        let out = run("cat", &[], Some("hello\n")).await.unwrap();
        assert_eq!(out, "hello\n");
        let e = run("sh", &["-c", "echo oops >&2; exit 3"], None)
            .await
            .unwrap_err();
        assert!(!e.is_missing());
        assert!(e.to_string().ends_with(": oops"), "{e}");
    }
}
