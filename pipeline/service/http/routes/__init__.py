"""The API's routes, one module per resource; ``create_app`` mounts them (and the
card-number routes of ``pipeline.access.http``).

Modules and their public names:

- ``events``: /v1/events, the newest events of the stream. Public: ``router``.
- ``feedback``: /v1/decisions/{event_id}/feedback, an operator's correction of a decision;
  /v1/identities/{id}/quarantined, the templates corrections took out of the search, and their
  restore. Public: ``router``.
- ``health``: /healthz, /readyz, /metrics (open). Public: ``OPEN_PATHS``, ``router``.
- ``identities``: /v1/identities: enrol, list, show, change galleries, add photos, delete. Public:
  ``ADMISSIONS``, ``router``.
- ``pages``: the browser pages: /login (sets the preview cookie), /preview. Public: ``router``.
- ``preview``: a camera's latest frame as JPEG or MJPEG. Public: ``router``.
- ``recognition``: /v1/identify, /v1/verify, /v1/liveness. Public: ``ADMISSIONS``, ``router``.
- ``streams``: /v1/streams: cameras, their states and tracks. Public: ``ADMISSIONS``,
  ``router``.
- ``unknowns``: /v1/unknowns: the unknown faces seen, grouped by person; enrol or forget one,
  and its thumbnail. Public: ``router``.
- ``uploads``: photos read within the upload caps and analysed. Public: ``Probe``,
  ``TooLargeError``, ``largest_face``, ``read_upload``, ``templates``.
"""
