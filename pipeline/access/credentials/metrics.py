"""Prometheus metrics of OSDP doors and card credentials, on the service's registry."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge

__all__ = ["OsdpMetrics"]


@dataclass(frozen=True, slots=True)
class OsdpMetrics:
    """Per door: link state and changes, card reads sent to the panel by result, commands the
    panel sent, secure-channel failures, credentials presented at card + face doors."""

    link_up: Gauge
    link_changes: Counter
    card_reads: Counter
    commands: Counter
    secure_channel_failures: Counter
    credentials: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry) -> OsdpMetrics:
        """Declare the metrics on ``registry``."""
        return cls(
            link_up=Gauge(
                "facestream_osdp_link_up",
                "1 while the door's OSDP link is up (polled, secure channel on when required)",
                ["door", "role"],
                registry=registry,
            ),
            link_changes=Counter(
                "facestream_osdp_link_changes_total",
                "OSDP link transitions per door",
                ["door", "role", "state"],
                registry=registry,
            ),
            card_reads=Counter(
                "facestream_osdp_card_reads_total",
                "Grants reported to the panel as card reads, by result: queued, delivered, "
                "refused_link_down, expired (not taken in time, withdrawn), no_credential",
                ["door", "result"],
                registry=registry,
            ),
            commands=Counter(
                "facestream_osdp_commands_total",
                "Commands the panel sent to the door's reader (led, buzzer, output, ...)",
                ["door", "command"],
                registry=registry,
            ),
            secure_channel_failures=Counter(
                "facestream_osdp_secure_channel_failures_total",
                "Times the panel polled but no secure channel came up (usually a wrong key)",
                ["door", "role"],
                registry=registry,
            ),
            credentials=Counter(
                "facestream_credentials_presented_total",
                "Credentials presented at card + face doors, by source and result",
                ["door", "source", "result"],
                registry=registry,
            ),
        )
