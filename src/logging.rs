//! Log setup shared by every role: text or JSON on stderr, level from `-v`
//! or `RUST_LOG`. A process that hosts several roles (`km local`) can send
//! each role's lines to a file of its own, by the module path the line comes
//! from ([`route`]), or, for several instances of one role, by the span the
//! line is logged in ([`route_span`]).

use std::fs::File;
use std::io::Write;
use std::sync::{Arc, RwLock};

use clap::{Args, ValueEnum};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::registry::LookupSpan as _;
use tracing_subscriber::{EnvFilter, Registry};

/// Global logging flags.
#[derive(Args, Clone, Debug)]
pub struct LogArgs {
    /// Log format.
    #[arg(long, global = true, env = "KM_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// More logs: -v debug, -vv trace (RUST_LOG, when set, wins).
    #[arg(short = 'v', long = "verbose", global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

/// Log formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Where lines go instead of stderr: (target prefix, file), longest
/// prefix first; a prefix of "" takes every line no other one takes.
static ROUTES: RwLock<Vec<(String, Arc<File>)>> = RwLock::new(Vec::new());

/// Sends the lines of targets under `prefix` (a module path such as
/// `km::apiserver`, or "" for every other line) to `file` from now on.
pub fn route(prefix: &str, file: File) {
    let mut routes = ROUTES.write().unwrap_or_else(|e| e.into_inner());
    routes.retain(|(p, _)| p != prefix);
    routes.push((prefix.to_string(), Arc::new(file)));
    routes.sort_by_key(|r| std::cmp::Reverse(r.0.len()));
}

/// Whether `target` lies under the module path `prefix`.
fn under(target: &str, prefix: &str) -> bool {
    prefix.is_empty()
        || target == prefix
        || target
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with("::"))
}

/// The file for lines of `target`, if one is routed.
fn routed(target: &str) -> Option<Arc<File>> {
    let routes = ROUTES.read().unwrap_or_else(|e| e.into_inner());
    routes
        .iter()
        .find(|(p, _)| under(target, p))
        .map(|(_, f)| f.clone())
}

/// The file of a span's lines, kept in the span's extensions.
#[derive(Clone)]
struct SpanRoute(Arc<File>);

/// Sends every line logged inside `span`, whatever its target, to `file`
/// (lines of spawned tasks too, when they carry the span). Needs the global
/// subscriber that [`init`] installs; without it this does nothing.
pub fn route_span(span: &tracing::Span, file: File) {
    SPAN_ROUTES.store(true, std::sync::atomic::Ordering::Relaxed);
    let route = SpanRoute(Arc::new(file));
    span.with_subscriber(|(id, dispatch)| {
        if let Some(span) = dispatch
            .downcast_ref::<Registry>()
            .and_then(|registry| registry.span(id))
        {
            span.extensions_mut().insert(route);
        }
    });
}

/// Whether any span was routed (else lines skip the span lookup).
static SPAN_ROUTES: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The file of the innermost routed span the current line is logged in.
fn span_routed() -> Option<Arc<File>> {
    if !SPAN_ROUTES.load(std::sync::atomic::Ordering::Relaxed) {
        return None;
    }
    tracing::Span::current()
        .with_subscriber(|(id, dispatch)| {
            let span = dispatch.downcast_ref::<Registry>()?.span(id)?;
            span.scope()
                .find_map(|s| s.extensions().get::<SpanRoute>().map(|r| r.0.clone()))
        })
        .flatten()
}

/// Writers by span or target: a routed file, else stderr.
struct Routed;

/// One line's destination.
pub enum Sink {
    /// A routed file (opened for appending: each line is one write).
    File(Arc<File>),
    /// The process's stderr.
    Stderr(std::io::Stderr),
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Sink::File(f) => (&**f).write(buf),
            Sink::Stderr(e) => e.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Sink::File(f) => (&**f).flush(),
            Sink::Stderr(e) => e.flush(),
        }
    }
}

impl<'a> MakeWriter<'a> for Routed {
    type Writer = Sink;
    fn make_writer(&'a self) -> Sink {
        Sink::Stderr(std::io::stderr())
    }
    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Sink {
        match span_routed().or_else(|| routed(meta.target())) {
            Some(f) => Sink::File(f),
            None => Sink::Stderr(std::io::stderr()),
        }
    }
}

/// Installs the global subscriber. Call once, from `main`.
pub fn init(args: &LogArgs) {
    init_with(args, true)
}

/// [`init`], with colours only where `colours` allows them and stderr is a
/// terminal (a process that routes lines to files passes false).
pub fn init_with(args: &LogArgs, colours: bool) {
    let default = match args.verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(Routed)
        .with_ansi(colours && std::io::stderr().is_terminal());
    let _ = match args.log_format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// A lighter subscriber for a process that logs a few lines and lives long
/// (the executor's supervisor): info and above on stderr, no `RUST_LOG`
/// filter, no routing. Every page of code a process touches stays resident
/// for its lifetime, so this one stays small.
pub fn init_plain(format: LogFormat) {
    let builder = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_writer(std::io::stderr)
        .with_ansi(false);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_match_whole_module_path_segments() {
        assert!(under("km::apiserver", "km::apiserver"));
        assert!(under("km::apiserver::rest", "km::apiserver"));
        assert!(!under("km::apiservers", "km::apiserver"));
        assert!(under("hyper::client", ""));
    }

    #[test]
    fn the_longest_routed_prefix_wins() {
        let dir = tempfile::tempdir().unwrap();
        let open = |n: &str| File::create(dir.path().join(n)).unwrap();
        route("km::logging_test_route", open("a"));
        route("km::logging_test_route::inner", open("b"));
        let mut a = Sink::File(routed("km::logging_test_route::x").unwrap());
        let mut b = Sink::File(routed("km::logging_test_route::inner::y").unwrap());
        a.write_all(b"to a\n").unwrap();
        b.write_all(b"to b\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("a")).unwrap(),
            "to a\n"
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("b")).unwrap(),
            "to b\n"
        );
        ROUTES
            .write()
            .unwrap()
            .retain(|(p, _)| !p.starts_with("km::logging_test_route"));
    }
}
