"""The face gallery: identities and their templates in Redis, searched in memory.

Modules and their public names:

- ``store``: The face gallery: identities and their face templates in Redis, searched in memory.
  Public: ``Enrollment``, ``Gallery``, ``Identity``, ``MetadataValue``, ``ReencodeResult``,
  ``connect``.
- ``feedback``: Operators' corrections of door decisions: probes kept for feedback, quarantined
  templates, negatives and each corrected identity's own tau ceiling. Public:
  ``FeedbackResult``, ``FeedbackStore``, ``QuarantinedTemplate``.
"""
