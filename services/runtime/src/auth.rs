//! Bearer-token authentication with two roles.
//!
//! A node is configured with up to two shared secrets: the **agent** token
//! (agent-nodes: register, stream orders) and the **operator** token (people
//! and tools: control the market). Access rules, decided here once for all
//! nodes:
//!
//! | endpoint kind                          | check                | agent token | operator token |
//! | -------------------------------------- | -------------------- | ----------- | -------------- |
//! | submits orders / joins (Register, Session) | [`authorize`]`(Agent)` | ok | PERMISSION_DENIED |
//! | changes the run (ControlService)       | [`authorize`]`(Operator)` | PERMISSION_DENIED | ok |
//! | reads (Status, Watch)                  | [`authorize_reader`] | ok          | ok             |
//!
//! Operators may watch and read status but never trade: an order always comes
//! from an agent identity. No token, a malformed header or a token matching
//! neither secret is UNAUTHENTICATED. Comparisons are constant-time, and no
//! token is ever logged, formatted by `Debug`, or put in a `Status` message.
//!
//! A node must refuse to start when [`Tokens::is_empty`] unless the user
//! passed `--insecure-no-auth`, in which case it uses
//! [`Tokens::insecure_no_auth`], under which every check passes. Empty tokens
//! loaded from the environment do **not** open the node: every call is then
//! rejected, so forgetting the start-up check fails closed.

use std::fmt;
use std::sync::Arc;

use subtle::ConstantTimeEq;
use tonic::metadata::{Ascii, MetadataMap, MetadataValue};
use tonic::service::Interceptor;
use tonic::{Request, Status};

use crate::error::RuntimeError;
use crate::token::{load_token_with, Secret, MIN_TOKEN_LEN};

/// Who a caller is, as proven by its token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    Agent,
    Operator,
}

/// The configured secrets. `Debug` shows only whether each is set.
#[derive(Clone, Default)]
pub struct Tokens {
    agent: Option<Secret>,
    operator: Option<Secret>,
    insecure_no_auth: bool,
}

impl Tokens {
    pub const AGENT_ENV: &'static str = "PEERGRID_AGENT_TOKEN";
    pub const AGENT_FILE_ENV: &'static str = "PEERGRID_AGENT_TOKEN_FILE";
    pub const OPERATOR_ENV: &'static str = "PEERGRID_OPERATOR_TOKEN";
    pub const OPERATOR_FILE_ENV: &'static str = "PEERGRID_OPERATOR_TOKEN_FILE";
    /// Shortest accepted token, bytes (the one [`MIN_TOKEN_LEN`]).
    pub const MIN_LEN: usize = MIN_TOKEN_LEN;

    /// Validated tokens: at least [`MIN_LEN`](Self::MIN_LEN) visible ASCII
    /// characters (they travel in an HTTP header), and two different secrets.
    pub fn new(agent: Option<String>, operator: Option<String>) -> Result<Tokens, RuntimeError> {
        let agent = agent.map(|t| Secret::new(Self::AGENT_ENV, t)).transpose()?;
        let operator = operator.map(|t| Secret::new(Self::OPERATOR_ENV, t)).transpose()?;
        Tokens::from_secrets(agent, operator)
    }

    /// [`new`](Self::new) for secrets already validated: only checks that
    /// the two differ.
    pub fn from_secrets(
        agent: Option<Secret>,
        operator: Option<Secret>,
    ) -> Result<Tokens, RuntimeError> {
        if agent.is_some() && agent == operator {
            return Err(RuntimeError::config(
                Self::OPERATOR_ENV,
                "must differ from the agent token (roles would be indistinguishable)",
            ));
        }
        Ok(Tokens { agent, operator, insecure_no_auth: false })
    }

    /// No authentication at all: only for `--insecure-no-auth` (local demos, tests).
    pub fn insecure_no_auth() -> Tokens {
        Tokens { agent: None, operator: None, insecure_no_auth: true }
    }

    /// Reads `PEERGRID_AGENT_TOKEN` / `PEERGRID_OPERATOR_TOKEN`, or the files
    /// named by their `_FILE` variants (for mounted secrets), with
    /// [`load_token`](crate::token::load_token). Setting both a variable and
    /// its `_FILE` variant is an error.
    pub fn from_env() -> Result<Tokens, RuntimeError> {
        Tokens::from_lookup(|name| std::env::var(name).ok())
    }

