use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use shared::config::{ConfigError, Env, VarSource};

/// How the connection to Postgres is secured, with libpq's `sslmode` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tls {
    /// `disable`: no TLS.
    Disable,
    /// `allow` or `prefer` (libpq's default): TLS when the server offers it, the certificate not verified.
    Prefer,
    /// `require`: TLS, the certificate not verified (as libpq does without a root certificate).
    Require,
    /// `verify-ca` or `verify-full`: TLS, the certificate verified against `sslrootcert` (for RDS, Amazon's
    /// global bundle, shipped with the function) and the host name checked.
    Verify { root_certificates: PathBuf },
}

#[derive(Debug, Clone)]
pub struct Database {
    /// The URL without its `sslmode` and `sslrootcert`, which [`Tls`] carries.
    pub connection: tokio_postgres::Config,
    pub tls: Tls,
}

impl PartialEq for Database {
    fn eq(&self, other: &Self) -> bool {
        format!("{:?}", self.connection) == format!("{:?}", other.connection) && self.tls == other.tls
    }
}

/// This function's `Timeout` in infra/template.yaml (the template test holds them equal): the budget of an invocation
/// whose deadline is already past when it arrives, as under `cargo lambda watch` (see `shared::deadline`).
pub const TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub user_pool_id: String,
    pub database: Database,
    /// The SSM `SecureString` holding the database password, read with decryption once per cold start.
    pub password_parameter: Option<String>,
    /// The table, quoted for SQL (`"users"` or `"app"."users"`).
    pub users_table: String,
    pub max_writes_per_second: f64,
    pub ordering_table: String,
}

impl Config {
    /// The environment variables this function reads; the SAM template test checks its own list against this one.
    pub const VARIABLES: &'static [&'static str] = &[
        "USER_POOL_ID",
        "DATABASE_URL",
        "DATABASE_PASSWORD_PARAMETER",
        "USERS_TABLE",
        "RECONCILE_MAX_WRITES_PER_SECOND",
        "ORDERING_TABLE",
    ];

    pub fn from_env<S: VarSource>(env: &Env<S>) -> Result<Self, ConfigError> {
        let url = env.required("DATABASE_URL")?;
        let database = parse_database_url(&url)
            .map_err(|reason| ConfigError::invalid("DATABASE_URL", &redact_password(&url), reason))?;
        let table = env.optional("USERS_TABLE").unwrap_or_else(|| "users".into());
        let users_table = quote_table(&table).ok_or_else(|| {
            ConfigError::invalid("USERS_TABLE", &table, "expected a table name, optionally schema.table")
        })?;
        let rate: f64 = env.parsed_or("RECONCILE_MAX_WRITES_PER_SECOND", 10.0)?;
        if !(rate > 0.0 && rate <= 25.0) {
            return Err(ConfigError::invalid(
                "RECONCILE_MAX_WRITES_PER_SECOND",
                &rate.to_string(),
                "must be above 0 and at most 25 (Cognito's quota)",
            ));
        }
        Ok(Config {
            user_pool_id: env.required("USER_POOL_ID")?,
            database,
            password_parameter: env.optional("DATABASE_PASSWORD_PARAMETER"),
            users_table,
            max_writes_per_second: rate,
            ordering_table: env.required("ORDERING_TABLE")?,
        })
    }
}

/// `postgres://user[:password]@host:port/dbname?sslmode=...&sslrootcert=...`.
pub fn parse_database_url(url: &str) -> Result<Database, String> {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut sslmode = "prefer".to_owned();
    let mut root = None;
    let mut rest = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("sslmode", value)) => sslmode = value.to_owned(),
            Some(("sslrootcert", value)) => root = Some(PathBuf::from(value)),
            _ => rest.push(pair),
        }
    }
    let tls = match sslmode.as_str() {
        "disable" => Tls::Disable,
        "allow" | "prefer" => Tls::Prefer,
        "require" => Tls::Require,
        "verify-ca" | "verify-full" => Tls::Verify {
            root_certificates: root
                .ok_or_else(|| format!("sslmode={sslmode} needs sslrootcert=<file of root certificates>"))?,
        },
        other => {
            return Err(format!(
                "unknown sslmode {other:?}: expected disable, allow, prefer, require, verify-ca or verify-full"
            ))
        }
    };
    let stripped = if rest.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    let mut connection =
        tokio_postgres::Config::from_str(&stripped).map_err(|e| format!("not a postgres:// URL: {e}"))?;
    if connection.get_dbname().is_none() {
        return Err("the URL names no database".into());
    }
    connection.ssl_mode(match tls {
        Tls::Disable => tokio_postgres::config::SslMode::Disable,
        Tls::Prefer => tokio_postgres::config::SslMode::Prefer,
        Tls::Require | Tls::Verify { .. } => tokio_postgres::config::SslMode::Require,
    });
    connection.application_name("cognito-reconcile");
    Ok(Database { connection, tls })
}

