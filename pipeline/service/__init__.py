"""The running service: the object graph, the door-access service, the live preview,
``facestream doctor`` and the sample camera. The HTTP API is in ``service.http``.

Modules and their public names:

- ``app``: The service's object graph, built in one place from a validated config. Public:
  ``EnrolmentTemplates``, ``Services``, ``gallery_client``, ``open_analyzer``, ``open_services``.
- ``doctor``: ``facestream doctor``: every part the service and its tests use, checked where it
  runs. Public: ``Part``, ``PartStatus``, ``Report``, ``diagnose``.
- ``enrolment``: Enrolment of a gallery of photos, one identity per person (a folder
  ``DIR/<name>/*.jpg``). Public: ``PersonEnrolment``, ``enroll_people``, ``person_folders``.
- ``preview``: Live preview: the latest frame of each camera with its tracks drawn, as JPEG or
  MJPEG. Public: ``MJPEG_BOUNDARY``, ``PreviewHub``, ``draw_tracks``.
- ``sample``: A sample recording and gallery made from a public-domain photo, for demos and
  smoke runs. Public: ``SampleFiles``, ``make_sample``.
- ``service``: The running door-access service: cameras, recognition, door decisions, events,
  preview. Public: ``FaceStreamService``, ``MatchStatus``, ``Readiness``, ``run_service``.
- ``unknowns``: The running service's unknown faces: finished unknown tracks kept and
  clustered, ``unknown_recurring`` published, retention purged. Public: ``UNKNOWNS_DIR``,
  ``UnknownFaces``.
"""
