//! Email templates (minijinja): a subject, a text part and an HTML part per kind, embedded in
//! the binary. minijinja because it is small, builds without proc macros, and escapes HTML by
//! the template's file name, so the `.html` parts escape every value and the text parts do not.

use minijinja::Environment;
use serde_json::json;
use voxline_domain::notifications::EmailKind;
use voxline_jobs::payloads::EmailMessage;

macro_rules! template_files {
    ($($kind:literal),*) => {
        &[$(
            (concat!($kind, ".subject"), include_str!(concat!("../../templates/email/", $kind, ".subject"))),
            (concat!($kind, ".txt"), include_str!(concat!("../../templates/email/", $kind, ".txt"))),
            (concat!($kind, ".html"), include_str!(concat!("../../templates/email/", $kind, ".html"))),
        )*]
    };
}

const FILES: &[(&str, &str)] = template_files!(
    "feedback_ready",
    "payment_failed",
    "payment_action_required",
    "trial_ending",
    "subscription_cancelled",
    "data_export_ready"
);

pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
}

pub struct Templates {
    env: Environment<'static>,
    base_url: String,
}

impl Templates {
    pub fn new(public_base_url: &str) -> Result<Self, minijinja::Error> {
        let mut env = Environment::new();
        for (name, source) in FILES {
            env.add_template(name, source)?;
        }
        Ok(Templates {
            env,
            base_url: public_base_url.trim_end_matches('/').to_string(),
        })
    }

    /// Renders one message; the context is the template's data plus `link` (where the email
    /// points) and `preferences_link`.
    pub fn render(&self, message: &EmailMessage) -> Result<Rendered, minijinja::Error> {
        let base = &self.base_url;
        let (kind, data, link) = match message {
            EmailMessage::FeedbackReady(d) => (
                EmailKind::FeedbackReady,
                json!(d),
                format!("{base}/sessions/{}", d.session_id),
            ),
            EmailMessage::PaymentFailed(d) => (
                EmailKind::PaymentFailed,
                json!(d),
                d.hosted_invoice_url
                    .clone()
                    .unwrap_or_else(|| format!("{base}/billing")),
            ),
            EmailMessage::PaymentActionRequired(d) => (
                EmailKind::PaymentActionRequired,
                json!(d),
                d.hosted_invoice_url.clone(),
            ),
            EmailMessage::TrialEnding(d) => {
                (EmailKind::TrialEnding, json!(d), format!("{base}/billing"))
            }
            EmailMessage::SubscriptionCancelled(d) => (
                EmailKind::SubscriptionCancelled,
                json!(d),
                format!("{base}/billing"),
            ),
            EmailMessage::DataExportReady(d) => (
                EmailKind::DataExportReady,
                json!(d),
                format!("{base}/api/me/export?id={}", d.export_id),
            ),
        };
        let preferences_link = format!("{base}/settings/notifications");
        let name = kind.as_str();
        let render = |suffix: &str, link: minijinja::Value, preferences: minijinja::Value| {
            let mut context = minijinja::Value::from_serialize(&data);
            context =
                minijinja::context! { link => link, preferences_link => preferences, ..context };
            self.env
                .get_template(&format!("{name}.{suffix}"))?
                .render(context)
        };
        // Plain parts take links as they are; in HTML, minijinja's escaping would also turn
        // every '/' into an entity, so links are escaped here for an attribute and marked safe.
        let raw = |s: &str| minijinja::Value::from(s.to_string());
        let attr = |s: &str| minijinja::Value::from_safe_string(escape_attribute(s));
        Ok(Rendered {
            subject: render("subject", raw(&link), raw(&preferences_link))?
                .trim()
                .to_string(),
            text: render("txt", raw(&link), raw(&preferences_link))?,
            html: render("html", attr(&link), attr(&preferences_link))?,
        })
    }
}

