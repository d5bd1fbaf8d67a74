//! The issuer's one error enum. Each variant has a stable `code` and an HTTP status; the message
//! never carries personal data or internal details (database errors are logged by kind only and
//! answered as `internal`).

/// Everything that can go wrong in the issuer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No token, or a token that is unknown or revoked.
    #[error("a valid operator token is required")]
    Unauthorized,
    /// The token lacks the scope this route needs.
    #[error("this token lacks the `{0}` scope")]
    Forbidden(&'static str),
    /// Unknown object, or one of another agency (never told apart, so a stranger learns nothing).
    #[error("no such {0}")]
    NotFound(&'static str),
    /// The route does not take this method.
    #[error("this route does not take this method")]
    MethodNotAllowed,
    /// The body is not the JSON this route takes.
    #[error("the body is not valid for this route: {0}")]
    InvalidBody(String),
    /// A field has a value the issuer refuses.
    #[error("invalid {field}: {why}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// Why (never the value itself).
        why: &'static str,
    },
    /// Not `Content-Type: application/json`.
    #[error("the body must be application/json")]
    UnsupportedMediaType,
    /// The body is larger than the limit.
    #[error("the body is larger than {0} bytes")]
    TooLarge(usize),
    /// The body was not sent in time.
    #[error("the body was not sent in time")]
    BodyTimeout,
    /// The token used up its allowance.
    #[error("too many requests; retry later")]
    RateLimited,
    /// The request conflicts with recorded state (another request key on the same card, an
    /// action on a revoked credential, …).
    #[error("conflict: {0}")]
    Conflict(&'static str),
    /// The card's key is refused: invalid, on the weak-key list, or seen before on any card.
    #[error("card key refused: {0}")]
    CardKeyRefused(&'static str),
    /// The card is not in a state this personalization can continue from.
    #[error("card refused: {0}")]
    CardRefused(&'static str),
    /// Briefly unable to serve this (the issuer key is being rotated); retry shortly.
    #[error("unavailable: {0}")]
    Unavailable(&'static str),
    /// The agency's status list has no free index left.
    #[error("the status list is full")]
    ListFull,
    /// The issuer's configuration is wrong.
    #[error("configuration: {0}")]
    Config(String),
    /// Signing failed (key file or HSM).
    #[error("signing failed: {0}")]
    Signing(String),
    /// The registry could not be reached or refused a transaction.
    #[error("registry: {0}")]
    Registry(String),
    /// A core format error.
    #[error("format: {0}")]
    Core(#[from] civis_core::Error),
    /// The database failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// A migration failed.
    #[error("database migration: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    /// A stored row is not what this version wrote.
    #[error("corrupt record: {0}")]
    Corrupt(&'static str),
    /// The issuer service answered with an error (client side).
    #[error("{message} ({code}, HTTP {status})")]
    Remote {
        /// HTTP status.
        status: u16,
        /// The service's stable code.
        code: String,
        /// Its message.
        message: String,
    },
    /// The issuer service could not be reached (client side).
    #[error("issuer unreachable: {0}")]
    Unreachable(String),
    /// The card or its reader failed (client side).
    #[error("card: {0}")]
    Card(String),
    /// File or socket I/O.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

impl Error {
    /// The stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Unauthorized => "unauthorized",
            Self::Forbidden(_) => "forbidden",
            Self::NotFound(_) => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::InvalidBody(_) => "invalid_body",
            Self::Invalid { .. } => "invalid_field",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::TooLarge(_) => "body_too_large",
            Self::BodyTimeout => "body_timeout",
            Self::RateLimited => "rate_limited",
            Self::Conflict(_) => "conflict",
            Self::CardKeyRefused(_) => "card_key_refused",
            Self::CardRefused(_) => "card_refused",
            Self::ListFull => "status_list_full",
            Self::Unavailable(_) => "unavailable",
            Self::Registry(_) => "registry_unavailable",
            Self::Remote { .. } => "remote",
            Self::Unreachable(_) => "unreachable",
            Self::Card(_) => "card",
            Self::Config(_)
            | Self::Signing(_)
            | Self::Core(_)
            | Self::Database(_)
            | Self::Migration(_)
            | Self::Corrupt(_)
            | Self::Io(_) => "internal",
        }
    }

    /// The HTTP status this error answers with.
    pub fn http_status(&self) -> u16 {
        match self {
            Self::Unauthorized => 401,
            Self::Forbidden(_) => 403,
            Self::NotFound(_) => 404,
            Self::MethodNotAllowed => 405,
            Self::InvalidBody(_) | Self::Invalid { .. } => 400,
            Self::UnsupportedMediaType => 415,
            Self::TooLarge(_) => 413,
            Self::BodyTimeout => 408,
            Self::RateLimited => 429,
            Self::Conflict(_) | Self::CardKeyRefused(_) | Self::CardRefused(_) => 409,
            Self::ListFull => 507,
            Self::Registry(_) | Self::Unreachable(_) | Self::Unavailable(_) => 503,
            Self::Remote { status, .. } => *status,
            _ => 500,
        }
    }

    /// The message an HTTP client sees: internal errors say only that something failed inside.
    pub fn public_message(&self) -> String {
        if self.code() == "internal" {
            "internal error; the operator's logs say more".to_owned()
        } else {
            self.to_string()
        }
    }

    /// Whether this is a unique-constraint violation (a concurrent duplicate lost the race).
    pub fn is_unique_violation(&self) -> bool {
        match self {
            Self::Database(sqlx::Error::Database(e)) => e.is_unique_violation(),
            _ => false,
        }
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
