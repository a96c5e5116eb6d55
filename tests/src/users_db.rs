//! The application's users table in a throwaway PostgreSQL, shaped as the database-event contract describes it,
//! with the role cognito-reconcile connects as (it may only read).

use crate::postgres::Postgres;

pub const DATABASE: &str = "app";
pub const ROLE: &str = "reconcile";
pub const PASSWORD: &str = "local-reconcile-password";

/// A users row: (email, firstName, lastName, _tenant); `None` is NULL.
pub type UserRow<'a> = (&'a str, Option<&'a str>, Option<&'a str>, Option<&'a str>);
/// The same, owning its values.
pub type OwnedUserRow = (String, Option<String>, Option<String>, Option<String>);

pub struct UsersDb {
    pub postgres: Postgres,
}

fn literal(value: Option<&str>) -> String {
    value
        .map(|v| format!("'{}'", v.replace('\'', "''")))
        .unwrap_or_else(|| "NULL".into())
}

impl UsersDb {
    pub fn start() -> UsersDb {
        Self::on(Postgres::start())
    }

    /// The same table on a server that takes TLS connections only.
    pub fn start_tls_only() -> UsersDb {
        Self::on(Postgres::start_tls_only())
    }

    fn on(postgres: Postgres) -> UsersDb {
        postgres.psql("postgres", &format!("CREATE ROLE {ROLE} LOGIN PASSWORD '{PASSWORD}'"));
        postgres.psql("postgres", &format!("CREATE DATABASE {DATABASE}"));
        postgres.psql(
            DATABASE,
            &format!(
                r#"CREATE TABLE users (id serial PRIMARY KEY, email text NOT NULL UNIQUE, "firstName" text, "lastName" text, "_tenant" text,
                                      "updatedAt" timestamptz NOT NULL DEFAULT now());
                   CREATE INDEX users_reconcile_order ON users ((lower(email) COLLATE "C"));
                   GRANT SELECT ON users TO {ROLE};"#
            ),
        );
        UsersDb { postgres }
    }

    /// A URL with the password in it (accepted for local use).
    pub fn url(&self) -> String {
        self.postgres.url(ROLE, PASSWORD, DATABASE)
    }

    /// A URL with the password and `sslmode` as given.
    pub fn url_with_sslmode(&self, sslmode: &str) -> String {
        format!(
            "postgres://{ROLE}:{PASSWORD}@127.0.0.1:{}/{DATABASE}?sslmode={sslmode}",
            self.postgres.port
        )
    }

    /// The URL as the template gives it: no password (that comes from the SSM parameter).
    pub fn url_without_password(&self) -> String {
        format!(
            "postgres://{ROLE}@127.0.0.1:{}/{DATABASE}?sslmode=disable",
            self.postgres.port
        )
    }

    pub fn insert(&self, rows: &[UserRow]) {
        let values: Vec<String> = rows
            .iter()
            .map(|(email, first, last, tenant)| {
                format!(
                    "({}, {}, {}, {})",
                    literal(Some(email)),
                    literal(*first),
                    literal(*last),
                    literal(*tenant)
                )
            })
            .collect();
        self.postgres.psql(
            DATABASE,
            &format!(
                r#"INSERT INTO users (email, "firstName", "lastName", "_tenant") VALUES {}"#,
                values.join(", ")
            ),
        );
    }

    /// Runs `sql` in the application's database as the superuser.
    pub fn sql(&self, sql: &str) -> String {
        self.postgres.psql(DATABASE, sql)
    }
}
