//! Outgoing mail (lettre over SMTP) for password-reset codes.

use lettre::message::Mailbox;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl Mailer {
    /// `SYNCGATE_SMTP_URL` (`smtp://user:pass@host:587?tls=required`, `smtps://…`).
    pub fn new(url: &str, from: &str) -> Result<Mailer, String> {
        let transport =
            AsyncSmtpTransport::<Tokio1Executor>::from_url(url).map_err(|e| format!("SYNCGATE_SMTP_URL: {e}"))?.build();
        let from = from.parse().map_err(|e| format!("SYNCGATE_SMTP_FROM: {e}"))?;
        Ok(Mailer { transport, from })
    }

    /// Sends a reset code. The code is in the mail only, never in a log line.
    pub async fn send_code(&self, to: &str, code: &str) -> Result<(), String> {
        let msg = Message::builder()
            .from(self.from.clone())
            .to(to.parse().map_err(|e| format!("recipient: {e}"))?)
            .subject("Your password reset code")
            .body(format!(
                "Your password reset code is {code}.\r\n\r\nIt is valid for 10 minutes. If you did not ask for it, ignore this mail.\r\n"
            ))
            .map_err(|e| e.to_string())?;
        self.transport.send(msg).await.map(|_| ()).map_err(|e| e.to_string())
    }
}
