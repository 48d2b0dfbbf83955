"""Redaction patterns and the circuit breaker's states."""

from __future__ import annotations

from godel.gateway.policies import CircuitBreaker, redact_body, redact_text


def test_redaction_of_emails_secrets_and_card_numbers() -> None:
    text = (
        "mail bob.smith+x@example.co.uk, key sk-ant-api03-abcdefghijklmnop0123, aws AKIAABCDEFGHIJKLMNOP, "
        "card 4111 1111 1111 1111, not a card 1234 5678 9012 3456, order 12345"
    )
    out = redact_text(text)
    assert "[redacted-email]" in out and "example.co.uk" not in out
    assert out.count("[redacted-secret]") == 2 and "sk-ant" not in out and "AKIA" not in out
    assert "[redacted-card]" in out and "4111" not in out
    assert "1234 5678 9012 3456" in out and "order 12345" in out  # fails Luhn / too short: kept


def test_redaction_walks_a_request_body_and_keeps_its_shape() -> None:
    body = {"model": "gpt-5", "max_tokens": 10, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "write to alice@example.com"}]}]}  # fmt: skip
    out = redact_body(body)
    assert out["model"] == "gpt-5" and out["max_tokens"] == 10
    assert out["messages"][0]["content"][0]["text"] == "write to [redacted-email]"
    assert body["messages"][0]["content"][0]["text"] == "write to alice@example.com"  # the original is untouched


def test_circuit_opens_after_failures_then_lets_one_trial_through() -> None:
    clock = [0.0]
    breaker = CircuitBreaker(threshold=3, reset_seconds=10, now=lambda: clock[0])
    for _ in range(2):
        breaker.failed("p")
    assert breaker.retry_after("p") is None  # still closed
    breaker.failed("p")
    assert breaker.retry_after("p") == 10  # open
    clock[0] = 4.0
    assert breaker.retry_after("p") == 6
    clock[0] = 10.0
    assert breaker.retry_after("p") is None  # half-open: this caller is the trial
    assert breaker.retry_after("p") is not None  # and nobody else meanwhile
    breaker.failed("p")  # the trial failed: open again
    clock[0] = 15.0
    assert breaker.retry_after("p") == 5
    clock[0] = 20.0
    assert breaker.retry_after("p") is None
    breaker.succeeded("p")  # the trial succeeded: closed
    assert breaker.retry_after("p") is None and breaker.state() == {}
