"""The HTTP API (FastAPI) over ``FaceStreamService``: routes per resource in ``routes/``,
answering with the models of ``schemas``, behind one request guard.

Modules and their public names:

- ``app``: assembles the API: routes, the request guard, metrics and the mapping of the
  service's errors to HTTP statuses. Public: ``create_app``, ``uvicorn_config``.
- ``auth``: the API token, the admin token and the preview cookie. Public: ``ADMIN_MISSING``,
  ``PREVIEW_COOKIE``, ``TOKEN_MISSING``, ``authorised``, ``is_api_token``,
  ``preview_cookie_value``, ``require_admin``, ``require_token``.
- ``guard``: the one ASGI admission gate: token, body caps, face-analysis rate limit, drain
  timeout. Public: ``Admission``, ``AdmissionKind``, ``GatedRoute``, ``RequestGuard``,
  ``gated_routes``, ``one_image``.
- ``operator_page``: the operator's part of the preview page (recent decisions with "wrong
  person", unknown faces with "enrol as..." and "forget"). Public: ``OPERATOR_SECTION``.
- ``ratelimit``: Token-bucket rate limits per client. Public: ``RateLimiter``,
  ``retry_after_header``.
- ``schemas``: the JSON answers as pydantic models. Public: ``CameraView``, ``EncoderView``,
  ``EnrolledIdentity``, ``EventList``, ``FaceLiveness``, ``FeedbackRequest``, ``FeedbackView``,
  ``GalleryName``, ``HealthView``, ``IdentifyResult``, ``IdentityList``, ``IdentityPatch``,
  ``IdentityView``, ``LivenessResult``, ``MatchStatusView``, ``MatchView``,
  ``QuarantinedList``, ``QuarantinedView``, ``ReadinessView``, ``ShardView``,
  ``StreamDetail``, ``StreamList``, ``TrackView``, ``VerifyResult``.
- ``state``: what routes and the guard share. Public: ``ApiState``, ``State``, ``api_state``.
- ``routes``: one module per resource (see its docstring).
"""
