"""Configuration: strict pydantic models validated before anything starts, the
secrets they name, the calibrated tau, and the generated reference.

Modules and their public names:

- ``base``: The base of every config section (kept apart from ``pipeline.config.service`` so
  that stage. Public: ``StrictModel``.
- ``calibrated``: The match threshold measured by `facestream calibrate threshold`, as the
  service reads it. Public: ``CALIBRATED_TAU_FILE``, ``CalibratedMatch``, ``calibrated_match``.
- ``reference``: The configuration reference, generated from the pydantic models so it never
  drifts. Public: ``render_reference``.
- ``secrets``: Secrets from an environment variable, a file (a mounted Kubernetes Secret) or the
  config file. Public: ``SecretSpec``, ``read_secret_file``, ``resolve_secret``.
- ``service``: Service configuration: strict pydantic models, validated before anything starts.
  Public: ``BACKEND_ALIASES``, ``ApiConfig``, ``AuditConfig``, ``EmbeddedRedisConfig``,
  ``EngineConfig``, ``FaceStreamConfig``, ``FeedbackConfig``, ``GalleryConfig``,
  ``StrictModel``, ``load_config``, ``with_engine_overrides``.
- ``unknowns``: ``[unknowns]``: unknown faces kept and grouped by person. Public:
  ``MAX_ENCODINGS_PER_TRACK``, ``UnknownsConfig``.
"""
