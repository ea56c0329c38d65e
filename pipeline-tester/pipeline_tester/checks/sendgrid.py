"""Email through SendGrid: SMTP with AUTH (user ``apikey``), STARTTLS on 587 by default."""

from __future__ import annotations

import email.utils
import smtplib
import socket
import ssl
from email.message import EmailMessage

from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from .. import TOOL_NAME
from ..model import CheckError, Outcome, Planned, SkipCheckError
from .base import Check, Context

SECURITY_TEXT = {"starttls": "STARTTLS", "tls": "implicit TLS", "none": "plain text, no TLS"}


def test_message(run_id: str, hostname: str, sender: str, recipients: list[str]) -> EmailMessage:
    msg = EmailMessage()
    msg["Subject"] = f"[TEST] Alert pipeline test {run_id} (not an incident)"
    msg["From"] = sender
    msg["To"] = ", ".join(recipients)
    msg["Date"] = email.utils.formatdate(localtime=False)
    msg["Message-ID"] = email.utils.make_msgid(idstring=f"pipeline-test-{run_id}")
    msg["X-Alert-Pipeline-Test"] = run_id
    msg.set_content(
        f"This is a test message from {TOOL_NAME} on {hostname} (run {run_id}).\n\n"
        "It checks that alert email goes out through the configured smarthost.\n"
        "Not an incident: no action needed.\n"
    )
    return msg


class _TransientError(Exception):
    """A connection problem worth one more try."""


class EmailCheck(Check):
    name = "email"
    group = "email"

    def _ready(self, ctx: Context) -> str:
        key = ctx.secret("sendgrid_api_key")
        if not ctx.settings.email_to:
            raise SkipCheckError("no recipient: pass --email-to ADDRESS")
        return key.reveal()

    def _describe(self, ctx: Context) -> str:
        s = ctx.settings
        host, port = s.smarthost
        return f"SMTP {host}:{port} ({SECURITY_TEXT[s.smtp_security]}, AUTH as {s.smtp_user!r})"

    def plan(self, ctx: Context) -> list[Planned]:
        self._ready(ctx)
        s = ctx.settings
        msg = test_message(s.run_id, s.hostname, s.email_from, s.email_to)
        body = {"from": s.email_from, "to": s.email_to, "subject": msg["Subject"]}
        return [Planned(self.name, self._describe(ctx), body)]

    def run(self, ctx: Context) -> Outcome:
        password = self._ready(ctx)
        s = ctx.settings
        msg = test_message(s.run_id, s.hostname, s.email_from, s.email_to)
        retrying = Retrying(
            retry=retry_if_exception_type(_TransientError),
            stop=stop_after_attempt(3),
            wait=wait_exponential(multiplier=0.25, min=0.25, max=2),
            reraise=True,
        )
        try:
            refused, authenticated = retrying(self._send, ctx, password, msg)
        except _TransientError as exc:
            raise CheckError(str(exc)) from None
        host, port = s.smarthost
        data = {
            "smarthost": f"{host}:{port}",
            "security": s.smtp_security,
            "user": s.smtp_user,
            "to": s.email_to,
            "message_id": msg["Message-ID"],
            "authenticated": authenticated,
        }
        if refused:
            data["refused"] = sorted(refused)
            raise CheckError(f"{host}:{port} refused recipients: {', '.join(sorted(refused))}", data)
        detail = (
            f"test message accepted by {host}:{port} for {', '.join(s.email_to)} "
            f"({SECURITY_TEXT[s.smtp_security]}"
            + ("" if authenticated else "; the server offers no AUTH: the API key was not checked")
            + ")"
        )
        return Outcome(detail, data)

    def _send(
        self, ctx: Context, password: str, msg: EmailMessage
    ) -> tuple[dict[str, tuple[int, bytes]], bool]:
        """Send ``msg``; (refused recipients, whether the server authenticated us)."""
        s = ctx.settings
        host, port = s.smarthost
        where = f"{host}:{port}"
        context = ssl.create_default_context(cafile=s.smtp_ca_file)
        try:
            smtp: smtplib.SMTP
            if s.smtp_security == "tls":
                smtp = smtplib.SMTP_SSL(host, port, timeout=ctx.timeout, context=context)
            else:
                smtp = smtplib.SMTP(host, port, timeout=ctx.timeout)
        except ConnectionRefusedError:
            raise _TransientError(f"connection refused by {where} (nothing listening?)") from None
        except socket.gaierror:
            raise CheckError(f"cannot resolve smarthost {host}") from None
        except TimeoutError:
            raise _TransientError(f"timed out connecting to {where}") from None
        except ssl.SSLError as exc:
            raise CheckError(f"TLS error with {where}: {exc.reason or exc}") from None
        except OSError as exc:
            raise _TransientError(f"cannot connect to {where}: {exc.strerror or exc}") from None
        try:
            with smtp:
                smtp.ehlo()
                if s.smtp_security == "starttls":
                    if not smtp.has_extn("starttls"):
                        raise CheckError(
                            f"{where} does not offer STARTTLS: refusing to send the API key "
                            "in clear text (use --smtp-security none only for a local capture)"
                        )
                    smtp.starttls(context=context)
                    smtp.ehlo()
                authenticated = smtp.has_extn("auth")
                if authenticated:
                    smtp.login(s.smtp_user, password)
                elif s.smtp_security != "none":
                    raise CheckError(
                        f"{where} does not offer SMTP AUTH: SendGrid always does; wrong smarthost?"
                    )
                # else a local capture without AUTH (--smtp-security none): sent, key unchecked
                return smtp.send_message(msg), authenticated
        except smtplib.SMTPAuthenticationError as exc:
            raise CheckError(
                f"authentication as {s.smtp_user!r} failed at {where}: "
                f"{exc.smtp_code} {_text(exc.smtp_error)}"
            ) from None
        except smtplib.SMTPRecipientsRefused as exc:
            codes = ", ".join(f"{rcpt} ({code} {_text(err)})" for rcpt, (code, err) in exc.recipients.items())
            raise CheckError(f"{where} refused every recipient: {codes}") from None
        except smtplib.SMTPSenderRefused as exc:
            raise CheckError(
                f"{where} refused the sender {s.email_from}: {exc.smtp_code} "
                f"{_text(exc.smtp_error)} (is it a verified SendGrid sender?)"
            ) from None
        except smtplib.SMTPResponseException as exc:
            raise CheckError(f"{where} answered {exc.smtp_code} {_text(exc.smtp_error)}") from None
        except ssl.SSLError as exc:
            raise CheckError(f"TLS error with {where}: {exc.reason or exc}") from None
        except smtplib.SMTPServerDisconnected as exc:
            raise _TransientError(f"{where} closed the connection: {exc}") from None
        except TimeoutError:
            raise CheckError(f"{where} stopped answering (timeout {ctx.timeout:g}s)") from None
        except smtplib.SMTPException as exc:
            raise CheckError(f"SMTP error with {where}: {type(exc).__name__}: {exc}") from None


def _text(raw: bytes | str) -> str:
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    return " ".join(text.split())[:200]
