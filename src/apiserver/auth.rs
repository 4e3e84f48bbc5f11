//! Bearer-token authentication for `km apiserver`.
//!
//! Tokens come from a file in kube-apiserver's `--token-auth-file` CSV format (see [`TokenFile`]) and/or
//! the generated admin token ([`ensure_admin_token`]). [`layer`] turns a [`TokenFile`] into a tower
//! layer that authenticates every request:
//!
//! ```text
//! let tokens = Arc::new(TokenFile::load(path)?);
//! let app = Router::new().route(...).layer(auth::layer(tokens));
//! ```
//!
//! Mount it with `Router::layer` (not `route_layer`) so that unknown paths are also refused to
//! unauthenticated clients, as kube-apiserver does. Handlers read the caller with
//! `Extension<UserInfo>`.

use std::fs;
use std::future::Future;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::http::{HeaderValue, Method, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde::Serialize;

/// Name kube-apiserver gives requests without credentials.
pub const ANONYMOUS_USER: &str = "system:anonymous";
/// Group of every anonymous request.
pub const UNAUTHENTICATED_GROUP: &str = "system:unauthenticated";
/// Group added to every authenticated user.
pub const AUTHENTICATED_GROUP: &str = "system:authenticated";
/// Group that RBAC's `cluster-admin` binding grants everything to.
pub const MASTERS_GROUP: &str = "system:masters";
/// File name of the generated admin token inside the state directory.
pub const ADMIN_TOKEN_FILE: &str = "admin-token";
/// User name [`UserInfo::admin`] authenticates as.
pub const ADMIN_USER: &str = "km-admin";

/// Paths that upstream's `system:public-info-viewer` ClusterRole lets `system:unauthenticated` GET.
const PUBLIC_PATHS: [&str; 5] = ["/healthz", "/livez", "/readyz", "/version", "/version/"];

/// Errors from loading tokens.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The token file could not be read.
    #[error("token file '{path}': {source}")]
    Read {
        /// The token file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The token file is not valid CSV (Go `encoding/csv` rules, as kube-apiserver reads it).
    #[error("token file '{path}': {}parse error on line {line}, column {column}: {message}", record_prefix(*.record_line, *.line))]
    Csv {
        /// The token file.
        path: PathBuf,
        /// Line where the offending record starts.
        record_line: usize,
        /// Line of the error (1-based).
        line: usize,
        /// Byte column of the error (1-based).
        column: usize,
        /// What is wrong.
        message: &'static str,
    },
    /// A record has fewer than the three mandatory columns.
    #[error(
        "token file '{path}' must have at least 3 columns (token, user name, user uid), found {found} (line {line})"
    )]
    Columns {
        /// The token file.
        path: PathBuf,
        /// Line where the record starts (1-based).
        line: usize,
        /// How many columns it has.
        found: usize,
    },
    /// The admin token file could not be read or written.
    #[error("admin token '{path}': {source}")]
    AdminToken {
        /// The admin token file (or its directory).
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The system random number generator failed.
    #[error("no secure random numbers available to generate a token")]
    Random,
}

fn record_prefix(record_line: usize, line: usize) -> String {
    if record_line == line {
        String::new()
    } else {
        format!("record on line {record_line}; ")
    }
}

/// The identity a request was authenticated as (upstream `user.Info`, without extra attributes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserInfo {
    /// User name.
    pub name: String,
    /// User uid.
    pub uid: String,
    /// Groups, in file order; [`TokenFile::authenticate`] appends `system:authenticated`.
    pub groups: Vec<String>,
}

impl UserInfo {
    /// The identity of requests without credentials: `system:anonymous` in `system:unauthenticated`.
    pub fn anonymous() -> Self {
        UserInfo {
            name: ANONYMOUS_USER.to_string(),
            uid: String::new(),
            groups: vec![UNAUTHENTICATED_GROUP.to_string()],
        }
    }

    /// The identity km gives its generated admin token: `km-admin` in `system:masters`.
    pub fn admin() -> Self {
        UserInfo {
            name: ADMIN_USER.to_string(),
            uid: ADMIN_USER.to_string(),
            groups: vec![MASTERS_GROUP.to_string()],
        }
    }

    /// Whether this is the anonymous identity.
    pub fn is_anonymous(&self) -> bool {
        self.name == ANONYMOUS_USER
    }
}

