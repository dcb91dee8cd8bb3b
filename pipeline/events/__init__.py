"""Events: the Redis stream and the signed-webhook outbox, and the MQTT bridge.

Modules and their public names:

- ``bus``: Events: a Redis stream for consumers, and signed webhooks delivered from a durable
  outbox. Public: ``DESTINATION_HEADER``, ``DOOR_HEADER``, ``EVENT_ID_HEADER``, ``EVENT_KINDS``,
  ``SIGNATURE_HEADER``, ``TIMESTAMP_HEADER``, ``DeadLetter``, ``Event``, ``EventBus``,
  ``EventKind``, ``EventsConfig``, ``JsonValue``, ``PurgeReport``, ``SignedMessage``,
  ``Webhook``, ``WebhookConfig``, ``WebhookDeliverer``, ``derived_key``, ``event_door``,
  ``sign``, ``stream_entry_mac``, ``verify_signature``.
- ``mqtt``: Events to MQTT (Home Assistant and other home/building automation), at least once.
  Public: ``MqttBridge``, ``MqttConfig``, ``MqttMessage``, ``event_messages``, ``sign_message``,
  ``verify_message``.
"""
