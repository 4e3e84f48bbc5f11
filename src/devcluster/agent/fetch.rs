//! The fetcher: puts `CommandInfo.uris` into a sandbox before the command
//! starts, like the Mesos fetcher without its cache.
//!
//! * `file:///path` and plain paths are copied; `http://` and `https://` are
//!   downloaded. Other schemes fail the launch.
//! * The file is named `output_file` if given (a relative path inside the
//!   sandbox), else the last segment of the URI.
//! * `executable` makes it mode 0755 and is never extracted; otherwise
//!   `extract` (default true) unpacks `.tar`, `.tar.gz`/`.tgz`,
//!   `.tar.bz2`/`.tbz2`, `.tar.xz`/`.txz` with `tar` and `.zip` with `unzip`
//!   into the sandbox.

use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use futures::StreamExt;
use tokio::io::AsyncWriteExt;

use crate::mesos::proto::v1::command_info::Uri;

/// One URI could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The scheme is neither file nor http(s).
    #[error(
        "cannot fetch {uri:?}: unsupported scheme (use file://, http://, https:// or a plain path)"
    )]
    Scheme {
        /// The URI.
        uri: String,
    },
    /// The destination name is unusable.
    #[error("cannot fetch {uri:?}: output file {name:?} is not a relative path inside the sandbox")]
    Destination {
        /// The URI.
        uri: String,
        /// The chosen file name.
        name: String,
    },
    /// Reading, writing or copying failed.
    #[error("cannot fetch {uri:?}: {what}")]
    Io {
        /// The URI.
        uri: String,
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP download failed.
    #[error("cannot download {uri:?}")]
    Http {
        /// The URI.
        uri: String,
        /// The cause.
        #[source]
        source: reqwest::Error,
    },
    /// The server answered with an error status.
    #[error("cannot download {uri:?}: HTTP {status}")]
    Status {
        /// The URI.
        uri: String,
        /// The status code.
        status: u16,
    },
    /// `tar` or `unzip` failed.
    #[error("cannot extract {file}: {tool} exited with {status}: {stderr}")]
    Extract {
        /// The archive.
        file: String,
        /// The tool.
        tool: &'static str,
        /// Its exit status.
        status: String,
        /// What it printed.
        stderr: String,
    },
}

/// Fetches every URI into `sandbox`, in order; the first failure stops.
pub async fn fetch_all(
    uris: &[Uri],
    sandbox: &Path,
    http: &reqwest::Client,
) -> Result<(), FetchError> {
    for uri in uris {
        fetch_one(uri, sandbox, http).await?;
    }
    Ok(())
}

enum Source {
    Path(PathBuf),
    Http(String),
}

fn source(uri: &str) -> Result<Source, FetchError> {
    if let Some(path) = uri.strip_prefix("file://") {
        return Ok(Source::Path(PathBuf::from(path)));
    }
    if uri.starts_with("http://") || uri.starts_with("https://") {
        return Ok(Source::Http(uri.to_owned()));
    }
    if uri.contains("://") {
        return Err(FetchError::Scheme {
            uri: uri.to_owned(),
        });
    }
    Ok(Source::Path(PathBuf::from(uri)))
}

/// The file name a URI lands under: `output_file`, else its last segment
/// without query or fragment.
fn destination(uri: &Uri, sandbox: &Path) -> Result<PathBuf, FetchError> {
    let name = match uri.output_file.as_deref().filter(|s| !s.is_empty()) {
        Some(out) => out.to_owned(),
        None => {
            let no_query = uri.value.split(['?', '#']).next().unwrap_or_default();
            no_query
                .trim_end_matches('/')
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .to_owned()
        }
    };
    let rel = Path::new(&name);
    let safe = !name.is_empty()
        && rel
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    if !safe {
        return Err(FetchError::Destination {
            uri: uri.value.clone(),
            name,
        });
    }
    Ok(sandbox.join(rel))
}

async fn fetch_one(uri: &Uri, sandbox: &Path, http: &reqwest::Client) -> Result<(), FetchError> {
    let dest = destination(uri, sandbox)?;
    let io = |what: String| {
        let uri = uri.value.clone();
        move |source| FetchError::Io { uri, what, source }
    };
    if let Some(parent) = dest.parent() {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(io(format!("creating {}", parent.display())))?;
    }
    match source(&uri.value)? {
        Source::Path(p) => {
            tokio::fs::copy(&p, &dest).await.map_err(io(format!(
                "copying {} to {}",
                p.display(),
                dest.display()
            )))?;
        }
        Source::Http(url) => download(&url, &dest, http).await?,
    }
    tracing::debug!(uri = %uri.value, file = %dest.display(), "fetched");
    if uri.executable == Some(true) {
        tokio::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o755))
            .await
            .map_err(io(format!("making {} executable", dest.display())))?;
    } else if uri.extract() {
        extract(&dest, sandbox).await?;
    }
    Ok(())
}