/// Static bearer tokens, as read by kube-apiserver's `--token-auth-file`.
///
/// Format: CSV records `token,user,uid[,"group1,group2"]`, read with Go `encoding/csv` rules: fields may
/// be double-quoted (`""` is a literal quote, quoted fields may contain commas and newlines), a `"`
/// inside an unquoted field is an error, completely empty lines are skipped, there is no comment syntax
/// (a line starting with `#` is an ordinary record) and no whitespace trimming. Columns beyond the fourth
/// are ignored; the fourth is split on `,` into groups. Records with an empty token are skipped, and for
/// a repeated token the last record wins (both with a warning, like upstream).
#[derive(Clone, Default)]
pub struct TokenFile {
    entries: Vec<(Vec<u8>, UserInfo)>,
}

impl std::fmt::Debug for TokenFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let users: Vec<&str> = self.entries.iter().map(|(_, u)| u.name.as_str()).collect();
        f.debug_struct("TokenFile").field("users", &users).finish()
    }
}

/// What the `Authorization` header of a request amounts to.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Credentials {
    /// No bearer token (no header, another scheme, or an empty token): the request is anonymous.
    Absent,
    /// A bearer token that matches no entry.
    Invalid,
    /// A valid bearer token.
    Valid(UserInfo),
}

impl TokenFile {
    /// Reads a token file. Errors name the file and the line.
    pub fn load(path: &Path) -> Result<Self, AuthError> {
        let bytes = fs::read(path).map_err(|source| AuthError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let text = String::from_utf8(bytes).map_err(|_| AuthError::Read {
            path: path.to_path_buf(),
            source: io::Error::new(io::ErrorKind::InvalidData, "not valid UTF-8"),
        })?;
        Self::parse(path, &text)
    }

    /// Parses token file content; `path` is only used in messages.
    pub fn parse(path: &Path, text: &str) -> Result<Self, AuthError> {
        let records = read_csv(text).map_err(|err| AuthError::Csv {
            path: path.to_path_buf(),
            record_line: err.record_line,
            line: err.line,
            column: err.column,
            message: err.message,
        })?;
        let mut tokens = TokenFile::default();
        for (record_number, (line, mut fields)) in records.into_iter().enumerate() {
            if fields.len() < 3 {
                return Err(AuthError::Columns {
                    path: path.to_path_buf(),
                    line,
                    found: fields.len(),
                });
            }
            let record_number = record_number + 1;
            if fields[0].is_empty() {
                tracing::warn!(path = %path.display(), record_number, line, "empty token in token file; record ignored");
                continue;
            }
            let groups = match fields.get(3) {
                Some(groups) => groups.split(',').map(str::to_string).collect(),
                None => Vec::new(),
            };
            fields.truncate(3);
            let uid = fields.pop().unwrap_or_default();
            let name = fields.pop().unwrap_or_default();
            let token = fields.pop().unwrap_or_default();
            if tokens.insert(token, UserInfo { name, uid, groups }) {
                tracing::warn!(path = %path.display(), record_number, line, "duplicate token in token file; the later record wins");
            }
        }
        Ok(tokens)
    }

    /// Builds a token table from `(token, user)` pairs; a repeated token keeps the last user.
    pub fn from_entries(entries: impl IntoIterator<Item = (String, UserInfo)>) -> Self {
        let mut tokens = TokenFile::default();
        for (token, user) in entries {
            tokens.insert(token, user);
        }
        tokens
    }

    /// Adds or replaces a token; returns whether it replaced an existing one. Empty tokens are ignored.
    pub fn insert(&mut self, token: String, user: UserInfo) -> bool {
        if token.is_empty() {
            return false;
        }
        let token = token.into_bytes();
        if let Some(entry) = self.entries.iter_mut().find(|(t, _)| *t == token) {
            entry.1 = user;
            return true;
        }
        self.entries.push((token, user));
        false
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no tokens.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Authenticates an `Authorization` header value (`Bearer <token>`, scheme case-insensitive).
    ///
    /// Returns the user with `system:authenticated` added to its groups, or `None` when the header is
    /// absent, not a bearer token, or the token is unknown.
    pub fn authenticate(&self, authorization_header: Option<&str>) -> Option<UserInfo> {
        match self.credentials(authorization_header) {
            Credentials::Valid(user) => Some(user),
            Credentials::Absent | Credentials::Invalid => None,
        }
    }

    /// Looks a raw token up, comparing against every entry in constant time.
    pub fn authenticate_token(&self, token: &str) -> Option<UserInfo> {
        let presented = token.as_bytes();
        let mut found: Option<&UserInfo> = None;
        for (candidate, user) in &self.entries {
            // Every entry is compared, so the time taken does not reveal which one matched.
            if constant_time_eq(candidate, presented) {
                found = Some(user);
            }
        }
        found.map(|user| {
            let mut user = user.clone();
            if !user.groups.iter().any(|g| g == AUTHENTICATED_GROUP) {
                user.groups.push(AUTHENTICATED_GROUP.to_string());
            }
            user
        })
    }

    /// Classifies a header the way upstream's bearer-token authenticator does: the value is trimmed and
    /// split on single spaces; the first part must be `bearer` (any case) and the second is the token.
    fn credentials(&self, authorization_header: Option<&str>) -> Credentials {
        let Some(value) = authorization_header
            .map(str::trim)
            .filter(|v| !v.is_empty())
        else {
            return Credentials::Absent;
        };
        let mut parts = value.splitn(3, ' ');
        let scheme = parts.next().unwrap_or_default();
        let Some(token) = parts.next() else {
            return Credentials::Absent;
        };
        if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
            return Credentials::Absent;
        }
        match self.authenticate_token(token) {
            Some(user) => Credentials::Valid(user),
            None => Credentials::Invalid,
        }
    }
}

/// Compares two byte strings without data-dependent early exit (only the lengths leak).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let difference = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(difference) == 0
}

