//! Mailing a notification over SMTP with lettre (tokio, rustls with ring; the system's trust
//! store through the platform verifier): one plain-text message to the connection's recipients.
//! A 5xx SMTP answer or a bad address is permanent; anything else (4xx, timeouts, refused
//! connections, TLS failures) may pass and is retried.

use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::target::{Smtp, SmtpTls};
use super::SendError;

fn mailbox(conn: &str, field: &str, addr: &str) -> Result<Mailbox, SendError> {
    addr.parse().map_err(|e| {
        SendError::Permanent(format!(
            "connection {conn:?}: {field} address {addr:?} is not valid ({e})"
        ))
    })
}

/// Sends `subject` and `body` through `smtp` (the connection called `conn`).
pub async fn send(
    conn: &str,
    smtp: &Smtp,
    subject: &str,
    body: String,
    timeout: Duration,
) -> Result<(), SendError> {
    tern_worker::http_transport::install_crypto_provider();
    let mut msg = Message::builder()
        .from(mailbox(conn, "from", &smtp.from)?)
        .subject(subject)
        .header(ContentType::TEXT_PLAIN);
    for to in &smtp.to {
        msg = msg.to(mailbox(conn, "to", to)?);
    }
    let msg = msg
        .body(body)
        .map_err(|e| SendError::Permanent(format!("cannot build the mail: {e}")))?;
    let tls_params = || {
        TlsParameters::new(smtp.host.clone()).map_err(|e| {
            SendError::Permanent(format!("connection {conn:?}: TLS set-up failed: {e}"))
        })
    };
    let tls = match smtp.tls {
        SmtpTls::StartTls => Tls::Required(tls_params()?),
        SmtpTls::Tls => Tls::Wrapper(tls_params()?),
        SmtpTls::None => Tls::None,
    };
    let mut mailer = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(smtp.host.clone())
        .port(smtp.port)
        .tls(tls)
        .timeout(Some(timeout));
    if let Some(login) = &smtp.login {
        mailer = mailer.credentials(Credentials::new(
            login.clone(),
            smtp.password.clone().unwrap_or_default(),
        ));
    }
    let mailer = mailer.build();
    let sent = tokio::time::timeout(timeout, mailer.send(msg)).await;
    match sent {
        Err(_) => Err(SendError::Transient(format!(
            "the mail server {}:{} did not finish within {}",
            smtp.host,
            smtp.port,
            tern_core::format_duration(timeout)
        ))),
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => {
            let msg = format!("the mail server {}:{} refused: {e}", smtp.host, smtp.port);
            if e.is_permanent() {
                Err(SendError::Permanent(format!(
                    "{msg} (not retried: check the addresses and credentials)"
                )))
            } else {
                Err(SendError::Transient(msg))
            }
        }
    }
}
