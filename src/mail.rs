//! Outgoing mail (lettre over SMTP) for password-reset codes.

use lettre::message::Mailbox;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

/// Why mail cannot be set up or sent.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("SYNCGATE_SMTP_URL: {0}")]
    Url(lettre::transport::smtp::Error),
    #[error("SYNCGATE_SMTP_FROM: {0}")]
    From(lettre::address::AddressError),
    #[error("recipient: {0}")]
    Recipient(lettre::address::AddressError),
    #[error("{0}")]
    Message(#[from] lettre::error::Error),
    #[error("{0}")]
    Send(lettre::transport::smtp::Error),
}

pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl Mailer {
    /// `SYNCGATE_SMTP_URL` (`smtp://user:pass@host:587?tls=required`, `smtps://…`).
    pub fn new(url: &str, from: &str) -> Result<Mailer, MailError> {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url).map_err(MailError::Url)?.build();
        let from = from.parse().map_err(MailError::From)?;
        Ok(Mailer { transport, from })
    }

    /// Sends a reset code. The code is in the mail only, never in a log line.
    pub async fn send_code(&self, to: &str, code: &str) -> Result<(), MailError> {
        let msg = Message::builder()
            .from(self.from.clone())
            .to(to.parse().map_err(MailError::Recipient)?)
            .subject("Your password reset code")
            .body(format!(
                "Your password reset code is {code}.\r\n\r\nIt is valid for 10 minutes. If you did not ask for it, ignore this mail.\r\n"
            ))
            ?;
        self.transport.send(msg).await.map(|_| ()).map_err(MailError::Send)
    }
}