/// A CSV syntax error, positions 1-based.
#[derive(Debug, PartialEq, Eq)]
struct CsvError {
    record_line: usize,
    line: usize,
    column: usize,
    message: &'static str,
}

const BARE_QUOTE: &str = "bare \" in non-quoted-field";
const QUOTE: &str = "extraneous or missing \" in quoted-field";

/// Reads comma-separated records with Go `encoding/csv` defaults (no comments, no lazy quotes, no
/// trimming, variable field count). Returns each record with the line it starts on.
fn read_csv(text: &str) -> Result<Vec<(usize, Vec<String>)>, CsvError> {
    // Lines without their terminator; "\r\n" counts as "\n" and a final "\r" is dropped.
    let mut lines: Vec<&str> = text.split('\n').collect();
    if text.ends_with('\n') || text.is_empty() {
        lines.pop();
    }
    let lines: Vec<&str> = lines
        .into_iter()
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .collect();

    let mut records = Vec::new();
    let mut index = 0;
    while index < lines.len() {
        if lines[index].is_empty() {
            index += 1;
            continue;
        }
        let record_line = index + 1;
        let mut fields = Vec::new();
        let mut line = lines[index];
        let mut pos = 0;
        'record: loop {
            if line.as_bytes().get(pos) == Some(&b'"') {
                pos += 1;
                let mut field = String::new();
                loop {
                    match line[pos..].find('"') {
                        Some(offset) => {
                            field.push_str(&line[pos..pos + offset]);
                            pos += offset + 1;
                            match line.as_bytes().get(pos) {
                                Some(b'"') => {
                                    field.push('"');
                                    pos += 1;
                                }
                                Some(b',') => {
                                    fields.push(field);
                                    pos += 1;
                                    continue 'record;
                                }
                                None => {
                                    fields.push(field);
                                    break 'record;
                                }
                                Some(_) => {
                                    // Go reports the closing quote: its 1-based column is `pos`.
                                    return Err(CsvError {
                                        record_line,
                                        line: index + 1,
                                        column: pos,
                                        message: QUOTE,
                                    });
                                }
                            }
                        }
                        None => {
                            // The quoted field continues on the next line.
                            field.push_str(&line[pos..]);
                            field.push('\n');
                            index += 1;
                            let Some(next) = lines.get(index) else {
                                // Go points just past the last line, counting its newline.
                                return Err(CsvError {
                                    record_line,
                                    line: index,
                                    column: line.len() + 1 + usize::from(text.ends_with('\n')),
                                    message: QUOTE,
                                });
                            };
                            line = next;
                            pos = 0;
                        }
                    }
                }
            } else {
                let end = line[pos..]
                    .find(',')
                    .map_or(line.len(), |offset| pos + offset);
                let field = &line[pos..end];
                if let Some(quote) = field.find('"') {
                    return Err(CsvError {
                        record_line,
                        line: index + 1,
                        column: pos + quote + 1,
                        message: BARE_QUOTE,
                    });
                }
                fields.push(field.to_string());
                if end == line.len() {
                    break 'record;
                }
                pos = end + 1;
            }
        }
        records.push((record_line, fields));
        index += 1;
    }
    Ok(records)
}