    /// [`from_env`](Self::from_env) with the environment supplied by `lookup`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Tokens, RuntimeError> {
        let agent = load_token_with(Self::AGENT_ENV, &lookup)?;
        let operator = load_token_with(Self::OPERATOR_ENV, &lookup)?;
        Tokens::from_secrets(agent, operator)
    }

    /// No token configured and not explicitly insecure: the node must not start.
    pub fn is_empty(&self) -> bool {
        self.agent.is_none() && self.operator.is_none() && !self.insecure_no_auth
    }

    /// These tokens, unless they are [empty](Self::is_empty): then the
    /// error every server refuses to start with, naming `tokens`, the
    /// variables and `--insecure-no-auth`.
    pub fn require_configured(self) -> Result<Tokens, RuntimeError> {
        if self.is_empty() {
            return Err(RuntimeError::config(
                "tokens",
                format!(
                    "no token configured: set {} and {} (or their _FILE variants), or pass --insecure-no-auth",
                    Self::AGENT_ENV,
                    Self::OPERATOR_ENV
                ),
            ));
        }
        Ok(self)
    }

    pub fn is_insecure(&self) -> bool {
        self.insecure_no_auth
    }

    /// The agent secret, for a client that must present it.
    pub fn agent(&self) -> Option<&Secret> {
        self.agent.as_ref()
    }

    /// The operator secret, for a client that must present it.
    pub fn operator(&self) -> Option<&Secret> {
        self.operator.as_ref()
    }

    /// The role whose secret equals `presented`. Both secrets are always
    /// compared, in constant time for equal lengths.
    fn role_of(&self, presented: &[u8]) -> Option<Role> {
        let matches = |secret: &Option<Secret>| {
            secret.as_ref().is_some_and(|s| bool::from(s.expose().as_bytes().ct_eq(presented)))
        };
        let (is_agent, is_operator) = (matches(&self.agent), matches(&self.operator));
        match (is_agent, is_operator) {
            (true, _) => Some(Role::Agent),
            (_, true) => Some(Role::Operator),
            _ => None,
        }
    }
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = |t: &Option<Secret>| if t.is_some() { "<redacted>" } else { "<unset>" };
        f.debug_struct("Tokens")
            .field("agent", &shown(&self.agent))
            .field("operator", &shown(&self.operator))
            .field("insecure_no_auth", &self.insecure_no_auth)
            .finish()
    }
}

/// The token of a request's `authorization: Bearer <token>` header.
fn presented_token(metadata: &MetadataMap) -> Result<&str, Status> {
    let value = metadata
        .get("authorization")
        .ok_or_else(|| Status::unauthenticated("missing authorization bearer token"))?;
    let value =
        value.to_str().map_err(|_| Status::unauthenticated("malformed authorization header"))?;
    match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => Ok(token.trim()),
        _ => Err(Status::unauthenticated("authorization header must be `Bearer <token>`")),
    }
}

/// Checks that the caller holds exactly the `required` role (see the table in
/// the module docs) and returns it.
pub fn authorize(metadata: &MetadataMap, required: Role, tokens: &Tokens) -> Result<Role, Status> {
    if tokens.insecure_no_auth {
        return Ok(required);
    }
    let role = tokens
        .role_of(presented_token(metadata)?.as_bytes())
        .ok_or_else(|| Status::unauthenticated("invalid bearer token"))?;
    if role != required {
        return Err(Status::permission_denied(format!(
            "this endpoint requires the {required:?} role, the token is {role:?}"
        )));
    }
    Ok(role)
}

/// Checks that the caller holds either role (read-only endpoints) and returns
/// it. In insecure mode the caller counts as an agent, the lesser role.
pub fn authorize_reader(metadata: &MetadataMap, tokens: &Tokens) -> Result<Role, Status> {
    if tokens.insecure_no_auth {
        return Ok(Role::Agent);
    }
    tokens
        .role_of(presented_token(metadata)?.as_bytes())
        .ok_or_else(|| Status::unauthenticated("invalid bearer token"))
}

/// Server-side interceptor for services whose every method needs one role
/// (e.g. `ControlServiceServer::with_interceptor(svc, RequireRole::new(Role::Operator, tokens))`).
/// The caller's [`Role`] is put into the request extensions.
#[derive(Clone, Debug)]
pub struct RequireRole {
    required: Role,
    tokens: Arc<Tokens>,
}

impl RequireRole {
    pub fn new(required: Role, tokens: Arc<Tokens>) -> RequireRole {
        RequireRole { required, tokens }
    }
}

impl Interceptor for RequireRole {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let role = authorize(request.metadata(), self.required, &self.tokens)?;
        request.extensions_mut().insert(role);
        Ok(request)
    }
}

/// Server-side interceptor for a service whose methods need different
/// roles: lets through any caller holding *a* valid token (or any caller
/// in insecure mode) and puts its [`Role`] into the request extensions;
/// the handler then checks the role it needs. An interceptor sees only the
/// headers, so a caller without a token is refused before a single byte
/// of its (possibly compressed, possibly huge) body is read.
#[derive(Clone, Debug)]
pub struct RequireToken {
    tokens: Arc<Tokens>,
}