/// Escapes what could end or break out of a double-quoted attribute or an element.
fn escape_attribute(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#x27;"),
            c => out.push(c),
        }
    }
    out
}

/// The kind a message is, for preferences and the log.
pub fn kind_of(message: &EmailMessage) -> EmailKind {
    match message {
        EmailMessage::FeedbackReady(_) => EmailKind::FeedbackReady,
        EmailMessage::PaymentFailed(_) => EmailKind::PaymentFailed,
        EmailMessage::PaymentActionRequired(_) => EmailKind::PaymentActionRequired,
        EmailMessage::TrialEnding(_) => EmailKind::TrialEnding,
        EmailMessage::SubscriptionCancelled(_) => EmailKind::SubscriptionCancelled,
        EmailMessage::DataExportReady(_) => EmailKind::DataExportReady,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use voxline_jobs::payloads::*;

    #[test]
    fn every_kind_renders_with_its_link_and_html_is_escaped() {
        let templates = Templates::new("https://app.example.com/").unwrap();
        let feedback = EmailMessage::FeedbackReady(FeedbackReady {
            session_id: "s42".into(),
            session_title: "Discovery <call> & co".into(),
            overall_score: Some(4.5),
        });
        let r = templates.render(&feedback).unwrap();
        assert_eq!(
            r.subject,
            "Your feedback for \"Discovery <call> & co\" is ready"
        );
        assert!(
            r.text
                .contains("Discovery <call> & co\" is ready (overall score 4.5)"),
            "{}",
            r.text
        );
        assert!(r.text.contains("https://app.example.com/sessions/s42"));
        assert!(
            r.html.contains("Discovery &lt;call&gt; &amp; co"),
            "{}",
            r.html
        );
        assert!(
            r.html
                .contains("href=\"https://app.example.com/sessions/s42\"")
        );

        let others = [
            EmailMessage::PaymentFailed(PaymentFailed {
                invoice_id: "in_1".into(),
                amount_due: "$49.00".into(),
                hosted_invoice_url: None,
            }),
            EmailMessage::PaymentActionRequired(PaymentActionRequired {
                invoice_id: "in_2".into(),
                hosted_invoice_url: "https://pay.example/x".into(),
            }),
            EmailMessage::TrialEnding(TrialEnding {
                plan: "pro".into(),
                trial_end: "2026-12-01".into(),
            }),
            EmailMessage::SubscriptionCancelled(SubscriptionCancelled {
                plan: "pro".into(),
                ends_at: Some("2026-12-31".into()),
            }),
            EmailMessage::DataExportReady(DataExportReady {
                export_id: "ex9".into(),
                expires_at: "2026-12-02".into(),
            }),
        ];
        let subjects: Vec<String> = others
            .iter()
            .map(|m| templates.render(m).unwrap().subject)
            .collect();
        assert_eq!(
            subjects,
            [
                "Payment failed for invoice in_1",
                "Action needed to complete your payment",
                "Your pro trial ends on 2026-12-01",
                "Your pro subscription was cancelled",
                "Your voxline data export is ready",
            ]
        );
        assert!(
            templates
                .render(&others[0])
                .unwrap()
                .text
                .contains("https://app.example.com/billing")
        );
        assert!(
            templates
                .render(&others[1])
                .unwrap()
                .html
                .contains("href=\"https://pay.example/x\"")
        );
        let hostile = EmailMessage::PaymentActionRequired(PaymentActionRequired {
            invoice_id: "in_3".into(),
            hosted_invoice_url: "https://pay.example/\"><script>x</script>".into(),
        });
        let html = templates.render(&hostile).unwrap().html;
        assert!(
            html.contains("href=\"https://pay.example/&quot;&gt;&lt;script&gt;x&lt;/script&gt;\""),
            "{html}"
        );
        assert!(
            templates
                .render(&others[4])
                .unwrap()
                .text
                .contains("/api/me/export?id=ex9")
        );
    }
}
