//! Who may call the API: superuser tokens and file tokens ([`tokens`]), the superusers and
//! the token secrets ([`users`]), the bounded cost of password logins ([`login`]), and the
//! first-run link that creates the first superuser ([`installer`]). The routes are in
//! [`crate::api::auth`].

pub mod installer;
pub mod login;
pub mod tokens;
pub mod users;

pub(crate) use tokens::bearer_token;
pub use tokens::{
    AUTH_TOKEN_TTL_SECS, FILE_TOKEN_TTL_SECS, MaybeSuperuser, SUPERUSERS_COLLECTION_ID,
    SUPERUSERS_COLLECTION_NAME, SuperuserAuth, TokenError, TokenType, Tokens,
};