impl RequireToken {
    pub fn new(tokens: Arc<Tokens>) -> RequireToken {
        RequireToken { tokens }
    }
}

impl Interceptor for RequireToken {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let role = authorize_reader(request.metadata(), &self.tokens)?;
        request.extensions_mut().insert(role);
        Ok(request)
    }
}

/// Client-side interceptor adding `authorization: Bearer <token>` to every
/// call (`MarketServiceClient::with_interceptor(channel, BearerInterceptor::new(token)?)`).
/// The header value is marked sensitive so HTTP/2 never indexes it.
#[derive(Clone)]
pub struct BearerInterceptor {
    value: MetadataValue<Ascii>,
}

impl BearerInterceptor {
    /// Checks `token` like any configured [`Secret`].
    pub fn new(token: &str) -> Result<BearerInterceptor, RuntimeError> {
        Ok(BearerInterceptor::from_secret(&Secret::new("bearer token", token)?))
    }

    pub fn from_secret(token: &Secret) -> BearerInterceptor {
        // A `Secret` is visible ASCII, which is always a valid header value;
        // the fallback (an empty value, refused by every server) is unreachable.
        let mut value: MetadataValue<Ascii> = format!("Bearer {}", token.expose())
            .parse()
            .unwrap_or_else(|_| MetadataValue::from_static(""));
        value.set_sensitive(true);
        BearerInterceptor { value }
    }
}

impl fmt::Debug for BearerInterceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BearerInterceptor(<redacted>)")
    }
}

impl Interceptor for BearerInterceptor {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request.metadata_mut().insert("authorization", self.value.clone());
        Ok(request)
    }
}

/// The client-side interceptor of every peergrid client: the bearer token
/// when one is configured, nothing under `--insecure-no-auth`.
#[derive(Clone, Debug, Default)]
pub struct ClientAuth(Option<BearerInterceptor>);

impl ClientAuth {
    pub fn new(token: Option<&Secret>) -> ClientAuth {
        ClientAuth(token.map(BearerInterceptor::from_secret))
    }

    /// Whether calls carry a token.
    pub fn has_token(&self) -> bool {
        self.0.is_some()
    }
}

impl Interceptor for ClientAuth {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        match self.0.as_mut() {
            Some(bearer) => bearer.call(request),
            None => Ok(request),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use tonic::Code;

    const AGENT: &str = "agent-secret-0123456789";
    const OPERATOR: &str = "operator-secret-0123456789";

    fn tokens() -> Tokens {
        Tokens::new(Some(AGENT.into()), Some(OPERATOR.into())).unwrap()
    }

    fn with_header(value: &str) -> MetadataMap {
        let mut m = MetadataMap::new();
        m.insert("authorization", value.parse().unwrap());
        m
    }

    fn code(r: Result<Role, Status>) -> Code {
        r.map(|_| Code::Ok).unwrap_or_else(|s| s.code())
    }

    #[test]
    fn roles_follow_the_access_table() {
        let t = tokens();
        let agent = with_header(&format!("Bearer {AGENT}"));
        let operator = with_header(&format!("bearer {OPERATOR}"));
        assert_eq!(authorize(&agent, Role::Agent, &t).unwrap(), Role::Agent);
        assert_eq!(authorize(&operator, Role::Operator, &t).unwrap(), Role::Operator);
        assert_eq!(code(authorize(&agent, Role::Operator, &t)), Code::PermissionDenied);
        assert_eq!(
            code(authorize(&operator, Role::Agent, &t)),
            Code::PermissionDenied,
            "operators never trade"
        );
        assert_eq!(authorize_reader(&agent, &t).unwrap(), Role::Agent);
        assert_eq!(authorize_reader(&operator, &t).unwrap(), Role::Operator);
    }

    #[test]
    fn missing_malformed_or_wrong_tokens_are_unauthenticated_and_never_echoed() {
        let t = tokens();
        let wrong = format!("{AGENT}x");
        for metadata in [
            MetadataMap::new(),
            with_header(AGENT),
            with_header(&format!("Basic {AGENT}")),
            with_header(&format!("Bearer {wrong}")),
            with_header("Bearer "),
        ] {
            for required in [Role::Agent, Role::Operator] {
                let status = authorize(&metadata, required, &t).unwrap_err();
                assert_eq!(status.code(), Code::Unauthenticated);
                assert!(!status.message().contains("secret"), "token leaked: {}", status.message());
            }
            assert_eq!(code(authorize_reader(&metadata, &t)), Code::Unauthenticated);
        }
    }

