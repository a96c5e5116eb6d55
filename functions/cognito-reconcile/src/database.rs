//! The users table on Postgres: one connection per invocation, the table's shape checked before anything else, then
//! keyset-paginated reads in the order of the lower-cased address (byte order, so it agrees with the pool's).
//!
//! TLS goes through rustls with the AWS SDK's own crypto provider (ring, see shared::aws), so the binary carries one.

use std::sync::Arc;

use async_trait::async_trait;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio_postgres::Client;

use crate::config::{Database, Tls};
use crate::ports::{DatabaseError, UserRow, UserTable};

/// The columns of the database-event contract the reconciliation reads; `updatedAt` is optional.
pub const REQUIRED_COLUMNS: [&str; 4] = ["email", "firstName", "lastName", "_tenant"];

pub struct PostgresUsers {
    client: Client,
    select: String,
    lookup: String,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Encrypts without verifying the server's certificate: libpq's `prefer` and `require` without a root certificate.
/// Handshake signatures are still checked.
#[derive(Debug)]
struct EncryptOnly(Arc<CryptoProvider>);

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn tls_connector(tls: &Tls) -> Result<tokio_postgres_rustls::MakeRustlsConnect, DatabaseError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| DatabaseError(format!("TLS set-up: {e}")))?;
    let config = match tls {
        Tls::Verify { root_certificates } => {
            let mut roots = rustls::RootCertStore::empty();
            let certificates = CertificateDer::pem_file_iter(root_certificates)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| {
                    DatabaseError(format!(
                        "reading the root certificates {}: {e}",
                        root_certificates.display()
                    ))
                })?;
            roots.add_parsable_certificates(certificates);
            if roots.is_empty() {
                return Err(DatabaseError(format!(
                    "no root certificate in {}",
                    root_certificates.display()
                )));
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        _ => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(EncryptOnly(provider())))
            .with_no_client_auth(),
    };
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// Says which server, database and user, never the password.
fn target(database: &Database) -> String {
    let config = &database.connection;
    let host = config.get_hosts().first().map(|h| format!("{h:?}")).unwrap_or_default();
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!(
        "{host}:{port}/{} as {}",
        config.get_dbname().unwrap_or_default(),
        config.get_user().unwrap_or_default()
    )
}

/// What Postgres said, without the driver's wrapping.
fn cause(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => error.to_string(),
    }
}

impl PostgresUsers {
    /// Connects (with `password` when given, else the URL's own) and checks that `table` has the columns it needs.
    pub async fn connect(database: &Database, password: Option<&str>, table: &str) -> Result<Self, DatabaseError> {
        let mut config = database.connection.clone();
        if let Some(password) = password {
            config.password(password);
        }
        config.connect_timeout(std::time::Duration::from_secs(5));
        let (client, connection) = config.connect(tls_connector(&database.tls)?).await.map_err(|e| {
            DatabaseError(format!(
                "cannot connect to the database at {}: {}",
                target(database),
                cause(&e)
            ))
        })?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::warn!(error = %error, "the database connection ended with an error");
            }
        });
        let columns = Self::columns(&client, table).await?;
        if columns.is_empty() {
            return Err(DatabaseError(format!(
                "the table {table} does not exist (or this user may not read it)"
            )));
        }
        let missing: Vec<&str> = REQUIRED_COLUMNS
            .iter()
            .copied()
            .filter(|c| !columns.iter().any(|have| have == c))
            .collect();
        if !missing.is_empty() {
            return Err(DatabaseError(format!(
                "the table {table} lacks the column(s) {}",
                missing.join(", ")
            )));
        }
        let updated_at = if columns.iter().any(|c| c == "updatedAt") {
            r#"(extract(epoch from "updatedAt") * 1000000)::bigint"#
        } else {
            "NULL::bigint"
        };
        // Byte order of the lower-cased address: the order the pool's users are matched in. An index on
        // (lower(email) COLLATE "C") makes each page an index range scan.
        let columns = format!(r#"email::text, "firstName"::text, "lastName"::text, "_tenant"::text, {updated_at}"#);
        let select = format!(
            r#"SELECT {columns} FROM {table}
               WHERE email IS NOT NULL AND ($1::text IS NULL OR lower(email) COLLATE "C" > $1::text COLLATE "C")
               ORDER BY lower(email) COLLATE "C" LIMIT $2"#
        );
        let lookup =
            format!(r#"SELECT {columns} FROM {table} WHERE lower(email) COLLATE "C" = $1::text COLLATE "C" LIMIT 1"#);
        Ok(Self { client, select, lookup })
    }

    async fn columns(client: &Client, table: &str) -> Result<Vec<String>, DatabaseError> {
        // `table` is quoted already ("users" or "schema"."table"); to_regclass resolves it as SQL would.
        let rows = client
            .query("SELECT attname::text FROM pg_attribute WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped", &[&table])
            .await
            .map_err(|e| DatabaseError(format!("reading the columns of {table}: {}", cause(&e))))?;
        Ok(rows.iter().map(|row| row.get(0)).collect())
    }
}

#[async_trait]
impl UserTable for PostgresUsers {
    async fn page(&self, after: Option<&str>, limit: i64) -> Result<Vec<UserRow>, DatabaseError> {
        let rows = self
            .client
            .query(&self.select, &[&after, &limit])
            .await
            .map_err(|e| DatabaseError(format!("reading the users table: {}", cause(&e))))?;
        Ok(rows.iter().map(user_row).collect())
    }

    async fn row(&self, key: &str) -> Result<Option<UserRow>, DatabaseError> {
        let rows = self
            .client
            .query(&self.lookup, &[&key])
            .await
            .map_err(|e| DatabaseError(format!("reading a row of the users table: {}", cause(&e))))?;
        Ok(rows.first().map(user_row))
    }
}

fn user_row(row: &tokio_postgres::Row) -> UserRow {
    UserRow {
        email: row.get(0),
        first_name: row.get(1),
        last_name: row.get(2),
        tenant: row.get(3),
        updated_at: row.get(4),
    }
}
