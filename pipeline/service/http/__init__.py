"""The HTTP API (FastAPI) over ``FaceStreamService`` and its request guards.

Modules and their public names:

- ``app``: The HTTP API of the door-access service (FastAPI), a thin layer over
  ``FaceStreamService``. Public: ``PREVIEW_COOKIE``, ``create_app``, ``preview_cookie_value``,
  ``uvicorn_config``.
- ``ratelimit``: Token-bucket rate limits per client, and an ASGI guard on request body size.
  Public: ``BodySizeLimit``, ``RateLimiter``.
"""