    #[test]
    fn empty_tokens_fail_closed_and_insecure_mode_is_explicit() {
        let empty = Tokens::default();
        assert!(empty.is_empty());
        let any = with_header(&format!("Bearer {AGENT}"));
        assert_eq!(code(authorize(&any, Role::Agent, &empty)), Code::Unauthenticated);
        let open = Tokens::insecure_no_auth();
        assert!(!open.is_empty() && open.is_insecure());
        assert_eq!(authorize(&MetadataMap::new(), Role::Operator, &open).unwrap(), Role::Operator);
        assert_eq!(authorize_reader(&MetadataMap::new(), &open).unwrap(), Role::Agent);
    }

    #[test]
    fn loading_validates_and_debug_redacts() {
        let env = |pairs: &[(&str, String)]| {
            let map: HashMap<String, String> =
                pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
            move |name: &str| map.get(name).cloned()
        };
        let dir =
            std::env::temp_dir().join(format!("peergrid-runtime-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("operator");
        std::fs::write(&file, format!("{OPERATOR}\n")).unwrap();
        let file = file.to_str().unwrap().to_owned();

        let t = Tokens::from_lookup(env(&[
            (Tokens::AGENT_ENV, AGENT.into()),
            (Tokens::OPERATOR_FILE_ENV, file.clone()),
        ]))
        .unwrap();
        assert_eq!(
            (t.agent().map(Secret::expose), t.operator().map(Secret::expose)),
            (Some(AGENT), Some(OPERATOR)),
            "file contents are trimmed"
        );
        let debug = format!("{t:?}");
        assert!(
            !debug.contains(AGENT) && !debug.contains(OPERATOR) && debug.contains("<redacted>"),
            "{debug}"
        );

        let both =
            env(&[(Tokens::OPERATOR_ENV, OPERATOR.into()), (Tokens::OPERATOR_FILE_ENV, file)]);
        assert!(Tokens::from_lookup(both).unwrap_err().to_string().contains("not both"));
        let short = Tokens::from_lookup(env(&[(Tokens::AGENT_ENV, "short".into())]))
            .unwrap_err()
            .to_string();
        assert!(short.contains("PEERGRID_AGENT_TOKEN") && short.contains("at least 16"), "{short}");
        assert!(!short.contains("short\""), "token value not echoed: {short}");
        assert!(Tokens::new(Some(AGENT.into()), Some(AGENT.into()))
            .unwrap_err()
            .to_string()
            .contains("must differ"));
        assert!(Tokens::new(Some("has a space in it!!".into()), None).is_err());
        let missing = env(&[(Tokens::AGENT_FILE_ENV, "/nonexistent/peergrid-token".into())]);
        assert!(Tokens::from_lookup(missing)
            .unwrap_err()
            .to_string()
            .contains("PEERGRID_AGENT_TOKEN_FILE"));
        assert!(Tokens::from_lookup(env(&[])).unwrap().is_empty());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn client_and_server_interceptors_agree() {
        let mut client = BearerInterceptor::new(OPERATOR).unwrap();
        assert_eq!(format!("{client:?}"), "BearerInterceptor(<redacted>)");
        let request = client.call(Request::new(())).unwrap();
        let mut server = RequireRole::new(Role::Operator, Arc::new(tokens()));
        let request = server.call(request).unwrap();
        assert_eq!(request.extensions().get::<Role>(), Some(&Role::Operator));
        let mut agent_only = RequireRole::new(Role::Agent, Arc::new(tokens()));
        let denied = agent_only.call(client.call(Request::new(())).unwrap()).unwrap_err();
        assert_eq!(denied.code(), Code::PermissionDenied);
        let mut any = RequireToken::new(Arc::new(tokens()));
        let request = any.call(client.call(Request::new(())).unwrap()).unwrap();
        assert_eq!(request.extensions().get::<Role>(), Some(&Role::Operator));
        assert_eq!(any.call(Request::new(())).unwrap_err().code(), Code::Unauthenticated);
        assert!(BearerInterceptor::new("short").is_err());
        let mut none = ClientAuth::new(None);
        assert!(!none.has_token());
        assert_eq!(
            any.call(none.call(Request::new(())).unwrap()).unwrap_err().code(),
            Code::Unauthenticated
        );
        let secret = Secret::new("t", AGENT).unwrap();
        let mut some = ClientAuth::new(Some(&secret));
        assert_eq!(format!("{some:?}"), "ClientAuth(Some(BearerInterceptor(<redacted>)))");
        let request = any.call(some.call(Request::new(())).unwrap()).unwrap();
        assert_eq!(request.extensions().get::<Role>(), Some(&Role::Agent));
    }
}