/// Returns the admin token stored in `dir/admin-token`, generating it on first use (32 random bytes,
/// base64url without padding, file mode 0600, directory created 0700). An existing file whose mode lets
/// others read it is tightened to 0600; an empty one is regenerated.
pub fn ensure_admin_token(dir: &Path) -> Result<String, AuthError> {
    let path = dir.join(ADMIN_TOKEN_FILE);
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| AuthError::AdminToken { path, source }
    };
    match fs::read_to_string(&path) {
        Ok(text) => {
            let token = text.trim();
            if !token.is_empty() {
                let mode = fs::metadata(&path)
                    .map_err(io_err(&path))?
                    .permissions()
                    .mode();
                if mode & 0o077 != 0 {
                    tracing::warn!(path = %path.display(), mode = format!("{:o}", mode & 0o777), "admin token readable by others; setting mode 0600");
                    fs::set_permissions(&path, fs::Permissions::from_mode(0o600))
                        .map_err(io_err(&path))?;
                }
                return Ok(token.to_string());
            }
            tracing::warn!(path = %path.display(), "admin token file is empty; generating a new token");
        }
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(source) => return Err(AuthError::AdminToken { path, source }),
    }

    let mut secret = [0u8; 32];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut secret)
        .map_err(|_| AuthError::Random)?;
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret);
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_err(dir))?;
    super::files::write_atomic(&path, format!("{token}\n").as_bytes(), 0o600)
        .map_err(io_err(&path))?;
    tracing::info!(path = %path.display(), "generated admin token");
    Ok(token)
}

/// The 401 kube-apiserver answers unauthenticated requests with.
pub fn unauthorized_response() -> Response {
    let body = serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": "Unauthorized",
        "reason": "Unauthorized",
        "code": 401
    });
    (
        StatusCode::UNAUTHORIZED,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body.to_string(),
    )
        .into_response()
}

/// Whether an anonymous request may pass: a GET of one of the public health/version paths.
fn anonymous_allowed<B>(request: &Request<B>) -> bool {
    (request.method() == Method::GET || request.method() == Method::HEAD)
        && PUBLIC_PATHS.contains(&request.uri().path())
}

/// Authentication middleware as a tower layer; see the module docs for mounting.
///
/// A valid bearer token puts its [`UserInfo`] into the request extensions and strips the
/// `Authorization` header. A request without a bearer token gets [`UserInfo::anonymous`] when it is a
/// GET/HEAD of `/healthz`, `/livez`, `/readyz` or `/version`, and a 401 Status otherwise. An invalid
/// token is always refused with 401, public paths included (as upstream: a failed authenticator is not
/// retried as anonymous).
pub fn layer(tokens: Arc<TokenFile>) -> AuthLayer {
    AuthLayer { tokens }
}

/// Tower layer produced by [`layer`].
#[derive(Clone, Debug)]
pub struct AuthLayer {
    tokens: Arc<TokenFile>,
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            tokens: self.tokens.clone(),
        }
    }
}

/// Service wrapper produced by [`AuthLayer`].
#[derive(Clone, Debug)]
pub struct AuthService<S> {
    inner: S,
    tokens: Arc<TokenFile>,
}