async fn download(url: &str, dest: &Path, http: &reqwest::Client) -> Result<(), FetchError> {
    let err = |source| FetchError::Http {
        uri: url.to_owned(),
        source,
    };
    let resp = http.get(url).send().await.map_err(err)?;
    if !resp.status().is_success() {
        return Err(FetchError::Status {
            uri: url.to_owned(),
            status: resp.status().as_u16(),
        });
    }
    let io = |what: &str| {
        let (uri, what) = (url.to_owned(), format!("{what} {}", dest.display()));
        move |source| FetchError::Io { uri, what, source }
    };
    let mut file = tokio::fs::File::create(dest)
        .await
        .map_err(io("creating"))?;
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        file.write_all(&chunk.map_err(err)?)
            .await
            .map_err(io("writing"))?;
    }
    file.flush().await.map_err(io("writing"))?;
    Ok(())
}

/// The extractor for an archive name, if it is one.
fn archive_tool(name: &str) -> Option<&'static str> {
    const TAR: &[&str] = &[
        ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz",
    ];
    if TAR.iter().any(|s| name.ends_with(s)) {
        Some("tar")
    } else if name.ends_with(".zip") {
        Some("unzip")
    } else {
        None
    }
}

async fn extract(file: &Path, sandbox: &Path) -> Result<(), FetchError> {
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let Some(tool) = archive_tool(&name) else {
        return Ok(());
    };
    let mut cmd = tokio::process::Command::new(tool);
    if tool == "tar" {
        cmd.arg("-C").arg(sandbox).arg("-xf").arg(file);
    } else {
        cmd.arg("-o").arg("-q").arg(file).arg("-d").arg(sandbox);
    }
    let out = cmd.output().await.map_err(|source| FetchError::Io {
        uri: file.display().to_string(),
        what: format!("running {tool}"),
        source,
    })?;
    if !out.status.success() {
        return Err(FetchError::Extract {
            file: file.display().to_string(),
            tool,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(value: &str) -> Uri {
        Uri {
            value: value.into(),
            ..Default::default()
        }
    }

    #[test]
    fn destinations() {
        let s = Path::new("/sb");
        assert_eq!(
            destination(&uri("http://h/a/km?x=1"), s).unwrap(),
            Path::new("/sb/km")
        );
        assert_eq!(
            destination(&uri("file:///opt/x.tgz"), s).unwrap(),
            Path::new("/sb/x.tgz")
        );
        let mut u = uri("http://h/a");
        u.output_file = Some("bin/tool".into());
        assert_eq!(destination(&u, s).unwrap(), Path::new("/sb/bin/tool"));
        u.output_file = Some("../escape".into());
        assert!(destination(&u, s).is_err());
        u.output_file = Some("/abs".into());
        assert!(destination(&u, s).is_err());
        assert!(matches!(
            source("hdfs://x/y"),
            Err(FetchError::Scheme { .. })
        ));
    }

    #[test]
    fn archive_names() {
        assert_eq!(archive_tool("a.tar.gz"), Some("tar"));
        assert_eq!(archive_tool("a.tgz"), Some("tar"));
        assert_eq!(archive_tool("a.zip"), Some("unzip"));
        assert_eq!(archive_tool("a.gz"), None);
        assert_eq!(archive_tool("km"), None);
    }

    #[tokio::test]
    async fn copies_marks_executable_and_extracts() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir(&src).unwrap();
        std::fs::write(src.join("tool"), "#!/bin/sh\necho hi\n").unwrap();
        std::fs::write(src.join("inner.txt"), "inside").unwrap();
        let tar = src.join("bundle.tar.gz");
        let st = std::process::Command::new("tar")
            .arg("-C")
            .arg(&src)
            .arg("-czf")
            .arg(&tar)
            .arg("inner.txt")
            .status()
            .unwrap();
        assert!(st.success());
        let sandbox = dir.path().join("sandbox");
        std::fs::create_dir(&sandbox).unwrap();
        let mut exe = uri(&format!("file://{}", src.join("tool").display()));
        exe.executable = Some(true);
        let archive = uri(tar.to_str().unwrap());
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::new();
        fetch_all(&[exe, archive], &sandbox, &http).await.unwrap();
        let mode = std::fs::metadata(sandbox.join("tool"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
        assert_eq!(
            std::fs::read_to_string(sandbox.join("inner.txt")).unwrap(),
            "inside"
        );
        let missing = uri("/nonexistent/file");
        let e = fetch_all(&[missing], &sandbox, &http).await.unwrap_err();
        assert!(e.to_string().contains("/nonexistent/file"), "{e}");
    }
}