/// The URL with its password replaced, for error messages and logs.
pub fn redact_password(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// `users` -> `"users"`, `app.users` -> `"app"."users"`; `None` for anything that is not a plain identifier.
pub fn quote_table(name: &str) -> Option<String> {
    let parts: Vec<&str> = name.split('.').collect();
    let identifier = |p: &&str| {
        !p.is_empty()
            && p.len() <= 63
            && p.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    (parts.len() <= 2 && parts.iter().all(identifier))
        .then(|| parts.iter().map(|p| format!("\"{p}\"")).collect::<Vec<_>>().join("."))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&'static str, &'static str)]) -> Result<Config, ConfigError> {
        Config::from_env(&Env::from_pairs(pairs))
    }

    const BASE: [(&str, &str); 3] = [
        ("USER_POOL_ID", "p"),
        (
            "DATABASE_URL",
            "postgres://reconcile@db.internal:5432/app?sslmode=require",
        ),
        ("ORDERING_TABLE", "o"),
    ];

    #[test]
    fn defaults_and_the_url() {
        let c = config(&BASE).unwrap();
        assert_eq!(c.users_table, "\"users\"");
        assert_eq!(c.max_writes_per_second, 10.0);
        assert_eq!(c.password_parameter, None);
        assert_eq!(c.database.tls, Tls::Require);
        assert_eq!(c.database.connection.get_user(), Some("reconcile"));
        assert_eq!(c.database.connection.get_dbname(), Some("app"));
        assert_eq!(c.database.connection.get_password(), None);
    }

    #[test]
    fn sslmode_as_libpq_spells_it() {
        assert_eq!(parse_database_url("postgres://u@h/d").unwrap().tls, Tls::Prefer);
        assert_eq!(
            parse_database_url("postgres://u@h/d?sslmode=disable").unwrap().tls,
            Tls::Disable
        );
        assert_eq!(
            parse_database_url("postgres://u@h/d?sslmode=verify-full&sslrootcert=/opt/rds.pem&connect_timeout=5")
                .unwrap()
                .tls,
            Tls::Verify {
                root_certificates: "/opt/rds.pem".into()
            }
        );
        assert!(parse_database_url("postgres://u@h/d?sslmode=verify-full")
            .unwrap_err()
            .contains("sslrootcert"));
        assert!(parse_database_url("postgres://u@h/d?sslmode=sometimes")
            .unwrap_err()
            .contains("sslmode"));
        assert_eq!(
            parse_database_url("postgres://u:secret@h/d")
                .unwrap()
                .connection
                .get_password(),
            Some(&b"secret"[..]),
            "a password in the URL is accepted for local use"
        );
    }

    #[test]
    fn errors_name_the_variable_and_never_show_the_password() {
        let err = config(&[
            ("USER_POOL_ID", "p"),
            ("DATABASE_URL", "mysql://u:hunter2@h/d"),
            ("ORDERING_TABLE", "o"),
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("DATABASE_URL") && !err.contains("hunter2"), "{err}");
        let err = config(&[BASE[0], BASE[1], BASE[2], ("USERS_TABLE", "users; drop table users")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("USERS_TABLE"), "{err}");
        let err = config(&[BASE[0], BASE[1], BASE[2], ("RECONCILE_MAX_WRITES_PER_SECOND", "100")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("RECONCILE_MAX_WRITES_PER_SECOND"), "{err}");
        assert!(config(&[BASE[0], BASE[2]])
            .unwrap_err()
            .to_string()
            .contains("DATABASE_URL"));
        assert!(config(&[BASE[0], BASE[1]])
            .unwrap_err()
            .to_string()
            .contains("ORDERING_TABLE"));
    }

    #[test]
    fn table_names_are_identifiers() {
        assert_eq!(quote_table("app.users").as_deref(), Some("\"app\".\"users\""));
        for bad in ["", "a.b.c", "1users", "users\"", "us ers"] {
            assert_eq!(quote_table(bad), None, "{bad}");
        }
    }

    #[test]
    fn reads_exactly_the_declared_variables() {
        shared::testing::assert_reads_exactly(
            Config::VARIABLES,
            &[
                ("USER_POOL_ID", "p"),
                ("DATABASE_URL", "postgres://u@h:5432/d?sslmode=require"),
                ("DATABASE_PASSWORD_PARAMETER", "/dev/db/password"),
                ("USERS_TABLE", "users"),
                ("RECONCILE_MAX_WRITES_PER_SECOND", "5"),
                ("ORDERING_TABLE", "o"),
            ],
            Config::from_env,
        );
    }
}