impl<S, B> tower::Service<Request<B>> for AuthService<S>
where
    S: tower::Service<Request<B>, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let credentials = match request.headers().get(header::AUTHORIZATION) {
            None => Credentials::Absent,
            // A header that is not visible ASCII cannot carry a valid token.
            Some(value) => match value.to_str() {
                Ok(text) => self.tokens.credentials(Some(text)),
                Err(_) => Credentials::Invalid,
            },
        };
        let user = match credentials {
            Credentials::Valid(user) => {
                request.headers_mut().remove(header::AUTHORIZATION);
                user
            }
            Credentials::Absent if anonymous_allowed(&request) => UserInfo::anonymous(),
            Credentials::Absent | Credentials::Invalid => {
                return Box::pin(std::future::ready(Ok(unauthorized_response())));
            }
        };
        request.extensions_mut().insert(user);
        // Call the instance that was driven to readiness and leave a fresh clone in its place.
        let clone = self.inner.clone();
        let mut ready = std::mem::replace(&mut self.inner, clone);
        Box::pin(ready.call(request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Extension;
    use axum::body::Body;
    use axum::routing::get;
    use tower::ServiceExt;

    fn parse(text: &str) -> Result<TokenFile, AuthError> {
        TokenFile::parse(Path::new("/etc/km/tokens.csv"), text)
    }

    fn user(name: &str, uid: &str, groups: &[&str]) -> UserInfo {
        UserInfo {
            name: name.into(),
            uid: uid.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    #[test]
    fn token_file_records_and_groups() {
        let tokens = parse(concat!(
            "tok1,alice,1001\n",
            "tok2,bob,1002,\"devs,ops\"\n",
            "\n",
            "\r\n",
            "tok3,carol,1003,admins,ignored extra column\r\n",
            "tok4,\"dan \"\"the man\"\"\",1004,\"\"\n",
            "tok5,eve,1005,\"multi\nline\"",
        ))
        .expect("parse");
        assert_eq!(tokens.len(), 5);
        assert_eq!(
            tokens.authenticate_token("tok1"),
            Some(user("alice", "1001", &[AUTHENTICATED_GROUP]))
        );
        assert_eq!(
            tokens.authenticate_token("tok2"),
            Some(user("bob", "1002", &["devs", "ops", AUTHENTICATED_GROUP]))
        );
        assert_eq!(
            tokens.authenticate_token("tok3"),
            Some(user("carol", "1003", &["admins", AUTHENTICATED_GROUP]))
        );
        // An empty group column yields one empty group, exactly like Go's strings.Split.
        assert_eq!(
            tokens.authenticate_token("tok4"),
            Some(user("dan \"the man\"", "1004", &["", AUTHENTICATED_GROUP]))
        );
        assert_eq!(
            tokens.authenticate_token("tok5"),
            Some(user("eve", "1005", &["multi\nline", AUTHENTICATED_GROUP]))
        );
        assert_eq!(tokens.authenticate_token("tok"), None);
        assert_eq!(tokens.authenticate_token(""), None);
    }

    #[test]
    fn token_file_empty_and_duplicate_tokens() {
        let tokens = parse("tok,first,1\n,nobody,2\ntok,second,3\n").expect("parse");
        assert_eq!(tokens.len(), 1);
        assert_eq!(
            tokens.authenticate_token("tok").map(|u| u.name),
            Some("second".into())
        );
        assert!(parse("").expect("empty file").is_empty());
    }

    #[test]
    fn token_file_errors_name_file_and_line() {
        let err = parse("tok1,alice,1\ntok2,bob\n").unwrap_err();
        assert!(
            matches!(
                err,
                AuthError::Columns {
                    line: 2,
                    found: 2,
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "token file '/etc/km/tokens.csv' must have at least 3 columns (token, user name, user uid), found 2 (line 2)"
        );

        // No comment syntax upstream: a '#' line is a record like any other.
        let err = parse("# tokens\ntok,a,1\n").unwrap_err();
        assert!(
            matches!(
                err,
                AuthError::Columns {
                    line: 1,
                    found: 1,
                    ..
                }
            ),
            "{err:?}"
        );

        let err = parse("a,b,c\nto\"k,user,1\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "token file '/etc/km/tokens.csv': parse error on line 2, column 3: bare \" in non-quoted-field"
        );

        let err = parse("a,b,c\ntok,\"user\"x,1\n").unwrap_err();
        assert!(
            matches!(
                err,
                AuthError::Csv {
                    line: 2,
                    column: 10,
                    message: QUOTE,
                    ..
                }
            ),
            "{err:?}"
        );

        let err = parse("a,b,c\n\ntok,user,1,\"unterminated\nmore\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "token file '/etc/km/tokens.csv': record on line 3; parse error on line 4, column 6: extraneous or missing \" in quoted-field"
        );

        let missing = TokenFile::load(Path::new("/nonexistent/km/tokens.csv")).unwrap_err();
        assert!(
            missing
                .to_string()
                .starts_with("token file '/nonexistent/km/tokens.csv': ")
        );
    }

    #[test]
    fn authorization_header_parsing() {
        let tokens = TokenFile::from_entries([("s3cret".to_string(), UserInfo::admin())]);
        let admin = tokens.authenticate(Some("Bearer s3cret")).expect("valid");
        assert_eq!(admin.name, ADMIN_USER);
        assert_eq!(admin.groups, vec![MASTERS_GROUP, AUTHENTICATED_GROUP]);
        assert!(tokens.authenticate(Some("bearer s3cret")).is_some());
        assert!(tokens.authenticate(Some("  Bearer s3cret  ")).is_some());
        assert!(
            tokens
                .authenticate(Some("Bearer s3cret trailing"))
                .is_some()
        );
        assert_eq!(
            tokens.credentials(Some("Bearer wrong")),
            Credentials::Invalid
        );
        assert_eq!(
            tokens.credentials(Some("Bearer s3cre")),
            Credentials::Invalid
        );
        assert_eq!(tokens.credentials(Some("Bearer")), Credentials::Absent);
        assert_eq!(
            tokens.credentials(Some("Bearer  s3cret")),
            Credentials::Absent
        );
        assert_eq!(
            tokens.credentials(Some("Basic czNjcmV0")),
            Credentials::Absent
        );
        assert_eq!(tokens.credentials(Some("")), Credentials::Absent);
        assert_eq!(tokens.credentials(None), Credentials::Absent);
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }

    #[test]
    fn admin_token_generated_once_with_private_mode() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("state");
        let token = ensure_admin_token(&state).expect("generate");
        assert_eq!(token.len(), 43, "32 bytes in unpadded base64url");
        let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&token)
            .expect("base64url");
        assert_eq!(decoded.len(), 32);
        let path = state.join(ADMIN_TOKEN_FILE);
        let mode = fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(ensure_admin_token(&state).expect("reread"), token);

        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
        assert_eq!(ensure_admin_token(&state).expect("reread"), token);
        let mode = fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "tightened");

        let other = ensure_admin_token(&dir.path().join("other")).expect("generate");
        assert_ne!(other, token);
    }

    async fn send(app: &axum::Router, path: &str, auth: Option<&str>) -> (StatusCode, String) {
        let mut request = Request::builder().uri(path);
        if let Some(auth) = auth {
            request = request.header(header::AUTHORIZATION, auth);
        }
        let response = app
            .clone()
            .oneshot(request.body(Body::empty()).expect("request"))
            .await
            .expect("infallible");
        let status = response.status();
        let content_type = response.headers().get(header::CONTENT_TYPE).cloned();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("body");
        if status == StatusCode::UNAUTHORIZED {
            assert_eq!(
                content_type,
                Some(HeaderValue::from_static("application/json"))
            );
        }
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    #[tokio::test]
    async fn middleware_401_200_and_anonymous() {
        let tokens = Arc::new(TokenFile::from_entries([(
            "good".to_string(),
            user("alice", "42", &["devs"]),
        )]));
        let whoami = |Extension(user): Extension<UserInfo>, headers: axum::http::HeaderMap| async move {
            format!(
                "{}|{}|{}",
                user.name,
                user.groups.join(","),
                headers.contains_key(header::AUTHORIZATION)
            )
        };
        let app = axum::Router::new()
            .route("/api/v1/pods", get(whoami))
            .route("/healthz", get(whoami))
            .route("/version", get(whoami))
            .layer(layer(tokens));

        let (status, body) = send(&app, "/api/v1/pods", None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(
            body,
            r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"Unauthorized","reason":"Unauthorized","code":401}"#
        );
        let (status, _) = send(&app, "/api/v1/pods", Some("Bearer bad")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);

        let (status, body) = send(&app, "/api/v1/pods", Some("Bearer good")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, "alice|devs,system:authenticated|false");

        let (status, body) = send(&app, "/healthz", None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, "system:anonymous|system:unauthenticated|false");
        let (status, _) = send(&app, "/version?timeout=32s", None).await;
        assert_eq!(status, StatusCode::OK);
        // Only the exact public paths are anonymous; unknown paths are not revealed either.
        let (status, _) = send(&app, "/healthz/etcd", None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let (status, _) = send(&app, "/no/such/path", None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        // A bad token is refused even where anonymous access would be allowed.
        let (status, _) = send(&app, "/healthz", Some("Bearer bad")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let (status, body) = send(&app, "/healthz", Some("Bearer good")).await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.starts_with("alice|"));
    }
}
