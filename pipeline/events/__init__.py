"""Events: the Redis stream, the signed-webhook outbox and its deliverer, and the MQTT bridge.

The event itself (``Event``, ``EventKind``, ``JsonValue``, ``event_door``) is a stage type and
lives in ``pipeline.types``.

Modules and their public names:

- ``config``: The ``[events]`` section and its webhook receivers, each resolved into a
  ``Webhook`` with its secret read, and the ``[mqtt]`` section. Public: ``MQTT_PORTS``,
  ``MQTT_TLS_SCHEMES``, ``WEBHOOK_SECRET_ENVIRONMENT``, ``EventsConfig``, ``MqttConfig``,
  ``Webhook``, ``WebhookConfig``.
- ``signing``: Webhook request signatures, stream entry MACs and keys derived from one secret.
  Public: ``DESTINATION_HEADER``, ``DOOR_HEADER``, ``EVENT_ID_HEADER``, ``SIGNATURE_HEADER``,
  ``SIGNATURE_VERSION``, ``TIMESTAMP_HEADER``, ``SignedMessage``, ``derived_key``, ``sign``,
  ``stream_entry_mac``, ``verify_signature``.
- ``store``: Where events live in Redis (the keys, the MAC'd outbox record) and redis-py's
  errors in the project's terms; shared by the bus and the deliverer. Public: ``EventKeys``,
  ``StreamEntries``, ``delivery_id_for``, ``event_or_none``, ``outbox_record``, ``record_mac``,
  ``redis_address``, ``talking_to_redis``.
- ``bus``: ``EventBus``: publishes to the stream and the outbox in one transaction, reads
  recent events, follows the stream, lists dead letters. Public: ``DeadLetter``, ``EventBus``.
- ``webhooks``: ``WebhookDeliverer``: a thread that claims due deliveries, POSTs them signed,
  retries with backoff and dead-letters the hopeless or forged. Public: ``WebhookDeliverer``.
- ``purge``: Erasure of what the events' keys hold about a deleted identity. Public:
  ``PurgeReport``, ``purge_identity``.
- ``mqtt``: ``MqttBridge``: a consumer group on the stream that publishes each event to an
  MQTT broker (Home Assistant and other building automation), at least once. Public:
  ``MqttBridge``.
- ``mqtt_messages``: The MQTT wire format: topics, the signed envelope, Home Assistant
  discovery. Public: ``MqttMessage``, ``discovery_messages``, ``event_messages``,
  ``sign_message``, ``verify_message``.
"""
